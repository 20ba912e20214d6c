"""GPU kernels vs the Rust core, bit for bit (needs CuPy and a CUDA device; skipped otherwise).

Same inputs, seeds and options on both sides: every float16 and bfloat16 bit pattern and 4M
random float32 values for every format × rounding mode × overflow policy, decode of every
code, packing, table codecs and blockwise quantize/dequantize, for CuPy arrays and CUDA torch
tensors (zero-copy, on torch's current stream).
"""

from __future__ import annotations

import numpy as np
import pytest

import lowfp
from lowfp._common import STOCHASTIC, TABLE_ROUNDINGS
from lowfp.codec import ROUNDINGS

ml_dtypes = pytest.importorskip("ml_dtypes")


def _why_not() -> str:
    """Why these tests cannot run here ("" when they can). The module is collected either
    way, so that scripts/gpu_check.sh --dry-run sees every test id on a machine without a
    GPU (each one then skips)."""
    try:
        import cupy  # noqa: F401
    except ImportError:
        return "CuPy is not installed (pip install lowfp[cuda])"
    if not __import__("lowfp.cuda", fromlist=["available"]).available():
        return "no CUDA device visible to CuPy"
    return ""


_WHY_NOT = _why_not()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(bool(_WHY_NOT), reason=_WHY_NOT)]
if not _WHY_NOT:
    import cupy as cp

from test_cuda_host import BLOCKWISE, FORMATS, TABLES  # noqa: E402  (shared parametrization)

RNG = np.random.default_rng(2024)
F32 = np.concatenate(
    [
        RNG.integers(0, 2**32, 2_000_000, dtype=np.uint64).astype(np.uint32).view(np.float32),
        (np.exp2(RNG.uniform(-150, 128, 2_000_000)) * RNG.choice([-1.0, 1.0], 2_000_000)).astype(
            np.float32
        ),
    ]
)
F16 = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
BF16_BITS = np.arange(1 << 16, dtype=np.uint16)
KEY = dict(seed=0xDEADBEEF, stream=5, offset=31)


def _torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("name", FORMATS)
def test_encode_exhaustive_16bit_and_random_f32(name):
    f = lowfp.format(name)
    torch = _torch()
    bf16_host = BF16_BITS.view(ml_dtypes.bfloat16)
    bf16_dev = torch.from_numpy(BF16_BITS.view(np.int16)).view(torch.bfloat16).cuda()
    cases = [(F32, cp.asarray(F32)), (F16, cp.asarray(F16)), (bf16_host, bf16_dev)]
    for rounding in ROUNDINGS:
        for overflow in ("nonfinite", "saturate"):
            opts = dict(rounding=rounding, overflow=overflow, nan="zero", negative="clamp", **KEY)
            for host_x, dev_x in cases:
                want = lowfp.encode(host_x, f, **opts)
                got = lowfp.encode(dev_x, f, **opts)
                got = got.cpu().numpy() if hasattr(got, "cpu") else cp.asnumpy(got)
                np.testing.assert_array_equal(got, want, err_msg=f"{name} {rounding} {overflow}")


@pytest.mark.parametrize("name", FORMATS)
def test_decode_and_quantize(name):
    f = lowfp.format(name)
    codes = (
        np.arange(1 << f.bits, dtype=np.uint32)
        if f.bits <= 16
        else RNG.integers(0, 1 << f.bits, 1 << 20, dtype=np.uint64).astype(np.uint32)
    )
    want = lowfp.decode(codes, f).view(np.uint32)
    got = cp.asnumpy(lowfp.decode(cp.asarray(codes), f)).view(np.uint32)
    np.testing.assert_array_equal(got, want)
    for rounding in TABLE_ROUNDINGS:
        w = lowfp.quantize(F32, f, rounding=rounding, nan="zero", negative="clamp", **KEY)
        g = cp.asnumpy(
            lowfp.quantize(
                cp.asarray(F32), f, rounding=rounding, nan="zero", negative="clamp", **KEY
            )
        )
        np.testing.assert_array_equal(g.view(np.uint32), w.view(np.uint32))


