#!/usr/bin/env bash
# The prepared device check of lowfp's CUDA path (docs/gpu.md): one command, a wheel built
# elsewhere, logs into OUTDIR, about 8 minutes on one H100/H200.
#
#   scripts/gpu_check.sh OUTDIR [--wheel PATH] [--dry-run]
#
# The device machine has Python 3.12, torch, CuPy, pytest, ml_dtypes and nvcc, but no Rust and
# no network: build the wheel elsewhere (python3 -m maturin build --release --out gpu_wheel),
# copy it into the git-ignored folder gpu_wheel/ (or pass --wheel), and run this from the
# repository root. The wheel is installed with `pip install --no-deps --target
# gpu_wheel/site`, and every part runs against that install (PYTHONPATH=gpu_wheel/site), never
# against python/ of the checkout: the check is of the wheel.
#
# Parts, each under its own time limit (seconds), each writing OUTDIR/<part>.log:
#   env           20   nvidia-smi, versions of Python, torch, CuPy, lowfp, which peers import
#   tests        280   tests/test_cuda_gpu.py (codecs exhaustive over float16/bfloat16, 4M
#                      float32 values per format x rounding x overflow; optimizer steps GPU ==
#                      CPU bit for bit, a 1000-tensor group among them); junit XML beside
#   bench_codecs  55   benches/bench_cuda.py: codec bandwidth as a fraction of a device copy
#   bench_optim  2x55  benches/bench_cuda.py --optim: >= 100M parameters in ~100 and ~1000
#                      tensors against torch fused AdamW, bitsandbytes, torchao (when
#                      importable), step time and peak memory
# Worst case 20 + 280 + 55 + 110 = 465 s plus the install. OUTDIR/summary.txt lists each
# part's exit status and time; the script exits non-zero when a part failed or timed out.
#
# --dry-run: everything that runs without a GPU: the install path, the imports, test
# collection and the GPU tests' skips (they skip without CuPy or a device), `--help` of the
# bench. It is what CI-side checks (and a machine without a GPU) can run.
set -u -o pipefail

usage() { echo "usage: $0 OUTDIR [--wheel PATH] [--dry-run]" >&2; exit 2; }

OUT="" WHEEL="" DRY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --wheel) [ $# -ge 2 ] || usage; WHEEL="$2"; shift 2 ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; usage ;;
        *) [ -z "$OUT" ] || usage; OUT="$1"; shift ;;
    esac
done
[ -n "$OUT" ] || usage

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
mkdir -p "$OUT" || exit 2
OUT="$(cd "$OUT" && pwd)"
SITE="$ROOT/gpu_wheel/site"
PY="${PYTHON:-python3}"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
FAILED=0

note() { echo "$*" | tee -a "$SUMMARY"; }

# run_part NAME LIMIT CMD...: CMD under `timeout LIMIT`, output to OUT/NAME.log.
run_part() {
    local name="$1" limit="$2"
    shift 2
    local t0 rc
    t0=$(date +%s)
    echo "== $name (limit ${limit}s): $*" | tee "$OUT/$name.log"
    timeout --kill-after=10 "$limit" "$@" >> "$OUT/$name.log" 2>&1
    rc=$?
    local dt=$(( $(date +%s) - t0 ))
    case $rc in
        0) note "$name: ok (${dt}s)" ;;
        124|137) note "$name: TIMED OUT after ${dt}s (limit ${limit}s)"; FAILED=1 ;;
        *) note "$name: FAILED rc=$rc (${dt}s); see $name.log"; FAILED=1 ;;
    esac
    tail -n 40 "$OUT/$name.log"
    return 0
}

# ---------------------------------------------------------------- the wheel

if [ -z "$WHEEL" ]; then
    WHEEL="$(ls -t "$ROOT"/gpu_wheel/lowfp-*.whl 2>/dev/null | head -n 1)"
fi
if [ -z "$WHEEL" ] || [ ! -f "$WHEEL" ]; then
    note "no wheel: copy lowfp-*.whl into $ROOT/gpu_wheel/ or pass --wheel PATH"
    exit 2
fi
note "wheel: $WHEEL"
note "start: $(date -u +%FT%TZ); dry run: $DRY"
rm -rf "$SITE"
if ! "$PY" -m pip install --no-deps --no-index --target "$SITE" "$WHEEL" > "$OUT/install.log" 2>&1
then
    note "install: FAILED; see install.log"
    tail -n 20 "$OUT/install.log"
    exit 1
fi
note "install: ok ($SITE)"
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1

# the tests must import the installed wheel, not the checkout's python/
run_part env 20 "$PY" - "$SITE" <<'EOF'
import importlib, os, shutil, subprocess, sys
site = os.path.realpath(sys.argv[1])
import lowfp, lowfp._core
where = os.path.realpath(lowfp.__file__)
print("python", sys.version.split()[0])
print("lowfp", getattr(lowfp, "__version__", "?"), "from", where)
if not where.startswith(site):
    sys.exit(f"lowfp was imported from {where}, not from the wheel's install in {site}")
for mod in ("numpy", "ml_dtypes", "torch", "cupy", "bitsandbytes", "torchao", "pytest"):
    try:
        m = importlib.import_module(mod)
        print(mod, getattr(m, "__version__", "?"))
    except Exception as e:  # noqa: BLE001 - report what is missing, do not fail
        print(mod, "not importable:", type(e).__name__, str(e)[:120])
import lowfp.cuda
print("lowfp.cuda.available():", lowfp.cuda.available())
try:
    import torch
    print("torch.cuda.is_available():", torch.cuda.is_available(),
          torch.cuda.get_device_name() if torch.cuda.is_available() else "")
except Exception as e:  # noqa: BLE001
    print("torch:", e)
if shutil.which("nvidia-smi"):
    print(subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                          "--format=csv"], capture_output=True, text=True).stdout)
EOF

if [ "$DRY" = 1 ]; then
    run_part collect 60 "$PY" -m pytest -q --collect-only -p no:cacheprovider \
        tests/test_cuda_gpu.py
    # without CuPy or a device the module skips as a whole: that must be a skip, not an error
    run_part tests 120 "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_cuda_gpu.py \
        --junitxml="$OUT/tests.xml"
    run_part bench_help 30 "$PY" benches/bench_cuda.py --help
    run_part bench_optim_help 30 "$PY" benches/bench_cuda.py --optim --help
else
    run_part tests 280 "$PY" -m pytest -q -rs -p no:cacheprovider --durations=15 \
        tests/test_cuda_gpu.py --junitxml="$OUT/tests.xml"
    run_part bench_codecs 55 "$PY" benches/bench_cuda.py --n $((1 << 27))
    run_part bench_optim_100 55 "$PY" benches/bench_cuda.py --optim --tensors 100 --rows 1000
    run_part bench_optim_1000 55 "$PY" benches/bench_cuda.py --optim --tensors 1000 --rows 100
fi
note "end: $(date -u +%FT%TZ)"
exit $FAILED
