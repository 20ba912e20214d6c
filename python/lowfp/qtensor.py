"""Blockwise quantized tensors: packed codes + per-block scales + shape + codec.

Scales are stored in their own format: float32 for "absmax", one E8M0 byte per block for
the power-of-two rules ("e8m0": OCP MX floor; "e8m0_ceil", "e8m0_even", "e8m0_rceil": torchao's
CEIL, EVEN and RCEIL, the last NVIDIA's hardware rule), one E4M3 byte per block plus one float32
tensor scale for "e4m3" (NVFP4).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, Optional, Union

import numpy as np

from . import _core
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

#: The power-of-two (E8M0) scale rules; the exponent arithmetic is in rust/block.rs.
E8M0_SCALES = ("e8m0", "e8m0_ceil", "e8m0_even", "e8m0_rceil")
SCALES = ("absmax", *E8M0_SCALES, "e4m3")

#: Named presets: element codec, block size, scale rule.
PRESETS: Dict[str, tuple] = {
    "mxfp8": ("float8_e4m3fn", 32, "e8m0"),
    "mxfp8_e5m2": ("float8_e5m2", 32, "e8m0"),
    "mxfp6": ("float6_e2m3fn", 32, "e8m0"),
    "mxfp6_e3m2": ("float6_e3m2fn", 32, "e8m0"),
    "mxfp4": ("float4_e2m1fn", 32, "e8m0"),
    "nvfp4": ("float4_e2m1fn", 16, "e4m3"),
}

_SCALE_FMT = {**{s: "float8_e8m0fnu" for s in E8M0_SCALES}, "e4m3": "float8_e4m3fn"}

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
        return Log(spec["bits"], spec["signed"], spec["zero"], spec["alpha"],
                   spec["quantile"] or None)
    raise ValueError(f"codec: unknown codec kind {kind!r}")


@dataclass
class QTensor:
    """A blockwise quantized tensor.

    Attributes:
        codes: uint8 packed codes (layout in the README).
        scales: per-block scales: float32 ("absmax") or uint8 scale codes (E8M0 rules, "e4m3").
        alphas: float32 per-block log bases (quantile log codec) or None.
        global_scale: float32 tensor scale ("e4m3"), else 1.0.
        shape: logical shape.
        codec: the element codec.
        block_size: elements per block.
        scale: "absmax", "e8m0", "e8m0_ceil", "e8m0_even", "e8m0_rceil" or "e4m3".
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

    @property
    def nbytes(self) -> int:
        """Exact bytes held: packed codes + scales + bases (+4 for the e4m3 tensor scale)."""
        n = self.codes.nbytes + self.scales.nbytes
        if self.alphas is not None:
            n += self.alphas.nbytes
        return n + (4 if self.scale == "e4m3" else 0)

    def _scales_f32(self) -> np.ndarray:
        if self.scale == "absmax":
            return np.ascontiguousarray(self.scales, np.float32)
        return decode(self.scales, _SCALE_FMT[self.scale])

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
            from . import cuda

            v = cuda.dequantize(self)
            if kind == "float32":
                return v
            if _is_torch(v):
                import torch

                return v.to(getattr(torch, kind))
            if kind == "bfloat16":
                raise ValueError("dtype: CuPy has no bfloat16; use float32")
            return v.astype(kind)
        out = np.empty(self.size, np.float32)
        alphas = self.alphas if self.alphas is not None else np.empty(0, np.float32)
        _core.blockwise_dequantize(self.codes, self._spec(), self._scales_f32(), alphas,
                                   np.float32(self.global_scale), out)
        out = _from_f32(out.reshape(self.shape), kind, None)
        return _wrap(out, getattr(self, "_from_torch", False), kind)

    # np.asarray(q) would build a 0-d object array (or NumPy would try ufuncs on it); a
    # QTensor is packed codes + scales, so ask for what is meant instead.
    __array_ufunc__ = None

    def __array__(self, dtype: Any = None, copy: Any = None):
        raise TypeError("QTensor: cannot be converted to a NumPy array implicitly (it holds "
                        "packed codes and per-block scales); call q.dequantize() for its "
                        "values, or read q.codes / q.scales")

    def metadata(self) -> dict:
        """JSON-able description (everything but the arrays)."""
        return {"codec": {k: v for k, v in _codec_spec(self.codec).items() if k != "fields"},
                "shape": list(self.shape), "block_size": self.block_size, "scale": self.scale,
                "global_scale": float(self.global_scale), "rounding": self.rounding}

    def save(self, path: str, name: str = "tensor") -> None:
        """Write this tensor to a safetensors file (see :func:`save_qtensors`)."""
        save_qtensors({name: self}, path)

    def __repr__(self) -> str:
        return (f"QTensor(shape={self.shape}, codec={self.codec!r}, block_size={self.block_size}, "
                f"scale={self.scale!r}, nbytes={self.nbytes})")


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
) -> QTensor:
    """Quantize a tensor blockwise.

    Args:
        x: float array or CPU torch tensor (any shape, flattened in C order; float64 is
            rounded to float32 first: blockwise arithmetic is float32).
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
        rounding: "nearest" or "stochastic" (any mode for float formats).
        seed, stream: stochastic rounding key; seed=None (default) draws a fresh key from
            lowfp's global generator (see :func:`lowfp.manual_seed`).

    Returns:
        A :class:`QTensor`.

    Raises:
        ValueError: block size or scale out of range, non-finite values, unknown codec.
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
    if not isinstance(block_size, (int, np.integer)) or isinstance(block_size, bool):
        raise ValueError(f"block_size: expected an int, got {block_size!r}")
    seed = _seed_arg(seed, rounding == "stochastic")
    if _on_cuda(x):
        from . import _blockwise_cuda as cuda

        probe = QTensor(np.empty(0, np.uint8), np.empty(0, np.float32), None, 1.0, (), codec,
                        int(block_size), scale, rounding)
        _core.blockwise_layout(probe._spec(), 0)  # validates codec, block size, scale, rounding
        return cuda.quantize_blockwise(x, codec, int(block_size), scale, rounding, seed, stream)
    a, kind, _ = _float_input(x)
    shape = tuple(a.shape)
    if kind in ("float16", "bfloat16"):
        a = decode(a.reshape(-1), kind)  # exact in float32
    flat = np.ascontiguousarray(a.reshape(-1), np.float32)
    q = QTensor(np.empty(0, np.uint8), np.empty(0, np.float32), None, 1.0, shape, codec,
                int(block_size), scale, rounding)
    spec = q._spec()
    packed_len, nblocks, nalphas, _ = _core.blockwise_layout(spec, flat.size)
    packed = np.empty(packed_len, np.uint8)
    scales = np.empty(nblocks, np.float32)
    alphas = np.empty(nalphas, np.float32)
    g = _core.blockwise_quantize(flat, spec, packed, scales, alphas, int(seed), int(stream))
    q.codes, q.global_scale = packed, float(g)
    q.scales = scales if scale == "absmax" else encode(scales, _SCALE_FMT[scale])
    q.alphas = alphas if nalphas else None
    q._from_torch = _is_torch(x)  # dequantize() answers in the input's kind
    return q


# ---------------------------------------------------------------- safetensors


def save_qtensors(tensors: Dict[str, QTensor], path: str) -> None:
    """Save QTensors to a safetensors file.

    Each tensor ``name`` is stored as ``name.codes`` (uint8), ``name.scales`` and, when
    present, ``name.alphas``; the file metadata ``lowfp`` holds a JSON dict
    name → :meth:`QTensor.metadata`. No pickles: any safetensors reader can load the arrays.
    """
    from safetensors.numpy import save_file

    arrays, meta = {}, {}
    for name, q in tensors.items():
        arrays[f"{name}.codes"] = q.codes
        arrays[f"{name}.scales"] = q.scales
        if q.alphas is not None:
            arrays[f"{name}.alphas"] = q.alphas
        meta[name] = q.metadata()
    save_file(arrays, path, metadata={"lowfp": json.dumps(meta), "format": "lowfp.qtensor.v1"})


def load_qtensors(path: str) -> Dict[str, QTensor]:
    """Load QTensors written by :func:`save_qtensors`.

    Raises:
        ValueError: the file has no lowfp metadata.
    """
    from safetensors import safe_open

    with safe_open(path, framework="numpy") as f:
        md = f.metadata() or {}
        if "lowfp" not in md:
            raise ValueError(f"path: {path} has no lowfp metadata (not written by lowfp)")
        meta = json.loads(md["lowfp"])
        out = {}
        for name, m in meta.items():
            keys = set(f.keys())
            out[name] = QTensor(
                codes=f.get_tensor(f"{name}.codes"),
                scales=f.get_tensor(f"{name}.scales"),
                alphas=f.get_tensor(f"{name}.alphas") if f"{name}.alphas" in keys else None,
                global_scale=float(m["global_scale"]),
                shape=tuple(m["shape"]),
                codec=_codec_from_spec(m["codec"]),
                block_size=int(m["block_size"]),
                scale=m["scale"],
                rounding=m.get("rounding", "nearest"),
            )
    return out
