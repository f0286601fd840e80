#!/usr/bin/env bash
# How long `portcullis check` takes on a rendered cluster: 10,000 apps (Ingress,
# Service, EndpointSlice) and 1,000 AuthRules with their Secrets, 32,000 documents in
# one stream. Prints the wall time of the median of three runs of the release build.
# Usage: bench/check-scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work/cluster.yaml" <<'PY'
import sys
out = []
for i in range(10_000):
    n = i % 100
    out.append(f"""---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: app{i}, namespace: ns{n}}}
spec:
  ingressClassName: portcullis
  rules:
  - host: app{i}.example.com
    http:
      paths:
      - {{path: /, pathType: Prefix, backend: {{service: {{name: app{i}, port: {{number: 80}}}}}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: app{i}, namespace: ns{n}}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: app{i}-1, namespace: ns{n}, labels: {{kubernetes.io/service-name: app{i}}}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints: [{{addresses: ["10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"]}}]
""")
for i in range(1_000):
    n = i % 100
    out.append(f"""---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {{name: sso{i}, namespace: ns{n}}}
spec:
  targetRefs: [{{name: app{i}}}]
  oidc: {{issuer: "https://idp.example.com", clientId: app{i}, clientSecretRef: {{name: idp{i}}}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: idp{i}, namespace: ns{n}}}
stringData: {{client-secret: s{i}}}
""")
open(sys.argv[1], "w").write("".join(out))
PY
times=()
for _ in 1 2 3; do
  start=$(date +%s%N)
  target/release/portcullis check -f "$work/cluster.yaml" >/dev/null
  end=$(date +%s%N)
  times+=($(( (end - start) / 1000000 )))
done
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
echo "check, 32,000 documents ($(du -h "$work/cluster.yaml" | cut -f1)): median $(echo "$sorted" | sed -n 2p) ms (runs: ${times[*]} ms)"
