"""Throughput of lowfp's codecs against ml_dtypes, torch, qtorch, gfloat and bitsandbytes.

Usage: lowfp bench codecs [--quick]   or   python3 benches/bench_codecs.py [--n N]
[--threads 1,2] [--repeat 5] [--quick]. Prints Markdown tables on stdout (best wall time
of the timed calls, G elem/s, lowfp/anchor ratios) and a progress line (rounds done, ETA) on stderr.
"""

import argparse
import importlib.metadata
import os
import platform
import signal
import sys
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, List, Tuple

import numpy as np

import lowfp
from lowfp.experiments.progress import Progress

FORMATS = ["float8_e4m3fn", "float8_e5m2", "float4_e2m1fn", "float16", "bfloat16"]
SR_FORMATS = {"float8_e4m3fn": (4, 3), "float8_e5m2": (5, 2), "bfloat16": (8, 7)}
GFLOAT_INFO = {
    "float8_e4m3fn": "format_info_ocp_e4m3",
    "float8_e5m2": "format_info_ocp_e5m2",
    "bfloat16": "format_info_bfloat16",
}
GFLOAT_N = 1 << 20  # gfloat is timed on this many elements only; its rate is extrapolated


class NA(Exception):
    """An anchor that does not have the operation (reported as n/a, not as a failure)."""


