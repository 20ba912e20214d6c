"""Files and state dicts that lie (issue 18): every bad input named there, and the schema of
each validator (lowfp/_validate.py), fails with lowfp's own ValueError/TypeError naming
where, the field, what was expected and what was found; a failed optimizer load changes
nothing."""

import copy
import json

import numpy as np
import pytest

import lowfp

pytest.importorskip("safetensors")
from safetensors.numpy import save_file  # noqa: E402

# ------------------------------------------------------------------ QTensor files


def _q(codec="mxfp8", n=64, **kw):
    x = np.linspace(-3, 3, n, dtype=np.float32)
    return lowfp.quantize_blockwise(x, codec, **kw)


def _write(tmp_path, meta, arrays, fmt="lowfp.qtensor.v1", raw_meta=None):
    path = str(tmp_path / "t.safetensors")
    md = {"lowfp": raw_meta if raw_meta is not None else json.dumps(meta)}
    if fmt is not None:
        md["format"] = fmt
    save_file(arrays, path, metadata=md)
    return path


def _arrays(q, name="t"):
    out = {f"{name}.codes": q.codes, f"{name}.scales": q.scales}
    if q.alphas is not None:
        out[f"{name}.alphas"] = q.alphas
    return out


def _load_err(tmp_path, meta, arrays, exc=ValueError, **kw):
    path = _write(tmp_path, meta, arrays, **kw)
    with pytest.raises(exc) as e:
        lowfp.load_qtensors(path)
    msg = str(e.value)
    assert msg.startswith(path), msg  # names the file
    return msg


EMPTY = {"t.codes": np.zeros(0, np.uint8), "t.scales": np.zeros(0, np.uint8)}


@pytest.mark.parametrize("shape", [[2**32, 2**32], [2**40, 2**40], [2**62, 4, 0]])
def test_size_overflow_is_an_error(tmp_path, shape):
    # issue 18: [2**32, 2**32] loaded as a QTensor with nbytes 0 (the count wrapped to 0);
    # [2**40, 2**40] said "expected 0 elements"
    meta = {"t": dict(_q().metadata(), shape=shape)}
    msg = _load_err(tmp_path, meta, EMPTY)
    assert "tensor 't': shape: expected" in msg and str(shape[0]) in msg


def test_declared_elements_are_capped_by_the_bytes_held(tmp_path):
    q = _q()  # 64 elements, 64 bytes of 8-bit codes
    meta = {"t": dict(q.metadata(), shape=[2**20, 2**20])}
    msg = _load_err(tmp_path, meta, _arrays(q))
    assert "shape: expected at most 64 elements (what 64 bytes of 8-bit codes hold)" in msg
    assert "1099511627776 stored elements" in msg


def test_codec_given_as_a_string(tmp_path):
    # issue 18: TypeError: string indices must be integers
    q = _q()
    msg = _load_err(tmp_path, {"t": dict(q.metadata(), codec="e4m3")}, _arrays(q), TypeError)
    assert "tensor 't': codec: expected a dict with a 'codec' kind, got str 'e4m3'" in msg


def test_missing_codec(tmp_path):
    # issue 18: KeyError: 'codec'
    q = _q()
    m = q.metadata()
    del m["codec"]
    msg = _load_err(tmp_path, {"t": m}, _arrays(q))
    assert "tensor 't': codec: expected a value" in msg and "found none" in msg


