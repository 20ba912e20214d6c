"""Linear, dynamic and logarithmic element codecs."""

import numpy as np
import pytest

import lowfp


def test_dynamic_map_equals_bitsandbytes():
    F = pytest.importorskip("bitsandbytes.functional")
    for bits in (8, 4):
        for signed in (True, False):
            want = F.create_dynamic_map(
                signed=signed, max_exponent_bits=bits - 1, total_bits=bits
            ).numpy()
            got = lowfp.Dynamic(bits, signed).levels
            # bitsandbytes pads the 4-bit map to 256 entries with zeros; its levels are the
            # distinct values
            want = np.unique(want) if bits == 4 else want
            np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_linear_levels():
    want = (np.arange(-3, 4) / 3).astype(np.float32)
    np.testing.assert_array_equal(lowfp.Linear(3).levels, want)
    third = [np.float32(1 / 3), np.float32(2 / 3)]
    assert lowfp.Linear(2, signed=False).levels.tolist() == [0, *third, 1]
    assert lowfp.Linear(2, signed=False, zero=False).levels.tolist() == [0.25, 0.5, 0.75, 1]


def test_log_levels():
    lv = lowfp.Log(3, alpha=0.5).levels
    assert lv.tolist() == [0, 2.0**-6, 2.0**-5, 2.0**-4, 2.0**-3, 2.0**-2, 0.5, 1]
    lv = lowfp.Log(2, signed=True, alpha=0.25).levels
    assert lv.tolist() == [-1, 0, 1]


@pytest.mark.parametrize("codec", [lowfp.Linear(4), lowfp.Dynamic(8), lowfp.Log(4, alpha=0.6)])
def test_levels_round_trip_and_stochastic_is_unbiased(codec):
    lv = codec.levels
    np.testing.assert_array_equal(codec.encode(lv), np.arange(lv.size))
    np.testing.assert_array_equal(
        codec.encode(lv, rounding="stochastic", seed=3), np.arange(lv.size)
    )
    lo, hi = lv[-3], lv[-2]
    x = np.full(100_000, lo + (hi - lo) * 0.3, np.float32)
    y = codec.decode(codec.encode(x, rounding="stochastic", seed=1))
    # Bernoulli(0.3) between lo and hi: mean error within 6 standard deviations of the mean
    sd = (hi - lo) * np.sqrt(0.3 * 0.7 / x.size)
    assert abs(y.astype(np.float64).mean() - x[0]) < 6 * sd


def test_errors():
    with pytest.raises(ValueError, match="bits"):
        lowfp.Dynamic(6)
    with pytest.raises(ValueError, match="alpha"):
        lowfp.Log(3, alpha=1.5)
    with pytest.raises(ValueError, match="zero"):
        lowfp.Linear(3, signed=True, zero=False)
    with pytest.raises(ValueError, match="codes"):
        lowfp.Linear(2).decode(np.array([4], np.uint8))
    with pytest.raises(ValueError, match="x: element 1 is NaN"):
        lowfp.Linear(4).encode(np.array([0.0, np.nan], np.float32))
    with pytest.raises(ValueError, match="rounding"):
        lowfp.Linear(4).encode(np.zeros(2, np.float32), rounding="up")
