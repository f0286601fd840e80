#!/usr/bin/env bash
# Memory per idle keep-alive connection, the idle rung of bench/run.sh on its own:
# `portcullis serve` with one Ingress, COUNT connections that each carried one request
# and then sit idle (examples/bench_idle.rs); prints the growth of the proxy's RSS
# divided by the connections. The environment reaches the proxy (MIMALLOC_* options).
# Usage: bench/idle.sh [COUNT] [RUNS]   (defaults 10000, 3)
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-10000}
runs=${2:-3}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((count + 500)) ]; then
  count=$(( $(ulimit -n) - 500 ))
  echo "open files limited to $(ulimit -n): measuring $count idle connections" >&2
fi
cargo build --release --bin portcullis --example bench_backend --example bench_idle >&2

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 600); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

backend=$(free_port)
target/release/examples/bench_backend 127.0.0.1:$backend 128 & pids+=($!)
sed "s/BACKEND_PORT/$backend/" bench/one-route.yaml > "$work/idle.yaml"
for run in $(seq "$runs"); do
  pc=$(free_port); admin=$(free_port)
  PORTCULLIS_LOG=warn target/release/portcullis serve -f "$work/idle.yaml" --http 127.0.0.1:$pc \
    --admin 127.0.0.1:$admin --max-connections-per-client 0 > /dev/null & pids+=($!)
  pc_pid=$!
  wait_port "$pc"
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && break; sleep 0.05; done
  before=$(rss_kib "$pc_pid")
  coproc IDLE { target/release/examples/bench_idle "127.0.0.1:$pc" bench.local "$count"; }
  read -r _ opened _ <&"${IDLE[0]}"
  # Settled: RSS read until it stops moving (the allocator purges freed pages lazily).
  after=$(rss_kib "$pc_pid")
  for _ in $(seq 20); do sleep 0.25; now=$(rss_kib "$pc_pid"); [ "$now" = "$after" ] && break; after=$now; done
  # Still open at the proxy's end (a cap closing idle connections would show here).
  held=$(ss -Htn state established "( sport = :$pc )" | wc -l)
  eval "exec ${IDLE[1]}>&-"
  wait "$IDLE_PID" 2>/dev/null || true
  kill "$pc_pid"; wait "$pc_pid" 2>/dev/null || true
  python3 -c "import sys; b,a,n,h=map(int,sys.argv[1:]); print(f'run $run: {(a-b)/max(n,1):.1f} KiB per idle connection ({n} connections opened, {h} still open, RSS {b//1024} -> {a//1024} MiB)')" "$before" "$after" "$opened" "$held"
done
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
