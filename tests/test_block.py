"""Blockwise quantized tensors: references in NumPy/ml_dtypes, round trips, bytes, files."""

import numpy as np
import pytest

import lowfp
from conftest import ML_DTYPES

RNG = np.random.default_rng(2024)
X = (RNG.standard_normal(10_000) * np.exp(RNG.uniform(-8, 8, 10_000))).astype(np.float32)


def _blocks(x, b):
    pad = (-x.size) % b
    return np.concatenate([x, np.zeros(pad, x.dtype)]).reshape(-1, b), pad


@pytest.mark.parametrize(
    "preset,fmt",
    [
        ("mxfp8", "float8_e4m3fn"),
        ("mxfp6", "float6_e2m3fn"),
        ("mxfp4", "float4_e2m1fn"),
        ("mxfp8_e5m2", "float8_e5m2"),
    ],
)
def test_mx_presets_match_a_numpy_ml_dtypes_reference(preset, fmt):
    q = lowfp.quantize_blockwise(X, preset)
    f = lowfp.format(fmt)
    xb, pad = _blocks(X, 32)
    amax = np.abs(xb).max(axis=1)
    # OCP MX: shared exponent floor(log2(amax)) - emax of the element format
    k = np.floor(np.log2(amax)) - np.floor(np.log2(f.max))
    s = np.exp2(np.clip(k, -127, 127)).astype(np.float32)
    y = np.clip(xb / s[:, None], -f.max, f.max)  # saturating elements
    codes = y.astype(ML_DTYPES[fmt]).view(np.uint8).reshape(-1)[: X.size]
    np.testing.assert_array_equal(lowfp.unpack(q.codes, f.bits, X.size), codes)
    np.testing.assert_array_equal(lowfp.decode(q.scales, "e8m0"), s)
    assert q.scales.dtype == np.uint8 and q.scales.size == xb.shape[0]
    want = (
        codes.astype(np.uint8).view(ML_DTYPES[fmt]).astype(np.float32).reshape(-1)
        * np.repeat(s, 32)[: X.size]
    )
    np.testing.assert_array_equal(q.dequantize(), want)
    assert q.nbytes == (X.size * f.bits + 7) // 8 + xb.shape[0]


def test_nvfp4():
    q = lowfp.quantize_blockwise(X, "nvfp4")
    g = np.float32(np.abs(X).max()) / np.float32(6 * 448)
    assert q.global_scale == g
    xb, _ = _blocks(X, 16)
    s = lowfp.quantize(np.abs(xb).max(axis=1) / np.float32(6) / g, "e4m3", overflow="saturate")
    np.testing.assert_array_equal(lowfp.decode(q.scales, "e4m3"), s)
    sd = s * g
    y = np.where(sd[:, None] > 0, xb / np.where(sd > 0, sd, 1)[:, None], 0).astype(np.float32)
    codes = lowfp.encode(y, "e2m1", overflow="saturate").reshape(-1)[: X.size]
    np.testing.assert_array_equal(lowfp.unpack(q.codes, 4, X.size), codes)
    assert q.nbytes == X.size // 2 + xb.shape[0] + 4


def _nearest(levels, y):
    """Brute-force nearest level, ties to the even index."""
    d = np.abs(y[:, None].astype(np.float64) - levels[None, :].astype(np.float64))
    best = d.min(axis=1, keepdims=True)
    cand = d == best
    idx = np.argmax(cand, axis=1)
    two = cand.sum(axis=1) > 1
    idx[two & (idx % 2 == 1)] += 1
    return idx


@pytest.mark.parametrize(
    "codec",
    [
        lowfp.Linear(8),
        lowfp.Linear(4),
        lowfp.Linear(2),
        lowfp.Linear(3, signed=False, zero=False),
        lowfp.Dynamic(8),
        lowfp.Dynamic(4),
        lowfp.Dynamic(8, signed=False),
        lowfp.Log(3, alpha=0.3),
        lowfp.Log(4, signed=True, alpha=0.5),
    ],
)
@pytest.mark.parametrize("block", [64, 256])
def test_table_codecs_absmax_match_reference(codec, block):
    x = np.abs(X) if not getattr(codec, "signed", True) else X
    q = lowfp.quantize_blockwise(x, codec, block_size=block)
    xb, _ = _blocks(x, block)
    amax = np.abs(xb).max(axis=1).astype(np.float32)
    y = (xb / amax[:, None]).astype(np.float32).reshape(-1)[: x.size]
    codes = _nearest(codec.levels, y)
    np.testing.assert_array_equal(lowfp.unpack(q.codes, codec.bits, x.size), codes)
    np.testing.assert_array_equal(q.scales, amax)
    want = codec.levels[codes] * np.repeat(amax, block)[: x.size]
    np.testing.assert_array_equal(q.dequantize(), want)


