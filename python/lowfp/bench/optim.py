"""One optimizer step on N float32 parameters: lowfp's fused low-bit optimizers side by side
with torch, torchao and bitsandbytes on the CPU, in the same run.

    lowfp bench optim [--quick]
    python3 benches/bench_optim.py [--n 16777216] [--threads 2] [--repeat 5] [--quick]

Prints Markdown tables: milliseconds per step (median of `repeat` steps after 2 warm-up
steps), state bytes per parameter, and the ratio to torch's fused fp32 AdamW, for one tensor
of N parameters and then for models of many tensors (per-tensor cost: 300 × 8192,
2000 × 64 with every state quantized, GPT-2-small's 148 shapes); then the import time of
``lowfp.optim`` beyond torch's. A progress line on stderr. ``--quick``: 2^16 parameters, a
64×64 Muon matrix, scaled-down models, 1 timed step (a smoke run: its ratios are noise).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

import torch

import lowfp
import lowfp.optim as lo
from lowfp.experiments.progress import Progress


def _torchao(name):
    def make(ps):
        import torchao.optim as ao

        return getattr(ao, name)(ps, lr=1e-3)

    return make


def _bnb(ps):
    import bitsandbytes as bnb

    return bnb.optim.AdamW8bit(ps, lr=1e-3)


def _muon(quantized):
    def make(ps):
        cls = lo.Muon8bit if quantized else lo.Muon
        return cls(ps, lr=0.02)

    return make


ROWS = [  # (name, factory, group)
    ("torch AdamW (foreach)", lambda ps: torch.optim.AdamW(ps, lr=1e-3, foreach=True), "anchor"),
    ("torch AdamW (fused)", lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True), "anchor"),
    ("torchao AdamW8bit", _torchao("AdamW8bit"), "anchor"),
    ("torchao AdamW4bit", _torchao("AdamW4bit"), "anchor"),
    ("torchao AdamWFp8", _torchao("AdamWFp8"), "anchor"),
    ("bitsandbytes AdamW8bit", _bnb, "anchor"),
    ("lowfp AdamW fp32", lambda ps: lo.AdamW(ps, lr=1e-3), "lowfp"),
    ("lowfp AdamW8bit", lambda ps: lo.AdamW8bit(ps, lr=1e-3), "lowfp"),
    ("lowfp AdamW4bit", lambda ps: lo.AdamW4bit(ps, lr=1e-3), "lowfp"),
    ("lowfp AdamWFp8", lambda ps: lo.AdamWFp8(ps, lr=1e-3), "lowfp"),
    ("lowfp SOLO 3-bit", lambda ps: lo.SOLO(ps, bits=3, lr=1e-3), "lowfp"),
    ("lowfp SOLO 2-bit", lambda ps: lo.SOLO(ps, bits=2, lr=1e-3), "lowfp"),
    ("lowfp Muon fp32 [1]", _muon(False), "muon"),
    ("lowfp Muon8bit [1]", _muon(True), "muon"),
]


def state_bytes(opt) -> int:
    if hasattr(opt, "state_nbytes"):
        return opt.state_nbytes()
    total = 0
    for st in opt.state.values():
        for v in st.values():
            if torch.is_tensor(v):
                # torchao keeps its states as tensor subclasses: count their inner tensors
                inner = getattr(v, "__tensor_flatten__", None)
                if inner is not None:
                    names, _ = inner()
                    total += sum(
                        getattr(v, n).numel() * getattr(v, n).element_size() for n in names
                    )
                else:
                    total += v.numel() * v.element_size()
    return total


def step_ms(opt, repeat: int) -> float:
    """Median milliseconds of `repeat` steps after 2 warm-up steps."""
    times = []
    for i in range(2 + repeat):
        t = time.perf_counter()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def measure(factory, n: int, repeat: int, shape: tuple):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(shape))
    opt = factory([p])
    p.grad = torch.randn(shape) * 1e-2
    return step_ms(opt, repeat), state_bytes(opt) / n


def gpt2_small_shapes() -> list:
    """The 148 parameter shapes of GPT-2 small (124M parameters; tied head)."""
    d, v, ctx, layers = 768, 50257, 1024, 12
    per_layer = [
        (d,),
        (d,),
        (d, 3 * d),
        (3 * d,),
        (d, d),
        (d,),
        (d,),
        (d,),
        (d, 4 * d),
        (4 * d,),
        (4 * d, d),
        (d,),
    ]
    return [(v, d), (ctx, d)] + per_layer * layers + [(d,), (d,)]


#: (label, factory) of the many-tensor rows; the anchor first.
MODEL_ROWS = [
    ("torch AdamW (fused)", lambda ps, mq: torch.optim.AdamW(ps, lr=1e-3, fused=True)),
    ("lowfp AdamW8bit", lambda ps, mq: lo.AdamW8bit(ps, lr=1e-3, min_quant_size=mq)),
    ("lowfp AdamW fp32", lambda ps, mq: lo.AdamW(ps, lr=1e-3)),
    ("bitsandbytes AdamW8bit", lambda ps, mq: _bnb(ps)),
]


def model_cases(quick: bool) -> list:
    """(label, shapes, min_quant_size) of the many-tensor cases."""
    if quick:
        return [
            ("30 × 8192", [(8192,)] * 30, 4096),
            ("200 × 64, min_quant_size=0", [(64,)] * 200, 0),
        ]
    return [
        ("300 × 8192", [(8192,)] * 300, 4096),
        ("2000 × 64, min_quant_size=0", [(64,)] * 2000, 0),
        ("GPT-2 small (148 tensors, 124M)", gpt2_small_shapes(), 4096),
    ]


def measure_model(factory, shapes: list, min_quant: int, repeat: int) -> float:
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    for p in ps:
        p.grad = torch.randn(p.shape) * 1e-2
    return step_ms(factory(ps, min_quant), repeat)


def import_seconds(repeat: int = 3) -> tuple:
    """(best seconds of `import torch`, best of `import torch, lowfp.optim`), fresh processes."""

    def best(code):
        out = []
        for _ in range(repeat):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            out.append(time.perf_counter() - t)
        return min(out)

    return best("import torch"), best("import torch, lowfp.optim")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="lowfp bench optim", description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1 << 24, help="parameters (default 16Mi)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads (default all)")
    ap.add_argument("--repeat", type=int, default=5, help="timed steps (default 5)")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 2^16 parameters, a 64x64 Muon matrix, 1 timed step",
    )
    ap.add_argument(
        "--only", default=None, help="run only the rows whose name contains this text (e.g. lowfp)"
    )
    args = ap.parse_args(argv)
    rows = [r for r in ROWS if args.only is None or args.only in r[0]]
    if not rows:
        raise ValueError(
            f"--only: no optimizer row contains {args.only!r}; rows: "
            + ", ".join(r[0] for r in ROWS)
        )
    if args.n < 1 or args.repeat < 1 or args.threads < 1:
        raise ValueError(
            "--n, --repeat, --threads: expected positive integers, got "
            f"{args.n}, {args.repeat}, {args.threads}"
        )
    if args.quick:
        args.n, args.repeat = 1 << 16, 1
    old_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    lowfp.set_num_threads(args.threads)
    # Newton–Schulz in bfloat16 is slow on a CPU: 1024² takes ~20 s a step
    matrix = (64, 64) if args.quick else (512, 512)
    results, notes = [], []
    with Progress("bench optim", total=len(rows), unit="optimizers") as progress:
        for name, factory, group in rows:
            progress(name)
            shape = matrix if group == "muon" else (args.n,)
            n = matrix[0] * matrix[1] if group == "muon" else args.n
            try:
                ms, bpp = measure(factory, n, args.repeat, shape)
                results.append((name, ms, bpp))
            except Exception as e:  # an anchor that is missing or fails is reported, not fatal
                notes.append(f"{name}: n/a ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
                results.append((name, None, None))
            progress.advance()
    torch.set_num_threads(old_threads)
    base = dict((r[0], r[1]) for r in results).get("torch AdamW (fused)")
    print(f"# One optimizer step, {args.n:,} float32 parameters, {args.threads} threads\n")
    print("| optimizer | ms / step | state bytes / param | time vs torch fused fp32 |")
    print("|---|---|---|---|")
    for name, ms, bpp in results:
        if ms is None:
            print(f"| {name} | n/a | n/a | n/a |")
            continue
        ratio = f"{ms / base:.2f}×" if base and "[1]" not in name else "—"
        print(f"| {name} | {ms:.1f} | {bpp:.3f} | {ratio} |")
    print()
    print(
        f"[1] one {matrix[0]}×{matrix[1]} matrix: fused momentum (Rust) + "
        "5 Newton–Schulz steps (torch, bfloat16), which dominate on a CPU."
    )
    for note in notes:
        print(f"- {note}")
    if args.only is None:
        models(args)
    print(f"\nCommand: `{' '.join([os.path.basename(sys.executable)] + sys.argv)}`  ")
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}, "
        f"lowfp {lowfp.__version__}"
    )
    return 0


def models(args) -> None:
    """The many-tensor table and the import time."""
    cases = model_cases(args.quick)
    torch.set_num_threads(args.threads)
    table = []
    with Progress(
        "bench optim (models)", total=len(cases) * len(MODEL_ROWS), unit="runs"
    ) as progress:
        for label, shapes, mq in cases:
            row: list[float | None] = []
            for name, factory in MODEL_ROWS:
                progress(f"{label}: {name}")
                try:
                    row.append(measure_model(factory, shapes, mq, args.repeat))
                except Exception:  # a missing anchor is reported as n/a
                    row.append(None)
                progress.advance()
            table.append((label, row))
    print("\n# Many tensors: ms per step (ratio to torch fused fp32 AdamW)\n")
    print("| model | " + " | ".join(n for n, _ in MODEL_ROWS) + " |")
    print("|---" * (len(MODEL_ROWS) + 1) + "|")
    for label, row in table:
        base = row[0]
        cells = [
            f"{ms:.1f}" + (f" ({ms / base:.2f}×)" if base and i else "")
            if ms is not None
            else "n/a"
            for i, ms in enumerate(row)
        ]
        print(f"| {label} | " + " | ".join(cells) + " |")
    t_torch, t_both = import_seconds(1 if args.quick else 3)
    print(
        f"\n`import torch`: {t_torch:.2f} s; `import torch, lowfp.optim`: {t_both:.2f} s "
        f"(lowfp.optim adds {t_both - t_torch:+.2f} s; best of fresh processes)"
    )
