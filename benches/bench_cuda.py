"""Effective bandwidth of the lowfp CUDA codec kernels as a fraction of a measured
device-to-device copy (bytes read + written, per kernel call), printed as a table.

    PYTHONPATH=python python3 benches/bench_cuda.py [--n 268435456]

Needs CuPy and a CUDA device. Times are CUDA-event medians of 20 runs after 3 warm-ups.
"""

from __future__ import annotations

import argparse

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
    rows = [  # name, call, bytes read + written
        ("encode f32→e4m3 nearest", lambda: lowfp.encode(x, "e4m3"), 5 * n),
        ("encode f32→e4m3 stochastic",
         lambda: lowfp.encode(x, "e4m3", rounding="stochastic", seed=1), 5 * n),
        ("encode f32→bf16 nearest", lambda: lowfp.encode(x, "bfloat16"), 6 * n),
        ("decode e4m3→f32", lambda: lowfp.decode(c8, "e4m3"), 5 * n),
        ("pack 4-bit", lambda: lowfp.pack(c4, 4), n + n // 2),
        ("unpack 4-bit", lambda: lowfp.unpack(p4, 4, n), n + n // 2),
        ("quantize_blockwise mxfp4", lambda: lowfp.quantize_blockwise(x, "mxfp4"),
         4 * n + n // 2 + n // 32),
        ("dequantize mxfp4", q.dequantize, 4 * n + n // 2 + n // 32),
    ]
    print(f"| {'kernel':<30} | {'ms':>8} | {'GB/s':>7} | {'of copy':>7} |")
    print(f"|{'-' * 32}|{'-' * 10}|{'-' * 9}|{'-' * 9}|")
    for name, fn, nbytes in rows:
        t = _time(cp, fn)
        bw = nbytes / t
        print(f"| {name:<30} | {t * 1e3:8.3f} | {bw / 1e9:7.0f} | {bw / copy_bw:7.0%} |")


if __name__ == "__main__":
    main()
