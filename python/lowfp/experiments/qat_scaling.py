"""QAT scaling per optimizer: L(N) = E + A·N^(−alpha) fitted per optimizer (Beyond Outliers).

The study of optimizers under quantization fits QAT scaling laws per optimizer (a Huber fit of
loss vs parameter count with leave-one-out intervals) and reports that QAT can reorder the
optimizers relative to full precision. Here char transformers of several widths (2 layers;
d_model from the size's list) are trained with quantization-aware training — every Linear
weight fake-quantized to MXFP4 (:func:`lowfp.qat.prepare`, straight-through estimator) — by
AdamW and by Muon, from the same initial weights and batches; the widest model is also trained
in float32 to compare the optimizers' ranking with and without QAT. The fit is
:func:`lowfp.experiments.fit.fit_power_law` (Huber on the residuals, alpha profiled,
leave-one-out intervals) of the validation loss on the parameter count N.
"""

from __future__ import annotations

import math
import pathlib

from . import Claim, Progress, mean_sd, pyplot, register, save_plot, write_csv

FMT = "mxfp4"
OPTIMIZERS = ("AdamW", "Muon")
WIDTHS = {
    "quick": (8, 16, 24, 32),
    "default": (8, 16, 24, 32, 48, 64),
    "full": (8, 16, 24, 32, 48, 64, 96),
}
PAPER = "Beyond Outliers: optimizers under PTQ/QAT"


def _flip(mt: dict) -> float:
    """QAT gap Muon − AdamW at the widest model, signed so that a reordering is positive:
    −sign(float gap) · QAT gap."""
    f, q = mt["fp_gap"], mt["qat_gap"]
    return -math.copysign(1.0, f) * q if f != 0 else float("nan")


CLAIMS = (
    Claim(
        PAPER,
        "QAT loss falls with model size as E + A·N^(−α), α > 0 (AdamW)",
        lambda mt: mt["alpha"]["AdamW"],
        "fitted α (Huber, per seed)",
    ),
    Claim(
        PAPER,
        "QAT loss falls with model size as E + A·N^(−α), α > 0 (Muon)",
        lambda mt: mt["alpha"]["Muon"],
        "fitted α (Huber, per seed)",
    ),
    Claim(
        PAPER,
        "QAT reorders optimizers (Muon vs AdamW at the widest model)",
        _flip,
        "QAT loss gap Muon − AdamW, signed against the float32 gap (> 0: reordered)",
        unit="nats",
    ),
)


def _make(name: str, model, seed: int):
    import torch

    from ..optim import Muon
    from .chartf import param_groups

    if name == "AdamW":
        return torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    mats, rest = param_groups(model)
    return Muon(
        [{"params": mats}, {"params": rest, "use_muon": False}],
        lr=0.02,
        weight_decay=0.0,
        adamw_lr=3e-3,
        adamw_betas=(0.9, 0.999),
        seed=seed,
    )


