"""Torch optimizers whose states live in packed low-bit storage (CPU, fused Rust steps).

Each state (first moment ``exp_avg``, second moment ``exp_avg_sq``) is chosen on its own:
``None`` (float32), a float format of at most 8 bits (``"e4m3"``, …), or a
:class:`lowfp.Linear`, :class:`lowfp.Dynamic` or :class:`lowfp.Log` codec, stored blockwise
with float32 absmax scales. One call into Rust per param group decodes both states of every
parameter, applies the update, re-encodes the states and writes the weights, in one pass over
memory, multithreaded, with the GIL released.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

import numpy as np

from .. import _core
from ..codec import Dynamic, Linear, Log, _check_choice
from ..formats import format as _format
from ..qtensor import _codec_spec

try:
    import torch
except ImportError as e:  # pragma: no cover - torch is an optional extra
    raise ImportError("lowfp.optim needs torch: pip install 'lowfp[torch]'") from e

__all__ = ["AdamW", "AdamW8bit", "AdamW4bit", "AdamWFp8", "SOLO", "solo_beta1",
           "LowPrecision", "Q", "SGD", "Muon", "Muon8bit"]

_STATES = ("exp_avg", "exp_avg_sq")


def _grad_finite(g: torch.Tensor) -> bool:
    """No NaN or inf in g: a parallel Rust scan for contiguous float32/bfloat16 CPU tensors."""
    if g.device.type == "cpu" and g.is_contiguous() and g.dtype in _KINDS:
        return _core.all_finite(_flat(g), _KINDS[g.dtype])
    return bool(torch.isfinite(g).all())


def _run_closure(closure):
    """Evaluate an optimizer closure with gradients enabled (None without one)."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


_KINDS = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def _flat(t: torch.Tensor) -> np.ndarray:
    """A 1-D NumPy view: float32 as is, 16-bit floats as their uint16 bit patterns."""
    if t.dtype in (torch.bfloat16, torch.float16):
        return t.view(-1).view(torch.int16).numpy().view(np.uint16)
    return t.view(-1).numpy()


def _codec(codec: Any, arg: str):
    """None, or a validated codec object, for one state."""
    if codec is None or isinstance(codec, (Linear, Dynamic, Log)):
        return codec
    if isinstance(codec, str) or hasattr(codec, "exp_bits"):
        f = _format(codec)
        if f.bits > 8:
            raise ValueError(f"{arg}: expected a format of at most 8 bits, got {f.name}")
        return f
    raise TypeError(f"{arg}: expected None, a format name, or a Linear/Dynamic/Log codec, "
                    f"got {type(codec).__name__}")


