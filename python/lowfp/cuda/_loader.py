"""The one loader of the CUDA sources: CuPy compiles ``kernels/lowfp_kernels.cu`` (NVRTC, with
``--fmad=false`` and the kernels directory on the include path) at first use and caches it,
in memory per process and on disk in CuPy's kernel cache.

CuPy's disk cache is keyed by the source text and options only, not by included headers, so
the source handed to CuPy starts with a digest of every kernel file: editing the header
recompiles.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path
from typing import Any, Tuple

KERNELS_DIR = Path(__file__).resolve().parent / "kernels"
SOURCES = ("lowfp_elem.cuh", "lowfp_kernels.cu")
#: NVRTC options: no contraction of a*b+c into fma (the host check builds with
#: -ffp-contract=off), IEEE division and square root (NVRTC's defaults, stated).
OPTIONS = ("--std=c++17", "--fmad=false", "--prec-div=true", "--prec-sqrt=true", f"-I{KERNELS_DIR}")

INSTALL_HINT = "install lowfp[cuda] (or the CuPy wheel for your CUDA, e.g. cupy-cuda12x)"


def cupy() -> Any:
    """The cupy module, or ImportError saying what to install."""
    try:
        import cupy as cp
    except ImportError as e:
        raise ImportError(f"lowfp.cuda needs CuPy for CUDA tensors: {INSTALL_HINT}") from e
    return cp


def source(main: str = "lowfp_kernels.cu", files: Tuple[str, ...] = SOURCES) -> str:
    """The source of kernel file `main` handed to CuPy, prefixed by the digest of `files`
    (every kernel file it includes: CuPy's disk cache does not see headers)."""
    h = hashlib.sha256()
    for name in files:
        h.update((KERNELS_DIR / name).read_bytes())
    body = (KERNELS_DIR / main).read_text()
    return f"// lowfp {main} digest {h.hexdigest()}\n{body}"


@lru_cache(maxsize=None)
def module(device_id: int, main: str = "lowfp_kernels.cu", files: Tuple[str, ...] = SOURCES) -> Any:
    """`main` compiled for device `device_id` (once per process; CuPy caches on disk too)."""
    cp = cupy()
    try:
        mod = cp.RawModule(code=source(main, files), options=OPTIONS)
        mod.compile()
    except Exception as e:  # NVRTC missing or a CuPy built for another CUDA than the driver's
        raise RuntimeError(
            f"lowfp.cuda could not compile {main} with CuPy ({type(e).__name__}: {e}); "
            f"check that CuPy matches your CUDA version: {INSTALL_HINT}"
        ) from e
    return mod


def kernel(name: str) -> Any:
    """The compiled kernel `name` for the current CUDA device."""
    cp = cupy()
    return module(cp.cuda.Device().id).get_function(name)
