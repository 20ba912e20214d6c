#!/usr/bin/env bash
# Install lowfp and run the main job on its built-in default (`lowfp demo`).
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/install.sh
PY=${PYTHON:-python3}
"$PY" -m lowfp demo "$@"
