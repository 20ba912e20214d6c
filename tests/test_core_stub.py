"""The hand-written stub python/lowfp/_core.pyi against the built native module: the same
public names, and for every function the same parameters (names, order, defaults) as PyO3's
``__text_signature__``. A function added to rust/py.rs without a stub fails here."""

import ast
import inspect
from pathlib import Path

import pytest

from lowfp import _core

STUB = Path(__file__).resolve().parents[1] / "python" / "lowfp" / "_core.pyi"


def _public(names):
    return {n for n in names if not n.startswith("_")}


def _stub_tree() -> ast.Module:
    return ast.parse(STUB.read_text(), filename=str(STUB))


def _stub_defs(body) -> dict:
    """name -> ast node of the public functions, classes and constants of a stub body."""
    out = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            out[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = node
        elif isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    out[t.id] = node
    return {k: v for k, v in out.items() if not k.startswith("_")}


_NO_DEFAULT = object()


def _stub_params(fn: ast.FunctionDef, drop_first: bool = False) -> list:
    """[(name, default or _NO_DEFAULT)] of a stub function, in order."""
    a = fn.args
    pos = a.posonlyargs + a.args
    defaults = [_NO_DEFAULT] * (len(pos) - len(a.defaults)) + [
        ast.literal_eval(d) for d in a.defaults
    ]
    params = list(zip((p.arg for p in pos), defaults))
    for p, d in zip(a.kwonlyargs, a.kw_defaults):
        params.append((p.arg, _NO_DEFAULT if d is None else ast.literal_eval(d)))
    return params[1:] if drop_first else params


def _runtime_params(obj) -> list:
    sig = inspect.signature(obj)
    return [
        (p.name, _NO_DEFAULT if p.default is p.empty else p.default)
        for p in sig.parameters.values()
    ]


STUB_DEFS = _stub_defs(_stub_tree().body)
RUNTIME = _public(dir(_core))
FUNCTIONS = sorted(n for n in RUNTIME if inspect.isbuiltin(getattr(_core, n)))


def test_stub_names_equal_module_names():
    missing = RUNTIME - set(STUB_DEFS)
    extra = set(STUB_DEFS) - RUNTIME
    assert not missing, f"in lowfp._core but not in _core.pyi: {sorted(missing)}"
    assert not extra, f"in _core.pyi but not in lowfp._core: {sorted(extra)}"


def test_every_function_has_a_text_signature():
    # the comparison below relies on PyO3's signatures; without one it would check nothing
    assert FUNCTIONS
    for name in FUNCTIONS:
        assert getattr(_core, name).__text_signature__, name


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_parameters_match(name):
    node = STUB_DEFS.get(name)
    assert isinstance(node, ast.FunctionDef), f"{name}: expected a def in _core.pyi"
    assert _stub_params(node) == _runtime_params(getattr(_core, name))


def test_constants_are_annotated_as_lists_of_str():
    for name in RUNTIME:
        value = getattr(_core, name)
        if callable(value):
            continue
        node = STUB_DEFS[name]
        assert isinstance(node, ast.AnnAssign), name
        assert ast.unparse(node.annotation) == "List[str]", name
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), name


# one instance of each class, to read its bound methods' signatures
_SPEC = {
    "codec": "linear",
    "bits": 8,
    "signed": True,
    "zero": True,
    "fields": (0,) * 7,
    "alpha": 0.5,
    "quantile": 0.0,
    "block": 64,
    "scale": "absmax",
    "rounding": "nearest",
}
SAMPLES = {
    "BlockSpec": lambda: _core.BlockSpec(_SPEC),
    "Format": lambda: _core.Format.parse("e4m3"),
    "Encoder": lambda: _core.Encoder(_core.Format.parse("e4m3")),
    "Table": lambda: _core.Table([-1.0, 0.0, 1.0]),
}


def test_classes_match():
    classes = sorted(n for n in RUNTIME if inspect.isclass(getattr(_core, n)))
    assert classes == sorted(SAMPLES)
    for cname in classes:
        cls = getattr(_core, cname)
        obj = SAMPLES[cname]()
        node = STUB_DEFS[cname]
        assert isinstance(node, ast.ClassDef), cname
        methods = {m.name: m for m in node.body if isinstance(m, ast.FunctionDef)}
        runtime = {n for n in vars(cls) if not n.startswith("_")}
        assert {m for m in methods if not m.startswith("_")} == runtime, cname
        # constructor: the class's own text signature, e.g. "(spec)"
        assert _stub_params(methods["__new__"], drop_first=True) == _runtime_params(cls)
        for mname, m in methods.items():
            attr = vars(cls).get(mname)
            decorators = {ast.unparse(d) for d in m.decorator_list}
            if mname.startswith("__"):
                continue
            if "property" in decorators:
                assert inspect.isgetsetdescriptor(attr), f"{cname}.{mname}: not a property"
                continue
            if "staticmethod" in decorators:
                assert isinstance(attr, staticmethod), f"{cname}.{mname}: not a staticmethod"
                assert _stub_params(m) == _runtime_params(getattr(cls, mname)), cname
                continue
            assert attr.__text_signature__, f"{cname}.{mname}"
            assert _stub_params(m, drop_first=True) == _runtime_params(getattr(obj, mname)), (
                f"{cname}.{mname}"
            )


def test_handles_compare_hash_and_pickle_by_value():
    import pickle

    for cname, make in SAMPLES.items():
        a, b = make(), make()
        c = pickle.loads(pickle.dumps(a))
        assert type(c) is type(a), cname
        if cname in ("Format", "Encoder"):
            assert a == b == c and hash(a) == hash(b) == hash(c), cname
    assert _core.Format.parse("e4m3") != _core.Format.parse("e5m2")
    f = _core.Format.parse("e4m3")
    assert _core.Encoder(f, "up") != _core.Encoder(f, "down")


def test_stub_detects_a_missing_function():
    # the check above fails when the module grows a function the stub lacks
    body = [
        n
        for n in _stub_tree().body
        if not (isinstance(n, ast.FunctionDef) and n.name == "packed_len")
    ]
    assert "packed_len" in RUNTIME - set(_stub_defs(body))