def test_errors_name_the_first_bad_element():
    x = cp.linspace(0, 1, 1000, dtype=cp.float32)
    x[[417, 900]] = cp.nan
    with pytest.raises(ValueError, match="element 417 is NaN"):
        lowfp.encode(x, "float4_e2m1fn")
    with pytest.raises(ValueError, match="element 3 is 16"):
        lowfp.decode(cp.asarray(np.uint8([1, 2, 3, 16])), "float4_e2m1fn")
    torch = _torch()
    with pytest.raises(ValueError, match="not contiguous"):
        lowfp.encode(torch.zeros(4, 4, device="cuda").t(), "e4m3")


@pytest.mark.parametrize("bits", range(1, 9))
def test_pack_unpack(bits):
    for n in (0, 1, 9, 1_000_003):
        codes = RNG.integers(0, 1 << bits, n, dtype=np.uint64).astype(np.uint8)
        want = lowfp.pack(codes, bits)
        got = lowfp.pack(cp.asarray(codes), bits)
        np.testing.assert_array_equal(cp.asnumpy(got), want)
        np.testing.assert_array_equal(cp.asnumpy(lowfp.unpack(got, bits, n)), codes)


@pytest.mark.parametrize("rounding", STOCHASTIC)
def test_random_bits(rounding):
    like = cp.empty(0, cp.uint8)
    for offset in (0, 1, 2**64 - 1001):
        key = dict(seed=KEY["seed"], stream=KEY["stream"], offset=offset, rounding=rounding)
        got = cp.asnumpy(lowfp.random_bits(100_003, like=like, **key))
        np.testing.assert_array_equal(got, lowfp.random_bits(100_003, **key))


@pytest.mark.parametrize("codec", TABLES, ids=repr)
def test_table_codecs(codec):
    x = RNG.uniform(-1.2, 1.2, 1_000_000).astype(np.float32)
    for rounding in TABLE_ROUNDINGS:
        want = codec.encode(x, rounding=rounding, **KEY)
        got = codec.encode(cp.asarray(x), rounding=rounding, **KEY)
        np.testing.assert_array_equal(cp.asnumpy(got), want)


@pytest.mark.parametrize("codec,block,scale", BLOCKWISE, ids=lambda v: repr(v))
def test_blockwise(codec, block, scale):
    torch = _torch()
    n = 1_000_003
    x = (RNG.standard_normal(n) * np.exp2(RNG.integers(-20, 20, n))).astype(np.float32)
    x_dev = torch.from_numpy(x).cuda()
    table = isinstance(codec, (lowfp.Linear, lowfp.Dynamic, lowfp.Log))
    for rounding in TABLE_ROUNDINGS if table else ROUNDINGS:
        kw = dict(block_size=block, scale=scale, rounding=rounding, seed=3, stream=1)
        q = lowfp.quantize_blockwise(x, codec, **kw)
        qd = lowfp.quantize_blockwise(x_dev, codec, **kw)
        np.testing.assert_array_equal(qd.codes.cpu().numpy(), q.codes)
        np.testing.assert_array_equal(qd.scales.cpu().numpy(), q.scales)
        assert np.float32(qd.global_scale) == np.float32(q.global_scale)
        np.testing.assert_array_equal(
            qd.dequantize().cpu().numpy().view(np.uint32), q.dequantize().view(np.uint32)
        )


# ---------------------------------------------------------------- fused optimizer steps


def _twin_params(shapes, dtype, seed=0):
    """The same parameters on the CPU and on the GPU."""
    torch = _torch()
    g = torch.Generator().manual_seed(seed)
    cpu = [torch.nn.Parameter((torch.randn(s, generator=g) * 0.5).to(dtype)) for s in shapes]
    gpu = [torch.nn.Parameter(p.detach().clone().cuda()) for p in cpu]
    return cpu, gpu


def _same_grads(cpu, gpu, t):
    torch = _torch()
    g = torch.Generator().manual_seed(100 + t)
    for a, b in zip(cpu, gpu):
        a.grad = (torch.randn(a.shape, generator=g) * 10.0 ** (t % 3 - 1)).to(a.dtype)
        b.grad = a.grad.cuda()


