"""The command line: the format table, the default job, and errors."""

import subprocess
import sys

import lowfp


def run(*args):
    return subprocess.run([sys.executable, "-m", "lowfp", *args], capture_output=True,
                          text=True, timeout=300)


def test_formats_table_lists_every_format():
    r = run("formats")
    assert r.returncode == 0, r.stderr
    for f in lowfp.formats():
        assert f.name in r.stdout


def test_demo_runs_and_round_trips():
    r = run("demo", "--n", "20000")
    assert r.returncode == 0, r.stderr
    assert "False" not in r.stdout  # every decoded value re-encoded to its code
    assert "mxfp4" in r.stdout and "nvfp4" in r.stdout


def test_bad_arguments_give_a_one_line_error():
    r = run("demo", "--n", "-5")
    assert r.returncode == 2
    assert r.stderr.startswith("lowfp: error:") and "Traceback" not in r.stderr
