"""Swamping of a low-bit second moment: linear (nearest) vs logarithmic (stochastic) codes.

Part 1 runs the EMA v ← β2·v + (1−β2)·g² of lowfp's AdamW on its own (lr = 0) with constant
gradients g = exp(U(−7, 0)) over 8192 elements, and compares the decoded v with the exact float32
EMA. Part 2 trains AdamW on a noisy linear regression (4096 features whose scales span 3
decades, so gradients do too) with float32, linear-b and log-b second moments.
"""

from __future__ import annotations

import math
import pathlib

import numpy as np

from . import Claim, Progress, pyplot, record_points, register, save_plot, write_csv

BITS = (2, 3, 4)
N_EMA = 8192
BETA2 = 0.999
D_TRAIN = 4096
BATCH = 32
NOISE = 0.5
LR = 3e-3
BLOCK = 256


def _codecs():
    """(label, bits, kind, codec, rounding) of every quantized second moment."""
    from .. import Linear, Log

    out = []
    for b in BITS:
        out.append((f"linear {b}-bit", b, "linear", Linear(b, signed=False), "nearest"))
        out.append((f"log {b}-bit", b, "log", Log(b, quantile=0.05), "stochastic"))
    return out


def _ema(steps: int, seed: int, out: pathlib.Path, progress: Progress):
    import torch

    from ..optim import AdamW

    gen = torch.Generator().manual_seed(seed)
    g = torch.exp(torch.empty(N_EMA).uniform_(-7.0, 0.0, generator=gen))
    small = g < g.median()
    pts = record_points(steps)
    # the exact float32 EMA at the recorded steps (v_t = (1 − β2^t)·g² from v_0 = 0)
    exact = {}
    v = torch.zeros(N_EMA)
    t = 0
    for s in pts:
        while t < s:
            v.mul_(BETA2).add_(g * g, alpha=1 - BETA2)
            t += 1
        exact[s] = float(v[small].mean())
    curves = {}
    summary = []
    for label, b, kind, codec, rounding in _codecs():
        progress(f"EMA, {label} ({rounding}), {steps} steps")
        p = torch.zeros(N_EMA, requires_grad=True)
        opt = AdamW(
            [p],
            lr=0.0,
            betas=(0.9, BETA2),
            weight_decay=0.0,
            exp_avg_sq=codec,
            rounding=rounding,
            seed=seed,
            min_quant_size=0,
            block_size=BLOCK,
        )
        err, zero, zero_all = [], [], []
        nxt = 0
        for s in range(1, steps + 1):
            p.grad = g.clone()
            opt.step()
            progress.advance()
            if s == pts[nxt]:
                vq = opt.dequantized_state(p, "exp_avg_sq")
                err.append(abs(float(vq[small].mean()) / exact[s] - 1.0))
                zero.append(float((vq[small] == 0).float().mean()))
                zero_all.append(float((vq == 0).float().mean()))
                nxt += 1
        curves[label] = (err, zero, zero_all)
        summary.append((b, kind, rounding, err[-1], zero[-1], zero_all[-1], opt.state_nbytes()))
    rows = [
        (s, lab, e, z, za)
        for lab, (es, zs, zas) in curves.items()
        for s, e, z, za in zip(pts, es, zs, zas)
    ]
    csv_name = write_csv(
        out / "swamping_ema.csv",
        ["step", "codec", "rel_err_mean_v_small_half", "zero_frac_small_half", "zero_frac_all"],
        rows,
    )
    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for label, (es, zs, _) in curves.items():
        style = "-" if label.startswith("log") else "--"
        ax[0].plot(pts, np.maximum(es, 1e-6), style, label=label)
        ax[1].plot(pts, zs, style, label=label)
    ax[0].set(
        xlabel="step",
        ylabel="|mean(v̂) / mean(v) − 1|, smaller half of g",
        yscale="log",
        title="Relative error of the EMA (β2 = 0.999)",
    )
    ax[1].set(
        xlabel="step",
        ylabel="fraction of v̂ = 0, smaller half of g",
        title="Second-moment entries stuck at zero",
    )
    ax[0].legend(fontsize=8)
    ax[0].grid(alpha=0.3)
    ax[1].grid(alpha=0.3)
    png = save_plot(fig, out / "swamping_ema.png")
    return summary, csv_name, png


