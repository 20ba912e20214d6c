"""Print the requirements of lowfp's base dependencies plus the given extras, read from
pyproject.toml (the one list), one per line, skipping those already installed.

Usage: python3 scripts/deps.py [EXTRA[,EXTRA...]] [--all]   (--all: installed ones too)

Self-references (``lowfp[experiments,lint]``) are expanded. tomllib is Python 3.11+; older
Pythons use tomli when present, else a small reader of this file's own layout (string lists).
"""

from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def _tables(text: str) -> dict:
    try:
        import tomllib  # type: ignore[import-not-found]
    except ImportError:
        try:
            import tomli as tomllib  # type: ignore[import-not-found,no-redef]
        except ImportError:
            tomllib = None
    if tomllib is not None:
        return tomllib.loads(text)
    # fallback: `key = "s"` and `key = ["a", ...]` (lists over several lines too) in [table]s
    out: dict = {}
    table: dict = out
    value = r'"[^"\n]*"|\[(?:\s*"[^"]*"\s*,?)*\s*\]'  # a string, or a list of strings
    for m in re.finditer(rf"^\[([^\]\[]+)\]\s*$|^([\w-]+)\s*=\s*({value})", text, re.M):
        if m.group(1):
            table = out
            for part in m.group(1).strip().split("."):
                table = table.setdefault(part, {})
        else:
            table[m.group(2)] = ast.literal_eval(m.group(3))
    return out


def requirements(extras: list) -> list:
    project = _tables(PYPROJECT.read_text())["project"]
    name, optional = project["name"], project.get("optional-dependencies", {})
    reqs, seen, todo = list(project.get("dependencies", [])), set(), list(extras)
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        if extra not in optional:
            sys.exit(
                f"deps.py: unknown extra {extra!r}; pyproject.toml has "
                f"{', '.join(sorted(optional))}"
            )
        seen.add(extra)
        for r in optional[extra]:
            m = re.match(rf"{re.escape(name)}\[([^\]]+)\]$", r)
            if m:
                todo += [e.strip() for e in m.group(1).split(",")]
            elif r not in reqs:
                reqs.append(r)
    return reqs


def installed(req: str) -> bool:
    dist = re.match(r"[A-Za-z0-9_.\-]+", req).group(0)  # type: ignore[union-attr]
    try:
        metadata.version(dist)
        return True
    except metadata.PackageNotFoundError:
        return False


def main(argv: list) -> None:
    extras = [e for a in argv if not a.startswith("--") for e in a.split(",") if e]
    for r in requirements(extras):
        if "--all" in argv or not installed(r):
            print(r)


if __name__ == "__main__":
    main(sys.argv[1:])
