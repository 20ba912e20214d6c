"""Hypothesis fuzzing of what lowfp reads: saved QTensor safetensors files and optimizer
state dicts, mutated (lengths, dtypes, metadata fields, non-finite values, raw bytes).

Every load either succeeds -- with the same result as the original when nothing that
matters changed, and always with a consistent object (a QTensor that dequantizes to its
shape; an optimizer whose next step leaves the weights finite) -- or raises ValueError /
TypeError with lowfp's own message (naming the file, or "state_dict"), leaving the
optimizer as it was. Never a pyo3 PanicException, another exception type, NaN weights or
an impossible object.

CI runs a short, derandomized version (a fixed number of examples per test, well under a
minute in all); ``LOWFP_FUZZ_LONG=1`` (``scripts/fuzz.sh``) runs many more, randomized.
"""

import copy
import json
import os
import tempfile

import numpy as np
import pytest

import lowfp

hypothesis = pytest.importorskip("hypothesis")
pytest.importorskip("safetensors")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

LONG = os.environ.get("LOWFP_FUZZ_LONG") == "1"
FUZZ = settings(
    max_examples=3000 if LONG else 40,
    deadline=None,
    derandomize=not LONG,  # CI: the same examples every run
    suppress_health_check=list(HealthCheck),
    database=None,
)

# ------------------------------------------------------------------ values a mutation writes

WEIRD = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(
        [
            0,
            1,
            -1,
            7,
            8,
            15,
            16,
            17,
            32,
            255,
            256,
            4096,
            4097,
            2**31,
            2**32,
            2**40,
            2**63 - 1,
            2**63,
            2**64,
            -(2**63),
        ]
    ),
    st.integers(-(10**6), 10**6),
    st.sampled_from(
        [
            0.0,
            -0.0,
            0.5,
            1.0,
            1.5,
            -1.0,
            1e-45,
            1e38,
            1e300,
            float("nan"),
            float("inf"),
            -float("inf"),
        ]
    ),
    st.text(max_size=12),
    st.sampled_from(
        [
            "e4m3",
            "exmy",
            "linear",
            "dynamic",
            "log",
            "absmax",
            "e8m0",
            "e4m3fn",
            "nearest",
            "stochastic",
            "bfloat16",
            "float32",
            "e8m0fnu",
        ]
    ),
    st.lists(st.integers(-3, 2**33), max_size=4),
    st.dictionaries(
        st.sampled_from(["codec", "bits", "format", "signed"]), st.integers(0, 9), max_size=3
    ),
)

NONFINITE = st.sampled_from(
    [float("nan"), float("inf"), -float("inf"), -1.0, -0.0, 0.0, 1e38, 3.4e38, 1e-45]
)

# ------------------------------------------------------------------ QTensor files

_X = np.random.default_rng(0).standard_normal((6, 40)).astype(np.float32)
QT_CASES = [
    ("mxfp8", {}),
    ("mxfp4", {"axis": 0}),
    ("nvfp4", {}),
    (lowfp.Linear(3), {"block_size": 16}),
    (lowfp.Dynamic(4, False), {"axis": None}),
    (lowfp.Log(3, quantile=0.05), {"rounding": "stochastic", "seed": 1, "block_size": 16}),
    ("e4m3", {"scale": "e8m0_rceil", "block_size": 16}),
]


def _qtensor(i):
    codec, kw = QT_CASES[i]
    x = _X if codec != lowfp.Dynamic(4, False) else np.abs(_X)
    return lowfp.quantize_blockwise(x, codec, **kw)


QTS = [_qtensor(i) for i in range(len(QT_CASES))]


def _parts(q):
    arrays = {"t.codes": q.codes.copy(), "t.scales": q.scales.copy()}
    if q.alphas is not None:
        arrays["t.alphas"] = q.alphas.copy()
    return q.metadata(), arrays


def _dtype_change(a, dtype):
    try:
        return a.astype(dtype)
    except (OverflowError, ValueError):
        return a.view(np.uint8)


