"""Low-bit optimizer states on the char transformer: loss curves and state bytes per parameter.

float32 AdamW against lowfp's packed-state presets (``AdamW8bit``, ``AdamW4bit``), two 3- and
2-bit configurations that differ only in the second moment's code (zero-free linear vs
zero-free logarithmic, both round-to-nearest, signed linear first moment), the SOLO presets
(logarithmic v, stochastic rounding, SOLO's β1) at 3 and 2 bits, and Muon with a float32 vs an
8-bit momentum (``Muon8bit``; its AdamW part keeps float32 states). Every run starts from the
same weights and sees the same batches; bytes per parameter are ``opt.state_nbytes()`` (codes,
block scales and step counters, every parameter quantized: ``min_quant_size=0``) divided by the
model's parameter count.
"""

from __future__ import annotations

import math
import pathlib

import numpy as np

from . import Claim, Progress, pyplot, register, rel, save_plot, write_csv

ADAM_LR = 3e-3
MUON_LR = 0.02
BETAS = (0.9, 0.999)


def states_config(size: str = "default"):
    """The char transformer of this experiment: d = 64, 2 layers, context 64, batch 16 (at
    the quick size the sweeps' d = 32 model)."""
    from .chartf import Config
    from .quantized import small_config

    if size == "quick":
        return small_config()
    return Config(d_model=64, layers=2, heads=4, context=64, batch=16)


def _configs():
    """(label, family, m description, v description, factory(model, seed) → optimizer)."""
    from .. import Linear, Log
    from ..optim import SOLO, AdamW, AdamW4bit, AdamW8bit, Muon, Muon8bit
    from .chartf import param_groups

    kw = dict(lr=ADAM_LR, betas=BETAS, weight_decay=0.0, min_quant_size=0)

    def adamw(**extra):
        return lambda model, seed: AdamW(model.parameters(), seed=seed, **kw, **extra)

    def preset(fn, **extra):
        return lambda model, seed: fn(model.parameters(), seed=seed, **{**kw, **extra})

    def muon(fn):
        def make(model, seed):
            mats, rest = param_groups(model)
            return fn(
                [{"params": mats}, {"params": rest, "use_muon": False}],
                lr=MUON_LR,
                weight_decay=0.0,
                adamw_lr=ADAM_LR,
                adamw_betas=BETAS,
                seed=seed,
            )

        return make

    solo_kw = {k: v for k, v in kw.items() if k != "betas"}  # SOLO picks its own β1
    return [
        ("AdamW fp32", "AdamW", "float32", "float32", adamw()),
        ("AdamW8bit", "AdamW", "dynamic 8", "dynamic 8 (unsigned)", preset(AdamW8bit)),
        ("AdamW4bit", "AdamW", "dynamic 4", "linear 4 (zero-free)", preset(AdamW4bit)),
        (
            "linear 3-bit",
            "AdamW",
            "linear 3",
            "linear 3 (zero-free)",
            adamw(
                exp_avg=Linear(3), exp_avg_sq=Linear(3, signed=False, zero=False), block_size=128
            ),
        ),
        (
            "log 3-bit",
            "AdamW",
            "linear 3",
            "log 3 (zero-free)",
            adamw(exp_avg=Linear(3), exp_avg_sq=Log(3, zero=False, quantile=0.05), block_size=128),
        ),
        (
            "linear 2-bit",
            "AdamW",
            "linear 2",
            "linear 2 (zero-free)",
            adamw(
                exp_avg=Linear(2), exp_avg_sq=Linear(2, signed=False, zero=False), block_size=128
            ),
        ),
        (
            "log 2-bit",
            "AdamW",
            "linear 2",
            "log 2 (zero-free)",
            adamw(exp_avg=Linear(2), exp_avg_sq=Log(2, zero=False, quantile=0.05), block_size=128),
        ),
        (
            "SOLO 3-bit",
            "AdamW",
            "linear 3, SOLO β1",
            "log 3, stochastic",
            lambda model, seed: SOLO(model.parameters(), bits=3, seed=seed, **solo_kw),
        ),
        (
            "SOLO 2-bit",
            "AdamW",
            "linear 2, SOLO β1",
            "log 2, stochastic",
            lambda model, seed: SOLO(model.parameters(), bits=2, seed=seed, **solo_kw),
        ),
        ("Muon fp32", "Muon", "float32", "— (AdamW part float32)", muon(Muon)),
        ("Muon8bit", "Muon", "linear 8, block 2048", "— (AdamW part float32)", muon(Muon8bit)),
    ]


