#!/usr/bin/env bash
# Install lowfp and run the main job: `lowfp experiment` with no name runs the quick size of
# every experiment on seeds 0,1,2 and writes lowfp-experiments/report.md (verdict tables per
# paper first, then every table as mean ± sd over the seeds, paired differences, CSVs, PNGs).
# It took 4 min 17 s and 6 min 56 s in two runs on an idle 2-core VM (docs/experiments.md).
# Extra arguments pass through, e.g. `bash main.sh --seeds 0,1,2,3,4` or
# `bash main.sh beta2 --full`. See docs/experiments.md. `lowfp demo` is the quick format table.
set -euo pipefail
cd "$(dirname "$0")"
bash scripts/install.sh experiments
PY=${PYTHON:-python3}
"$PY" -m lowfp experiment "$@"
