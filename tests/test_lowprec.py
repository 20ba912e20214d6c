"""lowfp.optim.LowPrecision: quantized-training emulation around any torch optimizer."""

import copy
import math
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

import lowfp  # noqa: E402
from lowfp.optim.lowprec import LowPrecision, Q, _stream  # noqa: E402


def _params(seed=0, shapes=((16, 8), (8,), (4, 4))):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*s, generator=g)) for s in shapes]


def _grads(params, step, seed=100):
    g = torch.Generator().manual_seed(seed * 1000 + step)
    return [torch.randn(p.shape, generator=g) for p in params]


def _train(make_opt, steps=5, seed=0, wrap=None, shapes=((16, 8), (8,), (4, 4))):
    """Run `steps` steps on fixed gradients; returns (params, optimizer)."""
    params = _params(seed, shapes)
    opt = make_opt(params)
    if wrap is not None:
        opt = wrap(opt)
    for t in range(steps):
        for p, g in zip(params, _grads(params, t)):
            p.grad = g
        opt.step()
    return params, opt


def _representable(t, fmt):
    return torch.equal(lowfp.quantize(t, fmt), t)


INNER = {
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
    "adam_amsgrad": lambda ps: torch.optim.Adam(ps, lr=1e-2, amsgrad=True),
    "sgd_momentum": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    "lowfp_adamw": lambda ps: lowfp.optim.AdamW(
        ps, lr=1e-2, exp_avg="e4m3", exp_avg_sq="e4m3", min_quant_size=16
    ),
}


# ---------------------------------------------------------------- identity without quantizers


@pytest.mark.parametrize("name", sorted(INNER))
def test_no_quantizers_is_bit_identical(name):
    ref, ref_opt = _train(INNER[name])
    got, opt = _train(INNER[name], wrap=LowPrecision)
    for a, b in zip(ref, got):
        assert torch.equal(a, b)
    for a, b in zip(ref, got):
        sa, sb = ref_opt.state[a], opt.state[b]
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(torch.as_tensor(sa[k]), torch.as_tensor(sb[k])), k
    assert opt.step_count == 5 and opt.skipped_steps == 0


def test_no_quantizers_muon_is_bit_identical():
    muon = lambda ps: torch.optim.Muon(ps, lr=0.02)  # noqa: E731 - 2-D parameters only
    shapes = ((16, 8), (4, 4))
    ref, _ = _train(muon, shapes=shapes)
    got, _ = _train(muon, shapes=shapes, wrap=LowPrecision)
    for a, b in zip(ref, got):
        assert torch.equal(a, b)


# ---------------------------------------------------------------- representability


@pytest.mark.parametrize(
    "fmt,rounding",
    [("bfloat16", "nearest"), ("e4m3", "stochastic"), ("e5m2", "nearest"), ("e3m4", "stochastic")],
)
def test_weights_representable_after_step(fmt, rounding):
    params, opt = _train(
        INNER["adamw"], wrap=lambda o: LowPrecision(o, weight=Q(fmt, rounding), grad="e5m2")
    )
    for p in params:
        assert _representable(p.detach(), fmt)
    # and the rounding did something: float32 AdamW weights are not all on the grid
    ref, _ = _train(INNER["adamw"])
    assert not all(torch.equal(a, b) for a, b in zip(ref, params))


@pytest.mark.parametrize(
    "name,states",
    [
        ("adamw", {"exp_avg": Q("e4m3", "stochastic"), "exp_avg_sq": Q("e5m2")}),
        (
            "adam_amsgrad",
            {
                "exp_avg": "bf16",
                "exp_avg_sq": {"fmt": "e5m2", "rounding": "stochastic"},
                "max_exp_avg_sq": "e5m2",
            },
        ),
        ("sgd_momentum", {"momentum_buffer": Q("e4m3", "stochastic")}),
    ],
)
def test_states_representable_after_step(name, states):
    params, opt = _train(INNER[name], wrap=lambda o: LowPrecision(o, states=states, seed=3))
    for p in params:
        for k, q in opt.states.items():
            assert _representable(opt.state[p][k], q.format), k


def test_muon_momentum_and_weights_representable():
    shapes = ((16, 8), (4, 4))
    params, opt = _train(
        lambda ps: torch.optim.Muon(ps, lr=0.02),
        shapes=shapes,
        wrap=lambda o: LowPrecision(
            o,
            grad="e4m3",
            weight=Q("bf16", "stochastic"),
            states={"momentum_buffer": Q("e4m3", "stochastic")},
        ),
    )
    for p in params:
        assert _representable(p.detach(), "bf16")
        assert _representable(opt.state[p]["momentum_buffer"], "e4m3")


