"""Sharpness disparity across transformer blocks and blockwise learning rates (Wang et al.).

The sharpness-disparity study reports that the top Hessian eigenvalue of each block type of a
transformer is ordered Embedding << QK < FFN < VO << Norm, early in training and throughout,
and that scaling each block type's learning rate up where it is flat (blockwise LR: Embedding
10x, QK 8x, FFN 6x, VO 4x, Norm 1x; :func:`lowfp.geometry.blockwise_lr_groups`) trains faster
than a tuned AdamW. Here, on the char transformer (d = 32; separate q, k, v, o projections so
that the block types are separable):

- AdamW at each lr of a small grid; the best final validation loss per seed is the tuned
  baseline; the sharpness of each block type (:func:`lowfp.geometry.sharpness`, power
  iteration on Hessian-vector products, one training batch) is measured along the lr 3e-3
  run at steps 0, T/4 and T;
- blockwise LR on top of the tuned lr (the paper's multipliers; other parameters, the output
  layer, 1x), with float32 states and with lowfp's 8-bit states (AdamW8bit, every tensor
  quantized) against AdamW8bit at the tuned lr.
"""

from __future__ import annotations

import math
import pathlib

from . import Claim, Progress, mean_sd, pyplot, register, save_plot, write_csv

LRS = (2e-3, 3e-3, 5e-3)
#: The AdamW run along which sharpness is measured (the reference lr of the other experiments).
SHARP_LR = 3e-3
CLAIMED = ("embedding", "qk", "ffn", "vo", "norm")  # flattest → sharpest
PAPER = "Sharpness disparity (blockwise LR)"


def _rho(order: dict) -> float:
    from .ptq import spearman

    return spearman([CLAIMED.index(k) for k in CLAIMED], [order[k] for k in CLAIMED])


CLAIMS = (
    Claim(
        PAPER,
        "sharpness is ordered Emb < QK < FFN < VO < Norm at the end of training",
        lambda mt: _rho(mt["sharp"][-1]),
        "Spearman ρ(measured, claimed order), last point",
        min_effect=0.5,
    ),
    Claim(
        PAPER,
        "... and already early (at T/4)",
        lambda mt: _rho(mt["sharp"][1]),
        "Spearman ρ(measured, claimed order) at T/4",
        min_effect=0.5,
    ),
    Claim(
        PAPER,
        "Norm blocks are far sharper than embeddings (> 10x)",
        lambda mt: (
            math.log10(mt["sharp"][-1]["norm"] / mt["sharp"][-1]["embedding"])
            if mt["sharp"][-1]["embedding"] > 0
            else float("nan")
        ),
        "log10 sharpness Norm / Embedding, last point",
        min_effect=1.0,
        unit="decades",
    ),
    Claim(
        PAPER,
        "blockwise LR beats a tuned AdamW (float32 states)",
        lambda mt: mt["val"]["AdamW tuned"] - mt["val"]["blockwise LR"],
        "val loss tuned AdamW − blockwise LR",
        unit="nats",
    ),
    Claim(
        PAPER,
        "blockwise LR beats AdamW with 8-bit states too",
        lambda mt: mt["val"]["AdamW8bit"] - mt["val"]["blockwise LR, AdamW8bit"],
        "val loss AdamW8bit − blockwise LR AdamW8bit",
        unit="nats",
    ),
)


