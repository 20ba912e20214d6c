"""Typed handles of the native module (`_core.BlockSpec`) and the small-call path.

A BlockSpec is built once from a spec dict and accepted wherever a spec dict is: both must
give the same bytes. Calls small enough to stay on the calling thread (`par::SERIAL_MAX`
elements in all) must give the same bits as calls that go to the thread pool.
"""

import copy
import pickle

import numpy as np
import pytest

import lowfp
from lowfp import _core
from lowfp.codec import Dynamic, Linear, Log
from lowfp.qtensor import _codec_spec

BLOCK = 64
#: the total element count at or below which a call stays on the calling thread
SERIAL_MAX = 1 << 15

#: (name, codec of exp_avg / momentum, codec of exp_avg_sq)
CODECS = [
    ("dynamic8", Dynamic(8, True), Dynamic(8, False)),
    ("linear4", Linear(4, True), Linear(4, False)),
    ("e4m3", "e4m3", "e4m3"),
    ("log4_quantile", Log(4, signed=True, quantile=0.05), Log(4, signed=False, quantile=0.05)),
]
IDS = [c[0] for c in CODECS]


def spec_dict(codec, rounding="nearest", block=BLOCK, scale="absmax"):
    """A spec dict as the optimizers build it (defaults, then the codec's own keys)."""
    d = {"bits": 0, "signed": True, "zero": True, "alpha": 0.5, "quantile": 0.0}
    d.update(_codec_spec(codec))
    d.update(block=block, scale=scale, rounding=rounding)
    return d


def test_exmy_spec_carries_the_format_fields():
    assert spec_dict("e4m3")["fields"] == lowfp.format("e4m3")._fields


def empty_state(spec, n):
    packed_len, nblocks, nalphas, _ = _core.blockwise_layout(spec, n)
    return (
        np.zeros(packed_len, np.uint8),
        np.zeros(nblocks, np.float32),
        np.zeros(nalphas, np.float32),
    )


def quantized_state(spec, x, seed=0, stream=0):
    packed, scales, alphas = empty_state(spec, x.size)
    _core.blockwise_quantize(x, spec, packed, scales, alphas, seed, stream)
    return packed, scales, alphas


# ---------------------------------------------------------------- BlockSpec itself


@pytest.mark.parametrize("name,cm,cv", CODECS, ids=IDS)
def test_blockspec_layout_matches_dict(name, cm, cv):
    for codec in (cm, cv):
        d = spec_dict(codec)
        h = _core.BlockSpec(d)
        for n in (0, 1, 63, 64, 65, 1000, 4096):
            packed_len, nblocks, nalphas, bits = _core.blockwise_layout(d, n)
            assert (h.packed_len(n), h.num_blocks(n), h.num_alphas(n)) == (
                packed_len,
                nblocks,
                nalphas,
            )
            assert _core.blockwise_layout(h, n) == (packed_len, nblocks, nalphas, bits)
            assert h.code_bits == bits
        assert h.block == BLOCK


def test_blockspec_repr_names_the_codec():
    assert repr(_core.BlockSpec(spec_dict(Dynamic(8, False)))) == (
        "<BlockSpec dynamic bits=8 signed=False block=64 scale=absmax rounding=nearest>"
    )
    assert "exmy float8_e4m3fn" in repr(_core.BlockSpec(spec_dict("e4m3", "stochastic")))
    assert "log bits=4" in repr(_core.BlockSpec(spec_dict(Log(4, quantile=0.05))))


def test_blockspec_pickles_and_copies():
    d = spec_dict(Log(4, signed=False, quantile=0.05))
    h = _core.BlockSpec(d)
    x = np.random.default_rng(1).standard_normal(500).astype(np.float32) ** 2
    want = quantized_state(h, x)
    for h2 in (pickle.loads(pickle.dumps(h)), copy.deepcopy(h), copy.copy(h)):
        assert type(h2) is _core.BlockSpec and repr(h2) == repr(h)
        for a, b in zip(quantized_state(h2, x), want):
            np.testing.assert_array_equal(a, b)
    assert h.to_dict() == d


