"""Optimizer state bytes per parameter per rank: 1 and 2 ranks, ZeRO-1 and FSDP2 (CPU, gloo).

    PYTHONPATH=python python3 benches/bench_distributed.py

Runs itself as 1 and then 2 gloo ranks on this machine. The model is 4 × Linear(1024, 1024)
with biases (4,198,400 parameters). States are created with
``lowfp.optim.distributed.init_state`` (their layout is fixed at creation; a step changes
values, not sizes), so Muon's Newton–Schulz matmuls are not run. Each cell is
``optimizer.state_nbytes()`` on that rank (step counters included) divided by the model's
parameter count; with ZeRO-1 the rank's local optimizer holds the states of the parameters
ZeRO assigned to it, with FSDP2 every rank holds the states of its rows of every parameter.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

WIDTH, LAYERS = 1024, 4
OPTIMIZERS = (
    "AdamW (float32 states)",
    "AdamW8bit",
    "AdamW4bit",
    "SOLO(bits=3)",
    "Muon8bit (block 1024)",
)


def _optimizer(name, params):
    import lowfp.optim as lo

    return {
        "AdamW (float32 states)": lambda: lo.AdamW(params),
        "AdamW8bit": lambda: lo.AdamW8bit(params),
        "AdamW4bit": lambda: lo.AdamW4bit(params),
        "SOLO(bits=3)": lambda: lo.SOLO(params, bits=3),
        # block 1024 = one row of a 1024-wide weight, so FSDP2 shards hold whole blocks
        "Muon8bit (block 1024)": lambda: lo.Muon8bit(params, block_size=1024),
    }[name]()


def _groups(name, model):
    """Muon gets its two groups up front (matrices, the rest with use_muon=False)."""
    if not name.startswith("Muon"):
        return list(model.parameters())
    return [
        {"params": [p for p in model.parameters() if p.ndim >= 2]},
        {"params": [p for p in model.parameters() if p.ndim < 2], "use_muon": False},
    ]


def _model():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(*[torch.nn.Linear(WIDTH, WIDTH) for _ in range(LAYERS)])


def _rank_main() -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.optim import ZeroRedundancyOptimizer

    from lowfp.optim import distributed as ld

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    world, rank = dist.get_world_size(), dist.get_rank()
    n = sum(p.numel() for p in _model().parameters())
    rows = {}
    for name in OPTIMIZERS:
        zero_bytes = float("nan")
        if not name.startswith("Muon"):
            # Muon is not run under ZeRO: its built-in AdamW part (the "adamw" entry of its
            # state dict) is invisible to ZeroRedundancyOptimizer's consolidated state dict
            model = _model()
            zero = ZeroRedundancyOptimizer(
                _groups(name, model), optimizer_class=lambda ps, name=name: _optimizer(name, ps)
            )
            ld.init_state(zero.optim)
            zero_bytes = zero.optim.state_nbytes() / n
        model = _model()
        mesh = init_device_mesh("cpu", (world,))
        for layer in model:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        opt = _optimizer(name, _groups(name, model))
        ld.init_state(opt)
        mine = (zero_bytes, opt.state_nbytes() / n)
        everyone = [None] * world
        dist.all_gather_object(everyone, mine)
        rows[name] = everyone
        print(f"rank {rank}: {name} done", file=sys.stderr, flush=True)
    if rank == 0:
        print(json.dumps({"world": world, "params": n, "rows": rows}))
    dist.destroy_process_group()


def _launch(world: int, timeout: float = 300) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(
        os.environ,
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(world),
        OMP_NUM_THREADS="1",
        LOWFP_NUM_THREADS="1",
    )
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--rank"],
            env=dict(env, RANK=str(r)),
            stdout=subprocess.PIPE if r == 0 else subprocess.DEVNULL,
            text=True,
        )
        for r in range(world)
    ]
    try:
        out, _ = procs[0].communicate(timeout=timeout)
        for p in procs[1:]:
            p.wait(timeout=timeout)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    if any(p.returncode != 0 for p in procs):
        raise SystemExit(f"{world}-rank run failed")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    t0 = time.monotonic()
    one = _launch(1)
    two = _launch(2)
    print(
        f"{LAYERS} × Linear({WIDTH}, {WIDTH}): {one['params']:,} parameters; optimizer "
        "state bytes per parameter on each rank\n"
    )
    print(
        "| optimizer | 1 rank | ZeRO-1, 2 ranks (rank 0 / rank 1) | "
        "FSDP2, 2 ranks (rank 0 / rank 1) |"
    )
    print("|---|---|---|---|")
    for name in OPTIMIZERS:
        ((z1, f1),) = one["rows"][name]
        assert z1 == f1 or z1 != z1, (name, z1, f1)  # nan: not run under ZeRO
        (z0, fs0), (z1b, fs1) = two["rows"][name]
        zero = "not supported" if z0 != z0 else f"{z0:.3f} / {z1b:.3f}"
        print(f"| {name} | {f1:.3f} | {zero} | {fs0:.3f} / {fs1:.3f} |")
    print(f"\n({time.monotonic() - t0:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    if sys.argv[1:] == ["--rank"]:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))
        _rank_main()
    else:
        main()
