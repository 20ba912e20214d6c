"""The NumPy / torch-CPU API over the Rust codecs: encode, decode, quantize, pack, unpack,
and the table codecs (linear, dynamic, logarithmic).

Inputs are borrowed without a copy when they are C-contiguous; torch CPU tensors are
viewed through ``.numpy()`` (bfloat16 through an int16 view) and results come back as
torch tensors sharing memory with the NumPy result.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from . import _core
from .formats import FormatLike, format

ROUNDINGS = ("nearest", "nearest_away", "toward_zero", "up", "down", "stochastic")
OVERFLOWS = ("nonfinite", "saturate")
_FLOAT_KINDS = ("float32", "float64", "float16", "bfloat16")


def _is_torch(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "device")


def _on_cuda(*xs: Any) -> bool:
    """Whether any of xs is a CUDA torch tensor or a CuPy array (then lowfp.cuda runs the call;
    CuPy is imported only there)."""
    for x in xs:
        mod = type(x).__module__
        if (mod.startswith("torch") and getattr(x, "is_cuda", False)) or mod.startswith("cupy"):
            return True
    return False


def _no_out(out: Any) -> None:
    if out is not None:
        raise ValueError("out: not supported for CUDA inputs (the result is allocated on the "
                         "input's device)")


def _torch_to_numpy(x: Any, arg: str) -> Tuple[np.ndarray, str]:
    import torch

    if x.device.type != "cpu":
        raise ValueError(
            f"{arg}: tensor is on {x.device}; this build runs on CPU tensors and NumPy arrays "
            "(move it with .cpu())"
        )
    if x.is_sparse or x.is_complex():
        raise TypeError(f"{arg}: sparse and complex tensors are not supported")
    x = x.detach().contiguous()
    if x.dtype == torch.bfloat16:
        return x.view(torch.int16).numpy().view(np.uint16), "bfloat16"
    return x.numpy(), str(x.dtype).replace("torch.", "")


def _float_input(x: Any, arg: str = "x") -> Tuple[np.ndarray, str, bool]:
    """(contiguous array, kind, came_from_torch) for a float input."""
    from_torch = _is_torch(x)
    if from_torch:
        a, kind = _torch_to_numpy(x, arg)
    else:
        a = np.asarray(x)
        kind = a.dtype.name
    if kind not in _FLOAT_KINDS:
        raise TypeError(
            f"{arg}: expected float32, float64, float16 or bfloat16 values, got dtype {kind}"
        )
    if kind in ("float16", "bfloat16"):
        a = a.view(np.uint16)  # the core reads 16-bit floats as bit patterns
    return _contiguous(a), kind, from_torch


def _contiguous(a: np.ndarray) -> np.ndarray:
    """a itself when C-contiguous (zero-copy), else a C-contiguous copy; keeps 0-d shapes."""
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _out_array(out: Any, shape: tuple, dtype: np.dtype) -> np.ndarray:
    """A caller's output buffer, checked (or a new array when out is None)."""
    if out is None:
        return np.empty(shape, dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out: expected a numpy array, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"out: expected dtype {np.dtype(dtype)}, got {out.dtype}")
    if out.shape != tuple(shape):
        raise ValueError(f"out: expected shape {tuple(shape)}, got {out.shape}")
    if not out.flags.c_contiguous:
        raise ValueError("out: expected a C-contiguous array")
    if not out.flags.writeable:
        raise ValueError("out: expected a writeable array")
    return out


def _check_choice(arg: str, value: str, allowed: tuple) -> None:
    if value not in allowed:
        raise ValueError(f"{arg}: expected one of {allowed}, got {value!r}")


