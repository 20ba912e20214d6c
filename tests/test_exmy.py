"""ExMy encode/decode/quantize, compared bit for bit with ml_dtypes and gfloat."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lowfp
from conftest import ML_DTYPES, SHARED_SMALL, SMALL, ml_dtypes, ml_encode

gfloat = pytest.importorskip("gfloat")


def _comparable(x: np.ndarray, f: lowfp.Format) -> np.ndarray:
    """Inputs on which ml_dtypes defines the answer lowfp also gives.

    Excluded, each a documented difference: NaN into a format without NaN (lowfp raises,
    ml_dtypes returns an arbitrary code); negatives into an unsigned format (lowfp raises);
    zero into a zero-less format (E8M0: lowfp gives the smallest value, ml_dtypes NaN).
    """
    xf = x.astype(np.float64)
    ok = np.ones(x.shape, bool)
    if not f.has_nan:
        ok &= ~np.isnan(xf)
    if not f.signed:
        ok &= ~(xf < 0) & ~(np.isnan(xf) & np.signbit(xf))
    if not f.has_zero:
        ok &= xf != 0
    if f.name == "float8_e8m0fnu":
        # ml_dtypes misrounds float32 subnormal inputs into E8M0: 1.157·2^-127 becomes 2^-126
        # although 2^-127 is nearer. lowfp returns the nearest value (test_e8m0_tiny_inputs).
        ok &= ~(np.abs(xf) < 2.0**-126)
    return ok


def _assert_codes_equal(got: np.ndarray, want: np.ndarray, x: np.ndarray, f: lowfp.Format):
    """Equal codes, except that any NaN code matches any NaN code (payloads may differ)."""
    got_nan = np.isnan(lowfp.decode(got, f))
    want_nan = np.isnan(lowfp.decode(want, f))
    np.testing.assert_array_equal(got_nan, want_nan)
    bad = np.flatnonzero((got != want) & ~got_nan)
    assert bad.size == 0, (
        f"{f.name}: {bad.size} mismatches, first x={x.reshape(-1)[bad[0]]!r} "
        f"got {got.reshape(-1)[bad[0]]:#x} want {want.reshape(-1)[bad[0]]:#x}"
    )


def _check_against_ml(x: np.ndarray, name: str):
    f = lowfp.format(name)
    x = x[_comparable(x, f)]
    _assert_codes_equal(lowfp.encode(x, f), ml_encode(x, name), x, f)


# ---------------------------------------------------------------- every code, every input


@pytest.mark.parametrize("name", SMALL)
@pytest.mark.parametrize(
    "rounding", ["nearest", "nearest_away", "toward_zero", "up", "down", "stochastic"]
)
def test_every_code_round_trips(name, rounding):
    f = lowfp.format(name)
    codes = np.arange(1 << f.bits, dtype=np.uint8)
    values = lowfp.decode(codes, f)
    again = lowfp.encode(values, f, rounding=rounding, seed=1)
    nan = np.isnan(values)
    assert np.isnan(lowfp.decode(again[nan], f)).all()
    if f.nan == "negzero":  # no -0: 0x80 is NaN, and 0 stays 0x00
        assert again[0] == 0
    np.testing.assert_array_equal(again[~nan], codes[~nan])


@pytest.mark.parametrize("name", SHARED_SMALL)
def test_decode_every_code_matches_ml_dtypes(name):
    f = lowfp.format(name)
    codes = np.arange(1 << f.bits, dtype=np.uint8)
    want = codes.view(ML_DTYPES[name]).astype(np.float64)
    got = lowfp.decode(codes, f, dtype=np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_array_equal(got[ok], want[ok])
    np.testing.assert_array_equal(np.signbit(got[ok]), np.signbit(want[ok]))
    np.testing.assert_array_equal(f.values[ok], want[ok])


@pytest.mark.parametrize("name", SHARED_SMALL + ["bfloat16"])
def test_every_float16_input_matches_ml_dtypes(name):
    x = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    _check_against_ml(x, name)


@pytest.mark.parametrize("name", SHARED_SMALL + ["float16"])
def test_every_bfloat16_input_matches_ml_dtypes(name):
    x = np.arange(1 << 16, dtype=np.uint16).view(ml_dtypes.bfloat16)
    _check_against_ml(x, name)


def _boundary_f32(f: lowfp.Format) -> np.ndarray:
    """Ties, their neighbours, subnormal edges, max, overflow thresholds, ±0, inf, NaN."""
    v = np.unique(f.values[np.isfinite(f.values)])
    mids = (v[:-1] + v[1:]) / 2  # exact in float64; exact in float32 for ≤ 8-bit formats
    edge = np.concatenate(
        [
            v,
            mids,
            [
                f.max * 1.0625,
                f.max * 1.125,
                f.max * 2,
                f.max * 1e6,
                f.min_subnormal / 2,
                f.min_subnormal / 4,
            ],
        ]
    )
    e32 = edge.astype(np.float32)
    up = np.nextafter(e32, np.float32(np.inf))
    down = np.nextafter(e32, np.float32(-np.inf))
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, 3.4e38], np.float32)
    out = np.concatenate([e32, up, down, specials])
    return np.concatenate([out, -out])


@pytest.mark.parametrize("name", SHARED_SMALL + ["bfloat16", "float16"])
def test_random_and_boundary_float32_match_ml_dtypes(name):
    rng = np.random.default_rng(1234)
    bits = rng.integers(0, 2**32, size=1 << 20, dtype=np.uint64).astype(np.uint32)
    x_random = bits.view(np.float32)
    f = lowfp.format(name)
    # values in the format's range, where rounding decides (uniform bit patterns are mostly
    # huge or tiny for an 8-bit format)
    scale = np.float32(f.max)
    x_range = (rng.standard_normal(1 << 20) * scale / 8).astype(np.float32)
    x = np.concatenate([x_random, x_range, _boundary_f32(f) if f.bits <= 8 else x_range[:0]])
    _check_against_ml(x, name)


def test_e8m0_tiny_inputs():
    x = np.array(
        [2.0**-127 * 1.157, 2.0**-127 * 1.49, 2.0**-127 * 1.51, 2.0**-130, 1e-45], np.float32
    )
    assert list(lowfp.encode(x, "e8m0")) == [0, 0, 1, 0, 0]


# ---------------------------------------------------------------- float64: one rounding


def test_float64_rounds_once_where_ml_dtypes_rounds_twice():
    # 1 + 2^-4 + 2^-30 lies just above the midpoint of 1.0 and 1.125 in E4M3. Correct
    # rounding gives 1.125 (0x39). ml_dtypes converts float64 through float32, where the
    # value becomes the exact midpoint 1 + 2^-4, then ties to even: 1.0 (0x38).
    x = np.array([1 + 2.0**-4 + 2.0**-30, -(1 + 2.0**-4 + 2.0**-30)])
    assert list(lowfp.encode(x, "e4m3")) == [0x39, 0xB9]
    assert list(ml_encode(x, "float8_e4m3fn")) == [0x38, 0xB8]  # the documented difference
    assert list(lowfp.quantize(x, "e4m3")) == [1.125, -1.125]


def _gfloat_info(f: lowfp.Format):
    high = {"ieee": 2**f.man_bits - 1, "max": 1, "negzero": 0, "none": 0}[f.nan]
    return gfloat.FormatInfo(
        f.name,
        f.bits,
        f.man_bits + 1,
        bias=f.bias,
        is_signed=f.signed,
        domain=gfloat.types.Domain.Extended if f.inf else gfloat.types.Domain.Finite,
        has_nz=f.nan != "negzero",
        num_high_nans=high,
        has_subnormals=f.subnormals,
        is_twos_complement=False,
    )


GF_MODES = {
    "nearest": "TiesToEven",
    "nearest_away": "TiesToAway",
    "toward_zero": "TowardZero",
    "up": "TowardPositive",
    "down": "TowardNegative",
}

# Formats gfloat and lowfp both define, beyond the named ones: various E/M/bias/variants.
GENERIC = [
    "e3m3",
    "e2m2",
    "e5m1",
    "e4m2fnuz",
    "e3m4b5",
    "e4m0fn",
    "e6m1f",
    "e2m5fn",
    "e5m3b20",
    "e4m4fnuz",
    "e3m2b-1",
    "e4m3fn",
    "e5m2",
    "e2m1",
    "e8m0",
    "e3m3u",
    "e4m3fnu",
    "e5m6",
    "e1m4f",
    "e6m9",
]


def _gfloat_values(f, x, mode, sat=False):
    fi = _gfloat_info(f)
    rnd = getattr(gfloat.RoundMode, GF_MODES[mode])
    sat = sat or not f.has_nan  # lowfp's "nonfinite" saturates where there is no NaN
    return np.array([gfloat.round_float(fi, float(v), rnd, sat) for v in x])


def _sample_f64(f: lowfp.Format, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mag = np.exp2(rng.uniform(np.log2(f.min_subnormal) - 2, np.log2(f.max) + 1, n))
    x = mag * rng.choice([-1.0, 1.0], n) if f.signed else mag
    v = f.values[np.isfinite(f.values)] if f.bits <= 16 else np.array([])
    mids = (np.unique(v)[:-1] + np.unique(v)[1:]) / 2 if v.size else v
    return np.concatenate([x, mids, np.nextafter(mids, np.inf), np.nextafter(mids, -np.inf)])


def _exact_reference(f: lowfp.Format, x: np.ndarray, mode: str) -> np.ndarray:
    """Round with exact rational arithmetic against the table of finite values."""
    from fractions import Fraction

    v = np.unique(f.values[np.isfinite(f.values)])
    out = []
    for xi in x:
        i = np.searchsorted(v, xi)
        if i < len(v) and v[i] == xi:
            out.append(xi)
            continue
        lo, hi = v[i - 1], v[i]  # the test only asks inside the range
        d_lo = Fraction(float(xi)) - Fraction(float(lo))
        d_hi = Fraction(float(hi)) - Fraction(float(xi))
        toward_zero = hi if xi < 0 else lo
        away = lo if xi < 0 else hi
        if mode == "toward_zero":
            r = toward_zero
        elif mode == "up":
            r = hi
        elif mode == "down":
            r = lo
        elif d_lo != d_hi:
            r = lo if d_lo < d_hi else hi
        elif mode == "nearest" and f.man_bits == 0 and 0.0 in (lo, hi):
            r = 0.0  # the significand of 0 is even, every other one is 1 (odd)
        elif mode == "nearest_away" or f.man_bits == 0:
            r = away
        else:  # ties to the even code
            r = lo if int(np.flatnonzero(f.values == lo)[0]) % 2 == 0 else hi
        out.append(r)
    return np.array(out)


@pytest.mark.parametrize("name", GENERIC)
@pytest.mark.parametrize("mode", list(GF_MODES))
def test_generic_formats_float64_match_gfloat(name, mode):
    f = lowfp.format(name)
    x = _sample_f64(f, 1500, seed=hash((name, mode)) % 2**32)
    # gfloat misrounds some values below the smallest subnormal (e.g. e3m3: it rounds
    # 0.015624999999999998, just under half of 0.03125, up to 0.03125 with TiesToAway) and
    # returns values below the smallest value of formats without subnormals (E8M0). Those
    # inputs are checked against an exact rational reference instead.
    tiny = np.abs(x) < (f.min_subnormal if f.has_zero else f.min_normal)
    xs, x = x[tiny], x[~tiny]
    want = _gfloat_values(f, x, mode)
    if f.man_bits == 0 and mode == "nearest":
        # Documented difference: with no mantissa bits every significand is 1 (odd), and a
        # tie rounds away from zero, as ml_dtypes does for E8M0 (3.0 -> 4.0); gfloat instead
        # picks the even *code*. At ties, expect the away-from-zero value.
        want = np.where(want != (away := _gfloat_values(f, x, "nearest_away")), away, want)
    got = lowfp.quantize(x, f, rounding=mode)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    bad = np.flatnonzero(got[ok] != want[ok])
    assert bad.size == 0, f"x={x[ok][bad[0]]!r} got {got[ok][bad[0]]!r} want {want[ok][bad[0]]!r}"
    if f.has_zero:
        np.testing.assert_array_equal(
            lowfp.quantize(xs, f, rounding=mode), _exact_reference(f, xs, mode)
        )
    else:  # no zero: everything below the smallest value becomes the smallest value
        np.testing.assert_array_equal(
            lowfp.quantize(xs, f, rounding=mode), np.full(xs.size, f.min_normal)
        )


@pytest.mark.parametrize("name", ["e4m3", "e5m2", "e2m1", "e3m3", "e4m2fnuz"])
def test_saturate_matches_gfloat(name):
    f = lowfp.format(name)
    x = _sample_f64(f, 800, seed=7)
    x = np.concatenate([x, [f.max * 3, -f.max * 3, np.inf, -np.inf]])
    want = _gfloat_values(f, x, "nearest", sat=True)
    got = lowfp.quantize(x, f, overflow="saturate")
    np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------- dtypes and torch


def test_quantize_keeps_dtype_and_torch_round_trip():
    torch = pytest.importorskip("torch")
    x = torch.randn(1000, dtype=torch.bfloat16)
    q = lowfp.quantize(x, "e4m3")
    assert q.dtype == torch.bfloat16
    want = lowfp.decode(lowfp.encode(x.float().numpy(), "e4m3"), "e4m3")
    np.testing.assert_array_equal(q.float().numpy(), want)
    codes = lowfp.encode(x, "e4m3")
    assert isinstance(codes, torch.Tensor) and codes.dtype == torch.uint8
    xs = torch.randn(10, 10)[:, ::2]  # non-contiguous input is copied, same answer
    np.testing.assert_array_equal(
        lowfp.encode(xs, "e5m2").numpy(), lowfp.encode(xs.contiguous().numpy(), "e5m2")
    )


def test_quantize_float16_matches_encode_decode():
    x = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    x = x[np.isfinite(x)]
    q = lowfp.quantize(x, "e4m3", overflow="saturate")
    assert q.dtype == np.float16
    want = lowfp.decode(lowfp.encode(x, "e4m3", overflow="saturate"), "e4m3")
    np.testing.assert_array_equal(q.astype(np.float32), want)
    with pytest.raises(ValueError, match="not all exact in float16"):
        lowfp.quantize(x, "bfloat16")


def test_shapes_are_kept():
    x = np.random.default_rng(0).standard_normal((3, 4, 5)).astype(np.float32)
    assert lowfp.encode(x, "e2m1").shape == (3, 4, 5)
    assert lowfp.decode(lowfp.encode(x, "e2m1"), "e2m1").shape == (3, 4, 5)
    assert lowfp.quantize(x, "e2m1").shape == (3, 4, 5)
    assert lowfp.encode(np.float32(1.5), "e2m1").shape == ()


# ---------------------------------------------------------------- property: exact rounding


@settings(max_examples=400, deadline=None)
@given(
    name=st.sampled_from(
        ["e4m3", "e5m2", "e2m1", "e3m3", "e4m2fnuz", "e2m3", "e3m2u", "e4m3b11fnuz", "e1m2f"]
    ),
    mode=st.sampled_from(list(GF_MODES)),
    frac=st.floats(0, 1, allow_nan=False),
)
def test_rounding_matches_exact_reference(name, mode, frac):
    """Any float64 inside the range rounds as exact rational arithmetic says."""
    f = lowfp.format(name)
    v = np.unique(f.values[np.isfinite(f.values)])
    x = np.array([v[0] + frac * (v[-1] - v[0])])
    np.testing.assert_array_equal(lowfp.quantize(x, f, rounding=mode), _exact_reference(f, x, mode))


# ---------------------------------------------------------------- the direct index
# Encoding float32 to nearest into a format of at most 8 bits goes through a direct index
# (2^16 buckets) once a call has 2^20 or more elements (the index is then kept, so smaller
# calls use it too). These calls are that large on purpose; every float16 value, repeated,
# and the boundary set cover every kind of bucket, compared with ml_dtypes (and the inputs the
# index leaves to the encoder: NaN, inf, errors).

BIG = 1 << 20


def _big(x: np.ndarray) -> np.ndarray:
    reps = -(-2 * BIG // x.size)
    return np.tile(x, reps)


@pytest.mark.parametrize("name", SHARED_SMALL)
@pytest.mark.parametrize("overflow", ["nonfinite", "saturate"])
def test_direct_index_matches_ml_dtypes_and_the_encoder(name, overflow):
    f = lowfp.format(name)
    x16 = np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(np.float32)
    x = _big(np.concatenate([x16, _boundary_f32(f)]))
    x = x[_comparable(x, f)]
    assert x.size >= BIG
    got = lowfp.encode(x, f, overflow=overflow)
    if overflow == "nonfinite":
        _assert_codes_equal(got, ml_encode(x, name), x, f)
    # the same codes element by element through the float64 encoder (no index there; float32
    # values are exact in float64, so the rounding is the same)
    want = lowfp.encode(x.astype(np.float64), f, overflow=overflow)
    _assert_codes_equal(got, want, x, f)


def test_direct_index_leaves_errors_and_nan_options_to_the_encoder():
    x = _big(np.linspace(-7, 7, 4099, dtype=np.float32))
    x[BIG - 3] = np.nan
    with pytest.raises(ValueError, match=f"element {BIG - 3}"):
        lowfp.encode(x, "float4_e2m1fn")
    zero = lowfp.encode(x, "float4_e2m1fn", nan="zero")
    assert zero[BIG - 3] == 0
    ok = np.arange(x.size) != BIG - 3
    _assert_codes_equal(
        zero[ok],
        lowfp.encode(x[ok].astype(np.float64), "float4_e2m1fn"),
        x[ok],
        lowfp.format("float4_e2m1fn"),
    )
    with pytest.raises(ValueError, match="negative"):
        lowfp.encode(np.abs(x[ok]) * -1 - 1, "float8_e8m0fnu")


def test_flush_to_zero_changes_no_bits():
    """`torch.set_flush_denormal(True)` sets the CPU's flush-to-zero and denormals-are-zero
    flags for the whole thread. Codecs are bit operations, exact either way: every encode,
    decode and quantize gives the same bits as without the flags (e8m0's 2^-127 decoded to
    0 before its float32 value was built from bits)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    x = rng.integers(0, 2**32, 1 << 16, dtype=np.uint64).astype(np.uint32)
    # the lowest 2^16 float32 subnormal patterns, of both signs
    x = np.concatenate(
        [x, np.arange(1 << 16, dtype=np.uint32), np.arange(1 << 16, dtype=np.uint32) | 0x8000_0000]
    )
    x = x.view(np.float32)
    x = np.where(np.isnan(x), np.float32(0), x)

    def run() -> dict:
        got = {}
        for f in lowfp.formats():
            opts = {"nan": "zero", "negative": "clamp"}
            for rounding in ("nearest", "stochastic16"):
                got[f.name, rounding] = lowfp.encode(x, f, rounding=rounding, seed=1, **opts)
            if f.bits <= 16:
                got[f.name, "quantize"] = lowfp.quantize(x, f, **opts).view(np.uint32)
            if f.bits <= 8:
                codes = np.arange(1 << f.bits, dtype=np.uint8)
                for dtype in ("float32", "bfloat16"):
                    got[f.name, dtype] = lowfp.decode(np.tile(codes, 256), f, dtype=dtype).view(
                        np.uint8
                    )
        return got

    want = run()
    torch.set_flush_denormal(True)
    try:
        got = run()
    finally:
        torch.set_flush_denormal(False)
    assert want.keys() == got.keys()
    differ = [k for k in want if not np.array_equal(want[k], got[k])]
    assert not differ, differ
