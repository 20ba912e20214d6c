"""SOLO's three ingredients one at a time: a 2×2×2 factorial at 3 bits.

SOLO (low-bit optimizer states, EMA dynamics) combines a logarithmic second-moment code with a
quantile base (against swamping of small v), stochastic rounding and a precision-specific β1
(:func:`lowfp.optim.solo_beta1`). In the low-bit-states experiment they change together, so
their effects are confounded. Here every combination of

- v code: 3-bit zero-free logarithmic (quantile 0.05, as SOLO) vs 3-bit zero-free linear,
- rounding of both states: nearest vs stochastic,
- β1: SOLO's rule for 3 bits vs the usual 0.9,

runs with a 3-bit signed linear first moment, blocks of 128, lowfp AdamW (every tensor
quantized), on the char transformer (d = 32; chartf's warm-up and clipping), against float32
AdamW on the same seed. A main effect is the mean over the four cells of the other two factors
of the paired loss difference; the claims are the three main effects' signs.
"""

from __future__ import annotations

import itertools
import pathlib

from . import Claim, Progress, mean_sd, pyplot, register, rel, save_plot, write_csv

BITS = 3
LR = 3e-3
SOLO = "SOLO: low-bit optimizers, EMA dynamics"
FACTORS = (
    ("v", ("log", "linear")),
    ("rounding", ("stochastic", "nearest")),
    ("beta1", ("SOLO", "0.9")),
)


def _cells():
    return list(itertools.product(*[lv for _, lv in FACTORS]))


def _main_effect(mt: dict, i: int) -> float:
    """Mean over the other factors of excess(second level) − excess(first level) of factor i."""
    good, bad = FACTORS[i][1]
    diffs = []
    for cell in _cells():
        if cell[i] != good:
            continue
        other = tuple(bad if j == i else c for j, c in enumerate(cell))
        diffs.append(mt["excess"][" ".join(other)] - mt["excess"][" ".join(cell)])
    return sum(diffs) / len(diffs)


CLAIMS = (
    Claim(
        SOLO,
        "a logarithmic v code beats a linear one at 3 bits (main effect)",
        lambda mt: _main_effect(mt, 0),
        "loss excess linear − log v, mean over 4 cells",
        unit="%",
    ),
    Claim(
        SOLO,
        "stochastic rounding beats nearest at 3 bits (main effect)",
        lambda mt: _main_effect(mt, 1),
        "loss excess nearest − stochastic, mean over 4 cells",
        unit="%",
    ),
    Claim(
        SOLO,
        "SOLO's precision-specific β1 beats β1 = 0.9 at 3 bits (main effect)",
        lambda mt: _main_effect(mt, 2),
        "loss excess β1 0.9 − SOLO β1, mean over 4 cells",
        unit="%",
    ),
    Claim(
        SOLO,
        "the full SOLO recipe (log v, stochastic, SOLO β1) beats linear v, nearest, β1 0.9",
        lambda mt: mt["excess"]["linear nearest 0.9"] - mt["excess"]["log stochastic SOLO"],
        "loss excess difference",
        unit="%",
    ),
)


@register(
    "solo-factorial",
    default_steps=400,
    quick_steps=100,
    full_steps=1600,
    summary="SOLO at 3 bits: log vs linear v × nearest vs stochastic × β1 rule",
    claims=CLAIMS,
)
def solo_factorial(
    steps: int, seed: int, out: pathlib.Path, progress: Progress, size: str = "default"
) -> dict:
    import torch

    from .. import Linear, Log
    from ..optim import AdamW, solo_beta1
    from .chartf import CharTransformer, load_text, split, torch_threads, train
    from .quantized import small_config

    cfg = small_config()
    data = split(load_text(cfg.max_bytes))
    cells = _cells()
    progress.add_total(steps * (len(cells) + 1))
    b1_solo = solo_beta1(BITS)
    val = {}
    with torch_threads(1):
        progress("AdamW float32")
        model = CharTransformer(cfg, seed)
        opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
        base = train(
            model, opt, data, cfg, steps, seed + 7, eval_at=(steps,), on_step=progress.advance
        )["val_loss"][-1]
        for v, r, b in cells:
            progress(f"{BITS}-bit: {v} v, {r}, β1 {b}")
            vc = (
                Log(BITS, zero=False, quantile=0.05)
                if v == "log"
                else Linear(BITS, signed=False, zero=False)
            )
            model = CharTransformer(cfg, seed)
            opt = AdamW(
                model.parameters(),
                lr=LR,
                weight_decay=0.0,
                seed=seed,
                betas=(b1_solo if b == "SOLO" else 0.9, 0.999),
                exp_avg=Linear(BITS),
                exp_avg_sq=vc,
                rounding=r,
                block_size=128,
                min_quant_size=0,
            )
            val[(v, r, b)] = train(
                model, opt, data, cfg, steps, seed + 7, eval_at=(steps,), on_step=progress.advance
            )["val_loss"][-1]
    excess = {" ".join(c): rel(val[c], base) for c in cells}
    rows = [("float32", "—", "0.9", base, 0.0)] + [
        (
            v,
            r,
            f"{b1_solo:.3f} (SOLO)" if b == "SOLO" else b,
            val[(v, r, b)],
            excess[f"{v} {r} {b}"],
        )
        for v, r, b in cells
    ]
    csv_name = write_csv(
        out / "solo_factorial.csv", ["v_code", "rounding", "beta1", "val_loss", "excess"], rows
    )
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = [" ".join(c) for c in cells]
    ax.barh(range(len(cells)), [excess[lab] for lab in labels])
    ax.set_yticks(range(len(cells)), labels, fontsize=8)
    ax.set(xlabel="val loss / float32 − 1", title=f"{BITS}-bit AdamW states, {steps} steps")
    ax.grid(alpha=0.3, axis="x")
    png = save_plot(fig, out / "solo_factorial.png")
    return {
        "title": f"SOLO factorial at {BITS} bits: v code × rounding × β1",
        "description": (
            f"lowfp AdamW on the d = {cfg.d_model} char transformer, lr {LR}, β2 0.999, no "
            f"weight decay, {steps} steps (50 warm-up, clip 1.0); m: {BITS}-bit signed linear; "
            f"v: {BITS}-bit zero-free log (quantile 0.05) or zero-free linear; both states "
            f"rounded nearest or stochastic; β1 = SOLO's {b1_solo:.3f} or 0.9; blocks of 128, "
            "every tensor quantized. Excess = val loss / the same seed's float32 AdamW − 1."
        ),
        "tables": [
            {
                "title": f"After {steps} steps",
                "columns": ["v code", "rounding", "β1", "val loss", "val / float32 − 1"],
                "rows": rows,
                "key": 3,
                "baseline": lambda k: ("float32", "—", "0.9"),
            }
        ],
        "plots": [png],
        "csv": [csv_name],
        "findings": [],
        "metrics": {"excess": excess, "fp32": base},
    }


def aggregate_plot(per: list, out: pathlib.Path) -> list:
    labels = [" ".join(c) for c in _cells()]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ms = [mean_sd([p["metrics"]["excess"][lab] for p in per]) for lab in labels]
    ax.barh(range(len(labels)), [m for m, _ in ms], xerr=[s for _, s in ms], capsize=3)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set(xlabel="val loss / float32 − 1 (mean ± sd)", title=f"{len(per)} seeds")
    ax.grid(alpha=0.3, axis="x")
    return [save_plot(fig, out / "solo_factorial_seeds.png")]


solo_factorial.aggregate_plot = aggregate_plot
