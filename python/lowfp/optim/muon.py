"""Muon (momentum + Newton–Schulz orthogonalization) with a low-bit packed momentum buffer.

One optimizer for a whole model: matrices (``ndim >= 2``) get Muon, everything else (biases,
gains, and any param group with ``use_muon=False``) gets :class:`lowfp.optim.AdamW`, run by an
internal instance (``.adamw``).
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from .. import _core
from .._types import TableRounding
from ..codec import Linear, quantize
from . import distributed as _dist
from .adamw import AdamW
from .base import _KINDS, PackedOptimizer, _scalar, check_lr, cuda_optim, flat, run_closure

__all__ = ["Muon", "Muon8bit", "zeropower_via_newtonschulz"]

#: Keller Jordan's quintic Newton–Schulz coefficients (torch.optim.Muon's defaults).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)

_ADAMW_GROUP_KEYS = ("lr", "betas", "eps", "weight_decay")
_ADJUST_LR = ("original", "match_rms_adamw")


def zeropower_via_newtonschulz(
    g: torch.Tensor, steps: int = 5, eps: float = 1e-7, coefficients=NS_COEFFICIENTS
) -> torch.Tensor:
    """Approximate orthogonalization ``U Vᵀ`` of a 2-D ``g = U S Vᵀ``, in bfloat16.

    Keller Jordan's quintic iteration as torch.optim.Muon computes it: ``X = g / max(‖g‖_F,
    eps)`` (transposed so that rows ≤ columns), then ``steps`` times ``A = X Xᵀ;
    B = b·A + c·A²; X = a·X + B X`` with ``(a, b, c) = coefficients``, ``B`` and ``a·X + B X``
    as ``torch.addmm``. Returns a bfloat16 tensor of ``g``'s shape.

    Raises:
        ValueError: g is not 2-D, steps outside 0..99, or not 3 coefficients.
    """
    if g.ndim != 2:
        raise ValueError(f"g: expected a 2-D matrix, got shape {tuple(g.shape)}")
    if not 0 <= steps < 100:
        raise ValueError(f"steps: expected 0..99, got {steps}")
    if len(coefficients) != 3:
        raise ValueError(f"coefficients: expected 3 values, got {coefficients!r}")
    a, b, c = coefficients
    x = g.to(torch.bfloat16, copy=True)
    tall = g.size(0) > g.size(1)
    if tall:
        x = x.T
    x.div_(x.norm().clamp(min=eps))
    for _ in range(steps):
        gram = x @ x.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, poly, x, beta=a)
    return x.T if tall else x


def _adjusted_lr(lr: float, fn: Optional[str], rows: int, cols: int) -> float:
    """torch.optim.Muon's learning-rate adjustment for a (rows, cols) matrix."""
    if fn is None or fn == "original":
        return lr * max(1.0, rows / cols) ** 0.5
    return lr * 0.2 * max(rows, cols) ** 0.5  # "match_rms_adamw"