@st.composite
def qtensor_mutation(draw):
    """(case, mutated metadata, mutated arrays, file format, raw-byte edits)."""
    i = draw(st.integers(0, len(QTS) - 1))
    meta, arrays = _parts(QTS[i])
    fmt = "lowfp.qtensor.v1"
    raw = []
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(
            st.sampled_from(
                [
                    "field",
                    "codec_field",
                    "delete",
                    "length",
                    "dtype",
                    "shape2d",
                    "drop",
                    "values",
                    "codes",
                    "format",
                    "raw",
                ]
            )
        )
        if kind == "field":
            meta[draw(st.sampled_from(sorted(meta) + ["extra"]))] = draw(WEIRD)
        elif kind == "codec_field" and isinstance(meta.get("codec"), dict):
            meta["codec"][
                draw(
                    st.sampled_from(
                        ["codec", "bits", "signed", "zero", "alpha", "quantile", "format"]
                    )
                )
            ] = draw(WEIRD)
        elif kind == "delete" and meta:
            del meta[draw(st.sampled_from(sorted(meta)))]
        elif kind in ("length", "dtype", "shape2d", "values", "drop") and arrays:
            k = draw(st.sampled_from(sorted(arrays)))
            a = arrays[k]
            if kind == "length":
                n = draw(st.integers(-4, 4)) + a.size
                arrays[k] = np.resize(a, max(n, 0))
            elif kind == "dtype":
                arrays[k] = _dtype_change(
                    a,
                    draw(
                        st.sampled_from(
                            [
                                np.float32,
                                np.float16,
                                np.float64,
                                np.int8,
                                np.uint16,
                                np.int64,
                                np.uint8,
                            ]
                        )
                    ),
                )
            elif kind == "shape2d" and a.size % 2 == 0:
                arrays[k] = a.reshape(2, -1)
            elif kind == "drop":
                del arrays[k]
            elif kind == "values" and a.size:
                j = draw(st.integers(0, a.size - 1))
                if a.dtype == np.float32:
                    a.reshape(-1)[j] = draw(NONFINITE)
                elif a.dtype == np.uint8:
                    a.reshape(-1)[j] = draw(st.integers(0, 255))
        elif kind == "codes" and arrays.get("t.codes", np.empty(0)).dtype == np.uint8:
            a = arrays["t.codes"].reshape(-1)
            if a.size:
                a[draw(st.integers(0, a.size - 1))] = draw(st.integers(0, 255))
        elif kind == "format":
            fmt = draw(st.sampled_from(["lowfp.qtensor.v2", "", "lowfp.qtensor.v1 "]))
        elif kind == "raw":
            raw.append((draw(st.integers(0, 400)), draw(st.integers(0, 255))))
    return i, meta, arrays, fmt, raw


def _same_arrays(a, b):
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype
        and a[k].shape == b[k].shape
        and np.array_equal(a[k].view(np.uint8), b[k].view(np.uint8))
        for k in a
    )


@FUZZ
@given(qtensor_mutation())
def test_mutated_qtensor_files(case):
    i, meta, arrays, fmt, raw = case
    q0 = QTS[i]
    with tempfile.TemporaryDirectory(prefix="lowfp-fuzz-") as d:
        path = os.path.join(d, "q.safetensors")
        try:
            text = json.dumps({"t": meta})
        except (TypeError, ValueError):
            return  # not JSON-able: no file can hold it
        save_file(arrays, path, metadata={"lowfp": text, "format": fmt})
        if raw:
            b = bytearray(open(path, "rb").read())
            for pos, v in raw:
                if pos < len(b):
                    b[pos] = v
            open(path, "wb").write(bytes(b))
        try:
            out = lowfp.load_qtensors(path)
        except (ValueError, TypeError) as e:
            assert str(e).startswith((path, f"path: {path}")), repr(e)
            return
    q = out["t"]
    # a consistent object: it dequantizes to its shape, its bytes are its arrays'
    v = q.dequantize()
    assert v.shape == tuple(q.shape) and v.dtype == np.float32
    assert q.nbytes == q.codes.nbytes + q.scales.nbytes + (
        0 if q.alphas is None else q.alphas.nbytes
    ) + (4 if q.scale == "e4m3" else 0)
    m0, a0 = _parts(q0)
    if (
        not raw
        and q.metadata() == m0
        and _same_arrays(
            {
                k: v
                for k, v in (("t.codes", q.codes), ("t.scales", q.scales), ("t.alphas", q.alphas))
                if v is not None
            },
            a0,
        )
    ):
        np.testing.assert_array_equal(v, q0.dequantize())  # same file, same values


# ------------------------------------------------------------------ optimizer state dicts

torch = pytest.importorskip("torch")
import lowfp.optim as lo  # noqa: E402

