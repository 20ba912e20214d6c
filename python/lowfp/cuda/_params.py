"""Kernel parameters shared by the CuPy kernels and the host check: a format and its encode
options packed into the integers the element header (``kernels/lowfp_elem.cuh``) takes.

Pure Python (no CuPy), so the host check (tests/test_cuda_host.py) drives the header's C++
build with exactly the arguments the kernels get.
"""

from __future__ import annotations

from typing import Tuple

from .._common import ROUNDINGS
from ..formats import Format

#: LF_NAN_* of the header.
NAN_KINDS = {"ieee": 0, "max": 1, "negzero": 2, "none": 3}
#: LF_NEAREST … LF_STOCHASTIC of the header, in the order of the core's ROUNDINGS.
MODES = {name: i for i, name in enumerate(ROUNDINGS)}
#: LF_IN_* of the header.
KINDS = {"float32": 0, "float64": 1, "float16": 2, "bfloat16": 3}
#: LF_SCALE_* of the header.
SCALE_RULES = {"absmax": 0, "e8m0": 1, "e4m3": 2, "e8m0_ceil": 3, "e8m0_even": 4, "e8m0_rceil": 5}

_SIGNED, _INF, _SUBNORMALS, _NAN_SHIFT = 1, 2, 4, 3
_SATURATE, _NAN_TO_ZERO, _CLAMP_NEGATIVE = 32, 64, 128


def format_args(
    f: Format, overflow: str = "nonfinite", nan: str = "error", negative: str = "error"
) -> Tuple[int, int, int, int]:
    """(exp_bits, man_bits, bias, flags) of ``lf_make_enc`` for a format and its options.

    The flags carry `inf` and the NaN kind; ``lf_make_enc`` derives the special codes from
    them as ``rust/format.rs`` does (``max_code_mag``, ``inf_code_mag``, ``nan_code``),
    P3109-style formats (`inf` with ``nan="negzero"`` or ``"max"``) included."""
    flags = (
        (_SIGNED if f.signed else 0)
        | (_INF if f.inf else 0)
        | (_SUBNORMALS if f.subnormals else 0)
        | (NAN_KINDS[f.nan] << _NAN_SHIFT)
        | (_SATURATE if overflow == "saturate" else 0)
        | (_NAN_TO_ZERO if nan == "zero" else 0)
        | (_CLAMP_NEGATIVE if negative == "clamp" else 0)
    )
    return int(f.exp_bits), int(f.man_bits), int(f.bias), flags
