"""AdamW (and Adam) with low-bit packed states, and its presets.

The presets are real subclasses (``isinstance``, ``repr``, Trainer's
``optimizer_cls_and_kwargs``, ``functools.partial`` and ZeRO's ``optimizer_class`` all see a
class), each fixing its states' codecs and default block size, as bitsandbytes'
``AdamW8bit`` and torchao's ``AdamW4bit`` do.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from .. import _core
from .._types import TableRounding
from ..codec import Dynamic, Linear, Log
from . import distributed as _dist
from .base import _PLAIN, PackedOptimizer, _scalar, check_lr, cuda_optim

#: How the second moment is shared (``v_granularity``).
V_GRANULARITIES = ("element", "row", "block", "tensor")

__all__ = ["AdamW", "AdamW8bit", "AdamW4bit", "AdamWFp8", "SOLO", "solo_beta1"]


class AdamW(PackedOptimizer):
    """AdamW (or Adam with ``decoupled_weight_decay=False``) with low-bit packed states.

    The signature is ``torch.optim.AdamW``'s, lowfp's storage options keyword-only after it.

    Args:
        params: parameters or param groups (float32, bfloat16 or float16; CPU or CUDA; any
            memory layout).
        lr, betas, eps, weight_decay, amsgrad, maximize: as torch.optim.AdamW. With
            ``amsgrad`` the running maximum of the second moment is a third state,
            ``max_exp_avg_sq``, stored with the second moment's codec.
        foreach, fused: accepted and ignored: every lowfp step is one fused pass per group.
        capturable, differentiable: must be False (lowfp's steps read the step count on the
            host and are not part of autograd): True raises ValueError.
        decoupled_weight_decay: True (default) for AdamW's decoupled decay; False for Adam's
            L2 term (as ``torch.optim.Adam(decoupled_weight_decay=...)``).
        exp_avg, exp_avg_sq: codec of each state: None (float32), a float format of at most
            8 bits (``"e4m3"``, …), or a :class:`lowfp.Linear`, :class:`lowfp.Dynamic` or
            :class:`lowfp.Log` codec, blockwise with float32 absmax scales.
        block_size: elements per block of the quantized states (16..4096, multiple of 8).
        rounding: "nearest", "stochastic" or "stochastic16" (16 random bits per element)
            re-encoding of the states.
        seed: key of the stochastic rounding (with the step, parameter and state).
        min_quant_size: parameters with fewer elements keep float32 states.
        nonfinite: what a step does when any gradient holds NaN or ±inf: "skip" (default:
            nothing is updated, ``skipped_steps`` counts it, the first skip warns) or "error"
            (ValueError).
        param_rounding: how bfloat16/float16 parameters take the float32 update: "stochastic"
            (default, so small updates are not lost without an fp32 master copy),
            "stochastic16" (half the random-bit work; bfloat16 and float16 from float32
            discard at most 16 bits in their normal range, so the same probabilities there)
            or "nearest".
        v_granularity: how many elements share one second moment (blockwise Adam /
            Adam-mini). "element" (default): Adam's, one per element (the fused step).
            Otherwise each group of elements keeps one v, updated with the *mean* of g² over
            the group: "row": one per index of the first axis (a Linear's output neuron;
            1-D parameters form one group), "block": blocks of ``v_block_size`` consecutive
            elements along each such row (a block never crosses rows), "tensor": one per
            parameter. The reduced v (and AMSGrad's maximum) is stored in float32, shape
            (groups,), so ``exp_avg_sq`` must stay None; the first moment keeps its codec.
            These granularities step in torch (on the parameter's device; a packed first
            moment is decoded and re-encoded by the CPU codec), not in the fused Rust step.
        v_block_size: elements per block of ``v_granularity="block"`` (an int >= 1).

    A param group may set its own ``exp_avg``, ``exp_avg_sq``, ``block_size``, ``rounding``
    and ``min_quant_size``; the constructor's values are the defaults.

    Raises:
        ValueError: hyperparameters out of range or options that cannot be honoured (the
            message names the argument), unknown codecs.
        TypeError: a codec of another type.
    """

    _STATES: Tuple[str, ...] = ("exp_avg", "exp_avg_sq")
    _v_gran, _v_block = "element", 128  # (instances pickled before v_granularity)
    _CODEC_ARGS = {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq", "max_exp_avg_sq": "exp_avg_sq"}

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: Optional[bool] = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: Optional[bool] = None,
        decoupled_weight_decay: bool = True,
        exp_avg: Any = None,
        exp_avg_sq: Any = None,
        block_size: int = 256,
        rounding: TableRounding = "nearest",
        seed: int = 0,
        min_quant_size: int = 4096,
        nonfinite: str = "skip",
        param_rounding: TableRounding = "stochastic",
        v_granularity: str = "element",
        v_block_size: int = 128,
    ):
        check_lr(lr)
        if v_granularity not in V_GRANULARITIES:
            raise ValueError(
                f"v_granularity: expected one of {V_GRANULARITIES}, got {v_granularity!r}"
            )
        if not isinstance(v_block_size, int) or isinstance(v_block_size, bool) or v_block_size < 1:
            raise ValueError(f"v_block_size: expected an int >= 1, got {v_block_size!r}")
        if v_granularity != "element" and exp_avg_sq is not None:
            raise ValueError(
                f"exp_avg_sq: v_granularity={v_granularity!r} stores the reduced "
                "second moment in float32 (one value per group); leave "
                "exp_avg_sq=None (the first moment keeps its codec)"
            )
        self._v_gran, self._v_block = v_granularity, v_block_size
        if not eps >= 0.0:
            raise ValueError(f"eps: expected >= 0, got {eps}")
        b1, b2 = (_scalar(b) for b in betas)
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"betas: expected each in [0, 1), got {tuple(betas)}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay: expected >= 0, got {weight_decay}")
        if capturable:
            raise ValueError(
                "capturable: True is not supported (lowfp steps keep the step "
                "count on the host); leave it False"
            )
        if differentiable:
            raise ValueError(
                "differentiable: True is not supported (lowfp steps run outside "
                "autograd); leave it False"
            )
        self._STATES = (
            ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if amsgrad else ("exp_avg", "exp_avg_sq")
        )
        self._configure(
            {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq, "max_exp_avg_sq": exp_avg_sq},
            block_size=block_size,
            rounding=rounding,
            seed=seed,
            min_quant_size=min_quant_size,
            nonfinite=nonfinite,
            param_rounding=param_rounding,
        )
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=bool(amsgrad),
            maximize=bool(maximize),
            foreach=foreach,
            capturable=False,
            differentiable=False,
            fused=fused,
            decoupled_weight_decay=bool(decoupled_weight_decay),
        )
        super().__init__(params, defaults)

    _PICKLED = PackedOptimizer._PICKLED + ("_STATES", "_v_gran", "_v_block")

    @property
    def _DEVICE_SKIP(self) -> bool:  # noqa: N802 - PackedOptimizer's class flag
        """CUDA steps skip on the device (lowfp.cuda.optim.DeviceSkip) when the fused kernel
        steps them: element granularity (the reduced-v path steps in torch)."""
        return self._v_gran == "element"

    def _check_overrides(self, group):
        super()._check_overrides(group)
        if self._v_gran != "element" and group.get("exp_avg_sq") is not None:
            raise ValueError(
                f"exp_avg_sq: v_granularity={self._v_gran!r} keeps the reduced "
                "second moment in float32; a param group cannot set a codec for it"
            )
        if "amsgrad" in group and bool(group["amsgrad"]) != ("max_exp_avg_sq" in self._STATES):
            raise ValueError(
                "amsgrad: set it for the whole optimizer (the constructor's "
                f"amsgrad={'max_exp_avg_sq' in self._STATES}), not per group"
            )

    def _stepping(self, group: dict, plan) -> list:
        entries = super()._stepping(group, plan)
        if self._v_gran != "element":
            for e in entries:
                if type(e.p) not in _PLAIN:
                    raise ValueError(
                        f"v_granularity: {self._v_gran!r} needs plain tensors "
                        f"(param {e.index - 1} is a {type(e.p).__name__}); use "
                        "'element' for sharded parameters"
                    )
        return entries

    def _legacy_group(self, g: dict) -> dict:
        """Groups saved before the torch signature: ``decoupled`` → ``decoupled_weight_decay``,
        torch's flags filled in."""
        g = dict(g)
        if "decoupled" in g:
            g.setdefault("decoupled_weight_decay", g.pop("decoupled"))
        for k, v in dict(
            amsgrad=False,
            maximize=False,
            foreach=None,
            capturable=False,
            differentiable=False,
            fused=None,
        ).items():
            g.setdefault(k, v)
        return g

    # ------------------------------------------------------------ the step

    def _step_group(self, group: dict, entries: list) -> None:
        """One fused call for the group's parameters that have gradients."""
        if self._v_gran != "element":
            self._step_group_shared_v(group, entries)
            return
        b1, b2 = (_scalar(b) for b in group["betas"])
        lr, wd, eps = _scalar(group["lr"]), group["weight_decay"], group["eps"]
        decoupled, amsgrad = group["decoupled_weight_decay"], "max_exp_avg_sq" in self._STATES
        items, offsets, copies = [], [], []
        scalars: Dict[int, tuple] = {}
        l2, decay = (0.0, 1 - lr * wd) if decoupled else (wd, 1.0)

        def scalars_at(t: int) -> tuple:
            return (decay, l2, 1 - b1, b2, 1 - b2, eps, lr / (1 - b1**t), math.sqrt(1 - b2**t))

        for e in entries:
            w, g, kind, copy = e.views
            if copy is not None:
                copies.append(copy)
            t = e.t
            sc = scalars.get(t)
            if sc is None:  # the same for every tensor at step t: computed once
                sc = scalars[t] = scalars_at(t)
            stream = (t << 32) | (e.index << 2)  # | 0: exp_avg, 1: exp_avg_sq, 2: param, 3: max
            states = e.args  # made current by _prepare
            items.append(
                (w, g, states[0], states[1], sc, (stream, stream | 1), stream | 2, kind)
                + ((states[2], stream | 3) if amsgrad else ())
            )
            offsets.append(0 if type(e.p) in _PLAIN else _dist.element_offset(e.p))
        cuda = entries[0].p.is_cuda
        core = cuda_optim() if cuda else _core
        step = core.adamw_amsgrad_step_group if amsgrad else core.adamw_step_group
        step(
            items,
            self._opt(group, "block_size"),
            self._seed,
            self._param_rounding,
            offsets,
            **(self._step_context(entries, scalars_at) if cuda else {}),
        )
        self._write_back(copies)

    # ------------------------------------------------------------ shared second moments

    def _v_layout(self, p: torch.Tensor) -> tuple:
        """(rows R, row length L, block B, blocks per row nb) of p's second-moment groups:
        R * nb groups, group (r, j) holding row r's elements [j*B, min((j+1)*B, L))."""
        n = p.numel()
        rows = p.shape[0] if p.dim() >= 2 and self._v_gran != "tensor" else 1
        length = n // rows if rows else 0
        block = self._v_block if self._v_gran == "block" else max(length, 1)
        return rows, length, block, -(-length // block) if length else 0

    def _init_state(self, p: torch.Tensor, group: Optional[dict] = None) -> dict:
        st = super()._init_state(p, group)
        if self._v_gran != "element":
            rows, _, _, nb = self._v_layout(p)
            for name in self._STATES[1:]:  # exp_avg_sq (and max_exp_avg_sq): float32, reduced
                st[name] = torch.zeros(rows * nb, dtype=torch.float32, device=p.device)
        return st

    def _group_mean_sq(self, g: torch.Tensor, layout: tuple) -> torch.Tensor:
        """The mean of g*g over each group (g: float32 of shape (R, L)); shape (R * nb,)."""
        rows, length, block, nb = layout
        sq = g * g
        pad = nb * block - length
        if pad:
            sq = torch.nn.functional.pad(sq, (0, pad))
        sums = sq.reshape(rows, nb, block).sum(-1)
        counts = torch.full((nb,), float(block), dtype=torch.float32, device=g.device)
        counts[-1] = float(length - (nb - 1) * block)
        return (sums / counts).reshape(-1)

    @staticmethod
    def _spread(v: torch.Tensor, layout: tuple) -> torch.Tensor:
        """Per-group values (R * nb,) broadcast to the elements, shape (R, L)."""
        rows, length, block, nb = layout
        return v.reshape(rows, nb, 1).expand(rows, nb, block).reshape(rows, nb * block)[:, :length]

    def _step_group_shared_v(self, group: dict, entries: list) -> None:
        """AdamW with v shared over groups of elements, in torch (the fused step's arithmetic
        and order, with g*g replaced by its group mean)."""
        from ..codec import quantize

        b1, b2 = (_scalar(b) for b in group["betas"])
        lr, wd, eps = _scalar(group["lr"]), group["weight_decay"], group["eps"]
        decoupled, amsgrad = group["decoupled_weight_decay"], "max_exp_avg_sq" in self._STATES
        l2, decay = (0.0, 1 - lr * wd) if decoupled else (wd, 1.0)
        negate = bool(group.get("maximize", False))
        for e in entries:
            p, st, t = e.p, e.st, e.t
            stream = (t << 32) | (e.index << 2)  # | 0: exp_avg, 2: param (as the fused step)
            layout = self._v_layout(p)
            rows, length = layout[0], layout[1]
            if p.numel() == 0:
                continue
            w = p.detach().float().reshape(rows, length)
            g = p.grad.detach().float().reshape(rows, length)
            if negate:
                g = -g
            if l2:
                g = g + l2 * w
            w = w * decay
            m = self._read_m(st, p).reshape(rows, length)
            m = m + (1 - b1) * (g - m)
            v = st["exp_avg_sq"]
            v.mul_(b2).add_((1 - b2) * self._group_mean_sq(g, layout))
            if amsgrad:
                torch.maximum(st["max_exp_avg_sq"], v, out=st["max_exp_avg_sq"])
                v = st["max_exp_avg_sq"]
            denom = v.sqrt() / math.sqrt(1 - b2**t) + eps
            w = w - (lr / (1 - b1**t)) * (m / self._spread(denom, layout))
            self._write_m(st, p, m.reshape(-1), stream)
            if p.dtype is torch.float32:
                p.detach().copy_(w.view_as(p))
            else:  # bfloat16/float16: rounded from float32 as the fused step rounds them
                kind = "bfloat16" if p.dtype is torch.bfloat16 else "float16"
                r = quantize(
                    w.contiguous(),
                    kind,
                    rounding=self._param_rounding,
                    seed=self._seed,
                    stream=stream | 2,
                )
                p.detach().copy_(r.view_as(p))

    def _read_m(self, st: dict, p: torch.Tensor) -> torch.Tensor:
        """The first moment as float32 on p's device (decoded when packed)."""
        if "exp_avg" in st:
            return st["exp_avg"].reshape(-1)
        return self._decode(st, p, "exp_avg").to(p.device)

    def _write_m(self, st: dict, p: torch.Tensor, m: torch.Tensor, stream: int) -> None:
        """Store the new first moment (encoded with its codec when packed; CPU codec)."""
        if "exp_avg" in st:
            st["exp_avg"].copy_(m.view_as(st["exp_avg"]))
            return
        spec = self._specs(p, self._group_of(p))[0]
        parts = [st[f"exp_avg.{k}"] for k in ("codes", "scales", "alphas")]
        host = [t if t.device.type == "cpu" else t.cpu() for t in parts]
        codes, scales, alphas = (t.numpy() for t in host)
        _core.blockwise_quantize(
            np.ascontiguousarray(m.detach().cpu().numpy()),
            spec[2],
            codes,
            scales,
            alphas,
            self._seed,
            stream,
        )
        for t, h in zip(parts, host):
            if h is not t:
                t.copy_(h)

    def dequantized_state(self, p: torch.Tensor, name: str) -> torch.Tensor:
        """As :meth:`PackedOptimizer.dequantized_state`; with a shared second moment
        (``v_granularity`` other than "element") ``exp_avg_sq`` and ``max_exp_avg_sq`` are
        the float32 per-group values, shape (groups,)."""
        if self._v_gran != "element" and name in self._STATES[1:]:
            st = self.state.get(p)
            if not st:
                raise KeyError("p: this parameter has no state yet (no step has touched it)")
            return st[name].detach().float().cpu().clone()
        return super().dequantized_state(p, name)

    def _state_lines(self) -> list:
        lines = super()._state_lines()
        if self._v_gran != "element":
            how = {
                "row": "one per row (first axis)",
                "tensor": "one per tensor",
                "block": f"one per block of {self._v_block} along each row",
            }[self._v_gran]
            for i, line in enumerate(lines):
                for name in self._STATES[1:]:
                    if line.startswith(name + ":"):
                        lines[i] = (
                            f"{name}: float32, {how} (v_granularity="
                            f"{self._v_gran!r}: mean of g^2 over the group)"
                        )
        return lines

    def state_dict(self) -> dict:
        """As :meth:`PackedOptimizer.state_dict`, with a shared second moment's granularity in
        ``sd["lowfp"]`` (``v_granularity``, ``v_block_size``; absent for "element", so that
        state dict is as before)."""
        sd = super().state_dict()
        if self._v_gran != "element" and isinstance(sd.get("lowfp"), dict):
            sd["lowfp"] = dict(sd["lowfp"], v_granularity=self._v_gran, v_block_size=self._v_block)
        return sd

    def load_state_dict(self, state_dict: dict, *, requantize: bool = False) -> None:
        """As :meth:`PackedOptimizer.load_state_dict`; a state dict saved with another
        ``v_granularity`` (or block size) is a ValueError naming both (state dicts without
        the key were saved with "element")."""
        own = state_dict.get("lowfp") if isinstance(state_dict, dict) else None
        own = own if isinstance(own, dict) else {}
        theirs = (own.get("v_granularity", "element"), own.get("v_block_size", self._v_block))
        mine = (self._v_gran, self._v_block)
        if theirs[0] != mine[0] or (mine[0] == "block" and theirs[1] != mine[1]):
            raise ValueError(
                f"state_dict: saved with v_granularity={theirs[0]!r} "
                f"(v_block_size={theirs[1]}), this optimizer has "
                f"v_granularity={mine[0]!r} (v_block_size={mine[1]})"
            )
        super().load_state_dict(state_dict, requantize=requantize)

    def _convert(self, p, group, st, name: str, theirs: Optional[dict]) -> None:
        if self._v_gran != "element" and name in self._STATES[1:]:
            raise ValueError(
                f"state_dict: {name} cannot be converted to the shared second "
                f"moment of v_granularity={self._v_gran!r}"
            )
        super()._convert(p, group, st, name, theirs)

    def _element_only(self, what: str) -> None:
        if self._v_gran != "element":
            raise ValueError(
                f"{what}: torch.optim.AdamW keeps one second moment per element; "
                f"this optimizer has v_granularity={self._v_gran!r}"
            )

    # ------------------------------------------------------------ plain torch state

    def to_torch_state_dict(self) -> dict:
        """This optimizer's state as ``torch.optim.AdamW`` (or ``Adam``) holds it, in float32:
        load it with ``torch.optim.AdamW(params).load_state_dict(...)``.

        Raises:
            ValueError: ``v_granularity`` is not "element"."""
        self._element_only("to_torch_state_dict")
        sd = self.state_dict()
        params = [p for g in self.param_groups for p in g["params"]]
        state = {}
        for i, p in enumerate(params):
            st = self.state.get(p)
            if st:
                state[i] = {
                    "step": st["step"].clone(),
                    **{n: self._decode(st, p, n).view_as(p).to(p.device) for n in self._STATES},
                }  # on p's device, as torch keeps them
        groups = []
        for g in sd["param_groups"]:
            g = {
                k: v
                for k, v in g.items()
                if k != "decoupled_weight_decay" and k not in self._override_keys()
            }
            groups.append(g)
        return {"state": state, "param_groups": groups}

    def load_torch_state_dict(self, state_dict: dict) -> None:
        """Take over the state of a ``torch.optim.AdamW``/``Adam`` (float32 moments),
        quantizing the moments with this optimizer's codecs (nearest rounding).

        Raises:
            ValueError: the number of parameter groups or parameters does not match, or a
                state is missing (``max_exp_avg_sq`` needs ``amsgrad`` on both sides),
                ``v_granularity`` is not "element".
        """
        self._element_only("load_torch_state_dict")
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
            len(a["params"]) != len(b["params"]) for a, b in zip(groups, self.param_groups)
        ):
            raise ValueError("state_dict: parameter groups do not match this optimizer's")
        params = [p for g in self.param_groups for p in g["params"]]
        new_states = {}
        for i, st in state_dict["state"].items():
            p = params[int(i)]
            missing = [n for n in self._STATES if n not in st]
            if missing:
                raise ValueError(f"state_dict: parameter {i} has no {missing} (amsgrad must match)")
            new = self._init_state(p, self._group_of(p))
            new["step"] = torch.as_tensor(st["step"], dtype=torch.float32).clone()
            for name in self._STATES:
                new[name] = st[name]
                self._convert(p, self._group_of(p), new, name, None)
            new_states[p] = new
        for g, mine in zip(groups, self.param_groups):
            for k in ("lr", "betas", "eps", "weight_decay", "maximize"):
                if k in g:
                    mine[k] = g[k]
        self.state.clear()
        self.state.update(new_states)
        self._plans = {}

    def load_bitsandbytes(self, bnb_optimizer: Any) -> None:
        """Take over the states of a bitsandbytes 8-bit Adam/AdamW optimizer over the same
        parameters (in the same order). Their codes index bitsandbytes' dynamic map, which is
        :class:`lowfp.Dynamic` bit for bit, and their absmax values are our block scales, so
        the import copies bytes: decoded states are identical.

        Raises:
            ValueError: this optimizer's codecs or block size differ from bitsandbytes' layout
                (Dynamic(8) signed m, Dynamic(8) unsigned v, block 256), or the parameters do
                not match.
        """
        from ..qtensor import _codec_spec

        want = (Dynamic(8, True).spec(), Dynamic(8, False).spec())
        for g in self.param_groups:
            got = tuple(
                _codec_spec(c) if c else None
                for c in (self._codec_of(n, g) for n in ("exp_avg", "exp_avg_sq"))
            )
            if got != want or self._opt(g, "block_size") != 256:
                raise ValueError(
                    "bnb_optimizer: needs exp_avg=Dynamic(8), "
                    "exp_avg_sq=Dynamic(8, signed=False), block_size=256 "
                    "(AdamW8bit)"
                )
        mine = [p for g in self.param_groups for p in g["params"]]
        theirs = [p for g in bnb_optimizer.param_groups for p in g["params"]]
        if len(mine) != len(theirs) or any(a.shape != b.shape for a, b in zip(mine, theirs)):
            raise ValueError("bnb_optimizer: its parameters do not match this optimizer's")
        new_states = {}
        for p, q in zip(mine, theirs):
            src = bnb_optimizer.state.get(q)
            if not src:
                continue
            st = self._init_state(p)
            st["step"] = torch.tensor(float(src["step"]))
            for k, name in ((1, "exp_avg"), (2, "exp_avg_sq")):
                codes = src[f"state{k}"]
                if codes.dtype != torch.uint8:  # bitsandbytes keeps small tensors in float32
                    if name not in st:
                        raise ValueError(
                            f"bnb_optimizer: float32 state for a parameter of "
                            f"{p.numel()} elements; set min_quant_size to match"
                        )
                    st[name] = codes.detach().float().view_as(p).clone()
                    continue
                if name in st:
                    raise ValueError(
                        f"bnb_optimizer: 8-bit state for a parameter of "
                        f"{p.numel()} elements; set min_quant_size to match"
                    )
                st[f"{name}.codes"] = codes.detach().reshape(-1).clone()
                st[f"{name}.scales"] = src[f"absmax{k}"].detach().float().reshape(-1).clone()
            new_states[p] = st
        self.state.update(new_states)
        self._plans = {}


class AdamW8bit(AdamW):
    """AdamW with bitsandbytes' dynamic 8-bit states (signed m, unsigned v), block 256.

    Args: as :class:`AdamW`, whose other keyword options (``maximize``, ``rounding``,
    ``seed``, ``min_quant_size``, …) pass through ``**kwargs``; the codecs are fixed.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        block_size: int = 256,
        **kwargs,
    ):
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            block_size=block_size,
            exp_avg=Dynamic(8, signed=True),
            exp_avg_sq=Dynamic(8, signed=False),
            **kwargs,
        )


class AdamW4bit(AdamW):
    """AdamW with 4-bit states: dynamic signed m, zero-free linear v, block 128.

    Args: as :class:`AdamW8bit`.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        block_size: int = 128,
        **kwargs,
    ):
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            block_size=block_size,
            exp_avg=Dynamic(4, signed=True),
            exp_avg_sq=Linear(4, signed=False, zero=False),
            **kwargs,
        )


