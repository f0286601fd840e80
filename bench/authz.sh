#!/usr/bin/env bash
# What a claim policy costs: requests/s of one guarded route with a valid session,
# without authorization and with a two-rule CEL policy (both rules evaluated on every
# request), on one `portcullis serve`, loaded by oha with the same connections.
# The two rungs alternate for ROUNDS rounds; the medians and their ratio are printed.
# Usage: bench/authz.sh [SECONDS] [CONNECTIONS] [ROUNDS]    (defaults 6, 50, 3)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-6}
conns=${2:-50}
rounds=${3:-3}
tools=$PWD/.cache/tools
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

if [ ! -x "$tools/bin/oha" ]; then
  echo "installing oha into $tools" >&2
  cargo install oha --locked --root "$tools" >&2
fi
cargo build --release --bin portcullis --example bench_backend --example bench_session >&2

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

backend=$(free_port); pc=$(free_port); admin=$(free_port)
target/release/examples/bench_backend 127.0.0.1:$backend 128 & pids+=($!)

# Two Ingresses on one backend, each guarded by its own AuthRule; only `policy`
# has an authorization policy. The provider is never called: sessions are valid.
rule() { # name ingress authorization-yaml
  cat <<YAML
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: $2, namespace: default}
spec:
  ingressClassName: portcullis
  rules:
  - host: $2.local
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: backend, port: {number: 80}}}}]
---
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {name: $1, namespace: default}
spec:
  targetRefs: [{name: $2}]
  oidc: {issuer: "http://127.0.0.1:9", clientId: bench, clientSecretRef: {name: bench-idp}}
$3
YAML
}
{
  cat <<YAML
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: backend, namespace: default, labels: {kubernetes.io/service-name: backend}}
addressType: IPv4
ports: [{name: http, port: $backend}]
endpoints: [{addresses: [127.0.0.1]}]
---
apiVersion: v1
kind: Secret
metadata: {name: bench-idp, namespace: default}
stringData: {client-secret: unused}
YAML
  rule plain plain ""
  rule policy policy '  authorization:
    defaultAction: Deny
    rules:
    - name: no-contractors
      when: "claims.email.endsWith('"'"'@contractor.example'"'"')"
      action: Deny
    - name: verified-readers
      when: "claims.email_verified == true && request.method == '"'"'GET'"'"'"
      action: Allow'
} > "$work/bench.yaml"
target/release/portcullis check -f "$work/bench.yaml" >&2
head -c 32 /dev/urandom | base64 > "$work/session-keys"
plain_cookie=$(target/release/examples/bench_session "$work/session-keys" default/plain plain.local)
policy_cookie=$(target/release/examples/bench_session "$work/session-keys" default/policy policy.local)
PORTCULLIS_LOG=warn target/release/portcullis serve -f "$work/bench.yaml" --http 127.0.0.1:$pc --admin 127.0.0.1:$admin \
  --session-keys-file "$work/session-keys" > "$work/access.log" & pids+=($!)
wait_port "$backend"; wait_port "$pc"

run() { # name host cookie round
  echo "running $1 (round $4) for ${secs}s with $conns connections" >&2
  "$tools/bin/oha" -z "${secs}s" -c "$conns" --no-tui --output-format json \
    -H "Host: $2" -H "Cookie: $3" "http://127.0.0.1:$pc/" > "$work/$1-$4.json"
}
for r in $(seq "$rounds"); do
  run plain plain.local "$plain_cookie" "$r"
  run policy policy.local "$policy_cookie" "$r"
done

python3 - "$work" "$rounds" <<'PY'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
rows = {}
for name in ["plain", "policy"]:
    runs = [json.load(open(f"{work}/{name}-{r}.json")) for r in range(1, rounds + 1)]
    rps = [d["summary"]["requestsPerSec"] for d in runs]
    p99 = [d["latencyPercentiles"]["p99"] * 1000 for d in runs]
    codes = set(c for d in runs for c in d.get("statusCodeDistribution", {}))
    rows[name] = (statistics.median(rps), statistics.median(p99), rps, codes)
print(f"{'rung':<8} {'req/s (median)':>15} {'p99 ms':>8}  runs                      status codes")
for name, (rps, p99, all_rps, codes) in rows.items():
    print(f"{name:<8} {rps:>15.0f} {p99:>8.3f}  {[round(x) for x in all_rps]}  {sorted(codes)}")
ratio = rows["policy"][0] / rows["plain"][0]
print(f"two-rule CEL policy / no policy: {ratio:.3f}x (target >= 0.95x); all 200: {rows['policy'][3] == {'200'} and rows['plain'][3] == {'200'}}")
PY