@contextmanager
def time_limit(seconds):
    def _raise(*_):
        raise TimeoutError(f"no result within {seconds} s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def torch_dtype(name):
    import torch

    if name == "float4_e2m1fn":
        raise NA("torch has float4_e2m1fn_x2 only (two values packed per byte)")
    return getattr(torch, name)


def mld_dtype(name):
    if name == "float16":
        return np.dtype(np.float16)
    import ml_dtypes

    return np.dtype(getattr(ml_dtypes, name))


def torch_view(a, name=None):
    """`a` as a torch tensor on the same memory (uint16 as int16), viewed as format `name`."""
    import torch

    t = torch.from_numpy(a.view(np.int16) if a.dtype == np.uint16 else a)
    return t.view(torch_dtype(name)) if name else t


def qtorch_sr(xt, exp, man):
    with time_limit(180):  # the first import JIT-compiles a C++ extension (needs ninja)
        from qtorch.quant import float_quantize
    return lambda: float_quantize(xt, exp=exp, man=man, rounding="stochastic")


def cast(a, dtype):
    return lambda: a.astype(dtype)


def cast_into(out, src):
    return lambda: np.copyto(out, src, casting="unsafe")


def copy_into(out, src):
    return lambda: out.copy_(src)


# ------------------------------------------------------------------ row factories
# A factory does the set-up and returns the zero-argument callable to time, or raises.

# Like for like: every implementation is timed both allocating its result ("lowfp",
# "ml_dtypes") and writing into a preallocated one ("lowfp out=", "ml_dtypes into" = np.copyto,
# "torch" = out.copy_(src)). The writing ones of a row share one output array and read the
# same input, so they meet the same caches. A codec row's LIMIT entry gives the memory limit:
# a plain cast of that input to unsigned integers of the codes' width (encode) or of the codes
# as unsigned integers to float32 (decode), into the same output, by NumPy and by torch.


def code_dtype(f):
    return lowfp.format(f).code_dtype


def limit_casts(src, out):
    """The memory-limit casts of `src` into `out` (one of them integers of the codes' width)."""
    return {
        "np.copyto cast": lambda: cast_into(out, src),
        "torch cast": lambda: copy_into(torch_view(out), torch_view(src)),
    }


def enc_rows(x, xt):
    for f in FORMATS:
        out = np.empty(x.size, code_dtype(f))
        yield (
            f,
            {
                "lowfp": lambda f=f: lambda: lowfp.encode(x, f),
                "lowfp out=": lambda f=f, o=out: lambda: lowfp.encode(x, f, out=o),
                "ml_dtypes": lambda f=f: cast(x, mld_dtype(f)),
                "ml_dtypes into": lambda f=f, o=out: cast_into(o.view(mld_dtype(f)), x),
                "torch": lambda f=f, o=out: copy_into(torch_view(o, f), xt),
                LIMIT: limit_casts(x, out),
            },
        )


def dec_rows(x, xt):
    for f in FORMATS:
        c, out = lowfp.encode(x, f), np.empty(x.size, np.float32)
        yield (
            f,
            {
                "lowfp": lambda f=f, c=c: lambda: lowfp.decode(c, f),
                "lowfp out=": lambda f=f, c=c, o=out: lambda: lowfp.decode(c, f, out=o),
                "ml_dtypes": lambda f=f, c=c: cast(c.view(mld_dtype(f)), np.float32),
                "ml_dtypes into": lambda f=f, c=c, o=out: cast_into(o, c.view(mld_dtype(f))),
                "torch": lambda f=f, c=c, o=out: copy_into(torch_view(o), torch_view(c, f)),
                LIMIT: limit_casts(c, out),
            },
        )


def gfloat_sr(xs, f):
    import gfloat
    import gfloat.formats

    fi, rng = getattr(gfloat.formats, GFLOAT_INFO[f]), np.random.default_rng(1)
    return lambda: gfloat.round_ndarray(
        fi, xs, gfloat.RoundMode.Stochastic, srbits=rng.integers(0, 1 << 23, xs.size), srnumbits=23
    )


def sr_rows(x, xt):
    def into(f, o, **kw):  # encode into the preallocated code array o
        return lambda: lowfp.encode(x, f, out=o, **kw)

    for f, (e, m) in SR_FORMATS.items():
        o = np.empty(x.size, code_dtype(f))  # shared by the out= implementations

        yield (
            f,
            {
                "lowfp SR": lambda f=f: lambda: lowfp.encode(x, f, rounding="stochastic", seed=1),
                "lowfp SR out=": lambda f=f, o=o: into(f, o, rounding="stochastic", seed=1),
                "lowfp SR16 out=": lambda f=f, o=o: into(f, o, rounding="stochastic16", seed=1),
                "lowfp RNE": lambda f=f: lambda: lowfp.encode(x, f),
                "lowfp RNE out=": lambda f=f, o=o: into(f, o),
                "qtorch": lambda e=e, m=m: qtorch_sr(xt, e, m),
                "gfloat ‡": lambda f=f: gfloat_sr(x[:GFLOAT_N], f),
            },
        )


def np_pack(c, bits):
    if 8 % bits == 0:  # shift-and-or, LSB first
        k = 8 // bits
        g = c.reshape(-1, k)
        out = g[:, 0].copy()
        for i in range(1, k):
            out |= g[:, i] << np.uint8(i * bits)
        return out
    b = np.unpackbits(c[:, None], axis=1, bitorder="little")[:, :bits]
    return np.packbits(b.reshape(-1), bitorder="little")


def np_unpack(p, bits, count):
    if 8 % bits == 0:
        shifts = np.arange(0, 8, bits, dtype=np.uint8)
        return ((p[:, None] >> shifts) & np.uint8((1 << bits) - 1)).reshape(-1)[:count]
    b = np.unpackbits(p, bitorder="little")[: count * bits].reshape(-1, bits)
    return np.packbits(b, axis=1, bitorder="little").reshape(-1)


def checked(fn, want):
    if not np.array_equal(fn(), want):
        raise RuntimeError("NumPy reference disagrees with lowfp's bit layout")
    return fn


def pack_rows(x, xt):
    n = x.size - x.size % 8
    for bits in (2, 3, 4):
        c = np.random.default_rng(bits).integers(0, 1 << bits, n, dtype=np.uint8)
        p = lowfp.pack(c, bits)
        ref = "NumPy packbits" if 8 % bits else "NumPy shift-or"
        yield (
            f"pack {bits}-bit",
            {
                "lowfp": lambda c=c, b=bits: lambda: lowfp.pack(c, b),
                ref: lambda c=c, b=bits, p=p: checked(lambda: np_pack(c, b), p),
            },
        )
        yield (
            f"unpack {bits}-bit",
            {
                "lowfp": lambda p=p, b=bits: lambda: lowfp.unpack(p, b, n),
                ref: lambda c=c, b=bits, p=p: checked(lambda: np_unpack(p, b, n), c),
            },
        )


def bnb(xt, bs, dequantize):
    import bitsandbytes.functional as bnbf

    if not dequantize:
        return lambda: bnbf.quantize_blockwise(xt, blocksize=bs)
    q, state = bnbf.quantize_blockwise(xt, blocksize=bs)
    return lambda: bnbf.dequantize_blockwise(q, state)


def blockwise_rows(x, xt):
    dyn = lowfp.Dynamic(8)
    for bs in (256, 2048):
        yield (
            f"quantize, block {bs}",
            {
                "lowfp": lambda bs=bs: lambda: lowfp.quantize_blockwise(x, dyn, block_size=bs),
                "bitsandbytes": lambda bs=bs: bnb(xt, bs, False),
            },
        )
        yield (
            f"dequantize, block {bs}",
            {
                "lowfp": lambda bs=bs: lowfp.quantize_blockwise(x, dyn, block_size=bs).dequantize,
                "bitsandbytes": lambda bs=bs: bnb(xt, bs, True),
            },
        )


# a row's memory-limit casts (not shown one by one); also its column: the fastest of them,
# and a ratio denominator
LIMIT = "memory limit"
BEST = "best anchor"  # ratio denominator: the fastest of ANCHORS in the same row
ANCHORS = ("ml_dtypes", "ml_dtypes into", "torch")
CODEC_RATIOS = [("lowfp", "ml_dtypes"), ("lowfp out=", BEST), ("lowfp out=", LIMIT)]

SECTIONS = [  # key, title, row generator, ratio columns (numerator, denominator)
    ("encode", "Encode f32 → format (codes)", enc_rows, CODEC_RATIOS),
    ("decode", "Decode format → f32", dec_rows, CODEC_RATIOS),
    (
        "stochastic",
        "Stochastic rounding f32 → format",
        sr_rows,
        [
            ("lowfp SR", "qtorch"),
            ("lowfp SR", "gfloat ‡"),
            ("lowfp SR", "lowfp RNE"),
            ("lowfp SR out=", "lowfp RNE out="),
            ("lowfp SR16 out=", "lowfp RNE out="),
        ],
    ),
    ("pack", "Bit packing (uint8 codes ↔ packed bytes)", pack_rows, [("lowfp", None)]),
    (
        "blockwise",
        "8-bit blockwise, dynamic map (absmax scales)",
        blockwise_rows,
        [("lowfp", "bitsandbytes")],
    ),
]


# ------------------------------------------------------------------ driver


class Notes(list):
    def ref(self, text):
        if text not in self:
            self.append(text)
        return f"n/a [{self.index(text) + 1}]"


def set_threads(t):
    lowfp.set_num_threads(t)
    try:
        import torch

        torch.set_num_threads(t)
    except ImportError:
        pass


def failure(name, e):
    if isinstance(e, NA):
        return str(e)
    return f"{name}: {type(e).__name__}: {str(e).splitlines()[0][:160]}"


WARM_S = 0.05  # untimed calls at the start of each turn, for at least this long
TIMED = 2  # timed calls per turn


def measure_row(factories, n, repeat, warm, label, progress):
    """Time a row's implementations in turns, `repeat` rounds; the best time of each.

    A turn is untimed calls for at least `warm` seconds, then TIMED timed calls. Taking turns
    spreads every implementation over the same stretch of time, so that a change in the host's
    load reaches them all alike. The untimed calls bring the turn's buffers back into cache and
    let the machine settle: on the 2-core VM of docs/benchmarks_codecs.md, a two-thread call
    right after an allocating call or a long single-threaded NumPy loop ran up to 2× slower,
    for tens of milliseconds (one untimed call was not enough; 20 ms of them were). Returns
    ({name: G elements/s}, {name: why it has none}); a failing anchor is reported, not fatal.
    """
    fns, why, best = {}, {}, {}
    for name, factory in factories.items():
        try:
            fns[name] = factory()
        except Exception as e:  # noqa: BLE001
            why[name] = failure(name, e)
    for r in range(repeat):
        progress(f"{label} round {r + 1}/{repeat}")
        for name, fn in list(fns.items()):
            try:
                start = time.perf_counter()
                fn()
                while time.perf_counter() - start < warm:
                    fn()
                for _ in range(TIMED):
                    t = time.perf_counter()
                    fn()
                    best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
            except Exception as e:  # noqa: BLE001
                why[name] = failure(name, e)
                del fns[name]
                best.pop(name, None)
        progress.advance()
    rate = {k: min(GFLOAT_N if "gfloat" in k else n, n) / v / 1e9 for k, v in best.items()}
    return rate, why


def ratio_cell(a, b, rate):
    """`rate[a] / denominator` as text, or — when either side is missing."""
    if b == BEST:
        den = max((rate[c] for c in ANCHORS if rate.get(c)), default=None)
    else:
        den = rate.get(b)
    return f"{rate[a] / den:.2f}×" if rate.get(a) and den else "—"


def run_section(title, rows_fn, ratios, x, xt, threads, repeat, warm, notes, progress):
    progress(title)
    try:
        rows = list(rows_fn(x, xt))
    except Exception as e:  # noqa: BLE001
        print(f"## {title}\n\n{notes.ref(f'section skipped: {type(e).__name__}: {e}')}\n")
        return
    cols = list(dict.fromkeys(k for _, impls in rows for k in impls if k != LIMIT))
    cols.sort(key=lambda c: c.startswith("np.") or c == "torch")  # lowfp first, anchors last
    ratios = [(a, b) for a, b in ratios for b in ([b] if b else cols[1:])]
    if any(LIMIT in impls for _, impls in rows):
        cols.append(LIMIT)
    progress.add_total(len(rows) * len(threads) * repeat)
    names = {BEST: "best anchor"}
    head = (
        ["operation", "threads"]
        + [f"{c} G/s" for c in cols]
        + [f"{a} / {names.get(b, b)}" for a, b in ratios]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, impls in rows:
        casts = impls.get(LIMIT, {})
        factories = {c: impls[c] for c in cols if c in impls and c != LIMIT} | casts
        for t in threads:
            set_threads(t)
            rate, why = measure_row(factories, x.size, repeat, warm, f"{label} t={t}", progress)
            if casts:
                rate[LIMIT] = max((rate[c] for c in casts if c in rate), default=None)
                if rate[LIMIT] is None:
                    why[LIMIT] = "; ".join(why[c] for c in casts)
            cells = []
            for c in cols:
                if rate.get(c):
                    cells.append(f"{rate[c]:.3f}")
                else:
                    cells.append(notes.ref(why[c]) if c in why else "—")
            cells += [ratio_cell(a, b, rate) for a, b in ratios]
            lines.append(f"| {label} | {t} | " + " | ".join(cells) + " |")
    print(f"## {title}\n\n" + "\n".join(lines) + "\n", flush=True)


def versions():
    out = [f"lowfp {lowfp.__version__}"]
    for p in ("numpy", "ml_dtypes", "torch", "qtorch", "gfloat", "bitsandbytes"):
        try:
            out.append(f"{p} {importlib.metadata.version(p)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{p} (not installed)")
    return ", ".join(out)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as fh:
            return next(ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
    except (OSError, StopIteration):
        return "?"


def small_calls(threads) -> None:
    """Per-call cost of 16-element encode and decode beside ml_dtypes and torch (µs, best of
    5 × 20000 calls), at each thread count."""
    import timeit

    x16 = np.linspace(-4, 4, 16, dtype=np.float32)
    c16 = lowfp.encode(x16, "e4m3")
    rows: List[Tuple[str, Callable[[], Any]]]
    rows = [
        ("lowfp encode f32 → e4m3", lambda: lowfp.encode(x16, "e4m3")),
        ("lowfp decode e4m3 → f32", lambda: lowfp.decode(c16, "e4m3")),
    ]
    try:
        import ml_dtypes

        e4 = np.dtype(ml_dtypes.float8_e4m3fn)
        rows += [
            ("ml_dtypes astype f32 → e4m3", lambda: x16.astype(e4)),
            ("ml_dtypes astype e4m3 → f32", lambda: c16.view(e4).astype(np.float32)),
        ]
    except ImportError:
        pass
    try:
        import torch

        t16 = torch.from_numpy(x16)
        t8 = t16.to(torch.float8_e4m3fn)
        rows += [
            ("torch .to(float8_e4m3fn)", lambda: t16.to(torch.float8_e4m3fn)),
            ("torch float8_e4m3fn .to(float32)", lambda: t8.to(torch.float32)),
        ]
    except ImportError:
        pass
    table: Dict[str, List[float]] = {name: [] for name, _ in rows}
    for t in threads:
        set_threads(t)
        for name, fn in rows:
            best = min(timeit.repeat(fn, number=20000, repeat=5)) / 20000
            table[name].append(best * 1e6)
    head = " | ".join(f"µs, {t} thread{'s' if t > 1 else ''}" for t in threads)
    print(
        f"## Small calls (16 elements, per call)\n\n| call | {head} |\n|---"
        + "|---" * len(threads)
        + "|"
    )
    for name, vals in table.items():
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    print()


def main(argv=None):
    ap = argparse.ArgumentParser(prog="lowfp bench codecs", description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1 << 24, help="elements (default 2^24)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument(
        "--repeat", type=int, default=5, help=f"rounds; each times every implementation {TIMED}×"
    )
    ap.add_argument("--quick", action="store_true", help="tiny run (2^16 elements, 2 repeats)")
    ap.add_argument(
        "--sections",
        default=",".join(k for k, *_ in SECTIONS) + ",small",
        help="comma-separated sections to run (default: all)",
    )
    args = ap.parse_args(argv)
    sections = args.sections.split(",")
    n, repeat, warm = (1 << 16, 2, 0.0) if args.quick else (args.n, args.repeat, WARM_S)
    threads = [int(t) for t in args.threads.split(",")]
    x = np.random.default_rng(0).standard_normal(n, dtype=np.float32) * 4
    try:
        import torch

        xt = torch.from_numpy(x)
    except ImportError:
        xt = None

    print(
        f"# lowfp codec throughput\n\n{n:,} float32 elements (standard normal × 4, seed 0), "
        f"best of {repeat * TIMED} timed calls ({repeat} rounds); G/s = 10^9 elements per second.\n"
    )
    notes = Notes()
    with Progress("bench codecs", unit="rounds") as progress:
        for key, title, rows_fn, ratios in SECTIONS:
            if key not in sections:
                continue
            run_section(title, rows_fn, ratios, x, xt, threads, repeat, warm, notes, progress)

    if "small" in sections:
        small_calls(threads)
    print("Notes:\n")
    print(
        "- ml_dtypes and NumPy are single-threaded (NumPy cast loops): their numbers do not "
        "scale with threads.\n- torch writes into a preallocated tensor (`out.copy_(src)`); "
        "lowfp and ml_dtypes are timed both allocating their output and writing into a "
        "preallocated one (`out=`, `np.copyto`).\n- best anchor: the fastest of ml_dtypes, "
        "ml_dtypes into and torch in the same row; memory limit: the fastest plain cast "
        "between float32 and unsigned integers of the codes' width (NumPy's np.copyto and "
        "torch's copy_), into a preallocated array, timed in the same rounds as the row.\n"
        f"- Each row's implementations take turns, {repeat} rounds: in each turn, untimed calls "
        f"for at least {warm * 1000:.0f} ms, then {TIMED} timed ones; the best time is "
        "kept.\n- Stochastic rounding: lowfp returns "
        "codes; qtorch and gfloat return rounded floats (gfloat's time includes drawing its "
        f"23-bit random numbers with NumPy).\n- ‡ gfloat (`round_ndarray`, vectorized NumPy) "
        f"is timed on the first {GFLOAT_N:,} elements; its rate is extrapolated.\n"
        "- — : not applicable for this row."
    )
    for i, text in enumerate(notes, 1):
        print(f"- [{i}] {text}")
    print(f"\nCommand: `{' '.join([os.path.basename(sys.executable)] + sys.argv)}`  ")
    print(
        f"Machine: {platform.processor() or cpu_name()}, os.cpu_count() = {os.cpu_count()}, "
        f"Python {platform.python_version()}  "
    )
    print(f"Versions: {versions()}")
    return 0
