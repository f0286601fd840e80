#!/usr/bin/env bash
# Data-plane benchmark on loopback. One load tool (oha), one backend, the same
# connections and payload for every throughput rung:
#   direct        -> the backend itself
#   nginx         -> Debian's nginx-light as a reverse proxy, upstream keepalive on
#   passthrough   -> a bare hyper proxy (examples/bench_passthrough.rs)
#   portcullis    -> `portcullis serve` with an Ingress, access log on
#   authenticated -> the same process, a route guarded by an AuthRule, each request
#                    carrying a valid session (decrypt, check, three identity headers
#                    with the signed x-amzn-oidc-data)
#   oauth2-proxy  -> oauth2-proxy v7.15.6 (built from its Go module) in front of the
#                    same backend, OIDC against the test provider (tests/idp), each
#                    request carrying the cookie session of a scripted login
#   10 routes / 10,000 hosts -> `portcullis serve` with 10 and with 10,000 Ingresses
# Then, with their own tools:
#   sessions      -> 20,000 distinct sessions in rotation vs one (examples/bench_load.rs,
#                    for both sides: oha sends one fixed Cookie header)
#   idle memory   -> RSS growth for 10,000 idle keep-alive connections (examples/bench_idle.rs)
#   compile       -> examples/bench_compile.rs on 10,000 Ingresses, Services and
#                    EndpointSlices and 1,000 AuthRules
#   churn         -> bench/churn.sh: `portcullis run` on a real API server at that scale
# Prints throughput and p50/p99 per rung, and the ratios the targets are stated in.
# Usage: bench/run.sh [SECONDS] [CONNECTIONS]    (defaults 10, 50)
#        BENCH_SKIP_CHURN=1 leaves the (slow) cluster churn out.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-50}
root=$PWD
tools=$root/.cache/tools
o2p_version=v7.15.6
o2p=$tools/oauth2-proxy-$o2p_version/oauth2-proxy
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
# 10,000 idle connections: each end (load tool, proxy) needs that many descriptors.
ulimit -n "$(ulimit -Hn)"
idle_conns=10000
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 10500 ]; then
  idle_conns=$(( $(ulimit -n) - 500 ))
  echo "open files limited to $(ulimit -n): measuring $idle_conns idle connections" >&2
fi

if [ ! -x "$tools/bin/oha" ]; then
  echo "installing oha into $tools" >&2
  cargo install oha --locked --root "$tools" >&2
fi
if ! command -v nginx >/dev/null; then
  echo "installing nginx-light" >&2
  (apt-get install -y nginx-light || (apt-get update && apt-get install -y nginx-light)) >&2
fi
if [ ! -x "$o2p" ]; then
  echo "building oauth2-proxy $o2p_version from its Go module" >&2
  GOBIN=$(dirname "$o2p") go install "github.com/oauth2-proxy/oauth2-proxy/v7@$o2p_version" >&2
fi
[ -d tests/idp/node_modules/oidc-provider ] || npm ci --prefix tests/idp >&2
cargo build --release --bin portcullis --example bench_backend --example bench_passthrough \
  --example bench_session --example bench_load --example bench_idle --example bench_compile >&2

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

backend=$(free_port); nginx_port=$(free_port); pass=$(free_port); pc=$(free_port); admin=$(free_port)
idp_port=$(free_port); o2p_port=$(free_port)
target/release/examples/bench_backend 127.0.0.1:$backend 128 & pids+=($!)
target/release/examples/bench_passthrough 127.0.0.1:$pass 127.0.0.1:$backend & pids+=($!)

cat > "$work/nginx.conf" <<NGINX
worker_processes 2;
worker_rlimit_nofile $(ulimit -n);
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 16384; }
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
nginx_master=$!

