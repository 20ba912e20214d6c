"""lowfp.qat: fake quantization (values exact, clipped STE), prepare/unprepare, PTQ."""

import copy
import math
import pathlib
import re

import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import lowfp  # noqa: E402
from lowfp import qat  # noqa: E402


def _x(shape=(6, 64), scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * scale


def _bits(t):
    return t.contiguous().view(torch.int32) if t.dtype == torch.float32 else t.view(torch.int16)


@pytest.mark.parametrize("fmt", ["e4m3", "e5m2", "e2m1", "e3m2", "bfloat16", "e2m3"])
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_forward_is_decode_encode_bit_for_bit(fmt, rounding):
    x = _x(scale=40.0)
    q = qat.Quantizer(fmt, rounding)
    y = qat.fake_quantize(x, q, seed=7, stream=3)
    ref = lowfp.decode(
        lowfp.encode(x, fmt, rounding=rounding, overflow="saturate", seed=7, stream=3), fmt
    )
    assert torch.equal(_bits(y), _bits(ref))


@pytest.mark.parametrize("preset", ["mxfp4", "nvfp4", "mxfp8", "mxfp6"])
def test_forward_blockwise_is_dequantize(preset):
    x = _x((5, 80))  # 80: the last block of each row is partial
    y = qat.fake_quantize(x, preset)
    ref = lowfp.quantize_blockwise(x, preset).dequantize()
    assert torch.equal(_bits(y), _bits(ref))
    # axis: blocks along dim 0 equal the transposed tensor's along its last axis
    y0 = qat.fake_quantize(x, preset, axis=0)
    assert torch.equal(y0, lowfp.quantize_blockwise(x.t().contiguous(), preset).dequantize().t())


def test_bfloat16_input_keeps_dtype_and_values():
    x = _x().bfloat16()
    y = qat.fake_quantize(x, "e4m3")
    assert y.dtype == torch.bfloat16
    assert torch.equal(y.float(), lowfp.decode(lowfp.encode(x.float(), "e4m3"), "e4m3"))


def test_ste_elementwise_clips_beyond_max():
    f = lowfp.format("e4m3")
    x = torch.tensor([0.1, -3.0, f.max, -f.max, f.max * 1.01, -1000.0, 460.0], requires_grad=True)
    up = torch.arange(1.0, 8.0)
    qat.fake_quantize(x, "e4m3").backward(up)
    keep = torch.tensor([1, 1, 1, 1, 0, 0, 0], dtype=torch.bool)
    assert torch.equal(x.grad, torch.where(keep, up, torch.zeros(())))


def test_ste_blockwise_absmax_is_identity():
    x = _x().requires_grad_()
    up = _x(seed=1)
    qat.fake_quantize(x, qat.Quantizer("e2m1", block_size=32)).backward(up)
    assert torch.equal(x.grad, up)  # absmax scales map each block's max to the format's max


def test_ste_blockwise_mx_clips_exactly_the_saturated():
    # MX floor scale 2^(floor(log2 amax) - emax) with E2M1's emax = 2: the largest value of a
    # block is 6 * scale, which is below amax when amax's mantissa exceeds 1.5.
    x = _x((8, 64)).requires_grad_()
    up = torch.ones_like(x)
    qat.fake_quantize(x, "mxfp4").backward(up)
    blocks = x.detach().reshape(8, 2, 32)
    amax = blocks.abs().amax(-1, keepdim=True)
    bound = 6.0 * torch.exp2(torch.floor(torch.log2(amax)) - 2)
    keep = (blocks.abs() <= bound).reshape(8, 64)
    assert 0 < int((~keep).sum()) < 64  # some, not all, elements saturate
    assert torch.equal(x.grad, keep.float())


def test_stochastic_is_unbiased_and_fresh():
    # x sits strictly between E2M1 neighbours lo < x < hi; each draw is lo or hi, so one draw
    # has sd <= (hi - lo) / 2 = 0.25 (for these x in (1, 2)); the mean of N = 4000 draws has
    # sd <= 0.25 / sqrt(4000) = 0.004; 5 sd = 0.02.
    x = torch.tensor([1.1, 1.25, 1.4, 1.7, 1.95, -1.3])
    n = 4000
    draws = torch.stack(
        [
            qat.fake_quantize(x, qat.Quantizer("e2m1", "stochastic"), seed=5, stream=k)
            for k in range(n)
        ]
    )
    assert (draws.mean(0) - x).abs().max() < 5 * 0.25 / math.sqrt(n)
    assert not torch.equal(draws[0], draws[1])
    # a module draws fresh bits per call, and the same seed reproduces the sequence
    lin = nn.Linear(64, 8)
    qat.prepare(lin, weight=qat.Quantizer("e2m1", "stochastic", seed=3))
    w1, w2 = lin.quantized_weight(), (lin(torch.zeros(1, 64)), lin.quantized_weight())[1]
    assert not torch.equal(w1, w2)
    qat.prepare(lin, weight=qat.Quantizer("e2m1", "stochastic", seed=3))  # counters reset
    assert torch.equal(lin.quantized_weight(), w1)


def test_stochastic_blockwise_is_unbiased():
    # absmax scales are deterministic, so each element is lo or hi of its block's grid:
    # per-draw sd <= half the largest gap, 0.5 * 2 * scale (E2M1 gaps <= 2), scale = amax / 6.
    x = _x((1, 32), scale=1.0)
    q = qat.Quantizer("e2m1", "stochastic", block_size=32)
    n = 3000
    m = torch.stack([qat.fake_quantize(x, q, seed=1, stream=k) for k in range(n)]).mean(0)
    sd = float(x.abs().max()) / 6 / math.sqrt(n)
    assert (m - x).abs().max() < 5 * sd


def _net():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(4, 8, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 30, 16),
        nn.ReLU(),
        nn.Linear(16, 3),
    )


