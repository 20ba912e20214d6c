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
import os
import re
import sys
import time
from typing import Any, Optional

import numpy as np

from . import __version__, _core, checkpoint
from ._common import ROUNDINGS
from .codec import decode, encode
from .formats import formats
from .qtensor import PRESETS, SCALES, QTensor, quantize_blockwise


def _fmt_table() -> str:
    rows = [
        (
            "name",
            "bits",
            "e",
            "m",
            "bias",
            "inf",
            "nan",
            "max",
            "min_normal",
            "min_subnormal",
            "eps",
        )
    ]
    for f in formats():
        rows.append(
            (
                f.name,
                str(f.bits),
                str(f.exp_bits),
                str(f.man_bits),
                str(f.bias),
                "y" if f.inf else "-",
                f.nan,
                f"{f.max:.6g}",
                f"{f.min_normal:.6g}",
                f"{f.min_subnormal:.6g}",
                f"{f.eps:.6g}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


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

_INPUTS = ".npy, .npz, .safetensors or a torch .pt/.pth/.bin state dict"


def _check_in(path: str, arg: str) -> None:
    if os.path.isdir(path):
        raise ValueError(f"{arg}: {path} is a directory; expected a file ({_INPUTS})")
    if not os.path.exists(path):
        raise ValueError(f"{arg}: no such file: {path}")


def _as_arg(e: ValueError, arg: str) -> ValueError:
    """lowfp.checkpoint's "path: ..." message, naming the command-line argument instead."""
    msg = str(e)
    return ValueError(f"{arg}:{msg[5:]}" if msg.startswith("path:") else msg)


def _read_input(path: str, arg: str) -> Any:
    """The structure in a file: a dict name → array for .npy/.npz/plain safetensors, the
    checkpoint's own (possibly nested) structure for torch files and lowfp files, whose
    QTensors stay quantized."""
    _check_in(path, arg)
    ext = os.path.splitext(path)[1].lower()
    if ext in (".npy", ".npz"):
        try:
            if ext == ".npy":
                return {"tensor": np.load(path, allow_pickle=False)}
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError) as e:
            raise ValueError(
                f"{arg}: cannot read {path} as {ext}: {str(e).splitlines()[0]}"
            ) from None
    try:
        if ext in (".safetensors", ".pt", ".pth"):
            return checkpoint.load_quantized(path)
        if ext == ".bin":
            return checkpoint.torch_load(path)
    except ValueError as e:
        raise _as_arg(e, arg) from None
    raise ValueError(f"{arg}: expected {_INPUTS}, got {path}")


def _leaves(tree: Any, path: tuple = ()) -> list:
    """(name, tensor or QTensor) for every one in a nested structure (names joined by "/")."""
    out: list = []
    checkpoint._map(tree, lambda p, t: out.append(("/".join(p) or "tensor", t)))
    return out


def _is_float(t: Any) -> bool:
    return checkpoint._dtype_name(t) in ("float64", "float32", "float16", "bfloat16")


def _check_out(out: str, inp: Optional[str], force: bool) -> None:
    if os.path.isdir(out):
        raise ValueError(
            f"OUT: {out} is a directory; give a file name ending in "
            f"{' or '.join(checkpoint.EXTENSIONS)}"
        )
    if not out.lower().endswith(checkpoint.EXTENSIONS):
        raise ValueError(
            f"OUT: the extension decides the writer: expected "
            f"{', '.join(checkpoint.EXTENSIONS)}, got {out}"
        )
    if inp is not None and os.path.exists(out) and os.path.samefile(inp, out) and not force:
        raise ValueError(
            f"OUT: {out} is the input file; converting in place would overwrite "
            f"it (pass --force to do so anyway)"
        )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def cmd_convert(args: argparse.Namespace) -> int:
    _check_out(args.OUT, args.IN if os.path.isfile(args.IN) else None, args.force)
    if args.to:
        if args.format or args.block or args.scale:
            raise ValueError(
                "--to decodes a lowfp file: --format, --block and --scale do not apply"
            )
        _check_in(args.IN, "IN")
        framework = "torch" if not args.OUT.lower().endswith(".safetensors") else "numpy"
        try:
            tree = checkpoint.load_state_dict(args.IN, dtype=args.to, framework=framework)
        except ValueError as e:
            raise _as_arg(e, "IN") from None
        n = len(_leaves(tree))
        checkpoint.write_tree(tree, args.OUT)
        print(
            f"{_plural(n, 'tensor')} → {args.OUT} (quantized ones decoded to "
            f"{'their original dtype' if args.to == 'original' else args.to})"
        )
        return 0
    fmt = args.format or "mxfp8"
    tree = _read_input(args.IN, "IN")
    leaves = _leaves(tree)
    if any(isinstance(t, QTensor) for _, t in leaves):
        raise ValueError(
            f"IN: {args.IN} is already quantized by lowfp; decode it with --to "
            f"{'|'.join(checkpoint.DTYPES)}"
        )
    if not any(_is_float(t) for _, t in leaves):
        raise ValueError(
            f"IN: no floating-point tensors in {args.IN} (found {_plural(len(leaves), 'tensor')})"
        )
    filt = checkpoint.make_filter(args.include, args.exclude, args.min_size)
    try:
        tree, rep = checkpoint.quantize_state_dict(
            tree,
            fmt,
            filt,
            block_size=args.block,
            scale=args.scale,
            rounding=args.rounding,
            seed=args.seed,
        )
    except ValueError as e:
        msg = str(e)
        for kw, flag in (("block_size:", "--block:"), ("scale:", "--scale:")):
            msg = msg.replace(kw, flag, 1) if msg.startswith(kw) else msg
        raise ValueError(msg) from None
    checkpoint.write_tree(tree, args.OUT)
    print(
        f"quantized {_plural(len(rep.quantized), 'tensor')} to {fmt}; kept "
        f"{_plural(len(rep.kept), 'float tensor')} in their dtype; passed "
        f"{_plural(len(rep.passed), 'other entry').replace('entrys', 'entries')} through"
    )
    if args.include is None and args.exclude is None and args.min_size == checkpoint.MIN_SIZE:
        print(
            f"  default filter: 1-D tensors (biases, norm weights) and tensors under "
            f"{checkpoint.MIN_SIZE} elements stay in their dtype (change with --min-size, "
            f"--include, --exclude)"
        )
    for note in rep.notes:
        print(f"  note: {note}")
    ratio = rep.bytes_after / rep.bytes_before if rep.bytes_before else 1.0
    print(f"{rep.bytes_before:,} → {rep.bytes_after:,} bytes ({ratio:.3f}×) → {args.OUT}")
    return 0


# Pearson's kurtosis (not the excess): a normal distribution gives 3, heavy tails more.
KURTOSIS = "kurtosis = E[(x - mean)^4] / std^4 (Pearson; 3 for a normal distribution)"
_COLS = [
    "tensor",
    "format",
    "dtype",
    "elements",
    "in_bytes",
    "bytes",
    "mse",
    "sqnr_db",
    "max_abs_err",
    "max_to_mean",
    "kurtosis",
]


def _report_row(name: str, t: Any, fmt: str, block, scale) -> dict:
    dtype = checkpoint._dtype_name(t)
    in_bytes = checkpoint._nbytes(t)
    src = t.detach().cpu() if checkpoint._is_torch(t) else t
    kw = {} if block is None else {"block_size": block}
    if scale:
        kw["scale"] = scale
    try:
        q = quantize_blockwise(src.reshape(-1), fmt, **kw)
    except ValueError as e:
        raise ValueError(f"tensor {name!r} ({dtype}, shape {tuple(t.shape)}): {e}") from None
    y = q.dequantize()
    x = checkpoint._to_numpy(src).astype(np.float64).reshape(-1)
    y = (y.numpy() if hasattr(y, "numpy") else y).astype(np.float64)
    err = y - x
    n = x.size
    mse = float(np.mean(err**2)) if n else 0.0
    power = float(np.mean(x**2)) if n else 0.0
    mean_abs = float(np.mean(np.abs(x))) if n else 0.0
    sd = float(np.std(x)) if n else 0.0
    return {
        "tensor": name,
        "format": fmt,
        "dtype": dtype,
        "elements": int(n),
        "in_bytes": in_bytes,
        "bytes": int(q.nbytes),
        "mse": mse,
        "sqnr_db": 10 * np.log10(power / mse) if mse > 0 else float("inf"),
        "max_abs_err": float(np.max(np.abs(err))) if n else 0.0,
        "max_to_mean": float(np.max(np.abs(x)) / mean_abs) if mean_abs > 0 else float("nan"),
        "kurtosis": float(np.mean(((x - x.mean()) / sd) ** 4)) if sd > 0 else float("nan"),
        "_err2": float(np.sum(err**2)),
        "_pow": float(np.sum(x**2)),
    }


def _total_row(fmt: str, rows: list) -> dict:
    err2, pw = sum(r["_err2"] for r in rows), sum(r["_pow"] for r in rows)
    n = sum(r["elements"] for r in rows)
    return {
        "tensor": "TOTAL",
        "format": fmt,
        "dtype": "",
        "elements": n,
        "in_bytes": sum(r["in_bytes"] for r in rows),
        "bytes": sum(r["bytes"] for r in rows),
        "mse": err2 / n if n else 0.0,
        "sqnr_db": 10 * np.log10(pw / err2) if err2 > 0 else float("inf"),
        "max_abs_err": max((r["max_abs_err"] for r in rows), default=0.0),
        "max_to_mean": None,
        "kurtosis": None,
    }


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.4g}"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    return str(v)


