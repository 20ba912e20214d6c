"""Effective bandwidth of the lowfp CUDA codec kernels as a fraction of a measured
device-to-device copy (bytes read + written, per kernel call), printed as a table.

    PYTHONPATH=python python3 benches/bench_cuda.py [--n 268435456]

Needs CuPy and a CUDA device. Times are CUDA-event medians of 20 runs after 3 warm-ups.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _time(cp, fn, reps=20):
    for _ in range(3):
        fn()
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    times = []
    for _ in range(reps):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, stop) / 1e3)
    return float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1 << 28, help="elements per call")
    args = ap.parse_args()
    import cupy as cp

    import lowfp

    n = args.n
    x = cp.random.default_rng(0).standard_normal(n, dtype=cp.float32)
    buf = cp.empty_like(x)
    t_copy = _time(cp, lambda: buf.__setitem__(Ellipsis, x))
    copy_bw = 2 * x.nbytes / t_copy
    dev = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)["name"].decode()
    print(f"device: {dev}; n = {n}; device-to-device copy: {copy_bw / 1e9:.0f} GB/s")
    c8 = lowfp.encode(x, "e4m3")
    c4 = lowfp.encode(x, "e2m1", overflow="saturate")
    p4 = lowfp.pack(c4, 4)
    q = lowfp.quantize_blockwise(x, "mxfp4")
    dyn = lowfp.Dynamic(8)
    rows = [  # name, call, bytes read + written
        ("encode f32→e4m3 nearest", lambda: lowfp.encode(x, "e4m3"), 5 * n),
        (
            "encode f32→e4m3 stochastic",
            lambda: lowfp.encode(x, "e4m3", rounding="stochastic", seed=1),
            5 * n,
        ),
        ("encode f32→bf16 nearest", lambda: lowfp.encode(x, "bfloat16"), 6 * n),
        ("decode e4m3→f32", lambda: lowfp.decode(c8, "e4m3"), 5 * n),
        ("pack 4-bit", lambda: lowfp.pack(c4, 4), n + n // 2),
        ("unpack 4-bit", lambda: lowfp.unpack(p4, 4, n), n + n // 2),
        (
            "quantize_blockwise mxfp4",
            lambda: lowfp.quantize_blockwise(x, "mxfp4"),
            4 * n + n // 2 + n // 32,
        ),
        (
            "quantize_blockwise nvfp4",
            lambda: lowfp.quantize_blockwise(x, "nvfp4"),
            4 * n + n // 2 + n // 16,
        ),
        (
            "quantize_blockwise mxfp8 ocp",
            lambda: lowfp.quantize_blockwise(x, "mxfp8", nonfinite="ocp"),
            5 * n + n // 32,
        ),
        ("decode Dynamic(8) table", lambda: dyn.decode(c8), 5 * n),
        ("dequantize mxfp4", q.dequantize, 4 * n + n // 2 + n // 32),
    ]
    print(f"| {'kernel':<30} | {'ms':>8} | {'GB/s':>7} | {'of copy':>7} |")
    print(f"|{'-' * 32}|{'-' * 10}|{'-' * 9}|{'-' * 9}|")
    for name, fn, nbytes in rows:
        t = _time(cp, fn)
        bw = nbytes / t
        print(f"| {name:<30} | {t * 1e3:8.3f} | {bw / 1e9:7.0f} | {bw / copy_bw:7.0%} |")


# ---------------------------------------------------------------- optimizer steps
#
#     PYTHONPATH=python python3 benches/bench_cuda.py --optim [--tensors 100] [--rows 1024]
#
# One optimizer step over >= 100M float32 parameters in >= 100 tensors (one param group):
# median step time (CUDA events, 10 steps after 3 warm-ups) and the peak GPU memory of the
# step beyond parameters and gradients (torch.cuda.max_memory_allocated), for lowfp
# AdamW8bit / AdamW4bit / SOLO(3) / Muon's 8-bit momentum kernel, torch fused AdamW, and
# bitsandbytes / torchao 8-bit (4-bit) AdamW when importable.


def _optimizers(torch):
    """(name, factory(params) -> step callable) for every optimizer that can be built here."""
    import lowfp.optim as lopt

    out = [
        ("torch AdamW fused (fp32)", lambda ps: torch.optim.AdamW(ps, lr=1e-3, fused=True).step),
        ("lowfp AdamW8bit", lambda ps: lopt.AdamW8bit(ps, lr=1e-3).step),
        ("lowfp AdamW4bit", lambda ps: lopt.AdamW4bit(ps, lr=1e-3).step),
        ("lowfp SOLO(bits=3)", lambda ps: lopt.SOLO(ps, bits=3, lr=1e-3).step),
        ("lowfp Muon 8-bit momentum", _muon_momentum_step),
    ]
    try:
        import bitsandbytes as bnb

        out.append(("bitsandbytes AdamW8bit", lambda ps: bnb.optim.AdamW8bit(ps, lr=1e-3).step))
    except Exception as e:  # not importable here (no CUDA build): say so, do not fail
        print(f"bitsandbytes: skipped ({type(e).__name__}: {e})")
    try:
        from torchao.optim import AdamW4bit, AdamW8bit

        out.append(("torchao AdamW8bit", lambda ps: AdamW8bit(ps, lr=1e-3).step))
        out.append(("torchao AdamW4bit", lambda ps: AdamW4bit(ps, lr=1e-3).step))
    except Exception as e:
        print(f"torchao: skipped ({type(e).__name__}: {e})")
    return out


def _muon_momentum_step(ps):
    """Muon's momentum update only (lowfp.cuda.optim.muon_momentum, 8-bit linear blocks of
    2048, one launch per tensor); Newton–Schulz (torch matmuls) is not timed."""
    import torch

    import lowfp
    from lowfp import _core
    from lowfp.cuda import optim as copt

    spec = {
        "bits": 0,
        "signed": True,
        "zero": True,
        "alpha": 0.5,
        "quantile": 0.0,
        **lowfp.Linear(8).spec(),
        "block": 2048,
        "scale": "absmax",
        "rounding": "nearest",
    }
    bufs = []
    for p in ps:
        packed_len, nb, _, _ = _core.blockwise_layout(spec, p.numel())
        bufs.append(
            (
                spec,
                torch.zeros(packed_len, dtype=torch.uint8, device=p.device),
                torch.zeros(nb, device=p.device),
                torch.zeros(0, device=p.device),
            )
        )
    dirs = [p.grad.detach().clone().view(-1) for p in ps]

    def step():
        for d, p, b in zip(dirs, ps, bufs):
            d.copy_(p.grad.view(-1))
            copt.muon_momentum(d, b, 0.95, True, 2048, 0, 1)

    return step


def optim_main() -> None:
    ap = argparse.ArgumentParser(description="one optimizer step on >= 100M parameters")
    ap.add_argument("--tensors", type=int, default=100, help="matrices (plus 4 vectors)")
    ap.add_argument("--rows", type=int, default=1024, help="rows of each 1000-column matrix")
    args = ap.parse_args()
    import torch

    dev = torch.cuda.get_device_name()
    shapes = [(args.rows, 1000)] * args.tensors + [(1000,)] * 4
    n = sum(int(np.prod(s)) for s in shapes)
    print(f"device: {dev}; {len(shapes)} tensors, {n / 1e6:.1f}M float32 parameters")
    print(f"| {'optimizer':<28} | {'ms/step':>8} | {'host ms':>8} | {'peak extra GiB':>14} |")
    print(f"|{'-' * 30}|{'-' * 10}|{'-' * 10}|{'-' * 16}|")
    for name, make in _optimizers(torch):
        torch.cuda.empty_cache()
        g = torch.Generator(device="cuda").manual_seed(0)
        ps = [torch.nn.Parameter(torch.randn(s, device="cuda", generator=g) * 0.02) for s in shapes]
        for p in ps:
            p.grad = torch.randn(p.shape, device="cuda", generator=g) * 1e-3
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        try:
            step = make(ps)
            for _ in range(3):
                step()
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            times, host = [], []
            for _ in range(10):
                start.record()
                t0 = time.perf_counter()
                step()
                host.append((time.perf_counter() - t0) * 1e3)  # the host's share: launches
                stop.record()
                stop.synchronize()
                times.append(start.elapsed_time(stop))
        except Exception as e:  # report and go on with the next optimizer
            print(f"| {name:<28} | failed: {type(e).__name__}: {str(e)[:60]}")
            continue
        peak = (torch.cuda.max_memory_allocated() - base) / 2**30
        print(
            f"| {name:<28} | {float(np.median(times)):8.2f} | {float(np.median(host)):8.2f} | "
            f"{peak:14.3f} |"
        )
        del ps, step


if __name__ == "__main__":
    import sys

    if "--optim" in sys.argv:
        sys.argv.remove("--optim")
        optim_main()
    else:
        main()
