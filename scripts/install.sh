#!/usr/bin/env bash
# Build the abi3 wheel and install it, with the dependencies of the given extras, into $PYTHON
# (default python3). The dependency lists are pyproject.toml's (read by scripts/deps.py), so
# `pip install '.[test]'` and this script install the same things.
#
#   bash scripts/install.sh [EXTRA[,EXTRA...]]     e.g. experiments (main.sh), test (test.sh)
#
# Idempotent: packages already installed are not reinstalled, and the wheel is rebuilt only
# when rust/, python/, Cargo.* or pyproject.toml changed since the last install into the
# same Python (a hash stored in target/). LOWFP_REBUILD=1 forces a rebuild.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras=${1:-}

reqs=$("$PY" scripts/deps.py "$extras")  # fails loudly on an unknown extra
need=()
while IFS= read -r r; do [ -n "$r" ] && need+=("$r"); done <<< "$reqs"
if [ ${#need[@]} -gt 0 ]; then
  rest=()
  for r in "${need[@]}"; do
    # no NVIDIA driver on Linux: the CPU torch wheel (~200 MB), not ~5 GB of CUDA wheels
    if [[ $r == torch[\<\>=]* ]] && [ "$(uname)" = Linux ] && ! command -v nvidia-smi >/dev/null; then
      echo "== installing $r (CPU build: no nvidia-smi found)"
      "$PY" -m pip install -q "$r" --index-url https://download.pytorch.org/whl/cpu
    else
      rest+=("$r")
    fi
  done
  need=(${rest[@]+"${rest[@]}"})
  if [ ${#need[@]} -gt 0 ]; then
    echo "== installing: ${need[*]}"
    "$PY" -m pip install -q "${need[@]}"
  fi
fi
# `-m maturin` needs its binary beside this Python: a venv over system packages sees the
# system's maturin module without it, hence --ignore-installed
if ! "$PY" -m maturin --version >/dev/null 2>&1; then
  echo "== installing maturin"
  "$PY" -m pip install -q --ignore-installed "maturin>=1.5,<2"
fi
command -v cargo >/dev/null || { echo "error: cargo (Rust toolchain) is required: https://rustup.rs" >&2; exit 1; }

# what the wheel is built from, and which Python it went into
stamp=target/lowfp-installed.stamp
want="$(find rust python Cargo.toml Cargo.lock pyproject.toml -type f \
          ! -name '*.so' ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | sort -z \
        | xargs -0 sha256sum | sha256sum | cut -c1-16) $("$PY" -c 'import sys; print(sys.prefix)')"
if [ "${LOWFP_REBUILD:-0}" != 1 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
   && (cd / && "$PY" -c "import lowfp._core" >/dev/null 2>&1); then
  echo "== the installed wheel is current (${want%% *}); not rebuilt"
else
  echo "== building the wheel (release)"
  rm -rf dist
  "$PY" -m maturin build --release --out dist
  "$PY" -m pip install -q --force-reinstall --no-deps dist/lowfp-*.whl
  mkdir -p target
  echo "$want" > "$stamp"
fi
echo "== installed $(cd / && "$PY" -c 'import lowfp; print(lowfp.__version__, lowfp.__file__)')"
