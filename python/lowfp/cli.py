"""The ``lowfp`` command line.

Commands:
    lowfp formats        table of every named format
    lowfp demo           what `lowfp` alone runs: format table, then a round trip of random
                         data through every format ≤ 8 bits and every blockwise preset
    lowfp convert        .npy/.npz/.safetensors/.pt → safetensors of packed QTensors, and back
    lowfp inspect        per-tensor post-training-quantization report for formats
    lowfp bench          codec and optimizer benchmarks beside the installed anchors
    lowfp experiment     reproducible low-precision training experiments → Markdown report
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from . import _core
from .codec import decode, encode
from .formats import formats
from .qtensor import PRESETS, SCALES, quantize_blockwise


def _fmt_table() -> str:
    rows = [("name", "bits", "e", "m", "bias", "inf", "nan", "max", "min_normal",
             "min_subnormal", "eps")]
    for f in formats():
        rows.append((f.name, str(f.bits), str(f.exp_bits), str(f.man_bits), str(f.bias),
                     "y" if f.inf else "-", f.nan, f"{f.max:.6g}", f"{f.min_normal:.6g}",
                     f"{f.min_subnormal:.6g}", f"{f.eps:.6g}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def cmd_formats(_: argparse.Namespace) -> int:
    print(_fmt_table())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if args.n < 1:
        raise ValueError(f"--n: expected a positive number of values, got {args.n}")
    print(_fmt_table())
    rng = np.random.default_rng(args.seed)
    x = (rng.standard_normal(args.n) * 2.0).astype(np.float32)
    print(f"\nround trip of {args.n:,} N(0, 2²) float32 values ({_core.num_threads()} threads)")
    print(f"{'format':<20}{'rounding':<12}{'rel. RMSE':>12}{'exact re-encode':>17}{'Melem/s':>10}")
    for f in formats():
        if f.bits > 8 or not f.signed:
            continue
        for rounding in ("nearest", "stochastic"):
            t = time.perf_counter()
            codes = encode(x, f, rounding=rounding, overflow="saturate", seed=args.seed)
            dt = time.perf_counter() - t
            y = decode(codes, f)
            again = encode(y, f)  # decoded values are exact: they must re-encode to the same codes
            same = bool(np.array_equal(again, codes))
            rmse = float(np.sqrt(np.mean((y - x) ** 2)) / np.sqrt(np.mean(x**2)))
            rate = args.n / dt / 1e6
            print(f"{f.name:<20}{rounding:<12}{rmse:>12.4g}{str(same):>17}{rate:>10.0f}")
            if not same:
                print("error: decoded values did not re-encode to the same codes", file=sys.stderr)
                return 1
    print("\nblockwise presets on the same data")
    print(f"{'preset':<14}{'bytes/elem':>11}{'rel. RMSE':>12}")
    for name in PRESETS:
        q = quantize_blockwise(x, name)
        y = q.dequantize()
        rmse = float(np.sqrt(np.mean((y - x) ** 2)) / np.sqrt(np.mean(x**2)))
        print(f"{name:<14}{q.nbytes / x.size:>11.4f}{rmse:>12.4g}")
    return 0


# ---------------------------------------------------------------- files


def _read_tensors(path: str) -> dict:
    """name → float array from .npy, .npz, .safetensors (float) or a torch .pt state dict."""
    import os

    if not os.path.isfile(path):
        raise ValueError(f"IN: no such file: {path}")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".npy":
            return {"tensor": np.load(path, allow_pickle=False)}
        if ext == ".npz":
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        if ext == ".safetensors":
            from safetensors.numpy import load_file

            return load_file(path)
        if ext in (".pt", ".pth", ".bin"):
            import torch

            sd = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(sd, torch.Tensor):
                sd = {"tensor": sd}
            return {k: v.detach().float().numpy() for k, v in sd.items()
                    if isinstance(v, torch.Tensor) and v.is_floating_point()}
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise ValueError(f"IN: cannot read {path}: {str(e).splitlines()[0]}") from None
    raise ValueError(f"IN: expected .npy, .npz, .safetensors or .pt, got {path}")


def _floats(tensors: dict) -> dict:
    out = {k: np.asarray(v) for k, v in tensors.items()}
    return {k: v for k, v in out.items() if v.dtype.kind == "f" or v.dtype.name == "bfloat16"}


def _atomic_write(path: str, write) -> None:
    """Write through a temporary file so that a failure leaves no partial output."""
    import os
    import tempfile

    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise ValueError(f"OUT: no such directory: {d}")
    fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def cmd_convert(args: argparse.Namespace) -> int:
    from .qtensor import load_qtensors, save_qtensors

    if args.to:
        if args.to != "float32":
            raise ValueError(f"--to: expected float32, got {args.to}")
        qs = load_qtensors(args.IN) if args.IN.endswith(".safetensors") else None
        if not qs:
            raise ValueError(f"IN: expected a lowfp .safetensors file, got {args.IN}")
        out = {k: q.dequantize() for k, q in qs.items()}
        from safetensors.numpy import save_file

        _atomic_write(args.OUT, lambda t: save_file(out, t))
        print(f"{len(out)} tensors → {args.OUT} (float32)")
        return 0
    tensors = _floats(_read_tensors(args.IN))
    if not tensors:
        raise ValueError(f"IN: no floating-point tensors in {args.IN}")
    kw = {} if args.block is None else {"block_size": args.block}
    if args.scale:
        kw["scale"] = args.scale
    qs = {k: quantize_blockwise(v, args.format, rounding=args.rounding, seed=args.seed, **kw)
          for k, v in tensors.items()}
    _atomic_write(args.OUT, lambda t: save_qtensors(qs, t))
    before = sum(np.asarray(v).nbytes for v in tensors.values())
    after = sum(q.nbytes for q in qs.values())
    print(f"{len(qs)} tensors, {before:,} → {after:,} bytes ({after / before:.3f}×) → {args.OUT}")
    return 0


def _report_row(name: str, x: np.ndarray, fmt: str, block, scale) -> dict:
    x = np.asarray(x, np.float32).reshape(-1)
    kw = {} if block is None else {"block_size": block}
    if scale:
        kw["scale"] = scale
    q = quantize_blockwise(x, fmt, **kw)
    y = q.dequantize()
    err = y.astype(np.float64) - x
    mse = float(np.mean(err**2)) if x.size else 0.0
    power = float(np.mean(x.astype(np.float64) ** 2)) if x.size else 0.0
    mean_abs = float(np.mean(np.abs(x))) if x.size else 0.0
    sd = float(np.std(x.astype(np.float64)))
    kurt = float(np.mean(((x - x.mean()) / sd) ** 4)) if sd > 0 else float("nan")
    return {
        "tensor": name, "format": fmt, "elements": int(x.size), "mse": mse,
        "sqnr_db": 10 * np.log10(power / mse) if mse > 0 else float("inf"),
        "max_abs_err": float(np.max(np.abs(err))) if x.size else 0.0,
        "max_to_mean": float(np.max(np.abs(x)) / mean_abs) if mean_abs > 0 else float("nan"),
        "kurtosis": kurt, "bytes": int(q.nbytes),
    }


def cmd_inspect(args: argparse.Namespace) -> int:
    tensors = _floats(_read_tensors(args.FILE))
    if not tensors:
        raise ValueError(f"FILE: no floating-point tensors in {args.FILE}")
    rows = [_report_row(k, v, f, args.block, args.scale)
            for k, v in tensors.items() for f in (args.format or ["mxfp8", "mxfp4"])]
    cols = ["tensor", "format", "elements", "mse", "sqnr_db", "max_abs_err", "max_to_mean",
            "kurtosis", "bytes"]
    print("  ".join(f"{c:>12}" for c in cols))
    for r in rows:
        print("  ".join(f"{r[c]:>12.4g}" if isinstance(r[c], float) else f"{r[c]!s:>12}"
                        for c in cols))
    if args.csv:
        import csv

        def write_csv(t):
            with open(t, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=cols)
                w.writeheader()
                w.writerows(rows)

        _atomic_write(args.csv, write_csv)
    if args.json:
        import json

        def write_json(t):
            with open(t, "w") as fh:
                json.dump(rows, fh, indent=1)

        _atomic_write(args.json, write_json)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    which = [args.WHICH] if args.WHICH else ["codecs", "optim"]
    extra = ["--quick"] if args.quick else []
    if args.n is not None:
        if args.n < 1:
            raise ValueError(f"--n: expected a positive number of elements, got {args.n}")
        extra += ["--n", str(args.n)]
    if args.repeat is not None:
        if args.repeat < 1:
            raise ValueError(f"--repeat: expected a positive number of runs, got {args.repeat}")
        extra += ["--repeat", str(args.repeat)]
    rc = 0
    for w in which:
        if w == "codecs":
            from .bench import codecs as mod
        else:
            from .bench import optim as mod
        rc = mod.main(extra) or rc
        print()
    return rc


def cmd_experiment(args: argparse.Namespace) -> int:
    from . import experiments

    try:
        seeds = [int(x) for x in args.seeds.split(",") if x.strip() != ""]
    except ValueError:
        raise ValueError(f"--seeds: expected comma-separated non-negative integers, got "
                         f"{args.seeds!r}") from None
    if args.seed is not None:
        seeds = [args.seed]
    size = "full" if args.full else ("quick" if args.quick else None)
    t = time.perf_counter()
    path = experiments.run(args.NAME, steps=args.steps, seeds=seeds, out=args.out, size=size)
    print(f"report: {path} ({time.perf_counter() - t:.1f} s)")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="lowfp", description="Exact low-precision formats.")
    sub = p.add_subparsers(dest="cmd")
    sub.add_parser("formats", help="table of every named format").set_defaults(fn=cmd_formats)
    d = sub.add_parser("demo", help="format table and round trips (what `lowfp` alone "
                       "runs)")
    d.add_argument("--n", type=int, default=1 << 22, help="number of values (default 4Mi)")
    d.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    d.set_defaults(fn=cmd_demo)
    c = sub.add_parser("convert", help="float tensors → packed QTensors (safetensors), and back")
    c.add_argument("IN", help=".npy, .npz, .safetensors or torch .pt state dict")
    c.add_argument("OUT", help="output .safetensors")
    c.add_argument("--format", default="mxfp8",
                   help="a format of ≤ 8 bits or a preset (mxfp8, mxfp4, nvfp4, …; default mxfp8)")
    c.add_argument("--block", type=int, default=None, help="block size (default: the preset's "
                   "or 256)")
    c.add_argument("--scale", choices=list(SCALES), default=None,
                   help="scale rule (default: the preset's or absmax)")
    c.add_argument("--rounding", default="nearest", help="rounding mode (default nearest)")
    c.add_argument("--seed", type=int, default=0, help="stochastic rounding seed")
    c.add_argument("--to", default=None, help="float32: decode a lowfp file back to floats")
    c.set_defaults(fn=cmd_convert)
    i = sub.add_parser("inspect", help="post-training-quantization report per tensor")
    i.add_argument("FILE", help=".npy, .npz, .safetensors or torch .pt state dict")
    i.add_argument("--format", action="append",
                   help="format or preset; repeat for several (default: mxfp8 and mxfp4)")
    i.add_argument("--block", type=int, default=None, help="block size")
    i.add_argument("--scale", choices=list(SCALES), default=None,
                   help="scale rule")
    i.add_argument("--csv", default=None, help="also write the table as CSV")
    i.add_argument("--json", default=None, help="also write the table as JSON")
    i.set_defaults(fn=cmd_inspect)
    b = sub.add_parser("bench", help="codec and optimizer benchmarks beside the installed anchors "
                       "(ml_dtypes, torch, bitsandbytes, torchao, qtorch, gfloat)")
    b.add_argument("WHICH", nargs="?", choices=["codecs", "optim"],
                   help="codecs or optim (default: both)")
    b.add_argument("--quick", action="store_true",
                   help="a smoke run of seconds (few elements, one or two timed runs)")
    b.add_argument("--n", type=int, default=None,
                   help="elements / parameters (default 2^24; 2^16 with --quick)")
    b.add_argument("--repeat", type=int, default=None, help="timed runs (default 5)")
    b.set_defaults(fn=cmd_bench)
    e = sub.add_parser("experiment", help="run reproducible multi-seed low-precision training "
                       "experiments and write a Markdown report with verdicts")
    e.add_argument("NAME", nargs="*", help="beta2, mantissa-vs-steps, linf, muon8bit, "
                   "sgd-shrinkage, solo-factorial, ptq, qat-scaling, blockwise-lr, "
                   "precision-sweep, swamping, low-bit-states (default: a quick run of all of "
                   "them, one report)")
    e.add_argument("--seeds", default="0,1,2",
                   help="comma-separated seeds (default 0,1,2); every table cell is mean ± sd "
                   "over them")
    e.add_argument("--seed", type=int, default=None, help="one seed (same as --seeds N)")
    e.add_argument("--steps", type=int, default=None,
                   help="steps per run (default: the size's; see docs/experiments.md)")
    g = e.add_mutually_exclusive_group()
    g.add_argument("--full", action="store_true", help="full size (longer runs)")
    g.add_argument("--quick", action="store_true",
                   help="the main job's quick size (the default when no NAME is given)")
    e.add_argument("--out", default="lowfp-experiments",
                   help="output directory for report.md, CSVs and PNGs (default "
                   "lowfp-experiments/)")
    e.set_defaults(fn=cmd_experiment)
    args = p.parse_args(argv)
    if not hasattr(args, "fn"):
        args = p.parse_args(["demo"] + (argv or []))
    try:
        return args.fn(args)
    except (ValueError, TypeError, OSError) as e:
        print(f"lowfp: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # a reader's own error type (safetensors, torch): one line, no trace
        print(f"lowfp: error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
