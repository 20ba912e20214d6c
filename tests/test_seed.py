"""seed=None draws fresh keys from lowfp's global generator; an explicit seed is unchanged."""

import threading

import numpy as np
import pytest

import lowfp
from lowfp import _seed

X = (np.arange(24, dtype=np.float32) - 11.5) / 7
Y = np.sin(np.arange(64, dtype=np.float32))

# Codes computed by lowfp before seed=None became the default (commit 0ce3b3e): an explicit
# seed must keep giving exactly these bits.
GOLDEN = {
    "encode": (
        lambda: lowfp.encode(X, "e4m3", rounding="stochastic", seed=1234),
        "bebcbbb9b8b7b4b3b0aba59919262b3033343738393b3c3d",
    ),
    "encode_f64_key": (
        lambda: lowfp.encode(
            X.astype(np.float64), "e2m1", rounding="stochastic", seed=2**64 - 1, stream=3, offset=5
        ),
        "0b0b0b0a0a0a090a09090908010101010101020203020303",
    ),
    "linear": (
        lambda: lowfp.Linear(4).encode(X / 2, rounding="stochastic", seed=3),
        "01020202030405050505060708080808090a0a0b0b0c0c0d",
    ),
    "dynamic": (
        lambda: lowfp.Dynamic(8).encode(X / 2, rounding="stochastic", seed=4, stream=2),
        "0c11171b21252a30353a3f56a8bfc4caced3d8dee3e7edf2",
    ),
    "log": (
        lambda: lowfp.Log(4, signed=True).encode(X / 2, rounding="stochastic", seed=6),
        "010101010101020202030305090b0b0c0c0d0d0d0d0e0e0d",
    ),
    "blockwise_linear": (
        lambda: (
            lowfp.quantize_blockwise(
                Y, lowfp.Linear(4), block_size=16, rounding="stochastic", seed=5
            ).codes
        ),
        "d78d12c5ad03a3be1582dd1760dd2950eb4a20e96d10d88e02c59e03a3be0582",
    ),
    "blockwise_mxfp4": (
        lambda: lowfp.quantize_blockwise(Y, "mxfp4", rounding="stochastic", seed=8, stream=1).codes,
        "7027ff7c57fe5f67fd2f77f9af77f4df76e6ff74a7ff7127ff7d57fe5e77fd2f",
    ),
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_explicit_seed_gives_the_bits_of_before(name):
    fn, want = GOLDEN[name]
    assert np.asarray(fn()).tobytes().hex() == want


def test_explicit_seed_quantize_and_random_bits_as_before():
    got = lowfp.quantize(X, "e3m2", rounding="stochastic", seed=99)
    want = bytes.fromhex(
        "0000c0bf0000c0bf0000c0bf000080bf000080bf000060bf000040bf000020bf000000bf0000c0be"
        "000080be000080bd0000803d0000403e0000a03e0000003f0000203f0000403f0000603f0000803f"
        "0000a03f0000a03f0000c03f0000e03f"
    )
    assert got.tobytes() == want
    assert lowfp.random_bits(6, seed=7, stream=1, offset=2).tolist() == [
        1336687403,
        967634028,
        3811124719,
        3650029248,
        3298120932,
        1490301548,
    ]


def test_keys_are_splitmix64():
    # Vigna's splitmix64 seeded with 0: first outputs 0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4
    lowfp.manual_seed(0)
    assert _seed.next_seed() == 0xE220A8397B1DCDAF
    assert _seed.next_seed() == 0x6E789E6AA1B965F4
    lowfp.manual_seed(0)
    assert np.array_equal(lowfp.random_bits(5), lowfp.random_bits(5, seed=0xE220A8397B1DCDAF))


CALLS = {
    "encode": lambda: lowfp.encode(X, "e4m3", rounding="stochastic"),
    "quantize": lambda: lowfp.quantize(X, "e4m3", rounding="stochastic"),
    "random_bits": lambda: lowfp.random_bits(24),
    "linear": lambda: lowfp.Linear(4).encode(X / 2, rounding="stochastic"),
    "blockwise": lambda: lowfp.quantize_blockwise(Y, "mxfp4", rounding="stochastic").codes,
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_default_seed_differs_between_calls_and_manual_seed_repeats(name):
    call = CALLS[name]
    lowfp.manual_seed(123)
    a, b = call(), call()
    assert not np.array_equal(a, b)  # fresh bits each call (the old default repeated them)
    lowfp.manual_seed(123)
    assert np.array_equal(call(), a) and np.array_equal(call(), b)
    lowfp.manual_seed(124)
    assert not np.array_equal(call(), a)


def test_only_calls_that_use_random_bits_draw_keys():
    lowfp.manual_seed(7)
    want = lowfp.random_bits(8)
    lowfp.manual_seed(7)
    lowfp.encode(X, "e4m3")  # round to nearest: no key
    lowfp.encode(X, "e4m3", rounding="stochastic", random_bits=np.zeros(24, np.uint32))
    lowfp.quantize_blockwise(Y, "mxfp4")
    assert np.array_equal(lowfp.random_bits(8), want)


def test_keys_are_drawn_once_each_across_threads():
    lowfp.manual_seed(99)
    serial = {_seed.next_seed() for _ in range(4000)}
    lowfp.manual_seed(99)
    drawn = [[] for _ in range(8)]

    def work(k):
        drawn[k].extend(_seed.next_seed() for _ in range(500))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    keys = [k for d in drawn for k in d]
    assert len(set(keys)) == 4000 and set(keys) == serial


def test_fresh_keys_make_repeated_rounding_unbiased():
    # One value, rounded 4000 times with seed=None. 1.2 lies between the E2M1 values 1.0 and
    # 1.5: it rounds up with probability p = 0.4, so a rounded value has mean 1.2 and standard
    # deviation 0.5 * sqrt(p (1 - p)) = 0.245. Over n = 4000 independent calls the mean is
    # within 6 sd / sqrt(n) = 0.023 of 1.2 except with probability ~2e-9. (With the old
    # default seed=0 every call gave the same value, 1.0 or 1.5.)
    lowfp.manual_seed(2024)
    x = np.array([1.2], np.float32)
    n = 4000
    y = np.array([lowfp.quantize(x, "e2m1", rounding="stochastic")[0] for _ in range(n)])
    assert set(np.unique(y)) == {1.0, 1.5}
    assert abs(y.mean() - 1.2) < 6 * 0.5 * np.sqrt(0.4 * 0.6) / np.sqrt(n)


def test_manual_seed_arguments():
    lowfp.manual_seed(np.uint64(2**64 - 1))
    lowfp.manual_seed(-1)  # modulo 2**64, as torch
    a = lowfp.random_bits(4)
    lowfp.manual_seed(2**64 - 1)
    assert np.array_equal(lowfp.random_bits(4), a)
    with pytest.raises(ValueError, match=r"seed: expected -2\*\*63 <= seed < 2\*\*64"):
        lowfp.manual_seed(2**64)
    with pytest.raises(TypeError, match="seed: expected an int"):
        lowfp.manual_seed(1.5)
    with pytest.raises(ValueError, match=r"seed: expected an int with 0 <= seed < 2\*\*64"):
        lowfp.random_bits(3, seed=-1)
