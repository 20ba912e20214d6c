"""Host check of the CUDA element header: the per-element functions the GPU kernels use
(python/lowfp/cuda/kernels/lowfp_elem.cuh) compiled as plain C++ with the system compiler and
compared bit for bit with the Rust core, for every named format and a set of generic specs,
every rounding mode and overflow policy, every float16 and bfloat16 input, ~1M float32 inputs,
float64 inputs, every code's value, the table codecs, packing and blockwise quantization.

The driver (tests/cuda_host/driver.cpp) loops over whole arrays in C++, so one ctypes call
covers a whole input set. It is built once per session with -ffp-contract=off, the host
counterpart of the kernels' --fmad=false.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest

import lowfp
import lowfp._common
from conftest import compile_host_driver, nvrtc_ptx
from lowfp._common import STOCHASTIC, TABLE_ROUNDINGS
from lowfp.codec import ROUNDINGS
from lowfp.cuda._params import KINDS, MODES, SCALE_RULES, format_args

ml_dtypes = pytest.importorskip("ml_dtypes")

ROOT = Path(__file__).resolve().parent.parent
KERNELS = ROOT / "python" / "lowfp" / "cuda" / "kernels"
DRIVER = ROOT / "tests" / "cuda_host" / "driver.cpp"

#: Generic specs beyond the named formats: every NaN kind, unsigned, no-subnormal, 1-bit
#: exponents, 0-bit mantissas, explicit and negative biases, wide (> 16-bit) codes.
SPECS = [
    "e1m0f",
    "e1m1fu",
    "e2m0fu",
    "e3m1",
    "e5m6b20f",
    "e8m3ns",
    "e6m9fnu",
    "e7m12fnuz",
    "e4m4fns",
    "e8m23u",
    "e2m5b0f",
    "e8m10",
    "e5m7b31fnuz",
    "e3m2b-3",
    "e8m2b140fn",
]
#: Infinities without IEEE NaNs (P3109 style: `nan="negzero"` signed, NaN at 1 00…0 and ±inf
#: at S 11…1; `nan="max"` unsigned, NaN at 11…1 and +inf at 11…0): the P3109 extended formats
#: of several widths and precisions (k19p11: > 16-bit codes) and generic ones with other
#: biases, no subnormals and 1-bit fields.
P3109 = [
    "p3109_k8p1se",
    "p3109_k8p3se",
    "p3109_k8p4se",
    "p3109_k8p5se",
    "p3109_k8p7se",
    "p3109_k8p1ue",
    "p3109_k8p4ue",
    "p3109_k8p8ue",
    "p3109_k3p1se",
    "p3109_k4p2ue",
    "p3109_k6p3se",
    "p3109_k12p5se",
    "p3109_k16p8se",
    "p3109_k19p11se",
    "e3m2b5infnu",
    "e3m2b2infuz",
    "e4m3infuzns",
    "e1m1infnu",
]
FORMATS = [f.name for f in lowfp.formats()] + SPECS + P3109

U32 = ctypes.c_uint32
U64 = ctypes.c_uint64
I32 = ctypes.c_int32
P = ctypes.c_void_p


def _ptr(a: np.ndarray):
    assert a.flags.c_contiguous
    return a.ctypes.data_as(P)


@pytest.fixture(scope="session")
def host(tmp_path_factory):
    """The driver compiled once per session and loaded with ctypes."""
    lib = compile_host_driver(tmp_path_factory.mktemp("cuda_host"), DRIVER, KERNELS)
    lib.lf_host_random.argtypes = [ctypes.c_int, U64, U64, U64, U64, P]
    lib.lf_host_encode.argtypes = [
        P,
        ctypes.c_int,
        U64,
        U32,
        U32,
        I32,
        U32,
        ctypes.c_int,
        U64,
        U64,
        U64,
        P,
        P,
        ctypes.POINTER(U64),
    ]
    lib.lf_host_encode.restype = U32
    lib.lf_host_format_codes.argtypes = [U32, U32, I32, U32, P]
    lib.lf_host_decode.argtypes = [P, U64, U32, U32, I32, U32, ctypes.c_int, P]
    lib.lf_host_quantize.argtypes = [
        P,
        ctypes.c_int,
        U64,
        U32,
        U32,
        I32,
        U32,
        ctypes.c_int,
        U64,
        U64,
        U64,
        P,
    ]
    lib.lf_host_quantize.restype = U32
    lib.lf_host_table_encode.argtypes = [P, U64, P, ctypes.c_int, ctypes.c_int, U64, U64, U64, P]
    lib.lf_host_pack.argtypes = [P, U64, U32, P]
    lib.lf_host_unpack.argtypes = [P, U64, U32, U64, P]
    lib.lf_host_blockwise.argtypes = [
        P,
        U64,
        U64,
        ctypes.c_int,
        U32,
        U32,
        I32,
        U32,
        P,
        ctypes.c_int,
        ctypes.c_float,
        ctypes.c_int,
        U64,
        U64,
        U32,
        ctypes.c_int,
        P,
        P,
        P,
        P,
    ]
    lib.lf_host_blockwise.restype = ctypes.c_float
    lib.lf_host_blockwise_logq_rows.argtypes = [
        P,
        U64,
        U64,
        U64,
        U64,
        ctypes.c_int,
        U32,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_float,
        ctypes.c_int,
        U64,
        U64,
        ctypes.c_int,
        P,
        P,
        P,
        P,
        P,
    ]
    lib.lf_host_blockwise_logq_rows.restype = ctypes.c_int
    return lib


def host_encode(
    lib,
    x,
    kind,
    f,
    rounding,
    overflow="nonfinite",
    nan="zero",
    negative="clamp",
    seed=0,
    stream=0,
    offset=0,
    random_bits=None,
):
    """(codes as uint32, OR of bad flags, index of the first bad element)."""
    x = np.ascontiguousarray(x)
    out = np.empty(x.size, np.uint32)
    first = U64(0)
    rb = None if random_bits is None else np.ascontiguousarray(random_bits, np.uint32)
    bad = lib.lf_host_encode(
        _ptr(x),
        KINDS[kind],
        x.size,
        *format_args(f, overflow, nan, negative),
        MODES[rounding],
        seed,
        stream,
        offset,
        None if rb is None else _ptr(rb),
        _ptr(out),
        ctypes.byref(first),
    )
    return out, bad, first.value


# ---------------------------------------------------------------- inputs


def _f32_inputs() -> np.ndarray:
    """~1M float32 values: random bit patterns, log-uniform magnitudes over the whole float32
    range (every binade, both signs), and the neighbourhoods of powers of two and of the
    midpoints between them (ties), plus zeros, infs, NaNs and subnormals."""
    rng = np.random.default_rng(20240605)
    parts = [rng.integers(0, 2**32, 300_000, dtype=np.uint64).astype(np.uint32).view(np.float32)]
    e = rng.uniform(-150, 128, 300_000)
    m = np.exp2(e) * rng.choice([-1.0, 1.0], e.size)
    with np.errstate(over="ignore"):
        parts.append(m.astype(np.float32))
    # exact values with few mantissa bits (many ties for every target), ± 1 ulp
    k = rng.integers(0, 1 << 12, 200_000)
    ex = rng.integers(-140, 120, 200_000)
    v = (k.astype(np.float64) * np.exp2(ex - 11)).astype(np.float32)
    v *= rng.choice(np.float32([-1, 1]), v.size)
    bits = v.view(np.uint32)
    parts += [v, (bits + 1).view(np.float32), (bits - 1).view(np.float32)]
    special = np.array(
        [
            0.0,
            -0.0,
            np.inf,
            -np.inf,
            np.nan,
            -np.nan,
            1e-45,
            -1e-45,
            3.4028235e38,
            -3.4028235e38,
            1.1754944e-38,
        ],
        np.float32,
    )
    parts.append(special)
    return np.concatenate(parts)


F32 = _f32_inputs()
F16 = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
BF16 = np.arange(1 << 16, dtype=np.uint16).view(ml_dtypes.bfloat16)
F64 = np.concatenate(
    [
        np.random.default_rng(7).uniform(-1, 1, 50_000)
        * np.exp2(np.random.default_rng(8).integers(-160, 130, 50_000)),
        np.random.default_rng(9).integers(0, 2**63, 50_000, dtype=np.uint64).view(np.float64),
    ]
)
INPUTS = {"float32": F32, "float16": F16, "bfloat16": BF16, "float64": F64}


def _raw(x: np.ndarray, kind: str) -> np.ndarray:
    return x.view(np.uint16) if kind in ("float16", "bfloat16") else x


# ---------------------------------------------------------------- rng


def test_mode_numbers_are_the_headers():
    """MODES (positions in the core's ROUNDINGS) are the header's LF_<MODE> numbers."""
    import re

    text = (KERNELS / "lowfp_elem.cuh").read_text()
    for name, number in MODES.items():
        m = re.search(rf"#define LF_{name.upper()} (\d+)", text)
        assert m is not None and int(m.group(1)) == number, name


@pytest.mark.parametrize("rounding", STOCHASTIC)
def test_philox_matches_rust(host, rounding):
    keys = [(0, 0, 0), (2**64 - 1, 2**63 + 5, 2**34 - 3), (42, 7, 12345), (1, 2, 2**64 - 501)]
    for seed, stream, offset in keys:
        out = np.empty(1000, np.uint32)
        host.lf_host_random(MODES[rounding], seed, stream, offset, out.size, _ptr(out))
        want = lowfp.random_bits(1000, seed=seed, stream=stream, offset=offset, rounding=rounding)
        np.testing.assert_array_equal(out, want)
    # Random123 known answer (seed 0, stream 0: the ctr = 0, key = 0 block)
    out = np.empty(4, np.uint32)
    host.lf_host_random(MODES["stochastic"], 0, 0, 0, 4, _ptr(out))
    assert out.tolist() == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]


# ---------------------------------------------------------------- encode


@pytest.mark.parametrize("name", FORMATS)
def test_encode_matches_rust(host, name):
    """Every input kind × every rounding mode × both overflow policies, NaN → 0 and clamped
    negatives (so every element has a code), stochastic with a non-trivial key."""
    f = lowfp.format(name)
    for kind, x in INPUTS.items():
        for rounding in ROUNDINGS:
            for overflow in ("nonfinite", "saturate"):
                key = dict(seed=0x1234_5678_9ABC, stream=3, offset=977)
                want = lowfp.encode(
                    x, f, rounding=rounding, overflow=overflow, nan="zero", negative="clamp", **key
                )
                got, bad, _ = host_encode(host, _raw(x, kind), kind, f, rounding, overflow, **key)
                assert bad == 0
                if not np.array_equal(got, want.astype(np.uint32)):
                    i = int(np.flatnonzero(got != want)[0])
                    pytest.fail(
                        f"{name} {kind} {rounding} {overflow}: element {i} "
                        f"x={x[i]!r} host {got[i]:#x} rust {int(want[i]):#x}"
                    )


def test_encode_caller_random_bits(host):
    f = lowfp.format("float8_e5m2")
    rb = np.random.default_rng(1).integers(0, 2**32, F32.size, dtype=np.uint64).astype(np.uint32)
    want = lowfp.encode(F32, f, rounding="stochastic", random_bits=rb, nan="zero")
    got, _, _ = host_encode(host, F32, "float32", f, "stochastic", random_bits=rb)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "name,bad_value,flag",
    [
        ("float4_e2m1fn", np.nan, 1),
        ("float8_e8m0fnu", -2.0, 2),
        ("e3m2fu", -np.inf, 2),
        ("e3m2fu", np.nan, 1),
    ],
)
def test_encode_bad_elements_flagged_like_rust(host, name, bad_value, flag):
    """NaN into a NaN-less format and negatives into an unsigned one: the header flags the
    same first element that the Rust core names in its error."""
    f = lowfp.format(name)
    x = np.linspace(0, 3, 1000).astype(np.float32)
    x[[417, 800]] = bad_value
    with pytest.raises(ValueError, match="element 417 "):
        lowfp.encode(x, f)
    _, bad, first = host_encode(host, x, "float32", f, "nearest", nan="error", negative="error")
    assert (bad, first) == (flag, 417)


# ---------------------------------------------------------------- decode and quantize


@pytest.mark.parametrize("name", FORMATS)
def test_special_codes_match_rust(host, name):
    """The codes the header's format setup derives (by NaN kind, P3109 style included) are the
    Rust core's: the largest finite code decodes to `max` and is what `max` encodes to, the
    inf code decodes to +inf and is what +inf encodes to, the NaN codes decode to NaN, and the
    overflow code is where a value past max goes (inf, NaN, or max when saturating)."""
    f = lowfp.format(name)
    for overflow in ("nonfinite", "saturate"):
        out = np.empty(5, np.uint32)
        host.lf_host_format_codes(*format_args(f, overflow), _ptr(out))
        max_code, inf_code, nan_pos, nan_neg, ovf = (int(c) for c in out)
        dt = f.code_dtype
        assert lowfp.decode(np.array([max_code], dt), f, dtype=np.float64)[0] == f.max
        big = np.array([f.max, f.max * 4], np.float64)
        want = lowfp.encode(big, f, overflow=overflow, nan="zero")
        assert int(want[0]) == max_code
        if f.inf:
            assert lowfp.decode(np.array([inf_code], dt), f, dtype=np.float64)[0] == np.inf
            assert int(lowfp.encode(np.array([np.inf]), f, overflow=overflow)[0]) == (
                inf_code if overflow == "nonfinite" else max_code
            )
        if f.nan != "none":
            nans = lowfp.decode(np.array([nan_pos, nan_neg], dt), f, dtype=np.float64)
            assert np.isnan(nans).all()
            assert int(lowfp.encode(np.array([np.nan]), f)[0]) == nan_pos
        if ovf != 0xFFFFFFFF:  # 0xFFFFFFFF: the header's marker for "NaN with the sign"
            assert int(want[1]) == ovf
        else:
            assert int(want[1]) == nan_pos and overflow == "nonfinite" and not f.inf


@pytest.mark.parametrize("name", FORMATS)
def test_decode_every_code_matches_rust(host, name):
    f = lowfp.format(name)
    if f.bits <= 16:
        codes = np.arange(1 << f.bits, dtype=np.uint32)
    else:  # 2^bits codes are too many: a random sample and the extreme codes
        rng = np.random.default_rng(f.bits)
        codes = rng.integers(0, 1 << f.bits, 1 << 18, dtype=np.uint64).astype(np.uint32)
        special = [0, 1, f.sign_mask if hasattr(f, "sign_mask") else 0, (1 << f.bits) - 1]
        codes = np.concatenate([codes, np.array(special, np.uint32)])
    want = lowfp.decode(codes, f).view(np.uint32)
    got = np.empty(codes.size, np.uint32)
    host.lf_host_decode(_ptr(codes), codes.size, *format_args(f), 1, _ptr(got))
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("name", FORMATS)
def test_quantize_matches_rust(host, name):
    """quantize (encode + the value in the input's dtype) for each input kind the core
    accepts for this format; NaN codes give the canonical quiet NaN with its sign."""
    f = lowfp.format(name)
    for kind, x in INPUTS.items():
        for rounding in ("nearest", "stochastic", "down"):
            try:
                want = lowfp.quantize(
                    x, f, rounding=rounding, seed=5, stream=1, nan="zero", negative="clamp"
                )
            except ValueError as e:  # format not exact in a 16-bit input dtype
                assert "not all exact" in str(e)
                continue
            raw = _raw(x, kind)
            uint = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[raw.itemsize]
            got = np.empty(raw.size, uint)
            bad = host.lf_host_quantize(
                _ptr(raw),
                KINDS[kind],
                raw.size,
                *format_args(f, nan="zero", negative="clamp"),
                MODES[rounding],
                5,
                1,
                0,
                _ptr(got),
            )
            assert bad == 0
            w = np.asarray(want).view(uint)
            if not np.array_equal(got, w):
                i = int(np.flatnonzero(got != w)[0])
                pytest.fail(
                    f"{name} {kind} {rounding}: element {i} x={x[i]!r} "
                    f"host {got[i]:#x} rust {w[i]:#x}"
                )


# ---------------------------------------------------------------- table codecs

TABLES = [
    lowfp.Linear(4),
    lowfp.Linear(8, signed=False, zero=False),
    lowfp.Linear(2),
    lowfp.Linear(1, signed=False),
    lowfp.Dynamic(8),
    lowfp.Dynamic(8, signed=False),
    lowfp.Dynamic(4),
    lowfp.Dynamic(4, signed=False),
    lowfp.Log(4),
    lowfp.Log(8, alpha=0.9),
    lowfp.Log(3, signed=True, alpha=0.3),
    lowfp.Log(2, zero=False, alpha=0.1),
]


def _table_inputs(levels: np.ndarray) -> np.ndarray:
    """Random values over [-1.2, 1.2], every level, every midpoint (ties) and their float32
    neighbours."""
    rng = np.random.default_rng(3)
    lv = levels.astype(np.float64)
    mids = ((lv[:-1] + lv[1:]) / 2).astype(np.float32)
    exact = np.concatenate([levels, mids])
    b = exact.view(np.uint32)
    near = np.concatenate([exact, (b + 1).view(np.float32), (b - 1).view(np.float32)])
    return np.concatenate(
        [
            rng.uniform(-1.2, 1.2, 200_000).astype(np.float32),
            near[np.isfinite(near)],
            np.float32([0.0, -0.0, 2.0, -2.0]),
        ]
    )


@pytest.mark.parametrize("codec", TABLES, ids=repr)
def test_table_codecs_match_rust(host, codec):
    levels = np.ascontiguousarray(codec.levels, np.float32)
    x = _table_inputs(levels)
    for rounding in TABLE_ROUNDINGS:
        want = codec.encode(x, rounding=rounding, seed=11, stream=2, offset=5)
        got = np.empty(x.size, np.uint8)
        host.lf_host_table_encode(
            _ptr(x),
            x.size,
            _ptr(levels),
            levels.size,
            MODES[rounding],
            11,
            2,
            5,
            _ptr(got),
        )
        np.testing.assert_array_equal(got, want, err_msg=f"{codec!r} {rounding}")


# ---------------------------------------------------------------- packing


@pytest.mark.parametrize("bits", range(1, 9))
def test_pack_unpack_match_rust(host, bits):
    rng = np.random.default_rng(bits)
    for n in (0, 1, 7, 8, 9, 1001, 100_003):
        codes = rng.integers(0, 1 << bits, n, dtype=np.uint64).astype(np.uint8)
        want = lowfp.pack(codes, bits)
        got = np.empty(want.size, np.uint8)
        host.lf_host_pack(_ptr(codes), n, bits, _ptr(got))
        np.testing.assert_array_equal(got, want, err_msg=f"bits={bits} n={n}")
        back = np.empty(n, np.uint8)
        host.lf_host_unpack(_ptr(want), want.size, bits, n, _ptr(back))
        np.testing.assert_array_equal(back, codes)


# ---------------------------------------------------------------- blockwise

BLOCKWISE = [
    ("mxfp8", None, None),
    ("mxfp8_e5m2", None, None),
    ("mxfp6", None, None),
    ("mxfp6_e3m2", None, None),
    ("mxfp4", None, None),
    ("nvfp4", None, None),
    ("float8_e4m3fn", 128, "absmax"),
    ("e3m2b-3", 64, "absmax"),
    ("float4_e2m1fn", 16, "e4m3"),
    (lowfp.Linear(4), 64, "absmax"),
    (lowfp.Dynamic(8), 256, "absmax"),
    (lowfp.Dynamic(4, signed=False), 128, "e8m0"),
    (lowfp.Log(4, alpha=0.6), 32, "absmax"),
    (lowfp.Linear(3, signed=False, zero=False), 48, "e8m0"),
    ("float8_e4m3fn", 32, "e8m0_ceil"),
    ("float6_e2m3fn", 32, "e8m0_even"),
    ("float4_e2m1fn", 32, "e8m0_rceil"),
    ("float8_e5m2", 64, "e8m0_even"),
    ("e3m2b-3", 32, "e8m0_rceil"),
    ("e3m2b-3", 32, "e8m0_ceil"),
    ("p3109_k8p4se", 32, "absmax"),
    ("p3109_k8p3se", 32, "e8m0_rceil"),
    ("p3109_k6p3se", 64, "e4m3"),
]


def host_blockwise(lib, x, codec, block, scale, rounding, seed, stream, ocp=False):
    """(tensor scale, float32 scales, packed codes, whether x had a non-finite block) of the
    host build of the blockwise kernels, on flat float32 x."""
    n = x.size
    table = isinstance(codec, (lowfp.Linear, lowfp.Dynamic, lowfp.Log))
    if table:
        levels = np.ascontiguousarray(codec.levels, np.float32)
        fa, elem_max, code_bits = (0, 0, 0, 0), 1.0, codec.bits
    else:
        f = lowfp.format(codec)
        levels = np.zeros(1, np.float32)
        fa, elem_max, code_bits = format_args(f, "saturate", "error", "clamp"), f.max, f.bits
    codes = np.empty(n, np.uint8)
    scales = np.empty(-(-n // block), np.float32)
    packed = np.empty(lowfp._common.packed_len(n, code_bits), np.uint8)
    nonfinite = U32(0)
    g = lib.lf_host_blockwise(
        _ptr(x),
        n,
        block,
        SCALE_RULES[scale],
        *fa,
        _ptr(levels),
        levels.size,
        elem_max,
        MODES[rounding],
        seed,
        stream,
        code_bits,
        int(ocp),
        _ptr(codes),
        _ptr(scales),
        _ptr(packed),
        ctypes.byref(nonfinite),
    )
    return np.float32(g), scales, packed, bool(nonfinite.value)


def _resolve(codec, block, scale):
    if isinstance(codec, str) and codec in lowfp.PRESETS:
        fmt_name, block, scale = lowfp.PRESETS[codec]
        codec = fmt_name
    return codec, block, scale


def _assert_same_blockwise(host_out, q, what):
    g, scales, packed, _ = host_out
    assert g.view(np.uint32) == np.float32(q.global_scale).view(np.uint32), what
    np.testing.assert_array_equal(
        scales.view(np.uint32), q._scales_f32().view(np.uint32), err_msg=what
    )
    np.testing.assert_array_equal(packed, q.codes, err_msg=what)


@pytest.mark.parametrize("codec,block,scale", BLOCKWISE, ids=lambda v: repr(v))
def test_blockwise_matches_rust(host, codec, block, scale):
    rng = np.random.default_rng(17)
    n = 100_000 + 13  # a short last block
    x = (rng.standard_normal(n) * np.exp2(rng.integers(-20, 20, n))).astype(np.float32)
    x[: block or 32] = 0.0  # an all-zero block
    codec, block, scale = _resolve(codec, block, scale)
    table = isinstance(codec, (lowfp.Linear, lowfp.Dynamic, lowfp.Log))
    roundings = TABLE_ROUNDINGS if table else ROUNDINGS
    for rounding in roundings:
        q = lowfp.quantize_blockwise(
            x, codec, block_size=block, scale=scale, rounding=rounding, seed=99, stream=4
        )
        out = host_blockwise(host, x, codec, block, scale, rounding, 99, 4)
        assert not out[3]
        _assert_same_blockwise(out, q, f"{codec!r} {rounding}")


def _with_nonfinite(n, block, seed):
    """float32 values over many binades with NaN, +inf and -inf in a few blocks (one block
    all NaN, one with a single inf among finite values larger than every other block's, so
    that the e4m3 tensor scale must come from the finite values of the bad blocks too)."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * np.exp2(rng.integers(-10, 10, n))).astype(np.float32)
    x[3 * block + 5] = np.nan
    x[7 * block : 8 * block] = np.nan
    x[9 * block + 1] = np.inf
    x[9 * block + 2] = np.float32(3e6)  # the largest finite value, in a bad block
    x[n - 1] = -np.inf  # in the short last block
    return x


OCP_CASES = [
    ("mxfp8", None, None),
    ("mxfp4", None, None),
    ("nvfp4", None, None),
    ("float8_e4m3fn", 128, "absmax"),
    ("float4_e2m1fn", 32, "e8m0_rceil"),
    ("float6_e2m3fn", 32, "e8m0_even"),
    ("float8_e5m2", 64, "e8m0_ceil"),
    (lowfp.Linear(4), 64, "absmax"),
    (lowfp.Dynamic(8), 128, "e8m0"),
    ("p3109_k8p4se", 32, "e8m0"),
]


@pytest.mark.parametrize("codec,block,scale", OCP_CASES, ids=lambda v: repr(v))
def test_blockwise_nonfinite_ocp_matches_rust(host, codec, block, scale):
    """nonfinite="ocp": blocks with NaN/±inf get the float32 NaN scale and the codes of a zero
    block, the others (and the e4m3 tensor scale) as if they were not there: the same bits as
    the Rust core, for every rounding mode."""
    codec, block, scale = _resolve(codec, block, scale)
    n = 40 * block + 11
    x = _with_nonfinite(n, block, 23)
    table = isinstance(codec, (lowfp.Linear, lowfp.Dynamic, lowfp.Log))
    for rounding in TABLE_ROUNDINGS if table else ROUNDINGS:
        q = lowfp.quantize_blockwise(
            x,
            codec,
            block_size=block,
            scale=scale,
            rounding=rounding,
            seed=5,
            stream=2,
            axis=None,
            nonfinite="ocp",
        )
        out = host_blockwise(host, x, codec, block, scale, rounding, 5, 2, ocp=True)
        assert out[3]
        _assert_same_blockwise(out, q, f"{codec!r} {rounding}")
        assert np.isnan(out[1][[3, 7, 9, -1]]).all() and np.isfinite(out[1][:3]).all()


@pytest.mark.parametrize(
    "codec",
    [
        lowfp.Log(4, quantile=0.3),
        lowfp.Log(3, signed=True, quantile=0.5),
        lowfp.Log(2, zero=False, quantile=0.05),
    ],
    ids=repr,
)
@pytest.mark.parametrize("scale", ["absmax", "e8m0"])
def test_quantile_log_rows_and_ocp_match_rust(host, codec, scale):
    """Log(quantile=q) as the CUDA kernel lf_block_logq computes it: rows of a 2-D input
    padded to whole blocks (axis=-1, bases from each block's real elements), and
    nonfinite="ocp" (flat), against lowfp.quantize_blockwise on the CPU."""
    rng = np.random.default_rng(31)
    block, rows, row = 64, 37, 150  # 3 blocks per row, the last with 22 real elements
    x = (rng.standard_normal((rows, row)) * np.exp2(rng.integers(-12, 12, (rows, 1)))).astype(
        np.float32
    )
    x[5, :] = 0.0
    per_row = -(-row // block)
    padded = np.zeros((rows, per_row * block), np.float32)
    padded[:, :row] = x
    flat = np.ascontiguousarray(padded.reshape(-1)[: (rows - 1) * per_row * block + row])
    for rounding in TABLE_ROUNDINGS:
        for data, r, ocp, axis in (
            (flat, row, False, -1),
            (_with_nonfinite(50 * block + 7, block, 3), 0, True, None),
        ):
            src = x if axis == -1 else data
            q = lowfp.quantize_blockwise(
                src,
                codec,
                block_size=block,
                scale=scale,
                rounding=rounding,
                seed=8,
                stream=6,
                axis=axis,
                nonfinite="ocp" if ocp else "error",
            )
            n = data.size
            nb = -(-n // block)
            codes, scales = np.empty(n, np.uint8), np.empty(nb, np.float32)
            alphas = np.empty(nb, np.float32)
            packed = np.empty(lowfp._common.packed_len(n, codec.bits), np.uint8)
            g = ctypes.c_float(0)
            bad = host.lf_host_blockwise_logq_rows(
                _ptr(data),
                n,
                block,
                r,
                per_row if r else 0,
                SCALE_RULES[scale],
                codec.bits,
                codec.signed,
                codec.zero,
                codec.quantile,
                MODES[rounding],
                8,
                6,
                int(ocp),
                _ptr(codes),
                _ptr(scales),
                _ptr(alphas),
                _ptr(packed),
                ctypes.byref(g),
            )
            assert bad == 0
            what = f"{codec!r} {scale} {rounding} ocp={ocp}"
            assert np.float32(g.value) == np.float32(q.global_scale), what
            np.testing.assert_array_equal(
                scales.view(np.uint32), q._scales_f32().view(np.uint32), err_msg=what
            )
            np.testing.assert_array_equal(
                alphas.view(np.uint32),
                np.asarray(q.alphas, np.float32).view(np.uint32),
                err_msg=what,
            )
            np.testing.assert_array_equal(packed, q.codes, err_msg=what)


# ---------------------------------------------------------------- the CUDA source itself


def test_kernels_compile_with_nvrtc_without_fma():
    """The kernel source compiles with NVRTC (no GPU needed) under the loader's options, and
    the PTX has no fused multiply-add and only IEEE (round-to-nearest) divisions."""
    from lowfp.cuda import _loader

    text = nvrtc_ptx(
        _loader.source(), "lowfp_kernels.cu", (*_loader.OPTIONS, "--gpu-architecture=compute_80")
    )
    assert "fma." not in text
    assert "div.approx" not in text and "div.full" not in text
    for name in (
        "lf_encode",
        "lf_decode",
        "lf_pack",
        "lf_unpack",
        "lf_table_encode",
        "lf_block_amax",
        "lf_block_codes",
        "lf_block_dequantize",
        "lf_block_logq",
        "lf_block_logq_levels",
        "lf_table_decode",
    ):
        assert f".entry {name}(" in text


# ---------------------------------------------------------------- dispatch errors without a GPU


class _FakeDevice:
    def __init__(self, index):
        self.type, self.index = "cuda", index


class FakeCudaTensor:
    """Looks like a CUDA torch tensor to the dispatch (module torch…, is_cuda)."""

    __module__ = "torch.fake"

    def __init__(self, dtype="float32", index=0, contiguous=True):
        import torch

        self.dtype = getattr(torch, dtype)
        self.device = _FakeDevice(index)
        self.is_cuda, self.is_sparse, self._contiguous = True, False, contiguous
        self.shape = (4,)

    def is_complex(self):
        return False

    def is_contiguous(self):
        return self._contiguous


@pytest.fixture
def no_cupy(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "cupy", None)  # import cupy → ImportError


def test_cuda_tensor_without_cupy_says_what_to_install(no_cupy):
    pytest.importorskip("torch")
    x = FakeCudaTensor()
    for call in (
        lambda: lowfp.encode(x, "e4m3"),
        lambda: lowfp.quantize(x, "e4m3"),
        lambda: lowfp.quantize_blockwise(x, "mxfp4"),
        lambda: lowfp.quantize_blockwise(x, "mxfp4", nonfinite="ocp"),
        lambda: lowfp.quantize_blockwise(x, lowfp.Log(4, quantile=0.1)),
        lambda: lowfp.decode(FakeCudaTensor("uint8"), "e4m3"),
        lambda: lowfp.pack(FakeCudaTensor("uint8"), 4),
        # P3109 formats (infinities without IEEE NaNs) go to the device too
        lambda: lowfp.encode(x, "p3109_k8p4se"),
        lambda: lowfp.quantize(x, "p3109_k8p4ue"),
        lambda: lowfp.decode(FakeCudaTensor("uint8"), "p3109_k8p3se"),
        lambda: lowfp.quantize_blockwise(x, lowfp.format("p3109_k8p4se"), block_size=32),
    ):
        with pytest.raises(ImportError, match=r"lowfp\[cuda\].*cupy-cuda12x"):
            call()


def test_cuda_dispatch_bad_input_errors(no_cupy):
    pytest.importorskip("torch")
    with pytest.raises(ValueError, match="not contiguous.*contiguous()"):
        lowfp.encode(FakeCudaTensor(contiguous=False), "e4m3")
    with pytest.raises(ValueError, match="different devices: x on cuda:0, random_bits on cuda:1"):
        lowfp.encode(
            FakeCudaTensor(),
            "e4m3",
            rounding="stochastic",
            random_bits=FakeCudaTensor("uint32", index=1),
        )
    with pytest.raises(ValueError, match="random_bits: expected x and random_bits both"):
        lowfp.encode(
            FakeCudaTensor(), "e4m3", rounding="stochastic", random_bits=np.zeros(4, np.uint32)
        )
    with pytest.raises(TypeError, match="x: expected float32, float64, float16 or bfloat16"):
        lowfp.encode(FakeCudaTensor("int32"), "e4m3")
    with pytest.raises(TypeError, match="codes: expected uint8, uint16 or uint32 codes"):
        lowfp.decode(FakeCudaTensor("float32"), "e4m3")
    with pytest.raises(TypeError, match="codes: expected uint8 codes"):
        lowfp.pack(FakeCudaTensor("int8"), 4)
    with pytest.raises(ValueError, match="out: not supported for CUDA inputs"):
        lowfp.encode(FakeCudaTensor(), "e4m3", out=np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="block_size"):
        lowfp.quantize_blockwise(FakeCudaTensor(), "e4m3", block_size=12)
    with pytest.raises(ValueError, match="rounding"):
        lowfp.encode(FakeCudaTensor(), "e4m3", rounding="banker")


def test_import_without_cupy(no_cupy):
    import importlib

    import lowfp.cuda

    importlib.reload(lowfp.cuda)
    assert lowfp.cuda.available() is False
    assert lowfp.cuda.on_device(np.zeros(3)) is False


def test_fresh_seeds_reach_the_device_path(monkeypatch):
    """seed=None on a CUDA input draws its key on the host from lowfp's generator, in the same
    order as the CPU calls would (so manual_seed makes CPU and GPU runs draw the same keys);
    an explicit seed passes unchanged."""
    pytest.importorskip("torch")
    import lowfp._seed as lseed
    import lowfp.cuda
    import lowfp.cuda.codec

    got = []

    def recorder(position):  # where the seed is among the positional arguments
        def record(*args, **kw):
            got.append(kw["seed"] if "seed" in kw else args[position])
            raise RuntimeError("recorded")

        return record

    monkeypatch.setattr(lowfp.cuda, "encode", recorder(None))
    monkeypatch.setattr(lowfp.cuda, "quantize", recorder(None))
    monkeypatch.setattr(lowfp.cuda.codec, "table_encode", recorder(3))
    monkeypatch.setattr(lowfp.cuda, "quantize_blockwise_parts", recorder(5))
    calls = [
        lambda s: lowfp.encode(FakeCudaTensor(), "e4m3", rounding="stochastic", seed=s),
        lambda s: lowfp.quantize(FakeCudaTensor(), "e4m3", rounding="stochastic", seed=s),
        lambda s: lowfp.Linear(4).encode(FakeCudaTensor(), rounding="stochastic", seed=s),
        lambda s: lowfp.quantize_blockwise(
            FakeCudaTensor(), "mxfp4", rounding="stochastic", seed=s
        ),
    ]
    lowfp.manual_seed(1234)
    want = [lseed.next_seed() for _ in calls]
    lowfp.manual_seed(1234)
    for call in calls:
        with pytest.raises(RuntimeError, match="recorded"):
            call(None)
    assert got == want and len(set(want)) == len(want)
    got.clear()
    for call in calls:
        with pytest.raises(RuntimeError, match="recorded"):
            call(99)
    assert got == [99] * len(calls)
