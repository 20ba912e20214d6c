"""lowfp.optim SGD and Muon: parity with torch, low-bit momentum, checkpoints, threads, errors."""

import functools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import lowfp  # noqa: E402
from conftest import run_steps  # noqa: E402
from lowfp.optim import AdamW  # noqa: E402
from lowfp.optim.muon import Muon, Muon8bit  # noqa: E402
from lowfp.optim.sgd import SGD  # noqa: E402

NS = (3.4445, -4.7750, 2.0315)


def params(seed=0):
    torch.manual_seed(seed)
    return [
        torch.nn.Parameter(torch.randn(6000)),
        torch.nn.Parameter(torch.randn(30, 7)),
        torch.nn.Parameter(torch.randn(64, 128)),
    ]


def muon_params(seed=0):
    """Wide, tall and 3-D (conv-like) matrices and a bias."""
    torch.manual_seed(seed)
    return [
        torch.nn.Parameter(torch.randn(32, 64)),
        torch.nn.Parameter(torch.randn(96, 16)),
        torch.nn.Parameter(torch.randn(8, 4, 3)),
        torch.nn.Parameter(torch.randn(32)),
    ]


# ---------------------------------------------------------------- SGD


@pytest.mark.parametrize(
    "momentum,dampening,wd,nesterov",
    [
        (0.9, 0.0, 0.0, False),
        (0.9, 0.0, 1e-2, True),
        (0.8, 0.3, 5e-3, False),
        (0.99, 0.0, 0.1, True),
    ],
)
def test_sgd_float32_momentum_matches_torch(momentum, dampening, wd, nesterov):
    ref_p, our_p = params(), params()
    kw = dict(lr=1e-2, momentum=momentum, dampening=dampening, weight_decay=wd, nesterov=nesterov)
    run_steps(torch.optim.SGD(ref_p, foreach=False, **kw), ref_p, 100)
    run_steps(SGD(our_p, **kw), our_p, 100)
    for a, b in zip(ref_p, our_p):
        # Same float32 operations in the same order, but torch's kernels fuse `x + α·y` into
        # one rounding (FMA) where Rust rounds twice: each step may differ by about half an
        # ulp of |p| (|p| < 16 here, ulp 9.5e-7) plus far less from the lr-scaled update, so
        # 100 steps stay within 100 · 4.8e-7 ≈ 5e-5 (observed ~1e-6: the roundings cancel).
        np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), rtol=0, atol=5e-5)


def test_sgd_without_momentum_is_torch_bit_for_bit():
    ref_p, our_p = params(), params()
    run_steps(torch.optim.SGD(ref_p, lr=1e-2, weight_decay=1e-2, foreach=False), ref_p, 50)
    opt = SGD(our_p, lr=1e-2, weight_decay=1e-2)
    run_steps(opt, our_p, 50)
    for a, b in zip(ref_p, our_p):
        assert torch.equal(a, b)  # the very same torch operations
    assert opt.state_nbytes() == 0  # no state without momentum


def regression_loss(opt_factory, steps=300):
    """Noisy linear regression (minibatches of 32 from 256 rows); returns the final loss."""
    torch.manual_seed(1)
    w_true = torch.randn(4096)
    w = torch.nn.Parameter(torch.zeros(4096))
    opt = opt_factory([w])
    x = torch.randn(256, 4096)
    y = x @ w_true + 0.1 * torch.randn(256)
    for s in range(steps):
        i = torch.randint(0, 256, (32,), generator=torch.Generator().manual_seed(s))
        opt.zero_grad()
        loss = ((x[i] @ w - y[i]) ** 2).mean()
        loss.backward()
        opt.step()
    return float(((x @ w.detach() - y) ** 2).mean())


