"""Shared fixtures: the format table drives the parametrization of every codec test."""

import numpy as np
import pytest

import lowfp

ml_dtypes = pytest.importorskip("ml_dtypes")

#: lowfp name → ml_dtypes dtype, for every format both define.
ML_DTYPES = {
    f.name: np.dtype(getattr(ml_dtypes, f.name)) if hasattr(ml_dtypes, f.name) else np.dtype(f.name)
    for f in lowfp.formats()
    if hasattr(ml_dtypes, f.name) or f.name in ("float16", "float32")
}

SMALL = [f.name for f in lowfp.formats() if f.bits <= 8]
SHARED_SMALL = [n for n in SMALL if n in ML_DTYPES]


def ml_encode(x: np.ndarray, name: str) -> np.ndarray:
    """ml_dtypes' codes for x (x's own dtype, converted by astype)."""
    dt = ML_DTYPES[name]
    return x.astype(dt).view({1: np.uint8, 2: np.uint16, 4: np.uint32}[dt.itemsize])


@pytest.fixture(params=SHARED_SMALL)
def small_shared(request):
    return request.param


@pytest.fixture(params=[1, 2])
def threads(request):
    old = lowfp.num_threads()
    lowfp.set_num_threads(request.param)
    yield request.param
    lowfp.set_num_threads(old)


@pytest.fixture
def restore_threads():
    """Put the thread count back after a test that changes it."""
    old = lowfp.num_threads()
    yield
    lowfp.set_num_threads(old)


def nvrtc_ptx(source: str, name: str, options) -> str:
    """The PTX of a CUDA source compiled by NVRTC (no GPU needed), or skip without libnvrtc.

    NVRTC is reached through ctypes (the NVIDIA wheels that torch pulls in, or the system's),
    not through the ``cuda.bindings`` package: with that package imported, later
    ``torch.load`` calls in the same process failed on files written by other processes
    ("record size ... does not match expected size", torch 2.15), breaking other tests.
    """
    import ctypes
    import ctypes.util
    import glob
    import site

    names = [ctypes.util.find_library("nvrtc")]
    for d in site.getsitepackages():
        names += sorted(glob.glob(f"{d}/nvidia/*/lib/libnvrtc.so*"))
        names += sorted(glob.glob(f"{d}/nvidia/cuda_nvrtc/lib/libnvrtc.so*"))
    lib = None
    for lib_name in filter(None, names):
        if "builtins" in lib_name:
            continue
        try:
            lib = ctypes.CDLL(lib_name)
            break
        except OSError:
            continue
    if lib is None:
        pytest.skip("libnvrtc not found (no CUDA toolkit or NVIDIA NVRTC wheel)")
    prog = ctypes.c_void_p()
    assert (
        lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None)
        == 0
    )
    opts = [o.encode() for o in options]
    res = lib.nvrtcCompileProgram(prog, len(opts), (ctypes.c_char_p * len(opts))(*opts))
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    try:
        assert res == 0, log.value.decode(errors="replace")
        lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
        ptx = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetPTX(prog, ptx)
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return ptx.value.decode()


def compile_host_driver(out_dir, driver, include_dir):
    """A C++ driver of the CUDA headers built as a shared library with the system compiler
    (``-ffp-contract=off``: no contraction the Rust core does not do) and loaded with ctypes;
    skips without a C++ compiler."""
    import ctypes
    import shutil
    import subprocess
    from pathlib import Path

    cxx = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler (g++, c++ or clang++) on PATH for the CUDA header check")
    out = Path(out_dir) / (Path(driver).stem + ".so")
    cmd = [
        cxx,
        "-O2",
        "-std=c++17",
        "-ffp-contract=off",
        "-shared",
        "-fPIC",
        "-Wall",
        "-Werror",
        f"-I{include_dir}",
        str(driver),
        "-o",
        str(out),
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return ctypes.CDLL(str(out))


def run_steps(opt, ps, steps, start=0):
    """`steps` optimizer steps with seeded standard-normal gradients (step s draws from seed
    s, parameter by parameter, in the parameters' dtype)."""
    import torch

    for s in range(start, start + steps):
        g = torch.Generator().manual_seed(s)
        for p in ps:
            p.grad = torch.randn(p.shape, generator=g).to(p.dtype)
        opt.step()
