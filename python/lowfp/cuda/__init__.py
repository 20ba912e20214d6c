"""lowfp.cuda: the Rust codecs mirrored as CUDA kernels (CuPy), bit for bit.

The public functions of :mod:`lowfp` dispatch here when given a CUDA torch tensor or a CuPy
array, so most code never imports this module. CuPy is an optional dependency
(``pip install lowfp[cuda]``); it is imported only when a CUDA array is actually used, so
``import lowfp`` and ``import lowfp.cuda`` work without it.

Kernels live in ``kernels/`` as package data: ``lowfp_elem.cuh`` holds the per-element
functions (also compiled as plain C++ by the host check in CI), ``lowfp_kernels.cu`` the
kernels; :mod:`lowfp.cuda._loader` compiles them once per device with ``--fmad=false``.

Not on the GPU yet: log codecs with a per-block quantile base, and the fused optimizer steps.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._loader import INSTALL_HINT, KERNELS_DIR
from .codec import (
    decode,
    encode,
    is_cupy,
    is_torch_cuda,
    on_device,
    pack,
    quantize,
    random_bits,
    unpack,
)

__all__ = ["INSTALL_HINT", "KERNELS_DIR", "available", "decode", "encode", "is_cupy",
           "is_torch_cuda", "on_device", "pack", "quantize", "random_bits", "unpack"]


def available() -> bool:
    """Whether CuPy is importable and sees at least one CUDA device."""
    try:
        import cupy as cp

        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no CuPy, no driver, no device: all mean "not available"
        return False


def _table_levels(codec: Any) -> np.ndarray:
    return np.ascontiguousarray(codec.levels, np.float32)


def quantize_blockwise(x: Any, codec: Any, block_size: int, scale: str, rounding: str, seed: int,
                       stream: int):
    """Device half of :func:`lowfp.quantize_blockwise` (arguments already resolved and
    validated there): a QTensor whose codes and scales are arrays on x's device."""
    from ..codec import Dynamic, Linear, Log
    from ..formats import format
    from ..qtensor import _SCALE_FMT, QTensor
    from .codec import _to_cupy, quantize_blockwise_arrays

    if isinstance(codec, Log) and codec.quantile is not None:
        raise ValueError("codec: Log(quantile=...) chooses its base per block, which runs on "
                         "the CPU only so far; quantize on the CPU or use a fixed alpha")
    a, kind = _to_cupy(x, "x")
    if kind not in ("float32", "float64", "float16", "bfloat16"):
        raise TypeError(f"x: expected float32, float64, float16 or bfloat16 values, "
                        f"got dtype {kind}")
    shape = tuple(x.shape)
    x32 = x
    if kind != "float32":  # 16-bit floats widen exactly; float64 rounds once (to nearest)
        x32 = x.float() if is_torch_cuda(x) else x.astype("float32")
    x32 = x32.reshape(-1)
    if isinstance(codec, (Linear, Dynamic, Log)):
        elem, levels, elem_max, code_bits = None, _table_levels(codec), 1.0, codec.bits
    else:
        elem = format(codec)
        levels, elem_max, code_bits = None, float(elem.max), int(elem.bits)
    packed, scales, g = quantize_blockwise_arrays(x32, elem, levels, elem_max, code_bits,
                                                  int(block_size), scale, rounding, int(seed),
                                                  int(stream))
    if scale != "absmax":
        scales = encode(scales, _SCALE_FMT[scale])
    return QTensor(packed, scales, None, g, shape, codec, int(block_size), scale, rounding)


def dequantize(q: Any):
    """Device half of :meth:`lowfp.QTensor.dequantize`: float32 on the codes' device."""
    from ..codec import Dynamic, Linear, Log
    from ..formats import format
    from ..qtensor import _SCALE_FMT
    from .codec import check_same_device, dequantize_blockwise_arrays

    check_same_device(codes=q.codes, scales=q.scales)
    if isinstance(q.codec, Log) and q.codec.quantile is not None:
        raise ValueError("codec: Log(quantile=...) QTensors dequantize on the CPU only so far")
    if isinstance(q.codec, (Linear, Dynamic, Log)):
        levels, code_bits = _table_levels(q.codec), q.codec.bits
    else:
        f = format(q.codec)
        levels, code_bits = np.ascontiguousarray(f.values, np.float32), int(f.bits)
    s = q.scales if q.scale == "absmax" else decode(q.scales, _SCALE_FMT[q.scale])
    out = dequantize_blockwise_arrays(q.codes, s, levels, code_bits, q.block_size,
                                      float(q.global_scale), q.size)
    return out.reshape(q.shape)
