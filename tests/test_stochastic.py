"""Reproducible stochastic rounding: exactness, probabilities, thread/chunk independence."""

import ml_dtypes
import numpy as np
import pytest

import lowfp

STOCHASTIC = ["stochastic", "stochastic16"]


@pytest.mark.parametrize("rounding", STOCHASTIC)
@pytest.mark.parametrize("name", ["e4m3", "e5m2", "e2m1", "bfloat16", "e3m2"])
@pytest.mark.parametrize("p", [0.001, 0.25, 0.5, 0.9])
def test_probability_of_rounding_up_equals_the_fraction(name, p, rounding):
    # (stochastic16 truncates p to 2^-16: at most n·2^-16 ≈ 3 fewer ups, far inside 6 sd)
    f = lowfp.format(name)
    lo = np.float64(1.0)
    hi = lo + f.eps  # next value above 1.0
    x = lo + p * (hi - lo)
    n = 200_000
    q = lowfp.quantize(np.full(n, x), f, rounding=rounding, seed=42)
    assert set(np.unique(q)) <= {lo, hi}
    k = int(np.sum(q == hi))
    # k ~ Binomial(n, p): mean n·p, standard deviation sqrt(n·p·(1−p)). Six standard
    # deviations gives a false failure probability below 2e-9 per case.
    sd = np.sqrt(n * p * (1 - p))
    assert abs(k - n * p) <= 6 * sd, (k, n * p, sd)
    # negative inputs mirror: away from zero with the same probability
    qn = lowfp.quantize(np.full(n, -x), f, rounding=rounding, seed=43)
    assert abs(int(np.sum(qn == -hi)) - n * p) <= 6 * sd


def test_resolution_is_exactly_the_discarded_fraction_with_given_bits():
    # x = 1 + 3/8 ulp of E4M3 (ulp 2^-3 at 1.0): the discarded fraction is 3/8, i.e.
    # floor(3/8 · 2^32) = 0x60000000. r < that rounds up, r ≥ that rounds down.
    x = np.full(4, 1.0 + 3 / 8 * 2.0**-3)
    r = np.array([0, 0x5FFFFFFF, 0x60000000, 0xFFFFFFFF], np.uint32)
    codes = lowfp.encode(x, "e4m3", rounding="stochastic", random_bits=r)
    assert list(codes) == [0x39, 0x39, 0x38, 0x38]


@pytest.mark.parametrize("rounding", STOCHASTIC)
@pytest.mark.parametrize("name", ["e4m3", "e2m1", "e5m2"])
def test_exact_inputs_never_move(name, rounding):
    f = lowfp.format(name)
    v = f.values[np.isfinite(f.values)]
    x = np.tile(v, 200)
    for seed in range(3):
        np.testing.assert_array_equal(lowfp.quantize(x, f, rounding=rounding, seed=seed), x)


@pytest.mark.parametrize("rounding", STOCHASTIC)
def test_same_seed_same_bits_any_thread_count_and_chunking(rounding):
    x = np.random.default_rng(5).standard_normal(300_001).astype(np.float32) * 10
    results = []
    for n in (1, 2, 3):
        lowfp.set_num_threads(n)
        results.append(lowfp.encode(x, "e4m3", rounding=rounding, seed=9, stream=2))
    lowfp.set_num_threads(0)
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    # encoding in pieces with offsets gives the same codes as one call
    cut = [0, 1, 70_000, 123_457, 300_001]
    pieces = [
        lowfp.encode(x[a:b], "e4m3", rounding=rounding, seed=9, stream=2, offset=a)
        for a, b in zip(cut[:-1], cut[1:])
    ]
    np.testing.assert_array_equal(np.concatenate(pieces), results[0])
    # a different seed or stream changes the bits
    assert not np.array_equal(lowfp.encode(x, "e4m3", rounding=rounding, seed=10), results[0])
    assert not np.array_equal(
        lowfp.encode(x, "e4m3", rounding=rounding, seed=9, stream=3), results[0]
    )


def test_random_bits_match_the_generator():
    bits = lowfp.random_bits(1000, seed=3, stream=1, offset=17)
    x = np.full(1000, 1.0 + 0.5 * 2.0**-3)  # fraction 1/2: up iff r < 2^31
    codes = lowfp.encode(x, "e4m3", rounding="stochastic", seed=3, stream=1, offset=17)
    np.testing.assert_array_equal(codes == 0x39, bits < 2**31)


def test_philox_known_answer():
    # Random123 known-answer vector for Philox4x32-10 with counter 0 and key 0:
    # {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}. Our element i reads word i % 4
    # of the block with counter (i // 4, 0, stream, 0) and key (seed, 0).
    bits = lowfp.random_bits(4, seed=0, stream=0, offset=0)
    assert [int(b) for b in bits] == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]


# ---------------------------------------------------------------- stochastic16


