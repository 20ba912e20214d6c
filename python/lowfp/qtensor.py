"""Blockwise quantized tensors: packed codes + per-block scales + shape + axis + codec.

Blocks run along one axis (``axis=``; the last by default, as OCP MX) and never across rows:
the codes hold the rows (every index but the axis's, in C order) one after another, each row
but the last followed by zero codes up to a whole number of blocks. ``axis=None`` cuts the
C-order flattening into blocks instead (the layout of files written before ``axis=``).

Scales are stored in their own format: float32 for "absmax", one E8M0 byte per block for
the power-of-two rules ("e8m0": OCP MX floor; "e8m0_ceil", "e8m0_even", "e8m0_rceil": torchao's
CEIL, EVEN and RCEIL, the last NVIDIA's hardware rule), one E4M3 byte per block plus one float32
tensor scale for "e4m3" (NVFP4).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, Union

import numpy as np

from . import _core, _validate
from ._common import E8M0_SCALES, SCALE_FORMATS, STOCHASTIC, block_handle
from .codec import (
    ROUNDINGS,
    Dynamic,
    Linear,
    Log,
    _check_choice,
    _float_input,
    _from_f32,
    _is_torch,
    _on_cuda,
    _public_errors,
    _result_dtype,
    _seed_arg,
    _wrap,
    decode,
    encode,
)
from .formats import Format, format

#: The scale rules (the E8M0 exponent arithmetic is in rust/block.rs).
SCALES = ("absmax", *E8M0_SCALES, "e4m3")
#: What a block holding NaN or ±inf becomes (see :func:`quantize_blockwise`).
NONFINITE = ("error", "ocp")

#: Named presets: element codec, block size, scale rule.
PRESETS: Dict[str, tuple] = {
    "mxfp8": ("float8_e4m3fn", 32, "e8m0"),
    "mxfp8_e5m2": ("float8_e5m2", 32, "e8m0"),
    "mxfp6": ("float6_e2m3fn", 32, "e8m0"),
    "mxfp6_e3m2": ("float6_e3m2fn", 32, "e8m0"),
    "mxfp4": ("float4_e2m1fn", 32, "e8m0"),
    "nvfp4": ("float4_e2m1fn", 16, "e4m3"),
}

Codec = Union[str, Format, Linear, Dynamic, Log]


def _codec_spec(codec: Codec) -> dict:
    if isinstance(codec, (Linear, Dynamic, Log)):
        return codec.spec()
    f = format(codec)
    return {"codec": "exmy", "fields": f._fields, "format": f.name}


def _codec_from_spec(spec: dict) -> Codec:
    kind = spec["codec"]
    if kind == "exmy":
        return format(spec["format"])
    if kind == "linear":
        return Linear(spec["bits"], spec["signed"], spec["zero"])
    if kind == "dynamic":
        return Dynamic(spec["bits"], spec["signed"])
    if kind == "log":
        return Log(
            spec["bits"], spec["signed"], spec["zero"], spec["alpha"], spec["quantile"] or None
        )
    raise ValueError(f"codec: unknown codec kind {kind!r}")


@dataclass
class QTensor:
    """A blockwise quantized tensor.

    Attributes:
        codes: uint8 packed codes (layout in docs/packing.md).
        scales: per-block scales: float32 ("absmax") or uint8 scale codes (E8M0 rules, "e4m3").
        alphas: float32 per-block log bases (quantile log codec) or None.
        global_scale: float32 tensor scale ("e4m3"), else 1.0.
        shape: logical shape.
        codec: the element codec.
        block_size: elements per block.
        scale: "absmax", "e8m0", "e8m0_ceil", "e8m0_even", "e8m0_rceil" or "e4m3".
        rounding: the rounding mode the codes were made with.
        axis: the axis the blocks run along (0 <= axis < ndim), or None: blocks over the
            C-order flattening (files written before ``axis=`` load so).
    """

    codes: np.ndarray
    scales: np.ndarray
    alphas: Optional[np.ndarray]
    global_scale: float
    shape: tuple
    codec: Codec
    block_size: int
    scale: str
    rounding: str = "nearest"
    axis: Optional[int] = None
    if TYPE_CHECKING:  # set by quantize_blockwise on the instances it makes; no field at run time
        _from_torch: bool = field(init=False, repr=False, compare=False)

    def _spec(self) -> dict:
        d = _codec_spec(self.codec)
        d.update(block=self.block_size, scale=self.scale, rounding=self.rounding)
        d.setdefault("bits", 0)
        d.setdefault("signed", True)
        d.setdefault("zero", True)
        d.setdefault("alpha", 0.5)
        d.setdefault("quantile", 0.0)
        return d

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def _rows(self) -> Tuple[int, int, int]:
        """(rows, row length, padded row length) of the stored layout (axis None: one row)."""
        if self.axis is None:
            return 1, self.size, self.size
        n = int(self.shape[self.axis])
        rows = self.size // n if n else 0
        return rows, n, -(-n // self.block_size) * self.block_size

    def _count(self) -> int:
        """Elements stored: the rows, each but the last padded to whole blocks."""
        rows, n, padded = self._rows()
        return (rows - 1) * padded + n if rows and n else 0

    @property
    def nbytes(self) -> int:
        """Exact bytes held: packed codes (row padding included) + scales + bases (+4 for the
        e4m3 tensor scale)."""
        n = self.codes.nbytes + self.scales.nbytes
        if self.alphas is not None:
            n += self.alphas.nbytes
        return n + (4 if self.scale == "e4m3" else 0)

    def _scales_f32(self) -> np.ndarray:
        if self.scale == "absmax":
            return np.ascontiguousarray(self.scales, np.float32)
        return decode(self.scales, SCALE_FORMATS[self.scale])

    def dequantize(self, dtype: Any = np.float32):
        """Values of the logical shape.

        Args:
            dtype: float32 (default), float64, float16 or bfloat16, as a NumPy, ml_dtypes or
                torch dtype or a name. Values are computed in float32 (blockwise arithmetic
                is float32) and rounded once to nearest even for the 16-bit dtypes.

        Returns:
            A NumPy array, or a torch tensor when the QTensor was quantized from one (on the
            codes' device for CUDA codes).

        Raises:
            ValueError: dtype is not one of those (bfloat16 NumPy arrays need ml_dtypes).
        """
        kind = _result_dtype(dtype)
        if _on_cuda(self.codes, self.scales):
            from . import _blockwise_cuda as cuda

            if self._count() == self.size and self._moved_shape() == self.shape:
                v = cuda.dequantize(self)
            else:  # rows: decode the stored elements, then drop the padding on the device
                flat = dataclasses.replace(self, shape=(self._count(),), axis=None)
                v = _unpad_rows(cuda.dequantize(flat), self)
            if kind == "float32":
                return v
            if _is_torch(v):
                import torch

                return v.to(getattr(torch, kind))
            if kind == "bfloat16":
                raise ValueError("dtype: CuPy has no bfloat16; use float32")
            return v.astype(kind)
        rows, n, padded = self._rows()
        count = self._count()
        buf = np.empty(rows * padded if count != self.size else count, np.float32)
        alphas = self.alphas if self.alphas is not None else np.empty(0, np.float32)
        _core.blockwise_dequantize(
            self.codes,
            block_handle(self._spec()),
            self._scales_f32(),
            alphas,
            float(np.float32(self.global_scale)),
            buf[:count],
        )
        out = _unpad_rows(buf, self)
        out = _from_f32(out, kind, None)
        return _wrap(out, getattr(self, "_from_torch", False), kind)

    def _moved_shape(self) -> tuple:
        """The shape with the blocks' axis last (the stored order)."""
        if self.axis is None:
            return tuple(self.shape)
        sh = list(self.shape)
        return tuple(sh[: self.axis] + sh[self.axis + 1 :] + [sh[self.axis]])

    # np.asarray(q) would build a 0-d object array (or NumPy would try ufuncs on it); a
    # QTensor is packed codes + scales, so ask for what is meant instead.
    __array_ufunc__ = None

    def __array__(self, dtype: Any = None, copy: Any = None):
        raise TypeError(
            "QTensor: cannot be converted to a NumPy array implicitly (it holds "
            "packed codes and per-block scales); call q.dequantize() for its "
            "values, or read q.codes / q.scales"
        )

    def metadata(self) -> dict:
        """JSON-able description (everything but the arrays)."""
        return {
            "codec": {k: v for k, v in _codec_spec(self.codec).items() if k != "fields"},
            "shape": list(self.shape),
            "block_size": self.block_size,
            "scale": self.scale,
            "global_scale": float(self.global_scale),
            "rounding": self.rounding,
            "axis": self.axis,
        }

    def save(self, path: str, name: str = "tensor") -> None:
        """Write this tensor to a safetensors file (see :func:`save_qtensors`)."""
        save_qtensors({name: self}, path)

    def __repr__(self) -> str:
        return (
            f"QTensor(shape={self.shape}, axis={self.axis}, codec={self.codec!r}, "
            f"block_size={self.block_size}, scale={self.scale!r}, nbytes={self.nbytes})"
        )


def _axis_arg(axis: Any, shape: tuple) -> Optional[int]:
    """The normalized axis (0 <= axis < ndim) or None (flat); a 0-d tensor is flat."""
    if axis is None:
        return None
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"axis: expected an int or None, got {axis!r}")
    nd = len(shape)
    if nd == 0 and axis in (0, -1):
        return None
    if not -nd <= axis < nd:
        raise ValueError(f"axis: expected -{nd} <= axis < {nd} for shape {shape}, got {axis}")
    return int(axis) % nd


