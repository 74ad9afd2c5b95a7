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
# In our own ./.venv, pip installs without byte-compiling and compileall then compiles the environment on every core
# (measured on a fresh clone, 2 cores: 94 s -> 73 s); an active environment keeps pip's own compilation.
NOCOMPILE=""
if [ -n "${VIRTUAL_ENV:-}${CONDA_PREFIX:-}" ]; then
  PY=$(command -v python)
else
  [ -x .venv/bin/python ] || python3 -m venv .venv
  PY=$PWD/.venv/bin/python
  [ -f .venv/.compiled ] || NOCOMPILE="--no-compile"  # once compiled, pip compiles what it adds later itself
fi
"$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install -q $NOCOMPILE "torch==2.13.0" >&2
"$PY" -m pip install -q $NOCOMPILE -e ".[test]" >&2
if [ -n "$NOCOMPILE" ]; then
  # a file that does not compile (a package's own test data) must not fail the set-up; pip ignores those too
  "$PY" -m compileall -q -j 0 .venv/lib >/dev/null 2>&1 || true
  touch .venv/.compiled
fi
echo "$PY"
