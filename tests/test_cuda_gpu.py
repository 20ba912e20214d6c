"""GPU kernels vs the Rust core, bit for bit (needs CuPy and a CUDA device; skipped otherwise).

Same inputs, seeds and options on both sides: every float16 and bfloat16 bit pattern and 4M
random float32 values for every format × rounding mode × overflow policy, decode of every
code, packing, table codecs and blockwise quantize/dequantize, for CuPy arrays and CUDA torch
tensors (zero-copy, on torch's current stream).
"""

from __future__ import annotations

import numpy as np
import pytest

import lowfp
from lowfp.codec import ROUNDINGS

cp = pytest.importorskip("cupy", reason="CuPy is not installed (pip install lowfp[cuda])")
ml_dtypes = pytest.importorskip("ml_dtypes")

pytestmark = pytest.mark.gpu

if not __import__("lowfp.cuda", fromlist=["available"]).available():
    pytest.skip("no CUDA device visible to CuPy", allow_module_level=True)

from test_cuda_host import BLOCKWISE, FORMATS, TABLES  # noqa: E402  (shared parametrization)

RNG = np.random.default_rng(2024)
F32 = np.concatenate([
    RNG.integers(0, 2**32, 2_000_000, dtype=np.uint64).astype(np.uint32).view(np.float32),
    (np.exp2(RNG.uniform(-150, 128, 2_000_000)) * RNG.choice([-1.0, 1.0], 2_000_000)
     ).astype(np.float32),
])
F16 = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
BF16_BITS = np.arange(1 << 16, dtype=np.uint16)
KEY = dict(seed=0xDEADBEEF, stream=5, offset=31)


def _torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("name", FORMATS)
def test_encode_exhaustive_16bit_and_random_f32(name):
    f = lowfp.format(name)
    torch = _torch()
    bf16_host = BF16_BITS.view(ml_dtypes.bfloat16)
    bf16_dev = torch.from_numpy(BF16_BITS.view(np.int16)).view(torch.bfloat16).cuda()
    cases = [(F32, cp.asarray(F32)), (F16, cp.asarray(F16)), (bf16_host, bf16_dev)]
    for rounding in ROUNDINGS:
        for overflow in ("nonfinite", "saturate"):
            opts = dict(rounding=rounding, overflow=overflow, nan="zero", negative="clamp", **KEY)
            for host_x, dev_x in cases:
                want = lowfp.encode(host_x, f, **opts)
                got = lowfp.encode(dev_x, f, **opts)
                got = got.cpu().numpy() if hasattr(got, "cpu") else cp.asnumpy(got)
                np.testing.assert_array_equal(got, want, err_msg=f"{name} {rounding} {overflow}")


@pytest.mark.parametrize("name", FORMATS)
def test_decode_and_quantize(name):
    f = lowfp.format(name)
    codes = (np.arange(1 << f.bits, dtype=np.uint32) if f.bits <= 16 else
             RNG.integers(0, 1 << f.bits, 1 << 20, dtype=np.uint64).astype(np.uint32))
    want = lowfp.decode(codes, f).view(np.uint32)
    got = cp.asnumpy(lowfp.decode(cp.asarray(codes), f)).view(np.uint32)
    np.testing.assert_array_equal(got, want)
    for rounding in ("nearest", "stochastic"):
        w = lowfp.quantize(F32, f, rounding=rounding, nan="zero", negative="clamp", **KEY)
        g = cp.asnumpy(lowfp.quantize(cp.asarray(F32), f, rounding=rounding, nan="zero",
                                      negative="clamp", **KEY))
        np.testing.assert_array_equal(g.view(np.uint32), w.view(np.uint32))


def test_errors_name_the_first_bad_element():
    x = cp.linspace(0, 1, 1000, dtype=cp.float32)
    x[[417, 900]] = cp.nan
    with pytest.raises(ValueError, match="element 417 is NaN"):
        lowfp.encode(x, "float4_e2m1fn")
    with pytest.raises(ValueError, match="element 3 is 16"):
        lowfp.decode(cp.asarray(np.uint8([1, 2, 3, 16])), "float4_e2m1fn")
    torch = _torch()
    with pytest.raises(ValueError, match="not contiguous"):
        lowfp.encode(torch.zeros(4, 4, device="cuda").t(), "e4m3")


@pytest.mark.parametrize("bits", range(1, 9))
def test_pack_unpack(bits):
    for n in (0, 1, 9, 1_000_003):
        codes = RNG.integers(0, 1 << bits, n, dtype=np.uint64).astype(np.uint8)
        want = lowfp.pack(codes, bits)
        got = lowfp.pack(cp.asarray(codes), bits)
        np.testing.assert_array_equal(cp.asnumpy(got), want)
        np.testing.assert_array_equal(cp.asnumpy(lowfp.unpack(got, bits, n)), codes)


@pytest.mark.parametrize("codec", TABLES, ids=repr)
def test_table_codecs(codec):
    x = RNG.uniform(-1.2, 1.2, 1_000_000).astype(np.float32)
    for rounding in ("nearest", "stochastic"):
        want = codec.encode(x, rounding=rounding, **KEY)
        got = codec.encode(cp.asarray(x), rounding=rounding, **KEY)
        np.testing.assert_array_equal(cp.asnumpy(got), want)


@pytest.mark.parametrize("codec,block,scale", BLOCKWISE, ids=lambda v: repr(v))
def test_blockwise(codec, block, scale):
    torch = _torch()
    n = 1_000_003
    x = (RNG.standard_normal(n) * np.exp2(RNG.integers(-20, 20, n))).astype(np.float32)
    x_dev = torch.from_numpy(x).cuda()
    table = isinstance(codec, (lowfp.Linear, lowfp.Dynamic, lowfp.Log))
    for rounding in ("nearest", "stochastic") if table else ROUNDINGS:
        kw = dict(block_size=block, scale=scale, rounding=rounding, seed=3, stream=1)
        q = lowfp.quantize_blockwise(x, codec, **kw)
        qd = lowfp.quantize_blockwise(x_dev, codec, **kw)
        np.testing.assert_array_equal(qd.codes.cpu().numpy(), q.codes)
        np.testing.assert_array_equal(qd.scales.cpu().numpy(), q.scales)
        assert np.float32(qd.global_scale) == np.float32(q.global_scale)
        np.testing.assert_array_equal(qd.dequantize().cpu().numpy().view(np.uint32),
                                      q.dequantize().view(np.uint32))