@pytest.mark.parametrize(
    "field, value, exc, words",
    [
        ("codec", {"codec": "zip"}, ValueError, "codec.codec: expected one of"),
        ("codec", {"codec": "exmy"}, ValueError, "the keys ['format']"),
        ("codec", {"codec": "exmy", "format": "bfloat16"}, ValueError, "at most 8 bits"),
        ("codec", {"codec": "exmy", "format": "e4m3x"}, ValueError, "codec: fmt:"),
        ("codec", {"codec": "exmy", "format": 7}, TypeError, "codec.format: expected a format"),
        (
            "codec",
            {"codec": "linear", "bits": 99, "signed": True, "zero": True},
            ValueError,
            "codec.bits: expected an int in [1, 8], got 99",
        ),
        (
            "codec",
            {"codec": "linear", "bits": 4, "signed": "yes", "zero": True},
            TypeError,
            "codec.signed: expected true or false",
        ),
        (
            "codec",
            {
                "codec": "log",
                "bits": 4,
                "signed": False,
                "zero": True,
                "alpha": 1.5,
                "quantile": 0.0,
            },
            ValueError,
            "codec.alpha: expected 0 < alpha < 1",
        ),
        (
            "codec",
            {
                "codec": "log",
                "bits": 4,
                "signed": False,
                "zero": True,
                "alpha": 0.5,
                "quantile": float("nan"),
            },
            ValueError,
            "codec.quantile: expected a finite",
        ),
        ("codec", {"codec": "dynamic", "bits": 5, "signed": True}, ValueError, "codec: bits:"),
        ("block_size", 15, ValueError, "block_size: expected an int in [16, 4096], got 15"),
        ("block_size", 8192, ValueError, "block_size: expected an int in [16, 4096]"),
        ("block_size", 36, ValueError, "block_size: expected a multiple of 8"),
        ("block_size", "32", TypeError, "block_size: expected an int"),
        ("block_size", 32.0, TypeError, "block_size: expected an int"),
        ("scale", "e9m0", ValueError, "scale: expected one of"),
        ("scale", None, TypeError, "scale: expected one of"),
        ("global_scale", 2.0, ValueError, "global_scale: expected 1.0"),
        ("global_scale", "1", TypeError, "global_scale: expected a finite number"),
        ("rounding", "sideways", ValueError, "rounding: expected one of"),
        ("axis", 1, ValueError, "axis: expected an int in [0, 0], got 1"),
        ("axis", -1, ValueError, "axis: expected an int in [0, 0], got -1"),
        ("axis", True, TypeError, "axis: expected an int"),
        ("shape", "64", TypeError, "shape: expected a list of ints"),
        ("shape", [-64], ValueError, "shape[0]: expected an int in [0, "),
        ("shape", [8.0, 8], TypeError, "shape[0]: expected an int"),
        ("shape", [1] * 65, ValueError, "shape: expected at most 64 dimensions"),
        ("extra", 1, ValueError, "metadata: expected only QTensor.metadata() keys"),
    ],
)
def test_metadata_schema(tmp_path, field, value, exc, words):
    q = _q()
    m = dict(q.metadata(), **{field: value})
    msg = _load_err(tmp_path, {"t": m}, _arrays(q), exc)
    assert words in msg, msg


@pytest.mark.parametrize("g", [float("nan"), float("inf"), 0.0, -1.0])
def test_e4m3_tensor_scale(tmp_path, g):
    q = _q("nvfp4")
    meta = {"t": dict(q.metadata(), global_scale=g)}
    path = _write(tmp_path, {}, _arrays(q), raw_meta=json.dumps(meta))  # NaN/inf as JSON
    with pytest.raises(ValueError, match="global_scale: expected"):
        lowfp.load_qtensors(path)


def test_a_codec_scale_combination_blockwise_cannot_hold(tmp_path):
    q = _q(lowfp.Linear(4), scale="absmax")
    meta = {"t": dict(q.metadata(), scale="e4m3")}
    msg = _load_err(tmp_path, meta, {"t.codes": q.codes, "t.scales": np.zeros(1, np.uint8)})
    assert "metadata: scale:" in msg


def test_file_version_json_and_layout(tmp_path):
    q = _q()
    msg = _load_err(tmp_path, {"t": q.metadata()}, _arrays(q), fmt="lowfp.qtensor.v9")
    assert "format: expected one of ('lowfp.qtensor.v1',), got 'lowfp.qtensor.v9'" in msg
    msg = _load_err(tmp_path, None, _arrays(q), raw_meta="{not json")
    assert "lowfp metadata: expected JSON" in msg
    msg = _load_err(tmp_path, None, _arrays(q), TypeError, raw_meta="[1, 2]")
    assert "lowfp metadata: expected a JSON object" in msg
    msg = _load_err(tmp_path, {"t": [1]}, _arrays(q), TypeError)
    assert "tensor 't': metadata: expected a dict" in msg
    msg = _load_err(tmp_path, {"u": q.metadata()}, _arrays(q))
    assert "tensor 'u': codes: expected an array 'u.codes' in the file, found none" in msg
    # files written before the version key still load
    path = _write(tmp_path, {"t": q.metadata()}, _arrays(q), fmt=None)
    np.testing.assert_array_equal(lowfp.load_qtensors(path)["t"].dequantize(), q.dequantize())


