"""Reproducible multi-seed experiments with lowfp's formats and optimizers: ``lowfp experiment``.

Each experiment is a function ``(steps, seed, out, progress, size) -> dict`` registered in
:data:`EXPERIMENTS` with its step counts per size (quick: the main job's; default: a run by
name, <= ~3 min on 2 quiet cores; full) and its paper :class:`Claim` s. One seed's result holds
``title``, ``description``, ``tables`` (a list of ``{"title", "columns", "rows"}``, optionally
``"key"``: the number of leading key columns, and ``"baseline"``: the key of the same seed's
baseline row, or a function of a row key giving it), ``plots`` and ``csv`` (file names in
``out``), ``findings`` and ``metrics`` (the numbers the claims read). :func:`run_seeds` runs one
experiment on several seeds and :func:`aggregate` s them: every numeric cell as mean ± sd,
paired differences against the baseline row of the same seed, and each claim's
:func:`verdict`. :func:`run` runs a selection and writes ``out/report.md``, verdict tables per
paper first (docs/experiments.md).

Each experiment function receives a :class:`~lowfp.experiments.progress.Progress`: it calls
``progress.add_total(units)`` once it knows its work, ``progress(msg)`` at each stage and
``progress.advance()`` per optimizer step (the line shows steps done/total over all seeds,
elapsed, ETA).

Experiments, in the order of a run of all of them: beta2, mantissa-vs-steps, linf, muon8bit,
sgd-shrinkage, solo-factorial, ptq, qat-scaling, blockwise-lr, precision-sweep, swamping,
low-bit-states (one module each; :mod:`.quantized` builds Adam/Muon with rounded components,
:mod:`.chartf` is the char transformer, :mod:`.fit` the Huber fits).
"""

from __future__ import annotations

import csv
import dataclasses
import math
import pathlib
import sys
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

__all__ = [
    "EXPERIMENTS",
    "Experiment",
    "Claim",
    "register",
    "run",
    "run_one",
    "run_seeds",
    "aggregate",
    "verdict",
    "mean_sd",
    "rel",
    "write_csv",
    "save_plot",
    "markdown_table",
]

from .progress import Progress  # noqa: E402 - the progress line every experiment reports to


