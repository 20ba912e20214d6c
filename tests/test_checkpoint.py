"""lowfp.save_state_dict / load_state_dict: the path from a model to a quantized file and back."""

import numpy as np
import pytest

import lowfp
from lowfp import checkpoint

torch = pytest.importorskip("torch")


def _model(dtype=torch.float32):
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(128, 64), torch.nn.LayerNorm(64), torch.nn.Linear(64, 64)
    ).to(dtype)


def _exact(x, fmt="mxfp4"):
    """What quantize-then-decode must give, bit for bit, in float32."""
    return torch.from_numpy(lowfp.quantize_blockwise(x.float().numpy(), fmt).dequantize())


@pytest.mark.parametrize("ext", [".safetensors", ".pt"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_round_trip_loads_strictly_into_the_model(tmp_path, ext, dtype):
    m = _model(dtype)
    sd = m.state_dict()
    path = str(tmp_path / f"m{ext}")
    rep = lowfp.save_state_dict(sd, path, format="mxfp4")
    # default filter: the two weight matrices (8192 and 4096 elements); biases and the
    # LayerNorm's 1-D tensors stay as they are
    assert rep.quantized == ["0.weight", "2.weight"]
    assert sorted(rep.kept) == ["0.bias", "1.bias", "1.weight", "2.bias"]
    itemsize = 2 if dtype == torch.bfloat16 else 4
    assert rep.bytes_before == sum(t.numel() for t in sd.values()) * itemsize
    back = lowfp.load_state_dict(path)  # "original": the dtype each had
    assert all(back[k].dtype == dtype for k in sd)
    m2 = _model(dtype)
    m2.load_state_dict(back, strict=True)
    for k in rep.kept:
        assert torch.equal(back[k], sd[k])
    for k in rep.quantized:
        assert torch.equal(back[k], _exact(sd[k]).to(dtype))
    f32 = lowfp.load_state_dict(path, dtype="float32")
    assert all(v.dtype == torch.float32 for v in f32.values())
    for k in rep.quantized:
        assert torch.equal(f32[k], _exact(sd[k]))
    _model().load_state_dict(f32, strict=True)


def test_nested_checkpoint_keeps_its_structure_and_non_float_entries(tmp_path):
    sd = dict(_model().state_dict())
    sd["mask"] = torch.full((64, 64), float("-inf"))
    ck = {"model": sd, "step": 10, "ids": torch.arange(5), "names": ["a", "b"]}
    for ext in (".safetensors", ".pt"):
        path = str(tmp_path / f"ck{ext}")
        rep = lowfp.save_state_dict(ck, path, format="nvfp4")
        assert rep.quantized == ["model/0.weight", "model/2.weight"]
        assert "model/mask" in rep.kept and any("model/mask" in n for n in rep.notes)
        back = lowfp.load_state_dict(path)
        assert back["step"] == 10 and back["names"] == ["a", "b"]
        assert torch.equal(back["ids"], ck["ids"]) and back["ids"].dtype == torch.int64
        assert torch.equal(back["model"]["mask"], sd["mask"])
        assert set(back["model"]) == set(sd)


def test_numpy_framework_and_a_custom_filter(tmp_path):
    rng = np.random.default_rng(0)
    sd = {
        "w": rng.standard_normal((8, 64)).astype(np.float32),
        "b": rng.standard_normal(64).astype(np.float32),
    }
    path = str(tmp_path / "n.safetensors")
    rep = lowfp.save_state_dict(sd, path, "mxfp8", filter=lambda name, t: name == "b")
    assert rep.quantized == ["b"] and rep.kept == ["w"]
    back = lowfp.load_state_dict(path, framework="numpy")
    np.testing.assert_array_equal(back["w"], sd["w"])
    np.testing.assert_array_equal(
        back["b"], lowfp.quantize_blockwise(sd["b"], "mxfp8").dequantize()
    )
    assert back["b"].dtype == np.float32


def test_plain_arrays_beside_qtensors_in_a_qtensor_file(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = np.linspace(-3, 3, 256, dtype=np.float32)
    plain = np.arange(6, dtype=np.int32).reshape(2, 3)
    half = x[:10].astype(ml_dtypes.bfloat16)
    path = str(tmp_path / "q.safetensors")
    lowfp.save_qtensors({"q": lowfp.quantize_blockwise(x, "mxfp4"), "i": plain, "h": half}, path)
    got = lowfp.load_qtensors(path)
    assert isinstance(got["q"], lowfp.QTensor)
    np.testing.assert_array_equal(got["i"], plain)
    assert got["h"].dtype == half.dtype and got["h"].tobytes() == half.tobytes()
    from safetensors.numpy import load_file  # any safetensors reader takes the non-bf16 arrays

    path2 = str(tmp_path / "q2.safetensors")
    lowfp.save_qtensors({"q": lowfp.quantize_blockwise(x, "mxfp4"), "i": plain}, path2)
    assert set(load_file(path2)) == {"q.codes", "q.scales", "i"}
    with pytest.raises(ValueError, match="taken"):
        lowfp.save_qtensors({"q": lowfp.quantize_blockwise(x, "mxfp4"), "q.codes": plain}, path)


def test_errors_name_the_argument_and_leave_the_file(tmp_path):
    sd = _model().state_dict()
    path = tmp_path / "m.safetensors"
    path.write_bytes(b"keep me")
    with pytest.raises(ValueError, match="block_size: nvfp4 fixes the block size at 16"):
        lowfp.save_state_dict(sd, str(path), "nvfp4", block_size=32)
    with pytest.raises(ValueError, match="scale: mxfp4 fixes"):
        lowfp.save_state_dict(sd, str(path), "mxfp4", scale="absmax")
    with pytest.raises(ValueError, match="extension"):
        lowfp.save_state_dict(sd, str(tmp_path / "m.bin"))
    with pytest.raises(ValueError, match="not a string"):
        lowfp.save_state_dict({"state": {0: torch.ones(3)}}, str(path))
    with pytest.raises(ValueError, match="dtype: expected one of"):
        lowfp.load_state_dict(str(path), dtype="float64")
    with pytest.raises(ValueError, match="tensor 'bad'"):  # a per-tensor problem is named
        # finite in float64, infinite in the float32 that blockwise arithmetic uses
        lowfp.save_state_dict(
            {"bad": torch.full((64, 64), 1e300, dtype=torch.float64)}, str(path), "mxfp4"
        )
    with pytest.raises(ValueError, match="rounding: expected one of"):
        lowfp.save_state_dict(sd, str(path), "mxfp4", rounding="nope")
    with pytest.raises(ValueError, match="format: 'e9m9'"):
        lowfp.save_state_dict(sd, str(path), "e9m9")
    assert path.read_bytes() == b"keep me"
    (tmp_path / "d.safetensors").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        lowfp.save_state_dict(sd, str(tmp_path / "d.safetensors"))
    assert not list(tmp_path.glob(".lowfp-*"))  # no temporary file left behind


def test_make_filter():
    f = checkpoint.make_filter(include=r"\.weight$", exclude=r"^embed", min_size=16)
    t2, t1 = np.zeros((4, 4)), np.zeros(64)
    assert f("a.weight", t2) and not f("a.bias", t2) and not f("embed.weight", t2)
    assert not f("a.weight", t1)  # 1-D is never quantized by it
    assert not f("a.weight", np.zeros((3, 5)))  # 15 < min_size
    with pytest.raises(ValueError, match="include: not a regular expression"):
        checkpoint.make_filter(include="(")
