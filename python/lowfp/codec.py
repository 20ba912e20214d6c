"""The NumPy / torch API over the Rust codecs: encode, decode, quantize, pack, unpack,
and the table codecs (linear, dynamic, logarithmic).

Inputs are borrowed without a copy when they are C- or Fortran-contiguous; torch CPU tensors
are viewed through ``.numpy()`` (bfloat16 through an int16 view) and results come back as
torch tensors sharing memory with the NumPy result.

Design notes
- Torch in, torch out: every function returns the caller's kind of array (a torch tensor on
  the input's device for a torch input). CPU tensors go through NumPy views, CUDA tensors and
  CuPy arrays through :mod:`lowfp.cuda`.
- Layout: elementwise functions return Fortran-ordered results for Fortran-ordered inputs
  (the core runs on the transposed, C-contiguous view, no copy). Stochastic rounding keys its
  bits by the element's C-order (logical) index, so that a Fortran array rounds exactly as its
  C-ordered copy does; it therefore runs on a C-ordered copy and converts back.
- Foreign byte order (``>f4``) is converted to native order (one copy), not rejected.
- ``seed=None`` (the default) draws a fresh key from :mod:`lowfp._seed` when the call uses
  random bits; an explicit seed reaches the core unchanged.
- Codes as the ecosystem's dtypes: :func:`decode` reads ml_dtypes float8/float6/float4 arrays
  and torch float8 tensors as codes through a uint8 view (no copy) and takes the format from
  the dtype; ``encode(..., as_dtype=True)`` returns codes viewed as the format's own dtype.
  Rejected: a separate ``as_ml_dtype`` function (one more name for a one-line view; the
  keyword keeps encode symmetric with decode).
- 16-bit results (``dtype=float16/bfloat16``) are the float32 values rounded once to nearest
  (ties to even) by lowfp's own encoder, as a cast would; exact whenever the format's values
  are (e.g. every FP8/FP6/FP4 format into float16 except the E8M0 and wide-exponent ones).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Optional, Tuple, overload

import numpy as np

from . import _core, _seed
from ._common import (
    OVERFLOWS,
    ROUNDINGS,
    STOCHASTIC,
    TABLE_ROUNDINGS,
    TableCodec,
    check_encode_options,
    check_exact_in,
    check_random_bits_rounding,
)
from ._common import check_choice as _check_choice
from ._types import ArrayT, NanPolicy, Negative, Overflow, PlainValues, Rounding, TableRounding
from .formats import _ML_DTYPES, FormatLike, _lookup, _py_range, format

_ROUNDING_SET = frozenset(ROUNDINGS)
_FLOAT_KINDS = ("float32", "float64", "float16", "bfloat16")
_U64 = 2**64


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
        raise ValueError(
            "out: not supported for CUDA inputs (the result is allocated on the input's device)"
        )


def _torch_to_numpy(x: Any, arg: str) -> Tuple[np.ndarray, str]:
    """A NumPy view of a CPU tensor (its strides kept; bfloat16 as uint16 bits)."""
    import torch

    if x.device.type != "cpu":
        raise ValueError(
            f"{arg}: tensor is on {x.device}; this build runs on CPU tensors and NumPy arrays "
            "(move it with .cpu())"
        )
    if x.is_sparse or x.is_complex():
        raise TypeError(f"{arg}: sparse and complex tensors are not supported")
    x = x.detach()
    if x.dtype == torch.bfloat16:
        return x.view(torch.int16).numpy().view(np.uint16), "bfloat16"
    return x.numpy(), str(x.dtype)[len("torch.") :]


def _native(a: np.ndarray) -> np.ndarray:
    """a in native byte order (a converted copy for a ``>f4``-style array)."""
    return a if a.dtype.isnative else a.astype(a.dtype.newbyteorder("="))


# Native float dtypes by dtype object: a dict lookup (dtype.name costs about 1 us).
_KIND_OF = {
    np.dtype(np.float32): "float32",
    np.dtype(np.float64): "float64",
    np.dtype(np.float16): "float16",
}
_CODE_DTYPES = frozenset(np.dtype(t) for t in (np.uint8, np.uint16, np.uint32))
_NP_DTYPE = {k: np.dtype(k) for k in ("float32", "float64")}


def _float_input(x: Any, arg: str = "x") -> Tuple[np.ndarray, str, bool]:
    """(array, kind, came_from_torch) for a float input; the array is C- or F-contiguous
    when x is, else a C-contiguous copy (see :func:`_contiguous`)."""
    if type(x) is np.ndarray:
        a, from_torch = x, False
        kind = _KIND_OF.get(a.dtype)
        if kind is not None:  # native float32/64/16
            if kind == "float16":
                a = a.view(np.uint16)
            return _contiguous(a), kind, False
        kind = a.dtype.name
    elif _is_torch(x):
        from_torch = True
        a, kind = _torch_to_numpy(x, arg)
    else:
        from_torch = False
        a = np.asarray(x)
        kind = a.dtype.name
    if kind not in _FLOAT_KINDS:
        raise TypeError(
            f"{arg}: expected float32, float64, float16 or bfloat16 values, got dtype {kind}"
        )
    if not a.dtype.isnative:
        a = _native(a)
    if kind in ("float16", "bfloat16"):
        a = a.view(np.uint16)  # the core reads 16-bit floats as bit patterns
    return _contiguous(a), kind, from_torch


def _contiguous(a: np.ndarray) -> np.ndarray:
    """a itself when C- or Fortran-contiguous (zero-copy), else a C-contiguous copy."""
    f = a.flags
    return a if f.c_contiguous or f.f_contiguous else np.ascontiguousarray(a)


def _is_fortran(a: np.ndarray) -> bool:
    f = a.flags
    return f.f_contiguous and not f.c_contiguous


def _out_array(
    out: Any, shape: tuple, dtype: Any, accept: tuple = (), arg: str = "out"
) -> np.ndarray:
    """A caller's output buffer (NumPy array or CPU tensor, C- or Fortran-contiguous),
    checked and seen as a NumPy array of `dtype`; arrays of a dtype named in `accept` (of the
    same width) are viewed as `dtype`, e.g. float8 codes or float16 values as their bits."""
    dtype = np.dtype(dtype)
    if _is_torch(out):
        name = str(out.dtype)[len("torch.") :]
        if name.startswith("float8_") and name in accept:
            import torch

            out = out.view(torch.uint8)
        o, name = _torch_to_numpy(out, arg)
    elif isinstance(out, np.ndarray):
        o, name = out, out.dtype.name
    else:
        raise TypeError(f"{arg}: expected a numpy array or torch tensor, got {type(out).__name__}")
    if o.dtype != dtype:
        if name in accept and o.dtype.itemsize == dtype.itemsize:
            o = o.view(dtype)
        else:
            want = " or ".join((dtype.name, *accept))
            raise TypeError(f"{arg}: expected dtype {want}, got {name}")
    if o.shape != tuple(shape):
        raise ValueError(f"{arg}: expected shape {tuple(shape)}, got {o.shape}")
    if not (o.flags.c_contiguous or o.flags.f_contiguous):
        raise ValueError(f"{arg}: expected a C-contiguous or Fortran-contiguous array")
    if not o.flags.writeable:
        raise ValueError(f"{arg}: expected a writeable array")
    return o


def _run(
    core_fn,
    a: np.ndarray,
    o: Optional[np.ndarray],
    dtype: Any,
    pre: tuple,
    post: tuple,
    index_keyed: bool,
) -> np.ndarray:
    """core_fn(src, *pre, dst, *post) over a (C- or F-contiguous) and the output o (None:
    allocate one), in an order the core reads flat; returns the output in a's order (o itself
    when given).

    index_keyed: an element's result depends on its index (stochastic rounding), so the core
    must see the C (logical) order."""
    fortran = _is_fortran(o) if o is not None else _is_fortran(a)
    if fortran and not index_keyed:
        src = (a if a.flags.f_contiguous else np.asfortranarray(a)).T
        dst = o.T if o is not None else np.empty(src.shape, dtype)
        core_fn(src.reshape(-1), *pre, dst.reshape(-1), *post)
        return o if o is not None else dst.T
    src = a if a.flags.c_contiguous else np.ascontiguousarray(a)
    dst = o if o is not None and o.flags.c_contiguous else np.empty(src.shape, dtype)
    core_fn(src.reshape(-1), *pre, dst.reshape(-1), *post)
    if o is not None:
        if dst is not o:
            o[...] = dst
        return o
    return np.asfortranarray(dst) if fortran else dst


def _core_error(e: Exception, arg: Optional[str] = None) -> Exception:
    """A core error with Python range syntax (and `arg` as its argument name)."""
    msg = _py_range(str(e))
    if arg is not None and ": " in msg:
        msg = f"{arg}: {msg.partition(': ')[2]}"
    return type(e)(msg)


def _public_errors(**renames: str):
    """Decorator: ValueError/TypeError messages leave `fn` in Python range syntax and with the
    public argument names (``renames``: internal name -> public name, e.g. fmt="codec"), for
    functions whose body calls the core in several places."""

    def wrap(fn):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except (ValueError, TypeError) as e:
                if type(e) not in (ValueError, TypeError):
                    raise
                msg = _py_range(str(e))
                head, sep, rest = msg.partition(": ")
                if sep and head in renames:
                    msg = f"{renames[head]}: {rest}"
                if msg == str(e):
                    raise
                raise type(e)(msg).with_traceback(e.__traceback__) from None

        return call

    return wrap


def _key(arg: str, v: Any) -> int:
    if type(v) is int and 0 <= v < _U64:  # the common case, first
        return v
    if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or not 0 <= v < _U64:
        raise ValueError(f"{arg}: expected an int with 0 <= {arg} < 2**64, got {v!r}")
    return int(v)


def _seed_arg(seed: Any, uses_bits: bool) -> int:
    """An explicit seed, checked; for None, a fresh key when the call uses random bits."""
    if seed is None:
        return _seed.next_seed() if uses_bits else 0
    return _key("seed", seed)


def _options(f, rounding, overflow, nan, negative, seed, stream, offset, random_bits, n):
    """(encoder handle, seed, stream, offset, random bits or None): the core's arguments
    after the element arrays, for format f."""
    if (
        random_bits is None
        and seed is None
        and type(stream) is int
        and type(offset) is int
        and stream == 0
        and offset == 0
        and nan == "error"
        and negative == "error"
        and rounding not in STOCHASTIC
        and rounding in _ROUNDING_SET
        and overflow in OVERFLOWS
    ):
        # deterministic rounding with default options: no key, nothing else to check
        return (f._encoder(rounding, overflow, False, False), 0, 0, 0, None)
    check_encode_options(rounding, overflow, nan, negative)
    seed = _seed_arg(seed, rounding in STOCHASTIC and random_bits is None)
    stream, offset = _key("stream", stream), _key("offset", offset)
    rb = None
    if random_bits is not None:
        check_random_bits_rounding(rounding)
        rb = np.ascontiguousarray(random_bits)
        if rb.dtype != np.uint32 or rb.size != n:
            raise ValueError(
                f"random_bits: expected {n} uint32 values, got {rb.size} of dtype {rb.dtype}"
            )
        rb = rb.reshape(-1)
    return (
        f._encoder(rounding, overflow, nan == "zero", negative == "clamp"),
        seed,
        stream,
        offset,
        rb,
    )


def _wrap(out: np.ndarray, from_torch: bool, kind: Optional[str] = None):
    if kind == "float16":
        out = out.view(np.float16)
    if not from_torch:
        if kind == "bfloat16":
            return out.view(_np_bfloat16())
        return out
    import torch

    if kind == "bfloat16":
        return torch.from_numpy(out.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(out)


def _np_bfloat16() -> np.dtype:
    try:
        import ml_dtypes
    except ImportError:
        raise ImportError(
            "dtype: NumPy bfloat16 arrays need ml_dtypes (pip install "
            "ml_dtypes); or pass a torch tensor, or use dtype=float32"
        ) from None
    return np.dtype(ml_dtypes.bfloat16)


# The float dtypes results can be returned in, by any accepted spelling (filled lazily).
_RESULT_DTYPES = {
    np.float32: "float32",
    np.float64: "float64",
    np.float16: "float16",
    "float32": "float32",
    "float64": "float64",
    "float16": "float16",
    "bfloat16": "bfloat16",
}


def _result_dtype(dtype: Any) -> str:
    """'float32', 'float64', 'float16' or 'bfloat16' for a NumPy, ml_dtypes or torch dtype."""
    try:
        return _RESULT_DTYPES[dtype]
    except (KeyError, TypeError):
        pass
    t = type(dtype)
    if t.__name__ == "dtype" and t.__module__ == "torch":
        name = str(dtype)[len("torch.") :]
    else:
        try:
            name = np.dtype(dtype).name
        except TypeError:
            raise TypeError(f"dtype: expected a float dtype, got {dtype!r}") from None
    if name not in _FLOAT_KINDS:
        raise ValueError(f"dtype: expected float32, float64, float16 or bfloat16, got {name}")
    try:
        _RESULT_DTYPES[dtype] = name
    except TypeError:
        pass
    return name


def _from_f32(v: np.ndarray, kind: str, o: Optional[np.ndarray]) -> np.ndarray:
    """float32 values v in `kind` (16-bit kinds as uint16 bits, rounded once to nearest even
    by lowfp's encoder), written into o (same shape, or None)."""
    if kind == "float32":
        if o is None:
            return v
        o[...] = v
        return o
    if kind == "float64":
        if o is None:
            return v.astype(np.float64)
        o[...] = v
        return o
    f = format(kind)
    return _run(
        _core.encode,
        v,
        o,
        np.uint16,
        ("float32",),
        (f._encoder("nearest", "nonfinite"), 0, 0, 0, None),
        False,
    )


def _float_result(o: np.ndarray, kind: str, from_torch: bool, given: Any):
    """The caller's result: `given` (their out) or o wrapped as kind for NumPy/torch."""
    if given is not None:
        return given
    return _wrap(o, from_torch, kind)


# Overloads: the result is the caller's kind of array (ndarray -> ndarray, Tensor -> Tensor);
# numbers and lists give NumPy arrays. (CuPy arrays, untyped, pass as Any.)
@overload
def encode(
    x: ArrayT,
    fmt: FormatLike,
    *,
    rounding: Rounding = ...,
    overflow: Overflow = ...,
    seed: Optional[int] = ...,
    stream: int = ...,
    offset: int = ...,
    random_bits: Any = ...,
    nan: NanPolicy = ...,
    negative: Negative = ...,
    out: Any = ...,
    as_dtype: bool = ...,
) -> ArrayT: ...
@overload
def encode(
    x: PlainValues,
    fmt: FormatLike,
    *,
    rounding: Rounding = ...,
    overflow: Overflow = ...,
    seed: Optional[int] = ...,
    stream: int = ...,
    offset: int = ...,
    random_bits: Any = ...,
    nan: NanPolicy = ...,
    negative: Negative = ...,
    out: Any = ...,
    as_dtype: bool = ...,
) -> np.ndarray: ...


def encode(
    x: Any,
    fmt: FormatLike,
    *,
    rounding: Rounding = "nearest",
    overflow: Overflow = "nonfinite",
    seed: Optional[int] = None,
    stream: int = 0,
    offset: int = 0,
    random_bits: Any = None,
    nan: NanPolicy = "error",
    negative: Negative = "error",
    out: Any = None,
    as_dtype: bool = False,
):
    """Round values to a format and return their codes.

    Args:
        x: float32/float64/float16/bfloat16 NumPy array (ml_dtypes bfloat16) or torch
            tensor, any shape. float64 is rounded directly (no double rounding).
        fmt: format name, :class:`Format`, or a NumPy/ml_dtypes/torch dtype.
        rounding: "nearest" (ties to even), "nearest_away", "toward_zero", "up", "down",
            "stochastic", "stochastic16" (16 random bits per element: half the generator
            work, probabilities truncated to 2**-16) or "to_odd" (toward zero, then the
            lowest kept bit set if anything was discarded; overflow as toward_zero).
        overflow: "nonfinite" (inf, else NaN, else max — ml_dtypes' behaviour) or "saturate".
        seed: key of the counter-based generator for stochastic rounding; None (default)
            draws a fresh key from lowfp's global generator (see :func:`lowfp.manual_seed`),
            an int gives the same bits on every device and thread count.
        stream: second part of the key.
        offset: global index of element 0 (to encode a tensor in pieces reproducibly).
        random_bits: optional uint32 array (one per element) used instead of the generator.
        nan: "error" (default) or "zero": what NaN becomes in a format without NaN.
        negative: "error" (default) or "clamp": negatives into an unsigned format.
        out: optional writeable NumPy array or CPU tensor of x's shape, C- or
            Fortran-contiguous, of dtype ``fmt.code_dtype`` (or the format's own dtype).
        as_dtype: return the codes viewed (no copy) as the format's own dtype:
            ``fmt.ml_dtype`` for NumPy input (e.g. an ``ml_dtypes.float8_e4m3fn`` array),
            ``fmt.torch_dtype`` for torch input (e.g. ``torch.float8_e4m3fn``).

    Returns:
        Codes of the same shape and order (C or Fortran), dtype ``fmt.code_dtype``
        (uint8/16/32); a torch tensor on x's device for a torch input; ``out`` itself when
        given.

    Raises:
        TypeError: x is not a supported float array.
        ValueError: unknown format/option, NaN or negatives where not allowed, as_dtype for
            a format without such a dtype.
    """
    if (type(x) is not np.ndarray or random_bits is not None) and _on_cuda(x, random_bits):
        _no_out(out)
        from . import cuda

        if seed is None:
            seed = _seed_arg(None, rounding in STOCHASTIC and random_bits is None)
        r = cuda.encode(
            x,
            fmt,
            rounding=rounding,
            overflow=overflow,
            seed=seed,
            stream=stream,
            offset=offset,
            random_bits=random_bits,
            nan=nan,
            negative=negative,
        )
        if as_dtype and not _is_torch(r):
            raise ValueError("as_dtype: CuPy arrays have no low-precision float dtypes")
        return _as_dtype(r, format(fmt), True) if as_dtype else r
    f = format(fmt)
    a, kind, from_torch = _float_input(x)
    opts = _options(f, rounding, overflow, nan, negative, seed, stream, offset, random_bits, a.size)
    if as_dtype:
        _as_dtype(None, f, from_torch)  # fail before the work when there is no such dtype
    o: Optional[np.ndarray]
    if out is None and a.flags.c_contiguous:  # the common case, inline
        o = np.empty(a.shape, f.code_dtype)
        try:
            _core.encode(a.reshape(-1), kind, o.reshape(-1), *opts)
        except ValueError as e:
            raise _core_error(e) from None
    else:
        o = None if out is None else _out_array(out, a.shape, f.code_dtype, (f.name,))
        try:
            o = _run(_core.encode, a, o, f.code_dtype, (kind,), opts, rounding in STOCHASTIC)
        except ValueError as e:
            raise _core_error(e) from None
    if out is not None:
        return out
    r = _wrap(o, from_torch)
    return _as_dtype(r, f, from_torch) if as_dtype else r


def _as_dtype(codes: Any, f, from_torch: bool):
    """codes viewed as f's own dtype (None: only check that there is one)."""
    if from_torch:
        td = f.torch_dtype
        if td is None:
            raise ValueError(f"as_dtype: torch has no dtype for {f.name}")
        return None if codes is None else codes.view(td)
    md = f.ml_dtype
    if md is None:
        raise ValueError(f"as_dtype: NumPy/ml_dtypes has no dtype for {f.name}")
    return None if codes is None else codes.view(md)


def _typed_codes(codes: Any, from_torch: bool):
    """(uint codes, Format or None): codes held in a low-precision dtype (ml_dtypes
    float8/float6/float4 arrays, torch float8 tensors) are viewed as their bits, no copy."""
    if from_torch:
        name = str(codes.dtype)[len("torch.") :]
        if name.startswith("float8_"):
            import torch

            return codes.view(torch.uint8), _lookup(codes.dtype, "codes")
        if name == "float4_e2m1fn_x2":
            _lookup(codes.dtype, "codes")  # raises, with how to read packed FP4
        return codes, None
    a = codes if type(codes) is np.ndarray else np.asarray(codes)
    if a.dtype.itemsize == 1 and a.dtype.kind in "Vf" and a.dtype.name in _ML_DTYPES:
        return a.view(np.uint8), _lookup(a.dtype, "codes")
    return a, None


@overload
def decode(
    codes: ArrayT, fmt: Optional[FormatLike] = ..., *, dtype: Any = ..., out: Any = ...
) -> ArrayT: ...
@overload
def decode(
    codes: PlainValues, fmt: Optional[FormatLike] = ..., *, dtype: Any = ..., out: Any = ...
) -> np.ndarray: ...


def decode(
    codes: Any, fmt: Optional[FormatLike] = None, *, dtype: Any = np.float32, out: Any = None
):
    """Values of codes.

    Args:
        codes: unsigned integer codes (uint8/uint16/uint32 NumPy array or torch tensor), or
            codes held in a low-precision dtype: an ml_dtypes float8/float6/float4 array or a
            torch float8 tensor (read through a uint8 view, no copy).
        fmt: format name, :class:`Format` or dtype; optional when codes have a low-precision
            dtype (the format is the dtype's; a different fmt is an error).
        dtype: float32 (default), float64, float16 or bfloat16, as a NumPy, ml_dtypes or
            torch dtype or a name. Every value is exact in float32 and float64; float16 and
            bfloat16 results are rounded once to nearest even (exact when the format's
            values are). NumPy bfloat16 needs ml_dtypes.
        out: optional writeable NumPy array or CPU tensor of codes' shape and `dtype`, C- or
            Fortran-contiguous.

    Returns:
        Array of the same shape and order (a torch tensor on the codes' device for a torch
        input; ``out`` itself when given).

    Raises:
        TypeError: codes are neither unsigned integers nor a low-precision float dtype, or
            fmt is missing for integer codes.
        ValueError: a code is outside 0 .. 2**bits - 1 (the message names the element), or
            fmt disagrees with the codes' dtype.
    """
    from_torch = type(codes) is not np.ndarray and _is_torch(codes)
    codes, typed = _typed_codes(codes, from_torch)
    if typed is not None:
        if fmt is not None and format(fmt) != typed:
            raise ValueError(
                f"fmt: {format(fmt).name} disagrees with the codes' dtype "
                f"({typed.name}); view the codes as uint8 to reinterpret them"
            )
        f = typed
    elif fmt is None:
        raise TypeError(
            "fmt: required for integer codes (only codes in a low-precision "
            "dtype such as ml_dtypes.float8_e4m3fn carry their format)"
        )
    else:
        f = format(fmt)
    kind = _result_dtype(dtype)
    if type(codes) is not np.ndarray and _on_cuda(codes):
        _no_out(out)
        from . import cuda

        if kind in ("float32", "float64"):
            return cuda.decode(codes, f, dtype=kind)
        v = cuda.decode(codes, f, dtype="float32")
        if from_torch:
            import torch

            return v.to(getattr(torch, kind))
        if kind == "bfloat16":
            raise ValueError("dtype: CuPy has no bfloat16; decode a torch tensor or use float32")
        return v.astype(kind)
    if from_torch:
        codes, _ = _torch_to_numpy(codes, "codes")
    c = _contiguous(codes)
    if c.dtype not in _CODE_DTYPES:
        if c.dtype.kind != "u" or c.dtype.itemsize > 4:
            raise TypeError(f"codes: expected uint8, uint16 or uint32 codes, got dtype {c.dtype}")
        c = _native(c)
    dt: Optional[np.dtype] = _NP_DTYPE.get(kind)
    wide = dt is not None
    if not wide:
        dt = np.dtype(np.uint16)
        if not from_torch and kind == "bfloat16":
            _np_bfloat16()  # fail before the work without ml_dtypes
    o = None if out is None else _out_array(out, c.shape, dt, () if wide else (kind,))
    try:
        if wide and o is None and c.flags.c_contiguous:  # the common case, inline
            o = np.empty(c.shape, dt)
            _core.decode(c.reshape(-1), o.reshape(-1), f._handle)
        elif wide:
            o = _run(_core.decode, c, o, dt, (), (f._handle,), False)
        else:
            v = _run(_core.decode, c, None, np.float32, (), (f._handle,), False)
            o = _from_f32(v, kind, o)
    except ValueError as e:
        raise _core_error(e) from None
    return _float_result(o, kind, from_torch, out)


@overload
def quantize(
    x: ArrayT,
    fmt: FormatLike,
    *,
    rounding: Rounding = ...,
    overflow: Overflow = ...,
    seed: Optional[int] = ...,
    stream: int = ...,
    offset: int = ...,
    random_bits: Any = ...,
    nan: NanPolicy = ...,
    negative: Negative = ...,
) -> ArrayT: ...
@overload
def quantize(
    x: PlainValues,
    fmt: FormatLike,
    *,
    rounding: Rounding = ...,
    overflow: Overflow = ...,
    seed: Optional[int] = ...,
    stream: int = ...,
    offset: int = ...,
    random_bits: Any = ...,
    nan: NanPolicy = ...,
    negative: Negative = ...,
) -> np.ndarray: ...


def quantize(
    x: Any,
    fmt: FormatLike,
    *,
    rounding: Rounding = "nearest",
    overflow: Overflow = "nonfinite",
    seed: Optional[int] = None,
    stream: int = 0,
    offset: int = 0,
    random_bits: Any = None,
    nan: NanPolicy = "error",
    negative: Negative = "error",
):
    """Round values to a format and return the rounded values in x's dtype.

    Same arguments as :func:`encode` (``seed=None`` draws a fresh key); equals
    ``decode(encode(x, …))`` cast to x's dtype, in one pass, in x's order.

    Raises:
        ValueError: for float16/bfloat16 inputs, when the format's values are not all exact
            in that dtype (use decode(encode(x)) to get float32).
    """
    if (type(x) is not np.ndarray or random_bits is not None) and _on_cuda(x, random_bits):
        from . import cuda

        if seed is None:
            seed = _seed_arg(None, rounding in STOCHASTIC and random_bits is None)
        return cuda.quantize(
            x,
            fmt,
            rounding=rounding,
            overflow=overflow,
            seed=seed,
            stream=stream,
            offset=offset,
            random_bits=random_bits,
            nan=nan,
            negative=negative,
        )
    f = format(fmt)
    a, kind, from_torch = _float_input(x)
    check_exact_in(f, kind)
    opts = _options(f, rounding, overflow, nan, negative, seed, stream, offset, random_bits, a.size)
    try:
        out = _run(_core.quantize, a, None, a.dtype, (kind,), opts, rounding in STOCHASTIC)
    except ValueError as e:
        raise _core_error(e) from None
    return _wrap(out, from_torch, kind)


def _bits_arg(bits: Any) -> int:
    if not isinstance(bits, (int, np.integer)) or isinstance(bits, bool) or not 1 <= bits <= 8:
        raise ValueError(f"bits: expected an int with 1 <= bits <= 8, got {bits!r}")
    return int(bits)


def _uint8_input(x: Any, arg: str, what: str) -> Tuple[np.ndarray, bool]:
    from_torch = _is_torch(x)
    if from_torch:
        x, _ = _torch_to_numpy(x, arg)
    a = np.asarray(x)
    if a.dtype != np.uint8:
        raise TypeError(f"{arg}: expected uint8 {what}, got dtype {a.dtype}")
    return a, from_torch


@overload
def pack(codes: ArrayT, bits: int) -> ArrayT: ...
@overload
def pack(codes: PlainValues, bits: int) -> np.ndarray: ...


def pack(codes: Any, bits: int):
    """Pack k-bit codes into a little-endian, LSB-first byte stream (layout in the README).

    Args:
        codes: uint8 codes, NumPy array or torch tensor (any shape; flattened in C order),
            each < 2**bits.
        bits: 1 <= bits <= 8.

    Returns:
        uint8 array of ceil(n*bits/8) bytes; padding bits are zero. A torch tensor on the
        codes' device for a torch input.

    Raises:
        ValueError: bits out of range, or a code ≥ 2**bits (the message names the element).
        TypeError: codes are not uint8.
    """
    bits = _bits_arg(bits)
    if _on_cuda(codes):
        from . import cuda

        return cuda.pack(codes, bits)
    c, from_torch = _uint8_input(codes, "codes", "codes")
    c = np.ascontiguousarray(c)  # C order: the stream's element order
    out = np.empty(_core.packed_len(c.size, bits), np.uint8)
    try:
        _core.pack_codes(c.reshape(-1), bits, out)
    except ValueError as e:
        raise _core_error(e) from None
    return _wrap(out, from_torch)


@overload
def unpack(packed: ArrayT, bits: int, count: int) -> ArrayT: ...
@overload
def unpack(packed: PlainValues, bits: int, count: int) -> np.ndarray: ...


def unpack(packed: Any, bits: int, count: int):
    """Inverse of :func:`pack`.

    Args:
        packed: uint8 bytes (NumPy array or torch tensor), exactly ceil(count*bits/8).
        bits: 1 <= bits <= 8.
        count: number of codes.

    Returns:
        uint8 array of `count` codes (a torch tensor on packed's device for a torch input).

    Raises:
        ValueError: wrong buffer length or bits out of range.
    """
    bits = _bits_arg(bits)
    if not isinstance(count, (int, np.integer)) or isinstance(count, bool) or count < 0:
        raise ValueError(f"count: expected an int with count >= 0, got {count!r}")
    if _on_cuda(packed):
        from . import cuda

        return cuda.unpack(packed, bits, int(count))
    p, from_torch = _uint8_input(packed, "packed", "bytes")
    p = np.ascontiguousarray(p)
    out = np.empty(int(count), np.uint8)
    try:
        _core.unpack_codes(p.reshape(-1), bits, int(count), out)
    except ValueError as e:
        raise _core_error(e) from None
    return _wrap(out, from_torch)


def random_bits(
    n: int,
    *,
    seed: Optional[int] = None,
    stream: int = 0,
    offset: int = 0,
    rounding: str = "stochastic",
    like: Any = None,
):
    """The uint32 random words stochastic rounding uses for elements offset .. offset+n-1.

    Args:
        n: number of values, n >= 0.
        seed: generator key; None (default) draws a fresh key from lowfp's global generator
            (see :func:`lowfp.manual_seed`).
        stream, offset: the rest of the key and the index of the first element.
        rounding: whose words: "stochastic" (one Philox word per element) or "stochastic16"
            (16 bits h per element, as the word ``h << 16 | 0xFFFF``).
        like: optional array or tensor: the result is a torch tensor on like's device for a
            torch tensor, a CuPy array for a CuPy array, else a NumPy array.

    Returns:
        n uint32 values. Passed as ``random_bits=`` with ``rounding="stochastic"``, either
        kind gives the codes of its own mode.

    Raises:
        ValueError: n, seed, stream, offset or rounding out of range.
    """
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n: expected an int with n >= 0, got {n!r}")
    _check_choice("rounding", rounding, STOCHASTIC)
    seed = _seed_arg(seed, True)
    stream, offset = _key("stream", stream), _key("offset", offset)
    if like is not None and _on_cuda(like):
        from . import cuda

        return cuda.random_bits(
            int(n), seed=seed, stream=stream, offset=offset, rounding=rounding, like=like
        )
    out = np.empty(int(n), np.uint32)
    _core.random_bits(seed, stream, offset, rounding, out)
    return _wrap(out, like is not None and _is_torch(like))


# ---------------------------------------------------------------- table codecs


class _TableCodec(TableCodec):
    """An element codec whose codes index an ascending table of levels in [-1, 1].

    Codecs are immutable values: equal (and hashing alike) when their parameters are.
    """

    bits: int
    _key: tuple
    _levels: np.ndarray

    @property
    def levels(self) -> np.ndarray:
        """float32 value of each code (ascending)."""
        raise NotImplementedError

    @property
    def max(self) -> float:
        return 1.0

    def spec(self) -> dict:
        raise NotImplementedError

    def _freeze(self) -> None:
        object.__setattr__(self, "_key", (type(self).__name__, *sorted(self.spec().items())))

    @property
    def _table(self) -> Any:
        """The core's handle of these levels (``_core.Table``), built on first use and kept:
        an 8-bit table builds a 256 KiB lookup index once, not once per call."""
        t = self.__dict__.get("_table_handle")
        if t is None:
            t = _core.Table(self.levels.tolist())
            object.__setattr__(self, "_table_handle", t)
        return t

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(
            f"{type(self).__name__} is immutable (a codec is a value); build a new one instead"
        )

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, _TableCodec):
            return NotImplemented
        return self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    @overload
    def encode(
        self,
        x: ArrayT,
        *,
        rounding: TableRounding = ...,
        seed: Optional[int] = ...,
        stream: int = ...,
        offset: int = ...,
    ) -> ArrayT: ...
    @overload
    def encode(
        self,
        x: PlainValues,
        *,
        rounding: TableRounding = ...,
        seed: Optional[int] = ...,
        stream: int = ...,
        offset: int = ...,
    ) -> np.ndarray: ...

    def encode(
        self,
        x: Any,
        *,
        rounding: TableRounding = "nearest",
        seed: Optional[int] = None,
        stream: int = 0,
        offset: int = 0,
    ):
        """Codes (uint8) of normalized values x (values outside the table are clamped).

        Args:
            x: float values (NumPy array or torch tensor), converted to float32.
            rounding: "nearest" (ties to the even code), "stochastic" (unbiased between
                the two neighbouring levels, 2**-32 resolution) or "stochastic16" (2**-16).
            seed: stochastic rounding key; None (default) draws a fresh key from lowfp's
                global generator (see :func:`lowfp.manual_seed`).
            stream, offset: the rest of the key and the index of element 0.

        Returns:
            uint8 codes of x's shape and order (a torch tensor on x's device for a torch
            input).

        Raises:
            ValueError: NaN in x, or another rounding mode.
        """
        _check_choice("rounding", rounding, TABLE_ROUNDINGS)
        seed = _seed_arg(seed, rounding in STOCHASTIC)
        stream, offset = _key("stream", stream), _key("offset", offset)
        if _on_cuda(x):
            from .cuda.codec import table_encode

            return table_encode(self.levels, x, rounding, seed, stream, offset)
        a, kind, from_torch = _float_input(x)
        if kind in ("float16", "bfloat16"):
            a = _to_f32(a, kind)  # exact
        elif kind == "float64":
            a = a.astype(np.float32, order="K")  # one correct rounding
        try:
            out = _run(
                _core.table_encode,
                a,
                None,
                np.uint8,
                (self._table,),
                (rounding, seed, stream, offset),
                rounding in STOCHASTIC,
            )
        except ValueError as e:
            raise _core_error(e) from None
        return _wrap(out, from_torch)

    @overload
    def decode(self, codes: ArrayT, *, dtype: Any = ...) -> ArrayT: ...
    @overload
    def decode(self, codes: PlainValues, *, dtype: Any = ...) -> np.ndarray: ...

    def decode(self, codes: Any, *, dtype: Any = np.float32):
        """Values of codes.

        Args:
            codes: uint8 codes (NumPy array or torch tensor, any device).
            dtype: float32 (default) or float64 (exact), float16 or bfloat16 (rounded once
                to nearest even); NumPy, ml_dtypes or torch dtype, or a name.

        Returns:
            Values of codes' shape (a torch tensor on codes' device for a torch input).

        Raises:
            TypeError: codes are not uint8.
            ValueError: a code has no level.
        """
        kind = _result_dtype(dtype)
        lv = self.levels
        if _on_cuda(codes):  # CUDA torch tensors and CuPy arrays: lowfp.cuda's kernel
            from .cuda.codec import table_decode

            return table_decode(lv, codes, kind)
        if _is_torch(codes) and codes.device.type != "cpu":  # other torch devices: a gather
            import torch

            if codes.dtype != torch.uint8:
                raise TypeError(f"codes: expected uint8 codes, got dtype {codes.dtype}")
            if codes.numel() and int(codes.max()) >= lv.size:
                raise ValueError(f"codes: expected codes < {lv.size}, got {int(codes.max())}")
            table = torch.tensor(lv, device=codes.device)
            return table[codes.long()].to(getattr(torch, kind))
        c, from_torch = _uint8_input(codes, "codes", "codes")
        if c.size and int(c.max()) >= lv.size:
            raise ValueError(f"codes: expected codes < {lv.size}, got {int(c.max())}")
        v = lv[c]  # a gather keeps c's order
        o = _from_f32(v, kind, None)
        return _wrap(o, from_torch, kind)


