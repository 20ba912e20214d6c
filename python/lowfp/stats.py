"""Outlier statistics of weights and per-layer quantization error (isolated vs accumulated).

Definitions (all computed in float64):

- :func:`max_to_mean`: ``max|w| / mean|w|`` (of the absolute values).
- :func:`max_to_median`: ``max|w| / median|w|`` (of the absolute values; the median of an
  even count is the mean of the two middle values, as NumPy's). The "MMR" of the studies of
  optimizers under quantization.
- :func:`kurtosis`: **Pearson's (non-excess) kurtosis** of the signed values,
  ``m4 / m2**2`` with the central population moments ``m_k = mean((w - mean(w))**k)``: a
  Gaussian gives 3, a uniform 1.8; ``excess=True`` subtracts 3 (Fisher's). No small-sample
  correction.
- :func:`layer_errors`: the relative error ``||y' - y||_F / ||y||_F`` of each selected layer's
  output y on a given batch, with that layer's weights quantized alone (*isolated*: its input
  is exact) and with every selected layer quantized (*accumulated*: its input carries the error
  of the layers before it), plus the same at the model's output.

A ratio or kurtosis of an all-zero tensor is NaN (0/0); a zero mean or median with a nonzero
max gives inf.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional

try:
    import torch
    from torch import nn
except ImportError as e:  # pragma: no cover - torch is an optional extra
    raise ImportError("lowfp.stats needs torch: pip install 'lowfp[torch]'") from e

from . import qat as _qat
from ._table import Table

__all__ = ["max_to_mean", "max_to_median", "kurtosis", "weight_stats", "layer_errors"]


def _flat64(w: Any, arg: str = "w") -> torch.Tensor:
    if not isinstance(w, torch.Tensor) or not (w.is_floating_point()):
        raise TypeError(
            f"{arg}: expected a floating-point torch tensor, got "
            f"{getattr(w, 'dtype', type(w).__name__)}"
        )
    if w.numel() == 0:
        raise ValueError(f"{arg}: expected a non-empty tensor")
    return w.detach().reshape(-1).double()


def _ratio(a: float, b: float) -> float:
    if b == 0.0:
        return math.nan if a == 0.0 else math.inf
    return a / b


def _median(v: torch.Tensor) -> float:
    n = v.numel()
    lo = v.kthvalue((n - 1) // 2 + 1).values
    hi = v.kthvalue(n // 2 + 1).values
    return float((lo + hi) / 2)


def max_to_mean(w: torch.Tensor) -> float:
    """``max|w| / mean|w|``.

    Raises:
        TypeError: w is not a floating-point tensor.
        ValueError: w is empty.
    """
    a = _flat64(w).abs()
    return _ratio(float(a.max()), float(a.mean()))


def max_to_median(w: torch.Tensor) -> float:
    """``max|w| / median|w|`` (the median of an even count: mean of the two middle values).

    Raises:
        TypeError: w is not a floating-point tensor.
        ValueError: w is empty.
    """
    a = _flat64(w).abs()
    return _ratio(float(a.max()), _median(a))


def kurtosis(w: torch.Tensor, *, excess: bool = False) -> float:
    """Pearson's kurtosis ``m4 / m2**2`` of the values (central population moments; 3 for a
    Gaussian), or the excess kurtosis (``- 3``) with ``excess=True``.

    Raises:
        TypeError: w is not a floating-point tensor.
        ValueError: w is empty.
    """
    v = _flat64(w)
    d = v - v.mean()
    m2 = float(d.square().mean())
    k = _ratio(float(d.square().square().mean()), m2 * m2)
    return k - 3.0 if excess else k


def weight_stats(model: nn.Module, *, filter: _qat.Filter = None) -> Table:
    """The outlier statistics of the weights of every Linear/Conv module that ``filter`` keeps
    (the modules :func:`lowfp.qat.prepare` would swap).

    Returns:
        A :class:`lowfp._table.Table`: ``name``, ``type``, ``numel``, ``max_to_mean``,
        ``max_to_median``, ``kurtosis`` (Pearson, non-excess), one row per module.

    Raises:
        TypeError: model is not a module; filter is not callable.
    """
    rows = []
    for name, m in _qat._targets(model, filter):
        w = m.weight
        rows.append(
            {
                "name": name,
                "type": _qat._BASE.get(type(m), type(m)).__name__,
                "numel": w.numel(),
                "max_to_mean": max_to_mean(w),
                "max_to_median": max_to_median(w),
                "kurtosis": kurtosis(w),
            }
        )
    return Table(rows)


def _first_tensor(out: Any) -> torch.Tensor:
    """The model's output tensor: itself, ``.logits``, or the first element of a tuple/list."""
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    raise TypeError(
        f"output: cannot find the output tensor in a {type(out).__name__}; pass "
        "output=callable(model_output) -> tensor"
    )