@dataclasses.dataclass(frozen=True)
class Claim:
    """A paper's claim as a per-seed, paired effect and the sign the paper predicts.

    ``effect(metrics)`` maps ONE seed's result metrics to a number computed within that seed
    (so against the same-seed baseline: a paired difference); the claim predicts
    ``sign · effect > min_effect``. :func:`verdict` applies the decision rule over the seeds.
    """

    paper: str
    text: str
    effect: Callable[[dict], float]
    what: str
    sign: int = 1
    min_effect: float = 0.0
    unit: str = ""


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A registered experiment: its function, step counts per size and its claims."""

    name: str
    fn: Callable[..., dict]
    default_steps: int
    summary: str
    quick_steps: int
    full_steps: int
    claims: tuple = ()


#: name → :class:`Experiment`.
EXPERIMENTS: Dict[str, Experiment] = {}
#: The order of a run of every experiment.
ORDER = (
    "beta2",
    "mantissa-vs-steps",
    "linf",
    "muon8bit",
    "sgd-shrinkage",
    "solo-factorial",
    "ptq",
    "qat-scaling",
    "blockwise-lr",
    "precision-sweep",
    "swamping",
    "low-bit-states",
)
SIZES = ("quick", "default", "full")


def register(
    name: str,
    default_steps: int,
    summary: str,
    quick_steps: Optional[int] = None,
    full_steps: Optional[int] = None,
    claims: Sequence[Claim] = (),
):
    """Decorator: add an experiment function ``fn(steps, seed, out, progress, size)`` to
    :data:`EXPERIMENTS`. ``quick_steps`` (the main job's, default ``default_steps``) and
    ``full_steps`` (``--full``, default 4 × ``default_steps``)."""

    def deco(fn):
        EXPERIMENTS[name] = Experiment(
            name,
            fn,
            int(default_steps),
            summary,
            int(default_steps if quick_steps is None else quick_steps),
            int(4 * default_steps if full_steps is None else full_steps),
            tuple(claims),
        )
        return fn

    return deco


#: A diverged run's relative loss excess in an effect (+1000%): finite, so that means and sds
#: over seeds exist; documented in docs/experiments.md.
DIVERGED = 10.0


def rel(a: float, b: float) -> float:
    """a / b − 1, with a non-finite a (a diverged run) counted as :data:`DIVERGED`."""
    if not math.isfinite(a):
        return DIVERGED
    if not math.isfinite(b) or b == 0:
        return float("nan")
    return min(a / b - 1.0, DIVERGED)


# ------------------------------------------------------------------ helpers for experiments


def write_csv(path: pathlib.Path, columns: Sequence[str], rows: Iterable[Sequence]) -> str:
    """Write rows under a header; returns the file name."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        for r in rows:
            w.writerow([f"{v:.8g}" if isinstance(v, float) else v for v in r])
    return path.name


def save_plot(fig, path: pathlib.Path) -> str:
    """Save a matplotlib figure as PNG and close it; returns the file name."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path.name


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def fmt_num(v) -> str:
    """A table cell: floats to 4 significant digits, non-finite spelled out."""
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.4g}"
    return str(v)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt_num(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def record_points(steps: int, n: int = 200) -> List[int]:
    """About n steps (1-based, the last included) at which a curve is recorded."""
    every = max(1, steps // n)
    pts = list(range(every, steps + 1, every))
    if not pts or pts[-1] != steps:
        pts.append(steps)
    return pts


# ------------------------------------------------------------------ running


def _check_steps(steps) -> Optional[int]:
    if steps is None:
        return None
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"--steps: expected a positive number of steps, got {steps!r}")
    if steps > 10_000_000:
        raise ValueError(f"--steps: expected at most 10,000,000 steps, got {steps}")
    return steps


def _check_seeds(seeds) -> List[int]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    seeds = list(seeds)
    if not seeds or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds):
        raise ValueError(f"--seeds: expected non-negative integers, got {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds: expected distinct seeds, got {seeds!r}")
    return seeds


def _check_size(size) -> str:
    if size not in SIZES:
        raise ValueError(f"size: expected one of {', '.join(SIZES)}, got {size!r}")
    return size


def _progress_fn(progress: Union[bool, Callable[[str], None], None], name: str) -> Progress:
    """The experiment's :class:`Progress`: on stderr (True), into a callable (its lines), or
    silent (False/None)."""
    if callable(progress):
        return Progress(name, sink=progress)
    if not progress:
        return Progress(name, sink=lambda line: None)
    return Progress(name, stream=sys.stderr)


def steps_for(name: str, size: str = "default") -> int:
    """The step count of experiment ``name`` at ``size`` (quick, default, full)."""
    _load()
    exp = EXPERIMENTS[name]
    return {"quick": exp.quick_steps, "default": exp.default_steps, "full": exp.full_steps}[
        _check_size(size)
    ]


def run_one(
    name: str,
    steps: Optional[int] = None,
    seed: int = 0,
    out: Union[str, pathlib.Path] = "lowfp-experiments",
    progress: Union[bool, Callable[[str], None], None, Progress] = True,
    size: str = "default",
) -> dict:
    """Run one experiment on one seed (the size's steps when ``steps`` is None); returns its
    result dict (the CSVs and PNGs are written into ``out``)."""
    _load()
    if name not in EXPERIMENTS:
        raise ValueError(
            f"experiment: unknown name {name!r}; expected one of {', '.join(EXPERIMENTS)}"
        )
    steps = _check_steps(steps)
    _check_size(size)
    exp = EXPERIMENTS[name]
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = steps_for(name, size) if steps is None else steps
    t, cpu = time.perf_counter(), time.process_time()
    if isinstance(progress, Progress):
        res = exp.fn(n, int(seed), out, progress, size)
    else:
        with _progress_fn(progress, name) as bar:
            res = exp.fn(n, int(seed), out, bar, size)
    res.update(
        name=name,
        steps=n,
        seed=int(seed),
        size=size,
        seconds=time.perf_counter() - t,
        cpu_seconds=time.process_time() - cpu,
    )
    return res


def run_seeds(
    name: str,
    seeds: Sequence[int] = (0, 1, 2),
    steps: Optional[int] = None,
    out: Union[str, pathlib.Path] = "lowfp-experiments",
    progress: Union[bool, Callable[[str], None], None] = True,
    size: str = "default",
) -> dict:
    """Run one experiment on every seed (each seed's files under ``out/<name>/seed<k>/``) and
    aggregate: every numeric table cell as mean ± sd over the seeds, paired differences against
    the same-seed baseline row, a verdict per claim. Returns the aggregate dict (see
    :func:`aggregate`)."""
    seeds = _check_seeds(seeds)
    out = pathlib.Path(out)
    per = []
    with _progress_fn(progress, name) as bar:
        for i, s in enumerate(seeds):
            bar(f"seed {s} ({i + 1}/{len(seeds)})")
            # the first seed's work, announced once for all seeds: the ETA covers the run
            seeded = _SeedProgress(bar, len(seeds) if i == 0 else 0, f"seed {s}")
            per.append(run_one(name, steps, s, out / name / f"seed{s}", seeded, size))
    agg = aggregate(EXPERIMENTS[name], per)
    agg["csv"] = write_aggregate_csv(agg, out)
    fn = getattr(EXPERIMENTS[name].fn, "aggregate_plot", None)
    agg["agg_plots"] = [] if fn is None else fn(per, out)
    return agg


class _SeedProgress(Progress):
    """The progress of one seed inside a multi-seed run: stages and steps go to the run's
    line (the stage prefixed with the seed); ``add_total(n)`` adds ``n · factor`` (the number
    of seeds for the first seed, 0 for the others, whose work is then already counted)."""

    def __init__(self, bar: Progress, factor: int, prefix: str):  # noqa: D107
        self._bar, self._factor, self._prefix = bar, factor, prefix

    def add_total(self, n: int) -> None:
        if self._factor:
            self._bar.add_total(int(n) * self._factor)

    def __call__(self, msg: str) -> None:
        self._bar(f"{self._prefix}: {msg}")

    def advance(self, n: int = 1) -> None:
        self._bar.advance(n)

    def close(self) -> None:
        pass


def run(
    names: Optional[Sequence[str]] = None,
    steps: Optional[int] = None,
    seeds: Union[int, Sequence[int]] = (0, 1, 2),
    out: Union[str, pathlib.Path] = "lowfp-experiments",
    progress: Union[bool, Callable[[str], None], None] = True,
    size: Optional[str] = None,
    seed: Optional[int] = None,
) -> pathlib.Path:
    """Run the named experiments (all when ``names`` is empty/None) on every seed, write
    ``out/report.md`` (verdict tables per paper first) and return its path.

    ``size``: ``"quick"`` (the main job's short runs; the default when no name is given),
    ``"default"`` (each experiment's own default, ≤ ~3 min on 2 cores; the default for named
    experiments) or ``"full"``. ``steps`` overrides the size's step count. ``seed`` (one int)
    is shorthand for ``seeds=[seed]``.

    Raises:
        ValueError: an unknown experiment name, a bad step count, seed list or size (before
            anything runs).
    """
    _load()
    rank = {n: i for i, n in enumerate(ORDER)}
    all_names = sorted(EXPERIMENTS, key=lambda n: (rank.get(n, len(rank)), n))
    if size is None:
        size = "default" if names else "quick"
    names = list(names or all_names)
    bad = [n for n in names if n not in EXPERIMENTS]
    if bad:
        raise ValueError(
            f"experiment: unknown name {bad[0]!r}; expected one of {', '.join(all_names)}"
        )
    _check_steps(steps)
    _check_size(size)
    if seed is not None:
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"--seed: expected a non-negative integer, got {seed!r}")
        seeds = [seed]
    seeds = _check_seeds(seeds)
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    t0 = time.perf_counter()
    for i, n in enumerate(dict.fromkeys(names)):
        if progress is True and len(names) > 1:
            sys.stderr.write(
                f"[lowfp experiment] {i + 1}/{len(names)}: {n}, seeds "
                f"{','.join(map(str, seeds))}, {size} size, "
                f"{time.perf_counter() - t0:.0f} s so far\n"
            )
        results.append(run_seeds(n, seeds, steps, out, progress, size))
    path = out / "report.md"
    path.write_text(render_report(results))
    write_csv(
        out / "verdicts.csv",
        ["paper", "claim", "experiment", "effect", "mean", "sd", "n", "per_seed", "verdict"],
        [
            (
                v["paper"],
                v["claim"],
                r["name"],
                v["what"],
                v["mean"],
                v["sd"],
                v["n"],
                " ".join(f"{e:.4g}" for e in v["effects"]),
                v["verdict"],
            )
            for r in results
            for v in r["verdicts"]
        ],
    )
    return path


# ------------------------------------------------------------------ aggregation over seeds


def mean_sd(xs: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for one value) of the finite values;
    nan when none is finite."""
    a = [float(x) for x in xs if isinstance(x, (int, float)) and math.isfinite(x)]
    if not a:
        return float("nan"), float("nan")
    m = sum(a) / len(a)
    sd = math.sqrt(sum((x - m) ** 2 for x in a) / (len(a) - 1)) if len(a) > 1 else 0.0
    return m, sd


#: The decision rule's multiple of the standard error of the mean effect.
RULE_SE = 2.0
#: The verdicts :func:`verdict` gives.
VERDICTS = ("reproduced", "not reproduced", "inconclusive", "not run")


def verdict(effects: Sequence[float], sign: int = 1, min_effect: float = 0.0) -> str:
    """The decision rule for one claim over n seeds' paired effects e_i.

    With m the mean, s the sample sd and se = s/√n: **reproduced** if sign·m − 2·se >
    min_effect (the claimed direction, clear of the seed noise and of the claimed minimum
    size); **not reproduced** if sign·m + 2·se < min_effect (the effect is clearly smaller than
    claimed or of the other sign); **inconclusive** otherwise, and with fewer than 2 finite
    effects (no noise estimate). With 3 seeds, 2·se is about an 82% two-sided t-interval
    (t with 2 degrees of freedom), a screening rule, not a significance test.
    """
    fin = [e for e in effects if math.isfinite(e)]
    if not fin:
        return "not run"
    if len(fin) < 2:
        return "inconclusive"
    m, sd = mean_sd(fin)
    se = sd / math.sqrt(len(fin))
    if sign * m - RULE_SE * se > min_effect:
        return "reproduced"
    if sign * m + RULE_SE * se < min_effect:
        return "not reproduced"
    return "inconclusive"


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _key(row, k: int) -> tuple:
    return tuple(row[:k])


def aggregate(exp: Experiment, per: List[dict]) -> dict:
    """Aggregate single-seed results (same experiment, same size): tables of mean ± sd cells,
    paired-difference tables, and the verdict of each claim."""
    first = per[0]
    tables = []
    for ti, t in enumerate(first["tables"]):
        k = int(t.get("key", 1))
        cells: Dict[tuple, List[list]] = {}
        order: List[tuple] = []
        for r in per:
            rows = r["tables"][ti]["rows"]
            for row in rows:
                key = _key(row, k)
                if key not in cells:
                    cells[key] = [[] for _ in row]
                    order.append(key)
                for j, v in enumerate(row):
                    if j < len(cells[key]):
                        cells[key][j].append(v)
        rows = []
        for key in order:
            row = []
            for j, vals in enumerate(cells[key]):
                if j < k:
                    row.append(key[j])
                elif vals and all(_is_num(v) for v in vals):
                    m, sd = mean_sd(vals)
                    nf = sum(1 for v in vals if not math.isfinite(float(v)))
                    row.append(_pm(m, sd, len(vals)) + (f" ({nf} diverged)" if nf else ""))
                else:
                    u = list(dict.fromkeys(fmt_num(v) for v in vals))
                    row.append(u[0] if len(u) == 1 else " / ".join(fmt_num(v) for v in vals))
            rows.append(row)
        tables.append(
            {
                "title": t["title"]
                + (f" (mean ± sd over {len(per)} seeds)" if len(per) > 1 else ""),
                "columns": t["columns"],
                "rows": rows,
            }
        )
        base = t.get("baseline")
        if base is not None and len(per) > 1:
            tables.append(_paired(t, ti, per, k, base))
    verdicts = []
    for c in exp.claims:
        effects = []
        for r in per:
            try:
                e = float(c.effect(r["metrics"]))
            except (KeyError, ZeroDivisionError):
                e = float("nan")
            effects.append(e)
        m, sd = mean_sd(effects)
        verdicts.append(
            dict(
                paper=c.paper,
                claim=c.text,
                what=c.what,
                sign=c.sign,
                min_effect=c.min_effect,
                unit=c.unit,
                effects=effects,
                mean=m,
                sd=sd,
                n=sum(1 for e in effects if math.isfinite(e)),
                verdict=verdict(effects, c.sign, c.min_effect),
            )
        )
    return dict(
        name=exp.name,
        title=first["title"],
        description=first["description"],
        steps=first["steps"],
        size=first["size"],
        seeds=[r["seed"] for r in per],
        seconds=sum(r["seconds"] for r in per),
        cpu_seconds=sum(r.get("cpu_seconds", math.nan) for r in per),
        tables=tables,
        verdicts=verdicts,
        per_seed=per,
        plots=[f"{exp.name}/seed{first['seed']}/{p}" for p in first["plots"]],
        findings=first["findings"] if len(per) == 1 else [],
    )


def _pm(m: float, sd: float, n: int) -> str:
    if math.isnan(m):
        return "nan"
    return fmt_num(m) if n == 1 else f"{fmt_num(m)} ± {sd:.2g}"


def _paired(t: dict, ti: int, per: List[dict], k: int, base) -> dict:
    """Per-seed differences (row − the same seed's baseline row), mean ± sd over seeds."""
    diffs: Dict[tuple, Dict[int, list]] = {}
    order: List[tuple] = []
    for r in per:
        rows = {_key(row, k): row for row in r["tables"][ti]["rows"]}
        for key, row in rows.items():
            bkey = base(key) if callable(base) else tuple(base)
            if bkey is None or bkey == key or bkey not in rows:
                continue
            brow = rows[bkey]
            if key not in diffs:
                diffs[key] = {}
                order.append(key)
            for j in range(k, len(row)):
                if j < len(brow) and _is_num(row[j]) and _is_num(brow[j]):
                    a, b = float(row[j]), float(brow[j])
                    d = a - b if math.isfinite(a) and math.isfinite(b) else float("nan")
                    diffs[key].setdefault(j, []).append(d)
    cols = t["columns"]
    keep = sorted({j for d in diffs.values() for j in d})
    rows = []
    for key in order:
        row = list(key)
        for j in keep:
            vals = diffs[key].get(j, [])
            m, sd = mean_sd(vals)
            bad = sum(1 for v in vals if not math.isfinite(v))
            row.append(_pm(m, sd, len(vals)) + (f" ({bad} n/a)" if bad else ""))
        rows.append(row)
    what = "the row named in the first column(s)" if callable(base) else " / ".join(base)
    return {
        "title": f"Paired differences: {t['title']} minus the same seed's baseline "
        f"({what}), mean ± sd over {len(per)} seeds",
        "columns": list(cols[:k]) + [cols[j] for j in keep],
        "rows": rows,
    }


def write_aggregate_csv(agg: dict, out: pathlib.Path) -> List[str]:
    """``<name>_cells.csv``: every numeric table cell of every seed (long format);
    ``<name>_verdicts.csv``: the claims' per-seed effects and verdicts."""
    name = agg["name"].replace("-", "_")
    rows = []
    for r in agg["per_seed"]:
        for t in r["tables"]:
            k = int(t.get("key", 1))
            for row in t["rows"]:
                for j in range(k, len(row)):
                    if _is_num(row[j]):
                        rows.append(
                            (
                                t["title"],
                                " / ".join(map(str, row[:k])),
                                t["columns"][j],
                                r["seed"],
                                float(row[j]),
                            )
                        )
    a = write_csv(out / f"{name}_cells.csv", ["table", "row", "column", "seed", "value"], rows)
    b = write_csv(
        out / f"{name}_verdicts.csv",
        ["paper", "claim", "effect", "seed", "value", "verdict"],
        [
            (v["paper"], v["claim"], v["what"], s, e, v["verdict"])
            for v in agg["verdicts"]
            for s, e in zip(agg["seeds"], v["effects"])
        ],
    )
    return [a, b]


def _effect_cell(v: dict) -> str:
    if v["n"] == 0:
        return "n/a"
    scale, unit = (100.0, " %") if v["unit"] == "%" else (1.0, v["unit"] and " " + v["unit"])
    return f"{v['mean'] * scale:+.3g} ± {v['sd'] * scale:.2g}{unit}"


def verdict_tables(results: List[dict]) -> List[str]:
    """One Markdown verdict table per paper (papers in first-seen order)."""
    papers: Dict[str, list] = {}
    for r in results:
        for v in r["verdicts"]:
            papers.setdefault(v["paper"], []).append((r, v))
    lines = []
    for paper, items in papers.items():
        lines += [
            f"### {paper}",
            "",
            "| claim | experiment | effect (per seed, paired) | mean ± sd (n) | "
            "per seed | verdict |",
            "|---|---|---|---|---|---|",
        ]
        for r, v in items:
            scale = 100.0 if v["unit"] == "%" else 1.0
            per = " ".join(f"{e * scale:+.3g}" for e in v["effects"])
            pred = ("> " if v["sign"] > 0 else "< ") + (
                f"{v['sign'] * v['min_effect'] * scale:+.3g}" if v["min_effect"] else "0"
            )
            lines.append(
                f"| {v['claim']} | {r['name']} | {v['what']} (claimed {pred}) | "
                f"{_effect_cell(v)} ({v['n']}) | {per} | **{v['verdict']}** |"
            )
        lines.append("")
    return lines


def render_report(results: List[dict]) -> str:
    import platform

    import torch

    from .. import __version__ as lowfp_version

    total = sum(r["seconds"] for r in results)
    cpu = sum(r.get("cpu_seconds", math.nan) for r in results)
    lines = [
        "# lowfp experiments",
        "",
        f"lowfp {lowfp_version}, torch {torch.__version__}, Python "
        f"{platform.python_version()}; {len(results)} experiment(s), {total:.1f} s wall, "
        f"{cpu:.1f} s CPU (all threads of this process) in all. "
        "Every number is also in a CSV file next to this report.",
        "",
        "## Verdicts",
        "",
        f"Decision rule (per claim, over the n seeds' paired effects: mean m, sd s, "
        f"se = s/√n): **reproduced** if the claimed sign · m − {RULE_SE:g}·se exceeds the "
        f"claimed minimum effect; **not reproduced** if the claimed sign · m + "
        f"{RULE_SE:g}·se falls below it; otherwise **inconclusive**. A diverged run "
        f"counts as a +{DIVERGED:.0%} loss excess.",
        "",
    ]
    lines += verdict_tables(results)
    for r in results:
        seeds = ",".join(map(str, r["seeds"]))
        flag = {"quick": " --quick", "full": " --full", "default": ""}[r["size"]]
        lines += [
            f"## {r['name']}: {r['title']}",
            "",
            f"*{r['size']} size, {r['steps']} steps, seeds {seeds}, "
            f"{r['seconds']:.1f} s wall, {r.get('cpu_seconds', math.nan):.1f} s CPU. "
            f"Reproduce: `lowfp experiment {r['name']} --seeds {seeds}{flag}`*",
            "",
            "**What it tests.** " + r["description"],
            "",
        ]
        for t in r["tables"]:
            lines += [f"**{t['title']}**", "", markdown_table(t["columns"], t["rows"]), ""]
        for p in r.get("agg_plots", []) + r["plots"]:
            lines += [f"![{p}]({p})", ""]
        if r["findings"]:
            lines += ["**Findings.**", ""] + [f"- {f}" for f in r["findings"]] + [""]
        if r.get("csv"):
            lines += [
                "CSV: " + ", ".join(f"[{c}]({c})" for c in r["csv"]) + f"; per seed under "
                f"{r['name']}/seed<k>/",
                "",
            ]
    return "\n".join(lines)


#: The modules that register experiments.
MODULES = (
    "beta2",
    "mantissa_vs_steps",
    "linf",
    "muon8bit",
    "sgd_shrinkage",
    "solo_factorial",
    "ptq",
    "qat_scaling",
    "blockwise_lr",
    "precision_sweep",
    "swamping",
    "low_bit_states",
)


def _load() -> None:
    """Import the modules that register the experiments (once; a module not written yet is
    skipped)."""
    import importlib

    for m in MODULES:
        try:
            importlib.import_module(f"{__name__}.{m}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{m}":
                raise
