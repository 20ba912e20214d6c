"""Formats: one value per floating-point format, built from its primary fields.

All derivations (name, bits, max, value table, validation) are done by the Rust core,
so Python, Rust and the tests share one format table.

Design notes
- :func:`format` also takes the dtypes of the ecosystem: NumPy/ml_dtypes dtypes and scalar
  types (``ml_dtypes.float8_e4m3fn``, ``np.dtype(ml_dtypes.bfloat16)``, ``np.float16``) and
  torch dtypes (``torch.float8_e5m2``). They are recognized by their module and name, so
  neither torch nor ml_dtypes is imported by lowfp; the names are the format table's own
  (ml_dtypes and torch spell them alike), so there is no second table to keep in sync.
- ``torch.float4_e2m1fn_x2`` is rejected: one element of it is a *pair* of FP4 codes (a
  packed byte), not a value of one format; its bytes are ``lowfp.pack(codes, 4)``.
- Looked-up names are cached (a format is an immutable value), so a string ``fmt`` costs
  one dict lookup per call.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Dict, Optional, Union, cast

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
        inf: whether ±inf exist (default: True exactly when nan == "ieee"). With
            nan="negzero" or "max", inf is the magnitude code just below the NaN (IEEE P3109
            style: ``Format(4, 3, nan="negzero", inf=True)`` is ``"p3109_k8p4"``).
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
    if TYPE_CHECKING:  # set in __post_init__; not dataclass fields at run time
        _handle: Any = field(init=False, repr=False, compare=False)
        _encoders: Dict[tuple, Any] = field(init=False, repr=False, compare=False)

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
        try:
            handle = _core.Format(*self._fields)
        except ValueError as e:
            raise ValueError(_py_range(str(e))) from None
        object.__setattr__(self, "_handle", handle)
        object.__setattr__(self, "name", handle.name)
        object.__setattr__(self, "_encoders", {})

    @cached_property
    def _fields(self) -> tuple:
        return (
            int(self.exp_bits),
            int(self.man_bits),
            int(cast(int, self.bias)),  # set by __post_init__
            bool(self.signed),
            bool(self.inf),
            self.nan,
            bool(self.subnormals),
        )

    @cached_property
    def _props(self) -> tuple:
        return self._handle.props

    def _encoder(
        self, rounding: str, overflow: str, nan_to_zero: bool = False, clamp_negative: bool = False
    ) -> Any:
        """The core's encoder for these options (``_core.Encoder``), built once per options
        and kept on the format: at most 7 roundings x 2 overflows x 2 x 2 entries, since
        the constructor rejects other options."""
        key = (rounding, overflow, nan_to_zero, clamp_negative)
        try:
            return self._encoders[key]
        except KeyError:
            e = _core.Encoder(self._handle, rounding, overflow, nan_to_zero, clamp_negative)
            self._encoders[key] = e
            return e

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

    @cached_property
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
        _core.decode(codes, out, self._handle)
        out.setflags(write=False)
        return out

    @property
    def ml_dtype(self) -> Optional[np.dtype]:
        """The NumPy dtype holding this format's values with identical encodings
        (``np.dtype(ml_dtypes.float8_e4m3fn)``, ``np.dtype(np.float16)``, …), or None when
        none exists (e.g. an ``eXmY`` spec outside the table).

        Raises:
            ImportError: the dtype is one of ml_dtypes' and ml_dtypes is not installed.
        """
        if self.name in ("float16", "float32"):
            return np.dtype(self.name)
        if self.name not in _ML_DTYPES:
            return None
        try:
            import ml_dtypes
        except ImportError:
            raise ImportError(
                f"ml_dtype: {self.name} arrays need ml_dtypes (pip install ml_dtypes)"
            ) from None
        return np.dtype(getattr(ml_dtypes, self.name))

    @property
    def torch_dtype(self) -> Any:
        """The torch dtype of this format (``torch.float8_e4m3fn``, ``torch.bfloat16``, …),
        or None when torch has none (float4_e2m1fn: torch's ``float4_e2m1fn_x2`` holds a
        packed pair of codes per element, see :func:`lowfp.pack`).

        Raises:
            ImportError: torch is not installed.
        """
        if self.name not in _TORCH_DTYPES:
            return None
        import torch

        return getattr(torch, self.name, None)

    def __repr__(self) -> str:
        return (
            f"Format({self.name!r}: e{self.exp_bits}m{self.man_bits} bias={self.bias} "
            f"signed={self.signed} inf={self.inf} nan={self.nan!r} subnormals={self.subnormals})"
        )


FormatLike = Union[str, Format, Any]  # Any: a NumPy/ml_dtypes or torch dtype

# The formats with a dtype of the same name in ml_dtypes / torch (the names of the table).
_ML_DTYPES = frozenset(
    (
        "float8_e4m3fn",
        "float8_e4m3",
        "float8_e5m2",
        "float8_e4m3fnuz",
        "float8_e5m2fnuz",
        "float8_e4m3b11fnuz",
        "float8_e3m4",
        "float8_e8m0fnu",
        "float6_e2m3fn",
        "float6_e3m2fn",
        "float4_e2m1fn",
        "bfloat16",
    )
)
_TORCH_DTYPES = frozenset(
    (
        "float8_e4m3fn",
        "float8_e5m2",
        "float8_e4m3fnuz",
        "float8_e5m2fnuz",
        "float8_e8m0fnu",
        "bfloat16",
        "float16",
        "float32",
    )
)

_CACHE: dict = {}  # name or dtype -> Format; formats are immutable values
_CACHE_MAX = 1024


def _py_range(msg: str) -> str:
    """A core message with Python range syntax: ``"bits: expected 1..=8"`` becomes
    ``"bits: expected 1 <= bits <= 8"`` (the core's ``a..=b`` and ``a..b`` are inclusive)."""
    m = re.match(r"(\w+): ", msg)
    if m is None or ".." not in msg:
        return msg
    var = "code" if m.group(1) == "codes" else m.group(1)

    def repl(g: "re.Match") -> str:
        return f"{'with ' if g.group(1) else ''}{g.group(2)} <= {var} <= {g.group(3)}"

    return re.sub(r"(\bin )?(-?\d+)\.\.=?(-?\d+)", repl, msg)


def _dtype_name(fmt: Any) -> Optional[str]:
    """The name of a NumPy/ml_dtypes/torch dtype (or scalar type), None for anything else.
    Neither torch nor ml_dtypes is imported: a torch dtype is recognized by its type."""
    t = type(fmt)
    if t.__name__ == "dtype" and t.__module__ == "torch":
        return str(fmt)[len("torch.") :]
    if isinstance(fmt, np.dtype):
        return fmt.name
    if isinstance(fmt, type) and issubclass(fmt, np.generic):
        return np.dtype(fmt).name
    return None


def _suggest(name: str) -> str:
    """ " Did you mean …?" over the table's names, its aliases and the blockwise presets."""
    from .qtensor import PRESETS  # only on the error path (qtensor imports this module)

    words = list(_core.format_names()) + [a for a, _ in _core.format_aliases()] + list(PRESETS)
    # the 8-bit members of the P3109 family (the grammar names any width)
    words += [f"p3109_k8p{p}{s}{d}" for p in range(1, 8) for s in "su" for d in "ef"]
    close = difflib.get_close_matches(name.lower(), words, n=3, cutoff=0.6)
    if not close:
        return ""
    said = ", ".join(repr(c) for c in close[:-1]) + (" or " if len(close) > 1 else "")
    said += repr(close[-1])
    note = " (presets are codecs of lowfp.quantize_blockwise)" if set(close) & set(PRESETS) else ""
    return f"; did you mean {said}?{note}"


def _lookup(fmt: Any, arg: str = "fmt") -> Format:
    """format(fmt), with error messages naming the public argument `arg`."""
    if isinstance(fmt, Format):
        return fmt
    try:
        return _CACHE[fmt]
    except (KeyError, TypeError):  # TypeError: an unhashable fmt, reported below
        pass
    if isinstance(fmt, str):
        try:
            (e, m, b, s, i, n, sub) = _core.Format.parse(fmt).fields
        except ValueError as err:
            msg = _py_range(str(err))
            if msg.startswith("fmt: "):
                msg = f"{arg}: " + msg[len("fmt: ") :]
            if "unknown format" in msg:
                hint = _suggest(fmt)
                if hint:
                    head, sep, tail = msg.partition(": ")
                    tail_head, _, rest = tail.partition(": ")
                    msg = f"{head}{sep}{tail_head}{hint} ({rest})" if rest else msg + hint
            raise ValueError(msg) from None
        f = Format(e, m, b, s, i, n, sub)
    else:
        name = _dtype_name(fmt)
        if name is None:
            raise TypeError(
                f"{arg}: expected a format name, a lowfp.Format or a NumPy, "
                f"ml_dtypes or torch dtype, got {type(fmt).__name__}"
            )
        if name == "float4_e2m1fn_x2":
            raise ValueError(
                f"{arg}: torch.float4_e2m1fn_x2 holds two float4_e2m1fn codes per element (a "
                "packed byte), not one value; use fmt='float4_e2m1fn' with "
                "lowfp.unpack(t.view(torch.uint8), 4, 2 * t.numel()) to read its codes"
            )
        if name not in _ML_DTYPES and name not in _TORCH_DTYPES:
            raise ValueError(
                f"{arg}: dtype {name} is not a lowfp format; expected one of "
                f"{sorted(_ML_DTYPES | _TORCH_DTYPES)}"
            )
        f = _lookup(name, arg)
    if len(_CACHE) < _CACHE_MAX:
        _CACHE[fmt] = f
    return f


def format(fmt: FormatLike) -> Format:  # noqa: A001 - the public name of the design card
    """Look up a format by name, alias, ``eXmY`` spec or dtype (a Format is returned as is).

    Args:
        fmt: e.g. ``"float8_e4m3fn"``, ``"e4m3"``, ``"fp4"``, ``"bf16"``, ``"e3m3fnuz"``,
            ``"e5m2b11"``, a :class:`Format`, a NumPy/ml_dtypes dtype or scalar type
            (``ml_dtypes.float8_e4m3fn``, ``np.dtype(ml_dtypes.bfloat16)``, ``np.float16``)
            or a torch dtype (``torch.float8_e5m2``, ``torch.bfloat16``, ``torch.float32``).

    Returns:
        The Format.

    Raises:
        ValueError: unknown name (the message suggests close names and lists the accepted
            forms), or a dtype that is not a lowfp format (``torch.float4_e2m1fn_x2``: a
            packed pair of codes; float64; integer dtypes).
        TypeError: neither a string, a Format nor a dtype.
    """
    if isinstance(fmt, Format):
        return fmt
    return _lookup(fmt)


def formats() -> list:
    """All named formats (the ml_dtypes floating dtypes, float16, float32), in table order."""
    return [format(n) for n in _core.format_names()]


def aliases() -> dict:
    """Short alias → canonical name."""
    return dict(_core.format_aliases())