def _rel(y: torch.Tensor, ref: torch.Tensor) -> float:
    n = float(ref.double().norm())
    return _ratio(float((y.double() - ref.double()).norm()), n)


class LayerErrors(Table):
    """The table :func:`layer_errors` returns: a :class:`lowfp._table.Table` with the
    attribute ``output_error``."""

    output_error: float


@torch.no_grad()
def layer_errors(
    model: nn.Module,
    batch: Any,
    fmt: _qat.QuantizerLike,
    *,
    filter: _qat.Filter = None,
    output: Optional[Callable[[Any], torch.Tensor]] = None,
) -> LayerErrors:
    """Per-layer quantization error, each layer's weights quantized alone vs all together.

    The weights are rounded as :func:`lowfp.qat.quantize_weights` rounds them; the model is
    left exactly as it was (weights restored bit for bit, training mode restored). The forward
    passes run in eval mode (dropout off) without gradients: 2 + (number of layers) passes.

    Args:
        model: a torch module.
        batch: the model's input: a tensor (``model(batch)``), a tuple/list
            (``model(*batch)``) or a dict (``model(**batch)``).
        fmt: the weight quantizer (as :func:`lowfp.qat.quantize_weights`).
        filter: ``filter(module, name) -> bool`` selecting the Linear/Conv modules, None: all.
        output: maps the model's output to a tensor (default: the output itself, its
            ``.logits``, or the first element of a tuple).

    Returns:
        A :class:`lowfp._table.Table`, one row per selected layer in model order: ``name``,
        ``isolated`` (relative error of the layer's output with only its weights quantized),
        ``accumulated`` (the same with every selected layer quantized), ``output_isolated``
        (relative error of the model's output with only this layer quantized). Its attribute
        ``output_error`` is the relative error of the model's output with every selected
        layer quantized.

    Raises:
        TypeError, ValueError: as :func:`lowfp.qat.quantize_weights`.
    """
    q = _qat._as_quantizer(fmt, "fmt")
    if q is None:
        raise TypeError("fmt: expected a quantizer, got None")
    targets = _qat._targets(model, filter)
    if not targets:
        raise ValueError(
            "filter: no nn.Linear / nn.Conv1d / Conv2d / Conv3d module of the model was selected"
        )
    pick = output or _first_tensor
    originals = [m.weight.detach().clone() for _, m in targets]
    rounded = []
    for i, (_, m) in enumerate(targets):
        seed, stream = (
            (None, 0) if q.seed is None else (q.seed, _qat._stream(i, 0, _qat._KIND_WEIGHT))
        )
        w = m.weight
        rounded.append(
            _qat.fake_quantize(
                w.detach().reshape(w.shape[0], -1), q, seed=seed, stream=stream
            ).reshape(w.shape)
        )
    seen: dict = {}
    hooks = [
        m.register_forward_hook(lambda mod, inp, out, i=i: seen.__setitem__(i, out))
        for i, (_, m) in enumerate(targets)
    ]

    def run(quantized: set):
        for i, (_, m) in enumerate(targets):
            m.weight.copy_(rounded[i] if i in quantized else originals[i])
        seen.clear()
        if isinstance(batch, dict):
            out = model(**batch)
        elif isinstance(batch, (tuple, list)):
            out = model(*batch)
        else:
            out = model(batch)
        return pick(out).detach().clone(), {
            i: _first_tensor(o).detach().clone() for i, o in seen.items()
        }

    training = model.training
    model.eval()
    try:
        ref_out, ref = run(set())
        all_out, acc = run(set(range(len(targets))))
        rows = []
        for i, (name, _) in enumerate(targets):
            one_out, one = run({i})
            rows.append(
                {
                    "name": name,
                    "isolated": _rel(one[i], ref[i]),
                    "accumulated": _rel(acc[i], ref[i]),
                    "output_isolated": _rel(one_out, ref_out),
                }
            )
    finally:
        for h in hooks:
            h.remove()
        for (_, m), w in zip(targets, originals):
            m.weight.copy_(w)
        model.train(training)
    table = LayerErrors(rows)
    table.output_error = _rel(all_out, ref_out)
    return table