def _to_f32(a: np.ndarray, kind: str) -> np.ndarray:
    return _run(_core.decode, a, None, np.float32, (), (format(kind)._handle,), False)


class Linear(_TableCodec):
    """Linear k-bit codes.

    Args:
        bits: 1 <= bits <= 8 (2 <= bits <= 8 when signed).
        signed: symmetric levels i/n, i = -n..n with n = 2**(bits-1) - 1.
        zero: for unsigned codes, False gives the zero-free levels (i+1)/2**bits
            (for second moments); otherwise i/(2**bits - 1).
    """

    signed: bool
    zero: bool

    def __init__(self, bits: int, signed: bool = True, zero: bool = True):
        bits, signed, zero = _bits_arg(bits), bool(signed), bool(zero)
        try:
            levels = _core.linear_levels(bits, signed, zero)
        except ValueError as e:
            raise _core_error(e) from None
        for k, v in (
            ("bits", bits),
            ("signed", signed),
            ("zero", zero),
            ("_levels", np.array(levels, np.float32)),
        ):
            object.__setattr__(self, k, v)
        self._levels.setflags(write=False)
        self._freeze()

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

    signed: bool

    def __init__(self, bits: int = 8, signed: bool = True):
        if isinstance(bits, bool) or bits not in (4, 8):
            raise ValueError(f"bits: expected 4 or 8, got {bits!r}")
        bits, signed = int(bits), bool(signed)
        for k, v in (
            ("bits", bits),
            ("signed", signed),
            ("_levels", np.array(_core.dynamic_levels(bits, signed), np.float32)),
        ):
            object.__setattr__(self, k, v)
        self._levels.setflags(write=False)
        self._freeze()

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
        bits: 1 <= bits <= 8 (2 <= bits <= 8 when signed).
        signed: symmetric signed levels.
        zero: whether code 0 is zero (unsigned only; signed always has zero).
        alpha: the base, 0 < alpha < 1, when fixed.
        quantile: in blockwise use, choose alpha per block so that the smallest non-zero
            level matches this quantile of |x|/amax (0 < quantile < 1); overrides alpha.
    """

    signed: bool
    zero: bool
    alpha: float
    quantile: Optional[float]

    def __init__(
        self,
        bits: int,
        signed: bool = False,
        zero: bool = True,
        alpha: float = 0.5,
        quantile: Optional[float] = None,
    ):
        bits, signed, zero = _bits_arg(bits), bool(signed), bool(zero)
        alpha = float(alpha)
        if quantile is not None and not 0.0 < quantile < 1.0:
            raise ValueError(f"quantile: expected 0 < quantile < 1 or None, got {quantile!r}")
        try:
            levels = _core.log_levels(bits, signed, alpha, zero)
        except ValueError as e:
            raise _core_error(e) from None
        for k, v in (
            ("bits", bits),
            ("signed", signed),
            ("zero", zero),
            ("alpha", alpha),
            ("quantile", quantile),
            ("_levels", np.array(levels, np.float32)),
        ):
            object.__setattr__(self, k, v)
        self._levels.setflags(write=False)
        self._freeze()

    @property
    def levels(self) -> np.ndarray:
        """Levels for the fixed base ``alpha``."""
        return self._levels

    def spec(self) -> dict:
        return {
            "codec": "log",
            "bits": self.bits,
            "signed": self.signed,
            "zero": self.zero,
            "alpha": self.alpha,
            "quantile": float(self.quantile or 0.0),
        }

    def __repr__(self) -> str:
        return (
            f"Log(bits={self.bits}, signed={self.signed}, zero={self.zero}, "
            f"alpha={self.alpha}, quantile={self.quantile})"
        )


def set_num_threads(n: int) -> None:
    """Use n threads for all Rust work (0 = all cores; default: $LOWFP_NUM_THREADS or all)."""
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
        raise ValueError(f"n: expected an int with n >= 0, got {n!r}")
    try:
        _core.set_num_threads(int(n))
    except ValueError as e:
        raise _core_error(e) from None


def num_threads() -> int:
    """Threads used for Rust work."""
    return _core.num_threads()


# A child of fork (DataLoader workers, multiprocessing's "fork" start method) has none of the
# parent's threads: the Rust pools are rebuilt there on their next use.
if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_core._forked)