@register(
    "qat-scaling",
    default_steps=300,
    quick_steps=60,
    full_steps=1200,
    summary="MXFP4 QAT per optimizer across widths; Huber fit of E + A·N^-alpha",
    claims=CLAIMS,
)
def qat_scaling(
    steps: int, seed: int, out: pathlib.Path, progress: Progress, size: str = "default"
) -> dict:
    from .. import qat
    from .chartf import CharTransformer, Config, load_text, split, torch_threads, train
    from .fit import fit_power_law

    widths = WIDTHS[size]
    data = split(load_text(Config.max_bytes))
    runs = [(o, d, True) for o in OPTIMIZERS for d in widths] + [
        (o, widths[-1], False) for o in OPTIMIZERS
    ]
    progress.add_total(steps * len(runs))
    val, numel = {}, {}
    with torch_threads(1):
        for o, d, q in runs:
            progress(f"{o}, d = {d}, {'QAT ' + FMT if q else 'float32'}")
            cfg = Config(d_model=d, layers=2, heads=4, context=32, batch=16)
            model = CharTransformer(cfg, seed)
            numel[d] = sum(p.numel() for p in model.parameters())
            if q:
                qat.prepare(model, weight=FMT)
            opt = _make(o, model, seed)
            val[(o, d, q)] = train(
                model, opt, data, cfg, steps, seed + 7, eval_at=(steps,), on_step=progress.advance
            )["val_loss"][-1]
    fits, rows, fit_rows = {}, [], []
    for o in OPTIMIZERS:
        ns = [numel[d] for d in widths]
        ls = [val[(o, d, True)] for d in widths]
        ok = [(n, v) for n, v in zip(ns, ls) if math.isfinite(v)]
        fits[o] = fit_power_law(*zip(*ok)) if len(ok) >= 4 else None
        rows += [(o, d, numel[d], val[(o, d, True)]) for d in widths]
        f = fits[o]
        if f is not None:
            fit_rows.append(
                (
                    o,
                    f.E,
                    f.A,
                    f.alpha,
                    "[{:.3g}, {:.3g}]".format(*f.interval("alpha")),
                    "[{:.3g}, {:.3g}]".format(*f.interval("E")),
                )
            )
    wide = widths[-1]
    fp_gap = val[("Muon", wide, False)] - val[("AdamW", wide, False)]
    qat_gap = val[("Muon", wide, True)] - val[("AdamW", wide, True)]
    rank_rows = [(o, val[(o, wide, False)], val[(o, wide, True)]) for o in OPTIMIZERS]
    csv_name = write_csv(
        out / "qat_scaling.csv", ["optimizer", "d_model", "params", "val_loss_qat"], rows
    )
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for o in OPTIMIZERS:
        ns = [numel[d] for d in widths]
        ax.plot(ns, [val[(o, d, True)] for d in widths], "o", label=f"{o} QAT")
        if fits[o] is not None:
            import numpy as np

            grid = np.geomspace(min(ns), max(ns), 50)
            ax.plot(grid, fits[o](grid), "-", lw=1, label=f"fit α = {fits[o].alpha:.2f}")
    ax.set(
        xscale="log",
        xlabel="parameters N",
        ylabel="validation loss",
        title=f"{FMT} QAT, {steps} steps",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    png = save_plot(fig, out / "qat_scaling.png")
    return {
        "title": f"{FMT} QAT scaling per optimizer (AdamW, Muon)",
        "description": (
            f"Char transformers with d_model in {', '.join(map(str, widths))} (2 layers, "
            f"context 32, batch 16; {numel[widths[0]]:,}..{numel[wide]:,} parameters), "
            f"{steps} steps (50 warm-up, clip 1.0), every Linear weight fake-quantized to {FMT} "
            "during training (lowfp.qat.prepare, clipped straight-through estimator); AdamW "
            "lr 3e-3, Muon 0.02 + AdamW 3e-3. The widest model also trained in float32. Fit: "
            "L(N) = E + A·N^(−α) by Huber regression with leave-one-out ±1.96·SE intervals "
            "(lowfp.experiments.fit.fit_power_law)."
        ),
        "tables": [
            {
                "title": f"Validation loss under {FMT} QAT",
                "columns": ["optimizer", "d_model", "parameters", "val loss (QAT)"],
                "rows": rows,
                "key": 2,
            },
            {
                "title": "Huber fit L(N) = E + A·N^(−α) (one seed's interval is "
                "leave-one-out over its sizes)",
                "columns": ["optimizer", "E", "A", "α", "α 95% (LOO)", "E 95% (LOO)"],
                "rows": fit_rows,
            },
            {
                "title": f"Widest model (d = {wide}): float32 vs QAT",
                "columns": ["optimizer", "val loss float32", "val loss QAT"],
                "rows": rank_rows,
            },
        ],
        "plots": [png],
        "csv": [csv_name],
        "findings": [],
        "metrics": {
            "alpha": {o: (f.alpha if f else float("nan")) for o, f in fits.items()},
            "fp_gap": fp_gap,
            "qat_gap": qat_gap,
            "qat": {f"{o} {d}": val[(o, d, True)] for o in OPTIMIZERS for d in widths},
            "numel": [numel[d] for d in widths],
        },
    }


def aggregate_plot(per: list, out: pathlib.Path) -> list:
    widths = [int(k.split()[1]) for k in per[0]["metrics"]["qat"] if k.startswith("AdamW")]
    ns = per[0]["metrics"]["numel"]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for o in OPTIMIZERS:
        ms = [mean_sd([p["metrics"]["qat"][f"{o} {d}"] for p in per]) for d in widths]
        ax.errorbar(
            ns, [m for m, _ in ms], yerr=[s for _, s in ms], fmt="o-", capsize=3, label=f"{o} QAT"
        )
    ax.set(
        xscale="log",
        xlabel="parameters N",
        ylabel="val loss (mean ± sd)",
        title=f"{FMT} QAT, {len(per)} seeds",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return [save_plot(fig, out / "qat_scaling_seeds.png")]


qat_scaling.aggregate_plot = aggregate_plot