OPT_CASES = [
    (lo.AdamW8bit, {"block_size": 64}),
    (lo.AdamW4bit, {"block_size": 64}),
    (lo.SOLO, {"block_size": 64}),
    (lo.AdamWFp8, {"block_size": 64}),
    (
        lo.AdamW,
        {"amsgrad": True, "exp_avg": lowfp.Linear(4), "exp_avg_sq": "e3m2", "block_size": 32},
    ),
    (lo.AdamW, {"min_quant_size": 10**9}),  # float32 states
    (lo.SGD, {"lr": 0.1, "momentum": 0.9, "momentum_codec": lowfp.Dynamic(8), "block_size": 64}),
    (lo.Muon8bit, {"block_size": 64}),  # the matrix in Muon, the vector in its AdamW
]
_SHAPES = [(5, 40), (24,)]


def _opt(i):
    cls, kw = OPT_CASES[i]
    torch.manual_seed(0)
    ps = [torch.nn.Parameter(torch.randn(s)) for s in _SHAPES]
    kw = dict(kw)
    if cls is not lo.Muon8bit:
        kw.setdefault("min_quant_size", 0)
    return ps, cls([{"params": ps[:1]}, {"params": ps[1:]}], **kw)


def _grads(ps, k):
    g = torch.Generator().manual_seed(k)
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g)


def _trained(i):
    ps, o = _opt(i)
    for k in range(2):
        _grads(ps, k)
        o.step()
    return ps, o


SAVED = [_trained(i)[1].state_dict() for i in range(len(OPT_CASES))]


def _bits(t):
    """A tensor's bytes (a dense copy: step counters are views of one plan tensor)."""
    c = torch.empty(t.numel(), dtype=t.dtype)
    c.copy_(t.detach().reshape(-1))
    return c.view(torch.uint8)


def _same(a, b):
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return (
            isinstance(b, (list, tuple))
            and len(a) == len(b)
            and all(_same(x, y) for x, y in zip(a, b))
        )
    if torch.is_tensor(a) or torch.is_tensor(b):  # bit for bit (NaN equals NaN)
        return (
            torch.is_tensor(a)
            and torch.is_tensor(b)
            and a.dtype == b.dtype
            and a.shape == b.shape
            and torch.equal(_bits(a), _bits(b))
        )
    return type(a) is type(b) and (a == b or (a != a and b != b))


TENSOR_EDITS = ["truncate", "extend", "dtype", "reshape", "value", "byte", "delete", "scalar"]


@st.composite
def state_dict_mutation(draw):
    i = draw(st.integers(0, len(SAVED) - 1))
    sd = copy.deepcopy(SAVED[i])
    hyper = False  # a hyperparameter was changed
    for _ in range(draw(st.integers(1, 3))):
        where = draw(
            st.sampled_from(["state", "state", "state", "step", "codec", "group", "ids", "top"])
        )
        states = sd.get("state") if isinstance(sd.get("state"), dict) else {}
        if where in ("state", "step", "codec") and states:
            sid = draw(st.sampled_from(sorted(states, key=str)))
            s = states[sid]
            if not isinstance(s, dict):
                continue
            if where == "step":
                s["step"] = draw(
                    st.one_of(
                        WEIRD,
                        st.builds(torch.tensor, NONFINITE),
                        st.just(torch.tensor([1.0, 2.0])),
                        st.just(torch.tensor(3, dtype=torch.int64)),
                    )
                )
            elif where == "codec":
                keys = [k for k in s if k.endswith(".codec")]
                if keys:
                    k = draw(st.sampled_from(keys))
                    if isinstance(s[k], dict) and draw(st.booleans()):
                        sub = draw(st.sampled_from(["codec", "block", "scale", "layout"]))
                        if sub == "codec" and isinstance(s[k]["codec"], dict):
                            s[k]["codec"][
                                draw(
                                    st.sampled_from(
                                        [
                                            "codec",
                                            "bits",
                                            "signed",
                                            "zero",
                                            "format",
                                            "alpha",
                                            "quantile",
                                        ]
                                    )
                                )
                            ] = draw(WEIRD)
                        else:
                            s[k][sub] = draw(WEIRD)
                    else:
                        s[k] = draw(WEIRD)
            else:
                keys = sorted(k for k in s if torch.is_tensor(s[k]))
                if not keys:
                    continue
                k = draw(st.sampled_from(keys))
                t = s[k]
                edit = draw(st.sampled_from(TENSOR_EDITS))
                if edit == "truncate" and t.numel():
                    s[k] = t.reshape(-1)[: -draw(st.integers(1, min(4, t.numel())))]
                elif edit == "extend":
                    s[k] = torch.cat([t.reshape(-1), t.reshape(-1)[:1].repeat(2)])
                elif edit == "dtype":
                    s[k] = t.to(
                        draw(
                            st.sampled_from(
                                [
                                    torch.float32,
                                    torch.float16,
                                    torch.bfloat16,
                                    torch.float64,
                                    torch.uint8,
                                    torch.int8,
                                    torch.int64,
                                    torch.bool,
                                ]
                            )
                        )
                    )
                elif edit == "reshape" and t.numel() % 2 == 0 and t.numel():
                    s[k] = t.reshape(2, -1)
                elif edit == "value" and t.numel() and t.dtype == torch.float32:
                    t.reshape(-1)[draw(st.integers(0, t.numel() - 1))] = draw(NONFINITE)
                elif edit == "byte" and t.numel() and t.dtype == torch.uint8:
                    t.reshape(-1)[draw(st.integers(0, t.numel() - 1))] = draw(st.integers(0, 255))
                elif edit == "delete":
                    del s[k]
                elif edit == "scalar":
                    s[k] = draw(WEIRD)
        elif where == "group" and isinstance(sd.get("param_groups"), list) and sd["param_groups"]:
            g = sd["param_groups"][draw(st.integers(0, len(sd["param_groups"]) - 1))]
            if not isinstance(g, dict):
                continue
            key = draw(st.sampled_from(sorted(g) + ["extra"]))
            hyper = hyper or key != "params"
            g[key] = draw(st.one_of(WEIRD, st.tuples(NONFINITE, NONFINITE)))
        elif where == "ids" and states:
            sid = draw(st.sampled_from(sorted(states, key=str)))
            states[draw(st.sampled_from([99, -1, "0", "1", sid]))] = states.pop(sid)
        elif where == "top":
            sd[draw(st.sampled_from(["state", "param_groups"]))] = draw(WEIRD)
    return i, sd, hyper


