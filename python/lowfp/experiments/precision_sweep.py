"""Which components of Adam and Muon need mantissa bits: a sweep on the char transformer.

Each run quantizes ONE component of the training state after every step (the others stay
float32) to ``e8m<M>`` (M = 0: signed powers of two, ``e8m0b128f``) with stochastic rounding,
through :class:`lowfp.optim.LowPrecision`:

- ``grad``: the gradients, before the step;
- ``weight``: the weights (the initial ones too);
- ``m``: the first moment — Adam's ``exp_avg``; Muon's momentum buffer and the ``exp_avg`` of
  its built-in AdamW (embeddings, output layer, gains);
- ``v``: the second moment — Adam's ``exp_avg_sq``; for Muon only its AdamW part has one.

An 8-bit exponent (float32's range) isolates the mantissa: nothing over- or underflows, so the
loss differences come from the mantissa alone. Muon is lowfp's :class:`~lowfp.optim.Muon` (5
bfloat16 Newton–Schulz steps) for the block matrices plus its internal float32-state AdamW for the
rest; its AdamW gets its own ``LowPrecision`` wrapper (installed as ``muon.adamw``) so that its
states are rounded too. Adam is ``torch.optim.AdamW`` with no weight decay.

The learning rate is constant, so the validation loss at step ``T/4`` and ``T/2`` of a run equals
the final loss of a run of that length: the "mantissa needed" at each step count (the fewest bits
whose loss is within 1% of float32's) comes from the same runs. A Huber line of log(final loss)
on mantissa bits (:mod:`lowfp.experiments.fit`) summarizes each component's sensitivity.
"""

from __future__ import annotations

import math
import pathlib
from typing import Dict, Optional, Tuple

from . import Claim, Progress, pyplot, register, rel, save_plot, write_csv
from .fit import fit_with_jackknife

MANTISSAS = (0, 1, 2, 3, 7)
#: The mantissas of a run per size (set into MANTISSAS when it starts).
MANTISSAS_BY_SIZE = {"quick": (0,), "default": MANTISSAS, "full": MANTISSAS}
COMPONENTS = ("grad", "weight", "m", "v")
#: Adam only: the same sweep with round-to-nearest, for the two components the analyses call
#: sensitive (a contrast: nearest rounding swamps small updates, stochastic rounding does not).
NEAREST = ("weight/nearest", "v/nearest")
OPTIMIZERS = ("Adam", "Muon")
ADAM_LR = 3e-3
MUON_LR = 0.02
BETAS = (0.9, 0.999)
TOL = 0.01  # "needed": final loss within 1% of the float32 run's
EXP_BITS = 8


def fmt(man: int) -> str:
    """The e8 format with ``man`` mantissa bits (:func:`lowfp.experiments.quantized.fmt`)."""
    from .quantized import fmt as _fmt

    return _fmt(man, EXP_BITS)


def sweep_config():
    """The model of the sweep: the char transformer at d = 32 (many runs; see chartf)."""
    from .quantized import small_config

    return small_config()


def components(optimizer: str) -> tuple:
    """The quantized components swept for an optimizer (``c/nearest``: round to nearest; for
    Muon ``v`` is its AdamW part's second moment)."""
    return COMPONENTS + NEAREST


def _mean_excess(mt: dict, o: str, comps) -> float:
    return sum(mt["excess_low"][f"{o} {c}"] for c in comps) / len(comps)


TANG = "Tang, Li, Zou: Adam/Muon under floating-point quantization"
CLAIMS = (
    Claim(
        TANG,
        "Muon is more robust to quantization than Adam (stochastic rounding)",
        lambda mt: _mean_excess(mt, "Adam", COMPONENTS) - _mean_excess(mt, "Muon", COMPONENTS),
        "Adam − Muon mean loss excess at m = 0 over grad/weight/m/v, stochastic",
        unit="%",
    ),
    Claim(
        TANG,
        "Muon is more robust to quantization than Adam (round to nearest)",
        lambda mt: _mean_excess(mt, "Adam", NEAREST) - _mean_excess(mt, "Muon", NEAREST),
        "Adam − Muon mean loss excess at m = 0 over weight/v, nearest",
        unit="%",
    ),
    Claim(
        TANG,
        "Adam is sensitive to weight rounding (nearest)",
        lambda mt: mt["excess_low"]["Adam weight/nearest"],
        "Adam loss excess, weights e8m0 nearest",
        min_effect=0.01,
        unit="%",
    ),
)