class AdamW(torch.optim.Optimizer):
    """AdamW (or Adam with ``decoupled=False``) with low-bit packed states.

    Args:
        params: parameters or param groups (float32 CPU tensors).
        lr, betas, eps, weight_decay: as torch.optim.AdamW.
        decoupled: True for AdamW's decoupled weight decay, False for Adam's L2 term.
        exp_avg, exp_avg_sq: codec of each state (None = float32).
        block_size: elements per block of the quantized states (16..4096, multiple of 8).
        rounding: "nearest" or "stochastic" re-encoding of the states.
        seed: key of the stochastic rounding (with the step, parameter and state).
        min_quant_size: parameters with fewer elements keep float32 states.
        nonfinite: what a step does when any gradient holds NaN or ±inf: "skip" (default:
            nothing is updated, ``skipped_steps`` counts it; packed states never see a NaN)
            or "error" (ValueError).
        param_rounding: how bfloat16/float16 parameters take the float32 update: "stochastic"
            (default, so small updates are not lost without an fp32 master copy) or "nearest".
            States are float32 or packed whatever the parameter's dtype.

    Raises:
        ValueError: hyperparameters out of range, unknown codecs.
    """

    #: The per-parameter states, in order (subclasses sharing this storage list their own).
    _STATES = _STATES

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, *, decoupled: bool = True,
                 exp_avg: Any = None, exp_avg_sq: Any = None, block_size: int = 256,
                 rounding: str = "nearest", seed: int = 0, min_quant_size: int = 4096,
                 nonfinite: str = "skip", param_rounding: str = "stochastic"):
        if not lr >= 0.0:
            raise ValueError(f"lr: expected >= 0, got {lr}")
        if not eps >= 0.0:
            raise ValueError(f"eps: expected >= 0, got {eps}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas: expected each in [0, 1), got {betas}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay: expected >= 0, got {weight_decay}")
        _check_choice("rounding", rounding, ("nearest", "stochastic"))
        _check_choice("nonfinite", nonfinite, ("skip", "error"))
        _check_choice("param_rounding", param_rounding, ("nearest", "stochastic"))
        self._param_rounding = param_rounding
        self._nonfinite = nonfinite
        self.skipped_steps = 0
        if not (isinstance(block_size, int) and 16 <= block_size <= 4096 and block_size % 8 == 0):
            raise ValueError(f"block_size: expected a multiple of 8 in 16..4096, got {block_size}")
        self._codecs = {"exp_avg": _codec(exp_avg, "exp_avg"),
                        "exp_avg_sq": _codec(exp_avg_sq, "exp_avg_sq")}
        self._block = block_size
        self._rounding = rounding
        self._seed = int(seed)
        self._min_quant = int(min_quant_size)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        decoupled=decoupled)
        super().__init__(params, defaults)

    # ------------------------------------------------------------ state layout

    def _spec(self, name: str) -> Optional[dict]:
        codec = self._codecs[name]
        if codec is None:
            return None
        d = {"bits": 0, "signed": True, "zero": True, "alpha": 0.5, "quantile": 0.0}
        d.update(_codec_spec(codec))
        d.update(block=self._block, scale="absmax", rounding=self._rounding)
        return d

    def _quantized(self, p: torch.Tensor, name: str) -> bool:
        return self._codecs[name] is not None and p.numel() >= self._min_quant

    def _init_state(self, p: torch.Tensor) -> Dict[str, torch.Tensor]:
        st: Dict[str, torch.Tensor] = {"step": torch.tensor(0.0)}
        n = p.numel()
        for name in self._STATES:
            if not self._quantized(p, name):
                st[name] = torch.zeros(p.shape, dtype=torch.float32)
                continue
            spec = self._spec(name)
            packed_len, nblocks, nalphas, _ = _core.blockwise_layout(spec, n)
            packed = np.empty(packed_len, np.uint8)
            scales = np.empty(nblocks, np.float32)
            alphas = np.empty(nalphas, np.float32)
            _core.blockwise_quantize(np.zeros(n, np.float32), spec, packed, scales, alphas, 0, 0)
            st[f"{name}.codes"] = torch.from_numpy(packed)
            st[f"{name}.scales"] = torch.from_numpy(scales)
            st[f"{name}.alphas"] = torch.from_numpy(alphas)
        return st

    def _state_arg(self, st: Dict[str, torch.Tensor], p: torch.Tensor, name: str):
        if name in st:
            return st[name].view(-1).numpy()
        return (self._spec(name), st[f"{name}.codes"].numpy(), st[f"{name}.scales"].numpy(),
                st[f"{name}.alphas"].numpy())

    # ------------------------------------------------------------ the step

    @torch.no_grad()
    def step(self, closure=None):
        """One optimization step (see torch.optim.Optimizer.step)."""
        loss = _run_closure(closure)
        if not self._grads_finite():
            return loss
        index = 0
        for group in self.param_groups:
            b1, b2 = group["betas"]
            lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
            entries = []  # the whole group goes to Rust in one call
            for p in group["params"]:
                index += 1
                if p.grad is None:
                    continue
                st, t = self._advance(p)
                bc1 = 1 - b1**t
                scalars = (
                    1 - lr * wd if group["decoupled"] else 1.0,
                    0.0 if group["decoupled"] else wd,
                    1 - b1, b2, 1 - b2, eps, lr / bc1, math.sqrt(1 - b2**t),
                )
                stream = (t << 32) | (index << 2)  # | 0: exp_avg, 1: exp_avg_sq, 2: param
                entries.append((_flat(p), _flat(p.grad), self._state_arg(st, p, "exp_avg"),
                                self._state_arg(st, p, "exp_avg_sq"), scalars,
                                (stream, stream | 1), stream | 2, _KINDS[p.dtype]))
            if entries:
                _core.adamw_step_group(entries, self._block, self._seed,
                                       self._param_rounding == "stochastic")
        return loss

    def _advance(self, p: torch.Tensor):
        """Check ``p``, create its state on first use, count the step: (state, step)."""
        self._check(p)
        st = self.state[p]
        if not st:
            st.update(self._init_state(p))
        st["step"] += 1
        return st, int(st["step"].item())

    def _grads_finite(self) -> bool:
        """Apply the ``nonfinite`` policy; True when the step may proceed."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and not p.grad.is_sparse and not _grad_finite(p.grad):
                    if self._nonfinite == "error":
                        raise ValueError("grad: a gradient holds NaN or inf (nonfinite='error')")
                    self.skipped_steps += 1
                    return False
        return True

    @staticmethod
    def _check(p: torch.Tensor) -> None:
        if p.grad.is_sparse:
            raise ValueError("grad: sparse gradients are not supported")
        if p.is_complex() or p.grad.is_complex():
            raise TypeError("param: complex parameters are not supported")
        if p.device.type != "cpu":
            raise ValueError(f"param: on {p.device}; lowfp.optim runs on CPU tensors "
                             "(the GPU path is not available yet)")
        if p.dtype not in _KINDS or p.grad.dtype != p.dtype:
            raise TypeError("param: expected float32, bfloat16 or float16 parameters with "
                            f"gradients of the same dtype, got {p.dtype} and {p.grad.dtype}")
        if not (p.is_contiguous() and p.grad.is_contiguous()):
            raise ValueError("param: expected contiguous parameters and gradients")

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Load a state dict saved by this optimizer class (``weights_only`` loads work)."""
        super().load_state_dict(state_dict)
        self._restore_loaded(state_dict)

    def _restore_loaded(self, state_dict: Dict[str, Any]) -> None:
        """After torch's load_state_dict: undo its casts, then check the layout."""
        # torch casts every state tensor of a float parameter to the parameter's dtype (packed
        # codes to float32, float32 moments to bfloat16): put the saved tensors back as saved.
        params = [p for g in self.param_groups for p in g["params"]]
        for i, saved in state_dict["state"].items():
            st = self.state[params[int(i)]]
            for k, t in saved.items():
                if torch.is_tensor(t) and k != "step":
                    st[k] = t.detach().clone().contiguous()
        for p, st in self.state.items():
            self._check_layout(p, st)

    def _check_layout(self, p: torch.Tensor, st: Dict[str, torch.Tensor]) -> None:
        """A loaded state must match this optimizer's codecs and block size."""
        want = self._init_state(p)
        for k, t in want.items():
            if k not in st or st[k].shape != t.shape:
                got = tuple(st[k].shape) if k in st else "missing"
                raise ValueError(
                    f"state_dict: state {k!r} of a parameter of shape {tuple(p.shape)} is {got}, "
                    f"expected {tuple(t.shape)}: saved with a different configuration "
                    f"({self.summary().splitlines()[0]} …)")

    # ------------------------------------------------------------ plain torch state

    def _dequantize(self, st: Dict[str, torch.Tensor], p: torch.Tensor, name: str):
        if name in st:
            return st[name].clone()
        out = np.empty(p.numel(), np.float32)
        _core.blockwise_dequantize(st[f"{name}.codes"].numpy(), self._spec(name),
                                   st[f"{name}.scales"].numpy(), st[f"{name}.alphas"].numpy(),
                                   np.float32(1.0), out)
        return torch.from_numpy(out).view_as(p)

    def to_torch_state_dict(self) -> Dict[str, Any]:
        """This optimizer's state as ``torch.optim.AdamW`` (or ``Adam``) holds it, in float32:
        load it with ``torch.optim.AdamW(params).load_state_dict(...)``."""
        sd = self.state_dict()
        params = [p for g in self.param_groups for p in g["params"]]
        state = {}
        for i, p in enumerate(params):
            st = self.state.get(p)
            if st:
                state[i] = {"step": st["step"].clone(),
                            **{n: self._dequantize(st, p, n) for n in _STATES}}
        groups = []
        for g in sd["param_groups"]:
            g = {k: v for k, v in g.items() if k != "decoupled"}
            g.update(amsgrad=False, maximize=False, foreach=None, capturable=False,
                     differentiable=False, fused=None)
            groups.append(g)
        return {"state": state, "param_groups": groups}

    def load_torch_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Take over the state of a ``torch.optim.AdamW``/``Adam`` (float32 moments),
        quantizing the moments with this optimizer's codecs (nearest rounding).

        Raises:
            ValueError: the number of parameter groups or parameters does not match.
        """
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
                len(a["params"]) != len(b["params"]) for a, b in zip(groups, self.param_groups)):
            raise ValueError("state_dict: parameter groups do not match this optimizer's")
        params = [p for g in self.param_groups for p in g["params"]]
        for g, mine in zip(groups, self.param_groups):
            for k in ("lr", "betas", "eps", "weight_decay"):
                mine[k] = g[k]
        self.state.clear()
        for i, st in state_dict["state"].items():
            p = params[int(i)]
            new = self._init_state(p)
            new["step"] = torch.as_tensor(st["step"], dtype=torch.float32).clone()
            for name in _STATES:
                value = st[name].detach().to(torch.float32).contiguous().view(-1)
                if name in new:
                    new[name] = value.view_as(p).clone()
                    continue
                _core.blockwise_quantize(value.numpy(), self._spec(name),
                                         new[f"{name}.codes"].numpy(),
                                         new[f"{name}.scales"].numpy(),
                                         new[f"{name}.alphas"].numpy(), 0, 0)
            self.state[p] = new

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
        want = (Dynamic(8, True).spec(), Dynamic(8, False).spec())
        got = tuple(_codec_spec(self._codecs[n]) if self._codecs[n] else None for n in _STATES)
        if got != want or self._block != 256:
            raise ValueError("bnb_optimizer: needs exp_avg=Dynamic(8), "
                             "exp_avg_sq=Dynamic(8, signed=False), block_size=256 (AdamW8bit)")
        mine = [p for g in self.param_groups for p in g["params"]]
        theirs = [p for g in bnb_optimizer.param_groups for p in g["params"]]
        if len(mine) != len(theirs) or any(a.shape != b.shape for a, b in zip(mine, theirs)):
            raise ValueError("bnb_optimizer: its parameters do not match this optimizer's")
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
            self.state[p] = st

    # ------------------------------------------------------------ reporting

    def state_nbytes(self) -> int:
        """Exact bytes of all optimizer state (the step counters included)."""
        return sum(t.numel() * t.element_size() for st in self.state.values()
                   for t in st.values() if torch.is_tensor(t))

    def _state_lines(self) -> list:
        """One line per state: how it is stored."""
        lines = []
        for name in self._STATES:
            c = self._codecs[name]
            how = "float32" if c is None else (
                f"{c!r}, block {self._block}, fp32 absmax scales, {self._rounding} rounding"
                + (f"; float32 below {self._min_quant} elements" if self._min_quant > 0 else ""))
            lines.append(f"{name}: {how}")
        return lines

    def summary(self) -> str:
        """One line per state: how it is stored; then the bytes of all state."""
        return "\n".join(self._state_lines() + [f"state bytes: {self.state_nbytes()}"])


def AdamW8bit(params, **kwargs) -> AdamW:  # noqa: N802 - the name users know
    """AdamW with bitsandbytes' dynamic 8-bit states (signed m, unsigned v), block 256."""
    kwargs.setdefault("block_size", 256)
    return AdamW(params, exp_avg=Dynamic(8, signed=True), exp_avg_sq=Dynamic(8, signed=False),
                 **kwargs)


