"""lowfp.cuda: the Rust codecs mirrored as CUDA kernels (CuPy), bit for bit.

The public functions of :mod:`lowfp` dispatch here when given a CUDA torch tensor or a CuPy
array, so most code never imports this module. CuPy is an optional dependency
(``pip install lowfp[cuda]``); it is imported only when a CUDA array is actually used, so
``import lowfp`` and ``import lowfp.cuda`` work without it.

Kernels live in ``kernels/`` as package data: ``lowfp_elem.cuh`` holds the per-element
functions (also compiled as plain C++ by the host check in CI), ``lowfp_kernels.cu`` the
kernels; :mod:`lowfp.cuda._loader` compiles them once per device with ``--fmad=false``.

Layering: this package sits below the API. It imports :mod:`lowfp._common` (option checks,
packed length, exact-in-dtype limits, the table codec base), :mod:`lowfp.formats` and the core,
never :mod:`lowfp.codec` or :mod:`lowfp.qtensor` (tests/test_layering.py); those call down into
it, and ``lowfp._blockwise_cuda`` turns its blockwise arrays into QTensors.

The fused optimizer steps are in :mod:`lowfp.cuda.optim`; docs/gpu.md says what has been
checked on the host and what only on a device.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from .._common import SCALE_FORMATS, TableCodec
from ..formats import format
from ._loader import INSTALL_HINT, KERNELS_DIR
from .codec import (
    _to_cupy,
    check_same_device,
    decode,
    dequantize_blockwise_arrays,
    encode,
    is_cupy,
    is_torch_cuda,
    on_device,
    pack,
    quantize,
    quantize_blockwise_arrays,
    random_bits,
    unpack,
)

__all__ = [
    "INSTALL_HINT",
    "KERNELS_DIR",
    "available",
    "decode",
    "dequantize",
    "encode",
    "is_cupy",
    "is_torch_cuda",
    "on_device",
    "pack",
    "quantize",
    "quantize_blockwise_parts",
    "random_bits",
    "unpack",
]


def available() -> bool:
    """Whether CuPy is importable and sees at least one CUDA device."""
    try:
        import cupy as cp

        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver, no device: all mean "not available"
        return False


def _quantile_log(codec: Any) -> Optional[Tuple[int, bool, bool, float]]:
    """(bits, signed, zero, quantile) of a Log codec choosing its base per block, else None."""
    if not isinstance(codec, TableCodec):
        return None
    spec = codec.spec()
    q = float(spec.get("quantile") or 0.0)
    if spec.get("codec") != "log" or q <= 0.0:
        return None
    return int(spec["bits"]), bool(spec["signed"]), bool(spec["zero"]), q


def _codec_table(codec: Any) -> tuple:
    """(levels or None, code bits, element Format or None, element max) of a blockwise codec:
    a table codec (Linear, Dynamic, Log with a fixed base; its levels; a per-block base: no
    levels) or a format (name or Format)."""
    if _quantile_log(codec) is not None:
        return None, int(codec.bits), None, 1.0
    if isinstance(codec, TableCodec):
        return np.ascontiguousarray(codec.levels, np.float32), int(codec.bits), None, 1.0
    f = format(codec)
    return None, int(f.bits), f, float(f.max)


def quantize_blockwise_parts(
    x: Any,
    codec: Any,
    block_size: int,
    scale: str,
    rounding: str,
    seed: int,
    stream: int,
    nonfinite: str = "error",
    row: int = 0,
) -> tuple:
    """Device half of :func:`lowfp.quantize_blockwise` (arguments already resolved and
    validated there): (packed codes, scales, tensor scale g as a float, bases or None),
    arrays on x's device, the scales stored as the rule stores them (float32 for "absmax",
    else codes of ``SCALE_FORMATS[scale]``), the bases (float32, one per block) for a
    Log(quantile=...) codec. x is flat in the stored order: rows of `row` real elements
    padded to whole blocks when row > 0.

    lowfp._blockwise_cuda builds the QTensor: this package knows arrays, not QTensor."""
    levels, code_bits, elem, elem_max = _codec_table(codec)
    a, kind = _to_cupy(x, "x")
    if kind not in ("float32", "float64", "float16", "bfloat16"):
        raise TypeError(
            f"x: expected float32, float64, float16 or bfloat16 values, got dtype {kind}"
        )
    x32 = x
    if kind != "float32":  # 16-bit floats widen exactly; float64 rounds once (to nearest)
        x32 = x.float() if is_torch_cuda(x) else x.astype("float32")
    x32 = x32.reshape(-1)
    packed, scales, g, alphas = quantize_blockwise_arrays(
        x32,
        elem,
        levels,
        elem_max,
        code_bits,
        int(block_size),
        scale,
        rounding,
        int(seed),
        int(stream),
        nonfinite,
        _quantile_log(codec),
        int(row),
    )
    if scale in SCALE_FORMATS:
        scales = encode(scales, SCALE_FORMATS[scale])
    return packed, scales, g, alphas


def dequantize(q: Any):
    """Device half of :meth:`lowfp.QTensor.dequantize`: float32 on the codes' device.

    q: a QTensor (read through its fields codes, scales, alphas, scale, codec, block_size,
    global_scale, shape, size; this package does not import the class)."""
    check_same_device(codes=q.codes, scales=q.scales)
    logq = _quantile_log(q.codec)
    if logq is not None:
        levels, code_bits = None, logq[0]
    elif isinstance(q.codec, TableCodec):
        levels, code_bits = np.ascontiguousarray(q.codec.levels, np.float32), int(q.codec.bits)
    else:
        f = format(q.codec)
        levels, code_bits = np.ascontiguousarray(f.values, np.float32), int(f.bits)
    fmt = SCALE_FORMATS.get(q.scale)
    s = q.scales if fmt is None else decode(q.scales, fmt)
    out = dequantize_blockwise_arrays(
        q.codes,
        s,
        levels,
        code_bits,
        int(q.block_size),
        float(q.global_scale),
        int(q.size),
        q.alphas if logq is not None else None,
        logq,
    )
    return out.reshape(q.shape)


def __getattr__(name: str):
    if name == "quantize_blockwise":  # moved up a layer: this package does not build QTensors
        raise AttributeError(
            "lowfp.cuda.quantize_blockwise moved to "
            "lowfp._blockwise_cuda.quantize_blockwise (lowfp.cuda returns "
            "arrays: quantize_blockwise_parts; qtensor.py builds the QTensor)"
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
