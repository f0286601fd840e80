#!/usr/bin/env bash
# Data-plane benchmark on loopback. One load tool (oha), one backend, the same
# connections and payload for every rung:
#   direct       -> the backend itself
#   nginx        -> Debian's nginx-light as a reverse proxy, upstream keepalive on
#   passthrough  -> a bare hyper proxy (examples/bench_passthrough.rs)
#   portcullis   -> `portcullis serve` with an Ingress, access log on
#   authenticated -> the same process, a route guarded by an AuthRule, each request
#                   carrying a valid session (decrypt, check, three identity headers
#                   with the signed x-amzn-oidc-data)
# Prints throughput and p50/p99 per rung, and Portcullis's ratios to nginx.
# Usage: bench/run.sh [SECONDS] [CONNECTIONS]    (defaults 10, 50)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-50}
root=$PWD
tools=$root/.cache/tools
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

if [ ! -x "$tools/bin/oha" ]; then
  echo "installing oha into $tools" >&2
  cargo install oha --locked --root "$tools" >&2
fi
if ! command -v nginx >/dev/null; then
  echo "installing nginx-light" >&2
  (apt-get install -y nginx-light || (apt-get update && apt-get install -y nginx-light)) >&2
fi
cargo build --release --bin portcullis --example bench_backend --example bench_passthrough --example bench_session >&2

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }

backend=$(free_port); nginx_port=$(free_port); pass=$(free_port); pc=$(free_port); admin=$(free_port)
target/release/examples/bench_backend 127.0.0.1:$backend 128 & pids+=($!)
target/release/examples/bench_passthrough 127.0.0.1:$pass 127.0.0.1:$backend & pids+=($!)

cat > "$work/nginx.conf" <<NGINX
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  # Logged like Portcullis logs: one line per request, buffered.
  access_log $work/nginx-access.log combined buffer=256k flush=1s;
  upstream backend { server 127.0.0.1:$backend; keepalive 256; }
  server {
    listen 127.0.0.1:$nginx_port;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
NGINX
nginx -c "$work/nginx.conf" -g 'daemon off;' & pids+=($!)

cat > "$work/bench.yaml" <<YAML
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: bench, namespace: default}
spec:
  ingressClassName: portcullis
  rules:
  - host: bench.local
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: backend, port: {number: 80}}}}]
---
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
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: guarded, namespace: default}
spec:
  ingressClassName: portcullis
  rules:
  - host: auth.local
    http:
      paths: [{path: /, pathType: Prefix, backend: {service: {name: backend, port: {number: 80}}}}]
---
# The provider is never called: sessions are valid and need no refresh.
apiVersion: portcullis.dev/v1alpha1
kind: AuthRule
metadata: {name: bench, namespace: default}
spec:
  targetRefs: [{name: guarded}]
  oidc: {issuer: "http://127.0.0.1:9", clientId: bench, clientSecretRef: {name: bench-idp}}
---
apiVersion: v1
kind: Secret
metadata: {name: bench-idp, namespace: default}
stringData: {client-secret: unused}
YAML
head -c 32 /dev/urandom | base64 > "$work/session-keys"
cookie=$(target/release/examples/bench_session "$work/session-keys" default/bench auth.local)
PORTCULLIS_LOG=warn target/release/portcullis serve -f "$work/bench.yaml" --http 127.0.0.1:$pc --admin 127.0.0.1:$admin \
  --session-keys-file "$work/session-keys" > "$work/access.log" & pids+=($!)

for p in $backend $nginx_port $pass $pc; do wait_port "$p"; done

run() { # name port [extra oha args]
  local name=$1 port=$2; shift 2
  echo "running $name for ${secs}s with $conns connections" >&2
  "$tools/bin/oha" -z "${secs}s" -c "$conns" --no-tui --output-format json "$@" "http://127.0.0.1:$port/" > "$work/$name.json"
}
run direct "$backend" -H "Host: bench.local"
run nginx "$nginx_port" -H "Host: bench.local"
run passthrough "$pass" -H "Host: bench.local"
run portcullis "$pc" -H "Host: bench.local"
run authenticated "$pc" -H "Host: auth.local" -H "Cookie: $cookie"
lines=$(wc -l < "$work/access.log")

python3 - "$work" "$lines" <<'PY'
import json, sys
work, lines = sys.argv[1], int(sys.argv[2])
rows = {}
for name in ["direct", "nginx", "passthrough", "portcullis", "authenticated"]:
    d = json.load(open(f"{work}/{name}.json"))
    s, p = d["summary"], d["latencyPercentiles"]
    codes = d.get("statusCodeDistribution", {})
    rows[name] = (s["requestsPerSec"], p["p50"] * 1000, p["p99"] * 1000, s["successRate"], codes)
print(f"{'rung':<12} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'success':>8}  status codes")
for name, (rps, p50, p99, ok, codes) in rows.items():
    print(f"{name:<12} {rps:>10.0f} {p50:>8.3f} {p99:>8.3f} {ok:>8.3f}  {codes}")
n, pc = rows["nginx"], rows["portcullis"]
print(f"portcullis/nginx throughput: {pc[0] / n[0]:.2f}x (target >= 1.0x)")
print(f"portcullis p99 - nginx p99: {pc[2] - n[2]:+.3f} ms (target <= +0.3 ms)")
print(f"portcullis/passthrough throughput: {pc[0] / rows['passthrough'][0]:.2f}x")
au = rows["authenticated"]
print(f"authenticated/nginx throughput: {au[0] / n[0]:.2f}x (target >= 0.9x); all 200: {list(au[4]) == ['200']}")
print(f"authenticated/portcullis throughput: {au[0] / pc[0]:.2f}x (the cost of the session check and headers)")
print(f"access-log lines written by portcullis: {lines}")
PY
