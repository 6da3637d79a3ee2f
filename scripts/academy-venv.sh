#!/usr/bin/env bash
# Creates (once) the Python venv with the pinned academy-py used by the interop tests and the
# benchmark comparisons, and prints its python path. Idempotent; safe to call from any test.
#
# academy-py 1.0.0 pins none of its dependencies, so the venv installs them at the versions in
# tests/python/constraints.txt: what pip picks today cannot change CI without a commit (redis-py
# 8's 5 s socket read timeout, for one, kills academy-py 1.0's idle Redis listeners).
# scripts/interop-newest runs the interop tests on today's newest versions instead.
# Env: ACADEMY_VENV (default target/academy-venv), ACADEMY_CONSTRAINTS (a constraints file, or
# "none" for the newest versions).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${ACADEMY_VENV:-$root/target/academy-venv}"
case "$venv" in /*) ;; *) venv="$PWD/$venv" ;; esac
constraints="${ACADEMY_CONSTRAINTS:-$root/tests/python/constraints.txt}"
if [ "$constraints" = none ]; then
  stamp="newest"
  pin=()
else
  stamp="$(sha256sum "$constraints" | cut -d' ' -f1)"
  pin=(-c "$constraints")
fi
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.constraints" 2>/dev/null)" != "$stamp" ] \
  || ! "$venv/bin/python" -c 'import academy' 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${pin[@]}" 'academy-py==1.0.0' >&2
  echo "$stamp" > "$venv/.constraints"
fi
echo "$venv/bin/python"
