"""lowfp.optim: parity with torch.optim.AdamW, low-bit states, checkpoints, errors."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import lowfp  # noqa: E402
import lowfp.optim as lo  # noqa: E402
from conftest import run_steps  # noqa: E402


def params(seed=0):
    torch.manual_seed(seed)
    return [
        torch.nn.Parameter(torch.randn(6000)),
        torch.nn.Parameter(torch.randn(30, 7)),
        torch.nn.Parameter(torch.randn(64, 128)),
    ]


@pytest.mark.parametrize("decoupled,wd", [(True, 0.1), (False, 0.05), (True, 0.0)])
def test_float32_states_match_torch(decoupled, wd):
    ref_p, our_p = params(), params()
    ref_cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    ref = ref_cls(ref_p, lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=wd, foreach=False)
    ours = lo.AdamW(
        our_p,
        lr=1e-2,
        betas=(0.9, 0.99),
        eps=1e-8,
        weight_decay=wd,
        decoupled_weight_decay=decoupled,
    )
    run_steps(ref, ref_p, 200)
    run_steps(ours, our_p, 200)
    for a, b in zip(ref_p, our_p):
        # Same float32 operations in the same order; torch's CPU kernels may fuse some
        # multiply-adds, so the results agree to float32 rounding accumulated over 200 steps:
        # |Δp| ≤ 200 steps · lr · (a few ulps of the unit-size update) ≈ 1e-5.
        np.testing.assert_allclose(b.detach().numpy(), a.detach().numpy(), rtol=0, atol=1e-5)


def quadratic_loss(opt_factory, steps=300):
    """Noisy linear regression; returns the final loss."""
    torch.manual_seed(1)
    w_true = torch.randn(4096)
    w = torch.nn.Parameter(torch.zeros(4096))
    opt = opt_factory([w])
    x = torch.randn(256, 4096)
    y = x @ w_true
    for s in range(steps):
        i = torch.randint(0, 256, (32,), generator=torch.Generator().manual_seed(s))
        opt.zero_grad()
        loss = ((x[i] @ w - y[i]) ** 2).mean()
        loss.backward()
        opt.step()
    return float(((x @ w.detach() - y) ** 2).mean())


def test_low_bit_states_train_like_float32():
    base = quadratic_loss(lambda p: lo.AdamW(p, lr=0.05, weight_decay=0))
    start = quadratic_loss(lambda p: lo.AdamW(p, lr=0.0))
    results = {
        "8bit": quadratic_loss(lambda p: lo.AdamW8bit(p, lr=0.05, weight_decay=0)),
        "4bit": quadratic_loss(lambda p: lo.AdamW4bit(p, lr=0.05, weight_decay=0)),
        "fp8": quadratic_loss(lambda p: lo.AdamWFp8(p, lr=0.05, weight_decay=0)),
    }
    for name, loss in results.items():
        # Each must make most of fp32's progress: stated tolerance, loss within 2x of fp32's
        # final loss plus 1% of the starting loss.
        assert loss <= 2 * base + 0.01 * start, (name, loss, base, start)


def test_state_bytes_per_parameter():
    p = [torch.nn.Parameter(torch.zeros(1 << 16))]
    for factory, want in [
        (lo.AdamW8bit, 2 + 2 * 4 / 256),
        (lo.AdamW4bit, 1 + 2 * 4 / 128),
        (lambda q: lo.AdamW(q), 8.0),
    ]:
        opt = factory(p)
        p[0].grad = torch.ones_like(p[0])
        opt.step()
        per = (opt.state_nbytes() - 4) / p[0].numel()  # minus the step counter
        assert per == pytest.approx(want), per


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_resume_is_bit_exact_and_weights_only(tmp_path, rounding):
    def make(ps):
        return lo.AdamW(
            ps,
            lr=1e-2,
            exp_avg=lowfp.Linear(4),
            exp_avg_sq=lowfp.Log(3, quantile=0.05),
            block_size=64,
            rounding=rounding,
            seed=3,
        )

    a = params()
    oa = make(a)
    run_steps(oa, a, 20)
    torch.save(
        {"opt": oa.state_dict(), "params": [p.detach().clone() for p in a]}, tmp_path / "ck.pt"
    )
    run_steps(oa, a, 10, start=20)
    ck = torch.load(tmp_path / "ck.pt", weights_only=True)
    b = [torch.nn.Parameter(t) for t in ck["params"]]
    ob = make(b)
    ob.load_state_dict(ck["opt"])
    run_steps(ob, b, 10, start=20)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_state_dict_from_another_configuration_is_rejected():
    a = params()
    oa = lo.AdamW8bit(a)
    run_steps(oa, a, 2)
    ob = lo.AdamW4bit(params())
    with pytest.raises(
        ValueError,
        match=r"exp_avg of parameter 0 \(shape \(6000,\)\) was "
        r"saved as dynamic\(bits=8, signed=True\) in blocks of 256, this "
        r"optimizer stores it as dynamic\(bits=4, signed=True\) in blocks of 128",
    ):
        ob.load_state_dict(oa.state_dict())
    oc = lo.AdamW(params())
    with pytest.raises(
        ValueError, match="exp_avg of parameter 0 .* this optimizer stores it as float32"
    ):
        oc.load_state_dict(oa.state_dict())


def test_thread_count_does_not_change_results():
    out = []
    for n in (1, 2):
        lowfp.set_num_threads(n)
        ps = params()
        run_steps(lo.AdamW8bit(ps, rounding="stochastic", seed=1), ps, 5)
        out.append(torch.cat([p.detach().reshape(-1) for p in ps]))
    lowfp.set_num_threads(0)
    assert torch.equal(out[0], out[1])


def test_errors():
    p = [torch.nn.Parameter(torch.zeros(10))]
    with pytest.raises(ValueError, match="betas"):
        lo.AdamW(p, betas=(1.0, 0.9))
    with pytest.raises(ValueError, match="lr"):
        lo.AdamW(p, lr=-1)
    with pytest.raises(ValueError, match="block_size"):
        lo.AdamW(p, block_size=12)
    with pytest.raises(ValueError, match="unknown format"):
        lo.AdamW(p, exp_avg="e9m9x")
    with pytest.raises(ValueError, match="exp_avg_sq: expected a format of at most 8 bits"):
        lo.AdamW(p, exp_avg_sq="bfloat16")
    with pytest.raises(TypeError, match="exp_avg"):
        lo.AdamW(p, exp_avg=3)
    with pytest.raises(ValueError, match="rounding"):
        lo.AdamW(p, rounding="up")
    opt = lo.AdamW(p)
    p[0].grad = torch.zeros(10, dtype=torch.float32).to_sparse()
    with pytest.raises(ValueError, match="sparse"):
        opt.step()
    q = [torch.nn.Parameter(torch.zeros(10, dtype=torch.float64))]
    q[0].grad = torch.zeros(10, dtype=torch.float64)
    with pytest.raises(TypeError, match="float32"):
        lo.AdamW(q).step()


def _second_moment(opt, p):
    return opt.dequantized_state(p, "exp_avg_sq")


@pytest.mark.parametrize("bits", [2, 3])
def test_solo_second_moment_tracks_where_linear_freezes(bits):
    """Signal swamping on the EMA itself: v ← 0.999 v + 0.001 g². With gradients spanning
    three decades in a block, linear codes round most small entries of v to 0 and they stay
    there; SOLO's log codes with stochastic rounding keep them moving."""
    torch.manual_seed(0)
    g = torch.exp(torch.empty(8192).uniform_(-7, 0))  # |g| from 1e-3 to 1
    exact = lo.AdamW([torch.nn.Parameter(torch.zeros(8192))], lr=0.0)
    linear = lo.AdamW(
        [torch.nn.Parameter(torch.zeros(8192))],
        lr=0.0,
        block_size=128,
        exp_avg_sq=lowfp.Linear(bits, signed=False),
    )
    solo = lo.SOLO([torch.nn.Parameter(torch.zeros(8192))], bits=bits, lr=0.0, seed=1)
    for _ in range(100):
        for opt in (exact, linear, solo):
            p = opt.param_groups[0]["params"][0]
            p.grad = g.clone()
            opt.step()
    v = _second_moment(exact, exact.param_groups[0]["params"][0])
    small = g < g.median()  # the half of the entries whose updates are swamped
    for name, opt in (("linear", linear), ("solo", solo)):
        q = _second_moment(opt, opt.param_groups[0]["params"][0])
        frozen = float((q == 0).float().mean())
        err = float((q[small].mean() - v[small].mean()).abs() / v[small].mean())
        if name == "linear":
            # nearest rounding never lifts a small entry off zero: frozen, mean lost entirely
            assert frozen > 0.5 and err > 0.9, (frozen, err)
        else:
            # stochastic rounding is unbiased, so the mean of the 4096 small entries tracks
            # the exact EMA (measured: 2-4% off); 15% leaves room for the sampling noise of
            # a 2-bit code whose levels are up to 1/alpha apart
            assert frozen < 0.1 and err < 0.15, (frozen, err)


