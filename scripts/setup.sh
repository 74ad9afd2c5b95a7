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
  PY=$(command -v python)
else
  [ -x .venv/bin/python ] || python3 -m venv .venv
  PY=$PWD/.venv/bin/python
fi
"$PY" -c "import torch" 2>/dev/null || "$PY" -m pip install -q "torch==2.13.0" >&2
"$PY" -m pip install -q -e ".[test]" >&2
echo "$PY"
