"""Backend-neutral helpers: what the NumPy API (codec.py, qtensor.py) and the CUDA backend
(cuda/) both need, defined once.

Layering: codec.py and qtensor.py validate arguments and dispatch to the CPU core (_core) or
to lowfp.cuda; lowfp.cuda imports this module, formats.py and _core, never codec.py or
qtensor.py (tests/test_layering.py checks it). Nothing here imports NumPy-facing API code.

- option lists and their validation (the lists themselves are the Literal types of _types);
- the limits that decide whether a format's values are exact in float16/bfloat16;
- the packed length of k-bit codes (the Rust core's formula, not a copy of it);
- the format each blockwise scale rule stores its scales in;
- the table codecs' marker base class and the levels of a table codec's spec dict;
- the formats the CUDA mirror does not run yet (P3109-style infinities);
- the core's handle of a blockwise spec dict (``_core.BlockSpec``), built once per spec.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple, get_args

import numpy as np

from . import _core
from ._types import NanPolicy, Negative, Overflow

#: The rounding modes, in the core's code order (the CUDA mode numbers follow it).
ROUNDINGS: Tuple[str, ...] = tuple(_core.ROUNDINGS)
#: The modes that draw random words: 32 bits per element, or 16 (rust/rng.rs `Resolution`).
STOCHASTIC: Tuple[str, ...] = ("stochastic", "stochastic16")
#: The rounding modes of the table codecs (Linear, Dynamic, Log).
TABLE_ROUNDINGS: Tuple[str, ...] = ("nearest", *STOCHASTIC)
OVERFLOWS: Tuple[str, ...] = get_args(Overflow)
NANS: Tuple[str, ...] = get_args(NanPolicy)
NEGATIVES: Tuple[str, ...] = get_args(Negative)


def check_choice(arg: str, value: Any, allowed: tuple) -> None:
    """ValueError naming `arg` and the allowed values unless value is one of them."""
    if value not in allowed:
        raise ValueError(f"{arg}: expected one of {allowed}, got {value!r}")


def check_random_bits_rounding(rounding: Any) -> None:
    """Caller's random words are used as given, so they go with rounding='stochastic' only."""
    if rounding != "stochastic":
        raise ValueError(
            f"random_bits: only used with rounding='stochastic', got rounding={rounding!r} (the "
            "words are used as given: lowfp.random_bits(n, rounding='stochastic16') gives the "
            "words of 'stochastic16')"
        )


def check_encode_options(rounding: Any, overflow: Any, nan: Any, negative: Any) -> None:
    """Validate the options of encode/quantize (CPU and CUDA alike)."""
    check_choice("rounding", rounding, ROUNDINGS)
    check_choice("overflow", overflow, OVERFLOWS)
    check_choice("nan", nan, NANS)
    check_choice("negative", negative, NEGATIVES)


#: (mantissa bits, max, min subnormal) of the 16-bit float dtypes quantize can return.
EXACT_IN: Dict[str, Tuple[int, float, float]] = {
    "float16": (10, 65504.0, 2.0**-24),
    "bfloat16": (7, 3.3895313892515355e38, 2.0**-133),
}


def check_exact_in(f: Any, kind: str) -> None:
    """ValueError unless every value of Format f is exact in the float dtype `kind` (only
    float16 and bfloat16 can fail: every format of lowfp is exact in float32/float64)."""
    if kind not in EXACT_IN:
        return
    man, mx, tiny = EXACT_IN[kind]
    if f.bits > 16 or f.man_bits > man or f.max > mx or f.min_subnormal < tiny:
        raise ValueError(
            f"fmt: values of {f.name} are not all exact in {kind}; "
            "use decode(encode(x, fmt)) for float32 results"
        )


#: The power-of-two (E8M0) block scale rules: OCP floor, then torchao's CEIL, EVEN, RCEIL.
E8M0_SCALES = ("e8m0", "e8m0_ceil", "e8m0_even", "e8m0_rceil")

#: The format each blockwise scale rule stores its scales in (float32 for "absmax").
SCALE_FORMATS: Dict[str, str] = {
    **{s: "float8_e8m0fnu" for s in E8M0_SCALES},
    "e4m3": "float8_e4m3fn",
}


def packed_len(count: int, bits: int) -> int:
    """Bytes of `count` codes of `bits` bits packed (ceil(count * bits / 8)); the formula is
    the Rust core's (rust/pack.rs), called rather than repeated."""
    return _core.packed_len(int(count), int(bits))


class TableCodec:
    """Base of the table codecs (lowfp.Linear, Dynamic, Log, in codec.py): codes index an
    ascending table of levels in [-1, 1]. The backends test ``isinstance(c, TableCodec)``
    without importing codec.py."""

    bits: int

    @property
    def levels(self) -> np.ndarray:
        """float32 value of each code (ascending)."""
        raise NotImplementedError

    def spec(self) -> dict:
        """The codec's description: codec ("linear", "dynamic", "log") and its parameters."""
        raise NotImplementedError


def table_levels(spec: Dict[str, Any]) -> np.ndarray:
    """float32 levels of a table codec given by its spec dict (``codec.spec()`` or a blockwise
    spec with codec "linear", "dynamic" or "log"; a log codec's fixed base ``alpha``)."""
    codec, bits = spec["codec"], int(spec["bits"])
    if codec == "linear":
        levels = _core.linear_levels(bits, bool(spec["signed"]), bool(spec["zero"]))
    elif codec == "dynamic":
        levels = _core.dynamic_levels(bits, bool(spec["signed"]))
    elif codec == "log":
        levels = _core.log_levels(
            bits, bool(spec["signed"]), float(spec["alpha"]), bool(spec["zero"])
        )
    else:
        raise ValueError(f"codec: expected 'exmy', 'linear', 'dynamic' or 'log', got {codec!r}")
    return np.array(levels, np.float32)


_BLOCK_HANDLES: Dict[tuple, Any] = {}
_BLOCK_HANDLES_MAX = 256


def block_handle(spec: Dict[str, Any]) -> Any:
    """The ``_core.BlockSpec`` of a blockwise spec dict, built once per distinct spec (a spec
    is plain data; its handle holds the tables, e.g. the 256 KiB index of 8-bit dynamic
    codes, that parsing the dict on every call would rebuild). Raises what the core raises
    for a bad spec."""
    key = tuple(sorted(spec.items()))
    try:
        return _BLOCK_HANDLES[key]
    except (KeyError, TypeError):  # TypeError: an unhashable value, parsed below
        pass
    h = _core.BlockSpec(spec)
    try:
        if len(_BLOCK_HANDLES) < _BLOCK_HANDLES_MAX:
            _BLOCK_HANDLES[key] = h
    except TypeError:
        pass
    return h