def _xp_zeros(like: Any, n: int):
    """float32 zeros of n elements in like's array library, on like's device."""
    if isinstance(like, np.ndarray):
        return np.zeros(n, np.float32)
    if _is_torch(like):
        import torch

        return torch.zeros(n, dtype=torch.float32, device=like.device)
    import cupy as cp

    with cp.cuda.Device(like.device.id):
        return cp.zeros(n, cp.float32)


def _moveaxis(a: Any, src: int, dst: int):
    if _is_torch(a):
        return a.movedim(src, dst)
    if isinstance(a, np.ndarray):
        return np.moveaxis(a, src, dst)
    import cupy as cp

    return cp.moveaxis(a, src, dst)


def _contiguous_copy(a: Any):
    if _is_torch(a):
        return a.contiguous()
    if isinstance(a, np.ndarray):
        return np.ascontiguousarray(a)
    import cupy as cp

    return cp.ascontiguousarray(a)


def _view(a: np.ndarray, shape: tuple) -> np.ndarray:
    """a reshaped without a copy (an error, never a silent copy that writes would miss)."""
    return np.reshape(a, shape, copy=False)


def _copy(dst: Any, src: Any, q: QTensor, to_moved: bool) -> None:
    """dst[...] = src moved: to the stored order (dst of q._moved_shape(), src of q.shape) or
    back (dst of q.shape, src of the moved shape). NumPy arrays copy in strips of 64 along
    dst's last axis: a plain transposing copy of a 4096² float32 matrix takes ~3x as long
    (every read or write misses the cache)."""
    ax = q.axis
    assert ax is not None  # callers move along an axis only
    lead = int(np.prod(q.shape[:ax], dtype=np.int64))
    inner = int(np.prod(q.shape[ax + 1 :], dtype=np.int64))
    n = int(q.shape[ax])
    if not isinstance(dst, np.ndarray) or inner < 128 or n < 64:
        dst[...] = _moveaxis(src, ax, -1) if to_moved else _moveaxis(src, -1, ax)
        return
    if to_moved:  # (lead, inner, n) <- (lead, n, inner)
        d, s = _view(dst, (lead, inner, n)), src.reshape(lead, n, inner).transpose(0, 2, 1)
        for j in range(0, n, 64):  # strips of dst's last axis: 64 whole rows of src each
            d[:, :, j : j + 64] = s[:, :, j : j + 64]
    else:  # (lead, n, inner) <- (lead, inner, n)
        d, s = _view(dst, (lead, n, inner)), src.reshape(lead, inner, n).transpose(0, 2, 1)
        for j in range(0, inner, 64):  # strips of dst's last axis, again
            d[:, :, j : j + 64] = s[:, :, j : j + 64]