def _options(rounding, overflow, nan, negative, seed, stream, offset, random_bits, n):
    _check_choice("rounding", rounding, ROUNDINGS)
    _check_choice("overflow", overflow, OVERFLOWS)
    _check_choice("nan", nan, ("error", "zero"))
    _check_choice("negative", negative, ("error", "clamp"))
    for arg, v in (("seed", seed), ("stream", stream), ("offset", offset)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or not 0 <= v < 2**64:
            raise ValueError(f"{arg}: expected an int in [0, 2**64), got {v!r}")
    rb = None
    if random_bits is not None:
        if rounding != "stochastic":
            raise ValueError("random_bits: only used with rounding='stochastic'")
        rb = np.ascontiguousarray(random_bits)
        if rb.dtype != np.uint32 or rb.size != n:
            raise ValueError(
                f"random_bits: expected {n} uint32 values, got {rb.size} of dtype {rb.dtype}"
            )
        rb = rb.reshape(-1)
    return (rounding, overflow, nan == "zero", negative == "clamp", int(seed), int(stream),
            int(offset), rb)


def _wrap(out: np.ndarray, from_torch: bool, kind: Optional[str] = None):
    if kind == "float16":
        out = out.view(np.float16)
    if not from_torch:
        if kind == "bfloat16":
            import ml_dtypes  # the caller passed an ml_dtypes bfloat16 array, so it is present

            return out.view(ml_dtypes.bfloat16)
        return out
    import torch

    if kind == "bfloat16":
        return torch.from_numpy(out.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(out)


def encode(
    x: Any,
    fmt: FormatLike,
    *,
    rounding: str = "nearest",
    overflow: str = "nonfinite",
    seed: int = 0,
    stream: int = 0,
    offset: int = 0,
    random_bits: Any = None,
    nan: str = "error",
    negative: str = "error",
    out: Any = None,
):
    """Round values to a format and return their codes.

    Args:
        x: float32/float64/float16/bfloat16 NumPy array (ml_dtypes bfloat16) or CPU torch
            tensor, any shape. float64 is rounded directly (no double rounding).
        fmt: format name or :class:`Format`.
        rounding: "nearest" (ties to even), "nearest_away", "toward_zero", "up", "down" or
            "stochastic".
        overflow: "nonfinite" (inf, else NaN, else max — ml_dtypes' behaviour) or "saturate".
        seed, stream: key of the counter-based generator for stochastic rounding.
        offset: global index of element 0 (to encode a tensor in pieces reproducibly).
        random_bits: optional uint32 array (one per element) used instead of the generator.
        nan: "error" (default) or "zero": what NaN becomes in a format without NaN.
        negative: "error" (default) or "clamp": negatives into an unsigned format.
        out: optional C-contiguous, writeable NumPy array of x's shape and
            ``fmt.code_dtype`` (for a torch tensor t, pass ``t.numpy()``).

    Returns:
        Codes of the same shape, dtype ``fmt.code_dtype`` (uint8/16/32); a torch tensor for
        a torch input; ``out`` itself when given.

    Raises:
        TypeError: x is not a supported float array.
        ValueError: unknown format/option, NaN or negatives where not allowed.
    """
    if _on_cuda(x, random_bits):
        _no_out(out)
        from . import cuda

        return cuda.encode(x, fmt, rounding=rounding, overflow=overflow, seed=seed, stream=stream,
                           offset=offset, random_bits=random_bits, nan=nan, negative=negative)
    f = format(fmt)
    a, kind, from_torch = _float_input(x)
    opts = _options(rounding, overflow, nan, negative, seed, stream, offset, random_bits, a.size)
    given = out
    o = _out_array(out, a.shape, f.code_dtype)
    _core.encode(a.reshape(-1), kind, o.reshape(-1), f._fields, *opts[:7], opts[7])
    return given if given is not None else _wrap(o, from_torch)


def decode(codes: Any, fmt: FormatLike, *, dtype: Any = np.float32, out: Any = None):
    """Values of codes.

    Args:
        codes: unsigned integer array (uint8/uint16/uint32) or torch uint8 tensor.
        fmt: format name or :class:`Format`.
        dtype: np.float32 (default) or np.float64; every value is exact in both.
        out: optional C-contiguous, writeable NumPy array of codes' shape and `dtype`.

    Returns:
        Array of the same shape (a torch tensor for a torch input).

    Raises:
        TypeError: codes are not unsigned integers.
        ValueError: a code is outside 0 .. 2**bits - 1 (the message names the element).
    """
    if _on_cuda(codes):
        _no_out(out)
        from . import cuda

        return cuda.decode(codes, fmt, dtype=dtype)
    f = format(fmt)
    from_torch = _is_torch(codes)
    if from_torch:
        codes, _ = _torch_to_numpy(codes, "codes")
    c = _contiguous(np.asarray(codes))
    if c.dtype not in (np.uint8, np.uint16, np.uint32):
        raise TypeError(f"codes: expected uint8, uint16 or uint32 codes, got dtype {c.dtype}")
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype: expected float32 or float64, got {dt}")
    given = out
    o = _out_array(out, c.shape, dt)
    _core.decode(c.reshape(-1), o.reshape(-1), f._fields)
    return given if given is not None else _wrap(o, from_torch)


_EXACT_IN = {  # man bits, max, min subnormal of the float dtypes quantize can return
    "float16": (10, 65504.0, 2.0**-24),
    "bfloat16": (7, 3.3895313892515355e38, 2.0**-133),
}


def quantize(
    x: Any,
    fmt: FormatLike,
    *,
    rounding: str = "nearest",
    overflow: str = "nonfinite",
    seed: int = 0,
    stream: int = 0,
    offset: int = 0,
    random_bits: Any = None,
    nan: str = "error",
    negative: str = "error",
):
    """Round values to a format and return the rounded values in x's dtype.

    Same arguments as :func:`encode`; equals ``decode(encode(x, …))`` cast to x's dtype,
    in one pass.

    Raises:
        ValueError: for float16/bfloat16 inputs, when the format's values are not all exact
            in that dtype (use decode(encode(x)) to get float32).
    """
    if _on_cuda(x, random_bits):
        from . import cuda

        return cuda.quantize(x, fmt, rounding=rounding, overflow=overflow, seed=seed,
                             stream=stream, offset=offset, random_bits=random_bits, nan=nan,
                             negative=negative)
    f = format(fmt)
    a, kind, from_torch = _float_input(x)
    if kind in _EXACT_IN:
        man, mx, tiny = _EXACT_IN[kind]
        if f.bits > 16 or f.man_bits > man or f.max > mx or f.min_subnormal < tiny:
            raise ValueError(
                f"fmt: values of {f.name} are not all exact in {kind}; "
                "use decode(encode(x, fmt)) for float32 results"
            )
    opts = _options(rounding, overflow, nan, negative, seed, stream, offset, random_bits, a.size)
    out = np.empty(a.shape, a.dtype)
    _core.quantize(a.reshape(-1), kind, out.reshape(-1), f._fields, *opts[:7], opts[7])
    return _wrap(out, from_torch, kind)


def _bits_arg(bits: Any) -> int:
    if not isinstance(bits, (int, np.integer)) or isinstance(bits, bool) or not 1 <= bits <= 8:
        raise ValueError(f"bits: expected an int in 1..8, got {bits!r}")
    return int(bits)


def pack(codes: Any, bits: int) -> np.ndarray:
    """Pack k-bit codes into a little-endian, LSB-first byte stream (layout in the README).

    Args:
        codes: uint8 codes (any shape; flattened in C order), each < 2**bits.
        bits: 1..8.

    Returns:
        uint8 array of ceil(n*bits/8) bytes; padding bits are zero.

    Raises:
        ValueError: bits out of range, or a code ≥ 2**bits (the message names the element).
        TypeError: codes are not uint8.
    """
    bits = _bits_arg(bits)
    if _on_cuda(codes):
        from . import cuda

        return cuda.pack(codes, bits)
    if _is_torch(codes):
        codes, _ = _torch_to_numpy(codes, "codes")
    c = _contiguous(np.asarray(codes))
    if c.dtype != np.uint8:
        raise TypeError(f"codes: expected uint8 codes, got dtype {c.dtype}")
    out = np.empty(_core.packed_len(c.size, bits), np.uint8)
    _core.pack_codes(c.reshape(-1), bits, out)
    return out


def unpack(packed: Any, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack`.

    Args:
        packed: uint8 bytes, exactly ceil(count*bits/8) of them.
        bits: 1..8.
        count: number of codes.

    Returns:
        uint8 array of `count` codes.

    Raises:
        ValueError: wrong buffer length or bits out of range.
    """
    bits = _bits_arg(bits)
    if not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"count: expected a non-negative int, got {count!r}")
    if _on_cuda(packed):
        from . import cuda

        return cuda.unpack(packed, bits, int(count))
    if _is_torch(packed):
        packed, _ = _torch_to_numpy(packed, "packed")
    p = _contiguous(np.asarray(packed))
    if p.dtype != np.uint8:
        raise TypeError(f"packed: expected uint8 bytes, got dtype {p.dtype}")
    out = np.empty(int(count), np.uint8)
    _core.unpack_codes(p.reshape(-1), bits, int(count), out)
    return out


def random_bits(n: int, *, seed: int = 0, stream: int = 0, offset: int = 0) -> np.ndarray:
    """The uint32 random bits stochastic rounding uses for elements offset .. offset+n-1."""
    out = np.empty(int(n), np.uint32)
    _core.random_bits(int(seed), int(stream), int(offset), out)
    return out


# ---------------------------------------------------------------- table codecs


class _TableCodec:
    """An element codec whose codes index an ascending table of levels in [-1, 1]."""

    bits: int

    @property
    def levels(self) -> np.ndarray:
        """float32 value of each code (ascending)."""
        raise NotImplementedError

    @property
    def max(self) -> float:
        return 1.0

    def encode(self, x: Any, *, rounding: str = "nearest", seed: int = 0, stream: int = 0,
               offset: int = 0) -> np.ndarray:
        """Codes (uint8) of normalized values x (values outside the table are clamped).

        Args:
            x: float values, converted to float32.
            rounding: "nearest" (ties to the even code) or "stochastic" (unbiased between
                the two neighbouring levels, 2**-32 resolution).

        Raises:
            ValueError: NaN in x, or another rounding mode.
        """
        _check_choice("rounding", rounding, ("nearest", "stochastic"))
        if _on_cuda(x):
            from .cuda.codec import table_encode

            return table_encode(self.levels, x, rounding, int(seed), int(stream), int(offset))
        a, kind, _ = _float_input(x)
        if kind in ("float16", "bfloat16"):
            a = _to_f32(a, kind)  # exact
        elif kind == "float64":
            a = a.astype(np.float32)  # one correct rounding
        out = np.empty(a.shape, np.uint8)
        _core.table_encode(a.reshape(-1), self.levels.tolist(), out.reshape(-1), rounding,
                           int(seed), int(stream), int(offset))
        return out

    def decode(self, codes: Any) -> np.ndarray:
        """float32 values of codes.

        Raises:
            ValueError: a code has no level.
        """
        c = np.asarray(codes)
        if c.dtype != np.uint8:
            raise TypeError(f"codes: expected uint8 codes, got dtype {c.dtype}")
        lv = self.levels
        if c.size and int(c.max()) >= lv.size:
            raise ValueError(f"codes: expected codes < {lv.size}, got {int(c.max())}")
        return lv[c]


def _to_f32(a: np.ndarray, kind: str) -> np.ndarray:
    out = np.empty(a.shape, np.float32)
    fmt = format(kind)
    _core.decode(a.reshape(-1), out.reshape(-1), fmt._fields)
    return out


class Linear(_TableCodec):
    """Linear k-bit codes.

    Args:
        bits: 1..8 (2..8 when signed).
        signed: symmetric levels i/n, i = -n..n with n = 2**(bits-1) - 1.
        zero: for unsigned codes, False gives the zero-free levels (i+1)/2**bits
            (for second moments); otherwise i/(2**bits - 1).
    """

    def __init__(self, bits: int, signed: bool = True, zero: bool = True):
        self.bits, self.signed, self.zero = _bits_arg(bits), bool(signed), bool(zero)
        self._levels = np.array(_core.linear_levels(self.bits, self.signed, self.zero), np.float32)

    @property
    def levels(self) -> np.ndarray:
        return self._levels

    def spec(self) -> dict:
        return {"codec": "linear", "bits": self.bits, "signed": self.signed, "zero": self.zero}

    def __repr__(self) -> str:
        return f"Linear(bits={self.bits}, signed={self.signed}, zero={self.zero})"


class Dynamic(_TableCodec):
    """The dynamic-exponent map of 8-bit optimizers (bitsandbytes' ``create_dynamic_map``).

    Args:
        bits: 8 or 4.
        signed: signed map (first moments) or unsigned (second moments).
    """

    def __init__(self, bits: int = 8, signed: bool = True):
        if bits not in (4, 8):
            raise ValueError(f"bits: expected 4 or 8, got {bits!r}")
        self.bits, self.signed = int(bits), bool(signed)
        self._levels = np.array(_core.dynamic_levels(self.bits, self.signed), np.float32)

    @property
    def levels(self) -> np.ndarray:
        return self._levels

    def spec(self) -> dict:
        return {"codec": "dynamic", "bits": self.bits, "signed": self.signed}

    def __repr__(self) -> str:
        return f"Dynamic(bits={self.bits}, signed={self.signed})"


class Log(_TableCodec):
    """Logarithmic k-bit codes with levels alpha**i (SOLO-style second moments).

    Args:
        bits: 1..8 (2..8 when signed).
        signed: symmetric signed levels.
        zero: whether code 0 is zero (unsigned only; signed always has zero).
        alpha: the base in (0, 1) when fixed.
        quantile: in blockwise use, choose alpha per block so that the smallest non-zero
            level matches this quantile of |x|/amax (0 < quantile < 1); overrides alpha.
    """

    def __init__(self, bits: int, signed: bool = False, zero: bool = True, alpha: float = 0.5,
                 quantile: Optional[float] = None):
        self.bits, self.signed, self.zero = _bits_arg(bits), bool(signed), bool(zero)
        self.alpha = float(alpha)
        if quantile is not None and not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile: expected 0 < quantile < 1 or None, got {quantile!r}")
        self.quantile = quantile
        self._levels = np.array(
            _core.log_levels(self.bits, self.signed, self.alpha, self.zero), np.float32
        )

    @property
    def levels(self) -> np.ndarray:
        """Levels for the fixed base ``alpha``."""
        return self._levels

    def spec(self) -> dict:
        return {"codec": "log", "bits": self.bits, "signed": self.signed, "zero": self.zero,
                "alpha": self.alpha, "quantile": float(self.quantile or 0.0)}

    def __repr__(self) -> str:
        return (f"Log(bits={self.bits}, signed={self.signed}, zero={self.zero}, "
                f"alpha={self.alpha}, quantile={self.quantile})")


def set_num_threads(n: int) -> None:
    """Use n threads for all Rust work (0 = all cores; default: $LOWFP_NUM_THREADS or all)."""
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n: expected a non-negative int, got {n!r}")
    _core.set_num_threads(int(n))


def num_threads() -> int:
    """Threads used for Rust work."""
    return _core.num_threads()
