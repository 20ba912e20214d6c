"""lowfp: exact low-precision number formats, fast.

The public API (NumPy arrays and CPU torch tensors):

- formats: :func:`format`, :func:`formats`, :func:`aliases`, :class:`Format`
- ExMy codec: :func:`encode`, :func:`decode`, :func:`quantize`, :func:`random_bits`
- packing: :func:`pack`, :func:`unpack`
- table codecs: :class:`Linear`, :class:`Dynamic`, :class:`Log`
- blockwise: :func:`quantize_blockwise`, :class:`QTensor`, :func:`save_qtensors`,
  :func:`load_qtensors`, :data:`PRESETS`
- threads: :func:`set_num_threads`, :func:`num_threads`
- random keys: :func:`manual_seed` (resets the generator behind ``seed=None``)
- research tools (need torch): :mod:`lowfp.qat`, :mod:`lowfp.stats`, :mod:`lowfp.geometry`
"""

from ._seed import manual_seed
from .codec import (
    Dynamic,
    Linear,
    Log,
    decode,
    encode,
    num_threads,
    pack,
    quantize,
    random_bits,
    set_num_threads,
    unpack,
)
from .formats import Format, aliases, format, formats
from .qtensor import PRESETS, QTensor, load_qtensors, quantize_blockwise, save_qtensors

__version__ = "0.1.0"

__all__ = [
    "Dynamic",
    "Format",
    "Linear",
    "Log",
    "PRESETS",
    "QTensor",
    "aliases",
    "decode",
    "encode",
    "format",
    "formats",
    "load_qtensors",
    "manual_seed",
    "num_threads",
    "pack",
    "quantize",
    "quantize_blockwise",
    "random_bits",
    "save_qtensors",
    "set_num_threads",
    "unpack",
]
