#!/usr/bin/env bash
# Install lowfp and run the main job on its built-in default: `lowfp experiment`, a short run of
# every experiment, writing lowfp-experiments/report.md (+ CSVs and PNGs). `lowfp demo` is the
# quick format table and round trip.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/install.sh experiments
PY=${PYTHON:-python3}
"$PY" -m lowfp experiment "$@"
