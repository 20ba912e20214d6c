"""Codecs as values, QTensor vs np.asarray, array order and byte order, error messages."""

import re

import numpy as np
import pytest

import lowfp

X = np.linspace(-5, 5, 48, dtype=np.float32).reshape(6, 8)
XF = np.asfortranarray(X)


# ---------------------------------------------------------------- codecs are values


@pytest.mark.parametrize(
    "make,other",
    [
        (lambda: lowfp.Linear(4), lambda: lowfp.Linear(4, signed=False)),
        (lambda: lowfp.Dynamic(8), lambda: lowfp.Dynamic(8, signed=False)),
        (lambda: lowfp.Log(4, alpha=0.25), lambda: lowfp.Log(4, alpha=0.5)),
        (lambda: lowfp.Log(3, zero=False, quantile=0.05), lambda: lowfp.Log(3, zero=False)),
    ],
)
def test_table_codecs_are_values(make, other):
    a, b, c = make(), make(), other()
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != c
    assert a != lowfp.Linear(2) or isinstance(a, lowfp.Linear)
    with pytest.raises(AttributeError, match="immutable"):
        a.bits = 2
    with pytest.raises(ValueError):
        a.levels[0] = 0.0  # read-only: the levels are the codec's


def test_codecs_of_different_kinds_differ():
    assert lowfp.Linear(8) != lowfp.Dynamic(8)
    assert lowfp.Log(4) == lowfp.Log(4, quantile=None)
    assert lowfp.Linear(4) != "linear"


# ---------------------------------------------------------------- QTensor is not an array


def test_np_asarray_of_a_qtensor_points_to_dequantize():
    q = lowfp.quantize_blockwise(X.reshape(-1), "mxfp4")
    with pytest.raises(TypeError, match=r"q\.dequantize\(\)"):
        np.asarray(q)
    with pytest.raises(TypeError):
        np.add(q, 1)
    assert np.asarray(q.dequantize()).shape == (48,)


# ---------------------------------------------------------------- Fortran order in, out


def test_fortran_order_in_fortran_order_out():
    c = lowfp.encode(XF, "e4m3")
    assert c.flags.f_contiguous and not c.flags.c_contiguous
    assert np.array_equal(c, lowfp.encode(X, "e4m3"))
    d = lowfp.decode(c, "e4m3")
    assert d.flags.f_contiguous and np.array_equal(d, lowfp.decode(lowfp.encode(X, "e4m3"), "e4m3"))
    q = lowfp.quantize(XF, "e2m1")
    assert q.flags.f_contiguous and np.array_equal(q, lowfp.quantize(X, "e2m1"))
    t = lowfp.Linear(4).encode(XF / 5)
    assert t.flags.f_contiguous and np.array_equal(t, lowfp.Linear(4).encode(X / 5))
    h = lowfp.decode(c, "e4m3", dtype=np.float16)
    assert h.flags.f_contiguous and np.array_equal(h, d.astype(np.float16))


def test_fortran_stochastic_rounding_keys_by_logical_index():
    # the same logical array gives the same bits whatever its memory order
    for fn in (
        lambda v: lowfp.encode(v, "e2m1", rounding="stochastic", seed=9),
        lambda v: lowfp.quantize(v, "e2m1", rounding="stochastic", seed=9),
        lambda v: lowfp.Dynamic(8).encode(v / 5, rounding="stochastic", seed=9),
    ):
        f, c = fn(XF), fn(X)
        assert f.flags.f_contiguous and np.array_equal(f, c)


def test_fortran_out_buffers_and_strided_inputs():
    o = np.empty(X.shape, np.uint8, order="F")
    assert lowfp.encode(X, "e4m3", out=o) is o
    assert np.array_equal(o, lowfp.encode(X, "e4m3"))
    o2 = np.empty(X.shape, np.uint8, order="F")
    lowfp.encode(X, "e4m3", rounding="stochastic", seed=4, out=o2)
    assert np.array_equal(o2, lowfp.encode(X, "e4m3", rounding="stochastic", seed=4))
    s = X[:, ::2]  # neither C nor F contiguous: a C-ordered result
    assert np.array_equal(lowfp.encode(s, "e4m3"), lowfp.encode(np.ascontiguousarray(s), "e4m3"))


