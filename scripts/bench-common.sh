# Sourced by the bench scripts: finds Academy's anchor script and the academy-py venv, or says
# what is missing and how to point at them.
anchor="${ANCHOR:-$root/../shared/bench/academy_bench.py}"
if [ ! -f "$anchor" ]; then
  cat >&2 <<MSG
$(basename "$0"): Academy's anchor benchmark script is not at $anchor.
It lives in shared/bench/ beside the project in our workspace. Point the script at a copy with
  ANCHOR=/path/to/academy_bench.py $0
The academy-py venv is made by scripts/academy-venv.sh (target/academy-venv); use another with
  ACADEMY_VENV=/path/to/venv $0
To measure our side alone: cargo run --profile dist --features bench --bin bench -- --help
MSG
  exit 2
fi
python="$("$root/scripts/academy-venv.sh")"