def _run_after_load(i, sd):
    """(outcome, params, optimizer): load sd into a fresh optimizer, then one step."""
    ps, o = _opt(i)
    for k in range(2):  # the same history as the saved one: a load replaces it
        _grads(ps, k)
        o.step()
    before = copy.deepcopy(o.state_dict())
    try:
        o.load_state_dict(sd)
    except (ValueError, TypeError) as e:
        assert str(e).startswith("state_dict"), repr(e)
        assert _same(o.state_dict(), before), "a failed load changed the optimizer"
        return "error", ps, o
    _grads(ps, 7)
    o.step()
    return "loaded", ps, o


@FUZZ
@given(state_dict_mutation())
def test_mutated_optimizer_state_dicts(case):
    i, sd, hyper = case
    original = copy.deepcopy(SAVED[i])
    outcome, ps, o = _run_after_load(i, sd)
    if outcome == "error":
        return
    if not hyper:  # (huge but valid hyperparameters are the user's, as in the constructor)
        for p in ps:
            assert torch.isfinite(p).all(), "non-finite weights after a step"
    if _same(sd, original):
        _, ps0, _ = _run_after_load(i, original)
        for p, p0 in zip(ps, ps0):
            assert torch.equal(p, p0)


def test_the_fuzz_mutations_reach_both_outcomes():
    """The strategies are not vacuous: over a fixed sample both loads that succeed and
    loads that fail occur, for files and for state dicts."""
    qt, sd = set(), set()
    with tempfile.TemporaryDirectory(prefix="lowfp-fuzz-") as d:
        path = os.path.join(d, "q.safetensors")
        for q in QTS:
            meta, arrays = _parts(q)
            save_file(arrays, path, metadata={"lowfp": json.dumps({"t": meta})})
            lowfp.load_qtensors(path)
            qt.add("ok")
            meta["block_size"] = 4097
            save_file(arrays, path, metadata={"lowfp": json.dumps({"t": meta})})
            with pytest.raises(ValueError):
                lowfp.load_qtensors(path)
            qt.add("error")
    for i in range(len(SAVED)):
        sd.add(_run_after_load(i, copy.deepcopy(SAVED[i]))[0])
        bad = copy.deepcopy(SAVED[i])
        bad["state"][0]["step"] = torch.tensor(-1.0)
        sd.add(_run_after_load(i, bad)[0])
    assert qt == {"ok", "error"} and sd == {"loaded", "error"}