def _pad_rows(a: Any, q: QTensor):
    """The stored order of float32 values a (of q's shape): one flat array of q._count()
    elements, the blocks' axis last, each row but the last padded with zeros to whole
    blocks. NumPy, torch or CuPy in, the same out (a view of a where no copy is needed)."""
    rows, n, padded = q._rows()
    count = q._count()
    if q.axis is None:
        return a.reshape(-1)
    if q.axis == len(q.shape) - 1 and (padded == n or rows <= 1):
        return _contiguous_copy(a).reshape(-1)
    m = _moveaxis(a, q.axis, -1)
    if padded == n or rows <= 1:
        if not isinstance(a, np.ndarray):
            return _contiguous_copy(m).reshape(-1)
        buf = np.empty(count, np.float32)
        _copy(_view(buf, q._moved_shape()), a, q, True)
        return buf
    buf = _xp_zeros(a, rows * padded)
    dst = buf.reshape(rows, padded)[:, :n]
    # a view of buf: splitting the leading axis never copies
    dst = dst.view(q._moved_shape()) if _is_torch(dst) else _view(dst, q._moved_shape())
    if isinstance(a, np.ndarray) and q.axis != len(q.shape) - 1:
        _copy(dst, a, q, True)
    else:
        dst[...] = m
    return buf[:count]


