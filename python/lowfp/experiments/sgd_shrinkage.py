"""SGD with low-precision gradients: FP4 (e2m1), FP8 (e4m3), FP16 and float32 gradients, at
the base step size and at 2x and 4x, on a noisy linear regression.

Rounding to a format without a scale flushes every gradient component below half the smallest
subnormal to zero (0.25 for e2m1) and coarsens the rest: the quantized gradient is a shrunk,
biased version of the true one, which slows SGD and leaves a floor; a larger step size is the
obvious compensation. The experiment measures how much of that holds.
"""

from __future__ import annotations

import math
import pathlib

import numpy as np

from . import Progress, pyplot, record_points, register, save_plot, write_csv

DIM = 256
BATCH = 32
NOISE = 0.1
LR = 0.01
MULTS = (1, 2, 4)
GRADS = (("fp32", None, None), ("FP16", "float16", "nearest"), ("FP8", "e4m3", "nearest"),
         ("FP4", "e2m1", "nearest"), ("FP4 stoch.", "e2m1", "stochastic"))


@register("sgd-shrinkage", default_steps=400,
          summary="SGD with FP4/FP8/FP16 gradients at 1x, 2x, 4x the step size")
def sgd_shrinkage(steps: int, seed: int, out: pathlib.Path, progress: Progress) -> dict:
    import torch

    from ..optim import LowPrecision, Q

    progress.add_total(steps * len(GRADS) * len(MULTS))
    gen = torch.Generator().manual_seed(seed)
    wstar = torch.randn(DIM, generator=gen)
    initial = float((wstar**2).sum())
    target = 0.01 * initial
    pts = record_points(steps)
    curves = {}
    rows = []
    for label, fmt, rounding in GRADS:
        for k in MULTS:
            progress(f"SGD, {label} gradients, lr {k}x{LR}, {steps} steps")
            w = torch.zeros(DIM, requires_grad=True)
            inner = torch.optim.SGD([w], lr=LR * k)
            opt = inner if fmt is None else LowPrecision(inner, grad=Q(fmt, rounding),
                                                         seed=seed)
            data = torch.Generator().manual_seed(seed + 1)  # the same batches for every run
            risk, hit, nxt = [], None, 0
            for s in range(1, steps + 1):
                x = torch.randn(BATCH, DIM, generator=data)
                y = x @ wstar + NOISE * torch.randn(BATCH, generator=data)
                loss = ((x @ w - y) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                progress.advance()
                with torch.no_grad():
                    r = float(((w - wstar) ** 2).sum())  # exact excess risk (isotropic x)
                if hit is None and r <= target:
                    hit = s
                if s == pts[nxt]:
                    risk.append(r)
                    nxt += 1
            tail = risk[-max(1, len(risk) // 10):]
            final = float(np.mean(tail)) if all(map(math.isfinite, tail)) else float("nan")
            curves[(label, k)] = risk
            rows.append((label, f"{k}x ({LR * k:g})", final, "—" if hit is None else hit))
    csv_name = write_csv(out / "sgd_shrinkage.csv", ["step", "grad", "lr", "excess_risk"],
                         [(s, lab, LR * k, r) for (lab, k), rs in curves.items()
                          for s, r in zip(pts, rs)])
    plt = pyplot()
    fig, ax = plt.subplots(1, len(MULTS), figsize=(14, 4), sharey=True)
    for i, k in enumerate(MULTS):
        for label, _, _ in GRADS:
            ax[i].plot(pts, curves[(label, k)], ":" if "stoch" in label else "-", label=label)
        ax[i].set(xlabel="step", yscale="log", title=f"SGD, lr = {k}×{LR}")
        ax[i].grid(alpha=0.3)
        ax[i].legend(fontsize=8)
    ax[0].set_ylabel("excess risk ‖w − w*‖²")
    png = save_plot(fig, out / "sgd_shrinkage.png")

    f = {(r[0], r[1].split("x")[0]): r for r in rows}
    fin = lambda lab, k: f[(lab, str(k))][2]  # noqa: E731
    hit = lambda lab, k: f[(lab, str(k))][3]  # noqa: E731
    fp4, fp8, fp16, fp32 = fin("FP4", 1), fin("FP8", 1), fin("FP16", 1), fin("fp32", 1)
    findings = []
    slower = fp4 > 1.5 * max(fp8, fp16)
    findings.append(
        f"At the base step size ({LR}), after {steps} steps the excess risk is "
        f"{fp4:.3g} with FP4 gradients vs {fp8:.3g} (FP8), {fp16:.3g} (FP16) and {fp32:.3g} "
        f"(float32); steps to reach 1% of the initial {initial:.4g}: FP4 {hit('FP4', 1)}, "
        f"FP8 {hit('FP8', 1)}, float32 {hit('fp32', 1)}. "
        + ("FP4 ends at a higher floor, as expected." if slower else
           "FP4 does NOT end clearly worse than FP8/FP16 here (less than 1.5x)."))
    best_k = min(MULTS[1:], key=lambda k: fin("FP4", k) if math.isfinite(fin("FP4", k))
                 else float("inf"))
    fp4k = fin("FP4", best_k)
    gap = fp4 - fp8
    closed = (fp4 - fp4k) / gap if gap > 0 else float("nan")
    if not slower:
        verdict = "there is no clear FP4 gap to recover at this scale"
    elif closed >= 0.5:
        verdict = f"a {best_k}x step size recovers {closed:.0%} of FP4's gap to FP8"
    elif closed > 0:
        verdict = (f"a larger step size recovers only {closed:.0%} of FP4's gap to FP8 — "
                   "not most of it")
    else:
        verdict = "a larger step size does NOT recover any of FP4's gap to FP8"
    findings.append(
        f"Larger steps: FP4 reaches {fin('FP4', 2):.3g} at 2x and {fin('FP4', 4):.3g} at 4x "
        f"(FP8: {fin('FP8', 2):.3g}, {fin('FP8', 4):.3g}; float32: {fin('fp32', 2):.3g}, "
        f"{fin('fp32', 4):.3g}); {verdict}.")
    findings.append(
        f"Stochastic rounding to FP4 (unbiased, no shrinkage) ends at {fin('FP4 stoch.', 1):.3g}"
        f" / {fin('FP4 stoch.', 2):.3g} / {fin('FP4 stoch.', 4):.3g} at 1x/2x/4x, vs nearest "
        f"{fp4:.3g} / {fin('FP4', 2):.3g} / {fin('FP4', 4):.3g}.")
    return {
        "title": "SGD with FP4/FP8/FP16 gradients",
        "description": (
            "Gradients rounded to a low-precision format without a scale (lowfp.optim."
            "LowPrecision(torch.optim.SGD(...), grad=Q(fmt, rounding))) are shrunk toward zero: "
            "every component below half the smallest subnormal (0.25 for e2m1) vanishes. Plain "
            f"SGD on y = x·w* + {NOISE}·ε, x ~ N(0, I_{DIM}), w* ~ N(0, I), batch {BATCH}, "
            f"squared loss, base lr {LR} and {', '.join(f'{k}x' for k in MULTS[1:])}; curves "
            "are the exact excess risk ‖w − w*‖²; final = mean of the last 10% of records."),
        "tables": [{"title": f"SGD after {steps} steps",
                    "columns": ["gradient", "lr", "final excess risk",
                                "steps to 1% of initial"],
                    "rows": rows}],
        "plots": [png],
        "csv": [csv_name],
        "findings": findings,
        "metrics": {"final": {f"{r[0]} {r[1].split('x')[0]}x": r[2] for r in rows},
                    "initial_risk": initial, "recovered": closed},
    }
