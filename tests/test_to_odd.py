"""rounding="to_odd": truncate toward zero; if any discarded bit is non-zero, set the lowest
kept significand bit. Overflow as for "toward_zero".

gfloat (0.5) has no ToOdd mode, so the reference is built from its directed modes: the
result is gfloat's TowardZero value when that is exact or has an odd significand, else the
neighbour away from zero (TowardPositive / TowardNegative, saturating). Checked exhaustively
over every float16 and bfloat16 input into every format of at most 8 bits, and on random
float32 inputs; plus the property round to odd exists for (staged rounding is exact).
"""

from __future__ import annotations

import numpy as np
import pytest
import test_cuda_host as th
from test_cuda_host import host  # noqa: F401  (the compiled header, a session fixture)
from test_exmy import GENERIC, _gfloat_info

import lowfp
from conftest import SMALL
from lowfp import _core

gfloat = pytest.importorskip("gfloat")
ml_dtypes = pytest.importorskip("ml_dtypes")

FORMATS_8 = SMALL + [g for g in GENERIC if lowfp.format(g).bits <= 8]


def reference(f: lowfp.Format, x: np.ndarray) -> np.ndarray:
    """Round-to-odd values of the float64 inputs x (finite or inf, no NaN) from gfloat."""
    fi = _gfloat_info(f)
    rm = gfloat.RoundMode
    sat = not f.has_nan  # lowfp's "nonfinite" saturates where there is no NaN
    tz = gfloat.round_ndarray(fi, x, rm.TowardZero, sat)
    away = np.where(
        x < 0,
        gfloat.round_ndarray(fi, x, rm.TowardNegative, True),
        gfloat.round_ndarray(fi, x, rm.TowardPositive, True),
    )
    if f.man_bits == 0:
        odd = tz != 0  # every non-zero significand is 1
    else:
        fin = np.where(np.isfinite(tz), tz, 0.0)
        odd = (lowfp.encode(np.abs(fin), f).astype(np.int64) & 1) == 1
    keep = (tz == x) | odd | ~np.isfinite(x)
    return np.where(keep, tz, away)