def _assert_bits_equal(a, b, what):
    torch = _torch()
    a, b = a.detach().cpu().contiguous(), b.detach().cpu().contiguous()
    if a.dtype in (torch.bfloat16, torch.float16):
        a, b = a.view(torch.int16), b.view(torch.int16)
    elif a.dtype == torch.float32:
        a, b = a.view(torch.int32), b.view(torch.int32)
    assert torch.equal(a, b), what


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize(
    "preset", ["fp32", "AdamW8bit", "AdamW4bit", "AdamWFp8", "SOLO3", "SOLO2", "P3109"]
)
def test_adamw_gpu_steps_equal_cpu_steps(preset, rounding, amsgrad=False):
    """N steps of every preset on CUDA tensors == N steps on the CPU (Rust), bit for bit:
    parameters (float32 and bfloat16, sizes not multiples of the block, one with float32
    states), packed codes, scales and bases."""
    from test_cuda_optim_host import PRESETS, STEPS

    torch = _torch()
    shapes = [(37, 141), (3001,), (200,), (1 << 20) + 5]
    c32, g32 = _twin_params(shapes, torch.float32)
    c16, g16 = _twin_params(shapes, torch.bfloat16, seed=1)
    opts = []
    for ps32, ps16 in ((c32, c16), (g32, g16)):
        groups = [{"params": ps32}, {"params": ps16, "weight_decay": 0.1, "decoupled": False}]
        opts.append(
            PRESETS[preset](
                groups, lr=1e-2, rounding=rounding, min_quant_size=1000, seed=123, amsgrad=amsgrad
            )
        )
    for t in range(STEPS):
        _same_grads(c32 + c16, g32 + g16, t)
        for opt in opts:
            opt.step()
            for group in opt.param_groups:
                group["lr"] *= 0.7
    for i, (a, b) in enumerate(zip(c32 + c16, g32 + g16)):
        _assert_bits_equal(a, b, f"param {i}")
        sa, sb = opts[0].state[a], opts[1].state[b]
        assert sorted(sa) == sorted(sb)
        for k in sa:
            assert sb[k].device.type == ("cpu" if k == "step" else "cuda"), k
            _assert_bits_equal(sa[k], sb[k], f"param {i} state {k}")


@pytest.mark.parametrize("preset", ["fp32", "AdamW8bit", "SOLO3"])
def test_adamw_amsgrad_gpu_steps_equal_cpu_steps(preset):
    """AMSGrad (the third state, v_max, in the same fused kernel): N GPU steps == N CPU
    steps, bit for bit, as test_adamw_gpu_steps_equal_cpu_steps."""
    test_adamw_gpu_steps_equal_cpu_steps(preset, "stochastic", amsgrad=True)


