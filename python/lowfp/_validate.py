"""Validation of what lowfp reads from outside: QTensor files and optimizer state dicts.

One validator per input kind, each the only place its schema is checked:
- :func:`codec` -- a codec description (``{"codec": "exmy" | "linear" | "dynamic" | "log",
  ...}``), as QTensor metadata and optimizer checkpoints hold it;
- :func:`qtensor` -- one QTensor entry of a safetensors file: its metadata and its arrays;
- :func:`param_groups`, :func:`step` and :func:`state_values` -- an optimizer state dict's
  hyperparameters, step counters and state tensors (``lowfp.optim.base`` calls them before
  anything is loaded).

Every error is a ValueError (a TypeError for a value of the wrong type) that names where
(the file and tensor, or the parameter and state), the field, what was expected and what
was found. Sizes are computed with Python integers (no wrap-around) and capped by the bytes
the arrays hold before any of them reaches the Rust core: a file cannot declare more
elements than its codes can store.

Design notes
- Files and checkpoints are data, never trusted: a value of the right type but an
  impossible meaning (a negative scale, a NaN step, a block base outside (0, 1), a code
  without a level) is an error here rather than a NaN, a panic or a wrong answer later.
- The stored codes are decoded once on load (in chunks of whole blocks, so the memory is
  bounded): this checks every code against its codec's levels and every per-block base, and
  for optimizer states that every value is finite (and non-negative for second moments).
  Rejected: checking only lengths (a code without a level would fail mid-step, after
  other parameters were already updated; a NaN code would silently spread into the
  weights).
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import numpy as np

from . import _core
from ._common import E8M0_SCALES, ROUNDINGS, SCALE_FORMATS

#: The QTensor scale rules (qtensor.SCALES, listed here to avoid an import cycle).
QT_SCALES = ("absmax", *E8M0_SCALES, "e4m3")
#: The versions of the QTensor file layout this lowfp reads (the ``format`` metadata entry).
QT_FORMATS = ("lowfp.qtensor.v1",)
#: The largest number of dimensions a QTensor file may declare (NumPy's own limit).
MAX_NDIM = 64
#: The largest finite float32.
F32_MAX = float(np.finfo(np.float32).max)
#: Its square root: the largest magnitude of a signed optimizer state (see _check_values).
SQRT_F32_MAX = math.sqrt(F32_MAX)
#: Elements decoded per chunk when a loaded state is checked (bounded memory).
_CHUNK = 1 << 20


def _show(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


def fail(where: str, field: str, expected: str, got: Any) -> ValueError:
    """The ValueError of a bad field: "<where>: <field>: expected ..., got ..."."""
    return ValueError(f"{where}: {field}: expected {expected}, got {_show(got)}")


def missing(where: str, field: str, expected: str) -> ValueError:
    """The ValueError of a missing field."""
    return ValueError(f"{where}: {field}: expected {expected}, found none")


def found(where: str, field: str, expected: str, what: str) -> ValueError:
    """The ValueError of a bad field, what was found described in words."""
    return ValueError(f"{where}: {field}: expected {expected}, found {what}")


def _at(a: np.ndarray, i: int, unit: str = "index") -> str:
    v = a[i]
    return f"{float(v) if a.dtype.kind == 'f' else int(v)!r} at {unit} {i}"


def _type_error(where: str, field: str, expected: str, got: Any) -> TypeError:
    return TypeError(
        f"{where}: {field}: expected {expected}, got {type(got).__name__} {_show(got)}"
    )


def is_int(v: Any) -> bool:
    """An integer (Python or NumPy), not a bool."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def integer(where: str, field: str, v: Any, lo: int, hi: int) -> int:
    """An int with lo <= v <= hi."""
    if not is_int(v):
        raise _type_error(where, field, f"an int in [{lo}, {hi}]", v)
    if not lo <= v <= hi:
        raise fail(where, field, f"an int in [{lo}, {hi}]", v)
    return int(v)


def boolean(where: str, field: str, v: Any) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise _type_error(where, field, "true or false", v)
    return bool(v)


