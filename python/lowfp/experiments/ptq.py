"""Post-training quantization of models trained by different optimizers (Beyond Outliers).

The study of optimizers under quantization ("Beyond Outliers") reports that the usual outlier
statistics of the weights — the max-to-median ratio (MMR) and the kurtosis — do not predict how
much a model loses under post-training quantization (PTQ) when the models come from different
optimizers, and that the error of a layer with every layer quantized (accumulated) differs from
its error quantized alone (isolated). Here the char transformer (d = 32) is trained by AdamW,
Muon, SOLO (3-bit states) and SGD with momentum from the same initial weights on the same
batches; then every Linear weight is rounded to MXFP4 (:func:`lowfp.qat.quantize_weights`) and
the validation loss is measured again. Statistics per model: mean over the Linear layers of
:func:`lowfp.stats.max_to_median` and :func:`lowfp.stats.kurtosis` (Pearson), and
:func:`lowfp.stats.layer_errors` (mean isolated and accumulated relative error of the layers'
outputs, and the output's) on one validation batch. Across the four optimizers of a seed the
Spearman rank correlation of each statistic with the PTQ degradation is computed.
"""

from __future__ import annotations

import math
import pathlib

from . import Claim, Progress, mean_sd, pyplot, register, rel, save_plot, write_csv

FMT = "mxfp4"
OPTIMIZERS = ("AdamW", "Muon", "SOLO 3-bit", "SGD")
PAPER = "Beyond Outliers: optimizers under PTQ/QAT"


def spearman(x, y) -> float:
    """Spearman's rank correlation (average ranks for ties); nan for < 3 points or a constant."""
    pts = [(a, b) for a, b in zip(x, y) if math.isfinite(a) and math.isfinite(b)]
    if len(pts) < 3:
        return float("nan")

    def ranks(v):
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    rx, ry = ranks([a for a, _ in pts]), ranks([b for _, b in pts])
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")


CLAIMS = (
    Claim(
        PAPER,
        "MMR does not predict PTQ degradation across optimizers",
        lambda mt: mt["rho"]["mmr"],
        "Spearman ρ(MMR, degradation) over 4 optimizers",
        sign=-1,
        min_effect=-0.5,
    ),
    Claim(
        PAPER,
        "kurtosis does not predict PTQ degradation across optimizers",
        lambda mt: mt["rho"]["kurtosis"],
        "Spearman ρ(kurtosis, degradation) over 4 optimizers",
        sign=-1,
        min_effect=-0.5,
    ),
    Claim(
        PAPER,
        "accumulated layer error exceeds isolated layer error (AdamW model)",
        lambda mt: mt["accumulated"]["AdamW"] - mt["isolated"]["AdamW"],
        "mean accumulated − isolated relative error",
    ),
)


def _make(name: str, model, seed: int):
    import torch

    from ..optim import SOLO, Muon
    from .chartf import param_groups

    if name == "AdamW":
        return torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    if name == "Muon":
        mats, rest = param_groups(model)
        return Muon(
            [{"params": mats}, {"params": rest, "use_muon": False}],
            lr=0.02,
            weight_decay=0.0,
            adamw_lr=3e-3,
            adamw_betas=(0.9, 0.999),
            seed=seed,
        )
    if name == "SOLO 3-bit":
        return SOLO(
            model.parameters(), bits=3, lr=3e-3, weight_decay=0.0, seed=seed, min_quant_size=0
        )
    return torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)


