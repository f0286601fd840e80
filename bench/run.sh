#!/usr/bin/env bash
# Data-plane benchmark on loopback. One load tool (oha), one backend, the same
# connections and payload for every throughput rung:
#   direct        -> the backend itself
#   nginx         -> Debian's nginx-light as a reverse proxy, upstream keepalive on
#   passthrough   -> a bare hyper proxy (examples/bench_passthrough.rs)
#   passthrough-auth -> the same bare proxy sending the authenticated rung's bytes:
#                    the same Cookie in, the identity headers Portcullis sent (caught
#                    once by the backend) added on the way out. The authenticated
#                    rung's CPU less this one's is Portcullis's own guarded work.
#   pingora       -> a bare pingora proxy (bench/pingora, a package of its own)
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
# The throughput rungs run in BENCH_RUNS rounds (default 3), each round every rung in
# turn, so a change in the machine's load falls on all of them alike. Prints per rung
# the median of the rounds and each round's value: throughput, p50/p99, and the CPU
# the serving process(es) spent per request (utime + stime from /proc over the rung,
# divided by the requests answered), which a loaded machine distorts less than
# throughput; then the ratios the targets are stated in, and the load average before
# and after.
# Usage: bench/run.sh [SECONDS] [CONNECTIONS]    (defaults 10, 50)
#        BENCH_RUNS=N rounds; BENCH_SKIP_CHURN=1 leaves the (slow) cluster churn out;
#        BENCH_PROFILE=1 records the last round of nginx, the hyper pass-through and
#        Portcullis with `perf` and prints each one's CPU per request by stage
#        (bench/perf_stages.py).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-50}
rounds=${BENCH_RUNS:-3}
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
# Its own package and lock file, built apart from Portcullis's.
pingora=$tools/pingora-target/release/bench-pingora
CARGO_TARGET_DIR=$tools/pingora-target cargo build --release --locked \
  --manifest-path bench/pingora/Cargo.toml >&2