def test_solo_trains_where_linear_2bit_v_does_not():
    fp32 = quadratic_loss(lambda p: lo.AdamW(p, lr=0.05, weight_decay=0))
    solo = quadratic_loss(lambda p: lo.SOLO(p, bits=2, lr=0.05, weight_decay=0))
    naive = quadratic_loss(
        lambda p: lo.AdamW(
            p,
            lr=0.05,
            weight_decay=0,
            block_size=128,
            exp_avg=lowfp.Linear(2),
            exp_avg_sq=lowfp.Linear(2, signed=False),
        )
    )
    assert solo < naive, (solo, naive, fp32)


def test_solo_packs_3_bits():
    p = [torch.nn.Parameter(torch.zeros(1 << 16))]
    opt = lo.SOLO(p, bits=3)
    p[0].grad = torch.ones_like(p[0])
    opt.step()
    per = (opt.state_nbytes() - 4) / p[0].numel()
    assert per == pytest.approx(2 * 3 / 8 + 2 * 4 / 128 + 4 / 128)  # codes, scales, bases


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_gradients_skip_or_raise(bad):
    ps = params()
    opt = lo.AdamW8bit(ps)
    run_steps(opt, ps, 3)
    before = [p.detach().clone() for p in ps]
    codes = opt.state[ps[0]]["exp_avg.codes"].clone()
    for p in ps:
        p.grad = torch.ones_like(p)
    ps[0].grad[5] = bad
    with pytest.warns(RuntimeWarning, match="step was skipped"):
        opt.step()
    assert opt.skipped_steps == 1
    assert all(torch.equal(a, b) for a, b in zip(before, ps))
    assert torch.equal(codes, opt.state[ps[0]]["exp_avg.codes"])
    strict = lo.AdamW8bit(ps, nonfinite="error")
    with pytest.raises(ValueError, match="grad: a gradient holds NaN or inf"):
        strict.step()