@register(
    "ptq",
    default_steps=400,
    quick_steps=120,
    full_steps=1600,
    summary="PTQ (MXFP4) of models trained by AdamW, Muon, SOLO, SGD vs MMR/kurtosis",
    claims=CLAIMS,
)
def ptq(
    steps: int, seed: int, out: pathlib.Path, progress: Progress, size: str = "default"
) -> dict:
    from .. import qat, stats
    from .chartf import CharTransformer, batches, evaluate, load_text, split, torch_threads, train
    from .quantized import small_config

    cfg = small_config()
    data = split(load_text(cfg.max_bytes))
    progress.add_total(steps * len(OPTIMIZERS))
    res = {}
    with torch_threads(1):
        for name in OPTIMIZERS:
            progress(f"{name}: train, then PTQ to {FMT}")
            model = CharTransformer(cfg, seed)
            opt = _make(name, model, seed)
            rec = train(
                model, opt, data, cfg, steps, seed + 7, eval_at=(steps,), on_step=progress.advance
            )
            before = rec["val_loss"][-1]
            ws = stats.weight_stats(model)
            mmr = sum(r["max_to_median"] for r in ws) / len(ws)
            kurt = sum(r["kurtosis"] for r in ws) / len(ws)
            x, _ = next(batches(data[1], cfg, 999))
            le = stats.layer_errors(model, x, FMT)
            iso = sum(r["isolated"] for r in le) / len(le)
            acc = sum(r["accumulated"] for r in le) / len(le)
            qat.quantize_weights(model, FMT)
            after = evaluate(model, data[1], cfg)
            res[name] = dict(
                before=before,
                after=after,
                deg=rel(after, before),
                mmr=mmr,
                kurt=kurt,
                iso=iso,
                acc=acc,
                out=le.output_error,
            )
    rows = [
        (n, r["before"], r["after"], r["deg"], r["mmr"], r["kurt"], r["iso"], r["acc"], r["out"])
        for n, r in res.items()
    ]
    rho = {
        "mmr": spearman([r["mmr"] for r in res.values()], [r["deg"] for r in res.values()]),
        "kurtosis": spearman([r["kurt"] for r in res.values()], [r["deg"] for r in res.values()]),
    }
    cols = [
        "optimizer",
        "val loss",
        f"val loss {FMT} PTQ",
        "degradation",
        "mean MMR",
        "mean kurtosis",
        "isolated err",
        "accumulated err",
        "output err",
    ]
    csv_name = write_csv(out / "ptq.csv", cols, rows)
    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for n, r in res.items():
        ax[0].scatter(r["mmr"], r["deg"], label=n)
        ax[1].scatter(r["kurt"], r["deg"], label=n)
    ax[0].set(
        xlabel="mean max-to-median |w|",
        ylabel=f"{FMT} PTQ: val loss / before − 1",
        title=f"ρ = {rho['mmr']:+.2f}",
    )
    ax[1].set(xlabel="mean kurtosis (Pearson)", title=f"ρ = {rho['kurtosis']:+.2f}")
    for a in ax:
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    png = save_plot(fig, out / "ptq.png")
    return {
        "title": f"PTQ ({FMT}) of models trained by AdamW, Muon, SOLO and SGD",
        "description": (
            f"The d = {cfg.d_model} char transformer trained {steps} steps (50 warm-up, clip "
            "1.0) by AdamW (lr 3e-3), Muon (0.02 + AdamW 3e-3), SOLO 3-bit (3e-3) and SGD "
            f"(lr 0.3, momentum 0.9), then every Linear weight rounded to {FMT} (blocks of 32, "
            "E8M0 scales; lowfp.qat.quantize_weights). Degradation = val loss after / before − "
            "1. MMR = max|w|/median|w| and kurtosis (Pearson) averaged over the Linear layers "
            "(lowfp.stats); isolated / accumulated = mean relative error of the layers' "
            "outputs with one / all layers quantized, output = of the logits "
            "(lowfp.stats.layer_errors, one validation batch). ρ = Spearman over the four "
            "optimizers of a seed."
        ),
        "tables": [
            {"title": f"After {steps} steps and {FMT} PTQ", "columns": cols, "rows": rows},
            {
                "title": "Spearman ρ with the degradation, across the optimizers",
                "columns": ["statistic", "ρ"],
                "rows": [("MMR", rho["mmr"]), ("kurtosis", rho["kurtosis"])],
            },
        ],
        "plots": [png],
        "csv": [csv_name],
        "findings": [],
        "metrics": {
            "rho": rho,
            "deg": {n: r["deg"] for n, r in res.items()},
            "isolated": {n: r["iso"] for n, r in res.items()},
            "accumulated": {n: r["acc"] for n, r in res.items()},
        },
    }


def aggregate_plot(per: list, out: pathlib.Path) -> list:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ms = [mean_sd([p["metrics"]["deg"][n] for p in per]) for n in OPTIMIZERS]
    ax.bar(range(len(OPTIMIZERS)), [m for m, _ in ms], yerr=[s for _, s in ms], capsize=3)
    ax.set_xticks(range(len(OPTIMIZERS)), OPTIMIZERS)
    ax.set(ylabel=f"{FMT} PTQ degradation (mean ± sd)", title=f"{len(per)} seeds")
    ax.grid(alpha=0.3, axis="y")
    return [save_plot(fig, out / "ptq_seeds.png")]


ptq.aggregate_plot = aggregate_plot
