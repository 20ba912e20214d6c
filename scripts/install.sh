#!/usr/bin/env bash
# Build the abi3 wheel and install it (plus the given extras' dependencies) into $PYTHON
# (default python3). Idempotent: packages already importable are not reinstalled.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=${1:-}

need=()
have() { "$PY" -c "import $1" >/dev/null 2>&1; }
have maturin || need+=("maturin>=1.5,<2")
have numpy || need+=("numpy>=1.23")
if [ "$extras" = main ] || [ "$extras" = test ]; then
  # the main job (`lowfp experiment`) trains with torch and plots with matplotlib
  have torch || need+=("torch>=2.1")
  have matplotlib || need+=("matplotlib>=3.5")
fi
if [ "$extras" = test ]; then
  have pytest || need+=("pytest>=7")
  have hypothesis || need+=("hypothesis>=6")
  have ml_dtypes || need+=("ml_dtypes>=0.5")
  have gfloat || need+=("gfloat>=0.4")
  have safetensors || need+=("safetensors>=0.4")
  have bitsandbytes || need+=("bitsandbytes>=0.45")
  # the real-client optimizer suite (tests/test_optim_clients.py): Trainer needs accelerate
  have transformers || need+=("transformers>=4.45")
  have accelerate || need+=("accelerate>=1.0")
  have lightning || need+=("lightning>=2.2")
  have ruff || need+=("ruff>=0.5")
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing: ${need[*]}"
  "$PY" -m pip install -q "${need[@]}"
fi
command -v cargo >/dev/null || { echo "error: cargo (Rust toolchain) is required: https://rustup.rs" >&2; exit 1; }

echo "== building the wheel (release)"
rm -rf dist
"$PY" -m maturin build --release --out dist
"$PY" -m pip install -q --force-reinstall --no-deps dist/lowfp-*.whl
echo "== installed $("$PY" -c 'import lowfp; print(lowfp.__version__, lowfp.__file__)')"
