"""8-bit Muon: linear vs dynamic 8-bit momentum, 8-bit AdamW part, and the memory saved.

The 8-bit Muon paper reports that Muon's momentum survives both linear and dynamic 8-bit
blockwise quantization, that 8-bit AdamW needs the dynamic (non-linear) code, and that Muon
with every state in 8 bits saves ~74% of the optimizer memory of float32 Muon. Runs on the
char transformer (d = 32; chartf's 50 warm-up steps and clipping at 1.0), the same initial
weights and batches for every optimizer:

- Muon float32 (its AdamW part for embeddings, output layer and gains float32 too);
- Muon with 8-bit linear momentum (``Muon8bit``) and with 8-bit dynamic momentum
  (``Muon(momentum_codec=Dynamic(8))``), AdamW part float32;
- Muon8bit with its AdamW part in 8 bits, dynamic (bitsandbytes' codes) or linear;
- AdamW float32, AdamW 8-bit dynamic (``AdamW8bit``), AdamW 8-bit linear.

Every tensor quantized (``min_quant_size=0``); bytes = ``opt.state_nbytes()`` (codes, scales,
counters; Muon's includes its AdamW part) per parameter.
"""

from __future__ import annotations

import pathlib

from . import Claim, Progress, mean_sd, pyplot, register, rel, save_plot, write_csv

ADAM_LR = 3e-3
MUON_LR = 0.02
PAPER = "8-bit Muon"


def _configs():
    from .. import Dynamic, Linear
    from ..optim import AdamW, Muon, Muon8bit
    from .chartf import param_groups

    dyn = dict(exp_avg=Dynamic(8, signed=True), exp_avg_sq=Dynamic(8, signed=False))
    lin = dict(exp_avg=Linear(8), exp_avg_sq=Linear(8, signed=False))

    def muon(cls, adamw=None, **kw):
        def make(model, seed):
            mats, rest = param_groups(model)
            return cls(
                [{"params": mats}, {"params": rest, "use_muon": False}],
                lr=MUON_LR,
                weight_decay=0.0,
                adamw_lr=ADAM_LR,
                adamw_betas=(0.9, 0.999),
                seed=seed,
                adamw_kwargs={"min_quant_size": 0, **(adamw or {})},
                **kw,
            )

        return make

    def adamw(**codecs):
        return lambda model, seed: AdamW(
            model.parameters(), lr=ADAM_LR, weight_decay=0.0, seed=seed, min_quant_size=0, **codecs
        )

    return [
        ("Muon fp32", "Muon", muon(Muon)),
        ("Muon 8-bit linear", "Muon", muon(Muon8bit)),
        ("Muon 8-bit dynamic", "Muon", muon(Muon, momentum_codec=Dynamic(8))),
        ("Muon8bit + AdamW 8-bit dynamic", "Muon", muon(Muon8bit, dyn)),
        ("Muon8bit + AdamW 8-bit linear", "Muon", muon(Muon8bit, lin)),
        ("AdamW fp32", "AdamW", adamw()),
        ("AdamW 8-bit dynamic", "AdamW", adamw(**dyn)),
        ("AdamW 8-bit linear", "AdamW", adamw(**lin)),
    ]


def _r(mt, a, b):
    return rel(mt["val"][a], mt["val"][b])


CLAIMS = (
    Claim(
        PAPER,
        "Muon with 8-bit linear momentum matches float32 Muon (within 1%)",
        lambda mt: _r(mt, "Muon 8-bit linear", "Muon fp32"),
        "val loss / Muon fp32 − 1",
        sign=-1,
        min_effect=-0.01,
        unit="%",
    ),
    Claim(
        PAPER,
        "Muon with 8-bit dynamic momentum matches float32 Muon (within 1%)",
        lambda mt: _r(mt, "Muon 8-bit dynamic", "Muon fp32"),
        "val loss / Muon fp32 − 1",
        sign=-1,
        min_effect=-0.01,
        unit="%",
    ),
    Claim(
        PAPER,
        "Muon with every state in 8 bits (AdamW part dynamic) matches float32 Muon (within 1%)",
        lambda mt: _r(mt, "Muon8bit + AdamW 8-bit dynamic", "Muon fp32"),
        "val loss / Muon fp32 − 1",
        sign=-1,
        min_effect=-0.01,
        unit="%",
    ),
    Claim(
        PAPER,
        "8-bit AdamW needs the dynamic code (linear is worse by > 1%)",
        lambda mt: (
            _r(mt, "AdamW 8-bit linear", "AdamW fp32") - _r(mt, "AdamW 8-bit dynamic", "AdamW fp32")
        ),
        "excess of linear − excess of dynamic 8-bit AdamW",
        min_effect=0.01,
        unit="%",
    ),
    Claim(
        PAPER,
        "Muon with every state in 8 bits saves ~74% of float32 Muon's state memory (more than 70%)",
        lambda mt: 1 - mt["bytes"]["Muon8bit + AdamW 8-bit dynamic"] / mt["bytes"]["Muon fp32"],
        "1 − state bytes / Muon fp32's",
        min_effect=0.70,
        unit="%",
    ),
)


