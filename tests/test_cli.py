"""The command line: the format table, the default job, and errors."""

import subprocess
import sys

import numpy as np
import pytest

import lowfp


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "lowfp", *args], capture_output=True, text=True, timeout=300
    )


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
    a = rng.standard_normal((64, 96)).astype(np.float32)  # 6144 elements: quantized
    b = rng.standard_normal(1000).astype(np.float32) * 3  # 1-D: kept by the default filter
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
        assert "bytes" in r.stdout and "default filter" in r.stdout
        qs = lowfp.load_qtensors(str(out))
        for name, q in qs.items():
            x = ref["a" if name == "tensor" else name]
            if name == "b":  # 1-D: stored as it was
                np.testing.assert_array_equal(q, x)
                continue
            want = lowfp.quantize_blockwise(x, "mxfp4")
            np.testing.assert_array_equal(q.dequantize(), want.dequantize())
        back = tmp_path / (out.stem + ".f32.safetensors")
        r = run("convert", str(out), str(back), "--to", "float32")
        assert r.returncode == 0, r.stderr
        from safetensors.numpy import load_file

        for name, v in load_file(str(back)).items():
            q = qs[name]
            np.testing.assert_array_equal(v, q if name == "b" else q.dequantize())


def test_convert_min_size_quantizes_small_matrices_but_never_1d(tmp_path):
    a = np.random.default_rng(1).standard_normal((8, 32)).astype(np.float32)
    np.savez(tmp_path / "s.npz", a=a, b=a[0])
    out = tmp_path / "s.safetensors"
    r = run("convert", str(tmp_path / "s.npz"), str(out), "--min-size", "0")
    assert r.returncode == 0, r.stderr
    got = lowfp.load_qtensors(str(out))
    assert isinstance(got["a"], lowfp.QTensor) and not isinstance(got["b"], lowfp.QTensor)
    r = run("convert", str(tmp_path / "s.npz"), str(out), "--min-size", "0", "--exclude", "^a$")
    assert r.returncode == 0 and "quantized 0 tensors" in r.stdout


def test_convert_refuses_to_overwrite_its_input(tmp_path):
    torch = pytest.importorskip("torch")
    _, paths = _inputs(tmp_path)
    pt = paths[-1]
    before = pt.read_bytes()
    r = run("convert", str(pt), str(pt), "--format", "mxfp4")
    assert r.returncode == 2 and "--force" in r.stderr
    assert pt.read_bytes() == before
    r = run("convert", str(pt), str(pt), "--format", "mxfp4", "--force")
    assert r.returncode == 0, r.stderr
    # a .pt OUT holds a torch file: torch.load reads it (weights only)
    obj = torch.load(pt, weights_only=True)
    assert torch.equal(obj["b"], torch.from_numpy(np.load(paths[1])["b"]))
    back = lowfp.load_state_dict(str(pt))
    assert back["a"].shape == (64, 96)


