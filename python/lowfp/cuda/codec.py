"""The codecs on CUDA arrays: the same functions and arguments as :mod:`lowfp.codec` and
:mod:`lowfp.qtensor`, for CUDA torch tensors and CuPy arrays, computed by the kernels of
``kernels/lowfp_kernels.cu`` with the same bits as the Rust core.

Design notes
- Zero-copy: torch tensors are viewed as CuPy arrays through DLPack (16-bit floats and
  unsigned codes through a same-width signed integer view, which every DLPack consumer takes);
  results are allocated by torch for torch inputs (its caching allocator) and by CuPy for CuPy
  inputs, and returned as the caller's type.
- Streams: work on torch tensors is queued on torch's current stream of the tensor's device
  (wrapped as a CuPy ExternalStream), work on CuPy arrays on CuPy's current stream; nothing
  synchronizes except the checks below.
- Bad elements are counted on the device; the host reads the two flag words back (one
  synchronization) only when the call can have bad elements (NaN into a NaN-less format,
  negatives into an unsigned one with the default options, codes wider than the format,
  blockwise inputs), so that the error names the first bad element like the Rust core.
"""

from __future__ import annotations

import contextlib
from typing import Any, Optional, Tuple

import numpy as np

from .._common import (
    STOCHASTIC,
    check_choice,
    check_encode_options,
    check_exact_in,
    check_random_bits_rounding,
    packed_len,
)
from ..formats import FormatLike, format
from . import _loader
from ._params import KINDS, MODES, SCALE_RULES, format_args

_THREADS = 256
_U64_MAX = np.uint64(2**64 - 1)


# ---------------------------------------------------------------- device arrays