@functools.lru_cache(maxsize=None)
def sgd_baselines():
    """(starting loss, fp32-momentum SGD's final loss), computed once."""
    return (
        regression_loss(lambda p: SGD(p, lr=0.0)),
        regression_loss(lambda p: SGD(p, lr=1e-4, momentum=0.9, nesterov=True)),
    )


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_sgd_8bit_momentum_trains_like_float32(rounding):
    kw = dict(lr=1e-4, momentum=0.9, nesterov=True)
    start, base = sgd_baselines()
    low = regression_loss(
        lambda p: SGD(p, momentum_codec=lowfp.Dynamic(8), rounding=rounding, **kw)
    )
    assert base < 1e-5 * start  # fp32 fits the (underdetermined) training set
    # Stated tolerance: the 8-bit buffer must reach within 1.5x of fp32's final loss
    # (observed 1.02-1.04x: dynamic 8-bit codes hold the buffer to ~1% per element, and the
    # rounding errors do not accumulate in the weights).
    assert low <= 1.5 * base, (low, base, start)


def test_sgd_state_bytes_and_small_parameters():
    p = [torch.nn.Parameter(torch.zeros(1 << 16)), torch.nn.Parameter(torch.zeros(100))]
    opt = SGD(p, lr=0.1, momentum=0.9, momentum_codec="e4m3", block_size=128)
    for q in p:
        q.grad = torch.ones_like(q)
    opt.step()
    # 1 byte + a float32 scale per 128 for the big one, float32 for the small one (< 4096),
    # and a 4-byte step counter each.
    assert opt.state_nbytes() == (1 << 16) * (1 + 4 / 128) + 100 * 4 + 2 * 4
    assert "momentum_buffer: Format('float8_e4m3fn'" in opt.summary()
    assert "block 128" in opt.summary() and "float32 below 4096 elements" in opt.summary()


# ---------------------------------------------------------------- Muon


def reference_muon(ps, steps, lr, wd, beta, nesterov, adamw_lr, adamw_wd):
    """Keller Jordan's Muon step written out in torch, float32 momentum, on ps (in place).

    The momentum mirrors the Rust arithmetic (float32 `1 − β`, `b += (1 − β)(g − b)`,
    `g + β(b − g)`); the Newton–Schulz polynomial is written with addmm as torch.optim.Muon
    does. The bias goes to torch.optim.AdamW.
    """
    a, b, c = NS
    mats = [p for p in ps if p.ndim >= 2]
    rest = [p for p in ps if p.ndim < 2]
    adam = torch.optim.AdamW(
        rest, lr=adamw_lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=adamw_wd, foreach=False
    )
    bufs = [torch.zeros_like(p) for p in mats]
    beta32 = torch.tensor(beta, dtype=torch.float32)
    w = torch.tensor(1.0) - beta32
    for s in range(steps):
        g = torch.Generator().manual_seed(s)
        for p in ps:
            p.grad = torch.randn(p.shape, generator=g)
        adam.step()
        with torch.no_grad():
            for p, buf in zip(mats, bufs):
                gr = p.grad.clone()
                buf += w * (gr - buf)
                d = gr + beta32 * (buf - gr) if nesterov else buf
                rows, cols = p.shape[0], p.numel() // p.shape[0]
                x = d.view(rows, cols).bfloat16()
                if rows > cols:
                    x = x.T
                x = x / (x.norm() + 1e-7)
                for _ in range(5):
                    gram = x @ x.T
                    x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
                if rows > cols:
                    x = x.T
                p.mul_(1 - lr * wd)
                p.add_(x.reshape(p.shape), alpha=-lr * math.sqrt(max(1.0, rows / cols)))


@pytest.mark.parametrize("nesterov", [True, False])
def test_muon_float32_matches_reference_step(nesterov):
    ref_p, our_p = muon_params(), muon_params()
    kw = dict(lr=0.02, wd=0.1, beta=0.95, nesterov=nesterov, adamw_lr=1e-2, adamw_wd=0.1)
    reference_muon(ref_p, 20, **kw)
    opt = Muon(
        our_p,
        lr=0.02,
        momentum=0.95,
        nesterov=nesterov,
        weight_decay=0.1,
        adamw_lr=1e-2,
        adamw_weight_decay=0.1,
    )
    run_steps(opt, our_p, 20)
    assert [g["use_muon"] for g in opt.param_groups] == [True, False]
    for a, b in zip(ref_p[:3], our_p[:3]):
        # The same float32 momentum arithmetic (no FMA on either side) and the same bfloat16
        # torch operations: bit for bit.
        assert torch.equal(a, b)
    # The bias went to lowfp's AdamW, which matches torch's to float32 rounding (~1e-7/step).
    np.testing.assert_allclose(
        our_p[3].detach().numpy(), ref_p[3].detach().numpy(), rtol=0, atol=1e-5
    )


@pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon needs torch 2.9")
def test_muon_float32_matches_torch_muon():
    ref_p, our_p = muon_params(), muon_params()
    mats = [ref_p[0], ref_p[1]]
    ref = torch.optim.Muon(mats, lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=True)
    ref_adam = torch.optim.AdamW(
        [ref_p[3]], lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, foreach=False
    )
    opt = Muon(
        [our_p[0], our_p[1], our_p[3]],
        lr=0.02,
        weight_decay=0.1,
        adamw_lr=1e-2,
        adamw_weight_decay=0.1,
    )
    for s in range(20):
        g = torch.Generator().manual_seed(s)
        for a, b in zip(ref_p, our_p):
            a.grad = torch.randn(a.shape, generator=g)
            b.grad = a.grad.clone()
        ref.step()
        ref_adam.step()
        opt.step()
    for i in (0, 1):
        a, b = ref_p[i], our_p[i]
        # torch.optim.Muon is the same algorithm, but its momentum weight 1 − β is float32(0.05)
        # where lowfp rounds 1 − float32(0.95): the float32 directions differ by ~1e-7
        # relative, which flips a few bfloat16 roundings inside Newton–Schulz. Each step's
        # update then differs by at most ~1 bfloat16 ulp (2^-8 relative) of the elements of
        # O (|O| ≤ 1) times lr·sqrt(max(1, rows/cols)), so 20 steps stay within
        # 20 · lr_eff · 2^-8 (observed ~10x below).
        rows, cols = a.shape
        tol = 20 * 0.02 * math.sqrt(max(1, rows / cols)) * 2**-8
        moved = (a - muon_params()[i]).abs().max().item()
        assert moved > 50 * tol  # the comparison is not vacuous
        np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), rtol=0, atol=tol)
    np.testing.assert_allclose(
        our_p[3].detach().numpy(), ref_p[3].detach().numpy(), rtol=0, atol=1e-5
    )


def test_muon_leaves_grad_untouched_and_routes_groups():
    ps = muon_params()
    opt = Muon(
        [
            {"params": ps[:2], "lr": 0.01},
            {"params": [ps[2]], "use_muon": False, "lr": 1e-3, "betas": (0.8, 0.9)},
            {"params": [ps[3]]},
        ],
        adamw_kwargs=dict(exp_avg=lowfp.Dynamic(8), min_quant_size=0),
    )
    groups = [(g["use_muon"], len(g["params"]), g["lr"]) for g in opt.param_groups]
    assert groups == [(True, 2, 0.01), (False, 1, 1e-3), (False, 1, 3e-4)]
    assert opt.adamw.param_groups[0]["betas"] == (0.8, 0.9)
    for p in ps:
        p.grad = torch.ones_like(p)
    opt.step()
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in ps)
    assert "exp_avg.codes" in opt.adamw.state[ps[2]]  # the 3-D tensor went to AdamW, 8-bit
    # an LR scheduler on the one optimizer reaches the AdamW part too
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5**s)
    opt.step()
    sched.step()  # halves every group's lr
    opt.step()
    assert opt.adamw.param_groups[0]["lr"] == pytest.approx(0.5e-3)


def mlp_loss(opt_factory, steps=150):
    """2-layer tanh MLP regressing a random teacher MLP (+ noise); returns the final loss."""
    torch.manual_seed(2)
    x = torch.randn(512, 64)
    teacher = torch.nn.Sequential(
        torch.nn.Linear(64, 128), torch.nn.Tanh(), torch.nn.Linear(128, 16)
    )
    with torch.no_grad():
        y = teacher(x) + 0.01 * torch.randn(512, 16)
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.Tanh(), torch.nn.Linear(128, 16))
    opt = opt_factory(list(model.parameters()))
    for _ in range(steps):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(((model(x) - y) ** 2).mean())