def test_blockspec_keeps_its_own_copy_of_the_dict():
    d = spec_dict(Dynamic(8, True))
    h = _core.BlockSpec(d)
    d["bits"], d["codec"] = 4, "nope"
    assert h.code_bits == 8 and h.to_dict()["codec"] == "dynamic"


@pytest.mark.parametrize(
    "change,match",
    [
        ({"codec": "nope"}, "codec"),
        ({"block": 60}, "block_size"),
        ({"scale": "absmin"}, "scale"),
        ({"rounding": "sideways"}, "rounding"),
        ({"codec": "log", "quantile": 1.5}, "quantile"),
    ],
)
def test_blockspec_rejects_bad_specs(change, match):
    d = spec_dict(Dynamic(8, True))
    d.update(change)
    with pytest.raises(ValueError, match=match):
        _core.BlockSpec(d)
    with pytest.raises(ValueError, match=match):  # the dict path says the same
        _core.blockwise_layout(d, 10)


def test_blockspec_needs_a_dict():
    with pytest.raises(TypeError, match="spec"):
        _core.BlockSpec([("codec", "dynamic")])


def test_a_blockspec_of_another_block_size_is_rejected_by_a_step():
    h = _core.BlockSpec(spec_dict(Dynamic(8, True), block=128))
    p, g = np.zeros(256, np.float32), np.ones(256, np.float32)
    st = (h,) + empty_state(h, 256)
    with pytest.raises(ValueError, match="block size 128"):
        _core.sgd_step_group(
            [(p, g, st, (0.1, 0.9, 1.0, 0.0), False, True, 1, 2, "float32")], BLOCK, 0, "nearest"
        )


# ---------------------------------------------------------------- same bytes as a dict


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("name,cm,cv", CODECS, ids=IDS)
def test_blockwise_quantize_dequantize_same_bytes(name, cm, cv, rounding):
    rng = np.random.default_rng(7)
    for codec, x in ((cm, rng.standard_normal(3000)), (cv, rng.standard_normal(3000) ** 2)):
        x = (x * np.exp(rng.uniform(-6, 6, x.size))).astype(np.float32)
        d = spec_dict(codec, rounding)
        h = _core.BlockSpec(d)
        by_dict, by_handle = empty_state(d, x.size), empty_state(h, x.size)
        g1 = _core.blockwise_quantize(x, d, *by_dict, 11, 3)
        g2 = _core.blockwise_quantize(x, h, *by_handle, 11, 3)
        assert g1 == g2
        for a, b in zip(by_dict, by_handle):
            np.testing.assert_array_equal(a, b)
        out1, out2 = np.empty(x.size, np.float32), np.empty(x.size, np.float32)
        _core.blockwise_dequantize(by_dict[0], d, by_dict[1], by_dict[2], g1, out1)
        _core.blockwise_dequantize(by_handle[0], h, by_handle[1], by_handle[2], g2, out2)
        assert out1.tobytes() == out2.tobytes()


SIZES = [64, 100, 1000, 4096, 333]


def adamw_entries(rng, cm, cv, rounding, use_handle, sizes=SIZES, kind="float32"):
    """AdamW entries with quantized states (the same values for the same rng state)."""
    sm, sv = spec_dict(cm, rounding), spec_dict(cv, rounding)
    if use_handle:
        sm, sv = _core.BlockSpec(sm), _core.BlockSpec(sv)
    entries = []
    for i, n in enumerate(sizes):
        p = rng.standard_normal(n).astype(np.float32)
        g = rng.standard_normal(n).astype(np.float32)
        m = (sm,) + quantized_state(sm, (rng.standard_normal(n) * 0.1).astype(np.float32))
        v = (sv,) + quantized_state(sv, (rng.standard_normal(n) ** 2 * 0.01).astype(np.float32))
        if kind == "bfloat16":
            p = (p.view(np.uint32) >> 16).astype(np.uint16)
            g = (g.view(np.uint32) >> 16).astype(np.uint16)
        scalars = (1 - 1e-3 * 1e-2, 0.0, 0.1, 0.999, 0.001, 1e-8, 1e-3 / 0.1, 0.999**0.5)
        entries.append((p, g, m, v, scalars, (8 * i, 8 * i + 1), 8 * i + 2, kind))
    return entries