def AdamW4bit(params, **kwargs) -> AdamW:  # noqa: N802
    """AdamW with 4-bit states: dynamic signed m, zero-free linear v, block 128."""
    kwargs.setdefault("block_size", 128)
    return AdamW(params, exp_avg=Dynamic(4, signed=True),
                 exp_avg_sq=Linear(4, signed=False, zero=False), **kwargs)


def AdamWFp8(params, **kwargs) -> AdamW:  # noqa: N802
    """AdamW with float8 E4M3 states (absmax-scaled blocks of 256)."""
    kwargs.setdefault("block_size", 256)
    return AdamW(params, exp_avg="e4m3", exp_avg_sq="e4m3", **kwargs)


def solo_beta1(bits: int, beta_ref: float = 0.9, bits_ref: int = 8) -> float:
    """β1 for a signed linear first moment at `bits`, by the rule of SOLO ("Pushing the Limits
    of Low-Bit Optimizers: A Focus on EMA Dynamics"): keep β/(1 − β) · r(b) no larger than at
    the reference precision, with r(b) = 1/(2^(b−1) − 1) the relative step of the code.

    Returns:
        min(beta_ref, x / (1 + x)) with x = β_ref/(1 − β_ref) · r(bits_ref)/r(bits).
    """
    if not (2 <= bits <= 8 and 2 <= bits_ref <= 8):
        raise ValueError(f"bits: expected 2..8, got {bits} (reference {bits_ref})")
    r = lambda b: 1.0 / (2 ** (b - 1) - 1)  # noqa: E731
    x = beta_ref / (1 - beta_ref) * r(bits_ref) / r(bits)
    return min(beta_ref, x / (1 + x))


def SOLO(params, bits: int = 3, *, m_bits: Optional[int] = None, quantile: float = 0.05,  # noqa: N802
         beta2: float = 0.999, **kwargs) -> AdamW:
    """SOLO-style low-bit AdamW: the second moment in `bits`-bit zero-free logarithmic codes
    with a per-block base from a quantile and stochastic rounding (so small EMA updates are not
    swamped; no entry decodes to 0, which would turn its update into lr·m/eps), the first moment in `m_bits`-bit (default `bits`) signed linear codes with the
    precision-specific β1 of :func:`solo_beta1`, both stochastically rounded, block 128.
    Real k-bit packing: 3 bits take 3/8 of a byte per state.
    """
    m_bits = bits if m_bits is None else m_bits
    kwargs.setdefault("block_size", 128)
    kwargs.setdefault("rounding", "stochastic")
    kwargs.setdefault("betas", (solo_beta1(m_bits), beta2))
    return AdamW(params, exp_avg=Linear(m_bits), exp_avg_sq=Log(bits, zero=False, quantile=quantile),
                 **kwargs)


from .lowprec import LowPrecision, Q  # noqa: E402 - built on the classes above
from .muon import Muon, Muon8bit  # noqa: E402
from .sgd import SGD  # noqa: E402
