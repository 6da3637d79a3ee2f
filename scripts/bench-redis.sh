#!/usr/bin/env bash
# Redis exchange: our bench, Academy 1.0's anchor script (academy_bench.py, RedisExchangeFactory)
# and redis-benchmark (`-c 1 -t lpush`, the raw floor) against one private redis-server, in one
# run, REPS repetitions interleaved. JSON lines go to stdout (and to $OUT); a summary of medians
# to stderr. The keyspace is flushed before every measured program.
#
# Labels: redis (our client), academy-redis (academy-py), redis-benchmark.
# Env: REPS (3), SCENARIOS (throughput,rtt,payload,fanin), OUT, ANCHOR, PORT (6395),
#      FEATURES (full: the facade features the bench binary is built with), CARGO_TARGET_DIR.
# The redis-server this script starts is stopped by its PID on exit.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
. "$root/scripts/bench-common.sh"
reps="${REPS:-3}"
scenarios="${SCENARIOS:-throughput,rtt,payload,fanin}"
out="${OUT:-$root/target/bench-redis.jsonl}"
port="${PORT:-6395}"
features="${FEATURES:-bench}"
target="${CARGO_TARGET_DIR:-$root/target}"
command -v redis-server >/dev/null || { echo "redis-server not found: apt-get install redis-server" >&2; exit 1; }
work="$(mktemp -d -t bench-redis.XXXXXX)"

cargo build -q --profile dist --manifest-path "$root/Cargo.toml" --features "$features" --bin bench

redis_pid=""
stop_server() {
  if [ -n "$redis_pid" ] && kill -0 "$redis_pid" 2>/dev/null; then
    kill "$redis_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$redis_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$redis_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap stop_server EXIT

redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize no \
  --dir "$work" --logfile "$work/redis.log" &
redis_pid=$!
for _ in $(seq 100); do
  [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && break
  sleep 0.1
done
[ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] || { echo "redis-server did not start:" >&2; cat "$work/redis.log" >&2; exit 1; }
flush() { redis-cli -p "$port" flushall >/dev/null; }

: > "$out"
for rep in $(seq 0 $((reps - 1))); do
  flush
  "$target/dist/bench" --backend redis --url "redis://127.0.0.1:$port" --scenario "$scenarios" \
    --rep "$rep" --server-pids "$redis_pid" | grep -v '"invocation"' | tee -a "$out"
  flush
  "$python" "$anchor" --backend redis --redis-port "$port" --label academy-redis --scenario "$scenarios" \
    --rep "$rep" --server-pids "$redis_pid" 2>/dev/null | grep -v '"invocation"' | tee -a "$out"
  flush
  redis-benchmark -p "$port" -c 1 -n 20000 -t lpush --csv 2>/dev/null | tail -n 1 | tr -d '"' |
    awk -F, -v rep="$rep" '{ printf "{\"scenario\":\"redis-benchmark\",\"backend\":\"redis-benchmark\",\"test\":\"%s\",\"rps\":%s,\"p50_us\":%.1f,\"p99_us\":%.1f,\"rep\":%s}\n", $1, $2, $5 * 1000, $7 * 1000, rep }' |
    tee -a "$out"
done
"$python" "$root/scripts/bench_summary.py" "$out" >&2