def test_grads_rounded_in_place_before_step():
    p = torch.nn.Parameter(torch.zeros(64))
    g = torch.randn(64, generator=torch.Generator().manual_seed(1))
    p.grad = g.clone()
    opt = LowPrecision(torch.optim.SGD([p], lr=1.0), grad="e2m1")
    opt.step()
    assert torch.equal(p.grad, lowfp.quantize(g, "e2m1", overflow="saturate"))
    assert torch.equal(p.detach(), -p.grad)  # SGD with lr 1 from 0: w = -round(g), exactly


def test_lowfp_adamw_small_states_quantized_large_skipped():
    # lowfp's AdamW keeps packed states ("exp_avg.codes", …) for tensors >= min_quant_size and
    # float32 "exp_avg" below: the named state is rounded where it exists
    def make(ps):
        return lowfp.optim.AdamW(ps, lr=1e-2, exp_avg="e4m3", min_quant_size=64)

    params, opt = _train(make, wrap=lambda o: LowPrecision(o, states={"exp_avg_sq": "e5m2"}))
    small = [p for p in params if p.numel() < 64]
    assert small
    for p in small:
        assert _representable(opt.state[p]["exp_avg_sq"], "e5m2")


# ---------------------------------------------------------------- reproducibility


def _stochastic_run(seed):
    params, _ = _train(
        INNER["adamw"],
        steps=4,
        wrap=lambda o: LowPrecision(
            o,
            grad=Q("e4m3", "stochastic"),
            weight=Q("bf16", "stochastic"),
            states={"exp_avg": Q("e4m3", "stochastic"), "exp_avg_sq": Q("e5m2", "stochastic")},
            seed=seed,
        ),
    )
    return params


def test_stochastic_reproducible_and_seed_dependent():
    a, b, c = _stochastic_run(7), _stochastic_run(7), _stochastic_run(8)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_streams_distinct_and_fixed():
    keys = [(i, t, k) for i in range(20) for t in range(1, 20) for k in (0, 1, 2, 3)]
    streams = {_stream(*key) for key in keys}
    assert len(streams) == len(keys)
    assert all(0 <= s < 2**64 for s in streams)


def test_streams_differ_per_tensor_and_step():
    # two parameters with identical values and gradients, rounded stochastically: different
    # bits per tensor; and the same tensor at two steps draws different bits.
    # 256 elements halfway between two e2m1 values (1.25 between 1 and 1.5): each element
    # rounds up w.p. 1/2, so two independent draws agree everywhere w.p. 2**-256.
    ps = [torch.nn.Parameter(torch.zeros(256)) for _ in range(2)]
    opt = LowPrecision(torch.optim.SGD(ps, lr=1.0), grad=Q("e2m1", "stochastic"))
    rounded = []
    for _ in range(2):
        for p in ps:
            p.grad = torch.full((256,), 1.25)
        opt.step()
        rounded += [p.grad.clone() for p in ps]
    for i in range(4):
        for j in range(i):
            assert not torch.equal(rounded[i], rounded[j])


