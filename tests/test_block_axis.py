"""Blockwise ``axis=`` (blocks along one axis, rows padded independently) and the blockwise
non-finite policy ``nonfinite="error" | "ocp"`` (issue 13, items 5 and 6)."""

import os

import numpy as np
import pytest

import lowfp
from lowfp import _core
from lowfp.qtensor import _pad_rows, _unpad_rows

DATA = os.path.join(os.path.dirname(__file__), "data")
rng = np.random.default_rng(1313)


def same(a, b):
    """Bitwise equality of float arrays (NaN equals NaN)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


# ------------------------------------------------------------------ the repro


def test_rows_of_very_different_magnitude_keep_their_own_scales():
    x = rng.standard_normal((2, 48)).astype(np.float32)
    x[1] *= 1000
    q = lowfp.quantize_blockwise(x, "mxfp4")
    assert q.axis == 1
    d = q.dequantize()
    assert np.count_nonzero(d[0, 32:]) > 0
    alone = lowfp.quantize_blockwise(x[0], "mxfp4")
    assert same(d[0], alone.dequantize())
    assert same(d[1], lowfp.quantize_blockwise(x[1], "mxfp4").dequantize())
    # the flat layout (axis=None) is what lowfp did before: row 0's tail shares row 1's block
    flat = lowfp.quantize_blockwise(x, "mxfp4", axis=None)
    assert flat.axis is None and np.count_nonzero(flat.dequantize()[0, 32:]) == 0


# ------------------------------------------------------------------ rows quantize alone

CODECS = [
    ("mxfp4", {}),
    ("mxfp8", {}),
    ("mxfp6_e3m2", {"scale": "e8m0_rceil"}),
    ("float8_e4m3fn", {"scale": "e8m0_even", "block_size": 16}),
    ("float8_e5m2", {"scale": "absmax", "block_size": 16}),
    (lowfp.Linear(4), {"block_size": 16}),
    (lowfp.Linear(8), {"scale": "e8m0", "block_size": 16}),
    (lowfp.Dynamic(8), {"block_size": 32}),
    (lowfp.Log(4, quantile=0.3), {"block_size": 16}),
    (lowfp.Log(5, signed=True, quantile=0.1), {"block_size": 16}),
    (lowfp.Log(3), {"block_size": 16}),
]


@pytest.mark.parametrize("codec,kw", CODECS, ids=lambda v: repr(v)[:30])
@pytest.mark.parametrize(
    "shape,axis",
    [((3, 40), -1), ((3, 40), 0), ((2, 3, 21), 1), ((4, 5, 37), 2), ((37,), 0), ((5, 64), 1)],
)
def test_every_row_quantizes_as_it_would_alone(codec, kw, shape, axis):
    x = rng.standard_normal(shape).astype(np.float32)
    if isinstance(codec, lowfp.Log) and not codec.signed:
        x = np.abs(x)
    x *= np.exp(rng.uniform(-6, 6, shape)).astype(np.float32)  # rows of different sizes
    q = lowfp.quantize_blockwise(x, codec, axis=axis, **kw)
    assert q.axis == axis % len(shape) and q.shape == shape
    d = q.dequantize()
    assert d.shape == shape and d.flags.c_contiguous
    m, dm = np.moveaxis(x, axis, -1), np.moveaxis(d, axis, -1)
    nb = -(-shape[axis] // q.block_size)
    for i, idx in enumerate(np.ndindex(m.shape[:-1])):
        alone = lowfp.quantize_blockwise(np.ascontiguousarray(m[idx]), codec, **kw)
        assert same(dm[idx], alone.dequantize()), idx
        assert np.array_equal(q.scales[i * nb : (i + 1) * nb], alone.scales)
        if alone.alphas is not None:  # the quantile bases: padding zeros are not counted
            assert same(q.alphas[i * nb : (i + 1) * nb], alone.alphas)


def test_padding_would_move_a_quantile_base_without_the_row_length():
    # the core's `row` argument is what keeps the padding out of the quantile
    x = np.abs(rng.standard_normal((2, 24))).astype(np.float32) + 0.5
    q = lowfp.quantize_blockwise(x, lowfp.Log(4, quantile=0.3), block_size=16)
    padded = np.zeros((2, 32), np.float32)
    padded[:, :24] = x
    naive = lowfp.quantize_blockwise(padded, lowfp.Log(4, quantile=0.3), block_size=16)
    assert not np.array_equal(q.alphas, naive.alphas)
    assert np.array_equal(q.alphas[[0, 2]], naive.alphas[[0, 2]])  # full blocks agree


def test_nvfp4_tensor_scale_is_the_whole_tensors():
    x = rng.standard_normal((5, 40)).astype(np.float32)
    q = lowfp.quantize_blockwise(x, "nvfp4")
    flat = lowfp.quantize_blockwise(x, "nvfp4", axis=None)
    assert q.global_scale == flat.global_scale  # padding zeros change no amax
    err = np.abs(q.dequantize() - x).max()
    assert err <= np.abs(x).max() / 6 * 1.01


# ------------------------------------------------------------------ layout


@pytest.mark.parametrize("shape", [(50,), (4, 64), (3, 2, 32), (1, 40)])
def test_no_padding_needed_gives_the_flat_layout(shape):
    # 1-D input, rows of whole blocks, and a single row store exactly what axis=None does
    x = rng.standard_normal(shape).astype(np.float32)
    for codec in ("mxfp4", lowfp.Log(4, quantile=0.2)):
        kw = {"block_size": 32}
        a = lowfp.quantize_blockwise(np.abs(x), codec, **kw)
        b = lowfp.quantize_blockwise(np.abs(x), codec, axis=None, **kw)
        assert np.array_equal(a.codes, b.codes) and np.array_equal(a.scales, b.scales)
        assert a.nbytes == b.nbytes and same(a.dequantize(), b.dequantize())


@pytest.mark.parametrize(
    "codec,bits",
    [
        ("mxfp4", 4),
        ("mxfp6", 6),
        ("mxfp8", 8),
        (lowfp.Linear(3), 3),
        (lowfp.Log(4, quantile=0.5), 4),
    ],
)
@pytest.mark.parametrize(
    "shape,axis",
    [
        ((3, 40), 1),
        ((3, 40), 0),
        ((2, 3, 5), 1),
        ((7, 33), -1),
        ((0, 5), 1),
        ((3, 0), 1),
        ((2, 0), 0),
    ],
)
def test_nbytes_counts_the_padded_codes_exactly(codec, bits, shape, axis):
    x = np.abs(rng.standard_normal(shape)).astype(np.float32)
    q = lowfp.quantize_blockwise(x, codec, axis=axis, block_size=32)
    n = shape[axis]
    rows = int(np.prod(shape)) // n if n else 0
    padded = -(-n // 32) * 32
    count = (rows - 1) * padded + n if rows and n else 0  # the last row is not padded
    blocks = rows * (padded // 32)
    assert q.codes.size == (count * bits + 7) // 8
    assert q.scales.size == blocks
    per_scale = 4 if q.scale == "absmax" else 1
    alphas = 4 * blocks if q.alphas is not None else 0
    assert q.nbytes == q.codes.size + per_scale * blocks + alphas
    assert q.dequantize().shape == shape


def test_layouts_come_back_as_given():
    x = rng.standard_normal((6, 5, 40)).astype(np.float32)
    ref = lowfp.quantize_blockwise(np.ascontiguousarray(np.moveaxis(x, 0, -1)), "mxfp8")
    for view in (x, np.asfortranarray(x), x[:, :, :]):
        q = lowfp.quantize_blockwise(view, "mxfp8", axis=0)
        assert q.axis == 0 and q.shape == (6, 5, 40)
        assert same(np.moveaxis(q.dequantize(), 0, -1), ref.dequantize())
    strided = rng.standard_normal((8, 50)).astype(np.float32)[::2, ::2]  # (4, 25)
    q = lowfp.quantize_blockwise(strided, "mxfp8", axis=-1, block_size=16)
    for r in range(4):
        alone = lowfp.quantize_blockwise(np.ascontiguousarray(strided[r]), "mxfp8", block_size=16)
        assert same(q.dequantize()[r], alone.dequantize())


def test_16_bit_and_float64_inputs_and_dtypes():
    x = rng.standard_normal((3, 40))
    ref = lowfp.quantize_blockwise(x.astype(np.float32), "mxfp8", axis=0).dequantize()
    assert same(lowfp.quantize_blockwise(x, "mxfp8", axis=0).dequantize(), ref)
    h = x.astype(np.float16)
    q = lowfp.quantize_blockwise(h, "mxfp8", axis=0)
    ref16 = lowfp.quantize_blockwise(h.astype(np.float32), "mxfp8", axis=0).dequantize()
    assert same(q.dequantize(), ref16)
    assert q.dequantize(np.float16).shape == (3, 40)


def test_torch_in_torch_out():
    torch = pytest.importorskip("torch")
    x = torch.randn(3, 40)
    q = lowfp.quantize_blockwise(x, "mxfp4", axis=0)
    d = q.dequantize()
    assert isinstance(d, torch.Tensor) and d.shape == (3, 40)
    ref = lowfp.quantize_blockwise(x.numpy(), "mxfp4", axis=0).dequantize()
    assert same(d.numpy(), ref)
    assert q.dequantize(torch.bfloat16).dtype == torch.bfloat16


def test_device_row_helpers_on_torch_tensors():
    # the CUDA path pads and unpads rows with these on the device; torch CPU tensors take the
    # same branch, so their logic is checked here without a GPU
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((3, 4, 21)).astype(np.float32)
    for axis in (0, 1, 2):
        q = lowfp.quantize_blockwise(x, "mxfp8", axis=axis, block_size=16)
        want = _pad_rows(x, q)
        got = _pad_rows(torch.from_numpy(x), q)
        assert isinstance(got, torch.Tensor) and same(got.numpy(), want)
        back = _unpad_rows(torch.from_numpy(np.ascontiguousarray(want)), q)
        assert same(back.numpy(), x)
        assert same(_unpad_rows(np.ascontiguousarray(want), q), x)


def test_axis_errors():
    x = np.zeros((3, 40), np.float32)
    with pytest.raises(ValueError, match=r"axis: expected -2 <= axis < 2"):
        lowfp.quantize_blockwise(x, "mxfp4", axis=2)
    with pytest.raises(ValueError, match="axis"):
        lowfp.quantize_blockwise(x, "mxfp4", axis=-3)
    for bad in ("last", True, 1.0):
        with pytest.raises(TypeError, match="axis: expected an int or None"):
            lowfp.quantize_blockwise(x, "mxfp4", axis=bad)
    q = lowfp.quantize_blockwise(np.float32(3.0), "mxfp4")  # 0-d: flat
    assert q.axis is None and q.dequantize().shape == ()


# ------------------------------------------------------------------ stochastic keys


def test_stochastic_bits_are_keyed_by_the_stored_order():
    x = rng.standard_normal((3, 40)).astype(np.float32)
    q = lowfp.quantize_blockwise(x, "mxfp4", rounding="stochastic", seed=9, axis=1)
    # the stored order: rows of 40 padded to 64 (the last row unpadded), quantized flat
    stored = np.zeros(2 * 64 + 40, np.float32)
    for r in range(3):
        stored[64 * r : 64 * r + 40] = x[r]
    flat = lowfp.quantize_blockwise(stored, "mxfp4", rounding="stochastic", seed=9, axis=None)
    assert np.array_equal(q.codes, flat.codes) and np.array_equal(q.scales, flat.scales)


def test_stochastic_bits_do_not_depend_on_threads():
    x = rng.standard_normal((300, 1000)).astype(np.float32)  # big enough for the pool
    old = lowfp.num_threads()
    try:
        got = []
        for n in (1, 3, 0):
            lowfp.set_num_threads(n)
            q = lowfp.quantize_blockwise(x, "mxfp4", rounding="stochastic", seed=4, axis=0)
            got.append(q.codes)
    finally:
        lowfp.set_num_threads(old)
    assert all(np.array_equal(got[0], g) for g in got[1:])


# ------------------------------------------------------------------ safetensors


def test_save_load_keeps_the_axis(tmp_path):
    x = rng.standard_normal((3, 5, 40)).astype(np.float32)
    qs = {
        "a": lowfp.quantize_blockwise(x, "mxfp4", axis=1),
        "b": lowfp.quantize_blockwise(x, "nvfp4"),
        "c": lowfp.quantize_blockwise(x, lowfp.Log(4, quantile=0.2), block_size=16, axis=None),
    }
    path = str(tmp_path / "q.safetensors")
    lowfp.save_qtensors(qs, path)
    back = lowfp.load_qtensors(path)
    assert [back[k].axis for k in "abc"] == [1, 2, None]
    for k, q in qs.items():
        assert q.metadata()["axis"] == q.axis
        assert same(back[k].dequantize(), q.dequantize())


def test_files_written_before_axis_load_flat():
    # written by lowfp at 8cebec6 (before axis=): blocks over the C-order flattening, no
    # "axis" key; "expected.<name>" holds what each dequantized to then
    from safetensors.numpy import load_file

    path = os.path.join(DATA, "qtensor_flat_v1.safetensors")
    loaded = lowfp.load_qtensors(path)
    arrays = load_file(path)
    qs = {k: v for k, v in loaded.items() if isinstance(v, lowfp.QTensor)}
    assert sorted(qs) == ["lin", "logq", "mx", "nv", "sr"]
    # the plain arrays beside them come back as arrays
    assert sorted(set(loaded) - set(qs)) == sorted(f"expected.{k}" for k in qs)
    assert all(np.array_equal(loaded[k], arrays[k]) for k in set(loaded) - set(qs))
    for name, q in qs.items():
        assert q.axis is None
        assert same(q.dequantize(), arrays[f"expected.{name}"]), name
        # and quantizing the same values flat today stores the same layout
        assert q.codes.size == _core.blockwise_layout(q._spec(), q.size)[0]
    # the flat 2-D file's mx row 0 tail is the zeros; axis=-1 would not be
    assert qs["mx"].shape == (2, 48)


# ------------------------------------------------------------------ non-finite policy


def test_nonfinite_error_names_the_element():
    x = rng.standard_normal((4, 40)).astype(np.float32)
    x[2, 7] = np.inf
    with pytest.raises(ValueError, match=r"x: element \(2, 7\) is inf; .*nonfinite='ocp'"):
        lowfp.quantize_blockwise(x, "mxfp4")
    with pytest.raises(ValueError, match=r"x: element \(2, 7\) is inf"):
        lowfp.quantize_blockwise(x, "mxfp4", axis=0)
    with pytest.raises(ValueError, match=r"x: element 87 is inf"):  # flat: the C-order index
        lowfp.quantize_blockwise(x, "mxfp4", axis=None)
    with pytest.raises(ValueError, match=r"nonfinite: expected one of .*'ocp'.*got 'nan'"):
        lowfp.quantize_blockwise(x, "mxfp4", nonfinite="nan")


@pytest.mark.parametrize(
    "codec,kw,nan_code",
    [
        ("mxfp4", {}, 0xFF),
        ("mxfp8", {}, 0xFF),
        ("mxfp8", {"scale": "e8m0_ceil"}, 0xFF),
        ("mxfp6", {"scale": "e8m0_even"}, 0xFF),
        ("mxfp8_e5m2", {"scale": "e8m0_rceil"}, 0xFF),
        (lowfp.Linear(8), {"scale": "e8m0", "block_size": 32}, 0xFF),
        ("nvfp4", {"block_size": 32}, 0x7F),
        ("mxfp4", {"scale": "absmax"}, None),
        (lowfp.Dynamic(8), {"block_size": 32}, None),
        (lowfp.Log(4, signed=True, quantile=0.2), {"block_size": 32}, None),
    ],
)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_ocp_policy_makes_nan_blocks(codec, kw, nan_code, bad):
    x = rng.standard_normal((3, 80)).astype(np.float32)
    x[0, 0] = 50.0  # the tensor's max is finite and stays (the e4m3 tensor scale)
    x[1, 40] = bad  # row 1, block 1 (of 3: 32, 32, 16)
    x[2, 79] = bad  # row 2, block 2 (the short last block)
    q = lowfp.quantize_blockwise(x, codec, nonfinite="ocp", **kw)
    nb = q.scales.size // 3
    bad_blocks = [nb + 1, 2 * nb + nb - 1]
    if nan_code is None:
        assert q.scales.dtype == np.float32 and np.isnan(q.scales[bad_blocks]).all()
    else:
        assert q.scales.dtype == np.uint8 and (q.scales[bad_blocks] == nan_code).all()
    good = np.ones(q.scales.size, bool)
    good[bad_blocks] = False
    d = q.dequantize()
    assert np.isnan(d[1, 32:64]).all() and np.isnan(d[2, 64:]).all()
    mask = np.ones(x.shape, bool)
    mask[1, 32:64] = False
    mask[2, 64:] = False
    assert np.isfinite(d[mask]).all()
    # every other block is as if the bad blocks held zeros
    z = x.copy()
    z[~mask] = 0
    ref = lowfp.quantize_blockwise(z, codec, **kw)
    assert q.global_scale == ref.global_scale
    assert np.array_equal(q.scales[good], ref.scales[good])
    assert same(d[mask], ref.dequantize()[mask])
    with pytest.raises(ValueError, match="x: element"):
        lowfp.quantize_blockwise(x, codec, **kw)


def test_ocp_policy_follows_the_axis():
    x = rng.standard_normal((40, 3)).astype(np.float32)
    x[5, 1] = np.nan
    d = lowfp.quantize_blockwise(x, "mxfp8", axis=0, nonfinite="ocp").dequantize()
    assert np.isnan(d[:32, 1]).all() and np.isfinite(d[32:, 1]).all()
    assert np.isfinite(d[:, [0, 2]]).all()


@pytest.mark.parametrize(
    "shape,axis",
    [((70, 130), 0), ((64, 256), 0), ((3, 100, 130), 1), ((2, 80, 2, 70), 1), ((2, 3, 90, 200), 2)],
)
@pytest.mark.parametrize("order", ["C", "F"])
def test_large_moved_axes_copy_in_strips(shape, axis, order):
    # inner extent >= 128 and axis >= 64: the strip copies, both ways, padded or not
    x = np.asarray(rng.standard_normal(shape).astype(np.float32), order=order)
    for block in (32, 16):
        q = lowfp.quantize_blockwise(x, "mxfp8", axis=axis, block_size=block)
        ref = lowfp.quantize_blockwise(
            np.ascontiguousarray(np.moveaxis(x, axis, -1)), "mxfp8", block_size=block
        )
        assert np.array_equal(q.codes, ref.codes) and np.array_equal(q.scales, ref.scales)
        assert same(q.dequantize(), np.moveaxis(ref.dequantize(), -1, axis))
