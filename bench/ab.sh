#!/usr/bin/env bash
# Two builds of `portcullis serve` side by side on the unguarded rung of bench/run.sh
# (one Ingress, access log on, the same backend, oha), in alternating rounds so a
# change in the machine's load falls on both alike: req/s, p99 and CPU per request
# (utime + stime of the serving process over the requests it answered) of each round,
# then the medians. For measuring one change: "measure each step; keep what pays".
# Usage: bench/ab.sh BINARY_A BINARY_B [SECONDS] [CONNECTIONS] [ROUNDS]   (8, 32, 5)
#        AB_GUARDED=1: the authenticated rung instead (bench/guarded-route.yaml, each
#        request with a valid session cookie).
set -euo pipefail
cd "$(dirname "$0")/.."
a=$1 b=$2 secs=${3:-8} conns=${4:-32} rounds=${5:-5}
oha=.cache/tools/bin/oha
[ -x "$oha" ] || cargo install oha --locked --root .cache/tools >&2
cargo build --release --example bench_backend --example bench_session >&2
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }

backend=$(free_port)
target/release/examples/bench_backend 127.0.0.1:"$backend" 128 & pids+=($!)
host=bench.local manifest=bench/one-route.yaml extra=() headers=()
if [ -n "${AB_GUARDED:-}" ]; then
  host=auth.local manifest=bench/guarded-route.yaml
  head -c 32 /dev/urandom | base64 > "$work/session-keys"
  extra=(--session-keys-file "$work/session-keys")
  headers=(-H "Cookie: $(target/release/examples/bench_session "$work/session-keys" default/bench auth.local)")
fi
sed "s/BACKEND_PORT/$backend/" "$manifest" > "$work/bench.yaml"
declare -A port pid
for side in a b; do
  port[$side]=$(free_port)
  bin=$a; [ "$side" = b ] && bin=$b
  PORTCULLIS_LOG=warn "$bin" serve -f "$work/bench.yaml" --http 127.0.0.1:"${port[$side]}" \
    --admin 127.0.0.1:"$(free_port)" "${extra[@]}" > "$work/access-$side.log" 2>/dev/null & pids+=($!)
  pid[$side]=$!
done
wait_port "$backend"; wait_port "${port[a]}"; wait_port "${port[b]}"
for round in $(seq "$rounds"); do
  for side in a b; do
    before=$(ticks "${pid[$side]}")
    "$oha" -z "${secs}s" -c "$conns" --no-tui --output-format json -H "Host: $host" "${headers[@]}" \
      "http://127.0.0.1:${port[$side]}/" > "$work/$side.$round.json"
    echo $(( $(ticks "${pid[$side]}") - before )) > "$work/$side.$round.cpu"
  done
done
python3 - "$work" "$rounds" "$(getconf CLK_TCK)" "$a" "$b" <<'PY'
import json, statistics, sys
work, rounds, tck, names = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), {"a": sys.argv[4], "b": sys.argv[5]}
for side in "ab":
    rps, p99, cpu, codes = [], [], [], {}
    for r in range(1, rounds + 1):
        d = json.load(open(f"{work}/{side}.{r}.json"))
        n = sum(d["statusCodeDistribution"].values())
        for code, count in d["statusCodeDistribution"].items():
            codes[code] = codes.get(code, 0) + count
        rps.append(d["summary"]["requestsPerSec"]); p99.append(d["latencyPercentiles"]["p99"] * 1000)
        cpu.append(int(open(f"{work}/{side}.{r}.cpu").read()) * 1e6 / tck / max(n, 1))
    print(f"{side} {names[side]}: median {statistics.median(rps):.0f} req/s, p99 {statistics.median(p99):.2f} ms, "
          f"CPU {statistics.median(cpu):.1f} us/req; rounds: " + " / ".join(f"{c:.1f}" for c in cpu) + f" us; {codes}")
PY
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