def _unpad_rows(v: Any, q: QTensor):
    """Values of q's shape (C-contiguous) from its stored order: v has q._count() elements,
    or rows × padded row length when the padding is there."""
    rows, n, padded = q._rows()
    if q.axis is None:
        return v.reshape(q.shape)
    if padded != n and rows > 1:
        if v.shape[0] < rows * padded:  # the last row's padding is not stored
            full = _xp_zeros(v, rows * padded)
            full[: v.shape[0]] = v
            v = full
        v = v.reshape(rows, padded)[:, :n]
    v = v.reshape(q._moved_shape())
    if q.axis == len(q.shape) - 1:
        return _contiguous_copy(v)
    if isinstance(v, np.ndarray):
        out = np.empty(q.shape, v.dtype)
        _copy(out, v, q, False)
        return out
    return _contiguous_copy(_moveaxis(v, -1, q.axis))


def _nonfinite_error(e: ValueError, q: QTensor) -> ValueError:
    """The core's "element i is v" (i in the stored order) with i as an index of x."""
    m = re.search(r"element (\d+) is (\S+?);", str(e))
    if m is None or q.axis is None or len(q.shape) <= 1:
        return ValueError(f"{e} (nonfinite='ocp' makes such blocks NaN)")
    i, v = int(m.group(1)), m.group(2)
    rows, n, padded = q._rows()
    r, j = divmod(i, padded)
    pos: List[int] = [int(k) for k in np.unravel_index(r, q._moved_shape()[:-1])]
    pos.insert(q.axis, j)
    idx = tuple(pos)
    return ValueError(
        f"x: element {idx} is {v}; blockwise quantization needs finite values "
        "(nonfinite='ocp' makes such blocks NaN)"
    )


