"""lowfp.optim.AdamW(v_granularity=...): second moments shared per row, block or tensor."""

import copy
import io
import math

import pytest

torch = pytest.importorskip("torch")

import lowfp  # noqa: E402
from lowfp.optim import AdamW  # noqa: E402


def _labels(shape, gran, block):
    """Group index of every element (an independent construction: labels + bincount)."""
    n = math.prod(shape)
    rows = shape[0] if len(shape) >= 2 and gran != "tensor" else 1
    length = n // rows
    r = torch.arange(n) // length
    j = torch.arange(n) % length
    if gran == "block":
        nb = -(-length // block)
        return r * nb + j // block
    return r if gran == "row" else torch.zeros(n, dtype=torch.long)


def _reference(
    p0,
    grads,
    gran,
    block=8,
    lr=1e-2,
    betas=(0.9, 0.99),
    eps=1e-8,
    wd=0.1,
    decoupled=True,
    amsgrad=False,
):
    """Blockwise Adam in float64: v of a group follows the mean of g^2 over the group."""
    lab = _labels(tuple(p0.shape), gran, block)
    G = int(lab.max()) + 1
    counts = torch.bincount(lab, minlength=G).double()
    w = p0.detach().double().reshape(-1).clone()
    m = torch.zeros_like(w)
    v = torch.zeros(G, dtype=torch.float64)
    vmax = torch.zeros(G, dtype=torch.float64)
    b1, b2 = betas
    for t, g in enumerate(grads, 1):
        g = g.double().reshape(-1)
        if decoupled:
            w = w * (1 - lr * wd)
        else:
            g = g + wd * w
        m = b1 * m + (1 - b1) * g
        v = (
            b2 * v
            + (1 - b2) * torch.zeros(G, dtype=torch.float64).index_add_(0, lab, g * g) / counts
        )
        vmax = torch.maximum(vmax, v)
        vv = vmax if amsgrad else v
        denom = (vv.sqrt() / math.sqrt(1 - b2**t) + eps)[lab]
        w = w - lr / (1 - b1**t) * m / denom
    return w.reshape(p0.shape), v


def _grads(shape, steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g) for _ in range(steps)]


def _run(shape, gran, steps=5, dtype=torch.float32, **kw):
    g = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.randn(*shape, generator=g).to(dtype))
    p0 = p.detach().clone()
    opt = AdamW(
        [p], lr=kw.pop("lr", 1e-2), betas=(0.9, 0.99), weight_decay=0.1, v_granularity=gran, **kw
    )
    grads = _grads(shape, steps)
    for gr in grads:
        p.grad = gr.to(dtype)
        opt.step()
    return p, p0, grads, opt


@pytest.mark.parametrize("gran", ["row", "block", "tensor"])
@pytest.mark.parametrize("shape", [(6, 20), (4, 3, 5), (37,)])
def test_matches_float64_reference(gran, shape):
    p, p0, grads, opt = _run(shape, gran, v_block_size=8)
    ref, v = _reference(p0, grads, gran)
    # float32 arithmetic against float64: a few ulps per step on values of size ~1
    assert torch.allclose(p.double(), ref, rtol=0, atol=1e-5)
    assert torch.allclose(opt.dequantized_state(p, "exp_avg_sq").double(), v, rtol=1e-5)
    assert opt.state[p]["exp_avg_sq"].shape == (int(_labels(shape, gran, 8).max()) + 1,)


@pytest.mark.parametrize(
    "options", [dict(amsgrad=True), dict(decoupled_weight_decay=False), dict(maximize=True)]
)
def test_reference_with_options(options):
    p, p0, grads, opt = _run((6, 20), "row", **options)
    ref, _ = _reference(
        p0,
        [-g for g in grads] if options.get("maximize") else grads,
        "row",
        amsgrad=options.get("amsgrad", False),
        decoupled=options.get("decoupled_weight_decay", True),
    )
    assert torch.allclose(p.double(), ref, rtol=0, atol=1e-5)


def test_element_default_unchanged_and_block_of_one_is_element():
    a, _, _, _ = _run((6, 20), "element")
    g = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.randn(6, 20, generator=g))
    opt = AdamW([p], lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)  # no v_granularity
    for gr in _grads((6, 20), 5):
        p.grad = gr
        opt.step()
    assert torch.equal(a, p)  # the fused step, untouched
    one, _, _, _ = _run((6, 20), "block", v_block_size=1)
    assert torch.allclose(one, a, rtol=0, atol=1e-6) and not torch.equal(
        one, _run((6, 20), "row")[0]
    )