def real(where: str, field: str, v: Any) -> float:
    """A finite int or float (not a bool)."""
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise _type_error(where, field, "a finite number", v)
    f = float(v)
    if not math.isfinite(f):
        raise fail(where, field, "a finite number", v)
    return f


def choice(where: str, field: str, v: Any, allowed: tuple) -> str:
    if not isinstance(v, str):
        raise _type_error(where, field, f"one of {allowed}", v)
    if v not in allowed:
        raise fail(where, field, f"one of {allowed}", v)
    return v


def _wrap(where: str, field: str, e: Exception) -> ValueError:
    """A constructor's ValueError ("arg: msg") under where and field."""
    return ValueError(f"{where}: {field}: {e}")


# ---------------------------------------------------------------- codec descriptions

#: Per codec kind: (required keys, optional keys) of its description.
_CODEC_KEYS = {
    "exmy": ({"format"}, {"fields"}),  # "fields" (older descriptions) is not read
    "linear": ({"bits", "signed", "zero"}, set()),
    "dynamic": ({"bits", "signed"}, set()),
    "log": ({"bits", "signed", "zero"}, {"alpha", "quantile"}),
}


def codec(spec: Any, where: str, field: str = "codec"):
    """The codec a description names (a Format, or a Linear/Dynamic/Log codec), usable for
    blockwise storage (at most 8 bits, with a zero).

    Raises:
        TypeError: the description or one of its values has the wrong type.
        ValueError: unknown kind, a value out of range, missing or unknown keys.
    """
    from .codec import Dynamic, Linear, Log
    from .formats import format as _format

    if not isinstance(spec, dict):
        raise _type_error(where, field, "a dict with a 'codec' kind", spec)
    kind = choice(where, f"{field}.codec", spec.get("codec"), tuple(_CODEC_KEYS))
    required, optional = _CODEC_KEYS[kind]
    keys = set(spec) - {"codec"}
    if not required <= keys or not keys <= required | optional:
        raise fail(
            where,
            field,
            f"the keys {sorted(required)} (and optionally {sorted(optional)}) for a {kind!r} codec",
            sorted(map(str, keys)),
        )
    f = f"{field}."
    try:
        if kind == "exmy":
            name = spec["format"]
            if not isinstance(name, str):
                raise _type_error(where, f + "format", "a format name", name)
            fm = _format(name)
            if fm.bits > 8 or not fm.has_zero:
                raise fail(where, f + "format", "a format of at most 8 bits with a zero", name)
            return fm
        bits = integer(where, f + "bits", spec["bits"], 1, 8)
        signed = boolean(where, f + "signed", spec["signed"])
        if kind == "dynamic":
            return Dynamic(bits, signed)
        zero = boolean(where, f + "zero", spec["zero"])
        if kind == "linear":
            return Linear(bits, signed, zero)
        alpha = real(where, f + "alpha", spec.get("alpha", 0.5))
        if not 0.0 < alpha < 1.0:
            raise fail(where, f + "alpha", "0 < alpha < 1", alpha)
        q = spec.get("quantile", 0.0)
        q = 0.0 if q is None else real(where, f + "quantile", q)
        if not 0.0 <= q < 1.0:
            raise fail(where, f + "quantile", "0 <= quantile < 1 (0: a fixed base)", q)
        return Log(bits, signed, zero, alpha, q or None)
    except ValueError as e:
        if str(e).startswith(where):
            raise
        raise _wrap(where, field, e) from None


# ---------------------------------------------------------------- QTensor files


def _array(where: str, field: str, a: Any, dtype: Any, n: int) -> np.ndarray:
    """A 1-D array of dtype and exactly n elements."""
    if not isinstance(a, np.ndarray):
        raise _type_error(where, field, "an array", a)
    if a.dtype != dtype:
        raise TypeError(f"{where}: {field}: expected dtype {np.dtype(dtype)}, got {a.dtype}")
    if a.ndim != 1 or a.size != n:
        raise found(where, field, f"{n} elements in one dimension", f"shape {a.shape}")
    return a


