"""lowfp.optim: parity with torch.optim.AdamW, low-bit states, checkpoints, errors."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import lowfp  # noqa: E402
import lowfp.optim as lo  # noqa: E402


def params(seed=0):
    torch.manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(6000)), torch.nn.Parameter(torch.randn(30, 7)),
            torch.nn.Parameter(torch.randn(64, 128))]


def run(opt, ps, steps, start=0):
    for s in range(start, start + steps):
        g = torch.Generator().manual_seed(s)
        for p in ps:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()


@pytest.mark.parametrize("decoupled,wd", [(True, 0.1), (False, 0.05), (True, 0.0)])
def test_float32_states_match_torch(decoupled, wd):
    ref_p, our_p = params(), params()
    ref_cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    ref = ref_cls(ref_p, lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=wd, foreach=False)
    ours = lo.AdamW(our_p, lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=wd,
                    decoupled=decoupled)
    run(ref, ref_p, 200)
    run(ours, our_p, 200)
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
    for factory, want in [(lo.AdamW8bit, 2 + 2 * 4 / 256), (lo.AdamW4bit, 1 + 2 * 4 / 128),
                          (lambda q: lo.AdamW(q), 8.0)]:
        opt = factory(p)
        p[0].grad = torch.ones_like(p[0])
        opt.step()
        per = (opt.state_nbytes() - 4) / p[0].numel()  # minus the step counter
        assert per == pytest.approx(want), per


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_resume_is_bit_exact_and_weights_only(tmp_path, rounding):
    def make(ps):
        return lo.AdamW(ps, lr=1e-2, exp_avg=lowfp.Linear(4),
                        exp_avg_sq=lowfp.Log(3, quantile=0.05), block_size=64,
                        rounding=rounding, seed=3)
    a = params()
    oa = make(a)
    run(oa, a, 20)
    torch.save({"opt": oa.state_dict(), "params": [p.detach().clone() for p in a]},
               tmp_path / "ck.pt")
    run(oa, a, 10, start=20)
    ck = torch.load(tmp_path / "ck.pt", weights_only=True)
    b = [torch.nn.Parameter(t) for t in ck["params"]]
    ob = make(b)
    ob.load_state_dict(ck["opt"])
    run(ob, b, 10, start=20)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_state_dict_from_another_configuration_is_rejected():
    a = params()
    oa = lo.AdamW8bit(a)
    run(oa, a, 2)
    ob = lo.AdamW4bit(params())
    with pytest.raises(ValueError, match="state_dict: state 'exp_avg.codes'"):
        ob.load_state_dict(oa.state_dict())
    oc = lo.AdamW(params())
    with pytest.raises(ValueError, match="state_dict: state 'exp_avg'"):
        oc.load_state_dict(oa.state_dict())


def test_thread_count_does_not_change_results():
    out = []
    for n in (1, 2):
        lowfp.set_num_threads(n)
        ps = params()
        run(lo.AdamW8bit(ps, rounding="stochastic", seed=1), ps, 5)
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
