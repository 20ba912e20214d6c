"""The ``lowfp`` command line.

Commands:
    lowfp formats        table of every named format
    lowfp demo           the main job's default: format table, then a round trip of random
                         data through every format ≤ 8 bits and every blockwise preset
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from . import _core
from .codec import decode, encode
from .formats import formats
from .qtensor import PRESETS, quantize_blockwise


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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="lowfp", description="Exact low-precision formats.")
    sub = p.add_subparsers(dest="cmd")
    sub.add_parser("formats", help="table of every named format").set_defaults(fn=cmd_formats)
    d = sub.add_parser("demo", help="format table and round trips (the default job)")
    d.add_argument("--n", type=int, default=1 << 22, help="number of values (default 4Mi)")
    d.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    d.set_defaults(fn=cmd_demo)
    args = p.parse_args(argv)
    if not hasattr(args, "fn"):
        args = p.parse_args(["demo"] + (argv or []))
    try:
        return args.fn(args)
    except (ValueError, TypeError) as e:
        print(f"lowfp: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
