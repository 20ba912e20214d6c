#!/usr/bin/env bash
# Lint, then every test: the Rust core (also with the x86 SIMD paths compiled out, as aarch64
# and Apple Silicon build it), then pytest against the installed wheel (not the source tree).
# The wheel is rebuilt only when its sources changed (scripts/install.sh).
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
t0=$SECONDS
step() { echo "== $1 ($((SECONDS - t0)) s)"; }
step "cargo fmt --check"
cargo fmt --check
step "cargo clippy -D warnings: default, python feature, portable (no x86 SIMD)"
cargo clippy -q --all-targets -- -D warnings
cargo clippy -q --all-targets --features python -- -D warnings
cargo clippy -q --all-targets --features portable -- -D warnings
step "cargo test (the Rust core, no Python needed)"
cargo test -q --release
step "fuzz corpus, debug build (integer overflow panics there, as under cargo fuzz)"
LOWFP_FUZZ_CASES=5000 cargo test -q --lib fuzz
step "cargo test --features portable (the code aarch64 / Apple Silicon run)"
cargo test -q --release --features portable
step "install (scripts/install.sh test)"
bash scripts/install.sh test
step "ruff check; ruff format --check; mypy"
"$PY" -m ruff check python tests benches scripts
"$PY" -m ruff format --check python tests benches scripts
"$PY" -m mypy
step "pytest"
"$PY" -m pytest -q tests "$@"
step "done"
