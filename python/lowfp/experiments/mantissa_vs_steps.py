"""How many mantissa bits training needs as the number of steps T grows (Tang, Li, Zou).

The analysis of Adam and Muon under floating-point quantization says a mantissa of order
log T suffices: the rounding errors of T steps accumulate, so longer runs need more bits, but
only logarithmically more. Every run rounds ALL components jointly (gradients, weights, m, v;
:mod:`lowfp.experiments.quantized`) to ``e8m<M>`` with round-to-nearest after every step. The
learning rate is constant after a fixed 50-step warm-up, so the validation loss at step t of a
T-step run is the final loss of a t-step run: one run per M gives every T. "Needed" at T = the
fewest M whose loss is within 1% of the same seed's float32 run at T (a run that never gets
there counts as the largest M + 2, censored). The fit is a Huber line of needed bits on log2 T
per seed (:mod:`lowfp.experiments.fit`); the claim is about its slope.
"""

from __future__ import annotations

import math
import pathlib

from . import Claim, Progress, mean_sd, pyplot, register, save_plot, write_csv
from .fit import huber_line

TOL = 0.01
MANS = {
    "quick": (4, 7, 10),
    "default": (3, 4, 6, 8, 10),
    "full": (3, 4, 5, 6, 7, 8, 10, 12),
}
OPTS = {"quick": ("Adam", "Muon"), "default": ("Adam", "Muon"), "full": ("Adam", "Muon")}
TANG = "Tang, Li, Zou: Adam/Muon under floating-point quantization"


def _muon_minus_adam(mt: dict) -> float:
    if "Muon" not in mt["needed"]:
        return float("nan")
    return mt["needed"]["Adam"][-1] - mt["needed"]["Muon"][-1]


CLAIMS = (
    Claim(
        TANG,
        "the mantissa bits needed grow with log T (Adam, all components, nearest)",
        lambda mt: mt["slope"]["Adam"],
        "Huber slope of needed bits on log2 T (per seed)",
        unit="bits/doubling",
    ),
    Claim(
        TANG,
        "Muon needs fewer mantissa bits than Adam (all components, nearest)",
        _muon_minus_adam,
        "needed bits Adam − Muon at the largest T",
        unit="bits",
    ),
)


def _evals(steps: int):
    """T/8, T/4, T/2, T; those inside the 50 warm-up steps dropped while 3 remain."""
    ts = sorted({max(1, steps // 8), max(1, steps // 4), max(1, steps // 2), steps})
    while len(ts) > 3 and ts[0] < 50:
        ts.pop(0)
    return tuple(ts)


@register(
    "mantissa-vs-steps",
    default_steps=400,
    quick_steps=150,
    full_steps=3200,
    summary="mantissa bits needed (all components, nearest) vs steps T, fit on log T",
    claims=CLAIMS,
)
def mantissa_vs_steps(
    steps: int, seed: int, out: pathlib.Path, progress: Progress, size: str = "default"
) -> dict:
    from ..optim import Q
    from .chartf import CharTransformer, load_text, split, torch_threads, train
    from .quantized import COMPONENTS, build, fmt, small_config

    cfg = small_config()
    data = split(load_text(cfg.max_bytes))
    mans, opts = MANS[size], OPTS[size]
    evals = _evals(steps)
    runs = [(o, m) for o in opts for m in (None,) + mans]
    progress.add_total(steps * len(runs))
    val = {}
    with torch_threads(1):
        for o, m in runs:
            progress(f"{o}, {'float32' if m is None else f'all components {fmt(m)} nearest'}")
            model = CharTransformer(cfg, seed)
            quant = {} if m is None else {c: Q(fmt(m), "nearest") for c in COMPONENTS}
            opt = build(o, model, quant, seed)
            rec = train(
                model, opt, data, cfg, steps, seed + 7, eval_at=evals, on_step=progress.advance
            )
            val[(o, m)] = dict(zip(rec["eval_step"], rec["val_loss"]))
    cens = mans[-1] + 2
    needed, slope, rows = {}, {}, []
    for o in opts:
        ns = []
        for t in evals:
            ok = [m for m in mans if val[(o, m)][t] <= (1 + TOL) * val[(o, None)][t]]
            ns.append(min(ok) if ok else cens)
        needed[o] = ns
        slope[o] = huber_line([math.log2(t) for t in evals], ns)[1]
        rows += [
            (o, t, val[(o, None)][t], *[val[(o, m)][t] for m in mans], n) for t, n in zip(evals, ns)
        ]
    csv_name = write_csv(
        out / "mantissa_vs_steps.csv",
        ["optimizer", "steps", "float32"] + [f"m{m}" for m in mans] + ["needed_bits"],
        rows,
    )
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for o in opts:
        ax.plot(evals, needed[o], "o-", label=f"{o} (slope {slope[o]:+.2f} bits/doubling)")
    ax.set(
        xscale="log",
        xlabel="steps T",
        ylabel=f"fewest bits within {TOL:.0%} of float32",
        title="all components e8mM, round to nearest",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    png = save_plot(fig, out / "mantissa_vs_steps.png")
    return {
        "title": "mantissa bits needed vs steps (all components rounded jointly, nearest)",
        "description": (
            f"The d = {cfg.d_model} char transformer; {', '.join(opts)} (Adam lr 3e-3, Muon "
            "0.02 on matrices + AdamW 3e-3; 50 warm-up steps, clip 1.0, then constant) with "
            "gradients, weights, m and v all rounded to e8m{"
            + ",".join(map(str, mans))
            + "} with round-to-nearest after every step; validation loss at T = "
            + ", ".join(map(str, evals))
            + f". Needed = fewest M within {TOL:.0%} of the same "
            f"seed's float32 loss at T ({cens} = none of them). Slope: Huber line of needed "
            "bits on log2 T."
        ),
        "tables": [
            {
                "title": "Validation loss and bits needed, by T",
                "columns": ["optimizer", "T", "float32"]
                + [f"m = {m}" for m in mans]
                + ["needed bits"],
                "rows": rows,
                "key": 2,
            },
            {
                "title": "Slope of needed bits on log2 T",
                "columns": ["optimizer", "slope (bits per doubling of T)"],
                "rows": [(o, slope[o]) for o in opts],
            },
        ],
        "plots": [png],
        "csv": [csv_name],
        "findings": [],
        "metrics": {"needed": needed, "slope": slope, "evals": list(evals)},
    }


def aggregate_plot(per: list, out: pathlib.Path) -> list:
    evals = per[0]["metrics"]["evals"]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for o in per[0]["metrics"]["needed"]:
        ms = [mean_sd([p["metrics"]["needed"][o][i] for p in per]) for i in range(len(evals))]
        ax.errorbar(
            evals, [m for m, _ in ms], yerr=[s for _, s in ms], fmt="o-", capsize=3, label=o
        )
    ax.set(
        xscale="log",
        xlabel="steps T",
        ylabel="needed mantissa bits (mean ± sd)",
        title=f"all components, nearest, {len(per)} seeds",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return [save_plot(fig, out / "mantissa_vs_steps_seeds.png")]


mantissa_vs_steps.aggregate_plot = aggregate_plot
