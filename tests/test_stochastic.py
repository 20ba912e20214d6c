"""Reproducible stochastic rounding: exactness, probabilities, thread/chunk independence."""

import numpy as np
import pytest

import lowfp


@pytest.mark.parametrize("name", ["e4m3", "e5m2", "e2m1", "bfloat16", "e3m2"])
@pytest.mark.parametrize("p", [0.001, 0.25, 0.5, 0.9])
def test_probability_of_rounding_up_equals_the_fraction(name, p):
    f = lowfp.format(name)
    lo = np.float64(1.0)
    hi = lo + f.eps  # next value above 1.0
    x = lo + p * (hi - lo)
    n = 200_000
    q = lowfp.quantize(np.full(n, x), f, rounding="stochastic", seed=42)
    assert set(np.unique(q)) <= {lo, hi}
    k = int(np.sum(q == hi))
    # k ~ Binomial(n, p): mean n·p, standard deviation sqrt(n·p·(1−p)). Six standard
    # deviations gives a false failure probability below 2e-9 per case.
    sd = np.sqrt(n * p * (1 - p))
    assert abs(k - n * p) <= 6 * sd, (k, n * p, sd)
    # negative inputs mirror: away from zero with the same probability
    qn = lowfp.quantize(np.full(n, -x), f, rounding="stochastic", seed=43)
    assert abs(int(np.sum(qn == -hi)) - n * p) <= 6 * sd


def test_resolution_is_exactly_the_discarded_fraction_with_given_bits():
    # x = 1 + 3/8 ulp of E4M3 (ulp 2^-3 at 1.0): the discarded fraction is 3/8, i.e.
    # floor(3/8 · 2^32) = 0x60000000. r < that rounds up, r ≥ that rounds down.
    x = np.full(4, 1.0 + 3 / 8 * 2.0**-3)
    r = np.array([0, 0x5FFFFFFF, 0x60000000, 0xFFFFFFFF], np.uint32)
    codes = lowfp.encode(x, "e4m3", rounding="stochastic", random_bits=r)
    assert list(codes) == [0x39, 0x39, 0x38, 0x38]


@pytest.mark.parametrize("name", ["e4m3", "e2m1", "e5m2"])
def test_exact_inputs_never_move(name):
    f = lowfp.format(name)
    v = f.values[np.isfinite(f.values)]
    x = np.tile(v, 200)
    for seed in range(3):
        np.testing.assert_array_equal(lowfp.quantize(x, f, rounding="stochastic", seed=seed), x)


def test_same_seed_same_bits_any_thread_count_and_chunking():
    x = np.random.default_rng(5).standard_normal(300_001).astype(np.float32) * 10
    results = []
    for n in (1, 2, 3):
        lowfp.set_num_threads(n)
        results.append(lowfp.encode(x, "e4m3", rounding="stochastic", seed=9, stream=2))
    lowfp.set_num_threads(0)
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    # encoding in pieces with offsets gives the same codes as one call
    cut = [0, 1, 70_000, 123_457, 300_001]
    pieces = [
        lowfp.encode(x[a:b], "e4m3", rounding="stochastic", seed=9, stream=2, offset=a)
        for a, b in zip(cut[:-1], cut[1:])
    ]
    np.testing.assert_array_equal(np.concatenate(pieces), results[0])
    # a different seed or stream changes the bits
    assert not np.array_equal(lowfp.encode(x, "e4m3", rounding="stochastic", seed=10), results[0])
    assert not np.array_equal(
        lowfp.encode(x, "e4m3", rounding="stochastic", seed=9, stream=3), results[0]
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
