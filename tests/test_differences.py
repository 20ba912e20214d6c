"""Rule differences from peers, shown on the peers' own code (docs/codecs_interop.md, "Where
lowfp differs"): neither side is wrong, but a user comparing bits must know where they part.

torchao's low-bit optimizer states (``torchao.optim.quant_utils``): the same dynamic maps as
``lowfp.Dynamic`` (checked here), encoded by a binary search for the largest level ``q[i] <= x``
and then ``up iff fl32(x - q[i]) >= fl32(fl32(q[i+1] - q[i]) * 0.5)``. So an exact tie goes up
(to the larger level), where lowfp goes to the even code; and because the test is evaluated in
float32, an input within rounding error *below* a midpoint can also go up, where lowfp returns
the strictly nearer level.
"""

from fractions import Fraction

import numpy as np
import pytest

import lowfp

torch = pytest.importorskip("torch")
qu = pytest.importorskip("torchao.optim.quant_utils")

CASES = [(8, True), (8, False), (4, True), (4, False)]


def _torchao(bits, signed):
    q = np.array(
        qu.create_dynamic_map(signed) if bits == 8 else qu.create_dynamic_map(signed, 3, 4),
        np.float32,
    )
    fn = qu.quantize_8bit_with_qmap if bits == 8 else qu.quantize_4bit_with_qmap
    return q, lambda x: fn(torch.from_numpy(x), torch.from_numpy(q)).numpy().astype(np.int64)


@pytest.mark.parametrize("bits,signed", CASES)
def test_same_levels(bits, signed):
    q, _ = _torchao(bits, signed)
    assert np.array_equal(lowfp.Dynamic(bits, signed).levels, q)


@pytest.mark.parametrize("bits,signed", CASES)
def test_exact_ties_torchao_up_lowfp_even(bits, signed):
    q, ta = _torchao(bits, signed)
    mids = (q[:-1].astype(np.float64) + q[1:]) / 2
    exact = mids.astype(np.float32).astype(np.float64) == mids  # ties that float32 can hold
    assert exact.sum() >= 4
    lower = np.nonzero(exact)[0]
    x = mids[exact].astype(np.float32)
    lo = lowfp.Dynamic(bits, signed).encode(x).astype(np.int64)
    assert np.array_equal(ta(x), lower + 1)  # torchao: always the upper level
    assert np.array_equal(lo, np.where(lower % 2 == 0, lower, lower + 1))  # lowfp: even code
    # so they differ exactly at the ties whose lower code is even
    assert np.array_equal(ta(x) != lo, lower % 2 == 0)


@pytest.mark.parametrize("bits,signed", CASES)
def test_elsewhere_lowfp_is_nearest_and_torchao_only_errs_upward(bits, signed):
    # every float32 within 8 ulps of every midpoint: where the two differ, lowfp's level is
    # at least as near (exactly, in rationals) and torchao's is the upper one
    q, ta = _torchao(bits, signed)
    mids = ((q[:-1].astype(np.float64) + q[1:]) / 2).astype(np.float32)
    xs = [mids]
    up, down = mids.copy(), mids.copy()
    for _ in range(8):
        up = np.nextafter(up, np.float32(np.inf))
        down = np.nextafter(down, np.float32(-np.inf))
        xs += [up, down]
    x = np.concatenate(xs)
    x = x[(x >= q[0]) & (x <= q[-1])]
    t, lo = ta(x), lowfp.Dynamic(bits, signed).encode(x).astype(np.int64)
    diff = np.nonzero(t != lo)[0]
    assert diff.size
    strict = 0
    for i in diff:
        v = Fraction(float(x[i]))
        d_lo, d_ta = abs(v - Fraction(float(q[lo[i]]))), abs(v - Fraction(float(q[t[i]])))
        assert d_lo <= d_ta and t[i] == lo[i] + 1, (x[i], lo[i], t[i])
        strict += d_lo < d_ta
    if (bits, signed) == (8, True):
        # e.g. x = 1.9e-06 (float32), just below the midpoint of levels 128 and 129
        assert strict >= 1