def test_export_to_torch_and_import_back():
    # Linear(8) holds both ±1 and the unsigned dynamic map holds 1, so every block's
    # amax decodes exactly and re-quantization reproduces the codes. (The signed dynamic map
    # has 1.0 but not -1.0: a block whose amax is negative would get a slightly smaller scale.)
    ps = params()

    def make():
        return lo.AdamW(ps, lr=1e-2, exp_avg=lowfp.Linear(8), exp_avg_sq=lowfp.Dynamic(8, False))

    ours = make()
    run_steps(ours, ps, 10)
    sd = ours.to_torch_state_dict()
    ref = torch.optim.AdamW(ps, lr=1e-2)
    ref.load_state_dict(sd)  # a plain torch optimizer takes it
    for p in ps:
        assert torch.equal(ref.state[p]["exp_avg"], ours.dequantized_state(p, "exp_avg"))
    again = make()
    again.load_torch_state_dict(sd)
    for p in ps:
        for k, t in ours.state[p].items():
            assert torch.equal(t, again.state[p][k]), k  # re-quantizing decoded states is exact


def test_import_bitsandbytes_8bit_states():
    bnb = pytest.importorskip("bitsandbytes")
    ps = params()
    theirs = bnb.optim.AdamW8bit(ps, lr=1e-2)
    run_steps(theirs, ps, 5)
    ours = lo.AdamW8bit(ps, lr=1e-2)
    ours.load_bitsandbytes(theirs)
    for p in ps:
        src = theirs.state[p]
        for k, name in ((1, "exp_avg"), (2, "exp_avg_sq")):
            got = ours.dequantized_state(p, name).reshape(-1)
            if src[f"state{k}"].dtype != torch.uint8:
                want = src[f"state{k}"].reshape(-1)
            else:  # bitsandbytes' own decoding: qmap[code] * absmax of the block of 256
                blocks = torch.arange(p.numel()) // 256
                codes = src[f"state{k}"].long().reshape(-1)
                want = src[f"qmap{k}"][codes] * src[f"absmax{k}"][blocks]
            assert torch.equal(got, want), name
    run_steps(ours, ps, 3, start=5)  # and training goes on from there
    with pytest.raises(ValueError, match="bnb_optimizer: needs"):
        lo.AdamW4bit(ps).load_bitsandbytes(theirs)


@pytest.mark.parametrize("param_rounding", ["nearest", "stochastic", "stochastic16"])
@pytest.mark.parametrize("dtype,lr", [(torch.bfloat16, 1e-3), (torch.float16, 2e-4)])
def test_16bit_parameters_take_small_updates_stochastically(param_rounding, dtype, lr):
    """Adam moves each weight by about lr per step. At 1.5 an ulp is 2^-7 (bfloat16) or
    2^-10 (float16), so updates of lr = 1e-3 (resp. 2e-4) are below half an ulp: nearest
    rounding never moves the weights, stochastic rounding moves them by 100·lr on average."""
    p = torch.nn.Parameter(torch.full((8192,), 1.5, dtype=dtype))
    opt = lo.AdamW8bit([p], lr=lr, weight_decay=0.0, param_rounding=param_rounding, seed=2)
    for _ in range(100):
        p.grad = torch.ones_like(p)
        opt.step()
    moved = 1.5 - p.detach().float()
    if param_rounding == "nearest":
        assert torch.all(moved == 0)
    else:
        # Each step's rounding adds an independent error of sd <= ulp/2; over 100 steps and
        # 8192 weights the mean's sd is (ulp/2)·sqrt(100/8192): 4e-4 (bf16), 5e-5 (fp16).
        # 10% of the expected move is > 20 sd in both cases.
        assert abs(float(moved.mean()) - 100 * lr) < 0.1 * 100 * lr, float(moved.mean())
        assert opt.state[p]["exp_avg.codes"].dtype == torch.uint8


