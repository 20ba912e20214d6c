"""IEEE P3109 formats (infinities without IEEE NaNs) against gfloat, the reference that
implements them (``gfloat.formats.format_info_p3109``): every code decodes to gfloat's value,
and every float16 and every bfloat16 input encodes to gfloat's code, bit for bit, under each
rounding mode gfloat defines (ties to even, ties away, toward zero/+inf/-inf, its
"StochasticFastest" stochastic rounding with the same random bits) and both overflow rules.

One rule difference is checked rather than skipped: with precision 1 (no mantissa bits) gfloat
breaks ties to nearest by the parity of the *code* (the exponent field), lowfp (like
ml_dtypes' float8_e8m0fnu) by the significand, which is 1 for every normal value, so its
ties go to the larger magnitude; the two differ exactly at such midpoints and nowhere else.
"""

import numpy as np
import pytest

import lowfp

gfloat = pytest.importorskip("gfloat")
ml_dtypes = pytest.importorskip("ml_dtypes")
from gfloat import RoundMode, decode_float, encode_ndarray, round_ndarray  # noqa: E402
from gfloat.formats import format_info_p3109  # noqa: E402
from gfloat.types import Domain, Signedness  # noqa: E402

TAILS = {
    "se": (Signedness.Signed, Domain.Extended),
    "sf": (Signedness.Signed, Domain.Finite),
    "ue": (Signedness.Unsigned, Domain.Extended),
    "uf": (Signedness.Unsigned, Domain.Finite),
}


def _formats(ks):
    out = []
    for k in ks:
        for p in range(1, k + 1):
            for tail in TAILS:
                signed = tail[0] == "s"
                if (signed and p == k) or k - p + (not signed) > 8:
                    continue  # no exponent bit / wider than lowfp's 8 exponent bits
                out.append((k, p, tail))
    return out


ALL = _formats(range(2, 9)) + [(10, 4, "se"), (12, 5, "ue"), (16, 8, "se"), (16, 11, "uf")]
# the formats each input is encoded to (every float16 and bfloat16 value)
ENCODE = [(8, p, t) for p in (1, 3, 4, 5, 7) for t in TAILS] + [
    (6, 3, "se"),
    (4, 2, "ue"),
    (3, 1, "se"),
    (12, 5, "se"),
]
MODES = {
    "nearest": RoundMode.TiesToEven,
    "nearest_away": RoundMode.TiesToAway,
    "toward_zero": RoundMode.TowardZero,
    "up": RoundMode.TowardPositive,
    "down": RoundMode.TowardNegative,
}


def _fi(k, p, tail):
    return format_info_p3109(k, p, *TAILS[tail])


def _name(k, p, tail):
    return f"p3109_k{k}p{p}{tail}"


@pytest.mark.parametrize("k,p,tail", ALL)
def test_every_code_decodes_as_gfloat(k, p, tail):
    fi, f = _fi(k, p, tail), lowfp.format(_name(k, p, tail))
    assert f.bits == k
    assert f.inf == (tail[1] == "e")
    codes = np.arange(1 << k, dtype=f.code_dtype)
    got = lowfp.decode(codes, f, dtype=np.float64)
    want = np.array([decode_float(fi, int(c)).fval for c in codes], np.float64)
    # the extremes of the values (gfloat's fi.max says 0.5 for k2p1se, which has no finite
    # value but 0: codes 0, inf, NaN, -inf)
    finite = want[np.isfinite(want)]
    assert f.max == finite.max()
    assert f.min_subnormal == (finite[finite > 0].min() if (finite > 0).any() else f.min_subnormal)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    assert np.array_equal(got[ok], want[ok])
    assert np.array_equal(np.signbit(got[ok]), np.signbit(want[ok]))  # no -0 in P3109


def test_names():
    f = lowfp.format("p3109_k8p4")
    assert f.name == "p3109_k8p4se"
    assert lowfp.format("binary8p4") == f == lowfp.format("e4m3infuz")
    assert (f.exp_bits, f.man_bits, f.bias, f.inf, f.nan) == (4, 3, 8, True, "negzero")
    assert lowfp.format(f.name) == f
    # the finite P3109 formats are the existing "fnuz" formats, under their names
    assert lowfp.format("p3109_k8p4sf").name == "float8_e4m3fnuz"
    assert lowfp.format("p3109_k8p3sf").name == "float8_e5m2fnuz"
    u = lowfp.format("p3109_k8p4ue")
    assert (u.signed, u.nan, u.inf, u.bias) == (False, "max", True, 16)
    # built from fields
    assert lowfp.Format(4, 3, nan="negzero", inf=True) == f
    with pytest.raises(ValueError, match="P3109"):
        lowfp.format("p3109_k8p8")
    with pytest.raises(ValueError, match="inf"):
        lowfp.Format(2, 1, nan="none", inf=True)


def _inputs(kind, signed):
    bits = np.arange(1 << 16, dtype=np.uint16)
    x = bits.view(np.float16) if kind == "float16" else bits.view(ml_dtypes.bfloat16)
    if not signed:  # negative values into an unsigned format are an error in lowfp
        x = x[~np.signbit(x.astype(np.float32)) | np.isnan(x.astype(np.float32))]
    return x


def _gfloat_codes(fi, x64, mode, sat, srbits=None):
    r = round_ndarray(fi, x64, mode, sat, srbits, 32 if srbits is not None else 0)
    return encode_ndarray(fi, r).astype(np.int64)


