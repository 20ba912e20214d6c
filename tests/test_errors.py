"""Bad input: a clear ValueError/TypeError naming the argument, never a crash."""

import numpy as np
import pytest

import lowfp

X = np.linspace(-2, 2, 11, dtype=np.float32)


@pytest.mark.parametrize(
    "x",
    [
        np.arange(4, dtype=np.int32),
        np.arange(4, dtype=np.uint8),
        np.ones(3, np.complex64),
        np.array([1.0, "a"], dtype=object),
        np.ones(3, bool),
        [1, 2, 3],
    ],
)
def test_wrong_input_dtypes(x):
    with pytest.raises(TypeError, match="x: expected float32, float64, float16 or bfloat16"):
        lowfp.encode(x, "e4m3")


def test_unknown_format_and_options():
    with pytest.raises(ValueError, match="unknown format"):
        lowfp.encode(X, "e4m3x")
    with pytest.raises(ValueError, match="rounding"):
        lowfp.encode(X, "e4m3", rounding="nearest_even")
    with pytest.raises(ValueError, match="overflow"):
        lowfp.encode(X, "e4m3", overflow="clip")
    with pytest.raises(ValueError, match="seed"):
        lowfp.encode(X, "e4m3", rounding="stochastic", seed=-1)
    with pytest.raises(ValueError, match="random_bits"):
        lowfp.encode(X, "e4m3", rounding="stochastic", random_bits=np.zeros(3, np.uint32))
    with pytest.raises(ValueError, match="random_bits"):
        lowfp.encode(X, "e4m3", random_bits=np.zeros(X.size, np.uint32))


def test_nan_into_format_without_nan():
    x = np.array([1.0, np.nan], np.float32)
    with pytest.raises(ValueError, match=r"x: element 1 is NaN.*float4_e2m1fn has no NaN"):
        lowfp.encode(x, "e2m1")
    assert list(lowfp.encode(x, "e2m1", nan="zero")) == [2, 0]
    assert np.isnan(lowfp.decode(lowfp.encode(x, "e4m3"), "e4m3")[1])


def test_negative_into_unsigned():
    x = np.array([1.0, 4.0, -2.0], np.float32)
    with pytest.raises(ValueError, match=r"x: element 2 is negative.*unsigned"):
        lowfp.encode(x, "e8m0")
    assert list(lowfp.encode(x, "e8m0", negative="clamp")) == [127, 129, 0]
    assert lowfp.encode(np.float32(-0.0), "e3m3u") == 0


def test_codes_out_of_range_on_decode():
    with pytest.raises(ValueError, match=r"codes: element 1 is 16"):
        lowfp.decode(np.array([3, 16], np.uint8), "e2m1")
    with pytest.raises(ValueError, match=r"codes: element 0 is 256"):
        lowfp.decode(np.array([256], np.uint16), "e4m3")
    with pytest.raises(TypeError, match="codes"):
        lowfp.decode(np.array([1.0]), "e4m3")
    with pytest.raises(TypeError, match="codes"):
        lowfp.decode(np.array([1], np.int8), "e4m3")
    with pytest.raises(ValueError, match="dtype"):
        lowfp.decode(np.array([1], np.uint8), "e4m3", dtype=np.int32)  # float16: accepted now


def test_torch_device_and_complex():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="complex"):
        lowfp.encode(torch.ones(3, dtype=torch.complex64), "e4m3")
    with pytest.raises(TypeError, match="x: expected float32"):
        lowfp.encode(torch.ones(3, dtype=torch.int32), "e4m3")
    if hasattr(torch, "device"):
        meta = torch.ones(3, device="meta")
        with pytest.raises(ValueError, match="x: tensor is on meta"):
            lowfp.encode(meta, "e4m3")


def test_threads_argument():
    with pytest.raises(ValueError, match="n:"):
        lowfp.set_num_threads(-1)
    with pytest.raises(ValueError, match="n:"):
        lowfp.set_num_threads(10**6)


def test_out_buffers():
    out = np.empty(X.shape, np.uint8)
    assert lowfp.encode(X, "e4m3", out=out) is out
    np.testing.assert_array_equal(out, lowfp.encode(X, "e4m3"))
    back = np.empty(X.shape, np.float32)
    assert lowfp.decode(out, "e4m3", out=back) is back
    with pytest.raises(TypeError, match="out: expected dtype uint8"):
        lowfp.encode(X, "e4m3", out=np.empty(X.shape, np.uint16))
    with pytest.raises(ValueError, match="out: expected shape"):
        lowfp.encode(X, "e4m3", out=np.empty(X.size + 1, np.uint8))
    with pytest.raises(ValueError, match="out: expected a C-contiguous"):
        lowfp.encode(X, "e4m3", out=np.empty(2 * X.size, np.uint8)[::2])
    ro = np.empty(X.shape, np.uint8)
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="out: expected a writeable"):
        lowfp.encode(X, "e4m3", out=ro)
    with pytest.raises(TypeError, match="out: expected a numpy array"):
        lowfp.decode(out, "e4m3", out=[0.0] * X.size)