def qtensor(m: Any, codes: Any, scales: Any, alphas: Any, where: str) -> Dict[str, Any]:
    """Check one QTensor entry of a file (its metadata dict ``m`` and its arrays) and return
    the QTensor's constructor arguments.

    Checks the schema (codec, shape, block size, scale rule, global scale, axis, rounding),
    the element count against the bytes the codes hold (before any size reaches the core),
    the arrays' dtypes and lengths, the scales (non-negative or NaN; NaN marks an OCP
    non-finite block), the per-block bases, and that every code decodes.

    Raises:
        TypeError: a field or array of the wrong type.
        ValueError: any other inconsistency, naming ``where`` and the field.
    """
    if not isinstance(m, dict):
        raise _type_error(where, "metadata", "a dict (QTensor.metadata())", m)
    for k in ("codec", "shape", "block_size", "scale"):
        if k not in m:
            raise missing(where, k, "a value (QTensor.metadata() has one)")
    c = codec(m["codec"], where)
    shape = m["shape"]
    if not isinstance(shape, (list, tuple)):
        raise _type_error(where, "shape", "a list of ints", shape)
    if len(shape) > MAX_NDIM:
        raise fail(where, "shape", f"at most {MAX_NDIM} dimensions", len(shape))
    shape = tuple(integer(where, f"shape[{i}]", d, 0, 2**63 - 1) for i, d in enumerate(shape))
    if math.prod(max(d, 1) for d in shape) > 2**63 - 1:  # NumPy's limit, even for 0 elements
        raise fail(where, "shape", "a product of the non-zero sizes below 2**63", list(shape))
    block = integer(where, "block_size", m["block_size"], 16, 4096)
    if block % 8:
        raise fail(where, "block_size", "a multiple of 8 in 16..4096", block)
    scale = choice(where, "scale", m["scale"], QT_SCALES)
    rounding = choice(where, "rounding", m.get("rounding", "nearest"), ROUNDINGS)
    g = real(where, "global_scale", m.get("global_scale", 1.0))
    if scale == "e4m3" and not g > 0.0:
        raise fail(where, "global_scale", "a finite number > 0 (the e4m3 tensor scale)", g)
    if scale != "e4m3" and g != 1.0:
        raise fail(where, "global_scale", f"1.0 (a {scale!r} QTensor has no tensor scale)", g)
    axis = m.get("axis")
    if axis is not None:
        if len(shape) == 0:
            raise fail(where, "axis", "None for a 0-d shape", axis)
        axis = integer(where, "axis", axis, 0, len(shape) - 1)
    extra = set(m) - {"codec", "shape", "block_size", "scale", "rounding", "global_scale", "axis"}
    if extra:
        raise fail(where, "metadata", "only QTensor.metadata() keys", sorted(extra))
    # the stored element count (rows padded to whole blocks), in Python integers
    size = math.prod(shape)
    if axis is None or size == 0:
        count = size
    else:
        n = shape[axis]
        rows = size // n
        count = (rows - 1) * (-(-n // block) * block) + n
    spec: Dict[str, Any] = {"bits": 0, "signed": True, "zero": True, "alpha": 0.5, "quantile": 0.0}
    spec.update(_codec_spec(c))
    spec.update(block=block, scale=scale, rounding=rounding)
    try:
        handle = _core.BlockSpec(spec)
    except ValueError as e:  # a codec/scale/rounding combination blockwise cannot hold
        raise _wrap(where, "metadata", e) from None
    bits = _core.blockwise_layout(handle, 0)[3]
    if not isinstance(codes, np.ndarray):
        raise _type_error(where, "codes", "a uint8 array", codes)
    # the cap: a file declares at most as many elements as its codes can hold (a few more
    # get the exact length error below)
    cap = codes.size * 8 // bits
    if count > cap + 8:
        raise found(
            where,
            "shape",
            f"at most {cap} elements (what {codes.size} bytes of {bits}-bit codes hold)",
            f"{list(shape)} ({count} stored elements)",
        )
    packed_len, nblocks, nalphas, _ = _core.blockwise_layout(handle, count)
    _array(where, "codes", codes, np.uint8, packed_len)
    sdt = np.float32 if scale == "absmax" else np.uint8
    if not isinstance(scales, np.ndarray):
        raise _type_error(where, "scales", "an array", scales)
    _array(where, "scales", scales, sdt, nblocks)
    if nalphas:
        if alphas is None:
            raise missing(where, "alphas", f"{nalphas} per-block bases (a quantile log codec)")
        _array(where, "alphas", alphas, np.float32, nalphas)
    elif alphas is not None:
        raise found(
            where,
            "alphas",
            "none (only a quantile log codec stores bases)",
            f"{np.asarray(alphas).size} values",
        )
    if scale == "absmax":
        bad = ~(np.isnan(scales) | (np.isfinite(scales) & (scales >= 0)))
        what = "finite scales >= 0 (or NaN: a non-finite block)"
    elif scale == "e4m3":  # no sign bit; 0x7f is the NaN of a non-finite block
        bad = scales >= 0x80
        what = "E4M3 scale codes without a sign (< 0x80)"
    else:
        bad = np.zeros(0, bool)
    if bad.any():
        i = int(np.argmax(bad))
        raise found(where, "scales", what, _at(scales, i))
    if nalphas:
        _bases(where, "alphas", alphas)
    s32 = scales if scale == "absmax" else _decode_scales(scales, SCALE_FORMATS[scale])
    _decode_check(
        where,
        "codes",
        handle,
        block,
        codes,
        s32,
        alphas if nalphas else np.empty(0, np.float32),
        count,
        np.float32(g),
    )
    return dict(
        codes=codes,
        scales=scales,
        alphas=alphas if nalphas else None,
        global_scale=g,
        shape=shape,
        codec=c,
        block_size=block,
        scale=scale,
        rounding=rounding,
        axis=axis,
    )


def _codec_spec(c: Any) -> dict:
    if hasattr(c, "spec"):
        return c.spec()
    return {"codec": "exmy", "fields": c._fields, "format": c.name}


def _decode_scales(codes: np.ndarray, fmt: str) -> np.ndarray:
    from .codec import decode

    return decode(codes, fmt)


def _bases(where: str, field: str, a: np.ndarray) -> None:
    """Per-block log bases: finite, 0 < alpha < 1."""
    bad = ~(np.isfinite(a) & (a > 0) & (a < 1))
    if bad.any():
        i = int(np.argmax(bad))
        raise found(where, field, "per-block bases with 0 < alpha < 1", _at(a, i, "block"))


def _check_values(where: str, field: str, a: np.ndarray, start: int, nonnegative: bool) -> None:
    """Optimizer state values: finite, and >= 0 (``nonnegative``, second moments) or with
    |x| <= sqrt(float32 max) (first moments, momenta: a value whose square overflows
    float32 cannot come from gradients whose squares were finite, and it makes the step's
    update overflow)."""
    bad = ~np.isfinite(a) | ((a < 0) if nonnegative else (np.abs(a) > SQRT_F32_MAX))
    if bad.any():
        i = int(np.argmax(bad))
        want = (
            "finite values >= 0"
            if nonnegative
            else f"finite values with |x| <= {SQRT_F32_MAX:.4g} (whose squares are finite)"
        )
        raise found(where, field, want, f"{float(a[i])!r} at element {start + i}")


def _decode_check(
    where: str,
    field: str,
    handle: Any,
    block: int,
    codes: np.ndarray,
    scales: np.ndarray,
    alphas: np.ndarray,
    count: int,
    g: Any,
    *,
    state: bool = False,
    nonnegative: bool = False,
) -> None:
    """Decode the stored elements in chunks of whole blocks: every code has a level, every
    base gives a table; with ``state`` the values pass :func:`_check_values`.
    ``handle``: the blocks' ``_core.BlockSpec``, of ``block`` elements per block."""
    bits = _core.blockwise_layout(handle, 0)[3]
    step = max(block, _CHUNK // block * block)  # whole blocks: packed bytes are whole too
    buf = np.empty(min(step, count), np.float32)
    for start in range(0, count, step):
        n = min(step, count - start)
        b0, b1 = start // block, -(-(start + n) // block)
        out = buf[:n]
        try:
            _core.blockwise_dequantize(
                codes[start * bits // 8 : start * bits // 8 + _core.packed_len(n, bits)],
                handle,
                np.ascontiguousarray(scales[b0:b1], np.float32),
                alphas[b0:b1] if alphas.size else alphas,
                g,
                out,
            )
        except ValueError as e:
            raise _wrap(where, field, e) from None
        if state:
            _check_values(where, field, out, start, nonnegative)


# ---------------------------------------------------------------- optimizer state dicts

#: Hyperparameters checked in saved param groups: (low, high, low open, high open).
_HPARAMS = {
    "lr": (0.0, math.inf, False, True),
    "eps": (0.0, math.inf, False, True),
    "weight_decay": (0.0, math.inf, False, True),
    "momentum": (0.0, math.inf, False, True),
    "dampening": (-math.inf, math.inf, True, True),
    "beta": (0.0, 1.0, False, True),
}


def _hparam(where: str, k: str, v: Any, lo: float, hi: float, lo_open: bool, hi_open: bool) -> None:
    import torch

    if torch.is_tensor(v):
        if v.numel() != 1 or v.is_complex() or v.dtype == torch.bool:
            raise fail(
                where,
                k,
                "a real number (or a one-element tensor)",
                f"a tensor of shape {tuple(v.shape)} {v.dtype}",
            )
        v = float(v)
    f = real(where, k, v)
    # the steps compute in float32 (bfloat16 in Newton-Schulz); torch takes ints as int64
    if abs(f) > F32_MAX or (is_int(v) and not -(2**63) <= v < 2**63):
        raise fail(where, k, "a number within float32's range (an int within int64's)", v)
    if (f <= lo if lo_open else f < lo) or (f >= hi if hi_open else f > hi):
        rng = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        raise fail(where, k, f"a number in {rng}", v)


def param_groups(groups: Any, sizes: list) -> None:
    """Saved param groups: a list of dicts with ``params`` (ids), as many groups and ids per
    group as ``sizes`` (the optimizer's), and the known hyperparameters (lr, betas, eps,
    weight_decay, momentum, dampening, beta) finite and in range (torch's load takes the
    saved values over the optimizer's own)."""
    if not isinstance(groups, (list, tuple)):
        raise _type_error("state_dict", "param_groups", "a list of dicts", groups)
    if len(groups) != len(sizes):
        raise found(
            "state_dict",
            "param_groups",
            f"{len(sizes)} groups (as this optimizer has)",
            f"{len(groups)} groups",
        )
    seen: set = set()
    for gi, g in enumerate(groups):
        where = f"state_dict: param group {gi}"
        if not isinstance(g, dict):
            raise _type_error(where, "group", "a dict", g)
        ids = g.get("params")
        if not isinstance(ids, (list, tuple)) or not all(
            isinstance(i, (int, str)) and not isinstance(i, bool) for i in ids
        ):
            raise _type_error(where, "params", "a list of parameter ids", ids)
        if len(ids) != sizes[gi] or len(set(ids)) != len(ids):
            raise found(
                where,
                "params",
                f"{sizes[gi]} distinct parameter ids (as this optimizer's group has)",
                f"{len(ids)} ids, {len(set(ids))} distinct",
            )
        if seen & set(ids):
            raise found(
                where,
                "params",
                "ids no other group lists",
                f"{sorted(seen & set(ids), key=str)} listed before",
            )
        seen |= set(ids)
        for k, (lo, hi, lo_open, hi_open) in _HPARAMS.items():
            if k in g:
                _hparam(where, k, g[k], lo, hi, lo_open, hi_open)
        for k in ("amsgrad", "maximize", "nesterov", "decoupled_weight_decay", "use_muon"):
            if k in g:
                boolean(where, k, g[k])
        for k in ("capturable", "differentiable"):
            if g.get(k, False) is not False:
                raise fail(
                    where,
                    k,
                    "False (lowfp steps keep the step count on the host and run outside autograd)",
                    g[k],
                )
        if "ns_steps" in g:  # Muon: as its constructor takes them
            integer(where, "ns_steps", g["ns_steps"], 0, 99)
        if "ns_coefficients" in g:
            c = g["ns_coefficients"]
            if not isinstance(c, (list, tuple)) or len(c) != 3:
                raise _type_error(where, "ns_coefficients", "3 numbers", c)
            for j, v in enumerate(c):
                _hparam(where, f"ns_coefficients[{j}]", v, -math.inf, math.inf, True, True)
        if g.get("adjust_lr_fn") is not None:
            choice(where, "adjust_lr_fn", g["adjust_lr_fn"], ("original", "match_rms_adamw"))
        if "betas" in g:
            b = g["betas"]
            if not isinstance(b, (list, tuple)) or len(b) != 2:
                raise _type_error(where, "betas", "a pair of numbers in [0, 1)", b)
            for j, v in enumerate(b):
                _hparam(where, f"betas[{j}]", v, 0.0, 1.0, False, True)


#: The step counters' bound: the steps key the random streams as (step << 32) | ..., so a
#: step must fit in 32 bits after the next increment.
MAX_STEP = 2**32 - 2


def step(where: str, v: Any):
    """A saved step counter: a real number or one-element tensor holding an integer in
    [0, MAX_STEP]. Returns it as a float32 0-d tensor."""
    import torch

    if torch.is_tensor(v):
        if v.numel() != 1 or v.is_complex() or v.dtype == torch.bool:
            raise fail(
                where,
                "step",
                "a one-element real tensor",
                f"a tensor of shape {tuple(v.shape)} {v.dtype}",
            )
        f = float(v.reshape(()))
    elif isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise _type_error(where, "step", "an integer count (a number or a 0-d tensor)", v)
    else:
        f = float(v)
    if not (math.isfinite(f) and f == int(f) and 0 <= f <= MAX_STEP):
        raise fail(where, "step", f"an integer in [0, {MAX_STEP}]", f)
    return torch.tensor(f, dtype=torch.float32)


def description(desc: Any, where: str, layout: int) -> Tuple[Any, int]:
    """A quantized state's saved ``"<name>.codec"`` description: (codec, block size)."""
    if not isinstance(desc, dict):
        raise _type_error(where, "codec description", "a dict (codec, block, scale, layout)", desc)
    got = desc.get("layout")
    if not (is_int(got) and got == layout):
        raise fail(where, "codec description layout", f"{layout}", got)
    if set(desc) != {"codec", "block", "scale", "layout"}:
        raise fail(where, "codec description", "the keys codec, block, scale, layout", sorted(desc))
    c = codec(desc["codec"], where, "codec description codec")
    block = integer(where, "codec description block", desc["block"], 16, 4096)
    if block % 8:
        raise fail(where, "codec description block", "a multiple of 8 in 16..4096", block)
    choice(where, "codec description scale", desc["scale"], ("absmax",))
    return c, block


def state_values(
    where: str, st: Dict[str, Any], name: str, spec: Optional[tuple], n: int, nonnegative: bool
) -> None:
    """The values of one saved state (shapes and dtypes already checked against the
    optimizer's): quantized: scales finite and >= 0, per-block bases in (0, 1), every code
    decodes; the values (float32 or decoded) pass :func:`_check_values`.

    ``spec`` is the state's (spec dict, ``_core.BlockSpec``), None for float32 (``st[name]``).
    """
    w = f"{where} {name}"
    if spec is None:
        _check_values(w, "values", st[name].detach().reshape(-1).cpu().numpy(), 0, nonnegative)
        return
    codes = st[f"{name}.codes"].detach().cpu().numpy()
    scales = st[f"{name}.scales"].detach().cpu().numpy()
    alphas = st[f"{name}.alphas"].detach().cpu().numpy()
    bad = ~(np.isfinite(scales) & (scales >= 0))
    if bad.any():
        i = int(np.argmax(bad))
        raise found(w, "scales", "finite scales >= 0", _at(scales, i, "block"))
    if alphas.size:
        _bases(w, "alphas", alphas)
    _decode_check(
        w,
        "codes",
        spec[1],
        spec[0]["block"],
        codes,
        scales,
        alphas,
        n,
        np.float32(1.0),
        state=True,
        nonnegative=nonnegative,
    )
