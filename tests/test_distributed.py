"""lowfp.optim under torch.distributed (CPU, gloo): DDP, ZeRO-1, FSDP2, DCP checkpoints.

The test spawns worker processes (this file run as a script): one world of 2 ranks, then one
of 1 rank, each with a hard time limit. The workers train, save and load, and write what they
saw (parameters, state bytes, error messages) to a temporary directory; the tests below compare
those files. Every single-process reference runs in the 1-rank world, with the same thread
count (1) as the ranks, so that matmul results can be compared bit for bit.

"The same global batch" on 1 process is computed as the ranks see it: the 16 samples of a step
are two micro-batches of 8, the gradient is ``0.5·g0 + 0.5·g1``. DDP and FSDP2 average over 2
ranks as ``g0/2 + g1/2`` (or ``(g0 + g1)/2``): halving is exact and a sum of two terms does not
depend on its order, so these runs must agree bit for bit. (A single backward over all 16
samples sums the batch inside the matmuls in another order, hence differs in the last bits.)
"""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

STEPS, RESUME_AT = 4, 2
HALF = 8  # samples per rank (the global batch is 16)
TIMEOUT_S = 150  # per world; a hang fails the test instead of blocking CI

# ---------------------------------------------------------------- shared by both sides


def optimizers():
    """name → factory; every name is run under DDP, the ZeRO and FSDP2 lists pick some."""
    import lowfp
    import lowfp.optim as lo

    return {
        "adamw8": lambda ps: lo.AdamW8bit(ps, lr=1e-2),
        "adamw4": lambda ps: lo.AdamW4bit(ps, lr=1e-2),
        # AdamW with other codecs: e4m3 m, zero-free 4-bit linear v, block 128
        "adamw_e4m3": lambda ps: lo.AdamW(
            ps,
            lr=1e-2,
            exp_avg="e4m3",
            exp_avg_sq=lowfp.Linear(4, signed=False, zero=False),
            block_size=128,
        ),
        "solo": lambda ps: lo.SOLO(ps, lr=1e-2, seed=5),  # stochastic rounding
        "muon8": lambda model: lo.Muon8bit(
            [
                {"params": [model.a.weight, model.b.weight]},
                {
                    "params": [
                        p for n, p in model.named_parameters() if n not in ("a.weight", "b.weight")
                    ],
                    "use_muon": False,
                },
            ],
            lr=0.02,
            block_size=256,
        ),
    }


DDP_OPTS = ("adamw8", "adamw4", "solo")
ZERO_OPTS = ("adamw8", "adamw_e4m3")
FSDP_OPTS = ("adamw8", "adamw4", "solo", "muon8")


def make_net():
    """Two 32×256 weights (rows of 256: whole blocks of 128 and 256) and small rest."""

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(256, 32)
            self.b = torch.nn.Linear(256, 32)
            self.head = torch.nn.Linear(32, 8)

        def forward(self, x):
            return self.head(torch.relu(self.a(x)) + torch.relu(self.b(x)))

    torch.manual_seed(0)
    return Net()


