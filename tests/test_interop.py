"""ml_dtypes and torch interop: dtypes as formats, typed codes, torch in / torch out."""

import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import lowfp
from lowfp.formats import _ML_DTYPES, _TORCH_DTYPES

ml_dtypes = pytest.importorskip("ml_dtypes")
torch = pytest.importorskip("torch")

X = np.linspace(-7, 7, 60, dtype=np.float32).reshape(6, 10)
SMALL_ML = sorted(n for n in _ML_DTYPES if np.dtype(getattr(ml_dtypes, n)).itemsize == 1)
TORCH_F8 = sorted(n for n in _TORCH_DTYPES if n.startswith("float8_"))


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal values, NaN equal to NaN, -0 distinct from +0."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return bool(np.all((a == b) & (np.signbit(a) == np.signbit(b)) | np.isnan(a) & np.isnan(b)))


# ---------------------------------------------------------------- dtypes as formats


@pytest.mark.parametrize("name", sorted(_ML_DTYPES))
def test_format_of_ml_dtypes_types_and_dtypes(name):
    t = getattr(ml_dtypes, name)
    f = lowfp.format(name)
    assert lowfp.format(t) == f and lowfp.format(np.dtype(t)) == f
    assert f.ml_dtype == np.dtype(t)
    assert lowfp.format(f.ml_dtype) == f


@pytest.mark.parametrize("name", sorted(_TORCH_DTYPES))
def test_format_of_torch_dtypes(name):
    td = getattr(torch, name)
    f = lowfp.format(td)
    assert f.name == name and f.torch_dtype is td


def test_numpy_float_dtypes_and_missing_dtypes():
    assert lowfp.format(np.float16).ml_dtype == np.dtype(np.float16)
    assert lowfp.format(np.dtype(np.float32)).name == "float32"
    assert lowfp.format("e3m3").ml_dtype is None and lowfp.format("e3m3").torch_dtype is None
    assert lowfp.format("float8_e3m4").torch_dtype is None  # torch has no E3M4
    assert lowfp.format("float4_e2m1fn").torch_dtype is None  # only the packed pair type
    with pytest.raises(ValueError, match="float4_e2m1fn_x2 holds two float4_e2m1fn codes"):
        lowfp.format(torch.float4_e2m1fn_x2)
    for bad in (torch.float64, np.float64, np.dtype(np.int8), ml_dtypes.int4):
        with pytest.raises(ValueError, match="fmt: dtype .* is not a lowfp format"):
            lowfp.format(bad)
    with pytest.raises(TypeError, match="fmt: expected a format name"):
        lowfp.format(3.0)


def test_torch_float4_x2_bytes_are_lowfp_packed_codes():
    codes = lowfp.encode(np.array([0.5, -6.0, 1.5, 0.0], np.float32), "e2m1")
    packed = torch.from_numpy(lowfp.pack(codes, 4))
    t = packed.view(torch.float4_e2m1fn_x2)  # element 0 in the low nibble, as torch's order
    assert (t.view(torch.uint8) & 0xF)[0].item() == codes[0]
    assert np.array_equal(lowfp.unpack(t.view(torch.uint8), 4, 4).numpy(), codes)


