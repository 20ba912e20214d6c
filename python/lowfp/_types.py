"""The option strings of the public API as ``Literal`` types, for type checkers:
``encode(x, "e4m3", rounding="nearst")`` is an error to mypy/pyright, not only at run time.

Each type is the single list of its choices: the runtime tuples (``lowfp.codec.OVERFLOWS``
and the others in :mod:`lowfp._common`) are read from these with ``typing.get_args``, except
the rounding modes and scale rules, which the Rust core owns (``_core.ROUNDINGS``,
``_core.SCALE_RULES``) and which tests/test_types.py holds equal to these types.
"""

from __future__ import annotations

from typing import Literal

#: Rounding modes of the ExMy codecs, in the core's code order.
Rounding = Literal["nearest", "nearest_away", "toward_zero", "up", "down", "stochastic",
                   "to_odd"]
#: Rounding modes of the table codecs (Linear, Dynamic, Log).
TableRounding = Literal["nearest", "stochastic"]
#: What a value beyond the format's range becomes.
Overflow = Literal["nonfinite", "saturate"]
#: What NaN becomes in a format without NaN.
NanPolicy = Literal["error", "zero"]
#: What a negative value becomes in an unsigned format.
Negative = Literal["error", "clamp"]
#: Blockwise scale rules.
Scale = Literal["absmax", "e8m0", "e8m0_ceil", "e8m0_even", "e8m0_rceil", "e4m3"]

__all__ = ["NanPolicy", "Negative", "Overflow", "Rounding", "Scale", "TableRounding"]
