"""Adam and Muon on the char transformer with any of their components rounded after every step
(through :class:`lowfp.optim.LowPrecision`): the one builder of precision-sweep, beta2 and
mantissa-vs-steps.

Components: ``grad`` (gradients, before the step), ``weight`` (the weights, the initial ones
too), ``m`` (Adam's ``exp_avg``; Muon's momentum buffer and its AdamW part's ``exp_avg``), ``v``
(Adam's ``exp_avg_sq``; for Muon its AdamW part's). Adam is ``torch.optim.AdamW`` without weight
decay; Muon is lowfp's :class:`~lowfp.optim.Muon` on the block matrices with a float32-state
AdamW on the rest, wrapped in its own ``LowPrecision`` so that its states are rounded too.
"""

from __future__ import annotations

from typing import Dict, Optional

COMPONENTS = ("grad", "weight", "m", "v")
ADAM_LR = 3e-3
MUON_LR = 0.02
BETAS = (0.9, 0.999)


def build(
    name: str,
    model,
    quant: Dict[str, object],
    seed: int,
    betas=BETAS,
    adam_lr: float = ADAM_LR,
    muon_lr: float = MUON_LR,
):
    """``name`` "Adam" or "Muon"; ``quant``: component → :class:`lowfp.optim.Q` (or None);
    returns the wrapped optimizer with the initial weights already rounded."""
    import torch

    from ..optim import LowPrecision, Muon
    from .chartf import param_groups

    bad = set(quant) - set(COMPONENTS)
    if bad:
        raise ValueError(f"quant: unknown components {sorted(bad)}; expected {COMPONENTS}")
    q = {c: quant.get(c) for c in COMPONENTS}
    if name == "Adam":
        inner = torch.optim.AdamW(
            model.parameters(), lr=adam_lr, betas=tuple(betas), weight_decay=0.0, foreach=False
        )
        states = {"exp_avg": q["m"], "exp_avg_sq": q["v"]}
    elif name == "Muon":
        mats, rest = param_groups(model)
        # float32 AdamW states under their plain names (no packing) so LowPrecision sees them
        inner = Muon(
            [{"params": mats}, {"params": rest, "use_muon": False}],
            lr=muon_lr,
            weight_decay=0.0,
            adamw_lr=adam_lr,
            adamw_betas=tuple(betas),
            seed=seed,
            adamw_kwargs={"min_quant_size": 1 << 62},
        )
        part = {k: v for k, v in {"exp_avg": q["m"], "exp_avg_sq": q["v"]}.items() if v is not None}
        if part:
            inner.adamw = LowPrecision(inner.adamw, states=part, seed=seed + 1)
        states = {"momentum_buffer": q["m"]}
    else:
        raise ValueError(f"name: expected 'Adam' or 'Muon', got {name!r}")
    states = {k: v for k, v in states.items() if v is not None}
    opt = LowPrecision(inner, grad=q["grad"], weight=q["weight"], states=states, seed=seed)
    opt.quantize_weights()
    return opt


def fmt(man: int, exp_bits: int = 8) -> str:
    """The format with ``exp_bits`` exponent and ``man`` mantissa bits; for 0 bits at e8
    (powers of two) the finite signed ``e8m0b128f`` (IEEE-style e8m0 has no NaN code, bias
    127 would overflow)."""
    return "e8m0b128f" if man == 0 and exp_bits == 8 else f"e{exp_bits}m{man}"


def small_config():
    """The char transformer of the many-run sweeps: d = 32, 2 layers, context 32, batch 16."""
    from .chartf import Config

    return Config(d_model=32, layers=2, heads=4, context=32, batch=16)


def q_or_none(man: Optional[int], rounding: str):
    from ..optim import Q

    return None if man is None else Q(fmt(man), rounding)