@register(
    "muon8bit",
    default_steps=400,
    quick_steps=80,
    full_steps=1600,
    summary="Muon and AdamW with linear vs dynamic 8-bit states; memory",
    claims=CLAIMS,
)
def muon8bit(
    steps: int, seed: int, out: pathlib.Path, progress: Progress, size: str = "default"
) -> dict:
    from .chartf import CharTransformer, load_text, split, torch_threads, train
    from .quantized import small_config

    cfg = small_config()
    data = split(load_text(cfg.max_bytes))
    configs = _configs()
    progress.add_total(steps * len(configs))
    val, nbytes, curves = {}, {}, {}
    with torch_threads(1):
        for label, _fam, make in configs:
            progress(label)
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
                record_every=max(1, steps // 100),
                on_step=progress.advance,
            )
            val[label] = rec["val_loss"][-1]
            nbytes[label] = opt.state_nbytes()
            curves[label] = (rec["step"], rec["loss"])
    rows = []
    for label, fam, _ in configs:
        base = f"{fam} fp32"
        rows.append(
            (
                label,
                nbytes[label] / numel,
                1 - nbytes[label] / nbytes[base],
                val[label],
                rel(val[label], val[base]),
            )
        )
    csv_name = write_csv(
        out / "muon8bit_curves.csv",
        ["optimizer", "step", "train_loss"],
        [(lab, s, v) for lab, (ss, vs) in curves.items() for s, v in zip(ss, vs)],
    )
    plt = pyplot()
    fig, ax = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
    for label, fam, _ in configs:
        ss, vs = curves[label]
        ax[0 if fam == "Muon" else 1].plot(
            ss, vs, "k-" if label.endswith("fp32") else "-", label=label, lw=1
        )
    for a, t in zip(ax, ("Muon", "AdamW")):
        a.set(xlabel="step", yscale="log", title=f"{t}: float32 vs 8-bit states")
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    ax[0].set_ylabel("training loss")
    png = save_plot(fig, out / "muon8bit.png")
    return {
        "title": "8-bit Muon and 8-bit AdamW: linear vs dynamic codes, memory",
        "description": (
            f"The d = {cfg.d_model} char transformer ({numel:,} parameters), {steps} steps; "
            f"Muon lr {MUON_LR} on the block matrices + AdamW {ADAM_LR} on the rest, AdamW "
            f"{ADAM_LR}, β = (0.9, 0.999), no weight decay, 50 warm-up steps, clip 1.0. 8-bit "
            "codes: linear = lowfp Linear(8) (signed m / momentum, unsigned v); dynamic = "
            "bitsandbytes' dynamic tree codes (Dynamic(8)); blocks of 2048 (Muon momentum) or "
            "256 (AdamW states), fp32 absmax scales, every tensor quantized. Memory = "
            "opt.state_nbytes() (codes, scales, step counters)."
        ),
        "tables": [
            {
                "title": f"After {steps} steps",
                "columns": [
                    "optimizer",
                    "state B/param",
                    "memory saved vs fp32",
                    "val loss",
                    "val / fp32 − 1",
                ],
                "rows": rows,
                "baseline": lambda k: (
                    ("Muon fp32",) if k[0].startswith("Muon") else ("AdamW fp32",)
                ),
            }
        ],
        "plots": [png],
        "csv": [csv_name],
        "findings": [],
        "metrics": {"val": val, "bytes": nbytes},
    }


def aggregate_plot(per: list, out: pathlib.Path) -> list:
    labels = list(per[0]["metrics"]["val"])
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    ms = [mean_sd([p["metrics"]["val"][lab] for p in per]) for lab in labels]
    ax.barh(range(len(labels)), [m for m, _ in ms], xerr=[s for _, s in ms], capsize=3)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    lo = min(m for m, _ in ms)
    ax.set(
        xlabel="validation loss (mean ± sd)",
        title=f"{len(per)} seeds",
        xlim=(lo * 0.97, max(m for m, _ in ms) * 1.02),
    )
    ax.grid(alpha=0.3, axis="x")
    return [save_plot(fig, out / "muon8bit_seeds.png")]


muon8bit.aggregate_plot = aggregate_plot
