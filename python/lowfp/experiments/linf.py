"""Adam exploits ℓ∞ geometry (Xie et al.): rotating the loss hurts Adam, not SGD.

A quadratic ``f(w) = ½ (w − w*)ᵀ Rᵀ H R (w − w*)`` in d = 256 dimensions with a diagonal
Hessian ``H`` whose entries are log-uniform over three decades, minimized from ``w = 0`` with
full-batch gradients. ``R = I`` (axis-aligned: the curvatures sit on the coordinate axes) or a
random orthogonal matrix (the same problem, rotated). SGD is rotation-equivariant: its
iterates rotate with the problem, the loss is the same. Adam's per-coordinate second moment
adapts to the axes, so it gains on the axis-aligned problem and loses the gain when rotated.

Optimizers (each at the best learning rate of a small grid, per seed and problem):

- SGD (torch.optim.SGD);
- Adam with a per-element v (torch.optim.Adam);
- Adam with a low-bit v and a float32 m (lowfp.optim.AdamW, every tensor quantized): 8-bit
  dynamic v (AdamW8bit's) or 4-bit zero-free linear v (AdamW4bit's), blocks of 128;
- blockwise Adam: one v per block of 64 coordinates (the mean of g² over the block, as Adam-mini
  and blockwise Adam do): lowfp.optim.AdamW(v_granularity="block", v_block_size=64).

Loss = f(w_T) / f(0) (log10 in the tables). The seed draws H and w*; R is
:func:`lowfp.geometry.random_orthogonal` of the seed (a Haar-random rotation).
"""

from __future__ import annotations

import math
import pathlib

from . import Claim, Progress, mean_sd, pyplot, register, save_plot, write_csv

DIM = 256
BLOCK = 64
DECADES = 3.0
_ADAM_GRID = (1e-2, 3e-2, 1e-1)
GRIDS = {
    "SGD": (0.5, 1.0, 1.5),
    "Adam": _ADAM_GRID,
    "Adam 8-bit v": _ADAM_GRID,
    "Adam 4-bit v": _ADAM_GRID,
    f"blockwise Adam (v per {BLOCK})": _ADAM_GRID,
}
XIE = "Xie et al.: Adam exploits ℓ∞ geometry"
_ROT_SEED = 1_000_003  # the rotation's seed = this + the experiment's seed


def _d(mt, opt):
    return mt["log10"][f"{opt} rotated"] - mt["log10"][f"{opt} axis"]


CLAIMS = (
    Claim(
        XIE,
        "rotating the loss hurts Adam",
        lambda mt: _d(mt, "Adam"),
        "log10 loss rotated − axis-aligned, Adam",
        min_effect=1.0,
        unit="decades",
    ),
    Claim(
        XIE,
        "rotating the loss does not change SGD",
        lambda mt: abs(_d(mt, "SGD")),
        "|log10 loss rotated − axis-aligned|, SGD",
        sign=-1,
        min_effect=-0.1,
        unit="decades",
    ),
    Claim(
        XIE,
        "Adam beats SGD on the axis-aligned loss",
        lambda mt: mt["log10"]["SGD axis"] - mt["log10"]["Adam axis"],
        "log10 loss SGD − Adam, axis-aligned",
        unit="decades",
    ),
    Claim(
        XIE,
        "rotation hurts Adam with an 8-bit v too",
        lambda mt: _d(mt, "Adam 8-bit v"),
        "log10 loss rotated − axis-aligned, 8-bit dynamic v",
        min_effect=1.0,
        unit="decades",
    ),
    Claim(
        XIE,
        "rotation hurts Adam with a 4-bit v too",
        lambda mt: _d(mt, "Adam 4-bit v"),
        "log10 loss rotated − axis-aligned, 4-bit linear v",
        min_effect=1.0,
        unit="decades",
    ),
    Claim(
        XIE,
        f"blockwise Adam (one v per {BLOCK}) loses part of Adam's axis-aligned gain",
        lambda mt: mt["log10"][f"blockwise Adam (v per {BLOCK}) axis"] - mt["log10"]["Adam axis"],
        "log10 loss blockwise − per-element Adam, axis-aligned",
        unit="decades",
    ),
)


def _problem(seed: int, rotated: bool):
    import torch

    from ..geometry import random_orthogonal

    gen = torch.Generator().manual_seed(seed)
    h = 10.0 ** (-DECADES * torch.rand(DIM, generator=gen, dtype=torch.float64))
    wstar = torch.randn(DIM, generator=gen, dtype=torch.float64)
    if not rotated:
        return torch.diag(h).float(), wstar.float()
    # Haar-random; its own stream (the seed shifted), not the one H and w* are drawn from
    rot = random_orthogonal(DIM, seed=_ROT_SEED + seed, dtype=torch.float64)
    # the same minimum distance either way
    return ((rot.T * h) @ rot).float(), (rot.T @ wstar).float()