def is_torch_cuda(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and getattr(x, "is_cuda", False)


def is_cupy(x: Any) -> bool:
    return type(x).__module__.startswith("cupy") and hasattr(x, "data") and hasattr(x, "device")


def on_device(x: Any) -> bool:
    """Whether x is a CUDA torch tensor or a CuPy array (checked without importing either)."""
    return is_torch_cuda(x) or is_cupy(x)


def _device_id(x: Any) -> int:
    return x.device.index if is_torch_cuda(x) else x.device.id


def check_same_device(**arrays: Any) -> int:
    """The CUDA device id shared by all non-None arrays; ValueError naming them otherwise."""
    ids = {k: _device_id(v) for k, v in arrays.items() if v is not None}
    if len(set(ids.values())) > 1:
        where = ", ".join(f"{k} on cuda:{d}" for k, d in ids.items())
        raise ValueError(f"tensors on different devices: {where}; move them to one device")
    return next(iter(ids.values()))


_TORCH_SIGNED = {1: "int8", 2: "int16", 4: "int32", 8: "int64"}


def _dtype_name(x: Any) -> str:
    if is_torch_cuda(x):
        return str(x.dtype).replace("torch.", "")
    return x.dtype.name


def _check_dtype(x: Any, arg: str, allowed: tuple, what: str) -> str:
    """x's dtype name, or TypeError naming the allowed ones (before CuPy is imported)."""
    name = _dtype_name(x)
    if name not in allowed:
        raise TypeError(f"{arg}: expected {what}, got dtype {name}")
    return name


def _to_cupy(x: Any, arg: str) -> Tuple[Any, str]:
    """(CuPy view of x without a copy, dtype name of x)."""
    if is_torch_cuda(x):
        if x.is_sparse or x.is_complex():
            raise TypeError(f"{arg}: sparse and complex tensors are not supported")
        if not x.is_contiguous():
            raise ValueError(f"{arg}: CUDA tensor is not contiguous; pass {arg}.contiguous()")
        cp = _loader.cupy()
        import torch

        name = str(x.dtype).replace("torch.", "")
        t = x.detach()
        if name in ("bfloat16", "float16", "uint16", "uint32", "uint64"):
            # DLPack consumers disagree on these dtypes; a same-width int view always works
            t = t.view(getattr(torch, _TORCH_SIGNED[t.element_size()]))
        a = cp.from_dlpack(t)
        if name in ("bfloat16", "float16", "uint16"):
            a = a.view(cp.uint16)
        elif name in ("uint32", "uint64"):
            a = a.view(getattr(cp, name))
        return a, name
    cp = _loader.cupy()
    if not x.flags.c_contiguous:
        raise ValueError(f"{arg}: CuPy array is not C-contiguous; pass cupy.ascontiguousarray(x)")
    name = x.dtype.name
    if name in ("float16", "bfloat16"):
        x = x.view(cp.uint16)
    return x, name


def _stream(like: Any):
    """torch's current stream for torch inputs, CuPy's current stream otherwise."""
    cp = _loader.cupy()
    if is_torch_cuda(like):
        import torch

        s = torch.cuda.current_stream(like.device)
        return cp.cuda.ExternalStream(s.cuda_stream, like.device.index)
    return contextlib.nullcontext()


def _empty(like: Any, shape: tuple, dtype: str) -> Tuple[Any, Any]:
    """(result in the caller's type, its CuPy view) of a new array of `dtype`."""
    cp = _loader.cupy()
    if is_torch_cuda(like):
        import torch

        t = torch.empty(shape, dtype=getattr(torch, dtype), device=like.device)
        return t, _to_cupy(t, "out")[0]
    if dtype == "bfloat16":
        a = cp.empty(shape, cp.uint16)
        return a, a  # CuPy has no bfloat16: the bit patterns, as uint16
    a = cp.empty(shape, dtype)
    return a, a.view(cp.uint16) if dtype == "float16" else a


def _launch(name: str, n: int, args: tuple, like: Any) -> None:
    if n == 0:
        return
    cp = _loader.cupy()
    blocks = int(min((n + _THREADS - 1) // _THREADS, 1 << 16))
    with cp.cuda.Device(_device_id(like)), _stream(like):
        _loader.kernel(name)((blocks,), (_THREADS,), args)


class _Flags:
    """Device words for bad elements: OR of flags, index of the first."""

    def __init__(self, like: Any):
        cp = _loader.cupy()
        with cp.cuda.Device(_device_id(like)), _stream(like):
            self.bad = cp.zeros(1, cp.uint32)
            self.first = cp.full(1, _U64_MAX, cp.uint64)

    def read(self) -> Tuple[int, int]:
        """(flags, first index): one synchronization."""
        return int(self.bad.get()[0]), int(self.first.get()[0])


def _u64(v: int) -> np.uint64:
    return np.uint64(int(v))


# ---------------------------------------------------------------- ExMy codec


def _fmt_scalars(f, overflow="nonfinite", nan="error", negative="error") -> tuple:
    e, m, b, fl = format_args(f, overflow, nan, negative)
    return np.uint32(e), np.uint32(m), np.int32(b), np.uint32(fl)


def _encode_errors(flags: _Flags, x: Any, f, n: int, can_fail: bool) -> None:
    if not can_fail or n == 0:
        return
    bad, i = flags.read()
    if not bad:
        return
    v = float(x.reshape(-1)[i].item()) if not is_torch_cuda(x) else float(x.reshape(-1)[i])
    if v != v:
        raise ValueError(
            f"x: element {i} is NaN and format {f.name} has no NaN; pass nan='zero' to map NaN to 0"
        )
    raise ValueError(
        f"x: element {i} is negative and format {f.name} is unsigned; pass "
        "negative='clamp' to clamp to 0"
    )


def _encode_impl(
    x, fmt, rounding, overflow, seed, stream, offset, random_bits, nan, negative, quantize: bool
):
    f = format(fmt)
    check_encode_options(rounding, overflow, nan, negative)
    if random_bits is not None:
        check_random_bits_rounding(rounding)
        if not (on_device(x) and on_device(random_bits)):
            raise ValueError(
                "random_bits: expected x and random_bits both on the CPU or both on one CUDA device"
            )
        check_same_device(x=x, random_bits=random_bits)
    _check_dtype(x, "x", tuple(KINDS), "float32, float64, float16 or bfloat16 values")
    a, kind = _to_cupy(x, "x")
    rb, use_rb = a, 0
    if random_bits is not None:
        rb, rb_kind = _to_cupy(random_bits, "random_bits")
        if rb_kind != "uint32" or rb.size != a.size:
            raise ValueError(
                f"random_bits: expected {a.size} uint32 values, got {rb.size} of dtype {rb_kind}"
            )
        use_rb = 1
    if quantize:
        check_exact_in(f, kind)
        out, o = _empty(x, tuple(a.shape), kind)
        out_bytes = a.itemsize
    else:
        code_dtype = np.dtype(f.code_dtype).name
        out, o = _empty(x, tuple(a.shape), code_dtype)
        out_bytes = np.dtype(code_dtype).itemsize
    flags = _Flags(x)
    n = a.size
    _launch(
        "lf_encode",
        n,
        (
            a,
            np.int32(KINDS[kind]),
            _u64(n),
            *_fmt_scalars(f, overflow, nan, negative),
            np.int32(MODES[rounding]),
            _u64(seed),
            _u64(stream),
            _u64(offset),
            rb,
            np.int32(use_rb),
            o,
            np.int32(out_bytes),
            np.int32(int(quantize)),
            flags.bad,
            flags.first,
        ),
        x,
    )
    can_fail = (nan == "error" and f.nan == "none") or (negative == "error" and not f.signed)
    _encode_errors(flags, x, f, n, can_fail)
    return out


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
):
    """:func:`lowfp.encode` on a CUDA tensor / CuPy array; codes of ``fmt.code_dtype`` on the
    same device, in the caller's type."""
    return _encode_impl(
        x, fmt, rounding, overflow, seed, stream, offset, random_bits, nan, negative, quantize=False
    )


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
    """:func:`lowfp.quantize` on a CUDA tensor / CuPy array (rounded values in x's dtype)."""
    return _encode_impl(
        x, fmt, rounding, overflow, seed, stream, offset, random_bits, nan, negative, quantize=True
    )


def decode(codes: Any, fmt: FormatLike, *, dtype: Any = np.float32):
    """:func:`lowfp.decode` on a CUDA tensor / CuPy array of unsigned codes."""
    f = format(fmt)
    _check_dtype(codes, "codes", ("uint8", "uint16", "uint32"), "uint8, uint16 or uint32 codes")
    c, kind = _to_cupy(codes, "codes")
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise ValueError(f"dtype: expected float32 or float64, got {dt}")
    out, o = _empty(codes, tuple(c.shape), dt.name)
    flags = _Flags(codes)
    n = c.size
    _launch(
        "lf_decode",
        n,
        (
            c,
            np.int32(c.itemsize),
            _u64(n),
            *_fmt_scalars(f),
            o,
            np.int32(dt == np.float64),
            flags.bad,
            flags.first,
        ),
        codes,
    )
    if n and c.itemsize * 8 > f.bits:
        bad, i = flags.read()
        if bad:
            v = int(c.reshape(-1)[i].item())
            raise ValueError(
                f"codes: element {i} is {v}, but a {f.bits}-bit format has codes "
                f"0..{(1 << f.bits) - 1}"
            )
    return out


def random_bits(
    n: int,
    *,
    seed: int = 0,
    stream: int = 0,
    offset: int = 0,
    rounding: str = "stochastic",
    like: Any = None,
):
    """:func:`lowfp.random_bits` on the device of `like` (CuPy's current device if None)."""
    check_choice("rounding", rounding, STOCHASTIC)
    cp = _loader.cupy()
    if like is None:
        like = cp.empty(0, cp.uint8)
    out, o = _empty(like, (int(n),), "uint32")
    args = (np.int32(MODES[rounding]), _u64(seed), _u64(stream), _u64(offset), _u64(n), o)
    _launch("lf_random", int(n), args, like)
    return out


# ---------------------------------------------------------------- packing


def pack(codes: Any, bits: int):
    """:func:`lowfp.pack` on the device: uint8 bytes, LSB-first (README layout)."""
    _check_dtype(codes, "codes", ("uint8",), "uint8 codes")
    c, kind = _to_cupy(codes, "codes")
    n = c.size
    length = packed_len(n, bits)
    out, o = _empty(codes, (length,), "uint8")
    flags = _Flags(codes)
    _launch(
        "lf_pack",
        length,
        (c, _u64(n), np.uint32(bits), o, _u64(length), flags.bad, flags.first),
        codes,
    )
    if bits < 8 and n:
        bad, i = flags.read()
        if bad:
            v = int(c.reshape(-1)[i].item())
            raise ValueError(f"codes: element {i} is {v}, which does not fit in {bits} bits")
    return out


def unpack(packed: Any, bits: int, count: int):
    """:func:`lowfp.unpack` on the device."""
    _check_dtype(packed, "packed", ("uint8",), "uint8 bytes")
    p, kind = _to_cupy(packed, "packed")
    length = packed_len(count, bits)
    if p.size != length:
        raise ValueError(
            f"packed: expected {length} bytes for {count} {bits}-bit codes, got {p.size}"
        )
    out, o = _empty(packed, (int(count),), "uint8")
    _launch("lf_unpack", int(count), (p, _u64(length), np.uint32(bits), _u64(count), o), packed)
    return out


# ---------------------------------------------------------------- table codecs


def _device_levels(levels: np.ndarray, like: Any):
    cp = _loader.cupy()
    with cp.cuda.Device(_device_id(like)), _stream(like):
        return cp.asarray(np.ascontiguousarray(levels, np.float32))


def table_encode(levels: np.ndarray, x: Any, rounding: str, seed: int, stream: int, offset: int):
    """Codes (uint8) of a table codec for float32/16/bf16 device values (NaN rejected)."""
    _check_dtype(x, "x", ("float32",), "float32 values (a CUDA table encode)")
    a, kind = _to_cupy(x, "x")
    lv = _device_levels(levels, x)
    out, o = _empty(x, tuple(a.shape), "uint8")
    flags = _Flags(x)
    n = a.size
    _launch(
        "lf_table_encode",
        n,
        (
            a,
            _u64(n),
            lv,
            np.int32(lv.size),
            np.int32(MODES[rounding]),
            _u64(seed),
            _u64(stream),
            _u64(offset),
            o,
            flags.bad,
            flags.first,
        ),
        x,
    )
    if n:
        bad, i = flags.read()
        if bad:
            raise ValueError(f"x: element {i} is NaN")
    return out


def table_decode(levels: np.ndarray, codes: Any, kind: str = "float32"):
    """Values of a table codec's uint8 codes on the device (``Linear/Dynamic/Log.decode``):
    float32 levels gathered, then widened (float64, exact) or rounded once to nearest even
    (float16, bfloat16 for torch), in the caller's type. ValueError names the first code with
    no level (one synchronization)."""
    _check_dtype(codes, "codes", ("uint8",), "uint8 codes")
    if kind not in ("float32", "float64", "float16", "bfloat16"):
        raise ValueError(f"dtype: expected float32, float64, float16 or bfloat16, got {kind}")
    if kind == "bfloat16" and not is_torch_cuda(codes):
        raise ValueError("dtype: CuPy has no bfloat16; use float32")
    c, _ = _to_cupy(codes, "codes")
    lv = _device_levels(levels, codes)
    out, o = _empty(codes, tuple(c.shape), "float32")
    flags = _Flags(codes)
    n = c.size
    _launch(
        "lf_table_decode", n, (c, _u64(n), lv, np.int32(lv.size), o, flags.bad, flags.first), codes
    )
    if n and lv.size < 256:
        bad, i = flags.read()
        if bad:
            v = int(c.reshape(-1)[i].item())
            raise ValueError(
                f"codes: element {i} is {v}, but the codec has {lv.size} levels "
                f"(codes 0..{lv.size - 1})"
            )
    if kind == "float32":
        return out
    if is_torch_cuda(out):
        import torch

        return out.to(getattr(torch, kind))
    return out.astype(kind)


# ---------------------------------------------------------------- blockwise


def quantize_blockwise_arrays(
    x: Any,
    elem,
    levels: Optional[np.ndarray],
    elem_max: float,
    code_bits: int,
    block: int,
    scale: str,
    rounding: str,
    seed: int,
    stream: int,
    nonfinite: str = "error",
    logq: Optional[Tuple[int, bool, bool, float]] = None,
    row: int = 0,
):
    """(packed codes, float32 scales, tensor scale g as a float, bases or None) of a float32
    device array; `elem` is the element Format (None for a table codec with `levels`, or for
    a log codec with a per-block base: `logq` = (bits, signed, zero, quantile)).

    nonfinite: "error" raises ValueError naming the first NaN/±inf (in the stored order; one
    synchronization); "ocp" gives such blocks a NaN scale and zero-block codes (no read-back
    but the tensor scale's). row: rows of `row` real elements padded to whole blocks (the
    layout of ``axis=``; 0 = flat), which only the per-block bases need."""
    cp = _loader.cupy()
    a, kind = _to_cupy(x, "x")
    if kind != "float32":
        raise TypeError(f"x: expected float32 values here, got dtype {kind}")
    a = a.reshape(-1)
    n = a.size
    nb = -(-n // block)
    length = packed_len(n, code_bits)
    packed, p = _empty(x, (length,), "uint8")
    scales, s = _empty(x, (nb,), "float32")
    alphas, al = (None, None) if logq is None else _empty(x, (nb,), "float32")
    with cp.cuda.Device(_device_id(x)), _stream(x):
        amax = cp.empty(nb, cp.uint32)
        g = cp.empty(1, cp.float32)
        codes = cp.empty(n, cp.uint8)
    flags = _Flags(x)
    if n == 0:
        return packed, scales, 1.0, alphas
    exmy = elem is not None
    lv = _device_levels(levels if levels is not None else np.zeros(1, np.float32), x)
    fa = (
        _fmt_scalars(elem, "saturate", "error", "clamp")
        if exmy
        else (np.uint32(0), np.uint32(0), np.int32(0), np.uint32(0))
    )
    rule = np.int32(SCALE_RULES[scale])
    with cp.cuda.Device(_device_id(x)), _stream(x):
        _loader.kernel("lf_block_amax")(
            (nb,), (_THREADS,), (a, _u64(n), _u64(block), amax, flags.bad, flags.first)
        )
        _loader.kernel("lf_global_scale")(
            (1,), (_THREADS,), (amax, _u64(nb), rule, np.float32(elem_max), g)
        )
    if logq is None:
        man_bits = np.uint32(elem.man_bits if exmy else 0)
        _launch(
            "lf_block_scales",
            nb,
            (amax, _u64(nb), rule, np.float32(elem_max), np.int32(exmy), man_bits, g, s),
            x,
        )
        _launch(
            "lf_block_codes",
            n,
            (
                a,
                _u64(n),
                _u64(block),
                s,
                g,
                *fa,
                lv,
                np.int32(lv.size),
                np.int32(MODES[rounding]),
                _u64(seed),
                _u64(stream),
                codes,
            ),
            x,
        )
    else:
        bits, signed, zero, quantile = logq
        per_row = -(-row // block) if row else 0
        _launch(
            "lf_block_logq",
            nb,
            (
                a,
                _u64(n),
                _u64(block),
                _u64(row),
                _u64(per_row),
                amax,
                np.int32(nonfinite == "ocp"),
                rule,
                g,
                np.uint32(bits),
                np.int32(bool(signed)),
                np.int32(bool(zero)),
                np.float32(quantile),
                np.int32(MODES[rounding]),
                _u64(seed),
                _u64(stream),
                codes,
                s,
                al,
                flags.bad,
            ),
            x,
        )
    _launch(
        "lf_pack",
        length,
        (codes, _u64(n), np.uint32(code_bits), p, _u64(length), flags.bad, flags.first),
        x,
    )
    if nonfinite == "error" or logq is not None:
        bad, i = flags.read()  # non-finite inputs (bit 0), colliding log levels (bit 2)
        if nonfinite == "error" and bad & 1:
            v = float(a[i].item())
            raise ValueError(f"x: element {i} is {v}; blockwise quantization needs finite values")
        if bad & 4:
            raise ValueError(
                "codec: the levels of a block's base collide (too many bits for "
                "the base float32 can hold apart)"
            )
    return packed, scales, float(g.get()[0]), alphas


def dequantize_blockwise_arrays(
    packed: Any,
    scales_f32: Any,
    levels: Optional[np.ndarray],
    code_bits: int,
    block: int,
    global_scale: float,
    count: int,
    alphas: Any = None,
    logq: Optional[Tuple[int, bool, bool, float]] = None,
):
    """float32 device array of `count` values: levels[code] · (scale · g); for a log codec
    with per-block bases (`logq` = (bits, signed, zero, quantile), `alphas` one per block)
    each block's levels are computed from its base first."""
    cp = _loader.cupy()
    check_same_device(codes=packed, scales=scales_f32, alphas=alphas)
    p, _ = _to_cupy(packed, "codes")
    s, skind = _to_cupy(scales_f32, "scales")
    if skind != "float32":
        raise TypeError(f"scales: expected float32 scales, got dtype {skind}")
    out, o = _empty(packed, (int(count),), "float32")
    flags = _Flags(packed)
    if logq is None:
        assert levels is not None  # only a quantile log codec comes without levels
        lv = _device_levels(levels, packed)
        nlev, per_block = int(lv.size), 0
    else:
        bits, signed, zero, _ = logq
        al, akind = _to_cupy(alphas, "alphas")
        if akind != "float32":
            raise TypeError(f"alphas: expected float32 bases, got dtype {akind}")
        nb = -(-int(count) // block)
        if al.size != nb:
            raise ValueError(f"alphas: expected {nb} bases, got {al.size}")
        nlev = 2 * ((1 << (bits - 1)) - 1) + 1 if signed else 1 << bits
        per_block = 1
        with cp.cuda.Device(_device_id(packed)), _stream(packed):
            lv = cp.empty(nb * nlev, cp.float32)
        _launch(
            "lf_block_logq_levels",
            nb,
            (
                al,
                _u64(nb),
                np.uint32(bits),
                np.int32(bool(signed)),
                np.int32(bool(zero)),
                lv,
                flags.bad,
                flags.first,
            ),
            packed,
        )
        if nb:
            bad, i = flags.read()
            if bad:
                raise ValueError(f"alphas: the levels of block {i}'s base collide")
    _launch(
        "lf_block_dequantize",
        count,
        (
            p,
            _u64(p.size),
            np.uint32(code_bits),
            _u64(count),
            _u64(block),
            s,
            np.float32(global_scale),
            lv,
            np.int32(nlev),
            np.int32(per_block),
            o,
            flags.bad,
            flags.first,
        ),
        packed,
    )
    if count and nlev < (1 << code_bits):
        bad, i = flags.read()
        if bad:
            raise ValueError(f"packed: element {i} has a code outside the codec's {nlev} levels")
    return out