class Muon(PackedOptimizer):
    """Muon for matrices, AdamW for the rest, in one optimizer; low-bit momentum optional.

    The positional signature is ``torch.optim.Muon``'s (same names, order and defaults);
    lowfp's extras are keyword-only. Per matrix ``W`` (any ``ndim >= 2``, viewed as
    ``(shape[0], -1)``, ``rows × cols``): ``buf ← buf + (1 − β)(g − buf)`` (fused Rust step on
    a float32 copy of the gradient; ``p.grad`` is left untouched), direction ``g + β(buf − g)``
    with Nesterov else ``buf``; ``O = NS(direction)`` (:func:`zeropower_via_newtonschulz`,
    bfloat16, ``ns_steps``); ``W ← W·(1 − lr·wd)``; ``W ← W − adjusted_lr·O`` with torch's
    ``adjust_lr_fn`` (``None``/``"original"``: ``lr·sqrt(max(1, rows/cols))``;
    ``"match_rms_adamw"``: ``0.2·lr·sqrt(max(rows, cols))``). With float32 momentum this is
    torch.optim.Muon's step; unlike torch's, other parameters are not rejected but stepped by
    AdamW.

    Param groups: a group with ``use_muon=False`` goes to AdamW whole, and there ``lr``,
    ``betas``, ``eps``, ``weight_decay`` are AdamW's (defaults ``adamw_lr``, ``adamw_betas``,
    ``adamw_eps``, ``adamw_weight_decay``). Any other group is split in two: its matrices stay
    a Muon group (``use_muon=True``) and the rest becomes a ``use_muon=False`` group with the
    optimizer's AdamW defaults, so ``param_groups`` may hold more groups than were passed.
    Every group lives in ``param_groups`` (LR schedulers scale both kinds); the AdamW
    hyperparameters are copied to the internal :class:`lowfp.optim.AdamW` (``.adamw``, built
    with ``adamw_kwargs``, e.g. ``exp_avg=lowfp.Dynamic(8)``) at each step.

    Args:
        params: parameters or param groups (float32, bfloat16 or float16; any layout).
        lr, weight_decay, momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn:
            as torch.optim.Muon (``weight_decay`` decoupled, times lr).
        adamw_lr, adamw_betas, adamw_eps, adamw_weight_decay: AdamW's, for the other
            parameters (``adamw_weight_decay`` decoupled, as torch.optim.AdamW).
        momentum_codec: storage of the Muon momentum: None (float32), a float format of at
            most 8 bits, or a Linear/Dynamic/Log codec, blockwise with float32 absmax scales
            (every matrix is quantized, whatever its size).
        block_size: elements per block of a quantized momentum (16..4096, multiple of 8).
        rounding: "nearest", "stochastic" or "stochastic16" re-encoding of the momentum.
        seed: key of the stochastic rounding; also the AdamW part's seed unless
            ``adamw_kwargs`` sets one (the Muon streams set bit 31 of the parameter field, so
            the two never draw the same bits).
        adamw_kwargs: more keyword arguments of :class:`lowfp.optim.AdamW` (its states'
            codecs, block size, rounding, seed, ``min_quant_size``).
        nonfinite, param_rounding: as :class:`lowfp.optim.AdamW`, for both parts unless
            ``adamw_kwargs`` sets them.

    Raises:
        ValueError: hyperparameters out of range (the message names the argument).
        TypeError: unknown ``adamw_kwargs``; at ``step``, tensors other than float32,
            bfloat16 or float16, or gradients of another dtype.
    """

    _STATES = ("momentum_buffer",)
    _CODEC_ARGS = {"momentum_buffer": "momentum_codec"}
    _VIEWS = False
    _PICKLED = PackedOptimizer._PICKLED + ("_adamw_defaults", "_adamw_kwargs", "adamw")

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients=NS_COEFFICIENTS,
        eps: float = 1e-7,
        ns_steps: int = 5,
        adjust_lr_fn: Optional[str] = None,
        *,
        adamw_lr: float = 3e-4,
        adamw_betas=(0.9, 0.95),
        adamw_eps: float = 1e-8,
        adamw_weight_decay: float = 0.0,
        momentum_codec: Any = None,
        block_size: int = 2048,
        rounding: TableRounding = "nearest",
        seed: int = 0,
        adamw_kwargs: Optional[Dict[str, Any]] = None,
        nonfinite: str = "skip",
        param_rounding: TableRounding = "stochastic",
    ):
        check_lr(lr)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum: expected in [0, 1), got {momentum}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay: expected >= 0, got {weight_decay}")
        if not eps >= 0.0:
            raise ValueError(f"eps: expected >= 0, got {eps}")
        if not (isinstance(ns_steps, int) and 0 <= ns_steps < 100):
            raise ValueError(f"ns_steps: expected an integer in 0..99, got {ns_steps!r}")
        if len(tuple(ns_coefficients)) != 3:
            raise ValueError(f"ns_coefficients: expected 3 values, got {ns_coefficients!r}")
        if adjust_lr_fn is not None and adjust_lr_fn not in _ADJUST_LR:
            raise ValueError(
                f"adjust_lr_fn: expected None, 'original' or 'match_rms_adamw', "
                f"got {adjust_lr_fn!r}"
            )
        kw = dict(adamw_kwargs or {})
        clash = sorted(set(kw) & {"params", *_ADAMW_GROUP_KEYS})
        if clash:
            raise TypeError(
                f"adamw_kwargs: {clash} are set by adamw_lr, adamw_betas, "
                "adamw_eps, adamw_weight_decay"
            )
        kw.setdefault("seed", seed)
        kw.setdefault("param_rounding", param_rounding)
        kw.setdefault("nonfinite", nonfinite)
        self._configure(
            {"momentum_buffer": momentum_codec},
            block_size=block_size,
            rounding=rounding,
            seed=seed,
            min_quant_size=0,
            nonfinite=nonfinite,
            param_rounding=param_rounding,
        )
        # validates adamw_* and adamw_kwargs now (AdamW's own checks and messages)
        AdamW(
            [torch.zeros(1)],
            lr=adamw_lr,
            betas=adamw_betas,
            eps=adamw_eps,
            weight_decay=adamw_weight_decay,
            **kw,
        )
        self._adamw_defaults = dict(
            lr=adamw_lr, betas=tuple(adamw_betas), eps=adamw_eps, weight_decay=adamw_weight_decay
        )
        self._adamw_kwargs = kw
        #: The internal AdamW for the parameters that are not Muon's (None when there are none).
        self.adamw: Optional[AdamW] = None
        defaults = dict(
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            nesterov=bool(nesterov),
            ns_coefficients=tuple(ns_coefficients),
            eps=eps,
            ns_steps=ns_steps,
            adjust_lr_fn=adjust_lr_fn,
            use_muon=True,
        )
        super().__init__(params, defaults)

    def _legacy_group(self, g: dict) -> dict:
        g = dict(g)
        if g.get("use_muon", True):
            g.setdefault("ns_coefficients", NS_COEFFICIENTS)
            g.setdefault("eps", 1e-7)
            g.setdefault("adjust_lr_fn", None)
        return g

    # ------------------------------------------------------------ groups

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """Add a group: split into its Muon part (matrices) and its AdamW part (the rest)."""
        group = dict(param_group)
        ps = group["params"]
        ps = [ps] if isinstance(ps, torch.Tensor) else list(ps)
        if group.get("use_muon", True) is False:
            parts = [(False, ps)]
        else:
            mats = [p for p in ps if p.ndim >= 2]
            rest = [p for p in ps if p.ndim < 2]
            parts = [(True, mats), (False, rest)] if mats and rest else [(bool(mats), ps)]
        for use_muon, sub in parts:
            g = dict(group, params=sub, use_muon=use_muon)
            if not use_muon:
                if group.get("use_muon", True) is not False:
                    # a split-off part: the optimizer's AdamW settings, not the Muon ones
                    g = {k: v for k, v in g.items() if k not in _ADAMW_GROUP_KEYS}
                for k, v in self._adamw_defaults.items():
                    g.setdefault(k, v)
            super().add_param_group(g)
            if not use_muon:
                ag = {"params": g["params"], **{k: g[k] for k in _ADAMW_GROUP_KEYS}}
                if self.adamw is None:
                    self.adamw = AdamW([ag], **self._adamw_kwargs)
                else:
                    self.adamw.add_param_group(ag)

    def _adamw_groups(self):
        return [g for g in self.param_groups if not g["use_muon"]]

    def _has_state(self, group: dict) -> bool:
        return group["use_muon"]

    # ------------------------------------------------------------ the step

    @torch.no_grad()
    def step(self, closure=None):
        """One optimization step (see torch.optim.Optimizer.step)."""
        loss = run_closure(closure)
        todo = self._prepare()  # every group checked (AdamW's too) before anything changes
        if todo is None:
            return loss
        if self.adamw is not None:
            for mine, theirs in zip(self._adamw_groups(), self.adamw.param_groups):
                theirs.update({k: mine[k] for k in _ADAMW_GROUP_KEYS})
            self.adamw.step()
        for group, entries in todo:
            if group["use_muon"]:
                for e in entries:
                    self._step_matrix(group, e)
        return loss

    def _step_matrix(self, group: dict, e) -> None:
        p = e.p
        if p.numel() == 0:
            return
        lr, beta, wd = _scalar(group["lr"]), group["momentum"], group["weight_decay"]
        stream = (e.t << 32) | (1 << 31) | (e.index << 2)
        d = (
            _dist.local(p.grad)
            .detach()
            .to(torch.float32, copy=True, memory_format=torch.contiguous_format)
        )
        core = cuda_optim() if d.is_cuda else _core  # CUDA: lowfp.cuda.optim's kernel
        core.muon_momentum(
            flat(d).reshape(-1),
            e.args[0],
            beta,
            bool(group["nesterov"]),
            self._opt(group, "block_size"),
            self._seed,
            stream,
            _dist.element_offset(p),
        )
        rows = p.shape[0]
        cols = p.numel() // rows
        # FSDP2 (sharded DTensor): momentum on the local rows; Newton–Schulz needs the
        # whole matrix, so every rank gathers the direction, orthogonalizes it and keeps its
        # own rows (identity for plain tensors)
        full = _dist.full_rows(p, d).view(rows, cols)
        o = _dist.local_rows(
            p,
            zeropower_via_newtonschulz(
                full, group["ns_steps"], group["eps"], group["ns_coefficients"]
            ),
        )
        w = _dist.local(p)
        w32 = w if w.dtype == torch.float32 else w.float()
        w32.mul_(1 - lr * wd)
        w32.add_(o.reshape(w.shape), alpha=-_adjusted_lr(lr, group["adjust_lr_fn"], rows, cols))
        if w32 is not w:  # a 16-bit weight: round the float32 update back
            w.copy_(self._round_half(w32, w.dtype, stream | 2, _dist.element_offset(p)))

    def _round_half(
        self, w32: torch.Tensor, dtype: torch.dtype, stream: int, offset: int
    ) -> torch.Tensor:
        """float32 values rounded to bfloat16/float16 values (``param_rounding``; stochastic
        rounding keyed by the seed, the parameter's stream and the elements' global index),
        still as float32."""
        w32 = w32.contiguous()
        q = quantize(
            w32 if w32.is_cuda else w32.numpy(),
            _KINDS[dtype],  # CUDA: its kernel
            rounding=self._param_rounding,
            seed=self._seed,
            stream=stream,
            offset=offset,
        )
        return torch.as_tensor(q, device=w32.device).view(w32.shape)

    # ------------------------------------------------------------ checkpoints

    def state_dict(self) -> Dict[str, Any]:
        """torch's state dict of the Muon part, with the AdamW part's under ``"adamw"``."""
        sd = super().state_dict()
        sd["adamw"] = None if self.adamw is None else self.adamw.state_dict()
        return sd

    def load_state_dict(self, state_dict: Dict[str, Any], *, requantize: bool = False) -> None:
        """Load a state dict saved by this class (``weights_only`` loads work); see
        :meth:`lowfp.optim.AdamW.load_state_dict`. Both parts are checked before either is
        loaded."""
        sd = dict(state_dict)
        adamw = sd.pop("adamw", None)
        if (adamw is None) != (self.adamw is None):
            raise ValueError(
                "state_dict: the AdamW part (parameters that are not matrices) "
                "does not match this optimizer's"
            )
        if self.adamw is not None:  # check the AdamW part first: it raises before any load
            a = dict(adamw)
            self.adamw._check_saved_overrides(a)
            a["param_groups"] = [self.adamw._legacy_group(g) for g in a["param_groups"]]
            self.adamw._check_saved_codecs(a, requantize)
        super().load_state_dict(sd, requantize=requantize)
        if self.adamw is not None:
            self.adamw.load_state_dict(adamw, requantize=requantize)

    # ------------------------------------------------------------ reporting

    def state_nbytes(self) -> int:
        """Exact bytes of all optimizer state, both parts (the step counters included)."""
        own = super().state_nbytes()
        return own + (0 if self.adamw is None else self.adamw.state_nbytes())

    def summary(self) -> str:
        """How each state is stored, for both parts, and the state bytes."""
        nm = sum(len(g["params"]) for g in self.param_groups if g["use_muon"])
        na = sum(len(g["params"]) for g in self._adamw_groups())
        lines = [
            f"Muon ({nm} matrices): " + line for line in self._state_lines() + self._count_lines()
        ]
        if self.adamw is not None:
            lines += [
                f"AdamW ({na} others): " + line for line in self.adamw.summary().splitlines()[:-1]
            ]
        lines.append(f"state bytes: {self.state_nbytes()}")
        return "\n".join(lines)


class Muon8bit(Muon):
    """Muon with its momentum in 8-bit linear codes (``lowfp.Linear(8)``: signed, symmetric,
    with zero), blockwise absmax, block 2048: the setting of "Effective Quantization of Muon
    Optimizer States" (8-bit linear blockwise Muon). About 1 + 4/2048 bytes per matrix
    element; the AdamW part keeps float32 states unless ``adamw_kwargs`` says otherwise.

    Args: as :class:`Muon` (its keyword options through ``**kwargs``); the codec is fixed.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients=NS_COEFFICIENTS,
        eps: float = 1e-7,
        ns_steps: int = 5,
        adjust_lr_fn: Optional[str] = None,
        *,
        block_size: int = 2048,
        **kwargs,
    ):
        super().__init__(
            params,
            lr,
            weight_decay,
            momentum,
            nesterov,
            ns_coefficients,
            eps,
            ns_steps,
            adjust_lr_fn,
            block_size=block_size,
            momentum_codec=Linear(8),
            **kwargs,
        )