# ---------------------------------------------------------------- the launcher (pytest side)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(world: int, out: Path) -> None:
    """Run this file as `world` ranks; fail with their logs on error or timeout."""
    import lowfp

    env = dict(
        os.environ,
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(_free_port()),
        WORLD_SIZE=str(world),
        OMP_NUM_THREADS="1",
        LOWFP_NUM_THREADS="1",
        # the lowfp this test imported (the installed wheel, or the source tree with
        # its built extension under PYTHONPATH=python), not blindly the source tree
        PYTHONPATH=os.pathsep.join(
            [str(Path(lowfp.__file__).parents[1]), os.environ.get("PYTHONPATH", "")]
        ),
    )
    procs, logs = [], []
    for rank in range(world):
        log = open(out / f"log_w{world}_r{rank}.txt", "w")
        logs.append(log)
        procs.append(
            subprocess.Popen(
                [sys.executable, __file__, str(out)],
                env=dict(env, RANK=str(rank)),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    deadline = time.monotonic() + TIMEOUT_S
    try:
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
    if any(p.returncode != 0 for p in procs):
        text = "\n".join(
            f"--- rank {r} (exit {p.returncode}):\n"
            + (out / f"log_w{world}_r{r}.txt").read_text()[-4000:]
            for r, p in enumerate(procs)
        )
        pytest.fail(f"{world}-rank world failed or timed out after {TIMEOUT_S} s:\n{text}")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    out = tmp_path_factory.mktemp("dist")
    _launch(2, out)  # DDP, ZeRO-1, FSDP2, DCP save and 2 → 2 load
    _launch(1, out)  # single-process references, DCP 2 → 1 load

    def load(name):
        return torch.load(out / f"{name}.pt", weights_only=True)

    return load


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- the tests


@pytest.mark.parametrize("name", DDP_OPTS)
def test_ddp_ranks_agree_and_match_one_process(runs, name):
    r0, r1, ref = runs(f"ddp_{name}_r0"), runs(f"ddp_{name}_r1"), runs(f"ref_{name}")
    assert _equal(r0["states"], r1["states"])  # same packed bytes on both ranks
    assert _equal(r0["params"], r1["params"])
    # bit for bit with one process on the same global batch (see the module docstring)
    assert _equal(r0["states"], ref["states"])
    assert _equal(r0["params"], ref["params"])


@pytest.mark.parametrize("name", ZERO_OPTS)
def test_zero1_matches_one_process_and_resumes(runs, name):
    r0, r1, ref = runs(f"zero_{name}_r0"), runs(f"zero_{name}_r1"), runs(f"ref_{name}")
    # nearest rounding, whole parameters per rank: the same arithmetic as one process, so the
    # stated tolerance is zero (bit for bit)
    assert _equal(r0["params"], ref["params"])
    assert _equal(r0["params"], r1["params"])
    # consolidate_state_dict + state_dict on rank 0, torch.save, load on both ranks, continue
    assert _equal(r0["resumed"], r0["params"]) and _equal(r1["resumed"], r1["params"])
    assert r0["consolidated_params"] == list(range(len(r0["params"])))
    # each rank keeps the states of its own parameters: the two together are one process's
    # bytes, and each holds about half of them
    total = ref["nbytes"]
    assert r0["nbytes"] + r1["nbytes"] == total
    assert max(r0["nbytes"], r1["nbytes"]) <= 0.55 * total


@pytest.mark.parametrize("name", FSDP_OPTS)
def test_fsdp2_matches_one_process(runs, name):
    r0, r1, ref = runs(f"fsdp_{name}_r0"), runs(f"fsdp_{name}_r1"), runs(f"ref_{name}")
    assert _equal(r0["params"], r1["params"])  # gathered full parameters
    # states: one code per element, blocks inside rows, so the gathered states have the
    # layout of one process's; only the step counters are per rank
    n_state = len(ref["steps"])
    assert r0["nbytes"] + r1["nbytes"] == ref["nbytes"] + 4 * n_state
    assert max(r0["nbytes"], r1["nbytes"]) <= 0.55 * ref["nbytes"]
    # blocks are the same blocks as one process's, and stochastic rounding (SOLO) is keyed by
    # each element's index in the whole tensor (the shard's offset goes to the fused step):
    # bit for bit, every optimizer
    assert _equal(r0["states"], ref["states"])
    assert _equal(r0["params"], ref["params"])


@pytest.mark.parametrize("name", FSDP_OPTS)
def test_fsdp2_dcp_resume_same_world_size_is_bit_exact(runs, name):
    for r in (0, 1):
        got = runs(f"fsdp_{name}_r{r}")
        assert _equal(got["resumed_local"], got["local"])


@pytest.mark.parametrize("name", FSDP_OPTS)
def test_fsdp2_dcp_reshard_2_to_1(runs, name):
    saved = runs(f"fsdp_{name}_r0")["at_save"]  # gathered states when the 2 ranks saved
    one = runs(f"reshard_{name}")
    # whole rows move, hence whole blocks: the loaded states are the saved bytes
    assert _equal(one["loaded"], saved)
    # and training continues exactly as the uninterrupted 2-rank run (random bits keyed by
    # the global element index: the same at any world size)
    assert _equal(one["params"], runs(f"fsdp_{name}_r0")["params"])


def test_fsdp2_misaligned_rows_keep_float32_states(runs):
    got = runs("misaligned_r0")
    # a 128×48 weight: rows of 48 cannot hold whole blocks of 256 → float32 DTensor states
    assert got["keys"] == ["exp_avg", "exp_avg_sq", "step"]
    assert got["types"] == ["DTensor", "DTensor", "Tensor"]
    assert got["nbytes"] == 2 * 4 * 64 * 48 + 4  # this rank's 64 rows, two states, a step
    assert not got["aligned"]


def test_fsdp2_nan_in_one_shard_skips_the_step_on_every_rank(runs):
    for r in (0, 1):
        got = runs(f"misaligned_r{r}")
        assert got["skipped"] == 1 and got["unchanged"]


def test_replicated_dtensor_steps_like_a_plain_tensor(runs):
    for r in (0, 1):
        got = runs(f"replicated_r{r}")
        assert got["equal"] and got["states_equal"]
        assert got["types"] == ["DTensor", "Tensor"]  # packed parts; the empty alphas stay plain


def test_unsupported_combinations_raise(runs):
    got = runs("errors_r0")
    assert "placements (Shard(dim=1),) are not supported" in got["shard1"]
    assert "FSDP1 flat parameter" in got["fsdp1"]
    assert "use torch.distributed.fsdp.fully_shard" in got["fsdp1"]


# ---------------------------------------------------------------- the workers (script side)


def _state_tensors(opt) -> dict:
    """Every state tensor by '<param index>.<key>' (Muon's AdamW part as 'adamw.…'), gathered
    to the single-process layout for DTensor parameters (a collective on every rank)."""
    from lowfp.optim import distributed as ld

    out = {}
    parts = [("", opt)]
    if getattr(opt, "adamw", None) is not None:
        parts.append(("adamw.", opt.adamw))
    for prefix, o in parts:
        for i, st in o.state_dict()["state"].items():
            for k, v in st.items():
                if not torch.is_tensor(v):  # a codec description (plain data)
                    continue
                if ld.is_dtensor(v):
                    v = v.full_tensor()
                    v = v.reshape(-1) if "." in k else v
                out[f"{prefix}{i}.{k}"] = v.detach().clone()
    return out


def _loss(model, step, part):
    g = torch.Generator().manual_seed(100 + step)
    x, y = torch.randn(2 * HALF, 256, generator=g), torch.randn(2 * HALF, 8, generator=g)
    s = slice(part * HALF, (part + 1) * HALF)
    return torch.nn.functional.mse_loss(model(x[s]), y[s])


def _train(model, opt, steps, start, rank, world):
    for step in range(start, start + steps):
        if world == 2:
            _loss(model, step, rank).backward()
        else:  # the same global batch as two micro-batches (module docstring)
            for part in (0, 1):
                (0.5 * _loss(model, step, part)).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def _params(model) -> dict:
    from lowfp.optim import distributed as ld

    return {
        n: (p.full_tensor() if ld.is_dtensor(p) else p).detach().clone()
        for n, p in model.named_parameters()
    }


def _make(name, model):
    f = optimizers()[name]
    return f(model) if name == "muon8" else f(model.parameters())


def _steps(opt) -> list:
    return [float(st["step"]) for st in opt.state.values()] + (
        _steps(opt.adamw) if getattr(opt, "adamw", None) is not None else []
    )


def _worker_ddp(rank, world, out, save):
    from torch.nn.parallel import DistributedDataParallel as DDP

    for name in DDP_OPTS:
        model = DDP(make_net())
        opt = optimizers()[name](model.parameters())
        _train(model, opt, STEPS, 0, rank, world)
        save(f"ddp_{name}", params=_params(model.module), states=_state_tensors(opt))


def _worker_zero(rank, world, out, save):
    import torch.distributed as dist
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel as DDP

    import lowfp
    import lowfp.optim as lo

    # Codec options go in through functools.partial (or a preset): keywords given to
    # ZeroRedundancyOptimizer itself become entries of its param groups, where codec objects
    # would keep its state dict from loading with weights_only=True.
    kinds = {
        "adamw8": lo.AdamW8bit,
        "adamw_e4m3": functools.partial(
            lo.AdamW,
            exp_avg="e4m3",
            exp_avg_sq=lowfp.Linear(4, signed=False, zero=False),
            block_size=128,
        ),
    }
    for name in ZERO_OPTS:
        cls = kinds[name]
        model = DDP(make_net())
        opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=cls, lr=1e-2)
        _train(model, opt, RESUME_AT, 0, rank, world)
        opt.consolidate_state_dict(to=0)
        ck = out / f"zero_{name}.pt"
        consolidated = []
        if rank == 0:
            sd = opt.state_dict()
            consolidated = sorted(sd["state"])
            torch.save({"optim": sd, "model": model.module.state_dict()}, ck)
        dist.barrier()
        _train(model, opt, STEPS - RESUME_AT, RESUME_AT, rank, world)
        nbytes = opt.optim.state_nbytes()
        ck_data = torch.load(ck, weights_only=True)
        model2 = DDP(make_net())
        model2.module.load_state_dict(ck_data["model"])
        opt2 = ZeroRedundancyOptimizer(model2.parameters(), optimizer_class=cls, lr=1e-2)
        opt2.load_state_dict(ck_data["optim"])
        _train(model2, opt2, STEPS - RESUME_AT, RESUME_AT, rank, world)
        save(
            f"zero_{name}",
            params=_params(model.module),
            resumed=_params(model2.module),
            nbytes=nbytes,
            consolidated_params=consolidated,
        )


def _fsdp_model(world):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world,))
    model = make_net()
    fully_shard(model.a, mesh=mesh)
    fully_shard(model.b, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _dcp_save(model, opt, path):
    """Model and optimizer through torch's DCP helpers (FQN keys); Muon's plain state dict
    (its AdamW part sits under "adamw", which get_optimizer_state_dict does not carry)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    osd = opt.state_dict() if hasattr(opt, "adamw") else get_optimizer_state_dict(model, opt)
    dcp.save({"model": get_model_state_dict(model), "optim": osd}, checkpoint_id=str(path))


def _dcp_load(model, opt, path):
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    from lowfp.optim import distributed as ld

    if hasattr(opt, "adamw"):
        ld.init_state(opt)  # dcp.load fills the tensors it is given: create them first
        sd = {"model": get_model_state_dict(model), "optim": opt.state_dict()}
        dcp.load(sd, checkpoint_id=str(path))
        set_model_state_dict(model, sd["model"])
        opt.load_state_dict(sd["optim"])
        return
    sd = {"model": get_model_state_dict(model), "optim": get_optimizer_state_dict(model, opt)}
    dcp.load(sd, checkpoint_id=str(path))
    set_model_state_dict(model, sd["model"])
    set_optimizer_state_dict(model, opt, sd["optim"])


def _worker_fsdp(rank, world, out, save):
    for name in FSDP_OPTS:
        model = _fsdp_model(world)
        opt = _make(name, model)
        _train(model, opt, RESUME_AT, 0, rank, world)
        _dcp_save(model, opt, out / f"dcp_{name}")
        at_save = _state_tensors(opt)
        _train(model, opt, STEPS - RESUME_AT, RESUME_AT, rank, world)
        local = {n: p.to_local().detach().clone() for n, p in model.named_parameters()}
        model2 = _fsdp_model(world)
        opt2 = _make(name, model2)
        _dcp_load(model2, opt2, out / f"dcp_{name}")
        _train(model2, opt2, STEPS - RESUME_AT, RESUME_AT, rank, world)
        resumed = {n: p.to_local().detach().clone() for n, p in model2.named_parameters()}
        save(
            f"fsdp_{name}",
            params=_params(model),
            states=_state_tensors(opt),
            nbytes=opt.state_nbytes(),
            at_save=at_save,
            local=local,
            resumed_local=resumed,
        )


def _worker_misaligned(rank, world, save):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    import lowfp.optim as lo
    from lowfp.optim import distributed as ld

    lin = torch.nn.Linear(48, 128, bias=False)
    fully_shard(lin, mesh=init_device_mesh("cpu", (world,)))
    opt = lo.AdamW8bit(lin.parameters())
    lin(torch.randn(4, 48)).sum().backward()
    opt.step()
    st = opt.state_dict()["state"][0]
    keys = sorted(st)
    # a NaN in rank 1's shard only: every rank must skip the step (nonfinite="skip")
    from torch.distributed.tensor import DTensor

    w = lin.weight
    before = w.to_local().clone()
    g = torch.ones_like(w.to_local())
    g[0, 0] = float("nan") if rank == 1 else 1.0
    w.grad = DTensor.from_local(
        g, w.device_mesh, w.placements, run_check=False, shape=w.shape, stride=w.stride()
    )
    opt.step()
    save(
        "misaligned",
        keys=keys,
        types=[type(st[k]).__name__ for k in keys],
        nbytes=opt.state_nbytes(),
        aligned=ld.block_aligned(lin.weight, 256),
        skipped=opt.skipped_steps,
        unchanged=torch.equal(before, w.to_local()),
    )


def _worker_replicated(rank, world, save):
    """A replicated DTensor parameter (as tensor parallelism leaves some) steps like a plain
    one and checkpoints as replicated DTensors."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Replicate, distribute_tensor

    import lowfp.optim as lo
    from lowfp.optim import distributed as ld

    mesh = init_device_mesh("cpu", (world,))
    torch.manual_seed(3)
    w, g = torch.randn(64, 100), torch.randn(64, 100)
    p = torch.nn.Parameter(distribute_tensor(w, mesh, [Replicate()]))
    q = torch.nn.Parameter(w.clone())
    opts = [lo.AdamW8bit([x], min_quant_size=0) for x in (p, q)]
    for x, grad in ((p, distribute_tensor(g, mesh, [Replicate()])), (q, g)):
        x.grad = grad
    for o in opts:
        o.step()
    st = opts[0].state_dict()["state"][0]
    save(
        "replicated",
        equal=torch.equal(p.to_local(), q.detach()),
        states_equal=all(
            torch.equal(ld.local(st[k]).reshape(-1), v.reshape(-1))
            for k, v in opts[1].state[q].items()
        ),
        types=sorted(
            {type(v).__name__ for k, v in st.items() if k != "step" and torch.is_tensor(v)}
        ),
    )


def _worker_errors(rank, world, save):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.tensor import Shard, distribute_tensor

    import lowfp.optim as lo

    mesh = init_device_mesh("cpu", (world,))
    p = torch.nn.Parameter(distribute_tensor(torch.randn(16, 512), mesh, [Shard(1)]))
    p.grad = distribute_tensor(torch.randn(16, 512), mesh, [Shard(1)])
    msgs = {}
    try:
        lo.AdamW8bit([p]).step()
    except ValueError as e:
        msgs["shard1"] = str(e)
    f = FSDP(torch.nn.Linear(256, 32), device_id=torch.device("cpu"))
    f(torch.randn(4, 256)).sum().backward()
    try:
        lo.AdamW8bit(f.parameters()).step()
    except ValueError as e:
        msgs["fsdp1"] = str(e)
    save("errors", **msgs)


def _worker_one(out, save):
    """1 rank: single-process references, then DCP checkpoints of 2 ranks loaded here."""
    for name in optimizers():
        model = make_net()
        start = _params(model)
        opt = _make(name, model)
        _train(model, opt, STEPS, 0, 0, 1)
        torch.save(
            dict(
                params=_params(model),
                start=start,
                states=_state_tensors(opt),
                nbytes=opt.state_nbytes(),
                steps=_steps(opt),
            ),
            out / f"ref_{name}.pt",
        )
    for name in FSDP_OPTS:
        model = _fsdp_model(1)
        opt = _make(name, model)
        _dcp_load(model, opt, out / f"dcp_{name}")
        loaded = _state_tensors(opt)
        _train(model, opt, STEPS - RESUME_AT, RESUME_AT, 0, 1)
        torch.save(dict(loaded=loaded, params=_params(model)), out / f"reshard_{name}.pt")


def _worker_main(out: Path) -> None:
    from datetime import timedelta

    import torch.distributed as dist

    import lowfp

    torch.set_num_threads(1)
    lowfp.set_num_threads(1)
    dist.init_process_group("gloo", timeout=timedelta(seconds=TIMEOUT_S))
    rank, world = dist.get_rank(), dist.get_world_size()

    def save(name, **data):
        torch.save(data, out / f"{name}_r{rank}.pt")

    t0 = time.monotonic()
    if world == 2:
        for job in (_worker_ddp, _worker_zero, _worker_fsdp):
            job(rank, world, out, save)
            print(f"rank {rank}: {job.__name__} done at {time.monotonic() - t0:.1f} s", flush=True)
        _worker_misaligned(rank, world, save)
        _worker_replicated(rank, world, save)
        _worker_errors(rank, world, save)
    else:
        _worker_one(out, save)
    print(f"rank {rank}: all done at {time.monotonic() - t0:.1f} s", flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    _worker_main(Path(sys.argv[1]))
