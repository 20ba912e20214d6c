"""Quantization-aware training (fake quantization with a straight-through estimator) and
post-training quantization of weights, in any lowfp format or blockwise preset.

- :class:`Quantizer`: how a tensor is rounded: an element format (``"e4m3"``, ``"e2m1"``,
  ``"bf16"``, ``"e3m2"``, …) applied to the raw values, or blockwise (a preset ``"mxfp4"``,
  ``"nvfp4"``, ``"mxfp8"``, …, or any codec with ``block_size``/``scale``), rounding
  ``"nearest"`` or ``"stochastic"``.
- :func:`fake_quantize`: ``Q(x)`` in the forward pass, the clipped straight-through estimator
  in the backward pass.
- :func:`prepare`: swaps ``nn.Linear`` and ``nn.Conv1d/2d/3d`` modules for fake-quant ones
  (weights, input activations, optionally the gradient of the output); :func:`unprepare`
  swaps them back.
- :func:`quantize_weights`: post-training quantization of the weights in place, with a report.

Design notes
- The values are lowfp's own: an element format gives exactly ``decode(encode(x))`` (one
  :func:`lowfp.quantize` call on float32), a blockwise quantizer exactly
  ``quantize_blockwise(x, …).dequantize()``; CUDA tensors go through lowfp's CUDA dispatch
  (nothing here runs a kernel of its own). The result is cast to x's dtype (exact when the
  format's values are exact in it, e.g. every FP8/FP6/FP4 format in bfloat16).
- The straight-through estimator is *clipped*: the gradient passes unchanged where
  ``|x| <= M`` and is zero where ``|x| > M`` (and at NaN), M being the largest magnitude the
  quantizer can output for that element: the format's max for an element format; the codec's
  max times the block's scale (times the NVFP4 tensor scale) for a blockwise one. So only
  saturated elements lose their gradient (absmax scales never saturate; E8M0 floor scales and
  E4M3 scales can). Rejected: the plain identity STE (weights that drift beyond the range keep
  drifting with no effect on the loss) and LSQ-style learned scales (a different method, not a
  rounding rule).
- Blocks run along the reduction dimension: the last axis of a Linear's weight and input, the
  flattened ``in_channels x kernel`` of a Conv weight, the channel axis of a Conv input and
  output gradient, the last axis of a Linear's output gradient.
- Stochastic rounding is reproducible and fresh per call: a quantizer with an int ``seed``
  keys each call's random bits by ``(seed, stream)``, the stream mixing the module's index (its
  position among the swapped modules), its call count and the kind (weight, activation,
  gradient) as :class:`lowfp.optim.LowPrecision` does; ``seed=None`` draws a fresh key from
  lowfp's global generator at every call (reproducible under :func:`lowfp.manual_seed`).
  The call counters are not in the state dict (it stays the plain model's).
- Modules are swapped by changing their class to a subclass (``QLinear`` is an ``nn.Linear``),
  as ``torch.nn.utils.parametrize`` does: the module object, its parameters (so an optimizer
  built before), hooks and state-dict keys stay as they were. Only modules whose type is
  exactly ``nn.Linear`` or ``nn.Conv1d/2d/3d`` are swapped (a subclass may have its own
  forward; ``nn.MultiheadAttention`` reads its projection weights without calling forward).
  Biases are not quantized.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Tuple, Union

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError as e:  # pragma: no cover - torch is an optional extra
    raise ImportError("lowfp.qat needs torch: pip install 'lowfp[torch]'") from e

from . import codec as _codec
from ._common import SCALE_FORMATS, TABLE_ROUNDINGS
from ._table import Table
from ._types import Overflow, Rounding
from .formats import Format
from .formats import format as _format
from .optim.lowprec import _stream
from .qtensor import PRESETS, SCALES, Codec, quantize_blockwise

__all__ = [
    "Quantizer",
    "fake_quantize",
    "prepare",
    "unprepare",
    "quantize_weights",
    "QLinear",
    "QConv1d",
    "QConv2d",
    "QConv3d",
]

_KIND_WEIGHT, _KIND_ACT, _KIND_GRAD = 0, 1, 2


@dataclasses.dataclass(frozen=True)
class Quantizer:
    """How one kind of tensor is fake-quantized.

    Args:
        fmt: an element format (name, alias, ``"e<X>m<Y>"`` spec or :class:`lowfp.Format`),
            a blockwise preset (``"mxfp8"``, ``"mxfp8_e5m2"``, ``"mxfp6"``, ``"mxfp6_e3m2"``,
            ``"mxfp4"``, ``"nvfp4"``) or a :class:`lowfp.Linear`/:class:`lowfp.Dynamic`/
            :class:`lowfp.Log` codec (always blockwise).
        rounding: ``"nearest"`` (ties to even), ``"stochastic"`` or ``"stochastic16"``
            (16 random bits per element); element formats also take lowfp's other modes.
        block_size: make an element format of at most 8 bits blockwise with this block size
            (16..4096, multiple of 8); a preset's own by default.
        scale: the blockwise scale rule (``"absmax"``, ``"e8m0"``, …, as
            :func:`lowfp.quantize_blockwise`); a preset's own by default, else ``"absmax"``.
        overflow: element formats only: ``"saturate"`` (default: beyond max becomes ±max) or
            ``"nonfinite"``.
        seed: key of stochastic rounding: an int (reproducible, fresh bits per call through
            the stream) or None (a fresh key per call from lowfp's global generator).

    A bare element format rounds the raw values (no scale): ``"e2m1"`` maps weights of size
    0.02 to 0; use a blockwise quantizer for those.

    Raises:
        ValueError: unknown format, preset, rounding, scale or overflow; a bad block size.
        TypeError: fmt of another type.
    """

    fmt: Union[str, Format, Codec]
    rounding: Rounding = "nearest"
    block_size: Optional[int] = None
    scale: Optional[str] = None
    overflow: Overflow = "saturate"
    seed: Optional[int] = 0

    def __post_init__(self) -> None:
        preset = isinstance(self.fmt, str) and self.fmt.lower() in PRESETS
        table = isinstance(self.fmt, _codec.TableCodec)
        if not (preset or table or isinstance(self.fmt, (str, Format))):
            raise TypeError(
                f"fmt: expected a format name, a lowfp.Format, a blockwise preset "
                f"({', '.join(PRESETS)}) or a Linear/Dynamic/Log codec, got "
                f"{type(self.fmt).__name__}"
            )
        if not (preset or table):
            _format(self.fmt)  # ValueError naming the format
        blockwise = preset or table or self.block_size is not None or self.scale is not None
        _codec._check_choice(
            "rounding", self.rounding, TABLE_ROUNDINGS if blockwise else _codec.ROUNDINGS
        )
        _codec._check_choice("overflow", self.overflow, _codec.OVERFLOWS)
        if self.scale is not None:
            _codec._check_choice("scale", self.scale, SCALES)
        if self.seed is not None and (
            not isinstance(self.seed, int)
            or isinstance(self.seed, bool)
            or not 0 <= self.seed < 2**64
        ):
            raise ValueError(f"seed: expected None or an int in [0, 2**64), got {self.seed!r}")
        if blockwise:  # the codec, block size and scale rule, checked once on a probe
            quantize_blockwise(
                torch.zeros(1), self._codec(), block_size=self._block(), scale=self._scale()
            )

    @property
    def blockwise(self) -> bool:
        """Whether values are scaled per block (a preset, a table codec, a block size or a
        scale rule), rather than rounded as they are."""
        return (
            isinstance(self.fmt, _codec.TableCodec)
            or (isinstance(self.fmt, str) and self.fmt.lower() in PRESETS)
            or self.block_size is not None
            or self.scale is not None
        )

    def _preset(self) -> Optional[tuple]:
        return PRESETS.get(self.fmt.lower()) if isinstance(self.fmt, str) else None

    def _codec(self):
        p = self._preset()
        return (
            _format(p[0])
            if p
            else (self.fmt if isinstance(self.fmt, _codec.TableCodec) else _format(self.fmt))
        )

    def _block(self) -> int:
        p = self._preset()
        return self.block_size if self.block_size is not None else (p[1] if p else 256)

    def _scale(self) -> str:
        p = self._preset()
        return self.scale if self.scale is not None else (p[2] if p else "absmax")

    def __str__(self) -> str:
        c = self._codec()
        name = c.name if isinstance(c, Format) else repr(c)
        if not self.blockwise:
            return f"{name} ({self.rounding})"
        return f"{name} blocks of {self._block()}, {self._scale()} scales ({self.rounding})"


QuantizerLike = Union[None, str, Format, Codec, Quantizer]


def _as_quantizer(spec: QuantizerLike, arg: str) -> Optional[Quantizer]:
    if spec is None or isinstance(spec, Quantizer):
        return spec
    if isinstance(spec, (str, Format, _codec.TableCodec)):
        try:
            return Quantizer(spec)
        except ValueError as e:
            raise ValueError(f"{arg}: {e}") from None
    raise TypeError(
        f"{arg}: expected None, a format or preset name, a lowfp.Format, a "
        f"Linear/Dynamic/Log codec or a lowfp.qat.Quantizer, got "
        f"{type(spec).__name__}"
    )


# ---------------------------------------------------------------- the rounding itself


def _to_torch(a: Any, device: torch.device) -> torch.Tensor:
    return a if isinstance(a, torch.Tensor) else torch.as_tensor(a, device=device)


def _block_bound(q, x: torch.Tensor, block: int) -> torch.Tensor:
    """Per element of x (blocks along its last axis): the largest magnitude its block can hold,
    ``codec max * scale * tensor scale`` in float32 as the core computes it."""
    s = _to_torch(q.scales, x.device)
    if q.scale != "absmax":
        s = _to_torch(_codec.decode(s, SCALE_FORMATS[q.scale]), x.device)
    sd = s.float() * torch.tensor(q.global_scale, dtype=torch.float32, device=x.device)
    m = sd * torch.tensor(float(q.codec.max), dtype=torch.float32, device=x.device)
    n = x.shape[-1]
    per_row = m.reshape(-1, -(-n // block))
    return per_row.repeat_interleave(block, dim=1)[:, :n].reshape(x.shape)


def _round(
    x: torch.Tensor, q: Quantizer, seed: Optional[int], stream: int
) -> Tuple[torch.Tensor, Any]:
    """(Q(x) in float32, the bound M: a float or a tensor of x's shape); blocks along the last
    axis of x."""
    x32 = x.detach().float().contiguous()
    if not q.blockwise:
        r = _codec.quantize(
            x32,
            q._codec(),
            rounding=q.rounding,
            overflow=q.overflow,
            seed=seed,
            stream=stream,
            nan="zero",
        )
        finite = torch.isfinite(x32)
        if not bool(finite.all()):
            r = torch.where(finite, r, x32)  # NaN/inf pass through, as LowPrecision's
        return r, float(q._codec().max)
    if x32.numel() == 0:
        return x32.clone(), float("inf")
    flat = x32.reshape(1) if x32.dim() == 0 else x32
    qt = quantize_blockwise(
        flat,
        q._codec(),
        block_size=q._block(),
        scale=q._scale(),
        rounding=q.rounding,
        seed=seed,
        stream=stream,
        axis=-1,
    )
    r = _to_torch(qt.dequantize(), x.device).reshape(x.shape)
    return r, _block_bound(qt, flat, q._block()).reshape(x.shape)


class _FakeQuant(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, q, seed, stream):
        r, bound = _round(x, q, seed, stream)
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(x.detach().abs() <= bound)
        return r.to(x.dtype)

    @staticmethod
    def backward(ctx, gy):
        (keep,) = ctx.saved_tensors
        return (
            torch.where(keep, gy, torch.zeros((), dtype=gy.dtype, device=gy.device)),
            None,
            None,
            None,
        )


class _QuantGrad(torch.autograd.Function):
    """Identity forward; the incoming gradient rounded to q in the backward pass."""

    @staticmethod
    def forward(ctx, x, q, seed, stream, axis):
        ctx.q, ctx.seed, ctx.stream, ctx.axis = q, seed, stream, axis
        return x.view_as(x)

    @staticmethod
    def backward(ctx, gy):
        g = gy.movedim(ctx.axis, -1)
        r, _ = _round(g, ctx.q, ctx.seed, ctx.stream)
        return r.to(gy.dtype).movedim(-1, ctx.axis), None, None, None, None


def fake_quantize(
    x: torch.Tensor,
    q: QuantizerLike,
    *,
    axis: int = -1,
    seed: Optional[int] = None,
    stream: int = 0,
) -> torch.Tensor:
    """``Q(x)`` forward, the clipped straight-through estimator backward.

    Args:
        x: a floating-point tensor (any device lowfp's codecs run on).
        q: a :class:`Quantizer`, or a format/preset name or codec (nearest rounding).
        axis: the axis blockwise quantizers cut into blocks (ignored by element formats).
        seed, stream: key of stochastic rounding; seed None draws a fresh key from lowfp's
            global generator (:func:`lowfp.manual_seed`). ``q.seed`` is not used here (it
            keys the modules of :func:`prepare`).

    Returns:
        A tensor of x's shape, dtype and device: exactly ``decode(encode(x))`` (element format)
        or ``quantize_blockwise(x).dequantize()`` (blockwise) of x in float32, cast to x's
        dtype. Its gradient is the incoming gradient where ``|x| <= M`` (M: the largest
        magnitude the element's quantizer can output) and 0 elsewhere.

    Raises:
        TypeError: x is not a floating-point tensor; q of another type.
        ValueError: as :func:`lowfp.quantize` / :func:`lowfp.quantize_blockwise` (non-finite
            values in a blockwise quantizer, a bad axis).
    """
    q = _as_quantizer(q, "q")
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError(
            f"x: expected a floating-point torch tensor, got "
            f"{getattr(x, 'dtype', type(x).__name__)}"
        )
    if q is None:
        return x
    if q.blockwise and x.dim() > 0:
        if not -x.dim() <= axis < x.dim():
            raise ValueError(f"axis: expected -{x.dim()} <= axis < {x.dim()}, got {axis}")
        moved = x.movedim(axis, -1)
        return _FakeQuant.apply(moved, q, seed, stream).movedim(-1, axis)
    return _FakeQuant.apply(x, q, seed, stream)


# ---------------------------------------------------------------- modules


class _FakeQuantModule:
    """What the fake-quant modules add to their torch base class (set by :func:`prepare`)."""

    weight: torch.Tensor  # the torch base class's
    weight_quantizer: Optional[Quantizer]
    act_quantizer: Optional[Quantizer]
    grad_quantizer: Optional[Quantizer]
    fq_index: int
    fq_calls: int
    _ACT_AXIS = -1

    def _key(self, q: Quantizer, kind: int, calls: int) -> Tuple[Optional[int], int]:
        if q.seed is None:
            return None, 0
        return q.seed, _stream(self.fq_index, calls, kind)

    def quantized_weight(self, calls: Optional[int] = None) -> torch.Tensor:
        """The weight as the forward pass uses it (differentiable; call count ``calls``, by
        default the next forward's)."""
        q = self.weight_quantizer
        if q is None:
            return self.weight
        seed, stream = self._key(q, _KIND_WEIGHT, self.fq_calls if calls is None else calls)
        w = self.weight
        return fake_quantize(w.reshape(w.shape[0], -1), q, seed=seed, stream=stream).reshape(
            w.shape
        )

    def _fq_forward(self, x: torch.Tensor, run: Callable) -> torch.Tensor:
        calls = self.fq_calls
        self.fq_calls = calls + 1
        if self.act_quantizer is not None:
            seed, stream = self._key(self.act_quantizer, _KIND_ACT, calls)
            x = fake_quantize(x, self.act_quantizer, axis=self._ACT_AXIS, seed=seed, stream=stream)
        out = run(x, self.quantized_weight(calls))
        if self.grad_quantizer is not None and out.requires_grad:
            seed, stream = self._key(self.grad_quantizer, _KIND_GRAD, calls)
            out = _QuantGrad.apply(
                out, self.grad_quantizer, seed, stream, self._ACT_AXIS if out.dim() > 1 else -1
            )
        return out

    def extra_repr(self) -> str:
        base = super().extra_repr()  # type: ignore[misc]
        parts = [
            f"{k}={getattr(self, k + '_quantizer')}"
            for k in ("weight", "act", "grad")
            if getattr(self, k + "_quantizer") is not None
        ]
        return ", ".join([base] + parts)


class QLinear(_FakeQuantModule, nn.Linear):
    """An ``nn.Linear`` whose weight, input and (optionally) output gradient are fake-quantized
    (made by :func:`prepare`; its state dict is nn.Linear's)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fq_forward(x, lambda x, w: F.linear(x, w, self.bias))


class _QConv(_FakeQuantModule):
    _ACT_AXIS = 1
    bias: Optional[torch.Tensor]  # the nn.Conv*d base class's
    _conv_forward: Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fq_forward(x, lambda x, w: self._conv_forward(x, w, self.bias))


class QConv1d(_QConv, nn.Conv1d):
    """A fake-quant ``nn.Conv1d`` (see :class:`QLinear`)."""


class QConv2d(_QConv, nn.Conv2d):
    """A fake-quant ``nn.Conv2d`` (see :class:`QLinear`)."""


class QConv3d(_QConv, nn.Conv3d):
    """A fake-quant ``nn.Conv3d`` (see :class:`QLinear`)."""


_SWAP = {nn.Linear: QLinear, nn.Conv1d: QConv1d, nn.Conv2d: QConv2d, nn.Conv3d: QConv3d}
_BASE = {v: k for k, v in _SWAP.items()}

Filter = Optional[Callable[[nn.Module, str], bool]]


def _targets(model: nn.Module, filter: Filter, arg: str = "filter"):
    """(name, module) of the Linear/Conv modules (exact types, or already swapped) that the
    filter keeps, in model order."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if filter is not None and not callable(filter):
        raise TypeError(
            f"{arg}: expected None or a callable (module, name) -> bool, got "
            f"{type(filter).__name__}"
        )
    return [
        (n, m)
        for n, m in model.named_modules()
        if (type(m) in _SWAP or type(m) in _BASE) and (filter is None or filter(m, n))
    ]


def prepare(
    model: nn.Module,
    weight: QuantizerLike = None,
    act: QuantizerLike = None,
    grad: QuantizerLike = None,
    *,
    filter: Filter = None,
) -> nn.Module:
    """Make a model quantization-aware, in place.

    Every ``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d`` and ``nn.Conv3d`` (exact types) that
    ``filter`` keeps becomes a :class:`QLinear`/``QConv*d`` (a subclass: same object,
    parameters, hooks and state-dict keys) whose forward pass uses the fake-quantized weight
    and input, and whose backward pass rounds the gradient of its output to ``grad``.
    Preparing a prepared module again replaces its quantizers.

    Args:
        model: a torch module (it may itself be a Linear/Conv).
        weight, act, grad: a :class:`Quantizer`, a format/preset name or codec (nearest), or
            None (that tensor is left as it is).
        filter: ``filter(module, name) -> bool`` (torchao's ``filter_fn`` order), None for all.
            ``name`` is the module's qualified name in ``model`` ("" for the model itself).

    Returns:
        model.

    Raises:
        TypeError: model is not a module; a quantizer or filter of the wrong type.
        ValueError: a bad quantizer; no module matched (nothing would be quantized).
    """
    qs = {k: _as_quantizer(v, k) for k, v in (("weight", weight), ("act", act), ("grad", grad))}
    targets = _targets(model, filter)
    if not targets:
        raise ValueError(
            "filter: no nn.Linear / nn.Conv1d / Conv2d / Conv3d module of the "
            "model was selected; nothing would be quantized"
        )
    for i, (_, m) in enumerate(targets):
        if type(m) in _SWAP:
            m.__class__ = _SWAP[type(m)]
        m.weight_quantizer, m.act_quantizer, m.grad_quantizer = qs["weight"], qs["act"], qs["grad"]
        m.fq_index, m.fq_calls = i, 0
    return model


def unprepare(model: nn.Module) -> nn.Module:
    """Turn every fake-quant module of the model back into its torch class, in place (the
    parameters keep their current values). Returns model."""
    for _, m in _targets(model, None):
        if type(m) in _BASE:
            m.__class__ = _BASE[type(m)]
            for k in (
                "weight_quantizer",
                "act_quantizer",
                "grad_quantizer",
                "fq_index",
                "fq_calls",
            ):
                m.__dict__.pop(k, None)
    return model


@torch.no_grad()
def quantize_weights(model: nn.Module, fmt: QuantizerLike, *, filter: Filter = None) -> Table:
    """Post-training quantization: round the weights of the model's Linear/Conv modules in
    place (biases are left as they are).

    The rounded weight is exactly what :func:`prepare` with ``weight=fmt`` uses in its forward
    pass (blocks along the reduction dimension; stochastic rounding keyed by the module's
    index among the selected modules and call count 0).

    Args:
        model: a torch module.
        fmt: a :class:`Quantizer`, or a format/preset name or codec (nearest rounding).
        filter: ``filter(module, name) -> bool``, None for all (as :func:`prepare`).

    Returns:
        A :class:`lowfp._table.Table`, one row per quantized module: ``name``, ``type``,
        ``shape`` (e.g. "64x32"), ``numel``, ``quantizer``, ``rel_error``
        (||Q(w) - w||_2 / ||w||_2, 0 for an all-zero weight), ``max_abs_error``.

    Raises:
        TypeError, ValueError: as :func:`prepare`.
    """
    q = _as_quantizer(fmt, "fmt")
    if q is None:
        raise TypeError("fmt: expected a quantizer, got None")
    rows = []
    targets = _targets(model, filter)
    if not targets:
        raise ValueError(
            "filter: no nn.Linear / nn.Conv1d / Conv2d / Conv3d module of the "
            "model was selected; nothing would be quantized"
        )
    for i, (name, m) in enumerate(targets):
        w = m.weight
        seed, stream = (None, 0) if q.seed is None else (q.seed, _stream(i, 0, _KIND_WEIGHT))
        r = fake_quantize(w.detach().reshape(w.shape[0], -1), q, seed=seed, stream=stream).reshape(
            w.shape
        )
        d = r.double() - w.double()
        norm = float(w.double().norm())
        rows.append(
            {
                "name": name,
                "type": _BASE.get(type(m), type(m)).__name__,
                "shape": "x".join(str(s) for s in w.shape),
                "numel": w.numel(),
                "quantizer": str(q),
                "rel_error": float(d.norm()) / norm if norm else 0.0,
                "max_abs_error": float(d.abs().max()) if d.numel() else 0.0,
            }
        )
        w.copy_(r)
    return Table(rows)