def _run(opt_name: str, lr: float, a, wstar, steps: int, progress) -> float:
    import torch

    from .. import Dynamic, Linear
    from ..optim import AdamW

    w = torch.zeros(DIM)
    f0 = float(0.5 * wstar @ (a @ wstar))
    p = torch.nn.Parameter(w)
    v = {
        "Adam 8-bit v": Dynamic(8, signed=False),
        "Adam 4-bit v": Linear(4, signed=False, zero=False),
    }.get(opt_name)
    if opt_name == "SGD":
        opt = torch.optim.SGD([p], lr=lr)
    elif opt_name.startswith("blockwise"):
        opt = AdamW([p], lr=lr, weight_decay=0.0, v_granularity="block", v_block_size=BLOCK)
    elif v is None:
        opt = torch.optim.Adam([p], lr=lr)
    else:
        opt = AdamW([p], lr=lr, weight_decay=0.0, exp_avg_sq=v, block_size=128, min_quant_size=0)
    for _ in range(steps):
        with torch.no_grad():
            p.grad = a @ (p.detach() - wstar)
        opt.step()
        progress.advance()
    w = p.detach()
    d = w - wstar
    f = float(0.5 * d @ (a @ d))
    return f / f0 if math.isfinite(f) else float("inf")


@register(
    "linf",
    default_steps=800,
    quick_steps=100,
    full_steps=3200,
    summary="rotating a quadratic hurts Adam (also low-bit v), not SGD; blockwise v",
    claims=CLAIMS,
)
def linf(
    steps: int, seed: int, out: pathlib.Path, progress: Progress, size: str = "default"
) -> dict:
    progress.add_total(steps * 2 * sum(len(g) for g in GRIDS.values()))
    best, rows, log10 = {}, [], {}
    grid_rows = []
    for rotated in (False, True):
        a, wstar = _problem(seed, rotated)
        where = "rotated" if rotated else "axis"
        for name, grid in GRIDS.items():
            progress(f"{name}, {where}-aligned quadratic")
            res = {lr: _run(name, lr, a, wstar, steps, progress) for lr in grid}
            lr = min(res, key=lambda k: res[k] if math.isfinite(res[k]) else float("inf"))
            best[(name, where)] = (lr, res[lr])
            log10[f"{name} {where}"] = math.log10(max(res[lr], 1e-30))
            grid_rows += [(name, where, k, v) for k, v in res.items()]
    for name in GRIDS:
        for where in ("axis", "rotated"):
            lr, f = best[(name, where)]
            rows.append((name, where, lr, f, log10[f"{name} {where}"]))
    csv_name = write_csv(out / "linf.csv", ["optimizer", "problem", "lr", "loss_ratio"], grid_rows)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(GRIDS)
    for j, where in enumerate(("axis", "rotated")):
        ax.bar(
            [i + 0.4 * j for i in range(len(names))],
            [log10[f"{n} {where}"] for n in names],
            width=0.4,
            label=where,
        )
    ax.set_xticks([i + 0.2 for i in range(len(names))], names, fontsize=8)
    ax.set(ylabel="log10 f(w_T)/f(0) (best lr)", title=f"quadratic, d = {DIM}, {steps} steps")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    png = save_plot(fig, out / "linf.png")
    return {
        "title": "ℓ∞ geometry: a rotated quadratic hurts Adam, not SGD",
        "description": (
            f"f(w) = ½(w − w*)ᵀRᵀHR(w − w*), d = {DIM}, H diagonal log-uniform over "
            f"{DECADES:g} decades (largest 1), R = I (axis-aligned) or Haar-random orthogonal "
            f"(rotated); w0 = 0, full-batch gradients, {steps} steps. Each optimizer at the "
            "best learning rate of its grid (SGD "
            + ", ".join(map(str, GRIDS["SGD"]))
            + "; the Adams "
            + ", ".join(map(str, GRIDS["Adam"]))
            + "), per seed and problem;"
            " Adam β = (0.9, 0.999). Low-bit v: lowfp AdamW with float32 m and an 8-bit dynamic"
            " or 4-bit zero-free linear v (blocks of 128, absmax scales);"
            f' blockwise Adam = lowfp AdamW(v_granularity="block", v_block_size={BLOCK}): one '
            f"v per {BLOCK} coordinates. R = lowfp.geometry.random_orthogonal. "
            "Loss = f(w_T)/f(0)."
        ),
        "tables": [
            {
                "title": f"Best final loss after {steps} steps",
                "columns": ["optimizer", "problem", "best lr", "f(w_T)/f(0)", "log10 f(w_T)/f(0)"],
                "rows": rows,
                "key": 2,
                "baseline": lambda k: (k[0], "axis"),
            }
        ],
        "plots": [png],
        "csv": [csv_name],
        "findings": [],
        "metrics": {"log10": log10},
    }


def aggregate_plot(per: list, out: pathlib.Path) -> list:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(GRIDS)
    for j, where in enumerate(("axis", "rotated")):
        ms = [mean_sd([p["metrics"]["log10"][f"{n} {where}"] for p in per]) for n in names]
        ax.bar(
            [i + 0.4 * j for i in range(len(names))],
            [m for m, _ in ms],
            yerr=[s for _, s in ms],
            width=0.4,
            label=where,
            capsize=3,
        )
    ax.set_xticks([i + 0.2 for i in range(len(names))], names, fontsize=8)
    ax.set(ylabel="log10 f(w_T)/f(0), mean ± sd", title=f"quadratic, {len(per)} seeds")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    return [save_plot(fig, out / "linf_seeds.png")]


linf.aggregate_plot = aggregate_plot