def test_reproducible_across_processes():
    # Python's str hash is randomized per process: the streams must not depend on it
    code = (
        "import torch, lowfp.optim.lowprec as L\n"
        "p = torch.nn.Parameter(torch.linspace(-1, 1, 64))\n"
        "o = L.LowPrecision(torch.optim.Adam([p], lr=1e-3), weight=L.Q('bf16', 'stochastic'),"
        " states={'exp_avg': L.Q('e4m3', 'stochastic')}, seed=5)\n"
        "for t in range(3):\n"
        "    p.grad = torch.cos(torch.arange(64.0) * (t + 1)); o.step()\n"
        "print(p.detach().double().tolist(), o.state[p]['exp_avg'].double().tolist())\n"
    )
    outs = []
    for hs in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hs)  # the same lowfp this test imports
        outs.append(
            subprocess.run(
                [sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True
            ).stdout
        )
    assert outs[0] == outs[1] and outs[0]


# ---------------------------------------------------------------- findings


def _quadratic_sgd(fmt, seed, steps=300, d=64, lr=0.1, sigma=0.05):
    """Mean loss over the last 50 steps of SGD on 0.5 * sum(h_i w_i^2) with noisy gradients."""
    g = torch.Generator().manual_seed(seed)
    h = torch.linspace(0.5, 2.0, d)
    w0 = 3 * torch.randn(d, generator=g)
    noise = sigma * torch.randn(steps, d, generator=g)  # same noise for every format
    p = torch.nn.Parameter(w0)
    opt = LowPrecision(torch.optim.SGD([p], lr=lr), grad=fmt)
    tail = 0.0
    for t in range(steps):
        p.grad = h * p.detach() + noise[t]
        opt.step()
        if t >= steps - 50:
            tail += float(0.5 * (h * p.detach() ** 2).sum()) / 50
    return tail


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sgd_fp4_gradients_end_higher_than_fp8_and_bf16(seed):
    # Noise floor of exact SGD: per coordinate Var(w) = lr sigma^2 / (h (2 - lr h)), so
    # E[0.5 h w^2] ~= lr sigma^2 / 4 and the loss floor ~= 64 * 0.1 * 0.05^2 / 4 = 4.0e-3.
    # e4m3 rounds the gradient with relative error <= 2^-4 and flushes only |g| < 2^-10:
    # the floor is unchanged to a few %. bf16 (2^-8 relative) likewise.
    # e2m1 (FP4, nearest) maps every |g| <= 0.25 to 0 (values 0, 0.5, 1, …, 6): with
    # sigma = 0.05 the noise rarely crosses the dead zone, so each coordinate stops where it
    # enters |h w| <= 0.25, i.e. per coordinate up to 0.5 * 0.25^2 / h ~ 1.6e-2..6e-2 and
    # about a third of that on average (landing ~uniform in the zone): ~0.2-0.6 in all,
    # ~50-150x the noise floor (measured: ~50x). Asserting 10x leaves a 5x margin.
    fp4, fp8, bf16, exact = (_quadratic_sgd(f, seed) for f in ("e2m1", "e4m3", "bf16", None))
    assert fp4 > 10 * fp8
    assert fp4 > 10 * bf16
    assert 2e-3 < exact < 8e-3  # the noise floor, within 2x (sampling of 64 x 50 values)
    assert abs(fp8 - exact) < 0.1 * exact and abs(bf16 - exact) < 0.1 * exact


def test_adam_bf16_weights_stochastic_moves_where_nearest_stalls():
    # f(w) = sum(w): constant gradient 1, so Adam's update is lr * m_hat / (sqrt(v_hat) + eps)
    # = lr (1 - 1e-8) every step. Weights start at 1.5; in [1, 2) the bf16 ulp is 2^-7 =
    # 7.8e-3, half an ulp 3.9e-3 > lr = 1e-3: nearest rounds every update away (stall).
    # Stochastic rounding moves down one ulp w.p. lr / ulp = 0.128, unbiased: after T = 200
    # steps E[1.5 - w] = T lr = 0.2 (w stays in [1, 2), so the ulp is constant), and the
    # mean over d = 256 coordinates has std ulp * sqrt(T p (1 - p)) / sqrt(d) = 2.3e-3:
    # the 0.02 tolerance below is ~9 std.
    d, steps, lr = 256, 200, 1e-3
    moved = {}
    for rounding in ("nearest", "stochastic"):
        p = torch.nn.Parameter(torch.full((d,), 1.5))
        opt = LowPrecision(torch.optim.Adam([p], lr=lr), weight=Q("bf16", rounding), seed=11)
        for _ in range(steps):
            p.grad = torch.ones(d)
            opt.step()
        assert _representable(p.detach(), "bf16")
        moved[rounding] = float((1.5 - p.detach()).mean())
    assert moved["nearest"] == 0.0
    assert abs(moved["stochastic"] - steps * lr) < 0.02


# ---------------------------------------------------------------- non-finite gradients


def _snapshot(params, opt):
    return (
        [p.detach().clone() for p in params],
        [{k: torch.as_tensor(v).clone() for k, v in opt.state[p].items()} for p in params],
    )


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1e6])
def test_nonfinite_skip_leaves_everything_untouched(bad):
    # 1e6 is finite but overflows e4m3 with overflow="nonfinite" (-> NaN): skipped as well
    params, opt = _train(
        INNER["adamw"],
        steps=2,
        wrap=lambda o: LowPrecision(
            o, grad=Q("e4m3", overflow="nonfinite"), weight="bf16", states={"exp_avg": "e4m3"}
        ),
    )
    before = _snapshot(params, opt)
    grads = _grads(params, 9)
    grads[1][3] = bad
    for p, g in zip(params, grads):
        p.grad = g.clone()
    opt.step()
    after = _snapshot(params, opt)
    assert all(torch.equal(a, b) for a, b in zip(before[0], after[0]))
    for sa, sb in zip(before[1], after[1]):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)  # Adam's step counter included
    for p, g in zip(params, grads):  # grads untouched (NaN compares equal to NaN here)
        torch.testing.assert_close(p.grad, g, rtol=0, atol=0, equal_nan=True)
    assert opt.skipped_steps == 1 and opt.step_count == 3
    for p, g in zip(params, _grads(params, 10)):  # a finite step afterwards proceeds
        p.grad = g
    opt.step()
    assert opt.skipped_steps == 1
    assert not torch.equal(params[0].detach(), after[0][0])


