#!/usr/bin/env bash
# Set everything up, then run the main job (the ShapesWorld demo). Extra arguments go to `zreward demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(bash scripts/setup.sh | tail -n 1)
# The embedded demo's models are tiny: one intra-op thread is as fast, and much faster on a busy machine (measured).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec "$PY" -m zreward.cli demo "$@"