def test_not_a_safetensors_file(tmp_path):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"\xff" * 8 + b"{}")
    with pytest.raises(ValueError, match="is not a valid safetensors file"):
        lowfp.load_qtensors(str(path))


def test_arrays_dtypes_and_lengths(tmp_path):
    q = _q()
    a = _arrays(q)
    msg = _load_err(tmp_path, {"t": q.metadata()}, dict(a, **{"t.codes": a["t.codes"][:-1]}))
    assert "codes: expected 64 elements in one dimension, found shape (63,)" in msg
    msg = _load_err(
        tmp_path,
        {"t": q.metadata()},
        dict(a, **{"t.codes": a["t.codes"].astype(np.float32)}),
        TypeError,
    )
    assert "codes: expected dtype uint8, got float32" in msg
    msg = _load_err(
        tmp_path,
        {"t": q.metadata()},
        dict(a, **{"t.scales": a["t.scales"].astype(np.float32)}),
        TypeError,
    )
    assert "scales: expected dtype uint8, got float32" in msg
    msg = _load_err(
        tmp_path, {"t": q.metadata()}, dict(a, **{"t.codes": a["t.codes"].reshape(8, 8)})
    )
    assert "found shape (8, 8)" in msg
    msg = _load_err(tmp_path, {"t": q.metadata()}, dict(a, **{"t.alphas": np.ones(2, np.float32)}))
    assert "alphas: expected none" in msg


@pytest.mark.parametrize("bad", [-1.0, float("inf"), -float("inf")])
def test_absmax_scales(tmp_path, bad):
    q = _q("e4m3", scale="absmax", block_size=16)
    s = q.scales.copy()
    s[2] = bad
    msg = _load_err(tmp_path, {"t": q.metadata()}, dict(_arrays(q), **{"t.scales": s}))
    assert "scales: expected finite scales >= 0 (or NaN: a non-finite block), found" in msg
    assert "at index 2" in msg


def test_nan_blocks_of_the_ocp_rule_load(tmp_path):
    x = np.linspace(-3, 3, 64, dtype=np.float32)
    x[5] = np.nan
    for codec, scale in (("e4m3", "absmax"), ("mxfp4", None), ("nvfp4", None)):
        q = lowfp.quantize_blockwise(x, codec, scale=scale, nonfinite="ocp", block_size=16)
        path = str(tmp_path / "ocp.safetensors")
        lowfp.save_qtensors({"t": q}, path)
        back = lowfp.load_qtensors(path)["t"].dequantize()
        np.testing.assert_array_equal(back, q.dequantize())  # NaN block in the same place


def test_e4m3_scale_codes_have_no_sign(tmp_path):
    q = _q("nvfp4")
    s = q.scales.copy()
    s[1] |= 0x80
    msg = _load_err(tmp_path, {"t": q.metadata()}, dict(_arrays(q), **{"t.scales": s}))
    assert "scales: expected E4M3 scale codes without a sign (< 0x80)" in msg


def test_codes_without_a_level(tmp_path):
    # signed 3-bit linear codes have 7 levels: code 7 has none
    q = _q(lowfp.Linear(3), n=64, block_size=32)
    codes = q.codes.copy()
    codes[0] |= 0x07
    msg = _load_err(tmp_path, {"t": q.metadata()}, dict(_arrays(q), **{"t.codes": codes}))
    assert "codes: packed: code 7 is outside the codec's 7 levels" in msg