def test_adamw8bit_1000_tensors_one_launch(monkeypatch):
    """A group of 1000 small tensors and three large ones (one kernel launch per step) equals
    the CPU after 5 steps, with stochastic state and bfloat16 parameter rounding; the group's
    tile plan is built by its first step only."""
    from test_cuda_optim_host import STEPS

    import lowfp.optim
    from lowfp.cuda import optim as copt

    built = []
    tile_plan = copt.tile_plan
    monkeypatch.setattr(copt, "tile_plan", lambda *a: built.append(1) or tile_plan(*a))

    torch = _torch()
    rng = np.random.default_rng(5)
    shapes = [(int(n),) for n in rng.integers(1, 5000, 1000)] + [
        (1 << 20,),
        (3001, 700),
        (4, 1 << 18),
    ]
    cpu, gpu = _twin_params(shapes, torch.bfloat16)
    opts = [
        lowfp.optim.AdamW8bit(ps, lr=1e-3, min_quant_size=512, rounding="stochastic")
        for ps in (cpu, gpu)
    ]
    for t in range(STEPS):
        _same_grads(cpu, gpu, t)
        for opt in opts:
            opt.step()
    assert len(built) == 1
    for i, (a, b) in enumerate(zip(cpu, gpu)):
        _assert_bits_equal(a, b, f"param {i}")
        for k in opts[0].state[a]:
            _assert_bits_equal(opts[0].state[a][k], opts[1].state[b][k], f"param {i} {k}")


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_and_muon_momentum_kernels_equal_rust(nesterov):
    """lowfp.cuda.optim.sgd_step_group / muon_momentum on CUDA tensors == the Rust core on
    the same entries (8-bit dynamic SGD momentum, 8-bit linear Muon momentum)."""
    from lowfp import _core
    from lowfp.cuda import optim as copt

    torch = _torch()
    n, block = 100_003, 256
    rng = np.random.default_rng(9)
    for codec, op in ((lowfp.Dynamic(8), "sgd"), (lowfp.Linear(8), "muon")):
        spec = {
            "bits": 0,
            "signed": True,
            "zero": True,
            "alpha": 0.5,
            "quantile": 0.0,
            **codec.spec(),
            "block": block,
            "scale": "absmax",
            "rounding": "stochastic",
        }
        packed_len, nb, _, _ = _core.blockwise_layout(spec, n)
        host = [np.zeros(packed_len, np.uint8), np.zeros(nb, np.float32), np.zeros(0, np.float32)]
        _core.blockwise_quantize(np.zeros(n, np.float32), spec, *host, 0, 0)
        p = rng.standard_normal(n).astype(np.float32)
        dev = [torch.from_numpy(a.copy()).cuda() for a in host]
        pd = torch.from_numpy(p.copy()).cuda()
        for t in range(1, 6):
            g = rng.standard_normal(n).astype(np.float32)
            gd = torch.from_numpy(g.copy()).cuda()
            if op == "sgd":
                hp, stream = (0.05, 0.9, 1.0, 1e-3), (t << 32) | 4
                _core.sgd_step_group(
                    [(p, g, (spec, *host), hp, nesterov, t == 1, stream, stream | 2, "float32")],
                    block,
                    7,
                    "stochastic",
                )
                copt.sgd_step_group(
                    [(pd, gd, (spec, *dev), hp, nesterov, t == 1, stream, stream | 2, "float32")],
                    block,
                    7,
                    "stochastic",
                )
                _assert_bits_equal(torch.from_numpy(p), pd, f"sgd param step {t}")
            else:
                _core.muon_momentum(g, (spec, *host), 0.95, nesterov, block, 7, t << 32)
                copt.muon_momentum(gd, (spec, *dev), 0.95, nesterov, block, 7, t << 32)
                _assert_bits_equal(torch.from_numpy(g), gd, f"muon direction step {t}")
            for a, b in zip(host, dev):
                _assert_bits_equal(torch.from_numpy(a), b, f"{op} momentum step {t}")


def test_optimizer_device_errors():
    import lowfp.optim

    torch = _torch()
    p = torch.nn.Parameter(torch.zeros(10, device="cuda"))
    p.grad = torch.zeros(10)
    with pytest.raises(ValueError, match="grad: on cpu, its parameter on cuda"):
        lowfp.optim.AdamW([p]).step()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_sgd_and_muon_classes_on_gpu_equal_cpu(dtype):
    """lowfp.optim.SGD and Muon route CUDA parameters to the kernels: SGD's weights and packed
    momentum equal the CPU run's bit for bit; Muon's packed momentum too (it depends on the
    gradients only), its weights not (Newton–Schulz matmuls sum in another order on the GPU)."""
    import lowfp
    import lowfp.optim

    torch = _torch()
    dt = getattr(torch, dtype)
    for make, compare_weights in [
        (
            lambda ps: lowfp.optim.SGD(
                ps,
                lr=0.05,
                momentum=0.9,
                nesterov=True,
                min_quant_size=0,
                momentum_codec=lowfp.Dynamic(8),
                rounding="stochastic",
            ),
            True,
        ),
        (lambda ps: lowfp.optim.Muon8bit(ps, lr=0.02, block_size=256), False),
    ]:
        cpu, gpu = _twin_params([(64, 256), (96, 512)], dt, seed=4)
        oc, og = make(cpu), make(gpu)
        for t in range(3):
            _same_grads(cpu, gpu, t)
            oc.step()
            og.step()
        for a, b in zip(cpu, gpu):
            for k, v in oc.state[a].items():
                if k != "step":
                    _assert_bits_equal(v, og.state[b][k], f"{type(oc).__name__} {k}")
            if compare_weights:
                _assert_bits_equal(a, b, f"{type(oc).__name__} weights")