def test_torch_transposed_tensor_keeps_its_strides():
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(X).t()
    c = lowfp.encode(t, "e4m3")
    assert c.stride() == t.stride() and torch.equal(c, torch.from_numpy(lowfp.encode(X.T, "e4m3")))
    assert lowfp.decode(c, "e4m3").stride() == t.stride()


# ---------------------------------------------------------------- byte order


@pytest.mark.parametrize("dt", [">f4", ">f8", ">f2"])
def test_big_endian_inputs_are_converted(dt):
    x = X.astype(dt)
    assert np.array_equal(lowfp.encode(x, "e4m3"), lowfp.encode(x.astype(dt[1:]), "e4m3"))
    q = lowfp.quantize(x, "e4m3")
    assert q.dtype.isnative and np.array_equal(q, lowfp.quantize(x.astype(dt[1:]), "e4m3"))


def test_big_endian_codes_are_converted():
    c = lowfp.encode(X, "bfloat16")
    assert np.array_equal(lowfp.decode(c.astype(">u2"), "bfloat16"), lowfp.decode(c, "bfloat16"))


# ---------------------------------------------------------------- messages


@pytest.mark.parametrize(
    "name,suggestion",
    [
        ("mxfp44", "mxfp4"),
        ("e4m3fnn", "e4m3"),
        ("float8_e4m3f", "float8_e4m3fn"),
        ("bfloat", "bfloat16"),
        ("p3109k8p4se", "p3109_k8p4se"),
    ],
)
def test_unknown_names_get_suggestions(name, suggestion):
    with pytest.raises(ValueError, match=rf"fmt: unknown format .*did you mean .*'{suggestion}'"):
        lowfp.format(name)
    with pytest.raises(ValueError, match=rf"did you mean .*'{suggestion}'"):
        lowfp.encode(X, name)


def _message(fn) -> str:
    with pytest.raises((ValueError, TypeError)) as e:
        fn()
    return str(e.value)


@pytest.mark.parametrize(
    "call,want",
    [
        (lambda: lowfp.Format(9, 3), "exp_bits: expected 1 <= exp_bits <= 8, got 9"),
        (lambda: lowfp.format("e9m3"), "exp_bits: expected 1 <= exp_bits <= 8"),
        (lambda: lowfp.format("e4m24"), "man_bits: expected 0 <= man_bits <= 23"),
        (lambda: lowfp.pack(np.zeros(2, np.uint8), 9), "bits: expected an int with 1 <= bits <= 8"),
        (lambda: lowfp.pack(np.array([1, 9], np.uint8), 3), "codes"),
        (lambda: lowfp.decode(np.array([300], np.uint16), "e4m3"), "0 <= code <= 255"),
        (lambda: lowfp.set_num_threads(5000), "n: expected 0 <= n <= 4096"),
        (lambda: lowfp.random_bits(-1), "n: expected an int with n >= 0"),
        (lambda: lowfp.encode(X, "e4m3", stream=-1), "stream: expected an int with 0 <= stream"),
        (
            lambda: lowfp.quantize_blockwise(X, "e4m3", block_size=8),
            "block_size: expected a multiple of 8 with 16 <= block_size <= 4096, got 8",
        ),
        (
            lambda: lowfp.quantize_blockwise(X, "mxfp44"),
            "codec: unknown format \"mxfp44\"; did you mean 'mxfp4'",
        ),
    ],
)
def test_messages_name_the_argument_in_python_range_syntax(call, want):
    msg = _message(call)
    assert want in msg
    assert not re.search(r"\d\.\.=?\d", msg), msg