def test_prepare_forward_matches_functional_and_state_dict_roundtrip():
    net = _net()
    sd = copy.deepcopy(net.state_dict())
    x = _x((2, 4, 32))
    qat.prepare(net, weight="nvfp4", act="e4m3")
    assert list(net.state_dict()) == list(sd)
    assert all(torch.equal(net.state_dict()[k], v) for k, v in sd.items())
    assert isinstance(net[3], nn.Linear) and type(net[3]) is qat.QLinear
    # the layer computes F.linear(Q(x), Q(w), b) exactly
    h = torch.randn(2, 240)
    w = lowfp.quantize_blockwise(net[3].weight.detach(), "nvfp4").dequantize()
    ref = nn.functional.linear(lowfp.quantize(h, "e4m3", overflow="saturate"), w, net[3].bias)
    assert torch.equal(net[3](h), ref)
    # a plain model loads the prepared model's state dict, and back
    plain = _net()
    plain.load_state_dict(net.state_dict())
    net.load_state_dict(sd)
    out = net(x)
    qat.unprepare(net)
    assert type(net[3]) is nn.Linear and not hasattr(net[3], "weight_quantizer")
    assert torch.equal(net(x), plain(x)) and not torch.equal(out, plain(x))
    # deep copies and pickles of a prepared model work
    qat.prepare(net, weight="mxfp4")
    twin = copy.deepcopy(net)
    assert type(twin[0]) is qat.QConv1d and torch.equal(twin(x), net(x))


def test_filter_selects_modules():
    net = _net()
    seen = []
    qat.prepare(
        net,
        weight="e4m3",
        filter=lambda m, n: seen.append(n) or isinstance(m, nn.Linear) and n != "5",
    )
    assert seen == ["0", "3", "5"]
    assert [type(m).__name__ for m in net] == [
        "Conv1d",
        "ReLU",
        "Flatten",
        "QLinear",
        "ReLU",
        "Linear",
    ]
    with pytest.raises(ValueError, match="filter"):
        qat.prepare(_net(), weight="e4m3", filter=lambda m, n: False)
    with pytest.raises(TypeError, match="filter"):
        qat.prepare(_net(), weight="e4m3", filter="3")


