#!/usr/bin/env bash
# Set everything up, then run the main job (the ShapesWorld demo). Extra arguments go to `zreward demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$(bash scripts/setup.sh | tail -n 1)
exec "$PY" -m zreward.cli demo "$@"