def test_per_block_bases(tmp_path):
    q = _q(lowfp.Log(4, quantile=0.1), n=64, block_size=32)
    a = _arrays(q)
    for bad in (0.0, 1.0, float("nan"), -0.5):
        al = a["t.alphas"].copy()
        al[1] = bad
        msg = _load_err(tmp_path, {"t": q.metadata()}, dict(a, **{"t.alphas": al}))
        assert "alphas: expected per-block bases with 0 < alpha < 1, found" in msg
    msg = _load_err(
        tmp_path, {"t": q.metadata()}, {"t.codes": a["t.codes"], "t.scales": a["t.scales"]}
    )
    assert "alphas: expected 2 per-block bases (a quantile log codec), found none" in msg


@pytest.mark.parametrize(
    "codec, kw",
    [
        ("mxfp8", {}),
        ("mxfp4", {}),
        ("nvfp4", {}),
        ("e4m3", {"scale": "e8m0_rceil"}),
        (lowfp.Linear(3), {}),
        (lowfp.Dynamic(4, False), {}),
        (lowfp.Log(3, quantile=0.05), {"rounding": "stochastic", "seed": 1}),
    ],
)
@pytest.mark.parametrize("shape, axis", [((3, 40), -1), ((40, 3), 0), ((120,), None)])
def test_valid_files_load_as_saved(tmp_path, codec, kw, shape, axis):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    q = lowfp.quantize_blockwise(x, codec, axis=axis, block_size=16, **kw)
    path = str(tmp_path / "ok.safetensors")
    lowfp.save_qtensors({"t": q}, path)
    back = lowfp.load_qtensors(path)["t"]
    assert back.metadata() == q.metadata() and back.nbytes == q.nbytes
    np.testing.assert_array_equal(back.dequantize(), q.dequantize())


# ------------------------------------------------------------------ optimizer state dicts

torch = pytest.importorskip("torch")
import lowfp.optim as lo  # noqa: E402


def _trained(cls=lo.AdamW8bit, n=4096, steps=2, **kw):
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(n))
    kw.setdefault("min_quant_size", 0)
    o = cls([p], **kw)
    for _ in range(steps):
        p.grad = torch.randn(n)
        o.step()
    return p, o