def test_importing_lowfp_imports_neither_torch_nor_ml_dtypes():
    root = os.path.dirname(os.path.dirname(os.path.abspath(lowfp.__file__)))
    code = (
        "import sys, numpy as np, lowfp\n"
        "x = np.linspace(-3, 3, 16, dtype=np.float32)\n"
        "c = lowfp.encode(x, 'e4m3'); lowfp.decode(c, lowfp.format('fp4') and 'e4m3')\n"
        "lowfp.encode(x, 'e4m3', rounding='stochastic'); lowfp.quantize_blockwise(x, 'mxfp4')\n"
        "bad = [m for m in ('torch', 'ml_dtypes') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# ---------------------------------------------------------------- typed codes


@pytest.mark.parametrize("name", SMALL_ML)
def test_decode_reads_every_code_of_an_ml_dtypes_array(name):
    dt = np.dtype(getattr(ml_dtypes, name))
    typed = np.arange(256, dtype=np.uint8).view(dt)
    if lowfp.format(name).bits < 8:  # float6/float4: the codes that exist
        typed = np.arange(1 << lowfp.format(name).bits, dtype=np.uint8).view(dt)
    assert _same(lowfp.decode(typed), typed.astype(np.float32))
    assert _same(lowfp.decode(typed, name), typed.astype(np.float32))
    assert _same(lowfp.decode(typed, dtype=np.float64), typed.astype(np.float64))


@pytest.mark.parametrize("name", TORCH_F8)
def test_decode_reads_every_code_of_a_torch_float8_tensor(name):
    t = torch.arange(256, dtype=torch.uint8).view(getattr(torch, name))
    got = lowfp.decode(t)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    assert _same(got.numpy(), t.float().numpy())


def test_typed_codes_are_viewed_not_copied():
    from lowfp.codec import _typed_codes

    a = X.astype(ml_dtypes.float8_e5m2)
    v, f = _typed_codes(a, False)
    assert v.dtype == np.uint8 and np.shares_memory(v, a) and f.name == "float8_e5m2"
    t = torch.from_numpy(X).to(torch.float8_e4m3fn)
    v, f = _typed_codes(t, True)
    assert v.dtype == torch.uint8 and v.data_ptr() == t.data_ptr()


def test_decode_format_checks():
    a = X.astype(ml_dtypes.float8_e4m3fn)
    with pytest.raises(ValueError, match="fmt: float8_e5m2 disagrees with the codes' dtype"):
        lowfp.decode(a, "e5m2")
    with pytest.raises(TypeError, match="fmt: required for integer codes"):
        lowfp.decode(a.view(np.uint8))
    with pytest.raises(ValueError, match="float4_e2m1fn_x2"):
        lowfp.decode(torch.zeros(2, dtype=torch.uint8).view(torch.float4_e2m1fn_x2))


@pytest.mark.parametrize("name", SMALL_ML)
def test_encode_as_dtype_gives_ml_dtypes_arrays(name):
    y = X * 0.25
    got = lowfp.encode(y, name, as_dtype=True, overflow="saturate", nan="zero", negative="clamp")
    assert got.dtype == np.dtype(getattr(ml_dtypes, name)) and got.shape == y.shape
    assert np.array_equal(
        got.view(np.uint8), lowfp.encode(y, name, overflow="saturate", nan="zero", negative="clamp")
    )


def test_encode_as_dtype_matches_the_ecosystem_casts():
    assert np.array_equal(
        lowfp.encode(X, "e4m3", as_dtype=True).view(np.uint8),
        X.astype(ml_dtypes.float8_e4m3fn).view(np.uint8),
    )
    t = torch.from_numpy(X)
    got = lowfp.encode(t, torch.float8_e5m2, as_dtype=True)
    assert got.dtype == torch.float8_e5m2
    assert torch.equal(got.view(torch.uint8), t.to(torch.float8_e5m2).view(torch.uint8))
    with pytest.raises(ValueError, match="as_dtype: NumPy/ml_dtypes has no dtype for e3m3"):
        lowfp.encode(X, "e3m3", as_dtype=True)
    with pytest.raises(ValueError, match="as_dtype: torch has no dtype for float8_e3m4"):
        lowfp.encode(t, "float8_e3m4", as_dtype=True)


def test_out_takes_typed_arrays_and_tensors():
    o = np.empty(X.shape, ml_dtypes.float8_e4m3fn)
    assert lowfp.encode(X, "e4m3", out=o) is o
    assert np.array_equal(o.view(np.uint8), lowfp.encode(X, "e4m3"))
    ot = torch.empty(X.shape, dtype=torch.float8_e4m3fn)
    assert lowfp.encode(torch.from_numpy(X), "e4m3", out=ot) is ot
    assert torch.equal(ot.view(torch.uint8), torch.from_numpy(lowfp.encode(X, "e4m3")))
    ou = torch.empty(X.shape, dtype=torch.uint8)
    assert lowfp.encode(X, "e4m3", out=ou) is ou
    with pytest.raises(TypeError, match="out: expected dtype uint8 or float8_e4m3fn"):
        lowfp.encode(X, "e4m3", out=np.empty(X.shape, ml_dtypes.float8_e5m2))
    c = lowfp.encode(X, "e4m3")
    od = torch.empty(X.shape, dtype=torch.float32)
    assert lowfp.decode(c, "e4m3", out=od) is od
    assert np.array_equal(od.numpy(), lowfp.decode(c, "e4m3"))
    oh = torch.empty(X.shape, dtype=torch.bfloat16)
    assert lowfp.decode(c, "e4m3", dtype=torch.bfloat16, out=oh) is oh
    assert torch.equal(oh, torch.from_numpy(lowfp.decode(c, "e4m3")).bfloat16())


# ---------------------------------------------------------------- 16-bit results


@pytest.mark.parametrize("name", ["float8_e4m3fn", "float8_e8m0fnu", "float6_e3m2fn", "e5m6"])
def test_decode_to_16_bit_floats_rounds_once_like_a_cast(name):
    f = lowfp.format(name)
    codes = np.arange(1 << f.bits, dtype=f.code_dtype)
    f32 = lowfp.decode(codes, f)
    with np.errstate(over="ignore"):
        want16 = f32.astype(np.float16)
    assert _same(lowfp.decode(codes, f, dtype=np.float16), want16)
    assert _same(
        lowfp.decode(codes, f, dtype="bfloat16").astype(np.float32),
        f32.astype(ml_dtypes.bfloat16).astype(np.float32),
    )
    t = lowfp.decode(torch.from_numpy(codes), f, dtype=torch.bfloat16)
    assert t.dtype == torch.bfloat16
    assert _same(t.float().numpy(), torch.from_numpy(f32).bfloat16().float().numpy())
    assert lowfp.decode(torch.from_numpy(codes), f, dtype=np.float16).dtype == torch.float16


def test_numpy_bfloat16_without_ml_dtypes_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # import ml_dtypes raises ImportError
    c = lowfp.encode(X, "e4m3")
    with pytest.raises(ImportError, match="bfloat16 arrays need ml_dtypes"):
        lowfp.decode(c, "e4m3", dtype="bfloat16")
    t = lowfp.decode(torch.from_numpy(c), "e4m3", dtype=torch.bfloat16)  # torch needs none
    assert t.dtype == torch.bfloat16


# ---------------------------------------------------------------- torch in, torch out


def test_pack_unpack_random_bits_torch_in_torch_out():
    codes = torch.from_numpy(lowfp.encode(X, "e2m1"))
    p = lowfp.pack(codes, 4)
    assert isinstance(p, torch.Tensor) and p.dtype == torch.uint8
    assert np.array_equal(p.numpy(), lowfp.pack(codes.numpy(), 4))
    u = lowfp.unpack(p, 4, codes.numel())
    assert isinstance(u, torch.Tensor) and torch.equal(u, codes.reshape(-1))
    r = lowfp.random_bits(10, seed=3, like=codes)
    assert isinstance(r, torch.Tensor) and r.dtype == torch.uint32
    assert np.array_equal(r.numpy(), lowfp.random_bits(10, seed=3))


@pytest.mark.parametrize(
    "codec", [lowfp.Linear(4), lowfp.Dynamic(8), lowfp.Log(4, signed=True)], ids=repr
)
def test_table_codecs_torch_in_torch_out(codec):
    x = torch.from_numpy(X / 8)
    c = codec.encode(x, rounding="stochastic", seed=11)
    assert isinstance(c, torch.Tensor) and c.dtype == torch.uint8 and c.shape == x.shape
    assert np.array_equal(c.numpy(), codec.encode(X / 8, rounding="stochastic", seed=11))
    v = codec.decode(c)
    assert isinstance(v, torch.Tensor) and torch.equal(v, torch.from_numpy(codec.levels[c]))
    assert codec.decode(c, dtype=torch.float64).dtype == torch.float64
    assert codec.decode(c.numpy(), dtype=np.float16).dtype == np.float16


def test_qtensor_dequantize_torch_in_torch_out():
    x = torch.from_numpy(X)
    q = lowfp.quantize_blockwise(x.reshape(-1), "mxfp8")
    y = q.dequantize()
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32
    qn = lowfp.quantize_blockwise(X.reshape(-1), "mxfp8")
    assert isinstance(qn.dequantize(), np.ndarray)
    assert np.array_equal(y.numpy(), qn.dequantize())
    assert torch.equal(q.dequantize(dtype=torch.bfloat16), y.bfloat16())
    assert qn.dequantize(dtype=np.float16).dtype == np.float16
    assert qn.dequantize(dtype=ml_dtypes.bfloat16).dtype == np.dtype(ml_dtypes.bfloat16)


def test_docs_page_examples_run():
    page = pathlib.Path(__file__).resolve().parent.parent / "docs" / "codecs_interop.md"
    ns: dict = {}
    for code in re.findall(r"```python\n(.*?)```", page.read_text(), re.S):
        exec(compile(code, str(page), "exec"), ns)