class AdamWFp8(AdamW):
    """AdamW with float8 E4M3 states (absmax-scaled blocks of 256).

    Args: as :class:`AdamW8bit`.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas=(0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        block_size: int = 256,
        **kwargs,
    ):
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            block_size=block_size,
            exp_avg="e4m3",
            exp_avg_sq="e4m3",
            **kwargs,
        )


def solo_beta1(bits: int, beta_ref: float = 0.9, bits_ref: int = 8) -> float:
    """β1 for a signed linear first moment at `bits`, by the rule of SOLO ("Pushing the Limits
    of Low-Bit Optimizers: A Focus on EMA Dynamics"): keep β/(1 − β) · r(b) no larger than at
    the reference precision, with r(b) = 1/(2^(b−1) − 1) the relative step of the code.

    Returns:
        min(beta_ref, x / (1 + x)) with x = β_ref/(1 − β_ref) · r(bits_ref)/r(bits).

    Raises:
        ValueError: bits or bits_ref outside 2..8.
    """
    if not (
        isinstance(bits, int)
        and isinstance(bits_ref, int)
        and 2 <= bits <= 8
        and 2 <= bits_ref <= 8
    ):
        raise ValueError(
            f"bits: expected an integer with 2 <= bits <= 8, got {bits!r} (reference {bits_ref!r})"
        )
    r = lambda b: 1.0 / (2 ** (b - 1) - 1)  # noqa: E731
    x = beta_ref / (1 - beta_ref) * r(bits_ref) / r(bits)
    return min(beta_ref, x / (1 + x))


class SOLO(AdamW):
    """SOLO-style low-bit AdamW: the second moment in `bits`-bit zero-free logarithmic codes
    with a per-block base from a quantile and stochastic rounding (so small EMA updates are not
    swamped; no entry decodes to 0, which would turn its update into lr·m/eps), the first
    moment in `m_bits`-bit (default `bits`) signed linear codes with the precision-specific β1
    of :func:`solo_beta1`, both stochastically rounded, block 128. Real k-bit packing: 3 bits
    take 3/8 of a byte per state.

    Args:
        params: as :class:`AdamW`.
        bits: width of the second moment's codes (2..8; and of the first moment's unless
            ``m_bits`` is given).
        lr, eps, weight_decay: as :class:`AdamW`.
        betas: default ``(solo_beta1(m_bits), 0.999)``.
        m_bits: width of the first moment's codes (2..8).
        quantile: the quantile of each block that sets its logarithmic base.
        block_size, rounding: as :class:`AdamW` (defaults 128, "stochastic").
        **kwargs: :class:`AdamW`'s other keyword options.

    Raises:
        ValueError: bits or m_bits outside 2..8, and as :class:`AdamW`.
    """

    def __init__(
        self,
        params,
        bits: int = 3,
        lr: float = 1e-3,
        betas=None,
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        *,
        m_bits: Optional[int] = None,
        quantile: float = 0.05,
        block_size: int = 128,
        rounding: TableRounding = "stochastic",
        **kwargs,
    ):
        m_bits = bits if m_bits is None else m_bits
        b1 = solo_beta1(m_bits)  # validates m_bits
        solo_beta1(bits)
        super().__init__(
            params,
            lr,
            (b1, 0.999) if betas is None else betas,
            eps,
            weight_decay,
            block_size=block_size,
            rounding=rounding,
            exp_avg=Linear(m_bits),
            # the per-block quantile sets each block's base; the fixed base must
            # still give distinct float32 levels (0.5^255 underflows at 8 bits)
            exp_avg_sq=Log(bits, zero=False, quantile=quantile, alpha=0.75 if bits == 8 else 0.5),
            **kwargs,
        )
