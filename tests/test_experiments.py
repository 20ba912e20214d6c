"""lowfp.experiments and `lowfp experiment`: tiny smoke runs write the report, CSVs and PNGs,
the numbers are finite, and the robust findings hold even at small scale."""

import csv
import math
import os
import pathlib
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

import lowfp  # noqa: E402
from lowfp import experiments  # noqa: E402

# the subprocesses run in a temporary directory: import this lowfp, wherever it lives
_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    [str(pathlib.Path(lowfp.__file__).resolve().parent.parent)]
    + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}


def _csv_numbers(path):
    with open(path) as fh:
        rows = list(csv.DictReader(fh))
    assert rows
    return rows


@pytest.fixture(scope="module")
def swamping(tmp_path_factory):
    out = tmp_path_factory.mktemp("swamping")
    return out, experiments.run_one("swamping", steps=30, seed=0, out=out, progress=False)


def test_swamping_writes_files_and_linear_freezes(swamping):
    out, res = swamping
    for f in res["plots"] + res["csv"]:
        assert (out / f).stat().st_size > 0
    assert all(f.endswith(".png") for f in res["plots"])
    for row in _csv_numbers(out / "swamping_ema.csv"):
        assert math.isfinite(float(row["rel_err_mean_v_small_half"]))
    ema = res["metrics"]["ema"]
    for b in (2, 3, 4):
        lin, log = ema[f"linear {b}"], ema[f"log {b}"]
        assert all(math.isfinite(v) for v in (*lin.values(), *log.values()))
        # swamping is immediate: nearest-rounded linear codes never lift small entries off 0
        assert lin["zero_small"] > log["zero_small"]
        assert lin["rel_err"] > 0.9 > 0.3 > log["rel_err"]
    assert math.isfinite(res["metrics"]["train"]["fp32"]["final"])
    assert res["metrics"]["train"]["linear 2-bit"]["zero"] > res["metrics"]["train"][
        "log 2-bit"]["zero"]
    assert len(res["findings"]) >= 2 and all(res["findings"])


def test_sgd_shrinkage_smoke(tmp_path):
    res = experiments.run_one("sgd-shrinkage", steps=40, seed=1, out=tmp_path, progress=False)
    assert (tmp_path / "sgd_shrinkage.png").stat().st_size > 0
    rows = _csv_numbers(tmp_path / "sgd_shrinkage.csv")
    assert all(math.isfinite(float(r["excess_risk"])) for r in rows)
    final = res["metrics"]["final"]
    assert len(final) == 15 and all(math.isfinite(v) for v in final.values())
    assert all(v < res["metrics"]["initial_risk"] for v in final.values())  # every run learns
    assert final["FP16 1x"] == pytest.approx(final["fp32 1x"], rel=1e-3)


def test_run_writes_a_report_with_every_section(tmp_path):
    lines = []
    path = experiments.run(["sgd-shrinkage"], steps=10, out=tmp_path, progress=lines.append)
    text = path.read_text()
    assert path == tmp_path / "report.md"
    assert "## sgd-shrinkage" in text and "![sgd_shrinkage.png](sgd_shrinkage.png)" in text
    assert "| gradient |" in text and "**Findings.**" in text
    assert lines and all(line.startswith("[sgd-shrinkage]") for line in lines)


@pytest.mark.parametrize("names,steps", [(["nope"], None), (["swamping"], 0),
                                         (["swamping"], -3)])
def test_bad_arguments_raise_value_error(tmp_path, names, steps):
    with pytest.raises(ValueError):
        experiments.run(names, steps=steps, out=tmp_path, progress=False)


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "lowfp", "experiment", *args],
                          capture_output=True, text=True, timeout=120, cwd=cwd, env=_ENV)


def test_cli_runs_swamping(tmp_path):
    r = _cli("swamping", "--steps", "20", "--out", "tmp", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = tmp_path / "tmp" / "report.md"
    assert str(report.relative_to(tmp_path)) in r.stdout
    assert "## swamping" in report.read_text()
    assert (tmp_path / "tmp" / "swamping_ema.png").exists()
    assert "[swamping" in r.stderr  # progress lines


@pytest.mark.parametrize("args", [("nope",), ("swamping", "--steps", "0"),
                                  ("swamping", "--steps", "x")])
def test_cli_errors_exit_2(tmp_path, args):
    r = _cli(*args, "--out", "o", cwd=tmp_path)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith(("lowfp: error:", "usage:")) or \
        "error:" in r.stderr
    assert "Traceback" not in r.stderr