def _check(k, p, tail, got, want, x64, fmt):
    diff = got != want
    if p > 1 or not diff.any():
        assert not diff.any(), (
            f"{diff.sum()} differ, first at x={x64[diff][0]!r}: "
            f"lowfp {got[diff][0]:#x}, gfloat {want[diff][0]:#x}"
        )
        return
    # precision 1: only exact midpoints between the two codes' values differ, lowfp above
    a = lowfp.decode(got[diff].astype(fmt.code_dtype), fmt, dtype=np.float64)
    b = lowfp.decode(want[diff].astype(fmt.code_dtype), fmt, dtype=np.float64)
    mid = x64[diff]
    # a tie above the largest value overflows (to inf, or NaN in a finite format): the
    # value the next code would have is 2 max
    a = np.where(np.isfinite(a), a, 2 * fmt.max)
    assert np.array_equal(np.abs(a) + np.abs(b), 2 * np.abs(mid)), "not midpoints"
    assert (np.abs(a) > np.abs(b)).all()


@pytest.mark.parametrize("kind", ["float16", "bfloat16"])
@pytest.mark.parametrize("k,p,tail", ENCODE)
def test_encode_every_16_bit_input_as_gfloat(k, p, tail, kind):
    fi, f = _fi(k, p, tail), lowfp.format(_name(k, p, tail))
    x = _inputs(kind, tail[0] == "s")
    x64 = x.astype(np.float64)
    for rounding, mode in MODES.items():
        for overflow in ("nonfinite", "saturate") if rounding == "nearest" else ("nonfinite",):
            got = lowfp.encode(x, f, rounding=rounding, overflow=overflow).astype(np.int64)
            want = _gfloat_codes(fi, x64, mode, overflow == "saturate")
            if rounding in ("nearest", "nearest_away") or p > 1:
                _check(k, p, tail, got, want, x64, f)
            else:
                assert np.array_equal(got, want), rounding


@pytest.mark.parametrize("k,p,tail", [(8, 4, "se"), (8, 3, "ue"), (8, 1, "se"), (6, 3, "sf")])
def test_stochastic_as_gfloat_with_the_same_bits(k, p, tail):
    # lowfp rounds away from zero iff r < floor(frac * 2**32) (r: the uint32 random bits);
    # gfloat's StochasticFastest with 32 bits iff frac + s * 2**-32 >= 1: the same decision
    # for s = 2**32 - 1 - r (derivation in the module's docs of lowfp.encode's rounding).
    fi, f = _fi(k, p, tail), lowfp.format(_name(k, p, tail))
    for kind in ("float16", "bfloat16"):
        x = _inputs(kind, tail[0] == "s")
        r = lowfp.random_bits(x.size, seed=7)
        got = lowfp.encode(x, f, rounding="stochastic", random_bits=r).astype(np.int64)
        s = (np.uint64(2**32 - 1) - r.astype(np.uint64)).astype(np.int64)
        want = _gfloat_codes(fi, x.astype(np.float64), RoundMode.StochasticFastest, False, s)
        assert np.array_equal(got, want), kind


def test_quantize_keeps_infinities_and_nan():
    f = lowfp.format("p3109_k8p4")
    x = np.array([1e9, -1e9, np.inf, -np.inf, np.nan, 232.0, 240.0], np.float32)
    q = lowfp.quantize(x, f)
    assert np.array_equal(q[[0, 1, 2, 3, 6]], [np.inf, -np.inf, np.inf, -np.inf, np.inf])
    assert np.isnan(q[4]) and q[5] == 224.0  # 232 is the midpoint: ties to even (0x7E)
    assert np.array_equal(lowfp.encode(x, f, overflow="saturate")[[0, 2, 3]], [0x7E, 0x7E, 0xFE])


def test_precision_1_ties_go_up_where_gfloat_goes_to_the_even_code():
    # 6 is the midpoint of 4 (code 0x42) and 8 (0x43): gfloat keeps the even code, lowfp
    # (as ml_dtypes for float8_e8m0fnu) goes up; 3 (between 0x41 and 0x42) agrees
    from gfloat import round_float

    fi, f = _fi(8, 1, "se"), lowfp.format("p3109_k8p1")
    x = np.array([3.0, 6.0], np.float32)
    assert lowfp.quantize(x, f).tolist() == [4.0, 8.0]
    assert [round_float(fi, float(v)) for v in x] == [4.0, 4.0]


def test_cuda_inputs_are_refused_not_mis_encoded():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    x = torch.ones(4, device="cuda")
    with pytest.raises(ValueError, match="CPU only"):
        lowfp.encode(x, "p3109_k8p4")


@pytest.mark.parametrize("k,p,tail", [(8, 4, "se"), (8, 3, "ue"), (8, 5, "sf"), (12, 5, "se")])
def test_float32_and_float64_inputs_as_gfloat(k, p, tail):
    # float32 runs the core's vectorized fast path, float64 the element path: both against
    # gfloat on random bit patterns (every exponent) plus the midpoints next to max
    fi, f = _fi(k, p, tail), lowfp.format(_name(k, p, tail))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2**32, 100_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    top = f.max + f.max * 2.0 ** -(p - 1) / 2 * np.array([0.5, 1, 1.5])  # ties at the top
    x = np.concatenate([x, top.astype(np.float32), -top.astype(np.float32)])
    if tail[0] == "u":
        x = np.abs(x)
    for xs in (x, x.astype(np.float64)):
        for rounding, mode in MODES.items():
            got = lowfp.encode(xs, f, rounding=rounding).astype(np.int64)
            want = _gfloat_codes(fi, xs.astype(np.float64), mode, False)
            assert np.array_equal(got, want), (xs.dtype, rounding)
