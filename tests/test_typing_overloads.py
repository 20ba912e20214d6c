"""What a type checker sees: ndarray in -> ndarray out, Tensor in -> Tensor out for encode,
decode, quantize, pack, unpack and the table codecs (``typing.overload``s), NumPy results for
lists, and misspelt options rejected (the Literal types). Checked with mypy on a snippet
(mypy's cache is kept in pytest's cache directory: the first run reads torch's stubs)."""

import pathlib

import pytest

api = pytest.importorskip("mypy.api")
pytest.importorskip("torch")

PYTHON = pathlib.Path(__file__).resolve().parents[1] / "python"
ND = "numpy.ndarray[tuple[Any, ...], numpy.dtype[Any]]"
TENSOR = "torch._tensor.Tensor"

# (expression, revealed type)
CASES = [
    ('lowfp.encode(x, "e4m3")', ND),
    ('lowfp.encode(t, "e4m3", rounding="stochastic", seed=1)', TENSOR),
    ('lowfp.encode(a, "e4m3")', ND),  # a plain np.ndarray annotation (Any inside)
    ('lowfp.decode(lowfp.encode(a, "e4m3"), "e4m3")', ND),
    ('lowfp.decode(lowfp.encode(t, "e4m3"), "e4m3")', TENSOR),
    ('lowfp.quantize(x, "e2m1")', ND),
    ('lowfp.quantize(t, "e2m1")', TENSOR),
    ('lowfp.pack(lowfp.encode(a, "e2m1"), 4)', ND),
    ("lowfp.unpack(lowfp.pack(lowfp.encode(t, 'e2m1'), 4), 4, 4)", TENSOR),
    ("lowfp.Linear(4).encode(t)", TENSOR),
    ("lowfp.Dynamic(8).decode(lowfp.Dynamic(8).encode(a))", ND),
    ('lowfp.encode([1.0, 2.0], "e4m3")', ND),
]


def test_results_keep_the_array_kind(pytestconfig, tmp_path):
    lines = [
        "from typing import Any",
        "import numpy as np",
        "import torch",
        "import lowfp",
        "x = np.zeros(4, np.float32)",
        "t = torch.zeros(4)",
        "a: np.ndarray = np.zeros(4, np.float32)",
    ]
    first = len(lines) + 1
    lines += [f"reveal_type({expr})" for expr, _ in CASES]
    bad = len(lines) + 1
    lines.append('lowfp.encode(x, "e4m3", rounding="nearst")')
    snippet = tmp_path / "snippet.py"
    snippet.write_text("\n".join(lines) + "\n")
    # pytest's cache directory keeps mypy's (a cold run reads torch's stubs: ~15 s of CPU)
    cache = (
        pytestconfig.cache.mkdir("mypy")
        if getattr(pytestconfig, "cache", None)
        else (tmp_path / "mypy")
    )
    import os

    env = os.environ.get("MYPYPATH")
    os.environ["MYPYPATH"] = str(PYTHON)
    try:
        out, err, _ = api.run(
            [
                "--follow-imports=silent",
                "--cache-dir",
                str(cache),
                "--no-error-summary",
                str(snippet),
            ]
        )
    finally:
        if env is None:
            del os.environ["MYPYPATH"]
        else:
            os.environ["MYPYPATH"] = env
    revealed, errors = {}, {}
    for ln in out.splitlines():
        path, _, rest = ln.partition(":")
        num, _, msg = rest.partition(": ")
        if not num.isdigit():
            continue
        if msg.startswith("note: Revealed type is "):
            revealed[int(num)] = msg[len('note: Revealed type is "') : -1]
        elif msg.startswith("error:"):
            errors.setdefault(int(num), msg)
    for i, (expr, want) in enumerate(CASES):
        assert revealed.get(first + i) == want, (expr, revealed.get(first + i), err)
    assert set(errors) == {bad}, (errors, err)
    assert "No overload variant" in errors[bad]