def _optimizer(name: str, model, comp: Optional[str], man: Optional[int], seed: int):
    from .quantized import build, q_or_none

    base, _, rounding = (comp or "").partition("/")
    quant = {} if man is None else {base: q_or_none(man, rounding or "stochastic")}
    return build(name, model, quant, seed, betas=BETAS, adam_lr=ADAM_LR, muon_lr=MUON_LR)


def _evals(steps: int) -> Tuple[int, ...]:
    return tuple(sorted({max(1, steps // 4), max(1, steps // 2), steps}))


@register(
    "precision-sweep",
    default_steps=120,
    quick_steps=60,
    full_steps=480,
    summary="Adam vs Muon: final loss vs mantissa bits of grad/weight/m/v",
    claims=CLAIMS,
)
def precision_sweep(
    steps: int, seed: int, out: pathlib.Path, progress: Progress, size: str = "default"
) -> dict:
    from .chartf import CharTransformer, load_text, split, torch_threads, train

    global MANTISSAS
    MANTISSAS = MANTISSAS_BY_SIZE[size]
    cfg = sweep_config()
    text = load_text(cfg.max_bytes)
    data = split(text)
    evals = _evals(steps)
    runs = [(o, None, None) for o in OPTIMIZERS] + [
        (o, c, m) for o in OPTIMIZERS for c in components(o) for m in MANTISSAS
    ]
    progress.add_total(steps * len(runs))
    # (optimizer, component, man) → {eval step: val loss}; component None = float32
    val: Dict[tuple, Dict[int, float]] = {}
    curves = []
    with torch_threads(1):
        for o, c, m in runs:
            progress(f"{o}, {'float32' if c is None else f'{c} e{EXP_BITS}m{m}'}")
            model = CharTransformer(cfg, seed)
            opt = _optimizer(o, model, c, m, seed)
            rec = train(
                model,
                opt,
                data,
                cfg,
                steps,
                seed + 7,
                eval_at=evals,
                record_every=max(1, steps // 100),
                on_step=progress.advance,
            )
            val[(o, c, m)] = dict(zip(rec["eval_step"], rec["val_loss"]))
            curves += [(o, c or "fp32", _bits(m), s, v) for s, v in zip(rec["step"], rec["loss"])]

    base = {(o, t): val[(o, None, None)][t] for o in OPTIMIZERS for t in evals}
    csv_runs = write_csv(
        out / "precision_sweep.csv",
        ["optimizer", "component", "mantissa_bits", "step", "val_loss"],
        [(o, c or "fp32", _bits(m), t, v) for (o, c, m), d in val.items() for t, v in d.items()],
    )
    csv_curves = write_csv(
        out / "precision_sweep_curves.csv",
        ["optimizer", "component", "mantissa_bits", "step", "train_loss"],
        curves,
    )

    def needed(o: str, c: str, t: int) -> Optional[int]:
        ok = [m for m in MANTISSAS if val[(o, c, m)][t] <= (1 + TOL) * base[(o, t)]]
        return min(ok) if ok else None

    # tables: final loss per mantissa, the Huber fit, and the needed mantissa per step count
    rows, fits, need_rows = [], {}, []
    for o in OPTIMIZERS:
        rows.append((o, "float32", *([base[(o, steps)]] * len(MANTISSAS))))
        for c in components(o):
            finals = [val[(o, c, m)][steps] for m in MANTISSAS]
            pts = [
                (m, math.log(v)) for m, v in zip(MANTISSAS, finals) if math.isfinite(v) and v > 0
            ]
            fit = fit_with_jackknife(*zip(*pts)) if len(pts) >= 3 else None
            fits[(o, c)] = fit
            rows.append((o, c, *finals))
            need_rows.append((o, c, *[_need_cell(needed(o, c, t)) for t in evals]))
    fit_rows = []
    for (o, c), f in fits.items():
        if f is None:
            fit_rows.append((o, c, "n/a", "n/a", "n/a", "n/a"))
            continue
        lo, hi = f.slope_interval
        ilo, ihi = f.intercept_interval
        fit_rows.append(
            (o, c, f.slope, f"[{lo:.3g}, {hi:.3g}]", f.intercept, f"[{ilo:.3g}, {ihi:.3g}]")
        )

    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for i, o in enumerate(OPTIMIZERS):
        for c in components(o):
            ax[i].plot(
                MANTISSAS,
                [val[(o, c, m)][steps] for m in MANTISSAS],
                "s--" if "/" in c else "o-",
                label=c,
            )
        ax[i].axhline(base[(o, steps)], color="k", ls="--", lw=1, label="float32")
        ax[i].set(
            xlabel=f"mantissa bits (e{EXP_BITS}mM; dashed: round to nearest)",
            title=f"{o}: one component quantized, {steps} steps",
            yscale="log",
        )
        ax[i].grid(alpha=0.3)
        ax[i].legend(fontsize=8)
    ax[0].set_ylabel("validation loss (nats / byte)")
    png = save_plot(fig, out / "precision_sweep.png")
    fig, ax = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    top = MANTISSAS[-1] + 1
    for i, o in enumerate(OPTIMIZERS):
        for c in components(o):
            ys = [needed(o, c, t) for t in evals]
            ax[i].plot(
                evals, [top if y is None else y for y in ys], "s--" if "/" in c else "o-", label=c
            )
        ax[i].set(xlabel="steps", title=f"{o}: mantissa bits within {TOL:.0%} of float32")
        ax[i].axhline(top, color="grey", lw=0.5)
        ax[i].grid(alpha=0.3)
        ax[i].legend(fontsize=8)
    ax[0].set_ylabel(f"needed mantissa bits ({top} = more than {MANTISSAS[-1]})")
    png2 = save_plot(fig, out / "precision_sweep_needed.png")

    findings = _findings(val, base, fits, needed, steps, evals)
    low = MANTISSAS[0]
    return {
        "title": "final loss vs mantissa bits of gradients, weights, m and v (Adam vs Muon)",
        "description": (
            f"A {cfg.layers}-layer, d = {cfg.d_model} byte-level transformer (context "
            f"{cfg.context}, batch {cfg.batch}) on {len(text):,} bytes of the Python standard "
            f"library's source, {steps} steps at constant learning rate (Adam {ADAM_LR}, "
            f"β = {BETAS}; Muon {MUON_LR} on the block matrices, AdamW {ADAM_LR} on the rest). "
            f"Each run rounds one component to e{EXP_BITS}m{{{','.join(map(str, MANTISSAS))}}} "
            "with stochastic rounding after every step (lowfp.optim.LowPrecision), the others "
            "stay float32; for Adam the weight and v sweeps are repeated with round-to-nearest "
            "(rows 'weight/nearest', 'v/nearest') as a contrast. Loss = validation loss "
            "(nats/byte) over 8 fixed batches. The fit is "
            "a Huber line of ln(final loss) on mantissa bits with jackknife ±1.96·SE "
            "intervals: a more negative slope means a more sensitive component."
        ),
        "tables": [
            {
                "title": f"Validation loss after {steps} steps, by mantissa bits",
                "columns": ["optimizer", "quantized"] + [f"m = {m}" for m in MANTISSAS],
                "rows": rows,
                "key": 2,
                "baseline": lambda k: (k[0], "float32"),
            },
            {
                "title": "Huber fit: ln(final loss) = intercept + slope · mantissa bits",
                "columns": [
                    "optimizer",
                    "component",
                    "slope",
                    "slope 95% (jackknife)",
                    "intercept",
                    "intercept 95% (jackknife)",
                ],
                "rows": fit_rows,
                "key": 2,
            },
            {
                "title": f"Fewest mantissa bits within {TOL:.0%} of float32, by step count",
                "columns": ["optimizer", "component"] + [f"{t} steps" for t in evals],
                "rows": need_rows,
                "key": 2,
            },
        ],
        "plots": [png, png2],
        "csv": [csv_runs, csv_curves],
        "findings": findings,
        "metrics": {
            "final": {f"{o} {c or 'fp32'} {_bits(m)}": d[steps] for (o, c, m), d in val.items()},
            "excess_low": {
                f"{o} {c}": rel(val[(o, c, low)][steps], base[(o, steps)])
                for o in OPTIMIZERS
                for c in components(o)
            },
            "slope": {f"{o} {c}": (f.slope if f else float("nan")) for (o, c), f in fits.items()},
            "needed": {
                f"{o} {c}": [needed(o, c, t) for t in evals]
                for o in OPTIMIZERS
                for c in components(o)
            },
            "evals": list(evals),
            "noise": {o: noise_level(val, base, steps, o) for o in OPTIMIZERS},
        },
    }


def _bits(m: Optional[int]) -> int:
    """Mantissa bits of a run for the CSV and metrics: float32's 23 for an unquantized run."""
    return 23 if m is None else m


def _need_cell(m: Optional[int]) -> str:
    return f"> {MANTISSAS[-1]}" if m is None else str(m)


def noise_level(val, base, steps: int, o: str) -> float:
    """Run-to-run spread of one optimizer: the largest |loss / float32 − 1| among its runs
    with the most mantissa bits (different stochastic-rounding draws, hardly any precision
    lost); nan with one mantissa (the quick size: the claims need m = 0 only)."""
    if len(MANTISSAS) < 2:
        return math.nan
    top = MANTISSAS[-1]
    return max(abs(val[(o, c, top)][steps] / base[(o, steps)] - 1) for c in COMPONENTS)


def _findings(val, base, fits, needed, steps, evals) -> list:
    low = MANTISSAS[0]
    out = []
    excess = {
        (o, c): val[(o, c, low)][steps] / base[(o, steps)] - 1
        for o in OPTIMIZERS
        for c in COMPONENTS
    }
    noise = {o: noise_level(val, base, steps, o) for o in OPTIMIZERS}
    judge = all(math.isfinite(v) for v in noise.values())
    for o in OPTIMIZERS:
        order = sorted(
            COMPONENTS,
            key=lambda c: -excess[(o, c)] if math.isfinite(excess[(o, c)]) else float("-inf"),
        )
        hurt = [c for c in order if not excess[(o, c)] <= 2 * noise[o]]
        spread = (
            f"run-to-run spread at m = {MANTISSAS[-1]}: {noise[o]:.1%}"
            if math.isfinite(noise[o])
            else "no within-seed spread at this size"
        )
        out.append(
            f"{o} (float32 loss {base[(o, steps)]:.4g}; {spread}): with {low} mantissa bits "
            "the loss changes by "
            + ", ".join(f"{excess[(o, c)]:+.1%} ({c})" for c in order)
            + (
                "."
                if not math.isfinite(noise[o])
                else f"; beyond twice the spread: {', '.join(hurt)}."
                if hurt
                else "; none beyond twice the spread."
            )
        )
    mean = {
        o: sum(max(0.0, excess[(o, c)]) for c in COMPONENTS) / len(COMPONENTS) for o in OPTIMIZERS
    }
    robust = mean["Muon"] < mean["Adam"]
    out.append(
        f"Averaged over the four components, m = {low} costs Adam {mean['Adam']:+.1%} and Muon "
        f"{mean['Muon']:+.1%} of loss: "
        + (
            "Muon is the more robust of the two here, as expected."
            if robust
            else "Muon is NOT more robust than Adam here (the "
            "expected ordering does not appear at this scale)."
        )
    )
    sens = [c for c in ("weight", "v") if not excess[("Adam", c)] <= 2 * noise["Adam"]]
    out.append(
        f"Adam's weight and second-moment excess at m = {low}: {excess[('Adam', 'weight')]:+.1%}"
        f", {excess[('Adam', 'v')]:+.1%} — "
        + (
            "no within-seed spread to judge them by at this size (the verdicts over seeds do)."
            if not judge
            else "both beyond the noise: weights and v are sensitive, as expected."
            if len(sens) == 2
            else (
                f"only {sens[0]} beyond the noise."
                if sens
                else "neither beyond the noise: with stochastic rounding and an 8-bit exponent "
                "Adam is not measurably sensitive to them at this scale."
            )
        )
    )
    rn = {c: val[("Adam", c, low)][steps] / base[("Adam", steps)] - 1 for c in NEAREST}
    worse = [c for c in NEAREST if rn[c] > excess[("Adam", c.split("/")[0])] + 2 * noise["Adam"]]
    out.append(
        f"Round-to-nearest instead (Adam, m = {low}): weight {rn['weight/nearest']:+.1%}, v "
        f"{rn['v/nearest']:+.1%} (stochastic: {excess[('Adam', 'weight')]:+.1%}, "
        f"{excess[('Adam', 'v')]:+.1%}) — "
        + (
            "no within-seed spread to judge it by at this size."
            if not judge
            else f"nearest rounding is worse for {' and '.join(c.split('/')[0] for c in worse)}: "
            "small updates are swamped, which stochastic rounding avoids."
            if worse
            else "nearest rounding is not clearly worse here."
        )
    )
    grow = []
    for o in OPTIMIZERS:
        for c in components(o):
            ns = [needed(o, c, t) for t in evals]
            grow.append(f"{o} {c}: " + " → ".join(_need_cell(n) for n in ns))
    out.append(
        f"Mantissa bits needed to stay within {TOL:.0%} of float32 at "
        + " / ".join(map(str, evals))
        + " steps: "
        + "; ".join(grow)
        + "."
    )
    return out