load_before=$(cut -d' ' -f1-3 /proc/loadavg)

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# utime + stime of processes (all their threads), in clock ticks. Field 2 is the
# command in parentheses; counting from the last ')' is safe whatever it holds.
cpu_ticks() { # pids...
  local total=0 p
  for p in "$@"; do
    total=$((total + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')))
  done
  echo "$total"
}

backend=$(free_port); nginx_port=$(free_port); pass=$(free_port); pc=$(free_port); admin=$(free_port)
idp_port=$(free_port); o2p_port=$(free_port); pingora_port=$(free_port)
BENCH_CAPTURE_HEADERS="$work/identity-headers" target/release/examples/bench_backend 127.0.0.1:$backend 128 & pids+=($!)
backend_pid=$!
target/release/examples/bench_passthrough 127.0.0.1:$pass 127.0.0.1:$backend & pids+=($!)
pass_pid=$!
# Two worker threads, as nginx has two workers.
printf 'version: 1\nthreads: 2\npid_file: %s\nerror_log: %s\n' "$work/pingora.pid" "$work/pingora-error.log" \
  > "$work/pingora.yaml"
"$pingora" "127.0.0.1:$pingora_port" "127.0.0.1:$backend" "$work/pingora.yaml" & pids+=($!)
pingora_pid=$!

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
o2p_pid=$!

for p in $backend $nginx_port $pass $pingora_port $pc $o2p_port; do wait_port "$p"; done
curl -sf -o /dev/null -H "Host: auth.local" -H "Cookie: $cookie" "http://127.0.0.1:$pc/"
for _ in $(seq 100); do [ -s "$work/identity-headers" ] && break; sleep 0.05; done
[ -s "$work/identity-headers" ] || { echo "the guarded route sent the backend no identity headers" >&2; exit 1; }
pass_auth=$(free_port)
target/release/examples/bench_passthrough 127.0.0.1:$pass_auth 127.0.0.1:$backend "$work/identity-headers" & pids+=($!)
pass_auth_pid=$!
wait_port "$pass_auth"
o2p_cookie=$(python3 bench/oauth2_proxy_login.py "http://127.0.0.1:$o2p_port" bench-user)

run() { # name port "pids" [extra oha args]: writes NAME.json and NAME.cpu (ticks)
  local name=$1 port=$2 serving=$3; shift 3
  echo "running $name for ${secs}s with $conns connections" >&2
  local before
  before=$(cpu_ticks $serving)
  # BENCH_PROFILE=1: the last round of these rungs runs under `perf record`.
  local perf_pid=
  if [ -n "${BENCH_PROFILE:-}" ] && [ "${round:-}" = "$rounds" ] \
    && [[ " nginx passthrough portcullis authenticated passthrough-auth " == *" ${name%.*} "* ]]; then
    local list=($serving)
    perf record -F 999 -o "$work/${name%.*}.perf" -p "$(IFS=,; echo "${list[*]}")" >/dev/null 2>&1 &
    perf_pid=$!
  fi
  "$tools/bin/oha" -z "${secs}s" -c "$conns" --no-tui --output-format json "$@" "http://127.0.0.1:$port/" > "$work/$name.json"
  echo $(( $(cpu_ticks $serving) - before )) > "$work/$name.cpu"
  if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
}
nginx_pids="$nginx_master $(pgrep -P "$nginx_master" | tr '\n' ' ')"
for round in $(seq "$rounds"); do
  echo "round $round of $rounds (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  run "direct.$round" "$backend" "$backend_pid" -H "Host: bench.local"
  run "nginx.$round" "$nginx_port" "$nginx_pids" -H "Host: bench.local"
  run "passthrough.$round" "$pass" "$pass_pid" -H "Host: bench.local"
  run "pingora.$round" "$pingora_port" "$pingora_pid" -H "Host: bench.local"
  run "portcullis.$round" "$pc" "$pc_pid" -H "Host: bench.local"
  run "authenticated.$round" "$pc" "$pc_pid" -H "Host: auth.local" -H "Cookie: $cookie"
  run "passthrough-auth.$round" "$pass_auth" "$pass_auth_pid" -H "Host: auth.local" -H "Cookie: $cookie"
  run "oauth2-proxy.$round" "$o2p_port" "$o2p_pid" -H "Cookie: $o2p_cookie"
done
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
  for round in $(seq "$rounds"); do
    run "routes-$1.$round" "$port" "$pid" -H "Host: app5.example.com"
  done
  kill "$pid"
}
flat 10
flat 10000

python3 - "$work" "$lines" "$rounds" "$(getconf CLK_TCK)" "$load_before" <<'PY'
import json, statistics, sys
work, lines, rounds, tck, load_before = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]

def one(name):
    d = json.load(open(f"{work}/{name}.json"))
    s, p = d["summary"], d["latencyPercentiles"]
    codes = d.get("statusCodeDistribution", {})
    answered = sum(codes.values())
    ticks = int(open(f"{work}/{name}.cpu").read())
    cpu_us = ticks * 1e6 / tck / max(answered, 1)
    return {"rps": s["requestsPerSec"], "p50": p["p50"] * 1000, "p99": p["p99"] * 1000,
            "cpu": cpu_us, "codes": codes}

names = ["direct", "nginx", "passthrough", "pingora", "portcullis", "authenticated", "passthrough-auth", "oauth2-proxy",
         "routes-10", "routes-10000"]