@functools.lru_cache(maxsize=None)
def muon_baselines():
    """(starting loss, fp32 Muon's final loss), computed once."""
    return (
        mlp_loss(lambda p: Muon(p, lr=0.0, adamw_lr=0.0), steps=1),
        mlp_loss(lambda p: Muon(p, lr=0.02, adamw_lr=3e-3)),
    )


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_muon8bit_trains_like_float32(rounding):
    kw = dict(lr=0.02, adamw_lr=3e-3)
    start, base = muon_baselines()
    low = mlp_loss(lambda p: Muon8bit(p, rounding=rounding, **kw))
    assert base < 0.2 * start  # fp32 Muon learns the task
    # Stated tolerance: within 1.25x of fp32's final loss (observed 1.04x nearest, 1.08x
    # stochastic: 8-bit linear codes hold the momentum to 1/254 of each block's absmax, and
    # Newton-Schulz keeps only the direction's singular vectors).
    assert low <= 1.25 * base, (low, base, start)


def test_muon8bit_state_bytes_per_parameter():
    w = torch.nn.Parameter(torch.zeros(256, 1024))
    b = torch.nn.Parameter(torch.zeros(256))
    opt = Muon8bit([w, b])
    w.grad, b.grad = torch.ones_like(w), torch.ones_like(b)
    opt.step()
    adamw = opt.adamw.state_nbytes()
    assert adamw == 256 * 8 + 4  # float32 m and v for the bias, and its step
    per = (opt.state_nbytes() - adamw - 4) / w.numel()  # minus the matrix's step counter
    assert per == pytest.approx(1 + 4 / 2048, abs=0), per
    s = opt.summary()
    assert "Muon (1 matrices): momentum_buffer: Linear(bits=8" in s and "block 2048" in s
    assert f"state bytes: {opt.state_nbytes()}" in s


# ---------------------------------------------------------------- threads and checkpoints


def _sgd8(ps):
    return SGD(
        ps,
        lr=1e-2,
        momentum=0.9,
        momentum_codec=lowfp.Dynamic(8),
        block_size=64,
        rounding="stochastic",
        seed=5,
        min_quant_size=0,
    )


def _muon8(ps):
    return Muon8bit(
        ps,
        lr=0.02,
        weight_decay=0.01,
        block_size=128,
        rounding="stochastic",
        seed=7,
        adamw_kwargs=dict(
            exp_avg=lowfp.Dynamic(8),
            exp_avg_sq=lowfp.Dynamic(8, signed=False),
            rounding="stochastic",
            min_quant_size=0,
        ),
    )


@pytest.mark.parametrize("factory,make", [(_sgd8, params), (_muon8, muon_params)])
def test_thread_count_does_not_change_results(restore_threads, factory, make):
    out = []
    for n in (1, 2):
        lowfp.set_num_threads(n)
        ps = make()
        run_steps(factory(ps), ps, 5)
        out.append(torch.cat([p.detach().reshape(-1) for p in ps]))
    assert torch.equal(out[0], out[1])


@pytest.mark.parametrize(
    "factory,make",
    [
        (_sgd8, params),
        (_muon8, muon_params),
        (lambda ps: SGD(ps, lr=1e-2, momentum=0.9), params),
        (lambda ps: Muon(ps), muon_params),
    ],
)
def test_resume_is_bit_exact_and_weights_only(tmp_path, factory, make):
    a = make()
    oa = factory(a)
    run_steps(oa, a, 10)
    torch.save(
        {"opt": oa.state_dict(), "params": [p.detach().clone() for p in a]}, tmp_path / "ck.pt"
    )
    run_steps(oa, a, 10, start=10)
    ck = torch.load(tmp_path / "ck.pt", weights_only=True)
    b = [torch.nn.Parameter(t) for t in ck["params"]]
    ob = factory(b)
    ob.load_state_dict(ck["opt"])
    run_steps(ob, b, 10, start=10)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert ob.state_nbytes() == oa.state_nbytes()


def test_state_dict_from_another_configuration_is_rejected():
    a = muon_params()
    oa = Muon8bit(a)
    run_steps(oa, a, 2)
    with pytest.raises(ValueError, match="momentum_buffer of parameter 0 .* stores it as float32"):
        Muon(muon_params()).load_state_dict(oa.state_dict())
    s = params()
    osgd = SGD(s, lr=0.1, momentum=0.9)
    run_steps(osgd, s, 1)
    with pytest.raises(
        ValueError,
        match="momentum_buffer of parameter 0 .* was saved as float32, "
        "this optimizer stores it as exmy",
    ):
        SGD(
            params(), lr=0.1, momentum=0.9, momentum_codec="e4m3", min_quant_size=0
        ).load_state_dict(osgd.state_dict())