def test_nonfinite_propagate():
    p = torch.nn.Parameter(torch.zeros(8))
    opt = LowPrecision(
        torch.optim.SGD([p], lr=1.0, momentum=0.5),
        grad="e2m1",
        weight="e2m1",
        states={"momentum_buffer": "e2m1"},
        nonfinite="propagate",
    )
    g = torch.ones(8)
    g[2], g[5] = float("nan"), float("-inf")
    p.grad = g
    opt.step()  # e2m1 has neither NaN nor inf: non-finite values pass through unrounded
    w = p.detach()
    assert torch.isnan(w[2]) and w[5] == float("inf")
    assert torch.equal(w[[0, 1, 3, 4, 6, 7]], -torch.ones(6))
    assert opt.skipped_steps == 0


# ---------------------------------------------------------------- the Optimizer interface


def test_optimizer_interface():
    params = _params()
    inner = torch.optim.SGD(params[:2], lr=0.1, momentum=0.9)
    opt = LowPrecision(inner, grad="e4m3")
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups is inner.param_groups and opt.state is inner.state
    assert opt.defaults is inner.defaults
    opt.add_param_group({"params": [params[2]], "lr": 0.01})
    assert len(inner.param_groups) == 2
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    calls = []
    opt.register_step_post_hook(lambda o, a, k: calls.append(o))
    for p in params:
        p.grad = torch.ones_like(p)
    loss = opt.step(lambda: torch.tensor(3.0))
    sched.step()
    assert float(loss) == 3.0 and calls == [opt]
    assert inner.param_groups[0]["lr"] == pytest.approx(0.05)
    opt.zero_grad()
    assert all(p.grad is None for p in params)
    r = repr(opt)
    assert "float8_e4m3fn (nearest, overflow=saturate)" in r and "SGD" in r


def test_state_dict_round_trip_continues_identically():
    wrap = lambda o: LowPrecision(  # noqa: E731
        o,
        grad=Q("e4m3", "stochastic"),
        weight=Q("bf16", "stochastic"),
        states={"exp_avg": Q("e4m3", "stochastic")},
        seed=2,
    )
    params, opt = _train(INNER["adamw"], steps=3, wrap=wrap)
    sd = copy.deepcopy(opt.state_dict())
    assert sd["lowprec"] == {"step": 3, "skipped": 0}
    clones = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt2 = wrap(INNER["adamw"](clones))
    opt2.load_state_dict(sd)
    assert opt2.step_count == 3
    for t in range(3, 6):
        for ps in (params, clones):
            for p, g in zip(ps, _grads(ps, t)):
                p.grad = g
        opt.step()
        opt2.step()
    assert all(torch.equal(a, b) for a, b in zip(params, clones))


# ---------------------------------------------------------------- errors


def test_unknown_state_name():
    params = _params()
    opt = LowPrecision(torch.optim.AdamW(params), states={"exp_avgg": "e4m3"})
    for p in params:
        p.grad = torch.ones_like(p)
    with pytest.raises(ValueError, match=r"'exp_avgg'.*exp_avg, exp_avg_sq"):
        opt.step()
    opt = LowPrecision(torch.optim.SGD(params, lr=0.1), states={"momentum_buffer": "e4m3"})
    with pytest.raises(ValueError, match=r"'momentum_buffer'.*\(none\)"):
        opt.step()  # SGD without momentum keeps no state


