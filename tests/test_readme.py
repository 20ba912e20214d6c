"""Every Python example in the README runs (in order, in one namespace)."""

import importlib.util
import pathlib
import re

import pytest

import lowfp

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_readme_examples_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 6
    monkeypatch.chdir(tmp_path)  # examples write files
    ns: dict = {}
    threads = lowfp.num_threads()
    try:
        for i, code in enumerate(blocks):
            if "torch" in code and importlib.util.find_spec("torch") is None:
                pytest.skip(f"torch is not installed: README examples {i + 1}.. need it")
            exec(compile(code, str(README), "exec"), ns)
    finally:
        lowfp.set_num_threads(threads)  # the examples change it