def test_adamw_state_dict_moves_between_gpu_and_cpu():
    """A GPU optimizer's state dict loads into a CPU optimizer (states follow the parameters'
    device) and both continue with identical steps."""
    import io

    import lowfp.optim

    torch = _torch()
    cpu, gpu = _twin_params([(300, 70), (5000,)], torch.float32, seed=3)
    og = lowfp.optim.SOLO(gpu, lr=1e-2, min_quant_size=0)
    for t in range(2):
        _same_grads(cpu, gpu, t)
        og.step()
    for a, b in zip(cpu, gpu):
        a.data.copy_(b.data.cpu())
    buf = io.BytesIO()
    torch.save(og.state_dict(), buf)
    buf.seek(0)
    oc = lowfp.optim.SOLO(cpu, lr=1e-2, min_quant_size=0)
    oc.load_state_dict(torch.load(buf, weights_only=True))
    assert all(v.device.type == "cpu" for st in oc.state.values() for v in st.values())
    for t in range(2, 4):
        _same_grads(cpu, gpu, t)
        og.step()
        oc.step()
    for i, (a, b) in enumerate(zip(cpu, gpu)):
        _assert_bits_equal(a, b, f"param {i}")
        for k in oc.state[a]:
            _assert_bits_equal(oc.state[a][k], og.state[b][k], f"param {i} state {k}")


# ---------------------------------------------------------------- issue 16: device skip, options


@pytest.mark.parametrize("make", ["AdamW8bit", "SOLO3", "SGD", "AdamW8bit_amsgrad"])
def test_nonfinite_steps_skip_on_the_device_like_the_cpu(make):
    """Steps with a NaN or inf gradient are skipped on the device (no host synchronization:
    torch's sync debug mode raises on any synchronizing torch call inside step()), and 8 GPU
    steps equal 8 CPU steps bit for bit; skipped_steps and the step counters agree once
    read."""
    import warnings

    from test_cuda_optim_host import PRESETS

    import lowfp.optim

    torch = _torch()
    factories = dict(
        PRESETS,
        SGD=lambda ps, **kw: lowfp.optim.SGD(
            ps,
            momentum=0.9,
            momentum_codec=lowfp.Dynamic(8),
            lr=kw["lr"],
            min_quant_size=kw["min_quant_size"],
            rounding="stochastic",
        ),
        AdamW8bit_amsgrad=lambda ps, **kw: lowfp.optim.AdamW8bit(ps, amsgrad=True, **kw),
    )
    cpu, gpu = _twin_params([(300, 70), (5000,), (64,)], torch.float32, seed=2)
    oc, og = (factories[make](ps, lr=1e-2, min_quant_size=1000) for ps in (cpu, gpu))
    for t in range(8):
        _same_grads(cpu, gpu, t)
        if t in (2, 3, 6):
            cpu[t % 2].grad.view(-1)[7] = float("nan") if t != 3 else float("inf")
            gpu[t % 2].grad.view(-1)[7] = cpu[t % 2].grad.view(-1)[7].item()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            oc.step()
            if t >= 1:  # kernels compiled and states created at step 0
                torch.cuda.set_sync_debug_mode("error")
            try:
                og.step()
            finally:
                torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert og.skipped_steps == oc.skipped_steps == 3
    for i, (a, b) in enumerate(zip(cpu, gpu)):
        _assert_bits_equal(a, b, f"param {i}")
        for k in oc.state[a]:
            _assert_bits_equal(oc.state[a][k], og.state[b][k], f"param {i} state {k}")