@pytest.mark.parametrize("offset", [0, 1, 2, 999, 2**64 - 3])
def test_stochastic16_words_are_halves_of_the_32_bit_words(offset):
    """Element i's word is h << 16 | 0xFFFF, h the low (even i) or high (odd i) half of the
    32-bit word i // 2 (indices modulo 2^64)."""
    n = 3000
    got = lowfp.random_bits(n, seed=11, stream=4, offset=offset, rounding="stochastic16")
    idx = [(offset + j) % 2**64 for j in range(n)]
    want = []
    for i in idx:
        w = int(lowfp.random_bits(1, seed=11, stream=4, offset=i // 2)[0])
        h = w & 0xFFFF if i % 2 == 0 else w >> 16
        want.append(h << 16 | 0xFFFF)
    np.testing.assert_array_equal(got, np.array(want, np.uint32))


@pytest.mark.parametrize("name", ["e4m3", "e5m2", "e2m1", "e3m2", "bfloat16", "float16"])
@pytest.mark.parametrize("kind", ["float32", "float64", "float16", "bfloat16"])
def test_stochastic16_is_stochastic_rounding_given_its_words(name, kind):
    x = np.random.default_rng(3).standard_normal(20_011) * 3
    x = x.astype(ml_dtypes.bfloat16 if kind == "bfloat16" else kind)
    key = dict(seed=5, stream=6, offset=12_345)
    words = lowfp.random_bits(x.size, rounding="stochastic16", **key)
    want = lowfp.encode(x, name, rounding="stochastic", random_bits=words)
    np.testing.assert_array_equal(lowfp.encode(x, name, rounding="stochastic16", **key), want)
    # quantize returns the same codes' values (where they are exact in x's dtype)
    if {name, kind} != {"float16", "bfloat16"}:
        q = lowfp.quantize(x, name, rounding="stochastic16", **key)
        np.testing.assert_array_equal(q, lowfp.decode(want, name).astype(q.dtype))
    if lowfp.format(name).bits < np.dtype(x.dtype).itemsize * 8:  # inexact: other codes
        assert not np.array_equal(lowfp.encode(x, name, rounding="stochastic", **key), want)


def test_stochastic16_truncates_the_probability_to_2_to_the_minus_16():
    # e4m3's ulp at 1.0 is 2^-3. x = 1 + 2^-20 discards the fraction 2^-17 of an ulp, which
    # stochastic16 truncates to 0: it never moves. The 32-bit mode moves it with probability
    # 2^-17: k ~ Binomial(2^24, 2^-17), mean 128, sd ≈ 11.3; six sd is 68, so k = 0 fails.
    n = 1 << 24
    x = np.full(n, 1 + 2.0**-20, np.float32)
    assert (lowfp.quantize(x, "e4m3", rounding="stochastic16", seed=1) == 1).all()
    k = int(np.sum(lowfp.quantize(x, "e4m3", rounding="stochastic", seed=1) != 1))
    assert abs(k - 128) <= 6 * np.sqrt(n * 2.0**-17), k
    # 2^-16 exactly survives: Binomial(2^24, 2^-16), mean 256, sd ≈ 16
    x = np.full(n, 1 + 2.0**-19, np.float32)
    k = int(np.sum(lowfp.quantize(x, "e4m3", rounding="stochastic16", seed=1) != 1))
    assert abs(k - 256) <= 6 * np.sqrt(n * 2.0**-16), k


def test_stochastic16_table_and_blockwise_codecs():
    x = np.random.default_rng(8).uniform(-1, 1, 50_000).astype(np.float32)
    lin = lowfp.Linear(4)
    a = lin.encode(x, rounding="stochastic16", seed=2, offset=7)
    np.testing.assert_array_equal(a, lin.encode(x, rounding="stochastic16", seed=2, offset=7))
    assert not np.array_equal(a, lin.encode(x, rounding="stochastic", seed=2, offset=7))
    # unbiased between neighbouring levels: the mean error of n draws of one value is
    # within 6 sd of 0 (each draw's error has sd at most half the level gap)
    lv = lin.levels
    v = np.float32(0.3)
    n = 200_000
    d = lin.decode(lin.encode(np.full(n, v), rounding="stochastic16", seed=4)).astype(np.float64)
    gap = float(np.diff(lv).max())
    assert abs(d.mean() - float(v)) <= 6 * (gap / 2) / np.sqrt(n)
    q = lowfp.quantize_blockwise(x, "mxfp4", rounding="stochastic16", seed=3)
    q2 = lowfp.quantize_blockwise(x, "mxfp4", rounding="stochastic16", seed=3)
    assert q.codes.tobytes() == q2.codes.tobytes()
    q32 = lowfp.quantize_blockwise(x, "mxfp4", rounding="stochastic", seed=3)
    assert q.codes.tobytes() != q32.codes.tobytes()


def test_stochastic16_argument_errors():
    x = np.ones(4, np.float32)
    with pytest.raises(ValueError, match="random_bits: only used with rounding='stochastic'"):
        lowfp.encode(x, "e4m3", rounding="stochastic16", random_bits=np.zeros(4, np.uint32))
    with pytest.raises(ValueError, match="rounding: expected one of"):
        lowfp.random_bits(4, rounding="nearest")
    with pytest.raises(ValueError, match="rounding: expected one of"):
        lowfp.Linear(4).encode(x, rounding="stochastic8")
