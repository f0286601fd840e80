"""Validates a Grafana dashboard against tests/py/grafana-dashboard.schema.json and
prints its PromQL expressions as a JSON list (for promtool and the metric check).
Usage: check_dashboard.py DASHBOARD.json SCHEMA.json"""
import json
import sys

import jsonschema

dashboard = json.load(open(sys.argv[1]))
schema = json.load(open(sys.argv[2]))
jsonschema.validate(dashboard, schema)
ids = [p["id"] for p in dashboard["panels"]]
if len(ids) != len(set(ids)):
    sys.exit(f"panel ids repeat: {ids}")
print(json.dumps([t["expr"] for p in dashboard["panels"] for t in p["targets"]]))