def test_step_does_not_wait_for_the_device():
    """With the device busy (a 1 s spin kernel queued first), step() returns long before the
    device is done: nothing in a step waits for it."""
    import time

    import lowfp.optim

    torch = _torch()
    ps = [torch.nn.Parameter(torch.randn(4096, 1024, device="cuda")) for _ in range(4)]
    opt = lowfp.optim.AdamW8bit(ps, lr=1e-3)
    for p in ps:
        p.grad = torch.randn_like(p)
    opt.step()  # compile, create states
    torch.cuda.synchronize()
    torch.cuda._sleep(int(2e9))  # about a second of device time on any current GPU
    t0 = time.perf_counter()
    opt.step()
    host = time.perf_counter() - t0
    torch.cuda.synchronize()
    device = time.perf_counter() - t0
    assert host < 0.25 * device, (host, device)


def test_cuda_graph_capture_is_refused_clearly():
    import lowfp.optim

    torch = _torch()
    p = torch.nn.Parameter(torch.randn(4096, device="cuda"))
    p.grad = torch.randn_like(p)
    opt = lowfp.optim.AdamW8bit([p], lr=1e-3, min_quant_size=0)
    opt.step()
    g = torch.cuda.CUDAGraph()
    with pytest.raises(RuntimeError, match="cannot be captured in a CUDA graph"):
        with torch.cuda.graph(g):
            opt.step()


@pytest.mark.parametrize(
    "codec,block,scale",
    [
        (lowfp.Log(4, quantile=0.3), 64, "absmax"),
        (lowfp.Log(3, signed=True, quantile=0.5), 256, "e8m0"),
        (lowfp.Log(2, zero=False, quantile=0.05), 32, "absmax"),
    ],
    ids=repr,
)
def test_quantile_log_blockwise_on_the_device(codec, block, scale):
    """Log(quantile=...) on CUDA tensors: flat and along an axis (rows padded), codes, scales,
    bases and dequantized values equal the CPU's."""
    torch = _torch()
    x = (RNG.standard_normal((300, 1000)) * np.exp2(RNG.integers(-20, 20, (300, 1)))).astype(
        np.float32
    )
    for axis in (-1, 0, None):
        for rounding in TABLE_ROUNDINGS:
            kw = dict(block_size=block, scale=scale, rounding=rounding, seed=4, stream=2, axis=axis)
            q = lowfp.quantize_blockwise(x, codec, **kw)
            qd = lowfp.quantize_blockwise(torch.from_numpy(x).cuda(), codec, **kw)
            np.testing.assert_array_equal(qd.codes.cpu().numpy(), q.codes)
            np.testing.assert_array_equal(
                qd.scales.cpu().numpy().view(np.uint8), np.asarray(q.scales).view(np.uint8)
            )
            np.testing.assert_array_equal(
                qd.alphas.cpu().numpy().view(np.uint32), q.alphas.view(np.uint32)
            )
            np.testing.assert_array_equal(
                qd.dequantize().cpu().numpy().view(np.uint32), q.dequantize().view(np.uint32)
            )


@pytest.mark.parametrize(
    "codec,block,scale",
    [
        ("mxfp8", None, None),
        ("mxfp4", None, None),
        ("nvfp4", None, None),
        ("float8_e4m3fn", 128, "absmax"),
        ("float4_e2m1fn", 32, "e8m0_rceil"),
        (lowfp.Dynamic(8), 128, "e8m0"),
    ],
    ids=repr,
)
def test_nonfinite_ocp_blocks_on_the_device(codec, block, scale):
    torch = _torch()
    x = (RNG.standard_normal((64, 1000)) * 3).astype(np.float32)
    x[3, 5], x[10, 900], x[63, 999] = np.nan, np.inf, -np.inf
    kw = dict(block_size=block, scale=scale, nonfinite="ocp", seed=1)
    for axis in (-1, 0):
        q = lowfp.quantize_blockwise(x, codec, axis=axis, **kw)
        qd = lowfp.quantize_blockwise(torch.from_numpy(x).cuda(), codec, axis=axis, **kw)
        np.testing.assert_array_equal(qd.codes.cpu().numpy(), q.codes)
        np.testing.assert_array_equal(
            qd.scales.cpu().numpy().view(np.uint8), np.asarray(q.scales).view(np.uint8)
        )
        assert np.float32(qd.global_scale) == np.float32(q.global_scale)
        np.testing.assert_array_equal(
            qd.dequantize().cpu().numpy().view(np.uint32), q.dequantize().view(np.uint32)
        )


