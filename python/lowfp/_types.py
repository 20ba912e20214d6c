"""The option strings of the public API as ``Literal`` types, for type checkers:
``encode(x, "e4m3", rounding="nearst")`` is an error to mypy/pyright, not only at run time.

Each type is the single list of its choices: the runtime tuples (``lowfp.codec.OVERFLOWS``
and the others in :mod:`lowfp._common`) are read from these with ``typing.get_args``, except
the rounding modes and scale rules, which the Rust core owns (``_core.ROUNDINGS``,
``_core.SCALE_RULES``) and which tests/test_types.py holds equal to these types.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Sequence, TypeVar, Union

import numpy as np

if TYPE_CHECKING:
    import torch

#: Rounding modes of the ExMy codecs, in the core's code order.
Rounding = Literal[
    "nearest", "nearest_away", "toward_zero", "up", "down", "stochastic", "to_odd", "stochastic16"
]
#: Rounding modes of the table codecs (Linear, Dynamic, Log).
TableRounding = Literal["nearest", "stochastic", "stochastic16"]
#: What a value beyond the format's range becomes.
Overflow = Literal["nonfinite", "saturate"]
#: What NaN becomes in a format without NaN.
NanPolicy = Literal["error", "zero"]
#: What a negative value becomes in an unsigned format.
Negative = Literal["error", "clamp"]
#: Blockwise scale rules.
Scale = Literal["absmax", "e8m0", "e8m0_ceil", "e8m0_even", "e8m0_rceil", "e4m3"]

#: An array argument whose kind the result keeps: a NumPy array in, a NumPy array out; a torch
#: tensor in, a torch tensor out (the ``typing.overload``s of encode, decode, quantize, pack,
#: unpack and the table codecs).
ArrayT = TypeVar("ArrayT", np.ndarray, "torch.Tensor")
#: Python numbers and (nested) sequences: accepted like ``np.asarray`` would, with a NumPy
#: result. (A fallback typed ``Any`` instead would match ``np.ndarray`` too, and mypy answers
#: ``Any`` when two overloads match an argument whose type holds ``Any``, as a plain
#: ``np.ndarray`` annotation does.)
PlainValues = Union[Sequence[Any], float]

__all__ = [
    "ArrayT",
    "NanPolicy",
    "Negative",
    "Overflow",
    "PlainValues",
    "Rounding",
    "Scale",
    "TableRounding",
]