def arrays_of(entries):
    """Every array an entry list holds, in order (params, grads, packed states)."""
    out = []
    for e in entries:
        for a in e:
            if isinstance(a, np.ndarray):
                out.append(a)
            elif isinstance(a, tuple) and a and isinstance(a[-1], np.ndarray):
                out.extend(x for x in a if isinstance(x, np.ndarray))
    return out


def assert_same_arrays(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes()


@pytest.mark.parametrize("kind", ["float32", "bfloat16"])
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("name,cm,cv", CODECS, ids=IDS)
def test_adamw_step_group_same_bytes(name, cm, cv, rounding, kind):
    by_dict = adamw_entries(np.random.default_rng(3), cm, cv, rounding, False, kind=kind)
    by_handle = adamw_entries(np.random.default_rng(3), cm, cv, rounding, True, kind=kind)
    assert_same_arrays(arrays_of(by_dict), arrays_of(by_handle))
    for _ in range(3):
        _core.adamw_step_group(by_dict, BLOCK, 5, "stochastic")
        _core.adamw_step_group(by_handle, BLOCK, 5, "stochastic")
    assert_same_arrays(arrays_of(by_dict), arrays_of(by_handle))


def sgd_entries(rng, codec, rounding, use_handle, first):
    spec = spec_dict(codec, rounding)
    if use_handle:
        spec = _core.BlockSpec(spec)
    entries = []
    for i, n in enumerate(SIZES):
        p = rng.standard_normal(n).astype(np.float32)
        g = rng.standard_normal(n).astype(np.float32)
        b = (spec,) + quantized_state(spec, rng.standard_normal(n).astype(np.float32))
        entries.append(
            (p, g, b, (0.01, 0.9, 0.9, 1e-4), i % 2 == 1, first, 4 * i, 4 * i + 1, "float32")
        )
    return entries


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("name,cm,cv", CODECS, ids=IDS)
def test_sgd_step_group_same_bytes(name, cm, cv, rounding):
    for first in (True, False):
        by_dict = sgd_entries(np.random.default_rng(4), cm, rounding, False, first)
        by_handle = sgd_entries(np.random.default_rng(4), cm, rounding, True, first)
        for _ in range(2):
            _core.sgd_step_group(by_dict, BLOCK, 9, "nearest")
            _core.sgd_step_group(by_handle, BLOCK, 9, "nearest")
        assert_same_arrays(arrays_of(by_dict), arrays_of(by_handle))


@pytest.mark.parametrize("name,cm,cv", CODECS, ids=IDS)
def test_muon_momentum_same_bytes(name, cm, cv):
    rng = np.random.default_rng(5)
    x0 = rng.standard_normal(2000).astype(np.float32)
    g0 = rng.standard_normal(2000).astype(np.float32)
    d = spec_dict(cm, "stochastic")
    results = []
    for spec in (d, _core.BlockSpec(d)):
        buf = (spec,) + quantized_state(spec, x0)
        g = g0.copy()
        _core.muon_momentum(g, buf, 0.95, True, BLOCK, 1, 2, 0)
        results.append([g] + list(buf[1:]))
    assert_same_arrays(*results)


# ---------------------------------------------------------------- small calls vs the pool


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("name,cm,cv", CODECS, ids=IDS)
def test_small_calls_equal_one_big_call(name, cm, cv, rounding, restore_threads):
    """1Mi elements stepped as one entry (the pool, 1 and 2 threads) and as 64 calls of
    16Ki elements (each on the calling thread), keyed by their offsets: the same bits."""
    n, piece = 1 << 20, 1 << 14
    assert piece <= SERIAL_MAX < n

    def fresh():
        return adamw_entries(np.random.default_rng(6), cm, cv, rounding, True, sizes=[n])[0]

    results = []
    for threads in (1, 2):
        lowfp.set_num_threads(threads)
        e = fresh()
        for _ in range(2):
            _core.adamw_step_group([e], BLOCK, 13, "nearest")
        results.append(arrays_of([e]))

    e = fresh()
    p, g, (hm, pm, sm, am), (hv, pv, sv, av), scalars, streams, pstream, kind = e
    bm, bv = hm.packed_len(piece), hv.packed_len(piece)
    km, kv = hm.num_alphas(piece), hv.num_alphas(piece)
    for _ in range(2):
        for k in range(n // piece):
            i, b = k * piece, k * piece // BLOCK
            sl = slice(i, i + piece)
            m = (
                hm,
                pm[k * bm : (k + 1) * bm],
                sm[b : b + piece // BLOCK],
                am[k * km : (k + 1) * km],
            )
            v = (
                hv,
                pv[k * bv : (k + 1) * bv],
                sv[b : b + piece // BLOCK],
                av[k * kv : (k + 1) * kv],
            )
            _core.adamw_step_group(
                [(p[sl], g[sl], m, v, scalars, streams, pstream, kind)], BLOCK, 13, "nearest", [i]
            )
    results.append(arrays_of([e]))
    assert_same_arrays(results[0], results[1])
    assert_same_arrays(results[0], results[2])


@pytest.mark.parametrize("name,cm,cv", CODECS, ids=IDS)
def test_many_small_entries_alone_or_with_a_big_one(name, cm, cv):
    """Small entries stepped alone (on the calling thread) and next to a big entry that sends
    the call to the pool: the same bits for the small ones."""
    small = [64, 200, 1000, 130, 4096, 64, 512]
    assert sum(small) <= SERIAL_MAX
    alone = adamw_entries(np.random.default_rng(8), cm, cv, "stochastic", True, sizes=small)
    mixed = adamw_entries(
        np.random.default_rng(8), cm, cv, "stochastic", True, sizes=small + [SERIAL_MAX + 1000]
    )
    for _ in range(2):
        _core.adamw_step_group(alone, BLOCK, 2, "stochastic")
        _core.adamw_step_group(mixed, BLOCK, 2, "stochastic")
    assert_same_arrays(arrays_of(alone), arrays_of(mixed[: len(small)]))


@pytest.mark.parametrize("kind", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("n", [0, 1, 100, SERIAL_MAX, SERIAL_MAX + 1, 300_000])
def test_all_finite_small_and_big(n, kind):
    dtype = {"float32": np.float32, "bfloat16": np.uint16, "float16": np.uint16}[kind]
    bad = {
        "float32": [np.nan, np.inf, -np.inf],
        "bfloat16": [0x7FC0, 0x7F80, 0xFF80, 0x7F81],
        "float16": [0x7E00, 0x7C00, 0xFC00, 0x7C01],
    }[kind]
    x = np.zeros(n, dtype)
    if kind == "float16":
        x[:] = 0x7BFF  # the largest finite float16
    elif kind == "bfloat16":
        x[:] = 0x7F7F  # the largest finite bfloat16
    else:
        x[:] = np.finfo(np.float32).max
    assert _core.all_finite(x, kind)
    for pos in {0, n // 2, n - 1} if n else set():
        for b in bad:
            y = x.copy()
            y[pos] = b
            assert not _core.all_finite(y, kind), (pos, b)


@pytest.mark.parametrize("n", [16, 40_000, 300_000])
def test_all_finite_many_finds_any_nonfinite_value(n):
    """One call over many arrays (float32 and 16-bit bits), small and parallel totals."""
    rng = np.random.default_rng(n)
    arrays = [
        rng.standard_normal(n).astype(np.float32),
        rng.standard_normal(n).astype(np.float32).view(np.uint32).astype(np.uint16),
        (rng.standard_normal(n).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16),
    ]
    arrays[1] &= 0x3BFF  # float16 bits below 1.0: finite
    kinds = ["float32", "float16", "bfloat16"]
    assert _core.all_finite_many(arrays, kinds)
    assert _core.all_finite_many([], [])
    for k, bad in ((0, np.float32(np.inf)), (1, np.uint16(0x7E00)), (2, np.uint16(0xFF80))):
        for where in (0, n // 2, n - 1):
            xs = [a.copy() for a in arrays]
            xs[k][where] = bad
            assert not _core.all_finite_many(xs, kinds), (k, where)
    with pytest.raises(ValueError, match="kinds"):
        _core.all_finite_many(arrays, kinds[:2])
