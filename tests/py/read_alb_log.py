"""Reads ALB access-log lines from stdin with aws-log-parser, a widely used reader of
ALB logs that nobody here wrote; prints one JSON object per line: what it parsed, or
the error it stopped with."""
import json
import sys

from aws_log_parser import AwsLogParser, LogType

parser = AwsLogParser(log_type=LogType.LoadBalancer)
for line in sys.stdin:
    line = line.rstrip("\n")
    if not line:
        continue
    try:
        (entry,) = list(parser.parse([line]))
        print(json.dumps({
            "type": entry.type.value,
            "status": entry.elb_status_code,
            "trace_id": entry.trace_id,
            "error_reason": entry.error_reason.name if entry.error_reason else None,
            "path": entry.http_request.path,
        }))
    except Exception as e:  # every failure is the finding
        print(json.dumps({"line": line, "error": f"{type(e).__name__}: {e}"}))