@_public_errors(fmt="codec")
def quantize_blockwise(
    x: Any,
    codec: Codec,
    *,
    block_size: Optional[int] = None,
    scale: Optional[str] = None,
    rounding: str = "nearest",
    seed: Optional[int] = None,
    stream: int = 0,
    axis: Optional[int] = -1,
    nonfinite: str = "error",
) -> QTensor:
    """Quantize a tensor blockwise.

    Args:
        x: float array or torch tensor, any shape (float64 is rounded to float32 first:
            blockwise arithmetic is float32; float16/bfloat16 widen exactly).
        codec: a format (name or Format, ≤ 8 bits), a Linear/Dynamic/Log codec, or a preset:
            "mxfp8", "mxfp8_e5m2", "mxfp6", "mxfp6_e3m2", "mxfp4" (block 32, E8M0 scales),
            "nvfp4" (E2M1, block 16, E4M3 scales and a float32 tensor scale).
        block_size: a multiple of 8 in 16..4096 (default: the preset's, else 256).
        scale: "absmax" (float32 amax/max); a power of two stored as E8M0: "e8m0" (OCP MX
            floor rule, 2^(floor(log2 amax) - emax)), "e8m0_ceil" (2^(ceil(log2 amax) - emax),
            never clips), "e8m0_even" (amax rounded to the element's mantissa bits first),
            "e8m0_rceil" (2^ceil(log2(amax / max)), NVIDIA's rule) -- the last three as
            torchao's ScaleCalculationMode CEIL/EVEN/RCEIL and for float elements only; or
            "e4m3" (NVFP4). Default: the preset's, else "absmax".
        rounding: "nearest", "stochastic" or "stochastic16" (any mode for float formats).
        seed, stream: stochastic rounding key; seed=None (default) draws a fresh key from
            lowfp's global generator (see :func:`lowfp.manual_seed`). Each element's random
            bits are keyed by its index in the stored order (below), so they do not depend on
            the number of threads: with ``axis``, the element at row r (the other indices in
            C order) and position j along the axis has index r * padded + j, padded being the
            row length rounded up to whole blocks; with ``axis=None``, its C-order index.
        axis: the axis the blocks run along (default -1: the last axis, as OCP MX; for 1-D
            input the only one). Blocks never cross rows: each row (every other index fixed)
            is cut into blocks on its own, its last block padded with zeros, which change no
            scale and no quantile base (each row quantizes as it would alone); the padding is
            stored (zero codes; not for the last row) and counted by ``nbytes``, never
            returned. ``axis=None`` flattens x in C order and cuts that into blocks (lowfp's
            behaviour before ``axis=``).
        nonfinite: what a block holding NaN or ±inf becomes. "error" (default): the call
            raises, naming the first such element. "ocp": the OCP MX rule -- the block's scale
            is NaN and every element of it decodes to NaN (its codes are zero): the E8M0 code
            0xFF under "e8m0", "e8m0_ceil", "e8m0_even" and "e8m0_rceil"; a float32 NaN under
            "absmax"; the E4M3 NaN code 0x7F under "e4m3", whose tensor scale comes from the
            finite values only. Other blocks are quantized as if the bad one were not there.

    Returns:
        A :class:`QTensor` (dequantizes to x's shape, as a torch tensor for torch input).

    Raises:
        ValueError: block size, scale, axis or nonfinite out of range, non-finite values
            (under nonfinite="error"), unknown codec.
        TypeError: axis is not an int or None.
    """
    if isinstance(codec, str) and codec.lower() in PRESETS:
        fmt_name, b, s = PRESETS[codec.lower()]
        codec = format(fmt_name)
        block_size = b if block_size is None else block_size
        scale = s if scale is None else scale
    block_size = 256 if block_size is None else block_size
    scale = "absmax" if scale is None else scale
    _check_choice("scale", scale, SCALES)
    _check_choice("rounding", rounding, ROUNDINGS)
    _check_choice("nonfinite", nonfinite, NONFINITE)
    if not isinstance(block_size, (int, np.integer)) or isinstance(block_size, bool):
        raise ValueError(f"block_size: expected an int, got {block_size!r}")
    shape = tuple(int(d) for d in x.shape) if hasattr(x, "shape") else np.shape(x)
    ax = _axis_arg(axis, shape)
    seed = _seed_arg(seed, rounding in STOCHASTIC)
    if _on_cuda(x):
        from . import _blockwise_cuda as cuda

        probe = QTensor(
            np.empty(0, np.uint8),
            np.empty(0, np.float32),
            None,
            1.0,
            shape,
            codec,
            int(block_size),
            scale,
            rounding,
            ax,
        )
        _core.blockwise_layout(probe._spec(), 0)  # validates codec, block size, scale, rounding
        if probe._count() == probe.size and probe._moved_shape() == shape:
            xs = x
        else:  # rows padded on the device, then the stored order quantized flat
            xs = _pad_rows(x.float() if _is_torch(x) else x.astype("float32"), probe)
        q = cuda.quantize_blockwise(
            xs, codec, int(block_size), scale, rounding, seed, stream, nonfinite, probe
        )
        q.shape, q.axis = shape, ax
        return q
    a, kind, _ = _float_input(x)
    if kind in ("float16", "bfloat16"):
        a = decode(a.reshape(-1), kind).reshape(shape)  # exact in float32
    q = QTensor(
        np.empty(0, np.uint8),
        np.empty(0, np.float32),
        None,
        1.0,
        shape,
        codec,
        int(block_size),
        scale,
        rounding,
        ax,
    )
    if ax is None:
        flat = np.ascontiguousarray(a.reshape(-1), np.float32)
    else:
        flat = _pad_rows(a if a.dtype == np.float32 else a.astype(np.float32), q)
        flat = np.ascontiguousarray(flat, np.float32)
    spec = block_handle(q._spec())
    packed_len, nblocks, nalphas, _ = _core.blockwise_layout(spec, flat.size)
    packed = np.empty(packed_len, np.uint8)
    scales = np.empty(nblocks, np.float32)
    alphas = np.empty(nalphas, np.float32)
    row = q._rows()[1] if ax is not None else 0
    try:
        g = _core.blockwise_quantize(
            flat, spec, packed, scales, alphas, int(seed), int(stream), row, nonfinite
        )
    except ValueError as e:
        if "needs finite values" not in str(e):
            raise
        raise _nonfinite_error(e, q) from None
    q.codes, q.global_scale = packed, float(g)
    q.scales = scales if scale == "absmax" else encode(scales, SCALE_FORMATS[scale])
    q.alphas = alphas if nalphas else None
    q._from_torch = _is_torch(x)  # dequantize() answers in the input's kind
    return q


