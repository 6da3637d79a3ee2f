#!/usr/bin/env bash
# Creates (once) the Python venv with the pinned academy-py used by the interop tests and the
# benchmark comparisons, and prints its python path. Idempotent; safe to call from any test.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${ACADEMY_VENV:-$root/target/academy-venv}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import academy' 2>/dev/null; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'academy-py==1.0.0' >&2
fi
echo "$venv/bin/python"