# ---------------------------------------------------------------- errors


def test_errors():
    p = [torch.nn.Parameter(torch.zeros(10))]
    with pytest.raises(ValueError, match="momentum"):
        SGD(p, momentum=-0.1)
    with pytest.raises(ValueError, match="nesterov"):
        SGD(p, nesterov=True)
    with pytest.raises(ValueError, match="nesterov"):
        SGD(p, momentum=0.9, dampening=0.1, nesterov=True)
    with pytest.raises(ValueError, match="lr"):
        SGD(p, lr=-1)
    with pytest.raises(ValueError, match="weight_decay"):
        SGD(p, weight_decay=-1)
    with pytest.raises(ValueError, match="momentum_codec: expected a format of at most 8"):
        SGD(p, momentum=0.9, momentum_codec="bfloat16")
    with pytest.raises(ValueError, match="block_size"):
        SGD(p, momentum=0.9, block_size=12)
    with pytest.raises(ValueError, match="rounding"):
        SGD(p, rounding="up")
    m = [torch.nn.Parameter(torch.zeros(4, 4))]
    with pytest.raises(ValueError, match="momentum"):
        Muon(m, momentum=1.0)
    with pytest.raises(ValueError, match="ns_steps"):
        Muon(m, ns_steps=-1)
    with pytest.raises(ValueError, match="betas"):
        Muon(m, adamw_betas=(1.0, 0.9))
    with pytest.raises(TypeError, match="adamw_kwargs"):
        Muon(m, adamw_kwargs=dict(lr=1.0))
    for make, shape, bf16 in [
        (lambda q: SGD(q, lr=0.1, momentum=0.9), (10,), True),
        (lambda q: SGD(q, lr=0.1), (10,), True),
        (lambda q: Muon(q), (4, 4), True),
    ]:
        q = [torch.nn.Parameter(torch.zeros(shape))]
        opt = make(q)
        q[0].grad = torch.zeros(shape).to_sparse()
        with pytest.raises(ValueError, match="sparse"):
            opt.step()
        q = [torch.nn.Parameter(torch.zeros(shape, dtype=torch.float64))]
        q[0].grad = torch.zeros(shape, dtype=torch.float64)
        with pytest.raises(TypeError, match="float32"):
            make(q).step()
        if not bf16:  # every optimizer here takes bfloat16 parameters
            q = [torch.nn.Parameter(torch.zeros(shape, dtype=torch.bfloat16))]
            q[0].grad = torch.zeros(shape, dtype=torch.bfloat16)
            with pytest.raises(TypeError, match="float32"):
                make(q).step()
    assert isinstance(Muon(m + [torch.nn.Parameter(torch.zeros(3))]).adamw, AdamW)


