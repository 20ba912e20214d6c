#!/usr/bin/env bash
# Install lowfp with its test dependencies and run every test: cargo test, then pytest
# against the installed wheel (not the source tree).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
echo "== cargo test (the Rust core, no Python needed)"
cargo test --release
bash scripts/install.sh test
echo "== lint (ruff; cargo fmt --check)"
"$PY" -m ruff check python tests benches scripts
cargo fmt --check
echo "== pytest"
"$PY" -m pytest -q tests "$@"