# The rest of a Service: the backend's port.
service() { # name
  cat <<YAML
---
apiVersion: v1
kind: Service
metadata: {name: $1, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: $1, namespace: default, labels: {kubernetes.io/service-name: $1}}
addressType: IPv4
ports: [{name: http, port: $backend}]
endpoints: [{addresses: [127.0.0.1]}]
YAML
}
hosts() { # count: one Ingress per host appN.example.com, all to Service backend
  python3 - "$1" <<'PY'
import sys
for i in range(int(sys.argv[1])):
    print(f"""---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: app{i}, namespace: default}}
spec:
  ingressClassName: portcullis
  rules:
  - host: app{i}.example.com
    http:
      paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: backend, port: {{number: 80}}}}}}}}]""")
PY
}

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
service backend >> "$work/bench.yaml"
{ hosts 10; service backend; } > "$work/routes-10.yaml"
{ hosts 10000; service backend; } > "$work/routes-10000.yaml"

head -c 32 /dev/urandom | base64 > "$work/session-keys"
target/release/examples/bench_session "$work/session-keys" default/bench auth.local 20000 > "$work/cookies-20000"
head -1 "$work/cookies-20000" > "$work/cookies-1"
cookie=$(cat "$work/cookies-1")
# Every connection comes from 127.0.0.1: without lifting the per-client cap (512) the
# idle rung would find all but 512 of its connections closed to make room.
PORTCULLIS_LOG=warn target/release/portcullis serve -f "$work/bench.yaml" --http 127.0.0.1:$pc --admin 127.0.0.1:$admin \
  --max-connections-per-client 0 \
  --session-keys-file "$work/session-keys" > "$work/access.log" & pids+=($!)
pc_pid=$!

# The test provider and oauth2-proxy, logged in once by script.
IDP_REDIRECT_URIS="http://127.0.0.1:$o2p_port/oauth2/callback" node tests/idp/server.mjs "$idp_port" > "$work/idp.out" 2>&1 & pids+=($!)
# It listens before it serves: its first line says it is ready.
for _ in $(seq 600); do grep -q issuer "$work/idp.out" 2>/dev/null && break; sleep 0.05; done
"$o2p" --http-address="127.0.0.1:$o2p_port" --provider=oidc --oidc-issuer-url="http://127.0.0.1:$idp_port" \
  --client-id=portcullis-test --client-secret=test-secret --scope="openid email profile" \
  --redirect-url="http://127.0.0.1:$o2p_port/oauth2/callback" --upstream="http://127.0.0.1:$backend/" \
  --cookie-secret="$(head -c 32 /dev/urandom | base64 | tr '+/' '-_')" --cookie-secure=false \
  --email-domain='*' --skip-provider-button --code-challenge-method=S256 \
  --pass-access-token --pass-user-headers > "$work/oauth2-proxy.log" 2>&1 & pids+=($!)

for p in $backend $nginx_port $pass $pc $o2p_port; do wait_port "$p"; done
o2p_cookie=$(python3 bench/oauth2_proxy_login.py "http://127.0.0.1:$o2p_port" bench-user)

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
run oauth2-proxy "$o2p_port" -H "Cookie: $o2p_cookie"
lines=$(wc -l < "$work/access.log")

echo "running one session, then 20,000 in rotation, for ${secs}s with $conns connections" >&2
target/release/examples/bench_load 127.0.0.1:$pc auth.local "$work/cookies-1" "$secs" "$conns" > "$work/sessions-1.json"
target/release/examples/bench_load 127.0.0.1:$pc auth.local "$work/cookies-20000" "$secs" "$conns" > "$work/sessions-20000.json"

# Idle keep-alive connections: RSS before and after 10,000 connections have each
# carried one request and then sit idle, on Portcullis and on nginx (master + workers).
idle() { # port host pids...
  local port=$1 host=$2; shift 2
  local before=0 after=0 p
  for p in "$@"; do before=$((before + $(rss_kib "$p"))); done
  coproc IDLE { target/release/examples/bench_idle "127.0.0.1:$port" "$host" "$idle_conns"; }
  read -r ready opened rest <&"${IDLE[0]}"
  sleep 1
  for p in "$@"; do after=$((after + $(rss_kib "$p"))); done
  eval "exec ${IDLE[1]}>&-"
  wait "$IDLE_PID" 2>/dev/null || true
  echo "$before $after $opened"
}
echo "opening $idle_conns idle connections to portcullis and to nginx" >&2
idle "$pc" bench.local "$pc_pid" > "$work/idle-portcullis"
idle "$nginx_port" bench.local "$nginx_master" $(pgrep -P "$nginx_master") > "$work/idle-nginx"
kill "$pc_pid"