def test_sgd_bfloat16_parameters_and_nonfinite_gradients():
    # momentum SGD moves each weight by lr·g/(1-momentum) ≈ 1e-3 per step at steady state,
    # below half a bfloat16 ulp at 1.5 (2^-8): nearest never moves, stochastic moves on average
    moved = {}
    for rounding in ("nearest", "stochastic"):
        p = torch.nn.Parameter(torch.full((8192,), 1.5, dtype=torch.bfloat16))
        opt = SGD(
            [p],
            lr=1e-4,
            momentum=0.9,
            momentum_codec=lowfp.Dynamic(8),
            param_rounding=rounding,
            seed=3,
        )
        for _ in range(100):
            p.grad = torch.ones_like(p)
            opt.step()
        moved[rounding] = float((1.5 - p.detach().float()).mean())
    assert moved["nearest"] == 0.0
    # exact float32 trajectory: sum over steps of lr * (1 - 0.9^t) / (1 - 0.9) ≈ 0.091; the mean
    # over 8192 weights of unbiased rounding errors (sd <= 2^-8 per step) is within 0.01
    assert abs(moved["stochastic"] - 0.0910) < 0.01, moved
    p = torch.nn.Parameter(torch.ones(64))
    opt = SGD([p], lr=0.1, momentum=0.9)
    p.grad = torch.full((64,), float("nan"))
    with pytest.warns(RuntimeWarning, match="step was skipped"):
        opt.step()
    assert opt.skipped_steps == 1 and torch.all(p == 1)
    with pytest.raises(ValueError, match="nonfinite"):
        SGD([p], lr=0.1, nonfinite="ignore")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_muon_16bit_matrices_round_the_float32_step(dtype):
    # param_rounding="nearest": each step is the float32 Muon step on the widened weights,
    # rounded to nearest — bit for bit (the same float32 operations on the same inputs).
    torch.manual_seed(0)
    w0 = torch.randn(32, 64).to(dtype)
    ours = torch.nn.Parameter(w0.clone())
    ref = torch.nn.Parameter(w0.float())
    opt = Muon([ours], lr=0.02, weight_decay=0.1, param_rounding="nearest")
    opt_ref = Muon([ref], lr=0.02, weight_decay=0.1)
    for s in range(5):
        g = torch.randn(32, 64, generator=torch.Generator().manual_seed(s)).to(dtype)
        ours.grad, ref.grad = g, g.float()
        opt.step()
        opt_ref.step()
        with torch.no_grad():
            ref.copy_(ref.to(dtype).float())
        assert torch.equal(ours.detach().float(), ref.detach())


def test_muon_16bit_small_updates_move_only_stochastically():
    # A fixed gradient, no weight decay: Muon's update O does not depend on the weights, so the
    # float32 run's displacement D = w_100 - w_0 is also the expected displacement of the
    # stochastically rounded bfloat16 run. Each step moves a weight by lr·sqrt(1)·|O_ij| ≤
    # 1e-3·1.2 (NS output entries stay below ~1.2), below half a bfloat16 ulp at 1.5 (2^-8):
    # nearest rounding never moves a weight.
    moved = {}
    g = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    for rounding in ("nearest", "stochastic", "float32"):
        dtype = torch.float32 if rounding == "float32" else torch.bfloat16
        p = torch.nn.Parameter(torch.full((64, 64), 1.5, dtype=dtype))
        opt = Muon(
            [p], lr=1e-3, param_rounding="nearest" if rounding == "float32" else rounding, seed=5
        )
        for _ in range(100):
            p.grad = g.to(dtype)
            opt.step()
        moved[rounding] = p.detach().double() - 1.5
    assert torch.all(moved["nearest"] == 0)
    d, e = moved["float32"], moved["stochastic"]
    # Regression slope of e on d: 1 when rounding is unbiased. Each step's rounding error has
    # mean 0 and sd <= ulp/2 = 2^-8 (weights stay in [1, 2)); over 100 steps sd <= 2^-8·10 per
    # weight, so the slope's sd is <= 0.039 / sqrt(sum d^2) (~0.05 here); allow 5 sd.
    slope = float((e * d).sum() / (d * d).sum())
    sd = 2**-8 * 10 / float((d * d).sum().sqrt())
    assert abs(slope - 1) < 5 * sd, (slope, sd)
    assert sd < 0.1  # the test has power: d is large enough to see a biased or frozen run


@pytest.mark.parametrize("where", ["matrix", "bias"])
def test_muon_nonfinite_gradients_skip_or_raise(where):
    ps = muon_params()
    opt = Muon8bit(ps, lr=0.02)
    run_steps(opt, ps, 2)
    before = [p.detach().clone() for p in ps]
    sd = opt.state_dict()
    for p in ps:
        p.grad = torch.ones_like(p)
    ps[0 if where == "matrix" else 3].grad[0] = float("inf")
    with pytest.warns(RuntimeWarning, match="step was skipped"):
        opt.step()
    assert opt.skipped_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(before, ps))
    after = opt.state_dict()
    for i, st in sd["state"].items():
        for k, t in st.items():
            assert (
                torch.equal(t, after["state"][i][k])
                if torch.is_tensor(t)
                else t == after["state"][i][k]
            )
    strict = Muon(ps, lr=0.02, nonfinite="error")
    with pytest.raises(ValueError, match="NaN or inf"):
        strict.step()
    with pytest.raises(ValueError, match="nonfinite"):
        Muon(ps, nonfinite="ignore")
