"""AdamW (and Adam) with low-bit packed states, and its presets.

The presets are real subclasses (``isinstance``, ``repr``, Trainer's
``optimizer_cls_and_kwargs``, ``functools.partial`` and ZeRO's ``optimizer_class`` all see a
class), each fixing its states' codecs and default block size, as bitsandbytes'
``AdamW8bit`` and torchao's ``AdamW4bit`` do.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch

from .. import _core
from ..codec import Dynamic, Linear, Log
from . import distributed as _dist
from .base import _PLAIN, PackedOptimizer, _scalar, check_lr, cuda_optim

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
        rounding: "nearest" or "stochastic" re-encoding of the states.
        seed: key of the stochastic rounding (with the step, parameter and state).
        min_quant_size: parameters with fewer elements keep float32 states.
        nonfinite: what a step does when any gradient holds NaN or ±inf: "skip" (default:
            nothing is updated, ``skipped_steps`` counts it, the first skip warns) or "error"
            (ValueError).
        param_rounding: how bfloat16/float16 parameters take the float32 update: "stochastic"
            (default, so small updates are not lost without an fp32 master copy) or "nearest".

    A param group may set its own ``exp_avg``, ``exp_avg_sq``, ``block_size``, ``rounding``
    and ``min_quant_size``; the constructor's values are the defaults.

    Raises:
        ValueError: hyperparameters out of range or options that cannot be honoured (the
            message names the argument), unknown codecs.
        TypeError: a codec of another type.
    """

    _STATES = ("exp_avg", "exp_avg_sq")
    _CODEC_ARGS = {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq",
                   "max_exp_avg_sq": "exp_avg_sq"}

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
                 foreach: Optional[bool] = None, capturable: bool = False,
                 differentiable: bool = False, fused: Optional[bool] = None,
                 decoupled_weight_decay: bool = True, exp_avg: Any = None,
                 exp_avg_sq: Any = None, block_size: int = 256, rounding: str = "nearest",
                 seed: int = 0, min_quant_size: int = 4096, nonfinite: str = "skip",
                 param_rounding: str = "stochastic"):
        check_lr(lr)
        if not eps >= 0.0:
            raise ValueError(f"eps: expected >= 0, got {eps}")
        b1, b2 = (_scalar(b) for b in betas)
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"betas: expected each in [0, 1), got {tuple(betas)}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay: expected >= 0, got {weight_decay}")
        if capturable:
            raise ValueError("capturable: True is not supported (lowfp steps keep the step "
                             "count on the host); leave it False")
        if differentiable:
            raise ValueError("differentiable: True is not supported (lowfp steps run outside "
                             "autograd); leave it False")
        self._STATES = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if amsgrad \
            else ("exp_avg", "exp_avg_sq")
        self._configure({"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq,
                         "max_exp_avg_sq": exp_avg_sq}, block_size=block_size,
                        rounding=rounding, seed=seed, min_quant_size=min_quant_size,
                        nonfinite=nonfinite, param_rounding=param_rounding)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        amsgrad=bool(amsgrad), maximize=bool(maximize), foreach=foreach,
                        capturable=False, differentiable=False, fused=fused,
                        decoupled_weight_decay=bool(decoupled_weight_decay))
        super().__init__(params, defaults)

    _PICKLED = PackedOptimizer._PICKLED + ("_STATES",)
    _DEVICE_SKIP = True  # CUDA steps skip on the device (lowfp.cuda.optim.DeviceSkip)

    def _check_overrides(self, group):
        super()._check_overrides(group)
        if "amsgrad" in group and bool(group["amsgrad"]) != ("max_exp_avg_sq" in self._STATES):
            raise ValueError("amsgrad: set it for the whole optimizer (the constructor's "
                             f"amsgrad={'max_exp_avg_sq' in self._STATES}), not per group")

    def _stepping(self, group: dict, plan) -> list:
        entries = super()._stepping(group, plan)
        if "max_exp_avg_sq" in self._STATES and any(e.p.is_cuda for e in entries):
            raise ValueError("amsgrad: not available for CUDA parameters yet (the CUDA step "
                             "kernel has no third state); use amsgrad=False on the GPU")
        return entries

    def _legacy_group(self, g: dict) -> dict:
        """Groups saved before the torch signature: ``decoupled`` → ``decoupled_weight_decay``,
        torch's flags filled in."""
        g = dict(g)
        if "decoupled" in g:
            g.setdefault("decoupled_weight_decay", g.pop("decoupled"))
        for k, v in dict(amsgrad=False, maximize=False, foreach=None, capturable=False,
                         differentiable=False, fused=None).items():
            g.setdefault(k, v)
        return g

    # ------------------------------------------------------------ the step

    def _step_group(self, group: dict, entries: list) -> None:
        """One fused call for the group's parameters that have gradients."""
        b1, b2 = (_scalar(b) for b in group["betas"])
        lr, wd, eps = _scalar(group["lr"]), group["weight_decay"], group["eps"]
        decoupled, amsgrad = group["decoupled_weight_decay"], "max_exp_avg_sq" in self._STATES
        items, offsets, copies, scalars = [], [], [], {}
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
            items.append((w, g, states[0], states[1], sc, (stream, stream | 1), stream | 2, kind)
                         + ((states[2], stream | 3) if amsgrad else ()))
            offsets.append(0 if type(e.p) in _PLAIN else _dist.element_offset(e.p))
        cuda = entries[0].p.is_cuda
        core = cuda_optim() if cuda else _core
        if amsgrad:
            core.adamw_amsgrad_step_group(items, self._opt(group, "block_size"), self._seed,
                                          self._param_rounding == "stochastic", offsets)
        else:
            core.adamw_step_group(items, self._opt(group, "block_size"), self._seed,
                                  self._param_rounding == "stochastic", offsets,
                                  **(self._step_context(entries, scalars_at) if cuda else {}))
        self._write_back(copies)

    # ------------------------------------------------------------ plain torch state

    def to_torch_state_dict(self) -> dict:
        """This optimizer's state as ``torch.optim.AdamW`` (or ``Adam``) holds it, in float32:
        load it with ``torch.optim.AdamW(params).load_state_dict(...)``."""
        sd = self.state_dict()
        params = [p for g in self.param_groups for p in g["params"]]
        state = {}
        for i, p in enumerate(params):
            st = self.state.get(p)
            if st:
                state[i] = {"step": st["step"].clone(),
                            **{n: self._decode(st, p, n).view_as(p).to(p.device)
                               for n in self._STATES}}  # on p's device, as torch keeps them
        groups = []
        for g in sd["param_groups"]:
            g = {k: v for k, v in g.items()
                 if k != "decoupled_weight_decay" and k not in self._override_keys()}
            groups.append(g)
        return {"state": state, "param_groups": groups}

    def load_torch_state_dict(self, state_dict: dict) -> None:
        """Take over the state of a ``torch.optim.AdamW``/``Adam`` (float32 moments),
        quantizing the moments with this optimizer's codecs (nearest rounding).

        Raises:
            ValueError: the number of parameter groups or parameters does not match, or a
                state is missing (``max_exp_avg_sq`` needs ``amsgrad`` on both sides).
        """
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
                len(a["params"]) != len(b["params"]) for a, b in zip(groups, self.param_groups)):
            raise ValueError("state_dict: parameter groups do not match this optimizer's")
        params = [p for g in self.param_groups for p in g["params"]]
        new_states = {}
        for i, st in state_dict["state"].items():
            p = params[int(i)]
            missing = [n for n in self._STATES if n not in st]
            if missing:
                raise ValueError(f"state_dict: parameter {i} has no {missing} (amsgrad must "
                                 "match)")
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
            got = tuple(_codec_spec(c) if c else None
                        for c in (self._codec_of(n, g) for n in ("exp_avg", "exp_avg_sq")))
            if got != want or self._opt(g, "block_size") != 256:
                raise ValueError("bnb_optimizer: needs exp_avg=Dynamic(8), "
                                 "exp_avg_sq=Dynamic(8, signed=False), block_size=256 "
                                 "(AdamW8bit)")
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
                        raise ValueError(f"bnb_optimizer: float32 state for a parameter of "
                                         f"{p.numel()} elements; set min_quant_size to match")
                    st[name] = codes.detach().float().view_as(p).clone()
                    continue
                if name in st:
                    raise ValueError(f"bnb_optimizer: 8-bit state for a parameter of "
                                     f"{p.numel()} elements; set min_quant_size to match")
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

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, block_size: int = 256,
                 **kwargs):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, block_size=block_size,
                         exp_avg=Dynamic(8, signed=True), exp_avg_sq=Dynamic(8, signed=False),
                         **kwargs)


