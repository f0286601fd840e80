#!/usr/bin/env bash
# Churn at scale in `portcullis run`: a real API server (etcd and kube-apiserver from
# tests/apiserver) holding 10,000 Ingresses, Services and EndpointSlices and 1,000
# AuthRules with their Secrets. Prints how long one EndpointSlice change takes to be
# live on the data plane (from Portcullis's "configuration installed" log line, written
# once the snapshot is live), what a load on one route (an ExternalName Service for
# localhost: the API server refuses loopback endpoints) sees while 100 EndpointSlices a
# second change, and the resident memory of the `run` process.
# Usage: bench/churn.sh [APPS] [RULES] [SECONDS]   (defaults 10000, 1000, 10)
set -euo pipefail
cd "$(dirname "$0")/.."
apps=${1:-10000}
rules=${2:-1000}
secs=${3:-10}
tools=$PWD/.cache/tools
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for f in "$work/cluster/apiserver.pid" "$work/cluster/pids"; do
    [ -f "$f" ] && kill $(cat "$f") 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
cargo build --release --bin portcullis --example bench_backend --example bench_churn >&2

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

echo "starting etcd and kube-apiserver" >&2
tests/apiserver/start.sh "$work/cluster" >/dev/null
kubeconfig=$work/cluster/admin.kubeconfig
backend=$(free_port); http=$(free_port); admin=$(free_port)
target/release/examples/bench_backend 127.0.0.1:$backend 128 & pids+=($!)
wait_port "$backend"

echo "creating $apps apps and $rules AuthRules" >&2
target/release/examples/bench_churn setup "$kubeconfig" "$apps" "$rules" "$backend"

head -c 32 /dev/urandom | base64 > "$work/session-keys"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/signing.pem" 2>/dev/null
start=$(date +%s%N)
KUBECONFIG=$kubeconfig PORTCULLIS_LOG=info target/release/portcullis run --no-status \
  --http 127.0.0.1:$http --admin 127.0.0.1:$admin \
  --session-keys-file "$work/session-keys" --signing-key-file "$work/signing.pem" \
  > /dev/null 2> "$work/portcullis.log" & pids+=($!)
pc_pid=$!
for _ in $(seq 1200); do curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null || { echo "portcullis run never became ready" >&2; tail "$work/portcullis.log" >&2; exit 1; }
echo "portcullis run: ready on the whole cluster in $(( ($(date +%s%N) - start) / 1000000 )) ms, RSS $(( $(awk '/^VmRSS:/ {print $2}' /proc/$pc_pid/status) / 1024 )) MiB"

target/release/examples/bench_churn latency "$kubeconfig" "$work/portcullis.log" 20

echo "load on app0 for ${secs}s while 100 EndpointSlices a second change" >&2
installed=$(grep -c "configuration installed" "$work/portcullis.log")
compiled=$(grep "configuration installed" "$work/portcullis.log" | grep -vc "endpoints only" || true)
if [ -x "$tools/bin/oha" ]; then
  "$tools/bin/oha" -z "${secs}s" -c 20 --no-tui --output-format json -H "Host: app0.example.com" \
    "http://127.0.0.1:$http/" > "$work/churn.json" &
else
  # Without oha (not installed here): the closed-loop tool of the sessions rung, with
  # a cookie the unguarded route ignores.
  echo "oha not in $tools/bin: loading with examples/bench_load" >&2
  cargo build --release --example bench_load >&2
  echo "unused=1" > "$work/cookie"
  target/release/examples/bench_load 127.0.0.1:$http app0.example.com "$work/cookie" "$secs" 20 \
    > "$work/churn.json" &
fi
load=$!
target/release/examples/bench_churn churn "$kubeconfig" "$apps" 100 "$secs"
wait "$load"
all=$(grep -c "configuration installed" "$work/portcullis.log")
full=$(grep "configuration installed" "$work/portcullis.log" | grep -vc "endpoints only" || true)
echo "during the churn: $(( all - installed )) installs, of which $(( full - compiled )) compiled snapshots and $(( all - installed - full + compiled )) endpoint swaps"
python3 - "$work/churn.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
if "summary" in d:
    s = d["summary"]
    codes = d.get("statusCodeDistribution", {})
    # oha cuts the requests still in flight when its time is up; those are not failures.
    errors = {k: v for k, v in d.get("errorDistribution", {}).items() if k != "aborted due to deadline"}
    rps, p99 = s["requestsPerSec"], d["latencyPercentiles"]["p99"] * 1000
else:
    codes = {k: v for k, v in d["statuses"].items() if k != "error"}
    errors = {"error": d["statuses"]["error"]} if "error" in d["statuses"] else {}
    rps, p99 = d["requestsPerSec"], d["p99"]
failed = sum(v for k, v in codes.items() if k != "200") + sum(errors.values())
total = sum(codes.values()) + sum(errors.values())
print(f"under churn: {total} requests, {failed} failed (target 0), {rps:.0f} req/s, "
      f"p99 {p99:.3f} ms; status codes {codes}; errors {errors}")
PY
echo "portcullis run after the churn: RSS $(( $(awk '/^VmRSS:/ {print $2}' /proc/$pc_pid/status) / 1024 )) MiB, peak $(( $(awk '/^VmHWM:/ {print $2}' /proc/$pc_pid/status) / 1024 )) MiB"
