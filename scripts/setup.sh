#!/usr/bin/env bash
# Set up zreward in a virtual environment. Uses the active one ($VIRTUAL_ENV or conda) if there is one, else ./.venv.
# torch==2.13.0 (CPU) is installed first only when no torch is importable, so no multi-GB CUDA build is pulled and
# a user who already has a CUDA torch keeps it. Prints the python to use on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
# Two set-ups at once (e.g. two demos started side by side) race inside pip and fail half-installed (measured):
# serialise them on a lock where flock(1) exists; the lock is released when this script exits.
if command -v flock >/dev/null; then
  exec 9>.setup.lock
  flock 9
fi
if [ -n "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ]; then
  # an active environment is the user's: pip only, with pip's own byte-compilation
  PY=$(command -v python)
  "$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install -q "torch==2.13.0" >&2
  "$PY" -m pip install -q -e ".[test]" >&2
  echo "$PY"
  exit 0
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
PY=$PWD/.venv/bin/python
# In our own ./.venv nothing is byte-compiled at install time; compilation runs afterwards on every core, once.
NOCOMPILE=""
[ -f .venv/.compiled ] || NOCOMPILE="--no-compile"  # once compiled, pip compiles what it adds later itself
"$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install -q $NOCOMPILE "torch==2.13.0" >&2
# The rest through uv when it can be had (fresh clones, the two scripts one after the other, 2 cores, uv's cache
# cold: set-up 75 -> 48 s and 94 -> 69 s; the same version of every package). uv reads none of pip's configuration:
# scripts/uv_sources.py hands it pip's indexes, find-links and constraints, and a pin holds it to the installed
# torch, so no dependency can pull another torch build. Without uv, or if it fails: pip, as before.
with_uv() {
  { [ -x .venv/bin/uv ] || "$PY" -m pip install -q $NOCOMPILE --only-binary uv "uv>=0.5,<1" >&2; } || return 1
  "$PY" -c "import importlib.metadata as m; print('torch==' + m.version('torch'))" > .venv/.torch-pin.txt \
    || return 1
  local out sources
  out=$("$PY" scripts/uv_sources.py) || return 1
  mapfile -t sources <<< "$out"
  .venv/bin/uv pip install -q --python "$PY" --compile-bytecode "${sources[@]}" --constraint .venv/.torch-pin.txt \
    -e ".[test]" >&2 || return 1
}
with_pip() {
  "$PY" -m pip install -q $NOCOMPILE -e ".[test]" >&2 || exit 1  # (set -e does not act inside a `||` list)
}
with_uv || { echo "setup: uv unavailable or failed; installing with pip" >&2; with_pip; }
# Compile what is not compiled yet, once (compileall skips what is up to date; uv compiled what it installed, not
# torch and its dependencies from pip). PYTHONDONTWRITEBYTECODE, set on some machines, would otherwise make every
# process compile them again at import (measured: +2 s per import of the demo's modules, sympy most of it). A file
# that does not compile (a package's own test data) must not fail the set-up; pip ignores those too.
if [ -n "$NOCOMPILE" ]; then
  "$PY" -m compileall -q -j 0 .venv/lib >/dev/null 2>&1 || true
  touch .venv/.compiled
fi
echo "$PY"