# ---------------------------------------------------------------- safetensors


def save_qtensors(
    tensors: Dict[str, Any], path: str, metadata: Optional[Dict[str, str]] = None
) -> None:
    """Save QTensors, and plain arrays beside them, to a safetensors file.

    Each QTensor ``name`` is stored as ``name.codes`` (uint8), ``name.scales`` and, when
    present, ``name.alphas``; the file metadata ``lowfp`` holds a JSON dict
    name → :meth:`QTensor.metadata`. A plain NumPy array (any safetensors dtype, bfloat16
    through ml_dtypes) is stored under its own name. No pickles: any safetensors reader can
    load the arrays.

    Args:
        tensors: name → QTensor or NumPy array.
        path: the file to write.
        metadata: extra str → str entries for the file header (``lowfp`` and ``format`` are
            lowfp's own).

    Raises:
        ValueError: a plain array's name collides with a QTensor's stored arrays, or its dtype
            has no safetensors name.
        TypeError: a value is neither a QTensor nor a NumPy array.
    """
    arrays: Dict[str, np.ndarray] = {}
    meta = {}
    plain = {}
    for name, q in tensors.items():
        if isinstance(q, QTensor):
            arrays[f"{name}.codes"] = q.codes
            arrays[f"{name}.scales"] = q.scales
            if q.alphas is not None:
                arrays[f"{name}.alphas"] = q.alphas
            meta[name] = q.metadata()
        elif isinstance(q, np.ndarray):
            plain[name] = q
        else:
            raise TypeError(
                f"tensors[{name!r}]: expected a QTensor or a NumPy array, got {type(q).__name__}"
            )
    for name in plain:
        if name in arrays:
            raise ValueError(f"tensors[{name!r}]: the name is taken by a QTensor's stored array")
    arrays.update(plain)
    header = dict(metadata or {})
    header.update({"lowfp": json.dumps(meta), "format": "lowfp.qtensor.v1"})
    write_arrays(arrays, path, header)


#: safetensors dtype name ↔ NumPy dtype name (bfloat16 is ml_dtypes')
_ST_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U64": "uint64",
    "U32": "uint32",
    "U16": "uint16",
    "U8": "uint8",
    "BOOL": "bool",
}


def _st_dtype(name: str, a: np.ndarray) -> str:
    for st, np_name in _ST_DTYPES.items():
        if a.dtype.name == np_name:
            return st
    raise ValueError(
        f"tensors[{name!r}]: dtype {a.dtype} has no safetensors name; expected "
        f"one of {', '.join(_ST_DTYPES.values())}"
    )


def _np_dtype(st: str) -> Any:
    name = _ST_DTYPES.get(st)
    if name is None:
        raise ValueError(
            f"safetensors dtype {st} is not supported; expected one of {', '.join(_ST_DTYPES)}"
        )
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.bfloat16
    return np.dtype(name)