def test_bad_specs():
    opt = torch.optim.SGD(_params(), lr=0.1)
    with pytest.raises(ValueError, match="unknown format"):
        LowPrecision(opt, grad="e9m99")
    with pytest.raises(ValueError, match="unknown format"):
        LowPrecision(opt, states={"momentum_buffer": "fp7"})
    with pytest.raises(ValueError, match="rounding"):
        LowPrecision(opt, weight=Q("e4m3", "randomly"))
    with pytest.raises(ValueError, match="rounding"):
        LowPrecision(opt, grad={"fmt": "e4m3", "rounding": "up-ish"})
    with pytest.raises(ValueError, match="overflow"):
        Q("e4m3", overflow="wrap")
    with pytest.raises(TypeError, match="keys"):
        LowPrecision(opt, grad={"format": "e4m3"})
    with pytest.raises(TypeError, match="grad"):
        LowPrecision(opt, grad=8)
    with pytest.raises(ValueError, match="nonfinite"):
        LowPrecision(opt, nonfinite="ignore")
    with pytest.raises(ValueError, match="seed"):
        LowPrecision(opt, seed=-1)
    with pytest.raises(ValueError, match="step"):
        LowPrecision(opt, states={"step": "e4m3"})
    for bad in (None, object(), _params(), torch.zeros(3)):
        with pytest.raises(TypeError, match="torch.optim.Optimizer"):
            LowPrecision(bad)


def test_format_not_exact_in_dtype_fails_before_modifying():
    p = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16))
    opt = LowPrecision(torch.optim.SGD([p], lr=0.1), weight="e5m10")  # fp16 is not in bf16
    p.grad = torch.ones(4, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="cannot round torch.bfloat16"):
        opt.step()
    assert torch.equal(p.detach(), torch.ones(4, dtype=torch.bfloat16))


# ---------------------------------------------------------------- tracking (track=True)


def _sgd_tracked(lr, grad="e4m3", weight="bf16", steps=1, track=True, seed=0, start=False):
    params = _params(seed, ((64, 32),))
    opt = LowPrecision(torch.optim.SGD(params, lr=lr), grad=grad, weight=weight, track=track)
    if start:
        opt.quantize_weights()
    for t in range(steps):
        params[0].grad = _grads(params, t)[0]
        opt.step()
    return params, opt


def test_tracker_rows_by_hand():
    p0 = _params(0, ((64, 32),))[0].detach().clone()
    g = _grads([p0], 0)[0]
    params, opt = _sgd_tracked(lr=0.01)
    rows = {r["tensor"]: r for r in opt.tracker.rows}
    assert list(rows) == ["grad", "weight"] and all(r["step"] == 1 for r in rows.values())
    assert opt.tracker.columns == list(lowfp.optim.lowprec.TRACK_COLUMNS)
    d = lambda t: t.double()  # noqa: E731
    qg = lowfp.quantize(g, "e4m3", overflow="saturate")
    assert rows["grad"]["rel_error"] == pytest.approx(
        float((d(qg) - d(g)).norm() / d(g).norm()), rel=1e-12
    )
    assert rows["grad"]["shrinkage"] == pytest.approx(
        float((d(qg) * d(g)).sum() / d(g).square().sum()), rel=1e-12
    )
    assert rows["grad"]["flushed"] == float(((g != 0) & (qg == 0)).sum()) / g.numel()
    assert rows["grad"]["numel"] == 64 * 32 and math.isnan(rows["grad"]["unchanged"])
    t = p0 - 0.01 * qg  # SGD's unrounded new weight
    r = lowfp.quantize(t, "bf16", overflow="saturate")
    assert torch.equal(params[0].detach(), r)
    moved = t != p0
    assert rows["weight"]["unchanged"] == float((moved & (r == p0)).sum()) / float(moved.sum())
    assert rows["weight"]["drift"] == pytest.approx(
        float((d(r) - d(t)).norm() / d(t).norm()), rel=1e-6
    )
    # (after one step the shadow is old + (t - old) in float32: t up to float32 rounding)