def _same(a, b):
    """Two state dicts hold the same tensors and values."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
    return a == b


def _load_fails(mutate, exc=ValueError, cls=lo.AdamW8bit, **kw):
    """Mutate a saved state dict; loading it raises, naming the state dict, and the
    optimizer is left as it was (its state dict equal, its next step the same)."""
    p, o = _trained(cls, **kw)
    sd = copy.deepcopy(o.state_dict())
    mutate(sd)
    before = copy.deepcopy(o.state_dict())
    with pytest.raises(exc) as e:
        o.load_state_dict(sd)
    assert str(e.value).startswith("state_dict"), str(e.value)
    assert _same(o.state_dict(), before)
    return str(e.value)


def _st(sd):
    return sd["state"][0]


def test_nan_scales_are_an_error():
    # issue 18: loaded silently, and the next step made the weights NaN
    msg = _load_fails(lambda sd: _st(sd)["exp_avg.scales"].__setitem__(3, float("nan")))
    assert msg == (
        "state_dict: parameter 0 (shape (4096,)) exp_avg: scales: expected finite "
        "scales >= 0, found nan at block 3"
    )


def test_negative_second_moment_scales_are_an_error():
    msg = _load_fails(lambda sd: _st(sd)["exp_avg_sq.scales"].mul_(-1))
    assert "exp_avg_sq: scales: expected finite scales >= 0, found -" in msg


@pytest.mark.parametrize(
    "step, words",
    [
        (torch.tensor(-3.0), "step: expected an integer in [0, 4294967294], got -3.0"),
        (torch.tensor(float("nan")), "got nan"),
        (torch.tensor(1.5), "got 1.5"),
        (torch.tensor(2.0**40), "got 1099511627776.0"),
        (torch.tensor([1.0, 2.0]), "step: expected a one-element real tensor"),
        (torch.tensor(True), "step: expected a one-element real tensor"),
    ],
)
def test_bad_steps(step, words):
    # issue 18: a negative step gave "ValueError: math domain error"
    msg = _load_fails(lambda sd: _st(sd).__setitem__("step", step))
    assert words in msg, msg


def test_step_as_a_number_loads_as_a_tensor():
    p, o = _trained()
    sd = o.state_dict()
    _st(sd)["step"] = 2
    o.load_state_dict(sd)
    p.grad = torch.ones_like(p)
    o.step()
    assert float(o.state[p]["step"]) == 3.0


def test_missing_step_and_wrong_types():
    msg = _load_fails(lambda sd: _st(sd).pop("step"))
    assert "step: expected a step counter beside the states, found none" in msg
    msg = _load_fails(lambda sd: _st(sd).__setitem__("step", "2"), TypeError)
    assert "step: expected an integer count" in msg
    msg = _load_fails(lambda sd: sd["state"].__setitem__(0, [1]), TypeError)
    assert "state_dict: state 0: expected a dict" in msg
    msg = _load_fails(lambda sd: sd.__setitem__("state", [1]), TypeError)
    assert "state_dict: state: expected a dict" in msg


def test_float32_codes_are_an_error():
    # issue 18: "expected a writeable numpy array of u8"
    msg = _load_fails(
        lambda sd: _st(sd).__setitem__("exp_avg.codes", _st(sd)["exp_avg.codes"].float())
    )
    assert "'exp_avg.codes'" in msg and "torch.float32, expected (4096,) torch.uint8" in msg


def test_states_of_no_parameter():
    msg = _load_fails(lambda sd: sd["state"].__setitem__(7, dict(_st(sd))))
    assert "expected states of the parameter ids the param groups list, got one for id 7" in msg


@pytest.mark.parametrize(
    "key, value, words",
    [
        ("lr", float("nan"), "lr: expected a finite number"),
        ("lr", -1.0, "lr: expected a number in [0.0, inf)"),
        ("betas", (1.5, 0.9), "betas[0]: expected a number in [0.0, 1.0)"),
        ("betas", 0.9, "betas: expected a pair"),
        ("eps", -1e-8, "eps: expected a number in [0.0, inf)"),
        ("weight_decay", float("inf"), "weight_decay: expected a finite number"),
        ("eps", 2**64, "eps: expected a number within float32's range"),  # found by hypothesis
        ("lr", 1e300, "lr: expected a number within float32's range"),
        ("params", [0, 0], "params: expected 1 distinct parameter ids"),
        ("block_size", torch.tensor([256, 256]), "block_size: expected an int or a str"),
    ],
)
def test_param_group_values(key, value, words):
    exc = (
        TypeError if key in ("betas", "block_size") and not isinstance(value, tuple) else ValueError
    )
    msg = _load_fails(lambda sd: sd["param_groups"][0].__setitem__(key, value), exc)
    assert "param group 0" in msg and words in msg, msg


@pytest.mark.parametrize(
    "desc, exc, words",
    [
        ("dynamic", TypeError, "codec description: expected a dict"),
        (
            {
                "codec": {"codec": "dynamic", "bits": 8, "signed": True},
                "block": 256,
                "scale": "absmax",
                "layout": 3,
            },
            ValueError,
            "codec description layout: expected 2",
        ),
        (
            {
                "codec": {"codec": "dynamic", "bits": 99, "signed": True},
                "block": 256,
                "scale": "absmax",
                "layout": 2,
            },
            ValueError,
            "codec description codec.bits",
        ),
        (
            {"codec": "dynamic", "block": 256, "scale": "absmax", "layout": 2},
            TypeError,
            "codec description codec: expected a dict",
        ),
        (
            {
                "codec": {"codec": "dynamic", "bits": 8, "signed": True},
                "block": 100,
                "scale": "absmax",
                "layout": 2,
            },
            ValueError,
            "codec description block: expected a multiple of 8",
        ),
        (
            {
                "codec": {"codec": "dynamic", "bits": 8, "signed": True},
                "block": 256,
                "scale": "e8m0",
                "layout": 2,
            },
            ValueError,
            "codec description scale",
        ),
        (
            {
                "codec": {"codec": "dynamic", "bits": 8, "signed": True},
                "block": 256,
                "scale": "absmax",
                "layout": torch.tensor([2, 2]),
            },
            ValueError,
            "codec description layout: expected 2",
        ),
    ],
)
def test_codec_descriptions(desc, exc, words):
    msg = _load_fails(lambda sd: _st(sd).__setitem__("exp_avg.codec", desc), exc)
    assert msg.startswith("state_dict: parameter 0 (shape (4096,)) exp_avg: "), msg
    assert words in msg, msg


def test_nan_codes_of_a_float_state():
    # E4M3 code 0x7f is NaN: a state holding it would make the weights NaN
    msg = _load_fails(lambda sd: _st(sd)["exp_avg.codes"].__setitem__(5, 0x7F), cls=lo.AdamWFp8)
    assert (
        "exp_avg: codes: expected finite values with |x| <= 1.845e+19 (whose squares are "
        "finite), found nan at element 5" in msg
    )


def test_codes_without_a_level_and_bad_bases():
    # SOLO: signed 3-bit linear first moment (7 levels: code 7 has none), log bases
    def code7(sd):
        c = _st(sd)["exp_avg.codes"]
        c[0] = c[0] | 0x07

    msg = _load_fails(code7, cls=lo.SOLO)
    assert "exp_avg: codes: packed: code 7 is outside the codec's 7 levels" in msg
    msg = _load_fails(lambda sd: _st(sd)["exp_avg_sq.alphas"].__setitem__(0, 1.0), cls=lo.SOLO)
    assert "exp_avg_sq: alphas: expected per-block bases with 0 < alpha < 1, found 1.0" in msg


def test_float32_states():
    kw = dict(min_quant_size=10**9)  # float32 states
    msg = _load_fails(lambda sd: _st(sd)["exp_avg"].__setitem__(9, float("inf")), **kw)
    assert "exp_avg: values: expected finite values with |x| <= 1.845e+19" in msg
    assert "found inf at element 9" in msg
    msg = _load_fails(lambda sd: _st(sd)["exp_avg"].__setitem__(9, 1e30), **kw)
    assert "found 1.0000000150474662e+30 at element 9" in msg
    # a first-moment scale so large that the decoded values' squares overflow
    msg = _load_fails(lambda sd: _st(sd)["exp_avg.scales"].__setitem__(0, 3.4e38))
    assert "exp_avg: codes: expected finite values with |x| <= 1.845e+19" in msg
    msg = _load_fails(lambda sd: _st(sd)["exp_avg_sq"].__setitem__(9, -1.0), **kw)
    assert "exp_avg_sq: values: expected finite values >= 0, found -1.0 at element 9" in msg
    p, o = _trained(**kw)  # a large second moment is fine (v = g*g for |g| <= 1.8e19)
    sd = o.state_dict()
    _st(sd)["exp_avg_sq"][9] = 1e30
    o.load_state_dict(sd)
    # a negative first moment is fine
    p, o = _trained(**kw)
    sd = o.state_dict()
    _st(sd)["exp_avg"][9] = -1.0
    o.load_state_dict(sd)


def test_requantized_states_are_checked_before_loading():
    # saved with 8-bit states, loaded into 4-bit ones: the saved states are read with
    # their saved codec, so a bad one fails before anything is loaded
    p, o8 = _trained(lo.AdamW8bit)
    sd = copy.deepcopy(o8.state_dict())
    _st(sd)["exp_avg.scales"][0] = float("inf")
    p4, o4 = _trained(lo.AdamW4bit)
    before = copy.deepcopy(o4.state_dict())
    with pytest.raises(ValueError, match="exp_avg: scales: expected finite scales >= 0"):
        o4.load_state_dict(sd, requantize=True)
    assert _same(o4.state_dict(), before)
    sd = copy.deepcopy(o8.state_dict())
    _st(sd)["exp_avg.codes"] = _st(sd)["exp_avg.codes"][:-1]
    with pytest.raises(ValueError, match=r"exp_avg.codes: expected 4096 elements in one "):
        o4.load_state_dict(sd, requantize=True)
    assert _same(o4.state_dict(), before)
    o4.load_state_dict(o8.state_dict(), requantize=True)  # the valid one converts


@pytest.mark.parametrize(
    "cls, kw",
    [
        (lo.AdamW8bit, {}),
        (lo.AdamW4bit, {}),
        (lo.AdamWFp8, {}),
        (lo.SOLO, {}),
        (lo.AdamW, {"amsgrad": True, "exp_avg": "e4m3", "exp_avg_sq": lowfp.Linear(8, False)}),
        (lo.SGD, {"lr": 0.1, "momentum": 0.9, "momentum_codec": lowfp.Dynamic(8)}),
    ],
)
def test_valid_state_dicts_load_and_step_as_saved(cls, kw):
    p, o = _trained(cls, **kw)
    p2 = torch.nn.Parameter(p.detach().clone())
    o2 = cls([p2], min_quant_size=0, **kw)
    o2.load_state_dict(copy.deepcopy(o.state_dict()))
    g = torch.randn(p.shape)
    p.grad, p2.grad = g.clone(), g.clone()
    o.step()
    o2.step()
    assert torch.equal(p, p2)


def test_parameter_ids_listed_twice():
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(300)), torch.nn.Parameter(torch.randn(24))]
    o = lo.AdamW8bit([{"params": ps[:1]}, {"params": ps[1:]}], min_quant_size=0)
    for p in ps:
        p.grad = torch.randn(p.shape)
    o.step()
    sd = copy.deepcopy(o.state_dict())
    sd["param_groups"][1]["params"] = [0]
    before = copy.deepcopy(o.state_dict())
    with pytest.raises(
        ValueError,
        match=r"param group 1: params: expected ids no other group "
        r"lists, found \[0\] listed before",
    ):
        o.load_state_dict(sd)
    assert _same(o.state_dict(), before)


def test_muon_hyperparameters():
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(8, 40)), torch.nn.Parameter(torch.randn(24))]
    o = lo.Muon8bit(ps, block_size=64)
    for p in ps:
        p.grad = torch.randn(p.shape)
    o.step()
    for key, value, words in (
        ("ns_steps", 10**9, "ns_steps: expected an int in [0, 99]"),
        (
            "ns_coefficients",
            (1.0, float("nan"), 2.0),
            "ns_coefficients[1]: expected a finite number",
        ),
        ("adjust_lr_fn", "cubic", "adjust_lr_fn: expected one of"),
    ):
        sd = copy.deepcopy(o.state_dict())
        sd["param_groups"][0][key] = value
        with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("(", r"\(")):
            o.load_state_dict(sd)
    sd = copy.deepcopy(o.state_dict())
    sd["adamw"]["state"][0]["exp_avg"] = torch.full((24,), float("nan"))
    with pytest.raises(ValueError, match="exp_avg: values: expected finite values with"):
        o.load_state_dict(sd)


# ------------------------------------------------------------------ what the fuzzers found


def test_fuzz_findings_in_the_core():
    # format_spec: "e33m2" overflowed a shift (a panic in debug builds)
    with pytest.raises(ValueError, match="exp_bits: expected 1 <= exp_bits <= 8, got 33"):
        lowfp.format("e33m2")
    # format_spec: the spec e8m00fnu (subnormals) was named "e8m0fnu", the alias of
    # float8_e8m0fnu (no subnormals), so name() did not parse back to the format
    f = lowfp.format("e8m00fnu")
    assert f.name == "e8m0b127fnu" and lowfp.format(f.name) == f
    assert f != lowfp.format("float8_e8m0fnu")
    # block_spec: absmax scales of a format whose max is 2^-133 overflowed to inf and the
    # block decoded to NaN
    x = np.full(32, 4.0, np.float32)
    with pytest.raises(ValueError, match=r"x: block 0: its scale amax / 9.\d+e-41 overflows"):
        lowfp.quantize_blockwise(x, "e3m0b140fu", block_size=16)
    q = lowfp.quantize_blockwise(x * 1e-40, "e3m0b140fu", block_size=16)  # in range: fine
    assert np.isfinite(q.dequantize()).all()
