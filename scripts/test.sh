#!/usr/bin/env bash
# Set everything up, then run the CPU test suite (one pytest process). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(bash scripts/setup.sh | tail -n 1)
exec "$PY" -m pytest "$@"