def test_tracker_sees_swamping_and_flush():
    # updates far below half a bfloat16 ulp: every moved element keeps its stored value, and
    # the stored weights (rounded to bfloat16 first) fall behind the float32 shadow
    _, opt = _sgd_tracked(lr=1e-6, grad=None, steps=4, start=True)
    w = [r for r in opt.tracker.rows if r["tensor"] == "weight"]
    assert [r["step"] for r in w] == [1, 2, 3, 4]
    assert all(r["unchanged"] == 1.0 and r["rel_error"] > 0 for r in w)
    assert 0 < w[0]["drift"] < w[1]["drift"] < w[2]["drift"] < w[3]["drift"]
    # stochastic weight rounding moves some of them
    _, opt = _sgd_tracked(lr=1e-4, grad=None, weight=Q("bf16", "stochastic"), steps=2)
    assert 0 < opt.tracker.rows[-1]["unchanged"] < 1
    # raw E2M1 gradients of size ~0.01: all flushed to zero, q_k = 0
    params = _params(0, ((8, 8),))
    opt = LowPrecision(torch.optim.SGD(params, lr=0.1), grad="e2m1", track=True)
    params[0].grad = _grads(params, 0)[0] * 0.01
    opt.step()
    (row,) = opt.tracker.rows
    assert row["flushed"] == 1.0 and row["shrinkage"] == 0.0 and row["rel_error"] == 1.0


def test_tracker_states_csv_and_same_trajectory(tmp_path):
    def run(track):
        return _train(
            lambda ps: torch.optim.AdamW(ps, lr=1e-2),
            steps=3,
            wrap=lambda o: LowPrecision(
                o, grad="e5m2", weight="bf16", states={"exp_avg": "e4m3"}, track=track
            ),
        )

    ref, _ = run(False)
    got, opt = run(True)
    assert all(torch.equal(a, b) for a, b in zip(ref, got))  # tracking changes nothing
    tensors = opt.tracker.column("tensor")
    assert tensors == ["grad", "exp_avg", "weight"] * 3
    ea = [r for r in opt.tracker.rows if r["tensor"] == "exp_avg"]
    assert all(0 < r["rel_error"] < 0.1 and 0 <= r["unchanged"] < 1 for r in ea)
    path = tmp_path / "track.csv"
    opt.tracker.to_csv(str(path))
    lines = path.read_text().splitlines()
    assert lines[0] == ",".join(lowfp.optim.lowprec.TRACK_COLUMNS) and len(lines) == 10
    assert float(lines[1].split(",")[3]) == opt.tracker.rows[0]["rel_error"]


def test_tracker_skipped_step_leaves_no_row():
    params = _params(0, ((4, 4),))
    opt = LowPrecision(torch.optim.SGD(params, lr=0.1), grad="e4m3", track=True)
    params[0].grad = torch.full((4, 4), float("nan"))
    opt.step()
    assert opt.skipped_steps == 1 and len(opt.tracker) == 0
    params[0].grad = torch.ones(4, 4)
    opt.step()
    assert opt.tracker.column("step") == [2]
    assert LowPrecision(torch.optim.SGD(params, lr=0.1)).tracker is None
    with pytest.raises(TypeError, match="track"):
        LowPrecision(torch.optim.SGD(params, lr=0.1), track="yes")


# ---------------------------------------------------------------- device dispatch (no GPU here)


def test_cuda_tensors_round_on_device_when_lowfp_cuda_is_available(monkeypatch):
    # The decision only: a CUDA tensor stays on its device when lowfp.cuda is available, goes
    # through a CPU copy otherwise; the CUDA kernels themselves are not run here.
    import types

    import lowfp.cuda
    from lowfp.optim import lowprec

    fake_cuda = types.SimpleNamespace(device=torch.device("cuda", 0))
    try:
        for answer in (True, False):
            lowprec._cuda_available.cache_clear()  # asked once per process, so: clear
            monkeypatch.setattr(lowfp.cuda, "available", lambda a=answer: a)
            assert lowprec._device_rounds(fake_cuda) is answer
            assert not lowprec._device_rounds(torch.zeros(1))
    finally:
        lowprec._cuda_available.cache_clear()
    # routed: lowfp.quantize receives the device tensor itself (a meta tensor stands in for
    # a CUDA one: .cpu() on it would raise), and the result stays there
    seen = []

    def fake_quantize(x, fmt, **kw):
        seen.append((x.device.type, kw["seed"], kw["stream"], kw["nan"]))
        return x.clone()

    monkeypatch.setattr(lowprec, "_device_rounds", lambda x: True)
    monkeypatch.setattr(lowprec._codec, "quantize", fake_quantize)
    lp = LowPrecision(torch.optim.SGD(_params(), lr=0.1), seed=9)
    r = lp._round(torch.empty(3, device="meta"), Q("e4m3"), 5)
    assert r.device.type == "meta" and seen == [("meta", 9, 5, "zero")]