flat() { # count
  local port admin_port
  port=$(free_port); admin_port=$(free_port)
  PORTCULLIS_LOG=warn target/release/portcullis serve -f "$work/routes-$1.yaml" --http 127.0.0.1:$port \
    --admin 127.0.0.1:$admin_port > /dev/null & pids+=($!)
  local pid=$!
  wait_port "$port"
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$admin_port/readyz" >/dev/null && break; sleep 0.05; done
  run "routes-$1" "$port" -H "Host: app5.example.com"
  kill "$pid"
}
flat 10
flat 10000

python3 - "$work" "$lines" <<'PY'
import json, sys
work, lines = sys.argv[1], int(sys.argv[2])
rows = {}
for name in ["direct", "nginx", "passthrough", "portcullis", "authenticated", "oauth2-proxy", "routes-10", "routes-10000"]:
    d = json.load(open(f"{work}/{name}.json"))
    s, p = d["summary"], d["latencyPercentiles"]
    codes = d.get("statusCodeDistribution", {})
    rows[name] = (s["requestsPerSec"], p["p50"] * 1000, p["p99"] * 1000, s["successRate"], codes)
print(f"{'rung':<14} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'success':>8}  status codes")
for name, (rps, p50, p99, ok, codes) in rows.items():
    print(f"{name:<14} {rps:>10.0f} {p50:>8.3f} {p99:>8.3f} {ok:>8.3f}  {codes}")
n, pc, au, o2 = rows["nginx"], rows["portcullis"], rows["authenticated"], rows["oauth2-proxy"]
print(f"portcullis/nginx throughput: {pc[0] / n[0]:.2f}x (target >= 1.0x)")
print(f"portcullis p99 - nginx p99: {pc[2] - n[2]:+.3f} ms (target <= +0.3 ms)")
print(f"portcullis/passthrough throughput: {pc[0] / rows['passthrough'][0]:.2f}x")
print(f"authenticated/nginx throughput: {au[0] / n[0]:.2f}x (target >= 0.9x); all 200: {list(au[4]) == ['200']}")
print(f"authenticated/portcullis throughput: {au[0] / pc[0]:.2f}x (the cost of the session check and headers)")
print(f"authenticated/oauth2-proxy throughput: {au[0] / o2[0]:.2f}x (target >= 6x); oauth2-proxy all 200: {list(o2[4]) == ['200']}")
r10, r10k = rows["routes-10"], rows["routes-10000"]
print(f"10,000 hosts / 10 routes throughput: {r10k[0] / r10[0]:.2f}x (target within 5%)")
one, many = (json.load(open(f"{work}/sessions-{n}.json")) for n in (1, 20000))
print(f"sessions: one {one['requestsPerSec']:.0f} req/s (p99 {one['p99']:.3f} ms) {one['statuses']}; "
      f"20,000 in rotation {many['requestsPerSec']:.0f} req/s (p99 {many['p99']:.3f} ms) {many['statuses']}")
print(f"20,000 sessions / one session throughput: {many['requestsPerSec'] / one['requestsPerSec']:.2f}x (target >= 0.9x)")
for name in ["portcullis", "nginx"]:
    before, after, opened = map(int, open(f"{work}/idle-{name}").read().split())
    per = (after - before) / max(opened, 1)
    print(f"idle keep-alive memory, {name}: {per:.1f} KiB per connection ({opened} connections, RSS {before // 1024} -> {after // 1024} MiB)"
          + (" (target <= 16 KiB)" if name == "portcullis" else ""))
print(f"access-log lines written by portcullis: {lines}")
PY

target/release/examples/bench_compile
if [ -z "${BENCH_SKIP_CHURN:-}" ]; then
  bench/churn.sh
fi