def _pow6(a) -> float:
    p = 1.0
    for _ in range(6):  # repeated float64 multiplication, as the core defines the power
        p *= float(a)
    return p


def test_log_quantile_base_per_block():
    v = np.abs(X)
    q = lowfp.quantize_blockwise(v, lowfp.Log(3, quantile=0.1), block_size=128)
    assert q.alphas is not None and q.alphas.size == q.scales.size
    assert q.nbytes == (v.size * 3 + 7) // 8 + 8 * q.scales.size
    # The base is the largest float32 alpha whose smallest non-zero level alpha^6 (7 non-zero
    # levels) does not exceed the block's 10% quantile of |x|/amax (nearest rank).
    xb, _ = _blocks(v, 128)
    for blk, a, amax in zip(xb[:-1], q.alphas, q.scales):
        srt = np.sort(blk)
        t = float(np.float32(srt[int(np.floor(np.float32(0.1) * np.float32(blk.size - 1)))]) / amax)
        assert _pow6(a) <= t < _pow6(np.nextafter(a, np.float32(1)))
    # and decoding uses exactly those levels
    codes = lowfp.unpack(q.codes, 3, v.size)
    lv = np.stack([lowfp.Log(3, alpha=float(a)).levels for a in q.alphas])
    blk = np.arange(v.size) // 128
    np.testing.assert_array_equal(q.dequantize(), lv[blk, codes] * q.scales[blk])


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_stochastic_blockwise_is_unbiased_and_reproducible(rounding, threads):
    x = np.full(200_000, 0.3, np.float32)
    x[::256] = 1.0  # amax 1 in every block
    q1 = lowfp.quantize_blockwise(x, lowfp.Linear(4), rounding=rounding, seed=5)
    lowfp.set_num_threads(1)
    q2 = lowfp.quantize_blockwise(x, lowfp.Linear(4), rounding=rounding, seed=5)
    np.testing.assert_array_equal(q1.codes, q2.codes)
    if rounding == "stochastic":
        y = q1.dequantize()[x != 1.0]
        # 0.3 lies between 2/7 and 3/7; y has mean 0.3 and per-element sd <= 1/14.
        # Over n samples, 6 sd of the mean: 6 * (1/14) / sqrt(n).
        assert abs(y.mean() - 0.3) < 6 * (1 / 14) / np.sqrt(y.size)


def test_safetensors_round_trip(tmp_path):
    qs = {
        "a": lowfp.quantize_blockwise(X.reshape(100, 100), "mxfp4"),
        "b": lowfp.quantize_blockwise(X, lowfp.Dynamic(8), block_size=2048),
        "c": lowfp.quantize_blockwise(np.abs(X), lowfp.Log(2, quantile=0.05), block_size=64),
        "d": lowfp.quantize_blockwise(X, "nvfp4"),
    }
    path = str(tmp_path / "q.safetensors")
    lowfp.save_qtensors(qs, path)
    back = lowfp.load_qtensors(path)
    for k, q in qs.items():
        assert back[k].shape == q.shape
        np.testing.assert_array_equal(back[k].dequantize(), q.dequantize())
        assert back[k].nbytes == q.nbytes
    from safetensors.numpy import load_file  # plain safetensors reads the arrays, no pickles

    assert set(load_file(path)) >= {"a.codes", "a.scales", "c.alphas"}


def test_bf16_and_torch_inputs():
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(X).to(torch.bfloat16)
    q = lowfp.quantize_blockwise(t, "mxfp8")
    ref = lowfp.quantize_blockwise(t.float().numpy(), "mxfp8")
    np.testing.assert_array_equal(q.codes, ref.codes)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(codec="mxfp4", block_size=8), ValueError, "block_size"),
        (dict(codec="mxfp4", block_size=8192), ValueError, "block_size"),
        (dict(codec="mxfp4", block_size=100), ValueError, "block_size"),
        (dict(codec="e4m3", scale="minmax"), ValueError, "scale"),
        (dict(codec="bfloat16"), ValueError, "codec"),
        (dict(codec=lowfp.Linear(4), rounding="up"), ValueError, "rounding"),
        (dict(codec=lowfp.Linear(4), scale="e4m3"), ValueError, "scale"),
        (dict(codec="nope"), ValueError, "unknown format"),
    ],
)
def test_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        lowfp.quantize_blockwise(X, **kwargs)


def test_non_finite_rejected():
    with pytest.raises(ValueError, match="x: element 3 is NaN"):
        lowfp.quantize_blockwise(np.array([0, 1, 2, np.nan] * 8, np.float32), "mxfp8")
