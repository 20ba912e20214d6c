"""The device half of :mod:`lowfp.qtensor`: QTensors from the blockwise arrays that
:mod:`lowfp.cuda` computes on CUDA torch tensors and CuPy arrays.

This module belongs to the API layer, beside qtensor.py, not to lowfp.cuda: it is the one
place that knows both the QTensor class and the CUDA backend, so that lowfp.cuda never
imports qtensor.py or codec.py. qtensor.py imports it on the CUDA path only
(``from . import _blockwise_cuda as cuda``); it imports qtensor.py inside its functions, when
qtensor.py is loaded. Rejected: building the QTensor in lowfp.cuda (the import cycle of
issue 13), and passing the QTensor class down as an argument (the backend would still build
API objects).
"""

from __future__ import annotations

from typing import Any


def quantize_blockwise(
    x: Any,
    codec: Any,
    block_size: int,
    scale: str,
    rounding: str,
    seed: int,
    stream: int,
    nonfinite: str = "error",
    probe: Any = None,
):
    """Device half of :func:`lowfp.quantize_blockwise` (arguments already resolved and
    validated there): a QTensor whose codes, scales (and bases) are arrays on x's device.

    x: flat in the stored order when `probe` (the QTensor being built: shape, axis) says the
    rows are padded, else of any shape; nonfinite: "error" or "ocp"."""
    from . import cuda
    from .qtensor import QTensor, _nonfinite_error

    row = 0
    shape = tuple(x.shape)
    if probe is not None:
        rows, n, padded = probe._rows()
        row = n if probe.axis is not None and rows > 1 and padded != n else 0
        shape = tuple(probe.shape)
    try:
        packed, scales, g, alphas = cuda.quantize_blockwise_parts(
            x, codec, int(block_size), scale, rounding, int(seed), int(stream), nonfinite, row
        )
    except ValueError as e:
        if probe is None or "needs finite values" not in str(e):
            raise
        raise _nonfinite_error(e, probe) from None
    axis = None if probe is None else probe.axis
    return QTensor(packed, scales, alphas, g, shape, codec, int(block_size), scale, rounding, axis)


def dequantize(q: Any):
    """Device half of :meth:`lowfp.QTensor.dequantize` (:func:`lowfp.cuda.dequantize`)."""
    from . import cuda

    return cuda.dequantize(q)
