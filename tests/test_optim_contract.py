"""The optimizers' contract with torch code: classes, signatures, layouts, copies, atomic
steps, self-describing checkpoints (issue: lowfp.optim drops into real training code)."""

import copy
import functools
import inspect
import io
import pickle
import subprocess
import sys
import warnings

import pytest

torch = pytest.importorskip("torch")
import lowfp  # noqa: E402
import lowfp.optim as lo  # noqa: E402
from conftest import run_steps  # noqa: E402

PRESETS = [lo.AdamW8bit, lo.AdamW4bit, lo.AdamWFp8, lo.SOLO, lo.Muon8bit]


def params(seed=0, dtype=torch.float32):
    """A vector, a small matrix (float32 states below min_quant_size) and a large matrix."""
    torch.manual_seed(seed)
    return [
        torch.nn.Parameter(torch.randn(6000).to(dtype)),
        torch.nn.Parameter(torch.randn(30, 7).to(dtype)),
        torch.nn.Parameter(torch.randn(64, 128).to(dtype)),
    ]


# name → factory(params) of every optimizer, quantized and not
OPTIMIZERS = {
    "AdamW": lambda ps: lo.AdamW(ps, lr=1e-2),
    "AdamW8bit": lambda ps: lo.AdamW8bit(ps, lr=1e-2, min_quant_size=0),
    "AdamW4bit": lambda ps: lo.AdamW4bit(ps, lr=1e-2),
    "AdamWFp8": lambda ps: lo.AdamWFp8(ps, lr=1e-2),
    "SOLO3": lambda ps: lo.SOLO(ps, bits=3, lr=1e-2),
    "AdamW-amsgrad-8bit": lambda ps: lo.AdamW8bit(ps, lr=1e-2, amsgrad=True, min_quant_size=0),
    "SGD": lambda ps: lo.SGD(
        ps, lr=1e-2, momentum=0.9, momentum_codec=lowfp.Linear(8), min_quant_size=0
    ),
    "Muon8bit": lambda ps: lo.Muon8bit(ps, lr=1e-2, adamw_kwargs={"min_quant_size": 0}),
}


@pytest.fixture(params=sorted(OPTIMIZERS))
def make(request):
    return OPTIMIZERS[request.param]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def close_to_torch(ours, theirs):
    """lowfp's float32 steps against torch's: the same float32 operations in the same order,
    but torch's CPU kernels may fuse multiply-adds, so after a few steps of unit-size updates
    times lr ≤ 0.02 the weights agree to a few float32 ulps per step: |Δ| ≤ 1e-5 (the bound
    tests/test_optim.py derives for 200 steps; these run ≤ 6)."""
    for a, b in zip(ours, theirs):
        assert torch.allclose(a.detach(), b.detach(), rtol=0, atol=1e-5)


def same_state(sa, sb):
    """Two optimizers' states equal, tensor by tensor (both parts of Muon)."""
    assert len(sa.state) == len(sb.state)
    for a, b in zip(sa.state.values(), sb.state.values()):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), k
    if getattr(sa, "adamw", None) is not None:
        same_state(sa.adamw, sb.adamw)


# ---------------------------------------------------------------- classes and signatures


@pytest.mark.parametrize("cls", PRESETS)
def test_presets_are_optimizer_classes(cls):
    assert isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)
    assert issubclass(cls, lo.PackedOptimizer)
    opt = cls(params(), lr=1e-3)
    assert isinstance(opt, cls)
    assert repr(opt).startswith(cls.__name__ + " (")
    sig = inspect.signature(cls)
    assert list(sig.parameters)[:2] == ["params", "bits" if cls is lo.SOLO else "lr"]
    # what transformers' Trainer and ZeRO do with optimizer_cls: call it with params + kwargs
    made = functools.partial(cls, lr=1e-3)(params())
    assert type(made) is cls


def test_presets_fix_their_codecs():
    with pytest.raises(TypeError, match="exp_avg"):
        lo.AdamW8bit(params(), exp_avg="e4m3")


def test_adamw_takes_torch_signature():
    ours = inspect.signature(lo.AdamW).parameters
    theirs = inspect.signature(torch.optim.AdamW).parameters
    assert list(ours)[:6] == list(theirs)[:6]
    for k, p in theirs.items():
        assert k in ours, k
        assert ours[k].default == p.default or k == "params", k
    # a drop-in swap from torch's fused AdamW works
    ps = params()
    opt = lo.AdamW(ps, 1e-3, (0.9, 0.999), 1e-8, 0.01, False, foreach=True, fused=True)
    run_steps(opt, ps, 1)
    for k, bad in (("capturable", True), ("differentiable", True)):
        with pytest.raises(ValueError, match=k):
            lo.AdamW(params(), **{k: bad})


