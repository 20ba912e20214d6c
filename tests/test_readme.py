"""Every Python example in README.md and docs/*.md runs (the blocks of one file in order, in
one namespace, in a scratch directory), every relative link points at a file that exists, and
the `lowfp formats` output shown in docs/formats.md is what the command prints."""

import importlib.util
import pathlib
import re

import pytest

import lowfp

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _blocks(page):
    return re.findall(r"^```python\n(.*?)^```", page.read_text(), re.S | re.M)


def test_the_readme_and_docs_have_examples():
    assert len(_blocks(ROOT / "README.md")) >= 1
    assert sum(len(_blocks(p)) for p in PAGES) >= 30


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_examples_run(page, tmp_path, monkeypatch):
    blocks = _blocks(page)
    if not blocks:
        pytest.skip(f"{page.name} has no python blocks")
    monkeypatch.chdir(tmp_path)  # examples write files
    ns: dict = {"__name__": f"docs_{page.stem}"}
    threads = lowfp.num_threads()
    try:
        for i, code in enumerate(blocks):
            if "torch" in code and importlib.util.find_spec("torch") is None:
                pytest.skip(f"torch is not installed: {page.name} examples {i + 1}.. need it")
            exec(compile(code, f"{page}:block{i + 1}", "exec"), ns)
    finally:
        lowfp.set_num_threads(threads)  # the examples change it


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_point_at_files(page):
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#")[0]).resolve()
        rel = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)
        assert path.exists(), f"{page.name}: link to {target} ({rel}) has no file"


def test_formats_page_shows_the_commands_output():
    from lowfp.cli import _fmt_table

    text = (ROOT / "docs" / "formats.md").read_text()
    shown = re.search(r"`lowfp formats` prints:\n\n```text\n(.*?)\n```", text, re.S)
    assert shown is not None and shown.group(1) == _fmt_table()


def test_readme_stays_short():
    assert len((ROOT / "README.md").read_bytes()) <= 15 * 1024