def check(f: lowfp.Format, x: np.ndarray) -> None:
    """lowfp's to_odd codes of x (its own dtype) decode to the reference values."""
    x64 = x.astype(np.float64)
    ok = ~np.isnan(x64)
    if not f.signed:
        ok &= ~(x64 < 0)
    if not f.has_zero:
        ok &= np.abs(x64) >= f.min_normal  # below the smallest value: see test_exmy
    if not f.subnormals:
        ok &= (np.abs(x64) >= f.min_normal) | (x64 == 0)
    x, x64 = x[ok], x64[ok]
    codes = lowfp.encode(x, f, rounding="to_odd")
    got = lowfp.decode(codes, f, dtype=np.float64)
    want = reference(f, x64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    same = (got == want) | (np.isnan(got) & np.isnan(want))
    bad = np.flatnonzero(~same)
    assert bad.size == 0, f"{f.name}: x={x64[bad[0]]!r} got {got[bad[0]]!r} want {want[bad[0]]!r}"
    if f.signed and f.nan != "negzero":
        z = (got == 0) & (want == 0)
        np.testing.assert_array_equal(np.signbit(got[z]), np.signbit(want[z]))


ALL16 = np.arange(2**16, dtype=np.uint32).astype(np.uint16)


@pytest.mark.parametrize("name", FORMATS_8)
def test_every_float16_input(name):
    check(lowfp.format(name), ALL16.view(np.float16))


@pytest.mark.parametrize("name", FORMATS_8)
def test_every_bfloat16_input(name):
    check(lowfp.format(name), ALL16.view(ml_dtypes.bfloat16))


@pytest.mark.parametrize("name", FORMATS_8 + ["float16", "bfloat16", "e5m6", "e6m9"])
def test_random_float32_inputs(name):
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    bits = rng.integers(0, 2**32, 50_000, dtype=np.uint64).astype(np.uint32)
    f = lowfp.format(name)
    # near the format's range, where the rounding happens
    x = bits.view(np.float32)
    near = (rng.standard_normal(50_000) * f.max / 4).astype(np.float32)
    check(f, np.concatenate([x, near]))


def test_overflow_as_toward_zero():
    x = np.array([480.0, -1e6, np.inf, -np.inf], np.float32)
    np.testing.assert_array_equal(
        lowfp.encode(x, "e4m3", rounding="to_odd"), lowfp.encode(x, "e4m3", rounding="toward_zero")
    )
    # e5m2 has inf: a finite overflow shrinks to the max, inf stays inf (as toward_zero)
    y = np.array([1e6, np.inf], np.float32)
    assert list(lowfp.quantize(y, "e5m2", rounding="to_odd")) == [57344.0, np.inf]


def test_hand_vectors():
    # e4m3 around 1: codes 0x38 = 1.0 (mantissa 000, even), 0x39 = 1.125 (001, odd)
    x = np.array([1.0, 1.01, 1.125, 1.2, 1.25, 1.26, -1.01, 0.0, 1e-9], np.float32)
    # 1.0 exact; 1.01 → tz 1.0 even → 1.125; 1.125 exact; 1.2 → tz 1.125 odd → stays;
    # 1.25 exact (0x3A); 1.26 → tz 1.25 even → 1.375 (0x3B); −1.01 → −1.125; 0; 1e-9 → tz 0
    # (even) → the smallest subnormal 2^-9 (code 1)
    got = lowfp.encode(x, "e4m3", rounding="to_odd")
    assert list(got) == [0x38, 0x39, 0x39, 0x39, 0x3A, 0x3B, 0xB9, 0x00, 0x01]


def test_staged_rounding_is_exact():
    """Round to odd with at least two extra bits, then to nearest, equals one rounding to
    nearest: float64 → float32 (to odd) → e4m3 / bfloat16, and float32 → e5m4 → e5m2."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal(200_000) * np.exp2(rng.integers(-20, 20, 200_000))
    mid = lowfp.quantize(x, "float32", rounding="to_odd").astype(np.float32)
    for fmt in ("e4m3", "bfloat16", "e5m2", "float16"):
        np.testing.assert_array_equal(lowfp.encode(mid, fmt), lowfp.encode(x, fmt))
        # while a plain float32 cast (nearest) double-rounds some of them
    twice = lowfp.encode(x.astype(np.float32), "bfloat16")
    assert np.any(twice != lowfp.encode(x, "bfloat16"))
    x32 = x.astype(np.float32)
    mid = lowfp.quantize(x32, "e5m4", rounding="to_odd")
    np.testing.assert_array_equal(lowfp.encode(mid, "e5m2"), lowfp.encode(x32, "e5m2"))


def test_core_lists_the_mode_and_blockwise_accepts_it():
    assert "to_odd" in _core.ROUNDINGS and _core.ROUNDINGS.index("to_odd") == 6
    x = np.linspace(-3, 5, 64, dtype=np.float32)
    q = lowfp.quantize_blockwise(x, "float4_e2m1fn", block_size=32, scale="e8m0", rounding="to_odd")
    assert q.rounding == "to_odd"


def test_same_bits_on_one_and_two_threads(threads):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(100_000).astype(np.float32)
    a = lowfp.encode(x, "e4m3", rounding="to_odd")
    np.testing.assert_array_equal(a[:16], lowfp.encode(x[:16], "e4m3", rounding="to_odd"))


@pytest.mark.parametrize(
    "name",
    [
        "float8_e4m3fn",
        "float8_e5m2",
        "float4_e2m1fn",
        "float8_e8m0fnu",
        "e3m2fu",
        "bfloat16",
        "e5m7b31fnuz",
    ],
)
def test_cuda_header_matches_rust(monkeypatch, host, name):  # noqa: F811
    """The CUDA element header, compiled as host C++, rounds to odd as the Rust core does."""
    lib = host
    monkeypatch.setitem(th.MODES, "to_odd", _core.ROUNDINGS.index("to_odd"))
    f = lowfp.format(name)
    for kind, x in th.INPUTS.items():
        for overflow in ("nonfinite", "saturate"):
            want = lowfp.encode(
                x, f, rounding="to_odd", overflow=overflow, nan="zero", negative="clamp"
            )
            got, bad, _ = th.host_encode(lib, th._raw(x, kind), kind, f, "to_odd", overflow)
            assert bad == 0
            np.testing.assert_array_equal(
                got, want.astype(np.uint32), err_msg=f"{name} {kind} {overflow}"
            )
