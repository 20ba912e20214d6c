"""Small calls (at most par::SERIAL_MAX = 32Ki elements) run on the calling thread with the
GIL held; larger ones in the pool. Both must give the same bits, on any thread count: every
result is keyed by the global element index, never by thread or chunk."""

from __future__ import annotations

import numpy as np
import pytest

import lowfp

SERIAL_MAX = 1 << 15
#: Sizes on both sides of the threshold (the large ones span several pool chunks).
SIZES = [16, 1000, SERIAL_MAX, SERIAL_MAX + 8, 5 * SERIAL_MAX + 24]


@pytest.fixture(scope="module")
def x():
    rng = np.random.default_rng(7)
    return (rng.standard_normal(SIZES[-1]) * np.exp2(rng.integers(-8, 8, SIZES[-1]))).astype(
        np.float32
    )


@pytest.mark.parametrize("rounding", ["nearest", "stochastic", "toward_zero"])
def test_encode_quantize_prefixes_agree(x, threads, rounding):
    key = dict(seed=123, stream=4)
    full = lowfp.encode(x, "e4m3", rounding=rounding, **key)
    fullq = lowfp.quantize(x, "e4m3", rounding=rounding, **key)
    for n in SIZES:
        np.testing.assert_array_equal(
            lowfp.encode(x[:n], "e4m3", rounding=rounding, **key), full[:n]
        )
        np.testing.assert_array_equal(
            lowfp.quantize(x[:n], "e4m3", rounding=rounding, **key), fullq[:n]
        )
    # a small slice from the middle, keyed by its offset, is the same part of the big call
    np.testing.assert_array_equal(
        lowfp.encode(x[5000:5016], "e4m3", rounding=rounding, offset=5000, **key), full[5000:5016]
    )


@pytest.mark.parametrize("kind", [np.float64, np.float16])
def test_other_input_kinds(x, threads, kind):
    xs = x.astype(kind)
    full = lowfp.encode(xs, "e5m2", rounding="stochastic", seed=9)
    for n in SIZES[:3]:
        np.testing.assert_array_equal(
            lowfp.encode(xs[:n], "e5m2", rounding="stochastic", seed=9), full[:n]
        )


@pytest.mark.parametrize("fmt", ["e4m3", "bfloat16", "float16", "e8m0", "e3m4"])
def test_decode_prefixes_agree(threads, fmt):
    f = lowfp.format(fmt)
    dtype = np.uint8 if f.bits <= 8 else np.uint16
    codes = (np.arange(SIZES[-1], dtype=np.uint64) * 2654435761 % (1 << f.bits)).astype(dtype)
    full = lowfp.decode(codes, f)
    for n in SIZES:
        got = lowfp.decode(codes[:n], f)
        np.testing.assert_array_equal(got.view(np.uint32), full[:n].view(np.uint32))


def test_decode_small_and_large_report_the_same_bad_code():
    codes = np.zeros(100, np.uint16)
    codes[37] = 300
    with pytest.raises(ValueError, match="element 37 is 300"):
        lowfp.decode(codes, "e4m3")
    big = np.zeros(SIZES[-1], np.uint16)
    big[37] = 300
    with pytest.raises(ValueError, match="element 37 is 300"):
        lowfp.decode(big, "e4m3")


@pytest.mark.parametrize("bits", [1, 3, 4, 6, 8])
def test_pack_unpack(threads, bits):
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, 1 << bits, SIZES[-1]).astype(np.uint8)
    for n in SIZES:
        p = lowfp.pack(codes[:n], bits)
        np.testing.assert_array_equal(lowfp.unpack(p, bits, n), codes[:n])
        if n % 8 == 0:
            np.testing.assert_array_equal(p, lowfp.pack(codes, bits)[: p.size])


@pytest.mark.parametrize("scale", ["absmax", "e8m0_rceil", "e4m3"])
def test_blockwise(x, threads, scale):
    big = lowfp.quantize_blockwise(
        x, "float4_e2m1fn", block_size=32, scale=scale, rounding="stochastic", seed=3
    )
    n = SERIAL_MAX
    small = lowfp.quantize_blockwise(
        x[:n], "float4_e2m1fn", block_size=32, scale=scale, rounding="stochastic", seed=3
    )
    if scale != "e4m3":  # the e4m3 tensor scale depends on the whole tensor
        np.testing.assert_array_equal(small.codes, big.codes[: small.codes.size])
        np.testing.assert_array_equal(small.scales, big.scales[: small.scales.size])
        np.testing.assert_array_equal(small.dequantize(), big.dequantize()[:n])


def test_table_codec(x, threads):
    lin = lowfp.Linear(4)
    y = np.clip(x / np.abs(x).max(), -1, 1)
    full = lin.encode(y, rounding="stochastic", seed=5)
    for n in SIZES[:3]:
        np.testing.assert_array_equal(lin.encode(y[:n], rounding="stochastic", seed=5), full[:n])


def test_random_bits(threads):
    full = lowfp.random_bits(SIZES[-1], seed=1, stream=2)
    for n in SIZES[:3]:
        np.testing.assert_array_equal(lowfp.random_bits(n, seed=1, stream=2), full[:n])
    np.testing.assert_array_equal(
        lowfp.random_bits(16, seed=1, stream=2, offset=100), full[100:116]
    )


def test_one_thread_after_set_num_threads(x):
    """set_num_threads(1) leaves results unchanged (small calls never enter the pool)."""
    old = lowfp.num_threads()
    want = lowfp.encode(x[:16], "e4m3", rounding="stochastic", seed=1)
    try:
        lowfp.set_num_threads(1)
        for _ in range(100):
            np.testing.assert_array_equal(
                lowfp.encode(x[:16], "e4m3", rounding="stochastic", seed=1), want
            )
    finally:
        lowfp.set_num_threads(old)
