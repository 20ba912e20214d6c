#!/usr/bin/env bash
# The long fuzz run (CI runs the short versions: `cargo test --release fuzz` and
# tests/test_fuzz_files.py in pytest).
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]
#
# Runs each cargo-fuzz target (fuzz/fuzz_targets: format_spec, packed_decode, block_spec,
# optim_step) for SECONDS (default 60) with libFuzzer, then the hypothesis test of files
# and state dicts in its long mode (LOWFP_FUZZ_LONG=1: many more examples, no deadline).
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`); the Python part
# needs the lowfp extension built (see HELPERS / README) or installed.
# A crash stops the run; its input is left in fuzz/artifacts/<target>/ (replay it with
# `cargo +nightly fuzz run <target> <file>`). Corpora persist in fuzz/corpus/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
    TARGETS=(format_spec packed_decode block_spec optim_step)
fi
PY=${PYTHON:-python3}
for t in "${TARGETS[@]}"; do
    echo "== cargo fuzz: $t for ${SECS}s"
    mkdir -p "fuzz/corpus/$t"
    (cd fuzz && cargo +nightly fuzz run "$t" "corpus/$t" -- \
        -max_total_time="$SECS" -max_len=4096 -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1)
done
echo "== hypothesis: QTensor files and optimizer state dicts (long mode)"
LOWFP_FUZZ_LONG=1 PYTHONPATH=${PYTHONPATH:-python} "$PY" -m pytest -q tests/test_fuzz_files.py