def _smooth(xs, k: int):
    """Trailing moving average over k records (nan-aware: a nan stays nan)."""
    a = np.asarray(xs, dtype=np.float64)
    c = np.cumsum(np.insert(a, 0, 0.0))
    out = np.empty_like(a)
    for i in range(len(a)):
        lo = max(0, i - k + 1)
        out[i] = (c[i + 1] - c[lo]) / (i + 1 - lo)
    return out


SOLO_PAPER = "SOLO: low-bit optimizers, EMA dynamics"
CLAIMS = (
    Claim(
        SOLO_PAPER,
        "a log second-moment code beats a linear one at 3 bits (training)",
        lambda mt: rel(mt["val"]["linear 3-bit"], mt["val"]["log 3-bit"]),
        "val loss linear 3-bit v / log 3-bit v − 1",
        unit="%",
    ),
    Claim(
        SOLO_PAPER,
        "a log second-moment code beats a linear one at 2 bits (training)",
        lambda mt: rel(mt["val"]["linear 2-bit"], mt["val"]["log 2-bit"]),
        "val loss linear 2-bit v / log 2-bit v − 1",
        unit="%",
    ),
)


@register(
    "low-bit-states",
    default_steps=200,
    quick_steps=80,
    full_steps=800,
    summary="fp32 vs 8/4/3/2-bit AdamW, SOLO, Muon vs Muon8bit: loss and bytes/param",
    claims=CLAIMS,
)
def low_bit_states(
    steps: int, seed: int, out: pathlib.Path, progress: Progress, size: str = "default"
) -> dict:
    from .chartf import CharTransformer, load_text, split, torch_threads, train

    cfg = states_config(size)
    text = load_text(cfg.max_bytes)
    data = split(text)
    configs = _configs()
    progress.add_total(steps * len(configs))
    every = max(1, steps // 200)
    results = {}
    with torch_threads(1):
        for label, family, mdesc, vdesc, make in configs:
            progress(f"{label}, {steps} steps")
            model = CharTransformer(cfg, seed)
            numel = sum(p.numel() for p in model.parameters())
            opt = make(model, seed)
            rec = train(
                model,
                opt,
                data,
                cfg,
                steps,
                seed + 7,
                eval_at=(steps,),
                record_every=every,
                on_step=progress.advance,
            )
            tail = rec["loss"][-max(1, len(rec["loss"]) // 10) :]
            results[label] = dict(
                family=family,
                m=mdesc,
                v=vdesc,
                curve=rec["loss"],
                pts=rec["step"],
                val=rec["val_loss"][-1],
                train=float(np.mean(tail)),
                bpp=opt.state_nbytes() / numel,
                numel=numel,
            )
    f32 = {"AdamW": results["AdamW fp32"]["val"], "Muon": results["Muon fp32"]["val"]}
    rows = []
    for label, r in results.items():
        excess = r["val"] / f32[r["family"]] - 1 if math.isfinite(r["val"]) else float("nan")
        rows.append(
            (
                label,
                r["m"],
                r["v"],
                r["bpp"],
                r["val"],
                r["train"],
                0.0 if label.endswith("fp32") else excess,
            )
        )
    csv_name = write_csv(
        out / "low_bit_states.csv",
        ["optimizer", "step", "train_loss"],
        [(lab, s, v) for lab, r in results.items() for s, v in zip(r["pts"], r["curve"])],
    )
    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(12, 4.2), sharey=True)
    k = max(1, len(next(iter(results.values()))["pts"]) // 20)
    for label, r in results.items():
        i = 0 if r["family"] == "AdamW" else 1
        style = "k-" if label.endswith("fp32") else ("--" if "linear" in label else "-")
        ax[i].plot(
            r["pts"],
            _smooth(r["curve"], k),
            style,
            label=f"{label} ({r['bpp']:.2f} B/param)",
            lw=1.2,
        )
    for i, t in enumerate(("AdamW: float32 vs low-bit states", "Muon: float32 vs 8-bit momentum")):
        ax[i].set(xlabel="step", title=t, yscale="log")
        ax[i].grid(alpha=0.3)
        ax[i].legend(fontsize=7)
    ax[0].set_ylabel(f"training loss (nats/byte, mean of {k} records)")
    png = save_plot(fig, out / "low_bit_states.png")

    v = {lab: r["val"] for lab, r in results.items()}
    b = {lab: r["bpp"] for lab, r in results.items()}
    findings = [
        "Validation loss after "
        f"{steps} steps (float32 AdamW {v['AdamW fp32']:.4g} at "
        f"{b['AdamW fp32']:.2f} B/param): AdamW8bit {v['AdamW8bit']:.4g} ({b['AdamW8bit']:.2f} "
        f"B), AdamW4bit {v['AdamW4bit']:.4g} ({b['AdamW4bit']:.2f} B), SOLO 3-bit "
        f"{v['SOLO 3-bit']:.4g} ({b['SOLO 3-bit']:.2f} B), SOLO 2-bit {v['SOLO 2-bit']:.4g} "
        f"({b['SOLO 2-bit']:.2f} B).",
    ]
    for bits in (3, 2):
        lin, log = v[f"linear {bits}-bit"], v[f"log {bits}-bit"]
        better = (not math.isfinite(lin)) or (math.isfinite(log) and log < lin)
        findings.append(
            f"{bits}-bit states, the second moment's code alone: linear {lin:.4g} vs "
            f"logarithmic {log:.4g} — "
            + ("the log code is better" if better else "the log code is NOT better here")
            + f"; SOLO (log v with stochastic rounding and its β1) {v[f'SOLO {bits}-bit']:.4g}."
        )
    findings.append(
        f"Muon: float32 momentum {v['Muon fp32']:.4g} at {b['Muon fp32']:.2f} B/param vs "
        f"8-bit momentum {v['Muon8bit']:.4g} at {b['Muon8bit']:.2f} B/param "
        f"({v['Muon8bit'] / v['Muon fp32'] - 1:+.2%}); the bytes include the float32 AdamW "
        "states of the embeddings and the output layer, which Muon leaves to AdamW."
    )
    numel = next(iter(results.values()))["numel"]
    return {
        "title": "low-bit optimizer states: loss curves and bytes per parameter",
        "description": (
            f"A {cfg.layers}-layer, d = {cfg.d_model} byte-level transformer ({numel:,} "
            f"parameters, context {cfg.context}, batch {cfg.batch}) on {len(text):,} bytes of the "
            f"Python standard library's source, {steps} steps at constant learning rate (AdamW "
            f"{ADAM_LR}, β = {BETAS}, no weight decay; Muon {MUON_LR} on the block matrices with "
            f"AdamW {ADAM_LR} on the rest). Same initial weights and batches for every run. "
            "B/param = opt.state_nbytes() / parameters (every tensor quantized, scales and step "
            "counters included); validation loss over 8 fixed batches; train = mean of the last "
            "10% of records."
        ),
        "tables": [
            {
                "title": f"After {steps} steps",
                "columns": [
                    "optimizer",
                    "first moment",
                    "second moment",
                    "B/param",
                    "val loss",
                    "train loss",
                    "val / float32 − 1",
                ],
                "rows": rows,
                "baseline": lambda k: (
                    ("Muon fp32",) if k[0].startswith("Muon") else ("AdamW fp32",)
                ),
            }
        ],
        "plots": [png],
        "csv": [csv_name],
        "findings": findings,
        "metrics": {
            "val": v,
            "bytes_per_param": b,
            "train": {lab: r["train"] for lab, r in results.items()},
        },
    }