def test_low_bit_first_moment_and_bytes():
    p, p0, grads, opt = _run((16, 64), "row", exp_avg="e4m3", min_quant_size=16, block_size=256)
    st = opt.state[p]
    assert "exp_avg.codes" in st and st["exp_avg_sq"].shape == (16,)
    m = opt.dequantized_state(p, "exp_avg")
    # the stored first moment is on its codec's grid: re-quantizing it changes nothing
    q = lowfp.quantize_blockwise(m.reshape(-1), "e4m3", block_size=256).dequantize()
    assert torch.equal(q, m.reshape(-1))
    ref, _ = _reference(p0, grads, "row")
    assert (p.double() - ref).abs().max() < 5e-3  # E4M3 m: close to the float64 run
    # bytes: 1024 codes + 4 float32 scales + 16 float32 v + the step counter
    assert opt.state_nbytes() == 1024 + 4 * 4 + 16 * 4 + 4
    assert "one per row" in opt.summary() and f"state bytes: {opt.state_nbytes()}" in opt.summary()


def test_bfloat16_params():
    p, p0, grads, _ = _run((6, 20), "tensor", dtype=torch.bfloat16, param_rounding="nearest")
    assert p.dtype == torch.bfloat16
    ref, _ = _reference(p0.float(), [g.bfloat16().float() for g in grads], "tensor")
    assert (p.double() - ref).abs().max() < 0.05  # bfloat16 rounding each of 5 steps


def test_state_dict_round_trip_continues_identically():
    p, _, _, opt = _run(
        (6, 20), "block", v_block_size=8, exp_avg="e4m3", min_quant_size=16, rounding="stochastic"
    )
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    p2 = torch.nn.Parameter(p.detach().clone())
    opt2 = AdamW(
        [p2],
        lr=1e-2,
        betas=(0.9, 0.99),
        weight_decay=0.1,
        v_granularity="block",
        v_block_size=8,
        exp_avg="e4m3",
        min_quant_size=16,
        rounding="stochastic",
    )
    buf.seek(0)
    opt2.load_state_dict(torch.load(buf, weights_only=True))
    for gr in _grads((6, 20), 3, seed=7):
        p.grad, p2.grad = gr.clone(), gr.clone()
        opt.step()
        opt2.step()
    assert torch.equal(p, p2)
    assert torch.equal(opt.state[p]["exp_avg_sq"], opt2.state[p2]["exp_avg_sq"])
    twin = copy.deepcopy(opt2)
    assert twin._v_gran == "block" and twin._v_block == 8


def test_loading_another_granularity_fails_before_loading():
    p, _, _, opt = _run((6, 20), "row")
    sd = opt.state_dict()
    for gran, block in (("tensor", 128), ("element", 128)):
        q = torch.nn.Parameter(p.detach().clone())
        other = AdamW([q], v_granularity=gran, v_block_size=block)
        with pytest.raises(ValueError, match="v_granularity='row'"):
            other.load_state_dict(sd)
        assert not other.state
    b8 = _run((6, 20), "block", v_block_size=8)[3].state_dict()
    with pytest.raises(ValueError, match="v_block_size=8"):
        AdamW(
            [torch.nn.Parameter(torch.zeros(6, 20))], v_granularity="block", v_block_size=4
        ).load_state_dict(b8)


def test_bad_arguments():
    ps = [torch.nn.Parameter(torch.zeros(4, 4))]
    with pytest.raises(ValueError, match="v_granularity"):
        AdamW(ps, v_granularity="head")
    with pytest.raises(ValueError, match="v_block_size"):
        AdamW(ps, v_granularity="block", v_block_size=0)
    with pytest.raises(ValueError, match="exp_avg_sq"):
        AdamW(ps, v_granularity="row", exp_avg_sq="e4m3")
    with pytest.raises(ValueError, match="exp_avg_sq"):
        AdamW([{"params": ps, "exp_avg_sq": "e5m2"}], v_granularity="row")
    opt = AdamW(ps, v_granularity="row")
    with pytest.raises(ValueError, match="v_granularity"):
        opt.to_torch_state_dict()