def test_convert_bf16_nested_checkpoint_with_a_mask_and_integers(tmp_path):
    torch = pytest.importorskip("torch")
    w = torch.randn(64, 128, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    ck = {
        "model": {
            "w": w,
            "ln": torch.ones(64, dtype=torch.bfloat16),
            "mask": torch.full((64, 64), float("-inf")),
        },
        "step": 10,
        "ids": torch.arange(7),
    }
    torch.save(ck, tmp_path / "ck.pt")
    out = tmp_path / "ck.q.pt"
    r = run("convert", str(tmp_path / "ck.pt"), str(out), "--format", "nvfp4")
    assert r.returncode == 0, r.stderr
    assert "quantized 1 tensor to nvfp4" in r.stdout and "model/mask" in r.stdout
    n_in = 64 * 128 * 2 + 64 * 2 + 64 * 64 * 4 + 7 * 8  # bf16 counted as 2 bytes
    assert f"{n_in:,} →" in r.stdout
    back = tmp_path / "ck.back.pt"
    r = run("convert", str(out), str(back), "--to", "original")
    assert r.returncode == 0, r.stderr
    got = torch.load(back, weights_only=True)
    assert got["step"] == 10 and torch.equal(got["ids"], ck["ids"])
    assert got["model"]["w"].dtype == torch.bfloat16
    want = lowfp.quantize_blockwise(w.float().numpy(), "nvfp4").dequantize()
    assert torch.equal(got["model"]["w"], torch.from_numpy(want).to(torch.bfloat16))
    assert torch.equal(got["model"]["mask"], ck["model"]["mask"])
    r = run("inspect", str(out))
    assert r.returncode == 0, r.stderr
    assert "lowfp-quantized" in r.stdout and "float4_e2m1fn" in r.stdout
    line = [x for x in r.stdout.splitlines() if x.startswith("model/w")][0]
    assert "16" in line.split() and "e4m3" in line.split() and "bfloat16" in line.split()


def test_inspect_report_and_files(tmp_path):
    _, paths = _inputs(tmp_path)
    csv_path, json_path = tmp_path / "r.csv", tmp_path / "r.json"
    r = run(
        "inspect",
        str(paths[2]),
        "--format",
        "mxfp8",
        "--format",
        "e2m1",
        "--block",
        "32",
        "--csv",
        str(csv_path),
        "--json",
        str(json_path),
    )
    assert r.returncode == 0, r.stderr
    import json

    doc = json.loads(json_path.read_text())
    rows = doc["rows"]
    assert len(rows) == 4 and csv_path.read_text().count("\n") == 1 + 4 + 2
    by = {(x["tensor"], x["format"]): x for x in rows}
    # 8-bit floats keep ~5x more signal than FP4: ordered, and finite
    assert by[("a", "mxfp8")]["sqnr_db"] > by[("a", "e2m1")]["sqnr_db"] > 0
    assert all(np.isfinite(x["mse"]) and x["bytes"] > 0 for x in rows)
    assert [t["format"] for t in doc["totals"]] == ["mxfp8", "e2m1"]
    assert doc["totals"][0]["elements"] == 6144 + 1000
    assert "Pearson" in doc["kurtosis"] and "Pearson" in r.stdout
    # aligned: every line of the table has its columns at the same places
    lines = [x for x in r.stdout.splitlines() if x.strip()][:7]
    assert len({len(x) for x in lines[:5]}) == 1, lines
    end = lines[0].index("elements") + len("elements")  # right-aligned numbers end there
    assert all(x[end - 1] != " " and x[end] == " " for x in lines), lines


def test_inspect_json_is_strict(tmp_path):
    np.savez(tmp_path / "z.npz", zero=np.zeros((4, 64), np.float32))  # sqnr inf, kurtosis nan
    path = tmp_path / "z.json"
    r = run("inspect", str(tmp_path / "z.npz"), "--json", str(path))
    assert r.returncode == 0, r.stderr
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    import json

    row = json.loads(text)["rows"][0]
    assert row["sqnr_db"] is None and row["kurtosis"] is None and row["mse"] == 0


def test_file_errors_are_one_line_and_leave_no_output(tmp_path):
    out = tmp_path / "o.safetensors"
    np.save(tmp_path / "good.npy", np.ones(64, np.float32))
    (tmp_path / "bad.npy").write_bytes(b"not an array")
    (tmp_path / "x.txt").write_text("hello")
    (tmp_path / "dir.pt").mkdir()
    cases = [
        (["convert", str(tmp_path / "missing.npy"), str(out)], "no such file"),
        (["convert", str(tmp_path / "bad.npy"), str(out)], "cannot read"),
        (
            [
                "convert",
                str(tmp_path / "good.npy"),
                str(out),
                "--format",
                "e9m9",
                "--min-size",
                "0",
            ],
            "e9m9",
        ),
        (
            ["convert", str(tmp_path / "good.npy"), str(tmp_path / "no" / "o.pt")],
            "no such directory",
        ),
        (["convert", str(tmp_path / "good.npy"), str(tmp_path / "o.st")], "extension"),
        (["convert", str(tmp_path / "good.npy"), str(tmp_path / "dir.pt")], "is a directory"),
        (["convert", str(tmp_path / "dir.pt"), str(out)], "is a directory"),
        (
            ["convert", str(tmp_path / "good.npy"), str(out), "--format", "nvfp4", "--block", "32"],
            "--block: nvfp4 fixes the block size at 16",
        ),
        (["inspect", str(tmp_path / "x.txt")], "expected"),
        (
            ["convert", str(tmp_path / "missing.safetensors"), str(out), "--to", "float32"],
            "IN: no such file",
        ),
        (
            ["convert", str(tmp_path / "bad.npy"), str(out), "--to", "float32"],
            "IN: the extension decides",
        ),
    ]
    try:
        import torch

        torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")
        (tmp_path / "corrupt.pt").write_bytes(b"\x80\x02garbage" * 8)
        cases += [
            (["convert", str(tmp_path / "module.pt"), str(out)], "state_dict()"),
            (["convert", str(tmp_path / "corrupt.pt"), str(out)], "corrupt"),
        ]
    except ImportError:
        pass
    for args, msg in cases:
        r = run(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.startswith("lowfp: error:") and "Traceback" not in r.stderr
        assert msg in r.stderr, (args, r.stderr)
        assert "weights_only" not in r.stderr and "\x1b" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_version_help_and_choices():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"lowfp {lowfp.__version__}"
    r = run("convert", "--help")
    assert r.returncode == 0 and "stochastic" in r.stdout and "Quantize" in r.stdout
    r = run("convert", "a.npy", "b.pt", "--rounding", "sideways")
    assert r.returncode == 2 and "invalid choice" in r.stderr


def test_torch_commands_without_torch_give_an_install_hint():
    code = (
        "import sys; sys.modules['torch'] = None; from lowfp.cli import main; "
        "sys.exit(main(['experiment', '--steps', '1']))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "pip install torch" in r.stderr, r.stderr
    assert "download.pytorch.org/whl/cpu" in r.stderr and "report:" not in r.stdout


def test_bench_codecs_quick_prints_the_tables():
    r = run("bench", "codecs", "--quick")
    assert r.returncode == 0, r.stderr
    assert "65,536 float32 elements" in r.stdout
    for title in (
        "## Encode f32 → format (codes)",
        "## Decode format → f32",
        "## Stochastic rounding f32 → format",
        "## Bit packing",
        "## 8-bit blockwise",
    ):
        assert title in r.stdout
    assert "| float8_e4m3fn | 1 |" in r.stdout
    assert "[bench codecs] done:" in r.stderr and "Traceback" not in r.stderr
    assert r.stdout.count("SMOKE RUN (--quick)") == 2 and "mean nothing" in r.stdout


def test_bench_optim_quick_through_the_wrapper_script():
    import pathlib

    script = pathlib.Path(__file__).resolve().parent.parent / "benches" / "bench_optim.py"
    r = subprocess.run(
        [sys.executable, str(script), "--quick", "--only", "lowfp AdamW"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    rows = {
        line.split(" | ")[0].lstrip("| "): line.split(" | ")
        for line in r.stdout.splitlines()
        if line.startswith("| lowfp")
    }
    assert set(rows) == {"lowfp AdamW fp32", "lowfp AdamW8bit", "lowfp AdamW4bit", "lowfp AdamWFp8"}
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