def test_muon_takes_torch_positional_order():
    ours = list(inspect.signature(lo.Muon).parameters)
    theirs = list(inspect.signature(torch.optim.Muon).parameters)
    assert ours[: len(theirs)] == theirs
    for k, p in inspect.signature(torch.optim.Muon).parameters.items():
        if k != "params":
            assert inspect.signature(lo.Muon).parameters[k].default == p.default, k
    with pytest.raises(ValueError, match="adjust_lr_fn"):
        lo.Muon(params(), adjust_lr_fn="typo")


@pytest.mark.parametrize("adjust", [None, "original", "match_rms_adamw"])
def test_muon_float32_equals_torch_muon(adjust):
    torch.manual_seed(0)
    a = [torch.nn.Parameter(torch.randn(32, 64)), torch.nn.Parameter(torch.randn(96, 16))]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    ours = lo.Muon(a, lr=0.02, weight_decay=0.1, adjust_lr_fn=adjust)
    ref = torch.optim.Muon(b, lr=0.02, weight_decay=0.1, adjust_lr_fn=adjust)
    run_steps(ours, a, 4)
    run_steps(ref, b, 4)
    close_to_torch(a, b)


def test_adam_l2_through_decoupled_weight_decay_equals_torch_adam():
    a, b = params(), params()
    ours = lo.AdamW(a, lr=1e-2, weight_decay=0.05, decoupled_weight_decay=False)
    ref = torch.optim.Adam(b, lr=1e-2, weight_decay=0.05, foreach=False)
    run_steps(ours, a, 5)
    run_steps(ref, b, 5)
    close_to_torch(a, b)


@pytest.mark.parametrize("amsgrad,maximize", [(True, False), (False, True), (True, True)])
def test_amsgrad_and_maximize_equal_torch(amsgrad, maximize):
    a, b = params(), params()
    ours = lo.AdamW(a, lr=1e-2, amsgrad=amsgrad, maximize=maximize)
    ref = torch.optim.AdamW(b, lr=1e-2, amsgrad=amsgrad, maximize=maximize, foreach=False)
    run_steps(ours, a, 6)
    run_steps(ref, b, 6)
    close_to_torch(a, b)
    if amsgrad:  # the running maximum of v: the same float32 EMA, max is exact
        for p, q in zip(a, b):
            assert torch.allclose(
                ours.dequantized_state(p, "max_exp_avg_sq"),
                ref.state[q]["max_exp_avg_sq"],
                rtol=1e-6,
                atol=0,
            )


def test_amsgrad_max_state_is_stored_with_the_second_moments_codec():
    ps = params()
    opt = lo.AdamW8bit(ps, amsgrad=True, min_quant_size=0)
    run_steps(opt, ps, 3)
    st = opt.state[ps[2]]
    assert st["max_exp_avg_sq.codes"].dtype == torch.uint8
    assert st["max_exp_avg_sq.codes"].numel() == ps[2].numel()
    sd = opt.state_dict()
    assert sd["state"][2]["max_exp_avg_sq.codec"] == sd["state"][2]["exp_avg_sq.codec"]
    # in float32 the running maximum never decreases and bounds the second moment (packed,
    # each step re-encodes it with fresh block scales, so it may move by a rounding step)
    qs = params()
    f32 = lo.AdamW(qs, amsgrad=True)
    run_steps(f32, qs, 3)
    prev = f32.dequantized_state(qs[2], "max_exp_avg_sq")
    run_steps(f32, qs, 3, start=3)
    now = f32.dequantized_state(qs[2], "max_exp_avg_sq")
    assert bool((now >= prev).all()) and not torch.equal(now, prev)
    assert bool((now >= f32.dequantized_state(qs[2], "exp_avg_sq")).all())


def test_sgd_maximize_equals_torch():
    a, b = params(), params()
    ours = lo.SGD(a, lr=1e-2, momentum=0.9, maximize=True)
    ref = torch.optim.SGD(b, lr=1e-2, momentum=0.9, maximize=True, foreach=False)
    run_steps(ours, a, 4)
    run_steps(ref, b, 4)
    close_to_torch(a, b)