def _train(steps: int, seed: int, out: pathlib.Path, progress: Progress):
    import torch

    from ..optim import AdamW

    gen = torch.Generator().manual_seed(seed + 1)
    scale = torch.exp(torch.empty(D_TRAIN).uniform_(-3.0, 0.0, generator=gen))
    wstar = torch.randn(D_TRAIN, generator=gen)
    pts = record_points(steps)
    configs = [("fp32", None, "nearest", 0)] + [(lab, c, r, b) for lab, b, _, c, r in _codecs()]
    curves = {}
    summary = []
    for label, codec, rounding, _b in configs:
        progress(f"AdamW training, v = {label}, {steps} steps")
        w = torch.zeros(D_TRAIN, requires_grad=True)
        opt = AdamW(
            [w],
            lr=LR,
            betas=(0.9, 0.999),
            weight_decay=0.0,
            exp_avg_sq=codec,
            rounding=rounding,
            seed=seed,
            min_quant_size=0,
            block_size=BLOCK,
        )
        data = torch.Generator().manual_seed(seed + 2)  # the same batches for every codec
        risk = []
        nxt = 0
        for s in range(1, steps + 1):
            x = torch.randn(BATCH, D_TRAIN, generator=data) * scale
            y = x @ wstar + NOISE * torch.randn(BATCH, generator=data)
            loss = ((x @ w - y) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            progress.advance()
            if s == pts[nxt]:
                with torch.no_grad():  # exact excess risk E[(x·w − x·w*)²]
                    risk.append(float((((w - wstar) * scale) ** 2).sum()))
                nxt += 1
        vq = opt.dequantized_state(w, "exp_avg_sq")
        tail = risk[-max(1, len(risk) // 10) :]
        final = float(np.mean(tail)) if all(map(math.isfinite, tail)) else float("nan")
        curves[label] = risk
        summary.append(
            (
                label,
                final,
                float(np.nanmin(risk)),
                float((vq == 0).float().mean()),
                float(w.detach().abs().max()),
                opt.state_nbytes(),
            )
        )
    initial = float((((wstar) * scale) ** 2).sum())
    rows = [(s, lab, r) for lab, rs in curves.items() for s, r in zip(pts, rs)]
    csv_name = write_csv(out / "swamping_train.csv", ["step", "v_codec", "excess_risk"], rows)
    plt = pyplot()
    fig, ax = plt.subplots(1, 3, figsize=(14, 4), sharey=True)
    for i, b in enumerate(BITS):
        for label, rs in curves.items():
            if label == "fp32" or label.endswith(f"{b}-bit"):
                style = "k-" if label == "fp32" else ("-" if label.startswith("log") else "--")
                ax[i].plot(pts, rs, style, label=label)
        ax[i].set(xlabel="step", yscale="log", title=f"AdamW, {b}-bit second moment")
        ax[i].axhline(initial, color="grey", lw=0.5)
        ax[i].legend(fontsize=8)
        ax[i].grid(alpha=0.3)
    ax[0].set_ylabel("excess risk ‖diag(s)(w − w*)‖²")
    png = save_plot(fig, out / "swamping_train.png")
    return summary, initial, csv_name, png


SOLO_PAPER = "SOLO: low-bit optimizers, EMA dynamics"
CLAIMS = (
    Claim(
        SOLO_PAPER,
        "linear v with nearest rounding swamps the EMA; log v with stochastic "
        "rounding tracks it (2-bit)",
        lambda mt: mt["ema"]["linear 2"]["rel_err"] - mt["ema"]["log 2"]["rel_err"],
        "EMA rel. error (small half) linear 2-bit − log 2-bit",
        min_effect=0.1,
    ),
    Claim(
        SOLO_PAPER,
        "log 2-bit v trains better than linear 2-bit v",
        lambda mt: (
            (mt["train"]["linear 2-bit"]["final"] - mt["train"]["log 2-bit"]["final"])
            / mt["initial_risk"]
        ),
        "final excess risk linear − log 2-bit v, / initial risk",
    ),
)


@register(
    "swamping",
    default_steps=1000,
    quick_steps=60,
    full_steps=4000,
    summary="2/3/4-bit second moments: linear (nearest) vs log (stochastic)",
    claims=CLAIMS,
)
def swamping(
    steps: int, seed: int, out: pathlib.Path, progress: Progress, size: str = "default"
) -> dict:
    progress.add_total(steps * (2 * len(_codecs()) + 1))  # EMA runs, then training runs
    ema, ema_csv, ema_png = _ema(steps, seed, out, progress)
    train, initial, tr_csv, tr_png = _train(steps, seed, out, progress)
    e = {(b, k): (err, z) for b, k, _, err, z, _, _ in ema}
    findings = []
    lin_err = [e[(b, "linear")][0] for b in BITS]
    log_err = [e[(b, "log")][0] for b in BITS]
    lin_z = [e[(b, "linear")][1] for b in BITS]
    log_z = [e[(b, "log")][1] for b in BITS]
    holds = min(lin_err) > 0.5 and max(log_err) < 0.2
    findings.append(
        (
            "As expected, linear codes freeze"
            if holds
            else "The expected freeze/track split did not fully appear"
        )
        + f": after {steps} EMA steps the mean of v over the smaller half of the gradients is off "
        f"by {_pcts(lin_err)} (2/3/4-bit linear, nearest), with {_pcts(lin_z)} of those "
        f"entries stuck at zero, while log codes with stochastic rounding are off by "
        f"{_pcts(log_err)} with {_pcts(log_z)} at zero."
    )
    t = {r[0]: r for r in train}
    f32, l2, g2 = t["fp32"][1], t["linear 2-bit"][1], t["log 2-bit"][1]
    if math.isnan(l2) or (not math.isnan(g2) and l2 > g2):
        verdict = "linear 2-bit v ends worse than log 2-bit v"
    else:
        verdict = "linear 2-bit v did NOT end worse than log 2-bit v here"
    findings.append(
        f"Training ({steps} AdamW steps, lr {LR}, excess risk from {initial:.4g}): {verdict} "
        f"— final excess risk {l2:.4g} (linear 2-bit, {t['linear 2-bit'][3]:.0%} of v at zero) "
        f"vs {g2:.4g} (log 2-bit) vs {f32:.4g} (float32 v)."
    )
    worst = [r for r in train if r[0].startswith("log") and r[3] > 0]
    if worst:
        findings.append(
            "Log codes are not zero-free: with quantile = 0.05 some second-moment entries "
            "decode to exactly 0 ("
            + ", ".join(f"{r[0]}: {r[3]:.2%}" for r in worst)
            + "), where the update becomes lr·m/ε; max |w| reached "
            + ", ".join(f"{r[4]:.3g}" for r in worst)
            + " (float32: "
            f"{t['fp32'][4]:.3g}), final excess risk "
            + ", ".join(f"{r[0]} {r[1]:.4g}" for r in train if r[0].startswith("log"))
            + "."
        )
    return {
        "title": "second-moment swamping at 2, 3 and 4 bits",
        "description": (
            "With β2 = 0.999 the EMA increment (1 − β2)·g² is far below half a quantization "
            "step of a blockwise absmax-scaled linear code for all but the largest entries, so "
            "round-to-nearest keeps them where they are (swamping); logarithmic levels with a "
            "per-block base and stochastic rounding (as SOLO does) keep the EMA unbiased. Part 1: "
            f"lowfp AdamW with lr = 0 and constant gradients g = exp(U(−7, 0)) over {N_EMA} "
            "elements (3 decades of |g|, 6 of v), decoded v vs the exact float32 EMA. Part 2: "
            f"AdamW (lr {LR}, β = (0.9, 0.999), float32 m) on a noisy linear regression with "
            f"{D_TRAIN} features of scales exp(U(−3, 0)), batch {BATCH}, noise σ = {NOISE}; "
            "curves are the exact excess risk. Blocks of 256, fp32 absmax scales."
        ),
        "tables": [
            {
                "title": f"EMA after {steps} steps (smaller half = the 4096 smallest |g|)",
                "columns": [
                    "bits",
                    "codec",
                    "rounding",
                    "rel. error of mean v (small half)",
                    "v = 0 (small half)",
                    "v = 0 (all)",
                    "state bytes",
                ],
                "rows": ema,
                "key": 3,
            },
            {
                "title": f"AdamW training, {steps} steps (final = mean of the last 10% of records)",
                "columns": [
                    "second moment",
                    "final excess risk",
                    "best excess risk",
                    "v = 0 at end",
                    "max abs(w)",
                    "state bytes",
                ],
                "rows": train,
                "baseline": ("fp32",),
            },
        ],
        "plots": [ema_png, tr_png],
        "csv": [ema_csv, tr_csv],
        "findings": findings,
        "metrics": {
            "ema": {
                f"{k} {b}": {"rel_err": err, "zero_small": z} for (b, k), (err, z) in e.items()
            },
            "train": {r[0]: {"final": r[1], "zero": r[3]} for r in train},
            "initial_risk": initial,
        },
    }


def _pcts(xs) -> str:
    return "/".join(f"{x:.1%}" for x in xs)