@pytest.mark.parametrize("codec", TABLES, ids=repr)
def test_table_decode_on_the_device(codec):
    torch = _torch()
    codes = RNG.integers(0, codec.levels.size, 1_000_003).astype(np.uint8)
    for dtype in ("float32", "float64", "float16", "bfloat16"):
        want = codec.decode(codes, dtype=dtype)
        got = codec.decode(torch.from_numpy(codes).cuda(), dtype=dtype).cpu()
        w = torch.from_numpy(np.asarray(want).view(np.uint8))
        assert torch.equal(got.view(torch.uint8).reshape(-1), w.reshape(-1)), dtype
        if dtype != "bfloat16":
            c = codec.decode(cp.asarray(codes), dtype=dtype)
            np.testing.assert_array_equal(
                cp.asnumpy(c).view(np.uint8), np.asarray(want).view(np.uint8)
            )
    if codec.levels.size < 256:
        bad = codes.copy()
        bad[12345] = codec.levels.size
        with pytest.raises(ValueError, match="element 12345"):
            codec.decode(cp.asarray(bad))


@pytest.mark.parametrize("rounding", ["to_odd", "stochastic"])
def test_new_options_on_the_device(rounding):
    """to_odd and fresh seeds (seed=None draws from lowfp's generator: manual_seed makes the
    CPU and the GPU draw the same keys)."""
    x = RNG.standard_normal(1_000_000).astype(np.float32)
    lowfp.manual_seed(77)
    want = [lowfp.encode(x, "e4m3", rounding=rounding) for _ in range(2)]
    lowfp.manual_seed(77)
    got = [cp.asnumpy(lowfp.encode(cp.asarray(x), "e4m3", rounding=rounding)) for _ in range(2)]
    for a, b in zip(want, got):
        np.testing.assert_array_equal(a, b)
    if rounding == "stochastic":
        assert not np.array_equal(got[0], got[1])  # fresh keys: consecutive calls differ


def test_torch_state_dict_transfer_with_cuda_states():
    """to_torch_state_dict of a GPU optimizer loads into torch's AdamW on the GPU (states on the
    parameters' device), and load_torch_state_dict takes a GPU torch AdamW's states: the same
    decoded states and quantized bits as the CPU path."""
    import lowfp.optim

    torch = _torch()
    cpu, gpu = _twin_params([(300, 70), (5000,)], torch.float32, seed=6)
    oc, og = (lowfp.optim.AdamW8bit(ps, lr=1e-2, min_quant_size=0) for ps in (cpu, gpu))
    for t in range(3):
        _same_grads(cpu, gpu, t)
        oc.step()
        og.step()
    sc, sg = oc.to_torch_state_dict(), og.to_torch_state_dict()
    for i in sc["state"]:
        for k in ("exp_avg", "exp_avg_sq"):
            assert sg["state"][i][k].device.type == "cuda"
            _assert_bits_equal(sc["state"][i][k], sg["state"][i][k], f"{i} {k}")
    tc, tg = torch.optim.AdamW(cpu, lr=1e-2), torch.optim.AdamW(gpu, lr=1e-2)
    tc.load_state_dict(sc)
    tg.load_state_dict(sg)
    assert all(
        v.device.type == "cuda" for st in tg.state.values() for k, v in st.items() if k != "step"
    )
    oc2 = lowfp.optim.AdamW8bit(cpu, lr=1e-2, min_quant_size=0)
    og2 = lowfp.optim.AdamW8bit(gpu, lr=1e-2, min_quant_size=0)
    oc2.load_torch_state_dict(tc.state_dict())
    og2.load_torch_state_dict(tg.state_dict())
    for a, b in zip(cpu, gpu):
        for k in oc2.state[a]:
            _assert_bits_equal(oc2.state[a][k], og2.state[b][k], k)
            assert og2.state[b][k].device.type == ("cpu" if k == "step" else "cuda")