@pytest.mark.parametrize("bits", range(2, 9))
def test_solo_works_at_every_advertised_width(bits):
    ps = params()
    opt = lo.SOLO(ps, bits=bits, lr=1e-3)
    run_steps(opt, ps, 3)
    assert all(torch.isfinite(p).all() for p in ps)
    assert opt.state[ps[0]]["exp_avg_sq.codes"].numel() == -(-6000 * bits // 8)
    for bad in (1, 9, 0.001):
        with pytest.raises(ValueError, match="bits"):
            lo.SOLO(params(), bits=bad)


# ---------------------------------------------------------------- layouts and sizes


def test_non_contiguous_and_channels_last_step_as_their_contiguous_copy(make):
    torch.manual_seed(1)
    base = [torch.randn(64, 32), torch.randn(8, 3, 5, 5), torch.randn(300)]
    odd = [
        torch.nn.Parameter(base[0].t().contiguous().t()),  # transposed layout
        torch.nn.Parameter(base[1].to(memory_format=torch.channels_last)),
        torch.nn.Parameter(base[2].clone()),
    ]
    dense = [torch.nn.Parameter(b.clone()) for b in base]
    assert not odd[0].is_contiguous() and not odd[1].is_contiguous()
    oa, ob = make(odd), make(dense)
    for s in range(4):
        g = torch.Generator().manual_seed(s)
        for p, q in zip(odd, dense):
            q.grad = torch.randn(q.shape, generator=g)
            p.grad = q.grad.clone().to(memory_format=torch.contiguous_format)
            if p.dim() == 4:
                p.grad = p.grad.to(memory_format=torch.channels_last)
            elif p.dim() == 2:
                p.grad = p.grad.t().contiguous().t()
        oa.step()
        ob.step()
    assert same(odd, dense)
    assert odd[1].is_contiguous(memory_format=torch.channels_last)
    same_state(oa, ob)


def test_empty_parameters_step_in_every_optimizer(make):
    ps = [torch.nn.Parameter(torch.zeros(0, 16)), torch.nn.Parameter(torch.randn(40, 16))]
    opt = make(ps)
    run_steps(opt, ps, 2)
    assert ps[0].shape == (0, 16) and torch.isfinite(ps[1]).all()


# ---------------------------------------------------------------- copies


def test_deepcopy_and_pickle_step_like_the_original(make):
    ps = params()
    opt = make(ps)
    run_steps(opt, ps, 2)
    model_and_opt = copy.deepcopy((ps, opt))
    buf = io.BytesIO()
    pickle.dump((ps, opt), buf)
    for ps2, opt2 in (model_and_opt, pickle.loads(buf.getvalue())):
        assert type(opt2) is type(opt)
        ref = [p.detach().clone() for p in ps]
        ref_ps, ref_opt = copy.deepcopy((ps, opt))  # keeps the original for the next copy
        run_steps(ref_opt, ref_ps, 3, start=2)
        run_steps(opt2, ps2, 3, start=2)
        assert same(ps2, ref_ps) and not same(ps2, ref)
        same_state(opt2, ref_opt)
        assert opt2.skipped_steps == opt.skipped_steps


# ---------------------------------------------------------------- atomic steps


def test_a_step_that_raises_changes_nothing(make):
    ps = params() + [torch.nn.Parameter(torch.zeros(10, dtype=torch.float64))]
    opt = make(ps)
    run_steps(opt, ps[:3], 2)
    before = [p.detach().clone() for p in ps]
    sd = copy.deepcopy(opt.state_dict())
    for p in ps:
        p.grad = torch.ones_like(p)
    with pytest.raises(TypeError, match=r"param 3 \(shape \(10,\)\).*float64"):
        opt.step()
    assert same(ps, before)
    after = opt.state_dict()
    for i, st in sd["state"].items():
        for k, t in st.items():
            assert (
                torch.equal(t, after["state"][i][k])
                if torch.is_tensor(t)
                else t == after["state"][i][k]
            ), k
    # the fixed run continues with the right bias correction: equal to a run that never failed
    ps[3].grad = None
    ref_ps = params()
    ref = make(ref_ps + [torch.nn.Parameter(torch.zeros(10, dtype=torch.float64))])
    run_steps(ref, ref_ps, 2)
    run_steps(ref, ref_ps, 2, start=2)
    run_steps(opt, ps[:3], 2, start=2)
    assert same(ps[:3], ref_ps)


def test_first_nonfinite_skip_warns_once():
    ps = params()
    opt = lo.AdamW8bit(ps)
    for _ in range(2):
        for p in ps:
            p.grad = torch.ones_like(p)
        ps[1].grad[0, 0] = float("nan")
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            opt.step()
        assert len([x for x in w if "NaN or inf" in str(x.message)]) == (1 if _ == 0 else 0)
    assert opt.skipped_steps == 2


# ---------------------------------------------------------------- checkpoints


def test_state_dict_describes_every_quantized_state(tmp_path):
    ps = params()
    opt = lo.AdamW8bit(ps, min_quant_size=1000)
    run_steps(opt, ps, 2)
    torch.save(opt.state_dict(), tmp_path / "o.pt")
    sd = torch.load(tmp_path / "o.pt", weights_only=True)
    assert sd["lowfp"] == {"layout": lo.LAYOUT_VERSION, "optimizer": "AdamW8bit"}
    assert sd["state"][0]["exp_avg.codec"] == {
        "codec": {"codec": "dynamic", "bits": 8, "signed": True},
        "block": 256,
        "scale": "absmax",
        "layout": lo.LAYOUT_VERSION,
    }
    assert sd["state"][0]["exp_avg_sq.codec"]["codec"]["signed"] is False
    assert "exp_avg.codec" not in sd["state"][1]  # 210 elements: float32 states
    assert "exp_avg.codec" not in opt.state[ps[0]]  # descriptions live in the checkpoint only


@pytest.mark.parametrize(
    "src,dst",
    [
        (lo.AdamW8bit, lo.AdamWFp8),
        (lo.AdamWFp8, lo.AdamW8bit),
        (lo.AdamW8bit, lo.AdamW4bit),
        (lo.SOLO, lo.AdamW8bit),
    ],
)
def test_a_preset_changed_between_save_and_load_is_an_error_or_an_explicit_conversion(src, dst):
    a = params()
    oa = src(a, lr=1e-2)
    run_steps(oa, a, 3)
    sd = oa.state_dict()
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    ob = dst(b, lr=1e-2)
    with pytest.raises(ValueError, match="was saved as .* this optimizer stores it as"):
        ob.load_state_dict(sd)
    assert not ob.state  # nothing was loaded
    ob.load_state_dict(sd, requantize=True)
    for p, q in zip(a, b):  # the converted states are this preset's encoding of the saved ones
        for name in ("exp_avg", "exp_avg_sq"):
            want = dst([torch.nn.Parameter(q.detach().clone())])
            st = want._init_state(want.param_groups[0]["params"][0])
            st[name] = oa.dequantized_state(p, name).reshape(q.shape)
            want._convert(want.param_groups[0]["params"][0], want.param_groups[0], st, name, None)
            for k, t in st.items():
                if k.startswith(name + "."):
                    assert torch.equal(t, ob.state[q][k]), (name, k)
    run_steps(ob, b, 2, start=3)
    assert all(torch.isfinite(p).all() for p in b)


def test_state_dict_of_layout_1_loads_with_the_constructors_codecs():
    a = params()
    oa = lo.AdamW8bit(a, lr=1e-2)
    run_steps(oa, a, 3)
    sd = oa.state_dict()
    old = {
        "state": {
            i: {k: v for k, v in st.items() if not k.endswith(".codec")}
            for i, st in sd["state"].items()
        },
        "param_groups": [
            {
                **{
                    k: v
                    for k, v in g.items()
                    if k
                    not in (
                        "decoupled_weight_decay",
                        "amsgrad",
                        "maximize",
                        "foreach",
                        "capturable",
                        "differentiable",
                        "fused",
                    )
                },
                "decoupled": True,
            }
            for g in sd["param_groups"]
        ],
    }
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    ob = lo.AdamW8bit(b, lr=1e-2)
    ob.load_state_dict(old)
    assert ob.param_groups[0]["decoupled_weight_decay"] is True
    run_steps(oa, a, 2, start=3)
    run_steps(ob, b, 2, start=3)
    assert same(a, b)
    # a layout-1 dict whose shapes do not fit this optimizer's codecs is still an error
    four = lo.AdamW4bit([torch.nn.Parameter(p.detach().clone()) for p in a])
    with pytest.raises(ValueError, match="saved with a different configuration"):
        four.load_state_dict(old)
    assert not four.state  # checked before anything was loaded


def test_resume_is_bit_identical_through_a_weights_only_file(make, tmp_path):
    a = params()
    oa = make(a)
    run_steps(oa, a, 3)
    torch.save({"model": [p.detach() for p in a], "opt": oa.state_dict()}, tmp_path / "c.pt")
    ck = torch.load(tmp_path / "c.pt", weights_only=True)
    b = [torch.nn.Parameter(t.clone()) for t in ck["model"]]
    ob = make(b)
    ob.load_state_dict(ck["opt"])
    run_steps(oa, a, 3, start=3)
    run_steps(ob, b, 3, start=3)
    assert same(a, b)


def test_summary_reports_bytes_per_parameter_and_quantized_tensors():
    ps = params()
    opt = lo.AdamW8bit(ps)
    run_steps(opt, ps, 1)
    s = opt.summary()
    assert "tensors with state: 3 (2 with quantized states)" in s
    n = sum(p.numel() for p in ps)
    assert f"state bytes per parameter: {opt.state_nbytes() / n:.3f}" in s


def test_import_does_not_load_torch_distributed_tensor():
    code = "import sys, lowfp.optim; print('torch.distributed.tensor' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# state dicts saved by lowfp before codec descriptions (tests/data/make_optim_layout1.py, run
# at commit 606455c): they load with the constructor's codecs and resume bit for bit
LAYOUT1 = {
    "AdamW8bit": lambda ps: lo.AdamW8bit(ps, lr=1e-2, min_quant_size=0),
    "SOLO": lambda ps: lo.SOLO(ps, bits=3, lr=1e-2, min_quant_size=0),
    "SGD": lambda ps: lo.SGD(
        ps, lr=1e-2, momentum=0.9, momentum_codec=lowfp.Linear(8), min_quant_size=0
    ),
    "Muon8bit": lambda ps: lo.Muon8bit(ps, lr=0.02, adamw_kwargs={"min_quant_size": 0}),
}


@pytest.mark.parametrize("name", sorted(LAYOUT1))
def test_state_dicts_written_before_codec_descriptions_resume_bit_for_bit(name):
    import pathlib

    path = pathlib.Path(__file__).parent / "data" / "optim_layout1.pt"
    saved = torch.load(path, weights_only=True)[name]
    assert not any(k.endswith(".codec") for st in saved["state_dict"]["state"].values() for k in st)
    ps = [torch.nn.Parameter(w.clone()) for w in saved["weights3"]]
    opt = LAYOUT1[name](ps)
    opt.load_state_dict(saved["state_dict"])
    run_steps(opt, ps, 2, start=3)
    assert same(ps, saved["weights5"])


def test_a_step_keeps_no_reference_to_the_gradients(make):
    import gc
    import weakref

    ps = params()
    opt = make(ps)
    run_steps(opt, ps, 1)
    refs = [weakref.ref(p.grad) for p in ps]
    opt.zero_grad(set_to_none=True)
    gc.collect()
    assert all(r() is None for r in refs)  # zero_grad frees them


def test_reassigned_parameter_data_is_stepped(make):
    a, b = params(), params()
    oa, ob = make(a), make(b)
    run_steps(oa, a, 1)
    run_steps(ob, b, 1)
    a[2].data = a[2].detach().clone()  # new memory: the optimizer must step it, not the old
    run_steps(oa, a, 2, start=1)
    run_steps(ob, b, 2, start=1)
    assert same(a, b)


def test_step_counters_follow_torch_when_some_gradients_are_missing():
    a, b = params(), params()
    ours, ref = lo.AdamW8bit(a, min_quant_size=0), torch.optim.AdamW(b)
    for s, which in enumerate(([0, 1, 2], [0], [2, 0], [1])):
        g = torch.Generator().manual_seed(s)
        for ps in (a, b):
            for i, p in enumerate(ps):
                p.grad = torch.randn(p.shape, generator=g) if i in which else None
        ours.step()
        ref.step()
    assert [float(ours.state[p]["step"]) for p in a] == [float(ref.state[q]["step"]) for q in b]
    sd = ours.state_dict()
    assert [float(sd["state"][i]["step"]) for i in range(3)] == [3.0, 2.0, 2.0]


def test_bad_options_name_the_argument():
    with pytest.raises(ValueError, match=r"^exp_avg: unknown format \"e4m3fnn\"; did you mean"):
        lo.AdamW(params(), exp_avg="e4m3fnn")
    with pytest.raises(ValueError, match=r"^momentum_codec: expected a format of at most 8 bits"):
        lo.SGD(params(), momentum=0.9, momentum_codec="bfloat16")
    with pytest.raises(ValueError, match=r"^rounding: expected one of"):
        lo.AdamW8bit(params(), rounding="stoch")
    with pytest.raises(ValueError, match=r"^bits: expected an integer with 2 <= bits <= 8"):
        lo.SOLO(params(), bits=9)