def _table(rows: list, cols: list) -> str:
    cells = [cols] + [[_cell(r[c]) for c in cols] for r in rows]
    w = [max(len(r[i]) for r in cells) for i in range(len(cols))]
    left = {"tensor", "format", "dtype", "codec", "scale", "shape", "kind"}
    return "\n".join(
        "  ".join(
            c.ljust(w[i]) if cols[i] in left else c.rjust(w[i]) for i, c in enumerate(r)
        ).rstrip()
        for r in cells
    )


def _strict(v: Any) -> Any:
    """JSON has no NaN or infinity: null instead."""
    if isinstance(v, (float, np.floating)):
        return float(v) if np.isfinite(v) else None
    if isinstance(v, (np.integer,)):
        return int(v)
    return v


def _write_reports(
    args: argparse.Namespace, rows: list, totals: list, cols: list, extra: dict
) -> None:
    if args.csv:
        import csv

        def write_csv(t):
            with open(t, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
                w.writeheader()
                w.writerows(rows + totals)

        checkpoint.atomic_write(args.csv, write_csv)
    if args.json:
        import json

        doc = {
            "rows": [{c: _strict(r[c]) for c in cols} for r in rows],
            "totals": [{c: _strict(r[c]) for c in cols} for r in totals],
            **extra,
        }

        def write_json(t):
            with open(t, "w") as fh:
                json.dump(doc, fh, indent=1, allow_nan=False)

        checkpoint.atomic_write(args.json, write_json)


def _describe_quantized(args: argparse.Namespace, leaves: list) -> int:
    cols = ["tensor", "kind", "shape", "dtype", "codec", "block", "scale", "bytes"]
    rows = []
    for name, t in leaves:
        if isinstance(t, QTensor):
            spec = t.metadata()["codec"]
            rows.append(
                {
                    "tensor": name,
                    "kind": "quantized",
                    "shape": str(tuple(t.shape)),
                    "dtype": getattr(t, "orig_dtype", "float32"),
                    "codec": spec.get("format", spec["codec"]),
                    "block": t.block_size,
                    "scale": t.scale,
                    "bytes": int(t.nbytes),
                }
            )
        else:
            rows.append(
                {
                    "tensor": name,
                    "kind": "plain",
                    "shape": str(tuple(t.shape)),
                    "dtype": checkpoint._dtype_name(t),
                    "codec": "",
                    "block": None,
                    "scale": "",
                    "bytes": checkpoint._nbytes(t),
                }
            )
    totals = []
    for kind in ("quantized", "plain"):
        mine = [r for r in rows if r["kind"] == kind]
        if mine:
            totals.append(
                {
                    "tensor": "TOTAL",
                    "kind": kind,
                    "shape": "",
                    "dtype": "",
                    "codec": "",
                    "block": None,
                    "scale": "",
                    "bytes": sum(r["bytes"] for r in mine),
                }
            )
    print(
        f"{args.FILE}: a lowfp-quantized file ({_plural(len(rows), 'tensor')}); "
        f"`lowfp convert {args.FILE} OUT --to original` decodes it"
    )
    print(_table(rows + totals, cols))
    _write_reports(args, rows, totals, cols, {})
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    leaves = _leaves(_read_input(args.FILE, "FILE"))
    if any(isinstance(t, QTensor) for _, t in leaves):
        return _describe_quantized(args, leaves)
    floats = [(k, v) for k, v in leaves if _is_float(v)]
    bad = [k for k, v in floats if not checkpoint._all_finite(v)]
    floats = [(k, v) for k, v in floats if k not in bad]
    if not floats:
        raise ValueError(
            f"FILE: no finite floating-point tensors in {args.FILE} (found "
            f"{_plural(len(leaves), 'tensor')})"
        )
    fmts = args.format or ["mxfp8", "mxfp4"]
    rows = [_report_row(k, v, f, args.block, args.scale) for f in fmts for k, v in floats]
    totals = [_total_row(f, [r for r in rows if r["format"] == f]) for f in fmts]
    print(_table(rows + totals, _COLS))
    for k in bad:
        print(
            f"note: {k}: holds NaN or ±inf; not quantizable blockwise, left out (lowfp "
            f"convert keeps it in its dtype)"
        )
    print(f"\nsqnr_db = 10 log10(sum x^2 / sum err^2); max_to_mean = max|x| / mean|x|; {KURTOSIS}")
    _write_reports(args, rows, totals, _COLS, {"kurtosis": KURTOSIS, "nonfinite": bad})
    return 0


_SMOKE = (
    "SMOKE RUN (--quick): tiny inputs and one or two timed runs check that every "
    "benchmark runs; the times and ratios it prints mean nothing. Run without --quick to "
    "measure."
)

# commands whose every path needs torch, and the command that installs it
_TORCH_HINT = (
    "pip install torch (CPU only, ~200 MB instead of ~5 GB of CUDA wheels: "
    "pip install torch --index-url https://download.pytorch.org/whl/cpu)"
)


def _needs_torch(args: argparse.Namespace) -> Optional[str]:
    """What needs torch in this command line, or None."""
    if args.cmd == "experiment":
        return "lowfp experiment (it trains with torch.optim)"
    if args.cmd == "bench" and args.WHICH == "optim":
        return "lowfp bench optim (it times torch optimizers)"
    return None


def _clean(msg: str) -> str:
    """A foreign message on one line, without terminal escapes (torch bolds its advice)."""
    msg = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", msg)
    return msg.splitlines()[0] if msg else ""


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
    if args.quick:
        print(_SMOKE + "\n")
    for w in which:
        import importlib

        mod = importlib.import_module(f".bench.{w}", __package__)
        rc = mod.main(extra) or rc
        print()
    if args.quick:
        print(_SMOKE)
    return rc


def cmd_experiment(args: argparse.Namespace) -> int:
    from . import experiments

    try:
        seeds = [int(x) for x in args.seeds.split(",") if x.strip() != ""]
    except ValueError:
        raise ValueError(
            f"--seeds: expected comma-separated non-negative integers, got {args.seeds!r}"
        ) from None
    if args.seed is not None:
        seeds = [args.seed]
    size = "full" if args.full else ("quick" if args.quick else None)
    t = time.perf_counter()
    path = experiments.run(args.NAME, steps=args.steps, seeds=seeds, out=args.out, size=size)
    print(f"report: {path} ({time.perf_counter() - t:.1f} s)")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        prog="lowfp",
        description="Exact low-precision number formats: codecs, blockwise "
        "quantization, checkpoints and benchmarks. `lowfp` alone runs `lowfp demo`.",
    )
    p.add_argument("--version", action="version", version=f"lowfp {__version__}")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

    def add(name: str, help: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=description)

    add(
        "formats",
        "table of every named format",
        "Print every named format: bits, exponent and mantissa bits, bias, inf/NaN "
        "encodings, largest, smallest normal and subnormal values, and eps.",
    ).set_defaults(fn=cmd_formats)
    d = add(
        "demo",
        "format table and round trips (what `lowfp` alone runs)",
        "Print the format table, then round-trip random N(0, 2²) data through every "
        "signed format of ≤ 8 bits (nearest and stochastic rounding) and every blockwise "
        "preset, checking that decoded values re-encode to the same codes.",
    )
    d.add_argument("--n", type=int, default=1 << 22, help="number of values (default 4Mi)")
    d.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    d.set_defaults(fn=cmd_demo)
    c = add(
        "convert",
        "quantize a checkpoint into a file, or decode one back",
        "Quantize the float tensors of IN (" + _INPUTS + "; nested checkpoints such as "
        "{'model': sd, 'step': 10} too) blockwise and write OUT, whose extension decides "
        "the writer: .safetensors (no pickles) or .pt/.pth (torch.save). By default 1-D "
        "tensors and tensors under 4096 elements stay in their dtype; non-float entries "
        "pass through unchanged; tensors holding NaN/inf are kept with a note. With --to, "
        "decode a lowfp file back to float tensors. The same as lowfp.save_state_dict / "
        "lowfp.load_state_dict in Python.",
    )
    c.add_argument("IN", help=_INPUTS)
    c.add_argument("OUT", help="output file: .safetensors or .pt/.pth (not IN unless --force)")
    c.add_argument(
        "--format",
        default=None,
        help="a format of ≤ 8 bits or a preset (" + ", ".join(PRESETS) + "; default mxfp8)",
    )
    c.add_argument(
        "--block",
        type=int,
        default=None,
        help="block size (default: the preset's, which a preset fixes, or 256)",
    )
    c.add_argument(
        "--scale",
        choices=list(SCALES),
        default=None,
        help="scale rule (default: the preset's, which a preset fixes, or absmax)",
    )
    c.add_argument(
        "--rounding",
        choices=list(ROUNDINGS),
        default="nearest",
        metavar="{" + ",".join(ROUNDINGS) + "}",
        help="rounding mode (default nearest)",
    )
    c.add_argument("--seed", type=int, default=0, help="stochastic rounding seed (default 0)")
    c.add_argument(
        "--include",
        default=None,
        metavar="REGEX",
        help="quantize only tensors whose name matches (re.search; nested names "
        "are joined with '/')",
    )
    c.add_argument(
        "--exclude",
        default=None,
        metavar="REGEX",
        help="keep tensors whose name matches in their dtype",
    )
    c.add_argument(
        "--min-size",
        type=int,
        default=checkpoint.MIN_SIZE,
        metavar="N",
        help=f"keep tensors under N elements in their dtype (default "
        f"{checkpoint.MIN_SIZE}); 1-D tensors are always kept",
    )
    c.add_argument(
        "--to",
        choices=list(checkpoint.DTYPES),
        default=None,
        help="decode a lowfp file IN to this dtype instead (original: the dtype "
        "each tensor had when quantized)",
    )
    c.add_argument("--force", action="store_true", help="allow OUT to be IN (overwrites it)")
    c.set_defaults(fn=cmd_convert)
    i = add(
        "inspect",
        "post-training-quantization report per tensor",
        "For each float tensor of FILE and each format: MSE, SQNR, max abs error, "
        "max/mean ratio and kurtosis (" + KURTOSIS + "), bytes before and after, and a "
        "total row per format. A lowfp-quantized file is described instead (codec, block, "
        "scale, bytes per tensor).",
    )
    i.add_argument("FILE", help=_INPUTS + ", or a lowfp file")
    i.add_argument(
        "--format",
        action="append",
        help="format or preset; repeat for several (default: mxfp8 and mxfp4)",
    )
    i.add_argument("--block", type=int, default=None, help="block size")
    i.add_argument("--scale", choices=list(SCALES), default=None, help="scale rule")
    i.add_argument("--csv", default=None, help="also write the table as CSV")
    i.add_argument(
        "--json", default=None, help="also write the table as JSON (strict: null for NaN and inf)"
    )
    i.set_defaults(fn=cmd_inspect)
    b = add(
        "bench",
        "codec and optimizer benchmarks beside the installed anchors",
        "Time lowfp's codecs and optimizers beside the installed anchors (ml_dtypes, "
        "torch, bitsandbytes, torchao, qtorch, gfloat); Markdown tables on stdout.",
    )
    b.add_argument(
        "WHICH", nargs="?", choices=["codecs", "optim"], help="codecs or optim (default: both)"
    )
    b.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run of seconds (few elements, one or two timed runs); its "
        "numbers mean nothing",
    )
    b.add_argument(
        "--n",
        type=int,
        default=None,
        help="elements / parameters (default 2^24; 2^16 with --quick)",
    )
    b.add_argument("--repeat", type=int, default=None, help="timed runs (default 5)")
    b.set_defaults(fn=cmd_bench)
    e = sub.add_parser(
        "experiment",
        help="run reproducible multi-seed low-precision training "
        "experiments and write a Markdown report with verdicts",
        description="Train small models with (low-bit) optimizers over several "
        "seeds and write a Markdown report with verdicts per paper claim, CSVs "
        "and plots (needs torch and matplotlib).",
    )
    e.add_argument(
        "NAME",
        nargs="*",
        help="beta2, mantissa-vs-steps, linf, muon8bit, "
        "sgd-shrinkage, solo-factorial, ptq, qat-scaling, blockwise-lr, "
        "precision-sweep, swamping, low-bit-states (default: a quick run of all of "
        "them, one report)",
    )
    e.add_argument(
        "--seeds",
        default="0,1,2",
        help="comma-separated seeds (default 0,1,2); every table cell is mean ± sd over them",
    )
    e.add_argument("--seed", type=int, default=None, help="one seed (same as --seeds N)")
    e.add_argument(
        "--steps",
        type=int,
        default=None,
        help="steps per run (default: the size's; see docs/experiments.md)",
    )
    g = e.add_mutually_exclusive_group()
    g.add_argument("--full", action="store_true", help="full size (longer runs)")
    g.add_argument(
        "--quick",
        action="store_true",
        help="the main job's quick size (the default when no NAME is given)",
    )
    e.add_argument(
        "--out",
        default="lowfp-experiments",
        help="output directory for report.md, CSVs and PNGs (default lowfp-experiments/)",
    )
    e.set_defaults(fn=cmd_experiment)
    args = p.parse_args(argv)
    if not hasattr(args, "fn"):
        args = p.parse_args(["demo"] + (argv or []))
    what = _needs_torch(args)
    if what is not None:
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            print(
                f"lowfp: error: {what} needs torch, which is not installed: {_TORCH_HINT}",
                file=sys.stderr,
            )
            return 2
    try:
        return args.fn(args)
    except (ValueError, TypeError, OSError) as e:
        print(f"lowfp: error: {_clean(str(e))}", file=sys.stderr)
        return 2
    except ImportError as e:
        print(
            f"lowfp: error: {_clean(str(e))} (install hints: docs/cli.md; torch: {_TORCH_HINT})",
            file=sys.stderr,
        )
        return 2
    except Exception as e:  # a reader's own error type (safetensors, torch): one line, no trace
        print(f"lowfp: error: {type(e).__name__}: {_clean(str(e))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
