#!/usr/bin/env bash
# HTTP exchange: our server and Academy 1.0's server side by side in one run, each measured with
# our Rust bench client and with Academy's anchor script (academy_bench.py), REPS repetitions.
# JSON lines go to stdout (and to $OUT); a summary of medians to stderr.
#
# Labels: http-rs-rs (our client, our server), http-rs-py (our client, Academy's server),
#         http-py-rs (Academy's client, our server), http-py-py (Academy's client and server);
#         a -longpoll suffix: receiving by one GET /message per message instead of the event stream.
# Then `memory` on a fresh server of ours: RSS with 10,000 open mailboxes and 100,000 queued 1 KiB messages.
# Env: REPS (3), SCENARIOS (throughput,rtt,payload,fanin,stack-seq,stack-conc), OUT, ANCHOR,
#      PORT_RS (8793), PORT_PY (8794), CARGO_TARGET_DIR.
# Every server this script starts is stopped by its PID on exit.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
. "$root/scripts/bench-common.sh"
reps="${REPS:-3}"
scenarios="${SCENARIOS:-throughput,rtt,payload,fanin,stack-seq,stack-conc}"
out="${OUT:-$root/target/bench-http.jsonl}"
port_rs="${PORT_RS:-8793}"
port_py="${PORT_PY:-8794}"
target="${CARGO_TARGET_DIR:-$root/target}"
work="$(mktemp -d -t bench-http.XXXXXX)"

cargo build -q --profile dist --manifest-path "$root/Cargo.toml" --features bench --bin bench
cargo build -q --profile dist --manifest-path "$root/Cargo.toml" -p academy-exchange-http --bin exchange-server

rs_pid="" ; py_pid=""
stop_servers() {
  for pid in $rs_pid $py_pid; do
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
  rm -rf "$work"
}
trap stop_servers EXIT

wait_port() {
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port $1 did not open" >&2
  return 1
}

# Our server: 1 MiB payloads fit its default 2 MiB message limit.
RUST_LOG=warn "$target/dist/exchange-server" --host 127.0.0.1 --port "$port_rs" >"$work/rs.log" 2>&1 &
rs_pid=$!
printf 'host = "127.0.0.1"\nport = %s\n[backend]\nkind = "python"\n' "$port_py" >"$work/academy.toml"
"$python" -m academy.exchange.cloud --config "$work/academy.toml" >"$work/py.log" 2>&1 &
py_pid=$!
wait_port "$port_rs"
wait_port "$port_py"

: >"$out"
for rep in $(seq 0 $((reps - 1))); do
  "$target/dist/bench" --backend http --url "http://127.0.0.1:$port_rs" --label http-rs-rs \
    --scenario "$scenarios" --server-pids "$rs_pid" --rep "$rep" | tee -a "$out"
  # Academy's server caps bodies at 1 MiB and messages at 512 KiB: payloads up to 256 KiB.
  "$target/dist/bench" --backend http --url "http://127.0.0.1:$port_py" --label http-rs-py \
    --scenario "$scenarios" --sizes 1024,65536,262144 --server-pids "$py_pid" --rep "$rep" | tee -a "$out"
  # academy-py's client reads event-stream lines of at most 512 KiB (aiohttp), whatever the server.
  "$python" "$anchor" --backend http --http-url "http://127.0.0.1:$port_rs" --label http-py-rs \
    --scenario "$scenarios" --sizes 1024,65536,262144 --server-pids "$rs_pid" --rep "$rep" 2>/dev/null | tee -a "$out"
  "$python" "$anchor" --backend http --http-url "http://127.0.0.1:$port_py" --label http-py-py \
    --scenario "$scenarios" --sizes 1024,65536,262144 --server-pids "$py_pid" --rep "$rep" 2>/dev/null | tee -a "$out"
  "$target/dist/bench" --backend http --url "http://127.0.0.1:$port_rs" --label http-rs-rs-longpoll \
    --recv-mode longpoll --scenario throughput,rtt,fanin --server-pids "$rs_pid" --rep "$rep" | tee -a "$out"
  "$python" "$anchor" --backend http --http-url "http://127.0.0.1:$port_py" --label http-py-py-longpoll \
    --recv-mode longpoll --scenario throughput,rtt,fanin --server-pids "$py_pid" --rep "$rep" 2>/dev/null | tee -a "$out"
done
kill "$rs_pid" && wait "$rs_pid" 2>/dev/null || true
RUST_LOG=warn "$target/dist/exchange-server" --host 127.0.0.1 --port "$port_rs" >"$work/rs-memory.log" 2>&1 &
rs_pid=$!
wait_port "$port_rs"
"$target/dist/bench" --backend http --url "http://127.0.0.1:$port_rs" --scenario memory --server-pids "$rs_pid" | tee -a "$out"
"$python" "$root/scripts/bench_summary.py" "$out" >&2
