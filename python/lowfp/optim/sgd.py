"""SGD with a momentum buffer in packed low-bit storage (fused Rust step; CUDA kernel)."""

from __future__ import annotations

from typing import Any, Optional

from .. import _core
from .._types import TableRounding
from . import distributed as _dist
from .base import _PLAIN, PackedOptimizer, _scalar, check_lr, cuda_optim

__all__ = ["SGD"]


class SGD(PackedOptimizer):
    """SGD with momentum (torch.optim.SGD semantics) and a low-bit packed momentum buffer.

    Per parameter and step: ``d = g + wd·p`` (``g`` negated with ``maximize``); the buffer is
    ``d`` on the first step, then ``buf = momentum·buf + (1 − dampening)·d``; the step is
    ``d + momentum·buf`` with Nesterov, else ``buf``; ``p −= lr·step``. One fused Rust call per
    param group decodes the buffers, updates them and the weights, and re-encodes them. With
    ``momentum=0`` there is no state: ``p −= lr·d`` in torch's own arithmetic.

    The signature is ``torch.optim.SGD``'s, lowfp's storage options keyword-only after it.

    Args:
        params: parameters or param groups (float32, bfloat16 or float16; any layout).
        lr, momentum, dampening, weight_decay, nesterov, maximize: as torch.optim.SGD.
        foreach, fused: accepted and ignored (every lowfp step is fused).
        differentiable: must be False (True raises ValueError).
        momentum_codec: storage of the momentum buffer: None (float32), a float format of at
            most 8 bits (``"e4m3"``, …), or a :class:`lowfp.Linear`, :class:`lowfp.Dynamic`
            or :class:`lowfp.Log` codec, blockwise with float32 absmax scales.
        block_size: elements per block of a quantized buffer (16..4096, multiple of 8).
        rounding: "nearest", "stochastic" or "stochastic16" re-encoding of the buffer.
        seed: key of the stochastic rounding (with the step and the parameter's index).
        min_quant_size: parameters with fewer elements keep a float32 buffer.
        nonfinite, param_rounding: as :class:`lowfp.optim.AdamW`.

    Raises:
        ValueError: hyperparameters out of range (the message names the argument), unknown
            codecs; at ``step``, sparse gradients, NaN/inf with ``nonfinite="error"``.
        TypeError: at ``step``, parameters that are not float32, bfloat16 or float16, or
            gradients of another dtype.
    """

    _STATES = ("momentum_buffer",)
    _CODEC_ARGS = {"momentum_buffer": "momentum_codec"}

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: Optional[bool] = None,
        differentiable: bool = False,
        fused: Optional[bool] = None,
        momentum_codec: Any = None,
        block_size: int = 256,
        rounding: TableRounding = "nearest",
        seed: int = 0,
        min_quant_size: int = 4096,
        nonfinite: str = "skip",
        param_rounding: TableRounding = "stochastic",
    ):
        check_lr(lr)
        if not momentum >= 0.0:
            raise ValueError(f"momentum: expected >= 0, got {momentum}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay: expected >= 0, got {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError(
                "nesterov: requires momentum > 0 and dampening = 0, got "
                f"momentum={momentum}, dampening={dampening}"
            )
        if differentiable:
            raise ValueError(
                "differentiable: True is not supported (lowfp steps run outside "
                "autograd); leave it False"
            )
        self._configure(
            {"momentum_buffer": momentum_codec},
            block_size=block_size,
            rounding=rounding,
            seed=seed,
            min_quant_size=min_quant_size,
            nonfinite=nonfinite,
            param_rounding=param_rounding,
        )
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=bool(nesterov),
            maximize=bool(maximize),
            foreach=foreach,
            differentiable=False,
            fused=fused,
        )
        super().__init__(params, defaults)

    def _legacy_group(self, g: dict) -> dict:
        g = dict(g)
        for k, v in dict(maximize=False, foreach=None, differentiable=False, fused=None).items():
            g.setdefault(k, v)
        return g

    def _has_state(self, group: dict) -> bool:
        return group["momentum"] != 0

    @property
    def _DEVICE_SKIP(self) -> bool:  # noqa: N802 - PackedOptimizer's class flag
        """CUDA steps skip on the device when every group steps in the fused kernel."""
        return all(g["momentum"] != 0 for g in self.param_groups)

    def _step_group(self, group: dict, entries: list) -> None:
        lr, mom, wd = _scalar(group["lr"]), group["momentum"], group["weight_decay"]
        if mom == 0:
            for e in entries:
                # torch.optim.SGD's own operations, so the results are the same bits
                g = -e.p.grad if group["maximize"] else e.p.grad
                d = g.add(e.p, alpha=wd) if wd != 0 else g
                e.p.add_(d, alpha=-lr)
            return
        items, offsets, copies = [], [], []
        scalars = (lr, mom, 1.0 - group["dampening"], wd)
        for e in entries:
            w, g, kind, copy = e.views
            if copy is not None:
                copies.append(copy)
            stream = (e.t << 32) | (e.index << 2)  # AdamW's rule (its first state's stream)
            items.append(
                (
                    w,
                    g,
                    e.args[0],
                    scalars,
                    bool(group["nesterov"]),
                    e.t == 1,
                    stream,
                    stream | 2,
                    kind,
                )
            )
            offsets.append(0 if type(e.p) in _PLAIN else _dist.element_offset(e.p))
        cuda = entries[0].p.is_cuda
        core = cuda_optim() if cuda else _core
        core.sgd_step_group(
            items,
            self._opt(group, "block_size"),
            self._seed,
            self._param_rounding,
            offsets,
            **(self._step_context(entries) if cuda else {}),
        )
        self._write_back(copies)
