"""Host check of the fused optimizer steps of the CUDA path: the tile function the kernels run
(python/lowfp/cuda/kernels/lowfp_optim.cuh), compiled as plain C++ (-ffp-contract=off) and
driven over the same descriptors lowfp.cuda.optim builds for the device, against the Rust core.

The optimizer tests run lowfp.optim for N steps and intercept every call into the Rust core:
a mirror of each tensor (parameter and packed states, copied once before the first step) is
stepped by the C++ driver with the call's own gradients, scalars and streams, and after every
step it must equal what Rust wrote, bit for bit (codes, scales, bases, weights). The mirror
never takes Rust's values, so a difference anywhere would persist and be caught.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import lowfp
from conftest import compile_host_driver, nvrtc_ptx
from lowfp._common import TABLE_ROUNDINGS
from lowfp.cuda import optim as copt
from lowfp.cuda._params import MODES

torch = pytest.importorskip("torch")
import lowfp.optim as lopt  # noqa: E402 - needs torch
import lowfp.optim.adamw as ladamw  # noqa: E402
import lowfp.optim.muon as lmuon  # noqa: E402
import lowfp.optim.sgd as lsgd  # noqa: E402
from lowfp.optim.base import spec_dict  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
KERNELS = ROOT / "python" / "lowfp" / "cuda" / "kernels"
DRIVER = ROOT / "tests" / "cuda_host" / "optim_driver.cpp"
EMULATOR = ROOT / "tests" / "cuda_host" / "optim_kernel_emu.cpp"
P = ctypes.c_void_p
U32, U64, I64 = ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int64
STEPS = 5


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """The optimizer driver compiled once and loaded with ctypes."""
    lib = compile_host_driver(tmp_path_factory.mktemp("cuda_optim_host"), DRIVER, KERNELS)
    lib.lf_host_state_desc_size.restype = U64
    lib.lf_host_tensor_desc_size.restype = U64
    lib.lf_host_step.argtypes = [
        ctypes.c_int,
        P,
        U64,
        U32,
        U32,
        U64,
        ctypes.c_int,
        P,
        I64,
        P,
        I64,
        I64,
    ]
    lib.lf_host_step.restype = U32
    lib.lf_host_check.argtypes = [P, U64, U32, P, U32]
    lib.lf_host_blockwise_logq.argtypes = [
        P,
        U64,
        U32,
        U32,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_float,
        ctypes.c_int,
        U64,
        U64,
        P,
        P,
        P,
    ]
    lib.lf_host_blockwise_logq.restype = ctypes.c_int
    return lib


@pytest.fixture(scope="module")
def emu(tmp_path_factory):
    """lowfp_optim.cu itself compiled as C++ with CUDA built-ins stubbed (one thread per
    block), to run the launch plans lowfp.cuda.optim builds for the GPU."""
    cxx = shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler (g++, c++ or clang++) on PATH for the CUDA header check")
    out = tmp_path_factory.mktemp("cuda_optim_emu") / "lowfp_optim_emu.so"
    cmd = [
        cxx,
        "-O2",
        "-std=c++17",
        "-ffp-contract=off",
        "-shared",
        "-fPIC",
        "-Wall",
        "-Werror",
        "-D__CUDACC__",
        f"-I{KERNELS}",
        str(EMULATOR),
        "-o",
        str(out),
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    lib = ctypes.CDLL(str(out))
    lib.lf_emu_launch.argtypes = [
        U64,
        U64,
        ctypes.c_int,
        P,
        U64,
        U32,
        U32,
        U64,
        ctypes.c_int,
        U32,
        U32,
        U32,
        P,
        P,
        I64,
        P,
        I64,
        I64,
    ]
    lib.lf_emu_check.argtypes = [U64, P, U64, U32, P, U32]
    return lib


def _ptr(a: np.ndarray):
    assert a.flags.c_contiguous
    return a.ctypes.data_as(P)


def test_descriptor_layout_matches_the_header(host):
    assert host.lf_host_state_desc_size() == copt.STATE_DESC.itemsize
    assert host.lf_host_tensor_desc_size() == copt.TENSOR_DESC.itemsize


# ---------------------------------------------------------------- per-block log bases


@pytest.mark.parametrize(
    "codec",
    [
        lowfp.Log(3, zero=False, quantile=0.05),
        lowfp.Log(2, zero=False, quantile=0.05),
        lowfp.Log(4, quantile=0.3),
        lowfp.Log(3, signed=True, quantile=0.5),
    ],
    ids=repr,
)
@pytest.mark.parametrize("block", [128, 48])
def test_quantile_log_blockwise_matches_rust(host, codec, block):
    """Per-block k-th smallest |x|, base (bisection over f32 bits), levels, codes, packing:
    scales, bases and packed codes equal lowfp.quantize_blockwise's."""
    rng = np.random.default_rng(block)
    n = 50_000 + 13  # a short last block
    # Gaussian blocks at scales 2^-20..2^20, so most bases fall strictly inside the clamps
    scale = np.exp2(rng.integers(-20, 20, -(-n // block))).repeat(block)[:n]
    x = (rng.standard_normal(n) * scale).astype(np.float32)
    x[4 * block : 5 * block] *= np.exp2(rng.integers(-30, 30, block)).astype(np.float32)
    x[:block] = 0.0  # an all-zero block (base 1 − 2^-10)
    x[block : 2 * block] = 1.5  # a constant block (v = 1)
    x[2 * block : 3 * block : 2] = 0.0  # half zeros (quantile 0: base 2^-10)
    x[3 * block : 4 * block] *= np.float32(1e-30)  # subnormals
    for rounding in TABLE_ROUNDINGS:
        q = lowfp.quantize_blockwise(
            x, codec, block_size=block, scale="absmax", rounding=rounding, seed=7, stream=3
        )
        nb = -(-n // block)
        scales, alphas = np.empty(nb, np.float32), np.empty(nb, np.float32)
        packed = np.empty(q.codes.size, np.uint8)
        bad = host.lf_host_blockwise_logq(
            _ptr(x),
            n,
            block,
            codec.bits,
            codec.signed,
            codec.zero,
            codec.quantile,
            MODES[rounding],
            7,
            3,
            _ptr(scales),
            _ptr(alphas),
            _ptr(packed),
        )
        assert bad == 0
        np.testing.assert_array_equal(scales.view(np.uint32), q._scales_f32().view(np.uint32))
        np.testing.assert_array_equal(
            alphas.view(np.uint32), np.asarray(q.alphas, np.float32).view(np.uint32)
        )
        np.testing.assert_array_equal(packed, q.codes, err_msg=f"{codec!r} {rounding}")
    # the bases are not all clamped: the bisection itself is exercised
    inner = alphas[(alphas > 2**-10) & (alphas < 1 - 2**-10)]
    assert inner.size > nb // 2


# ---------------------------------------------------------------- the optimizer steps


class _Mirror:
    """Wraps the Rust core: every optimizer call is replayed on mirrored arrays by the C++
    driver and compared with Rust's result afterwards."""

    def __init__(self, lib, core, emu=None):
        self.lib, self.core, self.emu = lib, core, emu
        self.mirrors = {}  # address of the live parameter (or Muon state) → mirrored arrays
        self.calls = 0
        self.plans = []  # the kept GroupPlan of each emulated launch

    @staticmethod
    def _states(op, entries):
        cols = {"adamw": [2, 3], "adamw_amsgrad": [2, 3, 8], "sgd": [2]}[op]
        return [e[k] for k in cols for e in entries]

    def __getattr__(self, name):
        return getattr(self.core, name)

    def _mirror_state(self, st):
        if isinstance(st, tuple):
            spec, packed, scales, alphas = st
            return (spec_dict(spec), packed.copy(), scales.copy(), alphas.copy())
        return st.copy()

    def _arrays(self, st):
        return list(st[1:]) if isinstance(st, tuple) else [st]

    def _compare(self, mine, theirs, what):
        for a, b in zip(
            self._arrays(mine) if isinstance(mine, tuple) else [mine],
            self._arrays(theirs) if isinstance(theirs, tuple) else [theirs],
        ):
            a, b = np.asarray(a), np.asarray(b)
            view = {1: np.uint8, 2: np.uint16, 4: np.uint32}[a.itemsize]
            if not np.array_equal(a.view(view), b.view(view)):
                i = int(np.flatnonzero(a.view(view) != b.view(view))[0])
                pytest.fail(
                    f"call {self.calls}: {what} differs at {i}: host {a[i]!r} rust {b[i]!r}"
                )

    def _host_step(self, op, descs, block, seed, stochastic, plan=None):
        """Step mirrored descriptors: the host driver, or the emulated kernel launch (of
        `plan` when given: the one the CUDA path builds over its kept GroupPlan)."""
        if self.emu is None:
            return self.lib.lf_host_step(
                copt.OPS[op],
                _ptr(descs),
                len(descs),
                block,
                copt.tile_size(block),
                seed,
                copt._param_mode(stochastic),
                None,
                0,
                None,
                0,
                0,
            )
        if plan is None:
            plan = copt.launch_plan(op, descs, block, seed, stochastic)
        bad = np.zeros(1, np.uint32)
        assert plan["smem"] <= 48 * 1024  # the default dynamic shared memory limit
        rc = self.emu.lf_emu_launch(
            plan["grid"],
            plan["smem"],
            plan["args"][0],
            _ptr(plan["meta"]),
            *plan["args"][1:],
            _ptr(bad),
            None,
            0,
            None,
            0,
            0,
        )
        assert rc == 0
        return int(bad[0])

    def _group(self, op, entries, block, seed, stochastic, states_of, with_states, offsets=None):
        mirrored = []
        for e in entries:
            key = e[0].ctypes.data
            if key not in self.mirrors:
                self.mirrors[key] = (e[0].copy(), [self._mirror_state(s) for s in states_of(e)])
            p, sts = self.mirrors[key]
            mirrored.append(with_states(e, p, e[1].copy(), sts))
        addr = lambda a, arg: a.ctypes.data  # noqa: E731
        lv_keep = []

        def levels(lv):
            lv_keep.append(lv)
            return lv.ctypes.data

        build = {
            "adamw": copt.adamw_descs,
            "adamw_amsgrad": copt.adamw_amsgrad_descs,
            "sgd": copt.sgd_descs,
        }[op]
        descs = build(mirrored, block, addr, levels, offsets)
        plan = None
        if self.emu is not None:  # the launch the CUDA path makes (kept group plan)
            plan = copt.prepare(op, mirrored, block, seed, stochastic, addr, levels, offsets)
            key = (op, block, *map(id, self._states(op, mirrored)))
            self.plans.append(copt._GROUP_PLANS.get(key))
        bad = self._host_step(op, descs, block, seed, stochastic, plan)
        assert bad == 0
        kw = {} if offsets is None else {"offsets": offsets}
        getattr(self.core, f"{op}_step_group")(entries, block, seed, stochastic, **kw)
        self.calls += 1
        for e in entries:
            p, sts = self.mirrors[e[0].ctypes.data]
            self._compare(p, e[0], "param")
            for mine, theirs in zip(sts, states_of(e)):
                self._compare(mine, theirs, "state")

    def adamw_step_group(self, entries, block, seed, stochastic, offsets=None):
        self._group(
            "adamw",
            entries,
            block,
            seed,
            stochastic,
            lambda e: [e[2], e[3]],
            lambda e, p, g, s: (p, g, s[0], s[1], *e[4:]),
            offsets,
        )

    def adamw_amsgrad_step_group(self, entries, block, seed, stochastic, offsets=None):
        self._group(
            "adamw_amsgrad",
            entries,
            block,
            seed,
            stochastic,
            lambda e: [e[2], e[3], e[8]],
            lambda e, p, g, s: (p, g, s[0], s[1], *e[4:8], s[2], e[9]),
            offsets,
        )

    def sgd_step_group(self, entries, block, seed, stochastic, offsets=None):
        self._group(
            "sgd",
            entries,
            block,
            seed,
            stochastic,
            lambda e: [e[2]],
            lambda e, p, g, s: (p, g, s[0], *e[3:]),
            offsets,
        )

    def muon_momentum(self, grad, buf, beta, nesterov, block, seed, stream, offset=0):
        key = buf[1].ctypes.data if isinstance(buf, tuple) else buf.ctypes.data
        if key not in self.mirrors:
            self.mirrors[key] = self._mirror_state(buf)
        mine, out = self.mirrors[key], grad.copy()
        addr = lambda a, arg: a.ctypes.data  # noqa: E731
        lv_keep = []

        def levels(lv):
            lv_keep.append(lv)
            return lv.ctypes.data

        descs = copt.muon_descs(out, mine, beta, nesterov, block, stream, addr, levels, offset)
        bad = self._host_step("muon", descs, block, seed, "nearest")
        assert bad == 0
        self.core.muon_momentum(grad, buf, beta, nesterov, block, seed, stream, offset)
        self.calls += 1
        self._compare(out, grad, "direction")
        self._compare(mine, buf, "momentum")


@pytest.fixture
def mirror(host, monkeypatch):
    m = _Mirror(host, lowfp._core)
    for mod in (ladamw, lsgd, lmuon):
        monkeypatch.setattr(mod, "_core", m)
    return m


@pytest.fixture
def kernel_mirror(host, emu, monkeypatch):
    """The mirror stepped by the emulated kernel launch instead of the host driver."""
    m = _Mirror(host, lowfp._core, emu)
    for mod in (ladamw, lsgd, lmuon):
        monkeypatch.setattr(mod, "_core", m)
    return m


def _params(dtype=torch.float32):
    """Sizes not multiples of any block; one too small for packed states (float32 states)."""
    torch.manual_seed(0)
    shapes = [(37, 141), (3001,), (200,)]
    return [torch.nn.Parameter((torch.randn(s) * 0.5).to(dtype)) for s in shapes]


def _run(opt, params, steps=STEPS, lr_schedule=True):
    g = torch.Generator().manual_seed(1)
    for t in range(steps):
        for p in params:
            p.grad = (torch.randn(p.shape, generator=g) * 10.0 ** (t % 3 - 1)).to(p.dtype)
        opt.step()
        if lr_schedule:  # a scheduler changes lr between steps
            for group in opt.param_groups:
                group["lr"] *= 0.7


PRESETS = {
    "fp32": lambda ps, **kw: lopt.AdamW(ps, **kw),
    "AdamW8bit": lambda ps, **kw: lopt.AdamW8bit(ps, **kw),
    "AdamW4bit": lambda ps, **kw: lopt.AdamW4bit(ps, **kw),
    "AdamWFp8": lambda ps, **kw: lopt.AdamWFp8(ps, **kw),
    "SOLO3": lambda ps, **kw: lopt.SOLO(ps, bits=3, **kw),
    "SOLO2": lambda ps, **kw: lopt.SOLO(ps, bits=2, **kw),
    "P3109": lambda ps, **kw: lopt.AdamW(
        ps, exp_avg=lowfp.format("p3109_k8p4se"), exp_avg_sq=lowfp.format("p3109_k8p3ue"), **kw
    ),
}


def _param_roundings(rounding):
    """The parameter roundings run with state rounding `rounding`: nearest, and the
    stochastic mode of the states (stochastic16 with stochastic16 states)."""
    return ("stochastic16" if rounding == "stochastic16" else "stochastic", "nearest")


@pytest.mark.parametrize("rounding", TABLE_ROUNDINGS)
@pytest.mark.parametrize("preset", list(PRESETS))
def test_adamw_steps_match_rust(mirror, preset, rounding):
    """N AdamW steps: float32 and bfloat16 parameters (two param groups, one with L2 Adam),
    stochastic (32- or 16-bit words) and nearest parameter rounding."""
    f32, bf16 = _params(), _params(torch.bfloat16)
    groups = [{"params": f32}, {"params": bf16, "weight_decay": 0.1, "decoupled": False}]
    for param_rounding in _param_roundings(rounding):
        opt = PRESETS[preset](
            groups,
            lr=1e-2,
            rounding=rounding,
            min_quant_size=1000,
            seed=123,
            param_rounding=param_rounding,
        )
        mirror.mirrors.clear()  # a fresh optimizer: mirror its new states
        _run(opt, f32 + bf16)
    assert mirror.calls == 2 * 2 * STEPS


@pytest.mark.parametrize("launch", ["mirror", "kernel_mirror"])
@pytest.mark.parametrize("rounding", TABLE_ROUNDINGS)
@pytest.mark.parametrize("preset", ["fp32", "AdamW8bit", "AdamW4bit", "SOLO3"])
def test_adamw_amsgrad_steps_match_rust(request, launch, preset, rounding):
    """AMSGrad (a third state, the running maximum of v, with v's codec): N steps of the tile
    function (host driver, then the emulated kernel launch) equal `adamw_amsgrad_step_group`
    of the Rust core, float32 and bfloat16 parameters, both parameter roundings."""
    m = request.getfixturevalue(launch)
    f32, bf16 = _params(), _params(torch.bfloat16)
    groups = [{"params": f32}, {"params": bf16, "weight_decay": 0.1, "decoupled": False}]
    for param_rounding in _param_roundings(rounding):
        opt = PRESETS[preset](
            groups,
            lr=1e-2,
            rounding=rounding,
            min_quant_size=1000,
            seed=321,
            param_rounding=param_rounding,
            amsgrad=True,
        )
        m.mirrors.clear()
        _run(opt, f32 + bf16)
        st = opt.state[f32[0]]
        assert any(k.startswith("max_exp_avg_sq") for k in st)
    assert m.calls == 2 * 2 * STEPS


@pytest.mark.parametrize("launch", ["mirror", "kernel_mirror"])
def test_p3109_state_formats_match_rust(request, launch):
    """States in P3109 formats (infinities without IEEE NaNs: the signed one's largest finite
    code is 0x7E, the unsigned one's 0xFD), saturating like every ExMy state: N steps equal
    Rust's, with and without AMSGrad."""
    m = request.getfixturevalue(launch)
    ps = _params() + _params(torch.bfloat16)
    for amsgrad in (False, True):
        m.mirrors.clear()
        opt = lopt.AdamW(
            ps,
            lr=1e-2,
            exp_avg=lowfp.format("p3109_k8p4se"),
            exp_avg_sq=lowfp.format("p3109_k8p3ue"),
            block_size=64,
            min_quant_size=1000,
            rounding="stochastic",
            amsgrad=amsgrad,
        )
        _run(opt, ps)
    assert m.calls == 2 * STEPS


def test_adamw_float16_parameters_match_rust(mirror):
    ps = _params(torch.float16)
    opt = lopt.AdamW8bit(ps, lr=1e-3, min_quant_size=0, rounding="stochastic")
    _run(opt, ps)
    assert mirror.calls == STEPS


@pytest.mark.parametrize("nesterov,dampening", [(False, 0.0), (True, 0.0), (False, 0.3)])
def test_sgd_8bit_momentum_matches_rust(mirror, nesterov, dampening):
    ps = _params() + _params(torch.bfloat16)
    opt = lopt.SGD(
        ps,
        lr=0.05,
        momentum=0.9,
        dampening=dampening,
        weight_decay=1e-3,
        nesterov=nesterov,
        momentum_codec=lowfp.Dynamic(8),
        block_size=256,
        rounding="stochastic",
        min_quant_size=1000,
    )
    _run(opt, ps)
    assert mirror.calls == STEPS


@pytest.mark.parametrize("rounding", TABLE_ROUNDINGS)
def test_muon_8bit_momentum_matches_rust(mirror, rounding):
    torch.manual_seed(2)
    mats = [torch.nn.Parameter(torch.randn(s)) for s in [(64, 97), (33, 40)]]
    opt = lopt.Muon8bit(mats, lr=0.02, rounding=rounding, block_size=256)
    _run(opt, mats, lr_schedule=False)
    assert mirror.calls == 2 * STEPS


@pytest.mark.parametrize(
    "preset,rounding",
    [
        ("fp32", "nearest"),
        ("AdamW8bit", "stochastic"),
        ("AdamWFp8", "nearest"),
        ("SOLO3", "stochastic"),
    ],
)
def test_emulated_kernel_launch_matches_rust(kernel_mirror, preset, rounding):
    """The launch plan (tile prefix, descriptors, shared-memory layout and size) run through
    lf_optim_step itself, one thread per block: N steps equal Rust's, for two param groups of
    float32 and bfloat16 tensors; also SGD and Muon momentum."""
    f32, bf16 = _params(), _params(torch.bfloat16)
    groups = [{"params": f32}, {"params": bf16}]
    opt = PRESETS[preset](groups, lr=1e-2, rounding=rounding, min_quant_size=1000, seed=5)
    _run(opt, f32 + bf16)
    kernel_mirror.mirrors.clear()
    ps = _params()
    _run(
        lopt.SGD(
            ps,
            lr=0.05,
            momentum=0.9,
            momentum_codec=lowfp.Dynamic(8),
            block_size=256,
            rounding=rounding,
            min_quant_size=1000,
        ),
        ps,
    )
    kernel_mirror.mirrors.clear()
    mats = [torch.nn.Parameter(torch.randn(64, 97))]
    _run(lopt.Muon8bit(mats, lr=0.02, rounding=rounding, block_size=256), mats, lr_schedule=False)
    assert kernel_mirror.calls == 2 * STEPS + STEPS + STEPS


def test_emulated_launch_of_a_1000_tensor_group_matches_rust(kernel_mirror):
    """One launch for a group of 1000 small tensors (float32 states below min_quant_size,
    packed above) and one large one: the tile plan (prefix over 1000+ tensors, binary search
    per tile) run through lf_optim_step equals Rust over 3 steps, float32 and bfloat16."""
    rng = np.random.default_rng(8)
    for dtype in (torch.float32, torch.bfloat16):
        kernel_mirror.mirrors.clear()
        torch.manual_seed(3)
        sizes = [int(n) for n in rng.integers(1, 400, 1000)] + [70_001]
        ps = [torch.nn.Parameter(torch.randn(n).to(dtype)) for n in sizes]
        opt = lopt.AdamW8bit(ps, lr=1e-2, min_quant_size=200, rounding="stochastic", seed=9)
        _run(opt, ps, steps=3)
        # the group's plan was built by its first step and kept: steps 2 and 3 ran it
        plans = kernel_mirror.plans[-3:]
        assert plans[0] is not None and all(gp is plans[0] for gp in plans)
    assert kernel_mirror.calls == 6


def _packed_state(codec, n, block, rounding, rng):
    """(spec, packed, scales, alphas) of random values, as lowfp.optim builds states."""
    spec = {
        "bits": 0,
        "signed": True,
        "zero": True,
        "alpha": 0.5,
        "quantile": 0.0,
        **codec.spec(),
        "block": block,
        "scale": "absmax",
        "rounding": rounding,
    }
    packed_len, nb, na, _ = lowfp._core.blockwise_layout(spec, n)
    arrays = (np.empty(packed_len, np.uint8), np.empty(nb, np.float32), np.empty(na, np.float32))
    x = np.abs(rng.standard_normal(n)).astype(np.float32) * 1e-3
    lowfp._core.blockwise_quantize(x, spec, *arrays, 0, 0)
    return (spec, *arrays)


def test_shard_offsets_key_stochastic_rounding_like_rust(mirror):
    """Entries of an FSDP shard (non-zero element offsets) called directly: states and
    bfloat16 weights, stochastically rounded at offset + index, equal Rust's."""
    rng = np.random.default_rng(4)
    block = 128
    entries = []
    for i, kind in enumerate(("float32", "bfloat16")):
        n = 3000 + 37 * i
        w = rng.standard_normal(n).astype(np.float32)
        g = rng.standard_normal(n).astype(np.float32)
        if kind == "bfloat16":
            w, g = ((a.view(np.uint32) >> 16).astype(np.uint16) for a in (w, g))
        m = _packed_state(lowfp.Linear(3), n, block, "stochastic", rng)
        v = _packed_state(lowfp.Log(3, zero=False, quantile=0.05), n, block, "stochastic", rng)
        scalars = (0.999, 0.0, 0.1, 0.999, 0.001, 1e-8, 1e-2, 0.03)
        entries.append(
            (w, g, m, v, scalars, (7 << 32 | 4 * i, 7 << 32 | 4 * i | 1), 7 << 32 | 4 * i | 2, kind)
        )
    for _ in range(3):
        mirror.adamw_step_group(entries, block, 11, "stochastic", offsets=[5 * block * 1000, 384])
    w = entries[0][0]
    b = _packed_state(lowfp.Dynamic(8), w.size, block, "stochastic", rng)
    sgd = [(w, entries[0][1], b, (0.1, 0.9, 1.0, 0.0), False, False, 99, 98, "float32")]
    mirror.mirrors.clear()  # w now steps with another optimizer's state
    mirror.sgd_step_group(sgd, block, 11, "stochastic", offsets=[block * 77])
    mirror.muon_momentum(entries[0][1].copy(), b, 0.95, True, block, 11, 5, block * 3)
    assert mirror.calls == 5


def test_entry_errors_name_the_argument():
    p, g = np.zeros(10, np.float32), np.zeros(10, np.float32)
    addr, lv = (lambda a, arg: 0), (lambda a: 0)
    with pytest.raises(TypeError, match="param: expected float32, bfloat16 or float16"):
        copt.adamw_descs([(p, g, p, p, (0,) * 8, (0, 0), 0, "int8")], 256, addr, lv)
    with pytest.raises(ValueError, match="grad: expected 10 elements, got 9"):
        copt.adamw_descs([(p, g[:9], p, p, (0,) * 8, (0, 0), 0, "float32")], 256, addr, lv)
    spec = {
        "codec": "dynamic",
        "bits": 8,
        "signed": True,
        "block": 128,
        "scale": "absmax",
        "rounding": "nearest",
    }
    st = (spec, np.zeros(10, np.uint8), np.zeros(1, np.float32), np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="exp_avg: block size 128 differs from the step's 256"):
        copt.adamw_descs([(p, g, st, p, (0,) * 8, (0, 0), 0, "float32")], 256, addr, lv)
    with pytest.raises(
        ValueError, match=r"rounding: expected one of \('nearest', 'stochastic', 'stochastic16'\)"
    ):
        copt.adamw_descs(
            [
                (
                    p,
                    g,
                    (dict(spec, block=256, rounding="up"), *st[1:]),
                    p,
                    (0,) * 8,
                    (0, 0),
                    0,
                    "float32",
                )
            ],
            256,
            addr,
            lv,
        )


# ---------------------------------------------------------------- the CUDA source itself


def test_optim_kernels_compile_with_nvrtc_without_fma():
    """lowfp_optim.cu compiles with NVRTC (no GPU needed) under the loader's options; the PTX
    has no fused multiply-add and only IEEE divisions and square roots."""
    import re

    from lowfp.cuda import _loader

    text = nvrtc_ptx(
        copt.source(), "lowfp_optim.cu", (*_loader.OPTIONS, "--gpu-architecture=compute_80")
    )
    assert ".entry lf_optim_step(" in text and ".entry lf_optim_check(" in text
    assert "fma." not in text
    ops = set(re.findall(r"\b(?:div|sqrt)\.\w+\.f(?:32|64)", text))
    assert ops and all(".rn." in op for op in ops), ops


def test_cuda_entry_points_without_cupy_or_with_host_arrays(monkeypatch):
    """Host arrays in a CUDA step name the argument; without CuPy the error says what to
    install."""
    with pytest.raises(TypeError, match="exp_avg: expected a CUDA torch tensor or CuPy array"):
        copt._cuda_addr(None)(np.zeros(3, np.float32), "exp_avg")
    monkeypatch.setitem(__import__("sys").modules, "cupy", None)  # import cupy → ImportError
    p = np.zeros(4, np.float32)
    for call in (
        lambda: copt.adamw_step_group(
            [(p, p, p, p, (0,) * 8, (0, 0), 0, "float32")], 256, 0, "stochastic"
        ),
        lambda: copt.sgd_step_group(
            [(p, p, p, (0,) * 4, False, True, 0, 0, "float32")], 256, 0, "stochastic"
        ),
        lambda: copt.muon_momentum(p, p, 0.9, True, 256, 0, 0),
    ):
        with pytest.raises(ImportError, match=r"lowfp\[cuda\]"):
            call()


# ---------------------------------------------------------------- device skip


class _FakeEvent:
    """A CUDA event that completes `lag` steps after it was recorded (the host runs ahead)."""

    clock, lag = 0, 0

    def record(self, stream=None):
        self.at = _FakeEvent.clock

    def query(self):
        return _FakeEvent.clock - self.at >= _FakeEvent.lag

    def synchronize(self):
        pass  # the emulated device has finished: waiting is instant


class _FakeTorch:
    """torch for DeviceSkip on the host: CPU tensors, pinned memory as plain memory, events
    from _FakeEvent."""

    int32 = torch.int32
    cuda = type(
        "cuda", (), {"Event": _FakeEvent, "current_stream": staticmethod(lambda device: None)}
    )

    @staticmethod
    def zeros(*shape, dtype, device):
        return torch.zeros(*shape, dtype=dtype)

    @staticmethod
    def empty(*shape, dtype, pin_memory=False):
        return torch.empty(*shape, dtype=dtype)


class _Entry:
    def __init__(self, p, g, kind):
        self.p, self.views, self.t = p, (None, g, kind, None), 0
        self.st = {"step": torch.zeros(())}


@pytest.mark.parametrize("op", ["adamw", "sgd", "adamw_amsgrad"])
@pytest.mark.parametrize("lag,steps", [(0, 6), (2, 12), (1000, 34)])
def test_device_skip_protocol_matches_rust_skipping_on_the_host(host, emu, op, lag, steps):
    """The device skip end to end on the host: DeviceSkip (ring bits, pending masks, scalar
    table, read-back with the host `lag` steps ahead; lag 1000 uses up the 30 bits and makes
    the host wait) with lf_optim_check and lf_optim_step emulated, against the Rust core
    stepping only the finite steps with the true step numbers: parameters and packed states
    equal after every step, and the read-back corrects the step counters and counts the skips.
    """
    _FakeEvent.clock, _FakeEvent.lag = 0, lag
    rng = np.random.default_rng(11)
    block, seed = 128, 21
    ds = copt.DeviceSkip(type("dev", (), {"type": "cuda", "index": 0})(), torch=_FakeTorch)

    def check(descs, cp):  # lf_optim_check, emulated, into the CPU word
        plan = copt.check_plan(descs)
        emu.lf_emu_check(
            plan["grid"], _ptr(plan["meta"]), len(descs), plan["tile"], ds.word.data_ptr(), ds.bit
        )

    ds._launch_check = check
    kinds = ("float32", "bfloat16")
    rust, dev, entries = [], [], []
    for i, kind in enumerate(kinds):
        n = 2000 + 701 * i
        w = rng.standard_normal(n).astype(np.float32)
        if kind == "bfloat16":
            w = (w.view(np.uint32) >> 16).astype(np.uint16)
        codecs = {
            "adamw": (lowfp.Linear(8), lowfp.Log(3, zero=False, quantile=0.05)),
            "adamw_amsgrad": (
                lowfp.Linear(8),
                lowfp.Log(3, zero=False, quantile=0.05),
                lowfp.Log(3, zero=False, quantile=0.05),
            ),
            "sgd": (lowfp.Dynamic(8),),
        }[op]
        sts = [_packed_state(c, n, block, "stochastic", rng) for c in codecs]
        rust.append([w, sts])
        dev.append([w.copy(), [(st[0], *(a.copy() for a in st[1:])) for st in sts]])
        entries.append(_Entry(i, None, kind))
    nan_steps = {3, 4, 7, 8, 9, 20, 21, 30}
    b1, b2, lr = 0.9, 0.99, 1e-2

    def scalars_at(t):
        return (1 - lr * 0.01, 0.0, 1 - b1, b2, 1 - b2, 1e-8, lr / (1 - b1**t), (1 - b2**t) ** 0.5)

    t_true = 0
    for s in range(1, steps + 1):
        grads = []
        for (w, _), kind in zip(rust, kinds):
            g = rng.standard_normal(w.size).astype(np.float32)
            if kind == "bfloat16":
                g = (g.view(np.uint32) >> 16).astype(np.uint16)
            grads.append(g)
        if s in nan_steps:
            grads[s % 2][s * 7 % grads[s % 2].size] = 0x7FC0 if s % 2 else np.float32(np.inf)
        for e, g in zip(entries, grads):
            e.views = (
                None,
                torch.from_numpy(g.view(np.int16) if g.dtype == np.uint16 else g),
                e.views[2],
                None,
            )
        ds.begin(entries)  # reads back what completed, opens the step, launches the check
        for e in entries:
            if e.p in ds.dirty:
                ds.dirty.discard(e.p)
                e.t = int(e.st["step"])
            e.st["step"] += 1  # the host counts the step before it knows
            e.t += 1
        items = []
        for i, ((w, sts), e, g) in enumerate(zip(dev, entries, grads)):
            stream = (e.t << 32) | (i << 2)
            if op != "sgd":
                items.append(
                    (
                        w,
                        g,
                        sts[0],
                        sts[1],
                        scalars_at(e.t),
                        (stream, stream | 1),
                        stream | 2,
                        kinds[i],
                    )
                    + ((sts[2], stream | 3) if len(sts) > 2 else ())
                )
            else:
                items.append(
                    (
                        w,
                        g,
                        sts[0],
                        (0.05, 0.9, 1.0, 1e-3),
                        True,
                        e.t == 1,
                        stream,
                        stream | 2,
                        kinds[i],
                    )
                )
        addr = lambda a, arg: a.ctypes.data  # noqa: E731
        build = {
            "adamw": copt.adamw_descs,
            "adamw_amsgrad": copt.adamw_amsgrad_descs,
            "sgd": copt.sgd_descs,
        }[op]
        descs = build(items, block, addr, lambda lv: lv.ctypes.data)
        ctx = ds.context(
            [e.p for e in entries], [e.t for e in entries], scalars_at if op != "sgd" else None
        )
        descs["pending"] = ctx.pending
        plan = copt.launch_plan(op, descs, block, seed, "stochastic", ctx.tab)
        bad = np.zeros(1, np.uint32)
        tab_ptr = (plan["meta"].ctypes.data + plan["tab_offset"]) if ctx.tab is not None else None
        ntab = 0 if ctx.tab is None else len(ctx.tab)
        assert (
            emu.lf_emu_launch(
                plan["grid"],
                plan["smem"],
                plan["args"][0],
                _ptr(plan["meta"]),
                *plan["args"][1:],
                _ptr(bad),
                ds.word.data_ptr(),
                ctx.bit,
                tab_ptr,
                ctx.t0,
                ntab,
            )
            == 0
        )
        assert bad[0] == 0
        ds.end(entries)
        _FakeEvent.clock += 1
        if s not in nan_steps:  # the reference: Rust steps the finite steps only
            t_true += 1
            ref = []
            for i, ((w, sts), g) in enumerate(zip(rust, grads)):
                stream = (t_true << 32) | (i << 2)
                if op != "sgd":
                    ref.append(
                        (
                            w,
                            g,
                            sts[0],
                            sts[1],
                            scalars_at(t_true),
                            (stream, stream | 1),
                            stream | 2,
                            kinds[i],
                        )
                        + ((sts[2], stream | 3) if len(sts) > 2 else ())
                    )
                else:
                    ref.append(
                        (
                            w,
                            g,
                            sts[0],
                            (0.05, 0.9, 1.0, 1e-3),
                            True,
                            t_true == 1,
                            stream,
                            stream | 2,
                            kinds[i],
                        )
                    )
            getattr(lowfp._core, f"{op}_step_group")(ref, block, seed, "stochastic")
        for (wr, sr), (wd, sd) in zip(rust, dev):
            np.testing.assert_array_equal(wd, wr, err_msg=f"step {s} param")
            for a, b in zip(sr, sd):
                for x, y in zip(a[1:], b[1:]):
                    np.testing.assert_array_equal(
                        y.view(np.uint8), x.view(np.uint8), err_msg=f"step {s} state"
                    )
    ds.resolve(block=True)
    assert ds.skipped == len(nan_steps & set(range(1, steps + 1)))
    assert not ds.pending and not ds.masks
    assert [int(e.st["step"]) for e in entries] == [t_true] * len(entries)


def test_descriptor_cache_follows_the_state_objects():
    """A state's checked addresses are cached per object: a new state (even one reusing a dead
    state's id) gets its own addresses and its own checks."""
    spec = {
        "codec": "dynamic",
        "bits": 8,
        "signed": True,
        "block": 128,
        "scale": "absmax",
        "rounding": "nearest",
    }
    p = np.zeros(1000, np.float32)
    addr, lv = (lambda a, arg: a.ctypes.data), (lambda a: 0)
    for _ in range(20):  # ids of dead tuples are reused: the cache must notice
        st = (spec, np.zeros(1000, np.uint8), np.zeros(8, np.float32), np.zeros(0, np.float32))
        d = copt.sgd_descs(
            [(p, p, st, (0.1,) * 4, False, True, 1 << 32, 1 << 32 | 2, "float32")], 128, addr, lv
        )
        assert d["st"][0, 0]["data"] == st[1].ctypes.data
        assert d["st"][0, 0]["scales"] == st[2].ctypes.data
        del st
    bad = (spec, np.zeros(999, np.uint8), np.zeros(8, np.float32), np.zeros(0, np.float32))
    with pytest.raises(ValueError, match="momentum_buffer: expected 1000 elements, got 999"):
        copt.sgd_descs([(p, p, bad, (0.1,) * 4, False, True, 0, 0, "float32")], 128, addr, lv)


def test_group_plan_is_kept_until_the_group_changes():
    """The tile plan and state columns of a group are built once and kept while its states are
    the same objects with the same sizes: a replaced state, a resized parameter (which is then
    named), another block size rebuild it; every launch equals one built from scratch."""
    spec = {
        "codec": "dynamic",
        "bits": 8,
        "signed": True,
        "block": 128,
        "scale": "absmax",
        "rounding": "nearest",
    }
    addr, lv = (lambda a, arg: a.ctypes.data), (lambda a: 0)
    rng = np.random.default_rng(4)
    sizes = [int(n) for n in rng.integers(1, 3000, 1000)]

    def state(n, block=128):
        return (
            dict(spec, block=block),
            np.zeros(-(-n // 1), np.uint8),
            np.zeros(-(-n // block), np.float32),
            np.zeros(0, np.float32),
        )

    ps = [np.zeros(n, np.float32) for n in sizes]
    ms, vs = [state(n) for n in sizes], [np.zeros(n, np.float32) for n in sizes]

    def entries(t, ps=ps, ms=ms, vs=vs):
        sc = (0.99, 0.0, 0.1, 0.999, 0.001, 1e-8, 0.01 / t, 0.5)
        return [
            (
                p,
                p,
                m,
                v,
                sc,
                ((t << 32) | i << 2, (t << 32) | i << 2 | 1),
                (t << 32) | i << 2 | 2,
                "float32",
            )
            for i, (p, m, v) in enumerate(zip(ps, ms, vs))
        ]

    def fresh(es, block=128):  # the launch built from scratch, nothing kept
        return copt.launch_plan(
            "adamw", copt.adamw_descs(es, block, addr, lv), block, 3, "stochastic"
        )

    def same(a, b):
        assert a["grid"] == b["grid"] and a["smem"] == b["smem"] and a["args"] == b["args"]
        np.testing.assert_array_equal(a["meta"], b["meta"])

    def key(ms=ms, vs=vs, block=128):
        return ("adamw", block, *map(id, ms), *map(id, vs))

    plans = []
    for t in (1, 2, 3):
        es = entries(t)
        got = copt.prepare("adamw", es, 128, 3, "stochastic", addr, lv)
        plans.append(copt._GROUP_PLANS[key()])
        same(got, fresh(es))
    assert plans[1] is plans[0] and plans[2] is plans[0]
    # a replaced state: rebuilt, with the new state's addresses
    ms2 = list(ms)
    ms2[500] = state(sizes[500])
    es = entries(4, ms=ms2)
    got = copt.prepare("adamw", es, 128, 3, "stochastic", addr, lv)
    assert copt._GROUP_PLANS[key(ms=ms2)] is not plans[0]
    same(got, fresh(es))
    d = np.frombuffer(got["meta"][8 * 1001 :].tobytes(), copt.TENSOR_DESC)
    assert d["st"][500, 0]["data"] == ms2[500][1].ctypes.data
    # a resized parameter: rebuilt, so its states are checked again and the mismatch named
    ps2 = list(ps)
    ps2[7] = np.zeros(sizes[7] + 1, np.float32)
    with pytest.raises(ValueError, match="exp_avg: expected"):
        copt.prepare("adamw", entries(5, ps=ps2), 128, 3, "stochastic", addr, lv)
    # another block size: its own plan (here the states' block sizes do not match: named)
    with pytest.raises(ValueError, match="block size 128 differs from the step's 256"):
        copt.prepare("adamw", entries(6), 256, 3, "stochastic", addr, lv)
