"""Layering (issue 13, item 7): the CUDA backend sits below the NumPy-facing API.

lowfp.cuda and the backend-neutral helpers (_common, _types) must not import lowfp.codec or
lowfp.qtensor, at module level or inside a function; the API imports them, not the reverse.
Checked on the source (ast), so it holds without CuPy or a GPU."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "python" / "lowfp"
API = ("lowfp.codec", "lowfp.qtensor")


def _module_name(path: Path, pkg: Path) -> str:
    parts = path.relative_to(pkg.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, pkg: Path = PKG) -> set:
    """Absolute names of every module a file of package directory `pkg` imports (``from a
    import b`` counts a and a.b, since b may be a submodule), relative imports resolved."""
    name = _module_name(path, pkg)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def _imports_api(path: Path, pkg: Path = PKG) -> list:
    return sorted(
        m for m in imported_modules(path, pkg) if any(m == a or m.startswith(a + ".") for a in API)
    )


BELOW_API = sorted((PKG / "cuda").glob("*.py")) + [PKG / "_common.py", PKG / "_types.py"]


@pytest.mark.parametrize("path", BELOW_API, ids=lambda p: str(p.relative_to(PKG)))
def test_backend_does_not_import_the_api(path):
    assert not _imports_api(path), f"{path.name} imports {_imports_api(path)}"


def test_checker_sees_relative_and_lazy_imports(tmp_path):
    # the checker itself: lazy `from ..codec import X` and `from .. import qtensor` count
    cuda = tmp_path / "lowfp" / "cuda"
    cuda.mkdir(parents=True)
    (cuda / "__init__.py").write_text(
        "def f():\n    from ..codec import ROUNDINGS\n    from .. import qtensor\n"
    )
    (cuda / "ok.py").write_text("from .._common import ROUNDINGS\nfrom . import codec\n")
    pkg = tmp_path / "lowfp"
    assert _imports_api(cuda / "__init__.py", pkg) == [
        "lowfp.codec",
        "lowfp.codec.ROUNDINGS",
        "lowfp.qtensor",
    ]
    assert _imports_api(cuda / "ok.py", pkg) == []  # lowfp.cuda.codec is not lowfp.codec