class AdamW4bit(AdamW):
    """AdamW with 4-bit states: dynamic signed m, zero-free linear v, block 128.

    Args: as :class:`AdamW8bit`.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, block_size: int = 128,
                 **kwargs):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, block_size=block_size,
                         exp_avg=Dynamic(4, signed=True),
                         exp_avg_sq=Linear(4, signed=False, zero=False), **kwargs)


class AdamWFp8(AdamW):
    """AdamW with float8 E4M3 states (absmax-scaled blocks of 256).

    Args: as :class:`AdamW8bit`.
    """

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, block_size: int = 256,
                 **kwargs):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, block_size=block_size,
                         exp_avg="e4m3", exp_avg_sq="e4m3", **kwargs)


def solo_beta1(bits: int, beta_ref: float = 0.9, bits_ref: int = 8) -> float:
    """β1 for a signed linear first moment at `bits`, by the rule of SOLO ("Pushing the Limits
    of Low-Bit Optimizers: A Focus on EMA Dynamics"): keep β/(1 − β) · r(b) no larger than at
    the reference precision, with r(b) = 1/(2^(b−1) − 1) the relative step of the code.

    Returns:
        min(beta_ref, x / (1 + x)) with x = β_ref/(1 − β_ref) · r(bits_ref)/r(bits).

    Raises:
        ValueError: bits or bits_ref outside 2..8.
    """
    if not (isinstance(bits, int) and isinstance(bits_ref, int)
            and 2 <= bits <= 8 and 2 <= bits_ref <= 8):
        raise ValueError(f"bits: expected an integer with 2 <= bits <= 8, got {bits!r} "
                         f"(reference {bits_ref!r})")
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

    def __init__(self, params, bits: int = 3, lr: float = 1e-3, betas=None, eps: float = 1e-8,
                 weight_decay: float = 1e-2, *, m_bits: Optional[int] = None,
                 quantile: float = 0.05, block_size: int = 128, rounding: str = "stochastic",
                 **kwargs):
        m_bits = bits if m_bits is None else m_bits
        b1 = solo_beta1(m_bits)  # validates m_bits
        solo_beta1(bits)
        super().__init__(params, lr, (b1, 0.999) if betas is None else betas, eps,
                         weight_decay, block_size=block_size, rounding=rounding,
                         exp_avg=Linear(m_bits),
                         # the per-block quantile sets each block's base; the fixed base must
                         # still give distinct float32 levels (0.5^255 underflows at 8 bits)
                         exp_avg_sq=Log(bits, zero=False, quantile=quantile,
                                        alpha=0.75 if bits == 8 else 0.5),
                         **kwargs)