@register(
    "blockwise-lr",
    default_steps=400,
    quick_steps=100,
    full_steps=1600,
    summary="sharpness per block type over training; blockwise LR vs tuned AdamW",
    claims=CLAIMS,
)
def blockwise_lr(
    steps: int, seed: int, out: pathlib.Path, progress: Progress, size: str = "default"
) -> dict:
    import torch

    from ..geometry import blockwise_lr_groups, sharpness
    from ..optim import AdamW8bit
    from .chartf import CharTransformer, batches, load_text, split, torch_threads, train
    from .quantized import small_config

    cfg = small_config()
    data = split(load_text(cfg.max_bytes))
    progress.add_total(steps * (len(LRS) + 3))
    probe = next(batches(data[0], cfg, 4242))
    at = sorted({0, max(1, steps // 4), steps})
    val, sharp = {}, []

    def measure(model):
        groups = blockwise_lr_groups(model, lr=1.0)
        s = sharpness(
            model,
            lambda m, b: m.loss(*b),
            probe,
            [g for g in groups if g["name"] in CLAIMED],
            iters=10,
            seed=seed,
        )
        return {k: float(v) for k, v in s.items()}

    with torch_threads(1):
        for lr in LRS:
            progress(f"AdamW lr {lr:g}" + (f" (+ sharpness at {at})" if lr == SHARP_LR else ""))
            model = CharTransformer(cfg, seed)
            opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
            sh = [measure(model)] if lr == SHARP_LR else []
            count = [0]

            def on_step(model=model, sh=sh, lr=lr, count=count):
                progress.advance()
                count[0] += 1
                if lr == SHARP_LR and count[0] in at[1:]:
                    sh.append(measure(model))

            rec = train(model, opt, data, cfg, steps, seed + 7, eval_at=(steps,), on_step=on_step)
            val[f"AdamW {lr:g}"] = rec["val_loss"][-1]
            if sh:
                sharp = sh
        best = min(
            LRS,
            key=lambda lr: (
                val[f"AdamW {lr:g}"] if math.isfinite(val[f"AdamW {lr:g}"]) else float("inf")
            ),
        )
        val["AdamW tuned"] = val[f"AdamW {best:g}"]
        runs = [
            (
                "blockwise LR",
                lambda m: torch.optim.AdamW(
                    blockwise_lr_groups(m, lr=best), lr=best, weight_decay=0.0
                ),
            ),
            (
                "AdamW8bit",
                lambda m: AdamW8bit(
                    m.parameters(), lr=best, weight_decay=0.0, min_quant_size=0, seed=seed
                ),
            ),
            (
                "blockwise LR, AdamW8bit",
                lambda m: AdamW8bit(
                    blockwise_lr_groups(m, lr=best),
                    lr=best,
                    weight_decay=0.0,
                    min_quant_size=0,
                    seed=seed,
                ),
            ),
        ]
        for label, make in runs:
            progress(label)
            model = CharTransformer(cfg, seed)
            opt = make(model)
            val[label] = train(
                model, opt, data, cfg, steps, seed + 7, eval_at=(steps,), on_step=progress.advance
            )["val_loss"][-1]
    rows = [(k, v) for k, v in val.items()]
    sh_rows = [(t, *[s[k] for k in CLAIMED]) for t, s in zip(at, sharp)]
    csv_name = write_csv(out / "blockwise_lr_sharpness.csv", ["step", *CLAIMED], sh_rows)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for k in CLAIMED:
        ax.plot(at, [max(abs(s[k]), 1e-8) for s in sharp], "o-", label=k)
    ax.set(
        yscale="log",
        xlabel="step",
        ylabel="top Hessian eigenvalue (|.|)",
        title=f"sharpness per block type, AdamW lr {SHARP_LR:g}",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    png = save_plot(fig, out / "blockwise_lr.png")
    return {
        "title": "sharpness per block type and blockwise learning rates",
        "description": (
            f"The d = {cfg.d_model} char transformer (separate q, k, v, o), {steps} steps (50 "
            f"warm-up, clip 1.0). AdamW (β = (0.9, 0.999), no weight decay) at lr "
            f"{', '.join(map(str, LRS))}; the best per seed is 'tuned'. Sharpness = top "
            "Hessian eigenvalue of each block type's parameters (lowfp.geometry.sharpness, 10 "
            f"power iterations, one fixed training batch) at steps {', '.join(map(str, at))} "
            f"of the lr {SHARP_LR:g} run. Blockwise LR = lowfp.geometry.blockwise_lr_groups "
            "on the tuned lr (Embedding 10x, QK 8x, FFN 6x, VO 4x, Norm 1x, output layer 1x); "
            "8-bit = lowfp AdamW8bit (dynamic 8-bit m and v, every tensor quantized)."
        ),
        "tables": [
            {
                "title": f"Validation loss after {steps} steps",
                "columns": ["run", "val loss"],
                "rows": rows,
            },
            {
                "title": f"Sharpness per block type along the AdamW lr {SHARP_LR:g} run",
                "columns": ["step", *CLAIMED],
                "rows": sh_rows,
            },
        ],
        "plots": [png],
        "csv": [csv_name],
        "findings": [],
        "metrics": {"val": val, "sharp": sharp, "best_lr": best, "at": at},
    }


def aggregate_plot(per: list, out: pathlib.Path) -> list:
    at = per[0]["metrics"]["at"]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for k in CLAIMED:
        ms = [
            mean_sd([math.log10(max(abs(p["metrics"]["sharp"][i][k]), 1e-8)) for p in per])
            for i in range(len(at))
        ]
        ax.errorbar(at, [m for m, _ in ms], yerr=[s for _, s in ms], fmt="o-", capsize=3, label=k)
    ax.set(xlabel="step", ylabel="log10 sharpness (mean ± sd)", title=f"{len(per)} seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return [save_plot(fig, out / "blockwise_lr_seeds.png")]


blockwise_lr.aggregate_plot = aggregate_plot
