"""lowfp.stats: outlier ratios, Pearson kurtosis, per-layer error isolated vs accumulated."""

import math

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import lowfp  # noqa: E402
from lowfp import qat, stats  # noqa: E402


def test_ratios_by_hand():
    w = torch.tensor([1.0, -1.0, 1.0, 1.0, -5.0])
    assert stats.max_to_mean(w) == 5 / (9 / 5)
    assert stats.max_to_median(w) == 5.0
    # even count: the median is the mean of the two middle |w| (1 and 3)
    assert stats.max_to_median(torch.tensor([0.5, -1.0, 3.0, 8.0])) == 8 / 2.0
    assert math.isnan(stats.max_to_mean(torch.zeros(3)))
    assert stats.max_to_median(torch.tensor([0.0, 0.0, 0.0, 2.0])) == math.inf


def test_kurtosis_is_pearson():
    # [0, 0, 0, 0, 1]: mean 0.2; m2 = (4 * 0.04 + 0.64) / 5 = 0.16;
    # m4 = (4 * 0.0016 + 0.4096) / 5 = 0.0832; m4 / m2^2 = 3.25
    w = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0])
    assert stats.kurtosis(w) == pytest.approx(3.25, rel=1e-12)
    assert stats.kurtosis(w, excess=True) == pytest.approx(0.25, rel=1e-12)
    # sample kurtosis of n Gaussian values has sd ~ sqrt(24 / n) = 0.0069 at n = 5e5;
    # uniform: 1.8 with sd ~ sqrt((m8 - m4^2) / n) / m2^2 < 0.002; tolerance 5 sd
    g = torch.Generator().manual_seed(0)
    n = 500_000
    assert abs(stats.kurtosis(torch.randn(n, generator=g)) - 3.0) < 5 * math.sqrt(24 / n)
    assert abs(stats.kurtosis(torch.rand(n, generator=g)) - 1.8) < 0.01


def test_bad_input():
    with pytest.raises(TypeError, match="w"):
        stats.kurtosis(torch.arange(3))
    with pytest.raises(ValueError, match="non-empty"):
        stats.max_to_mean(torch.zeros(0))


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(32, 64),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(64, 64),
        nn.ReLU(),
        nn.Linear(64, 8),
    )


def test_weight_stats_table():
    net = _mlp()
    t = stats.weight_stats(net)
    assert t.column("name") == ["0", "3", "5"]
    assert t[1]["kurtosis"] == stats.kurtosis(net[3].weight)
    assert t[2]["max_to_median"] == stats.max_to_median(net[5].weight)


def test_layer_errors_by_hand_and_model_left_as_it_was():
    net = _mlp()
    net.train()
    x = torch.randn(16, 32)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    t = stats.layer_errors(net, x, "mxfp4")
    assert net.training and all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    assert t.column("name") == ["0", "3", "5"]
    # the first layer sees the exact input either way: isolated == accumulated
    assert t[0]["isolated"] == t[0]["accumulated"] > 0
    # by hand, layer 3 (input: relu of layer 0, exact / quantized)
    q = lambda w: lowfp.quantize_blockwise(w.detach(), "mxfp4").dequantize()  # noqa: E731
    with torch.no_grad():
        h = torch.relu(net[0](x))
        hq = torch.relu(nn.functional.linear(x, q(net[0].weight), net[0].bias))
        y = net[3](h)
        iso = nn.functional.linear(h, q(net[3].weight), net[3].bias)
        acc = nn.functional.linear(hq, q(net[3].weight), net[3].bias)
    rel = lambda a, b: float((a.double() - b.double()).norm() / b.double().norm())  # noqa: E731
    assert t[1]["isolated"] == pytest.approx(rel(iso, y), rel=1e-6)
    assert t[1]["accumulated"] == pytest.approx(rel(acc, y), rel=1e-6)
    assert t[1]["accumulated"] != t[1]["isolated"]
    assert t.output_error > 0 and t[2]["accumulated"] == pytest.approx(t.output_error, rel=1e-12)


def test_layer_errors_filter_and_batch_kinds():
    net = _mlp()
    x = torch.randn(4, 32)
    t = stats.layer_errors(net, (x,), qat.Quantizer("e4m3"), filter=lambda m, n: n == "5")
    assert t.column("name") == ["5"]
    assert t[0]["isolated"] == t[0]["accumulated"] == pytest.approx(t.output_error, rel=1e-12)
    assert t[0]["output_isolated"] == pytest.approx(t.output_error, rel=1e-12)

    class Kw(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(32, 4)

        def forward(self, inputs):
            return (self.lin(inputs), None)

    t2 = stats.layer_errors(Kw(), {"inputs": x}, "e2m1")
    assert t2[0]["isolated"] == pytest.approx(t2.output_error, rel=1e-12)
