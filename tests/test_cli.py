"""The command line: the format table, the default job, and errors."""

import subprocess
import sys

import numpy as np

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


def _inputs(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 48)).astype(np.float32)
    b = rng.standard_normal(1000).astype(np.float32) * 3
    np.save(tmp_path / "a.npy", a)
    np.savez(tmp_path / "ab.npz", a=a, b=b)
    from safetensors.numpy import save_file

    save_file({"a": a, "b": b}, str(tmp_path / "ab.safetensors"))
    paths = [tmp_path / "a.npy", tmp_path / "ab.npz", tmp_path / "ab.safetensors"]
    try:
        import torch

        torch.save({"a": torch.from_numpy(a), "b": torch.from_numpy(b)}, tmp_path / "ab.pt")
        paths.append(tmp_path / "ab.pt")
    except ImportError:
        pass
    return {"a": a, "b": b}, paths


def test_convert_every_input_type_and_back(tmp_path):
    ref, paths = _inputs(tmp_path)
    for path in paths:
        out = tmp_path / (path.stem + path.suffix.replace(".", "_") + ".q.safetensors")
        r = run("convert", str(path), str(out), "--format", "mxfp4")
        assert r.returncode == 0, r.stderr
        assert "bytes" in r.stdout
        qs = lowfp.load_qtensors(str(out))
        for name, q in qs.items():
            want = lowfp.quantize_blockwise(ref["a" if name == "tensor" else name], "mxfp4")
            np.testing.assert_array_equal(q.dequantize(), want.dequantize())
        back = tmp_path / (out.stem + ".f32.safetensors")
        r = run("convert", str(out), str(back), "--to", "float32")
        assert r.returncode == 0, r.stderr
        from safetensors.numpy import load_file

        for name, v in load_file(str(back)).items():
            np.testing.assert_array_equal(v, qs[name].dequantize())


def test_inspect_report_and_files(tmp_path):
    _, paths = _inputs(tmp_path)
    csv_path, json_path = tmp_path / "r.csv", tmp_path / "r.json"
    r = run("inspect", str(paths[2]), "--format", "mxfp8", "--format", "e2m1", "--block", "32",
            "--csv", str(csv_path), "--json", str(json_path))
    assert r.returncode == 0, r.stderr
    import json

    rows = json.loads(json_path.read_text())
    assert len(rows) == 4 and csv_path.read_text().count("\n") == 5
    by = {(x["tensor"], x["format"]): x for x in rows}
    # 8-bit floats keep ~5x more signal than FP4: ordered, and finite
    assert by[("a", "mxfp8")]["sqnr_db"] > by[("a", "e2m1")]["sqnr_db"] > 0
    assert all(np.isfinite(x["mse"]) and x["bytes"] > 0 for x in rows)


def test_file_errors_are_one_line_and_leave_no_output(tmp_path):
    out = tmp_path / "o.safetensors"
    np.save(tmp_path / "good.npy", np.ones(64, np.float32))
    (tmp_path / "bad.npy").write_bytes(b"not an array")
    (tmp_path / "x.txt").write_text("hello")
    for args in (["convert", str(tmp_path / "missing.npy"), str(out)],
                 ["convert", str(tmp_path / "bad.npy"), str(out)],
                 ["convert", str(tmp_path / "good.npy"), str(out), "--format", "e9m9"],
                 ["convert", str(tmp_path / "good.npy"), str(tmp_path / "no" / "o.st")],
                 ["inspect", str(tmp_path / "x.txt")]):
        r = run(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.startswith("lowfp: error:") and "Traceback" not in r.stderr
        assert not out.exists()


def test_bench_codecs_quick_prints_the_tables():
    r = run("bench", "codecs", "--quick")
    assert r.returncode == 0, r.stderr
    assert "65,536 float32 elements" in r.stdout
    for title in ("## Encode f32 → format (codes)", "## Decode format → f32",
                  "## Stochastic rounding f32 → format", "## Bit packing",
                  "## 8-bit blockwise"):
        assert title in r.stdout
    assert "| float8_e4m3fn | 1 |" in r.stdout
    assert "[bench codecs] done:" in r.stderr and "Traceback" not in r.stderr


def test_bench_optim_quick_through_the_wrapper_script():
    import pathlib

    script = pathlib.Path(__file__).resolve().parent.parent / "benches" / "bench_optim.py"
    r = subprocess.run([sys.executable, str(script), "--quick", "--only", "lowfp AdamW"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")
            for line in r.stdout.splitlines() if line.startswith("| lowfp")}
    assert set(rows) == {"lowfp AdamW fp32", "lowfp AdamW8bit", "lowfp AdamW4bit",
                         "lowfp AdamWFp8"}
    # 2^16 parameters: 8-bit codes for 2 states + a float32 scale per 256 = 2 + 8/256 bytes
    assert rows["lowfp AdamW8bit"][2] == "2.031"
    assert rows["lowfp AdamW4bit"][2] == "1.063"  # 4-bit codes, block 128: 1 + 8/128
    assert all(float(r[1]) > 0 for r in rows.values())
    assert "[bench optim] done: 4 optimizers" in r.stderr


def test_bench_errors_exit_2():
    r = run("bench", "nope")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = run("bench", "optim", "--n", "0")
    assert r.returncode == 2 and r.stderr.startswith("lowfp: error: --n")
