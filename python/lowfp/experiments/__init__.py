"""Reproducible experiments with lowfp's low-bit optimizers: ``lowfp experiment``.

Each experiment is a function ``(steps, seed, out, progress) -> dict`` registered in
:data:`EXPERIMENTS`. It writes a CSV of every curve and PNG plots into ``out`` and returns a
result dict with the keys ``title``, ``description``, ``tables`` (a list of ``{"title",
"columns", "rows"}``), ``plots`` and ``csv`` (file names in ``out``), ``findings`` (sentences
stating the numbers) and ``metrics`` (the headline numbers, for tests). :func:`run` runs a
selection of them and writes one Markdown report, ``out/report.md``.

Each experiment function receives a :class:`~lowfp.experiments.progress.Progress`: it calls
``progress.add_total(units)`` once it knows its work, ``progress(msg)`` at each stage and
``progress.advance()`` per optimizer step (the line shows steps done/total, elapsed, ETA).

Experiments (the order of a run of all of them, ``lowfp experiment`` with no name):
    precision-sweep  Adam vs Muon on the char transformer (chartf.py): final loss vs mantissa
                     bits of gradients, weights, m, v (one at a time, e8mM, stochastic
                     rounding), Huber fits (fit.py), mantissa needed vs steps
    sgd-shrinkage    SGD with gradients rounded to FP4/FP8/FP16 at 1x, 2x, 4x the step size
    swamping         low-bit second moment (2/3/4-bit linear, nearest vs logarithmic,
                     stochastic): the EMA itself under constant gradients, then AdamW training
    low-bit-states   fp32 vs 8/4/3/2-bit AdamW, SOLO, Muon vs Muon8bit on the char transformer:
                     loss curves and state bytes per parameter
"""

from __future__ import annotations

import csv
import dataclasses
import math
import pathlib
import sys
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Union

__all__ = ["EXPERIMENTS", "Experiment", "register", "run", "run_one", "write_csv",
           "save_plot", "markdown_table"]

from .progress import Progress  # noqa: E402 - the progress line every experiment reports to


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A registered experiment: its function and its default (CPU-friendly) step count."""

    name: str
    fn: Callable[[int, int, pathlib.Path, Progress], dict]
    default_steps: int
    summary: str


#: name → :class:`Experiment`.
EXPERIMENTS: Dict[str, Experiment] = {}
#: The order of a run of every experiment.
ORDER = ("precision-sweep", "sgd-shrinkage", "swamping", "low-bit-states")


def register(name: str, default_steps: int, summary: str):
    """Decorator: add an experiment function to :data:`EXPERIMENTS`."""

    def deco(fn):
        EXPERIMENTS[name] = Experiment(name, fn, int(default_steps), summary)
        return fn

    return deco


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


def _progress_fn(progress: Union[bool, Callable[[str], None], None], name: str) -> Progress:
    """The experiment's :class:`Progress`: on stderr (True), into a callable (its lines), or
    silent (False/None)."""
    if callable(progress):
        return Progress(name, sink=progress)
    if not progress:
        return Progress(name, sink=lambda line: None)
    return Progress(name, stream=sys.stderr)


def run_one(name: str, steps: Optional[int] = None, seed: int = 0,
            out: Union[str, pathlib.Path] = "lowfp-experiments",
            progress: Union[bool, Callable[[str], None], None] = True) -> dict:
    """Run one experiment (its default steps when ``steps`` is None); returns its result."""
    _load()
    if name not in EXPERIMENTS:
        raise ValueError(f"experiment: unknown name {name!r}; expected one of "
                         f"{', '.join(EXPERIMENTS)}")
    steps = _check_steps(steps)
    exp = EXPERIMENTS[name]
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    n = exp.default_steps if steps is None else steps
    t = time.perf_counter()
    with _progress_fn(progress, name) as bar:
        res = exp.fn(n, int(seed), out, bar)
    res.update(name=name, steps=n, seed=int(seed), seconds=time.perf_counter() - t)
    return res


def run(names: Optional[Sequence[str]] = None, steps: Optional[int] = None, seed: int = 0,
        out: Union[str, pathlib.Path] = "lowfp-experiments",
        progress: Union[bool, Callable[[str], None], None] = True) -> pathlib.Path:
    """Run the named experiments (all when ``names`` is empty/None), each with ``steps`` steps
    (its own CPU-friendly default when None), write ``out/report.md`` and return its path.

    Raises:
        ValueError: an unknown experiment name or a bad step count (before anything runs).
    """
    _load()
    rank = {n: i for i, n in enumerate(ORDER)}
    names = list(names or sorted(EXPERIMENTS, key=lambda n: (rank.get(n, len(rank)), n)))
    bad = [n for n in names if n not in EXPERIMENTS]
    if bad:
        raise ValueError(f"experiment: unknown name {bad[0]!r}; expected one of "
                         f"{', '.join(EXPERIMENTS)}")
    _check_steps(steps)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"--seed: expected a non-negative integer, got {seed!r}")
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = [run_one(n, steps, seed, out, progress) for n in dict.fromkeys(names)]
    path = out / "report.md"
    path.write_text(render_report(results))
    return path


def render_report(results: List[dict]) -> str:
    import platform

    import torch

    from .. import __version__ as lowfp_version

    total = sum(r["seconds"] for r in results)
    lines = ["# lowfp experiments", "",
             f"lowfp {lowfp_version}, torch {torch.__version__}, Python "
             f"{platform.python_version()}; {len(results)} experiment(s), {total:.1f} s in all. "
             "Every curve is also in a CSV file next to this report.", ""]
    for r in results:
        lines += [f"## {r['name']}: {r['title']}", "",
                  f"*{r['steps']} steps, seed {r['seed']}, {r['seconds']:.1f} s. Reproduce: "
                  f"`lowfp experiment {r['name']} --steps {r['steps']} --seed {r['seed']}`*", "",
                  "**What it tests.** " + r["description"], ""]
        for t in r["tables"]:
            lines += [f"**{t['title']}**", "", markdown_table(t["columns"], t["rows"]), ""]
        for p in r["plots"]:
            lines += [f"![{p}]({p})", ""]
        lines += ["**Findings.**", ""] + [f"- {f}" for f in r["findings"]] + [""]
        if r.get("csv"):
            lines += ["CSV: " + ", ".join(f"[{c}]({c})" for c in r["csv"]), ""]
    return "\n".join(lines)


def _load() -> None:
    """Import the modules that register the experiments (once)."""
    from . import low_bit_states, precision_sweep, sgd_shrinkage, swamping  # noqa: F401