runs = {n: [one(f"{n}.{r}") for r in range(1, rounds + 1)] for n in names}
med = {n: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50", "p99", "cpu")} for n, rs in runs.items()}

def each(n, k, fmt):
    return " / ".join(format(r[k], fmt) for r in runs[n])

print(f"median of {rounds} rounds (each round's value follows); CPU = utime + stime of the serving process(es) per answered request")
print(f"{'rung':<16} {'req/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'CPU us/req':>10}  rounds: req/s | p99 ms | CPU us/req; status codes")
for n in names:
    m = med[n]
    codes = {}
    for r in runs[n]:
        for c, v in r["codes"].items():
            codes[c] = codes.get(c, 0) + v
    print(f"{n:<16} {m['rps']:>9.0f} {m['p50']:>7.3f} {m['p99']:>7.3f} {m['cpu']:>10.1f}  "
          f"{each(n, 'rps', '.0f')} | {each(n, 'p99', '.2f')} | {each(n, 'cpu', '.1f')}; {codes}")

def ratio(a, b, k, label, target=""):
    # The median over rounds of each round's ratio (a difference for p99).
    if k == "p99":
        per, fmt, unit = [ra[k] - rb[k] for ra, rb in zip(runs[a], runs[b])], "+.3f", " ms"
    else:
        per, fmt, unit = [ra[k] / rb[k] for ra, rb in zip(runs[a], runs[b])], ".2f", "x"
    print(f"{label}: {format(statistics.median(per), fmt)}{unit} ({' / '.join(format(v, fmt) for v in per)})"
          + (f" (target {target})" if target else ""))

def gap(a, b, label, target=""):
    # CPU us per request of a over b: the median over rounds of each round's difference.
    per = [ra["cpu"] - rb["cpu"] for ra, rb in zip(runs[a], runs[b])]
    print(f"{label}: {statistics.median(per):+.1f} us ({' / '.join(format(v, '+.1f') for v in per)})"
          + (f" (target {target})" if target else ""))

ratio("portcullis", "nginx", "rps", "portcullis/nginx throughput", ">= 1.0x")
gap("portcullis", "passthrough", "CPU per request, portcullis - hyper pass-through", "<= +5 us")
gap("authenticated", "passthrough", "CPU per request, authenticated - hyper pass-through", "<= +10 us")
gap("authenticated", "passthrough-auth", "CPU per request, authenticated - hyper pass-through with the same bytes", "<= +10 us")
gap("passthrough-auth", "passthrough", "CPU per request, the authenticated rung's extra bytes through bare hyper")
ratio("portcullis", "nginx", "p99", "portcullis p99 - nginx p99", "<= +0.3 ms")
ratio("portcullis", "passthrough", "rps", "portcullis/hyper pass-through throughput")
ratio("portcullis", "pingora", "rps", "portcullis/pingora pass-through throughput")
ratio("portcullis", "nginx", "cpu", "CPU per request, portcullis/nginx")
ratio("portcullis", "passthrough", "cpu", "CPU per request, portcullis/hyper pass-through")
ratio("pingora", "passthrough", "cpu", "CPU per request, pingora/hyper pass-through")
ratio("authenticated", "nginx", "rps", "authenticated/nginx throughput", ">= 0.9x")
ratio("authenticated", "portcullis", "rps", "authenticated/portcullis throughput (the cost of the session check and headers)")
ratio("authenticated", "portcullis", "cpu", "CPU per request, authenticated/portcullis")
ratio("authenticated", "oauth2-proxy", "rps", "authenticated/oauth2-proxy throughput", ">= 6x")
print(f"authenticated all 200: {all(list(r['codes']) == ['200'] for r in runs['authenticated'])}; "
      f"identity headers added to passthrough-auth: {open(f'{work}/identity-headers').read().count(chr(10))}; "
      f"oauth2-proxy all 200: {all(list(r['codes']) == ['200'] for r in runs['oauth2-proxy'])}")
ratio("routes-10000", "routes-10", "rps", "10,000 hosts / 10 routes throughput", "within 5%")
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
print(f"load average before the rungs: {load_before}; after: {' '.join(open('/proc/loadavg').read().split()[:3])}")
PY

if [ -n "${BENCH_PROFILE:-}" ]; then
  columns=()
  for name in nginx passthrough portcullis passthrough-auth authenticated; do
    us=$(python3 -c 'import json,sys; w,t=sys.argv[1],int(sys.argv[2]); n=sum(json.load(open(w+".json"))["statusCodeDistribution"].values()); print(int(open(w+".cpu").read())*1e6/t/max(n,1))' \
      "$work/$name.$rounds" "$(getconf CLK_TCK)")
    python3 bench/perf_stages.py "$work/$name.perf" "$us" "$name (round $rounds, under perf)"
    columns+=("$name=$work/$name.perf:$us")
  done
  echo "CPU us per request by stage, round $rounds under perf; the last columns are Portcullis's own cost over bare hyper:"
  python3 bench/perf_stages.py --compare "${columns[@]}" --diff portcullis,passthrough \
    --diff authenticated,passthrough-auth --diff passthrough,nginx
fi
target/release/examples/bench_compile
if [ -z "${BENCH_SKIP_CHURN:-}" ]; then
  bench/churn.sh
fi