def test_gradient_quantizer_rounds_output_gradient():
    lin = nn.Linear(16, 8)
    qat.prepare(lin, grad="e2m1")
    x = _x((4, 16), 1.0)
    c = _x((4, 8), 1.0, seed=2)
    (lin(x) * c).sum().backward()
    qc = lowfp.quantize(c, "e2m1", overflow="saturate")
    assert torch.allclose(lin.weight.grad, qc.t() @ x, rtol=1e-6, atol=1e-6)
    assert torch.allclose(lin.bias.grad, qc.sum(0), rtol=1e-6, atol=1e-6)
    assert not torch.allclose(lin.bias.grad, c.sum(0))


def test_weight_gradient_is_ste_through_quantized_weight():
    lin = nn.Linear(32, 4, bias=False)
    qat.prepare(lin, weight="mxfp8")
    x = _x((3, 32), 1.0)
    lin(x).sum().backward()
    # no element of a weight this small saturates: the gradient is that of the plain layer
    assert torch.allclose(lin.weight.grad, x.sum(0).expand(4, 32), rtol=0, atol=1e-6)


def test_quantize_weights_report():
    net = _net()
    before = {
        n: m.weight.detach().clone() for n, m in net.named_modules() if isinstance(m, nn.Linear)
    }
    rep = qat.quantize_weights(net, "mxfp4", filter=lambda m, n: isinstance(m, nn.Linear))
    assert rep.column("name") == ["3", "5"] and rep.column("type") == ["Linear", "Linear"]
    for row in rep:
        w0, w = before[row["name"]], net.get_submodule(row["name"]).weight.detach()
        assert torch.equal(w, lowfp.quantize_blockwise(w0, "mxfp4").dequantize())
        assert row["rel_error"] == pytest.approx(
            float((w.double() - w0.double()).norm() / w0.double().norm()), rel=1e-12
        )
        assert row["rel_error"] > 0
    # the conv weight is blockwise along in_channels x kernel
    conv = _net()[0]
    w0 = conv.weight.detach().clone()
    qat.quantize_weights(conv, "mxfp4")
    assert torch.equal(
        conv.weight,
        lowfp.quantize_blockwise(w0.reshape(8, -1), "mxfp4").dequantize().reshape(8, 4, 3),
    )


def test_quantize_weights_then_prepare_is_a_fixed_point():
    # a weight already on the grid is its own fake quantization (nearest)
    net = _net()
    qat.quantize_weights(net, "nvfp4")
    w = net[3].weight.detach().clone()
    qat.prepare(net, weight="nvfp4")
    assert torch.equal(net[3].quantized_weight(), w)


def test_bad_input():
    with pytest.raises(ValueError, match="no-such"):
        qat.Quantizer("no-such")
    with pytest.raises(ValueError, match="rounding"):
        qat.Quantizer("mxfp4", "toward_zero")
    with pytest.raises(ValueError, match="scale"):
        qat.Quantizer("e4m3", scale="bogus")
    with pytest.raises(ValueError, match="block"):
        qat.Quantizer("e4m3", block_size=7)
    with pytest.raises(TypeError, match="weight"):
        qat.prepare(_net(), weight=3)
    with pytest.raises(TypeError, match="x"):
        qat.fake_quantize(torch.arange(4), "e4m3")
    with pytest.raises(TypeError, match="model"):
        qat.prepare("net", weight="e4m3")


def test_docs_page_examples_run(tmp_path, monkeypatch):
    page = pathlib.Path(__file__).resolve().parent.parent / "docs" / "research.md"
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    for code in re.findall(r"```python\n(.*?)```", page.read_text(), re.S):
        exec(compile(code, str(page), "exec"), ns)
