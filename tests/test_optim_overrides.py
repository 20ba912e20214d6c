"""Per-parameter storage overrides through param groups (AdamW, SGD, Muon)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import lowfp  # noqa: E402
import lowfp.optim as lo  # noqa: E402
from conftest import run_steps  # noqa: E402


def params(seed=0):
    torch.manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(6000)), torch.nn.Parameter(torch.randn(64, 128))]


def test_group_codecs_override_the_defaults_bit_for_bit():
    a, b = params()
    mixed = lo.AdamW8bit(
        [{"params": [a], "exp_avg": None, "exp_avg_sq": None}, {"params": [b]}], lr=1e-2
    )
    run_steps(mixed, [a, b], 20)
    assert mixed.state[a]["exp_avg"].dtype == torch.float32
    assert "exp_avg.codes" not in mixed.state[a]
    assert mixed.state[b]["exp_avg.codes"].dtype == torch.uint8
    # Each group steps exactly as a whole optimizer with that group's storage would (nearest
    # rounding: no stream depends on the parameter's position; same gradients for both).
    a2, b2 = params()
    run_steps(lo.AdamW([a2], lr=1e-2), [a2, b2], 20)
    a3, b3 = params()
    run_steps(lo.AdamW8bit([b3], lr=1e-2), [a3, b3], 20)
    assert torch.equal(a, a2) and torch.equal(b, b3)


def test_group_block_size_and_min_quant_size():
    a, b = params()
    opt = lo.AdamW4bit(
        [{"params": [a], "block_size": 64}, {"params": [b], "min_quant_size": 10**6}]
    )
    run_steps(opt, [a, b], 2)
    assert opt.state[a]["exp_avg.scales"].numel() == -(-a.numel() // 64)  # 94 blocks of 64
    assert opt.state[a]["exp_avg.codes"].numel() == a.numel() // 2  # 4 bits each
    assert "exp_avg" in opt.state[b] and opt.state[b]["exp_avg"].dtype == torch.float32
    assert "param group 0 (1 tensors): block_size=64" in opt.summary()


def test_overrides_survive_a_weights_only_checkpoint(tmp_path):
    def make(ps):
        return lo.AdamW(
            [
                {"params": [ps[0]], "exp_avg": lowfp.Linear(4), "rounding": "stochastic"},
                {"params": [ps[1]], "exp_avg_sq": "e4m3", "block_size": 128},
            ],
            lr=1e-2,
            exp_avg=lowfp.Dynamic(8),
            exp_avg_sq=lowfp.Dynamic(8, False),
        )

    ps = params()
    opt = make(ps)
    run_steps(opt, ps, 5)
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    sd = torch.load(tmp_path / "opt.pt", weights_only=True)
    assert sd["param_groups"][0]["exp_avg"] == {
        "codec": "linear",
        "bits": 4,
        "signed": True,
        "zero": True,
    }
    ps2 = [p.detach().clone().requires_grad_() for p in ps]
    resumed = make(ps2)
    resumed.load_state_dict(sd)
    assert isinstance(resumed.param_groups[0]["exp_avg"], lowfp.Linear)
    run_steps(opt, ps, 5, start=5)
    run_steps(resumed, ps2, 5, start=5)
    for p, q in zip(ps, ps2):
        assert torch.equal(p, q)


def test_a_checkpoint_with_other_overrides_is_rejected_before_loading():
    ps = params()
    opt = lo.AdamW8bit([{"params": [ps[0]], "block_size": 128}, {"params": [ps[1]]}])
    run_steps(opt, ps, 1)
    sd = opt.state_dict()
    other = lo.AdamW8bit([{"params": [ps[0]], "block_size": 64}, {"params": [ps[1]]}])
    with pytest.raises(ValueError, match="param group 0 was saved with block_size=128"):
        other.load_state_dict(sd)
    assert not other.state and other.param_groups[0]["block_size"] == 64
    plain = lo.AdamW8bit(
        [{"params": [ps[0]], "block_size": 128}, {"params": [ps[1]], "exp_avg": None}]
    )
    with pytest.raises(ValueError, match="param group 1 .* exp_avg=None"):
        plain.load_state_dict(sd)


@pytest.mark.parametrize(
    "group,arg",
    [
        ({"block_size": 12}, "block_size"),
        ({"exp_avg": "float32"}, "exp_avg"),
        ({"exp_avg_sq": 3}, "exp_avg_sq"),
        ({"rounding": "up"}, "rounding"),
        ({"min_quant_size": -1}, "min_quant_size"),
    ],
)
def test_bad_overrides_name_the_key(group, arg):
    with pytest.raises((ValueError, TypeError), match=arg):
        lo.AdamW([{"params": [torch.nn.Parameter(torch.zeros(8))], **group}])


def test_sgd_and_muon_momentum_overrides():
    a, b = params()
    sgd = lo.SGD(
        [{"params": [a], "momentum_codec": None}, {"params": [b]}],
        lr=0.01,
        momentum=0.9,
        momentum_codec=lowfp.Dynamic(8),
        min_quant_size=0,
    )
    run_steps(sgd, [a, b], 3)
    assert "momentum_buffer" in sgd.state[a] and "momentum_buffer.codes" in sgd.state[b]
    m = torch.nn.Parameter(torch.randn(64, 128))
    muon = lo.Muon8bit([{"params": [m], "block_size": 256}])
    run_steps(muon, [m], 2)
    assert muon.state[m]["momentum_buffer.scales"].numel() == m.numel() // 256
    with pytest.raises(ValueError, match="momentum_codec"):
        lo.Muon([{"params": [m], "momentum_codec": "bfloat16"}])
    np.testing.assert_array_equal(muon.state_dict()["param_groups"][0]["block_size"], 256)