def test_bfloat16_resume_is_bit_exact(tmp_path):
    def make(ps):
        return lo.AdamW4bit(ps, lr=1e-2, seed=5)

    a = [torch.nn.Parameter(t.to(torch.bfloat16)) for t in params()]
    oa = make(a)
    run_steps(oa, a, 5)
    torch.save({"opt": oa.state_dict(), "p": [p.detach().clone() for p in a]}, tmp_path / "c.pt")
    run_steps(oa, a, 5, start=5)
    ck = torch.load(tmp_path / "c.pt", weights_only=True)
    b = [torch.nn.Parameter(t) for t in ck["p"]]
    ob = make(b)
    ob.load_state_dict(ck["opt"])
    assert ob.state[b[1]]["exp_avg"].dtype == torch.float32  # not cast to bfloat16
    run_steps(ob, b, 5, start=5)
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("preset", [lo.SOLO, lo.AdamW8bit])
def test_shards_with_offsets_draw_the_whole_tensors_bits(preset):
    # A parameter stepped as two block-aligned shards, each passed with its offset in the
    # whole tensor, leaves the same packed states and weights as the whole tensor, bit for bit
    # (stochastic rounding of the states and of bfloat16 weights keyed by the global index).
    from lowfp import _core
    from lowfp.optim.base import flat as _flat

    torch.manual_seed(0)
    n, cut = 8192, 3072  # the cut is a multiple of every block size used (128, 256)
    w = torch.randn(n).to(torch.bfloat16)
    whole = torch.nn.Parameter(w.clone())
    parts = [torch.nn.Parameter(w[:cut].clone()), torch.nn.Parameter(w[cut:].clone())]
    kw = dict(lr=1e-2, rounding="stochastic", min_quant_size=0, seed=3)
    opt_whole, opt_parts = preset([whole], **kw), preset(parts, **kw)
    for s in range(3):
        g = torch.randn(n, generator=torch.Generator().manual_seed(s)).to(torch.bfloat16)
        whole.grad, parts[0].grad, parts[1].grad = g, g[:cut].clone(), g[cut:].clone()
        opt_whole.step()
        # the shards, by hand: the whole tensor's stream (its index 1) and each shard's offset
        group = opt_parts.param_groups[0]
        b1, b2 = group["betas"]
        for p in parts:
            if not opt_parts.state.get(p):
                opt_parts.state[p].update(opt_parts._init_state(p, group))
        t = s + 1

        def state(p, name, group=group):
            st = opt_parts.state[p]
            return (
                opt_parts._spec(name, group),
                *(_flat(st[f"{name}.{k}"]) for k in ("codes", "scales", "alphas")),
            )

        scalars = (
            1 - kw["lr"] * group["weight_decay"],
            0.0,
            1 - b1,
            b2,
            1 - b2,
            group["eps"],
            kw["lr"] / (1 - b1**t),
            math.sqrt(1 - b2**t),
        )
        stream = (t << 32) | (1 << 2)
        entries = [
            (
                _flat(p),
                _flat(p.grad),
                state(p, "exp_avg"),
                state(p, "exp_avg_sq"),
                scalars,
                (stream, stream | 1),
                stream | 2,
                "bfloat16",
            )
            for p in parts
        ]
        with torch.no_grad():
            _core.adamw_step_group(
                entries,
                opt_parts._opt(group, "block_size"),
                kw["seed"],
                "stochastic",
                offsets=[0, cut],
            )
    assert torch.equal(whole.detach(), torch.cat([p.detach() for p in parts]))
    for k in (
        "exp_avg.codes",
        "exp_avg.scales",
        "exp_avg_sq.codes",
        "exp_avg_sq.scales",
        "exp_avg_sq.alphas",
    ):
        joined = torch.cat([opt_parts.state[p][k] for p in parts])
        assert torch.equal(opt_whole.state[whole][k], joined), k
    with pytest.raises(ValueError, match="offsets: expected one per entry"):
        _core.adamw_step_group(
            entries, opt_parts._opt(group, "block_size"), 0, "stochastic", offsets=[0]
        )
