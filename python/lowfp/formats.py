"""Formats: one value per floating-point format, built from its primary fields.

All derivations (name, bits, max, value table, validation) are done by the Rust core,
so Python, Rust and the tests share one format table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Optional, Union

import numpy as np

from . import _core

NAN_KINDS = ("ieee", "max", "negzero", "none")


@dataclass(frozen=True)
class Format:
    """A floating-point format given by its primary parameters.

    Args:
        exp_bits: exponent bits, 1..8.
        man_bits: explicit mantissa bits, 0..23.
        bias: exponent bias (default 2**(exp_bits-1) - 1, one more for nan="negzero").
        signed: whether there is a sign bit.
        inf: whether ±inf exist (default: True exactly when nan == "ieee").
        nan: "ieee" (NaNs in the all-ones exponent), "max" (only the all-ones code),
            "negzero" (the code 100…0, no −0) or "none".
        subnormals: False makes exponent field 0 a normal binade (no zero, as E8M0).

    Raises:
        ValueError: impossible combinations, naming the field.
    """

    exp_bits: int
    man_bits: int
    bias: Optional[int] = None
    signed: bool = True
    inf: Optional[bool] = None
    nan: str = "ieee"
    subnormals: bool = True
    name: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if self.nan not in NAN_KINDS:
            raise ValueError(f"nan: expected one of {NAN_KINDS}, got {self.nan!r}")
        for arg in ("exp_bits", "man_bits"):
            v = getattr(self, arg)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 0:
                raise TypeError(f"{arg}: expected a non-negative int, got {v!r}")
        if self.bias is None:
            b = (1 << max(self.exp_bits - 1, 0)) - 1 + (self.nan == "negzero")
            object.__setattr__(self, "bias", b)
        if self.inf is None:
            object.__setattr__(self, "inf", self.nan == "ieee")
        object.__setattr__(self, "name", _core.format_check(self._fields))

    @property
    def _fields(self) -> tuple:
        return (
            int(self.exp_bits),
            int(self.man_bits),
            int(self.bias),
            bool(self.signed),
            bool(self.inf),
            self.nan,
            bool(self.subnormals),
        )

    @cached_property
    def _props(self) -> tuple:
        return _core.format_props(self._fields)

    @property
    def bits(self) -> int:
        """Total bits of a code."""
        return self._props[0]

    @property
    def max(self) -> float:
        """Largest finite value."""
        return self._props[1]

    @property
    def min_normal(self) -> float:
        """Smallest positive normal value."""
        return self._props[2]

    @property
    def min_subnormal(self) -> float:
        """Smallest positive value."""
        return self._props[3]

    @property
    def eps(self) -> float:
        """Distance from 1.0 to the next larger value."""
        return self._props[4]

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal binade."""
        return self._props[5]

    @property
    def emax(self) -> int:
        """Exponent of the binade of the largest finite value."""
        return self._props[6]

    @property
    def has_zero(self) -> bool:
        return bool(self.subnormals)

    @property
    def has_nan(self) -> bool:
        return self.nan != "none"

    @property
    def code_dtype(self) -> np.dtype:
        """The unsigned integer dtype codes of this format are returned in."""
        return np.dtype(np.uint8 if self.bits <= 8 else np.uint16 if self.bits <= 16 else np.uint32)

    @cached_property
    def values(self) -> np.ndarray:
        """float64 array of the value of every code, indexed by code (formats ≤ 16 bits)."""
        if self.bits > 16:
            raise ValueError(f"fmt: values needs a format of at most 16 bits, got {self.bits}")
        codes = np.arange(1 << self.bits, dtype=self.code_dtype)
        out = np.empty(codes.shape, np.float64)
        _core.decode(codes, out, self._fields)
        out.setflags(write=False)
        return out

    def __repr__(self) -> str:
        return (
            f"Format({self.name!r}: e{self.exp_bits}m{self.man_bits} bias={self.bias} "
            f"signed={self.signed} inf={self.inf} nan={self.nan!r} subnormals={self.subnormals})"
        )


FormatLike = Union[str, Format]


def format(fmt: FormatLike) -> Format:  # noqa: A001 - the public name of the design card
    """Look up a format by name, alias or ``eXmY`` spec (a Format is returned as is).

    Args:
        fmt: e.g. ``"float8_e4m3fn"``, ``"e4m3"``, ``"fp4"``, ``"bf16"``, ``"e3m3fnuz"``,
            ``"e5m2b11"``, or a :class:`Format`.

    Returns:
        The Format.

    Raises:
        ValueError: unknown name (the message lists the accepted forms).
        TypeError: neither a string nor a Format.
    """
    if isinstance(fmt, Format):
        return fmt
    if not isinstance(fmt, str):
        raise TypeError(f"fmt: expected a format name or lowfp.Format, got {type(fmt).__name__}")
    (e, m, b, s, i, n, sub), _ = _core.format_parse(fmt)
    return Format(e, m, b, s, i, n, sub)


def formats() -> list:
    """All named formats (the ml_dtypes floating dtypes, float16, float32), in table order."""
    return [format(n) for n in _core.format_names()]


def aliases() -> dict:
    """Short alias → canonical name."""
    return dict(_core.format_aliases())
