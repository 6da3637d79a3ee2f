#!/usr/bin/env bash
# Local (in-process) exchange: our bench and Academy 1.0's anchor script, side by side in one run,
# REPS repetitions each, interleaved. JSON lines go to stdout (and to $OUT if set); a summary of
# medians to stderr.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
. "$root/scripts/bench-common.sh"
reps="${REPS:-3}"
out="${OUT:-$root/target/bench-local.jsonl}"
cargo build -q --profile dist --manifest-path "$root/Cargo.toml" --features bench --bin bench
: > "$out"
for rep in $(seq 0 $((reps - 1))); do
  "$root/target/dist/bench" --backend local --scenario throughput,rtt,payload,fanin,stack-seq,stack-conc --rep "$rep" | tee -a "$out"
  # Same N as Academy's anchor, for a like-for-like line.
  "$root/target/dist/bench" --backend local --label local-n10k --scenario throughput,fanin --n 10000 --rep "$rep" | tee -a "$out"
  "$python" "$anchor" --backend local --label academy-local --scenario throughput,rtt,payload,fanin,stack-seq,stack-conc --rep "$rep" 2>/dev/null | tee -a "$out"
done
"$python" "$root/scripts/bench_summary.py" "$out" >&2
