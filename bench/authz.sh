#!/usr/bin/env bash
# What a claim policy costs: requests/s of one guarded route with a valid session,
# without authorization and with a two-rule CEL policy (both rules evaluated on every
# request), on one `portcullis serve`, loaded by oha with the same connections.
# The two rungs alternate for ROUNDS rounds; the medians and their ratio are printed,
# with the proxy's CPU time per request (from /proc), which other load on the machine
# disturbs far less than throughput. A last round loads both rungs at once, half the
# connections each, so both meet the same conditions.
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

proxy_pid=${pids[-1]}
cpu_ticks() { awk '{print $14 + $15}' "/proc/$proxy_pid/stat"; }
run() { # name host cookie round [connections]
  local c=${5:-$conns}
  echo "running $1 (round $4) for ${secs}s with $c connections" >&2
  local before; before=$(cpu_ticks)
  "$tools/bin/oha" -z "${secs}s" -c "$c" --no-tui --output-format json \
    -H "Host: $2" -H "Cookie: $3" "http://127.0.0.1:$pc/" > "$work/$1-$4.json"
  echo $(( $(cpu_ticks) - before )) > "$work/$1-$4.ticks"
}
for r in $(seq "$rounds"); do
  run plain plain.local "$plain_cookie" "$r"
  run policy policy.local "$policy_cookie" "$r"
done
half=$(( conns / 2 ))
run plain plain.local "$plain_cookie" both "$half" &
alongside=$!
run policy policy.local "$policy_cookie" both "$half"
wait "$alongside"

python3 - "$work" "$rounds" "$(getconf CLK_TCK)" <<'PY'
import json, statistics, sys
work, rounds, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = {}
for name in ["plain", "policy"]:
    runs, cpu = [], []
    for r in range(1, rounds + 1):
        d = json.load(open(f"{work}/{name}-{r}.json"))
        runs.append(d)
        done = sum(d.get("statusCodeDistribution", {}).values()) or 1
        cpu.append(int(open(f"{work}/{name}-{r}.ticks").read()) / hz / done * 1e6)
    rps = [d["summary"]["requestsPerSec"] for d in runs]
    p99 = [d["latencyPercentiles"]["p99"] * 1000 for d in runs]
    codes = set(c for d in runs for c in d.get("statusCodeDistribution", {}))
    both = json.load(open(f"{work}/{name}-both.json"))["summary"]["requestsPerSec"]
    rows[name] = (statistics.median(rps), statistics.median(p99), statistics.median(cpu), rps, codes, both)
print(f"{'rung':<8} {'req/s (median)':>15} {'p99 ms':>8} {'CPU us/req':>11} {'req/s at once':>14}  runs")
for name, (rps, p99, cpu, all_rps, codes, both) in rows.items():
    print(f"{name:<8} {rps:>15.0f} {p99:>8.3f} {cpu:>11.1f} {both:>14.0f}  {[round(x) for x in all_rps]} {sorted(codes)}")
pl, po = rows["plain"], rows["policy"]
print(f"two-rule CEL policy / no policy: {po[0] / pl[0]:.3f}x req/s in turns, {po[5] / pl[5]:.3f}x at once, "
      f"{pl[2] / po[2]:.3f}x by CPU per request (target >= 0.95x); all 200: {po[4] == {'200'} and pl[4] == {'200'}}")
PY