def write_arrays(arrays: Dict[str, np.ndarray], path: str, metadata: Dict[str, str]) -> None:
    """Write a safetensors file: 8-byte little-endian header length, the JSON header (dtype,
    shape, data_offsets per array; ``__metadata__``) padded with spaces to 8 bytes, the data.
    Written here rather than by ``safetensors.numpy`` because that has no bfloat16 and its
    low-level API changed between versions."""
    header: Dict[str, Any] = {"__metadata__": metadata}
    datas, off = [], 0
    for k, a in arrays.items():
        a = np.ascontiguousarray(a)
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        header[k] = {
            "dtype": _st_dtype(k, a),
            "shape": list(a.shape),
            "data_offsets": [off, off + a.nbytes],
        }
        datas.append(a)
        off += a.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as fh:
        fh.write(len(h).to_bytes(8, "little"))
        fh.write(h)
        for a in datas:
            fh.write(a.tobytes())


def read_arrays(path: str, skip: Any = ()) -> Dict[str, np.ndarray]:
    """Every array of a safetensors file as NumPy (bfloat16 included), but those in ``skip``.

    Reads the layout itself (8-byte header length, JSON header, data) because
    ``safetensors.numpy`` has no bfloat16. The file's header must already have been checked
    (``safe_open`` does).
    """
    out = {}
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
        for k, v in header.items():
            if k == "__metadata__" or k in skip:
                continue
            a, b = v["data_offsets"]
            fh.seek(8 + n + a)
            buf = bytearray(fh.read(b - a))  # writable, so torch.from_numpy takes it
            out[k] = np.frombuffer(buf, _np_dtype(v["dtype"])).reshape(v["shape"])
    return out


def load_qtensors(path: str) -> Dict[str, Any]:
    """Load QTensors written by :func:`save_qtensors`, and the plain arrays beside them.

    Returns:
        name → QTensor, or NumPy array for a plain array.

    Every entry is checked before it is returned (``lowfp._validate.qtensor``): the metadata
    schema, the element count against the bytes held, the arrays' dtypes and lengths, the
    scales and that every code decodes.

    Raises:
        ValueError: the file is not a safetensors file, has no lowfp metadata, or an entry is
            inconsistent (the message names the file, the tensor and the field).
        TypeError: a metadata field or array has the wrong type.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="numpy") as f:
            md = f.metadata() or {}
            if "lowfp" not in md:
                raise ValueError(f"path: {path} has no lowfp metadata (not written by lowfp)")
            meta = _file_meta(path, md)
            keys = set(f.keys())
            arrays = {}
            for name in meta:
                for part in ("codes", "scales", "alphas"):
                    k = f"{name}.{part}"
                    if k in keys:
                        arrays[k] = f.get_tensor(k)
                    elif part != "alphas":
                        raise ValueError(
                            f"{path}: tensor {name!r}: {part}: expected an array "
                            f"{k!r} in the file, found none"
                        )
    except SafetensorError as e:
        raise ValueError(f"path: {path} is not a valid safetensors file ({e})") from None
    out: Dict[str, Any] = {}
    for name, m in meta.items():
        out[name] = qtensor_from_metadata(
            m,
            arrays[f"{name}.codes"],
            arrays[f"{name}.scales"],
            arrays.get(f"{name}.alphas"),
            f"{path}: tensor {name!r}",
        )
    owned = {f"{name}.{part}" for name in meta for part in ("codes", "scales", "alphas")}
    out.update(read_arrays(path, skip=owned))
    return out


def qtensor_from_metadata(
    m: Any, codes: Any, scales: Any, alphas: Any, where: str = "metadata"
) -> QTensor:
    """The QTensor that :meth:`QTensor.metadata` ``m`` and its stored arrays describe, checked
    first by ``lowfp._validate.qtensor`` (``where`` names the source in its errors)."""
    return QTensor(**_validate.qtensor(m, codes, scales, alphas, where))


def _file_meta(path: str, md: dict) -> dict:
    """The file's lowfp metadata (name -> QTensor.metadata()), its version checked."""
    version = md.get("format", _validate.QT_FORMATS[0])
    if version not in _validate.QT_FORMATS:
        raise _validate.fail(path, "format", f"one of {_validate.QT_FORMATS}", version)
    try:
        meta = json.loads(md["lowfp"])
    except ValueError as e:
        raise ValueError(
            f"{path}: lowfp metadata: expected JSON, got {md['lowfp'][:80]!r} ({e})"
        ) from None
    if not isinstance(meta, dict):
        raise TypeError(
            f"{path}: lowfp metadata: expected a JSON object (tensor name -> "
            f"QTensor metadata), got {type(meta).__name__}"
        )
    return meta
