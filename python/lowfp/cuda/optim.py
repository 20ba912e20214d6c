"""Fused optimizer steps on CUDA tensors: the multi-tensor kernels of
``kernels/lowfp_optim.cu`` behind the entry formats of the Rust core's
``_core.adamw_step_group`` / ``sgd_step_group`` / ``muon_momentum``.

One launch per call (a param group): the tensors' descriptors (addresses, sizes, the step's
float32 scalars, streams, state layouts) go to the device as one byte array, and the kernel
runs one CUDA block per tile of whole state blocks, calling the tile function of
``lowfp_optim.cuh`` — the function the host check (tests/test_cuda_optim_host.py) runs in C++
against the Rust core. Scalars are data, not source: a new learning rate never recompiles.
Nothing here synchronizes with the host.

The descriptor builders are pure NumPy (addresses are plain integers), so the host check and
the kernels get byte-identical descriptors.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable, Dict, Sequence, Tuple

import numpy as np

from .._common import packed_len, table_levels
from ..formats import format as _format
from ._params import MODES, format_args

#: LF_OP_* of lowfp_optim.cuh.
OPS = {"adamw": 0, "sgd": 1, "muon": 2}
#: LF_ST_* of lowfp_optim.cuh.
ST_F32, ST_EXMY, ST_TABLE, ST_LOGQ = 1, 2, 3, 4
#: LF_IN_* of the parameter kinds.
PKINDS = {"float32": 0, "float16": 2, "bfloat16": 3}
#: LF_MAX_LEVELS of lowfp_optim.cuh.
MAX_LEVELS = 256

_I8, _U8, _F8 = "<i8", "<u8", "<f8"
STATE_DESC = np.dtype([
    ("kind", _I8), ("mode", _I8), ("code_bits", _I8), ("exp_bits", _I8), ("man_bits", _I8),
    ("bias", _I8), ("flags", _I8), ("nlev", _I8), ("log_bits", _I8), ("log_signed", _I8),
    ("log_zero", _I8), ("elem_max", _F8), ("quantile", _F8), ("stream", _U8), ("data", _U8),
    ("scales", _U8), ("alphas", _U8), ("levels", _U8),
])
TENSOR_DESC = np.dtype([
    ("n", _U8), ("pkind", _I8), ("param", _U8), ("grad", _U8), ("pstream", _U8),
    ("offset", _U8), ("nesterov", _I8), ("first", _I8), ("hp", _F8, (8,)), ("st", STATE_DESC, (2,)),
])


def tile_size(block: int) -> int:
    """Elements per tile (one CUDA block): whole state blocks, about 2048 elements."""
    return block * max(1, 2048 // block)


def _f32(x: float) -> float:
    """A Python float rounded to float32 (as the Rust bindings extract f32 arguments)."""
    return float(np.float32(x))


@lru_cache(maxsize=None)
def _spec_static(key: Tuple) -> Tuple[Dict[str, Any], np.ndarray | None]:
    """The layout fields of a state spec, and its table levels (None for ExMy / log-quantile)."""
    spec = dict(key)
    codec = spec["codec"]
    mode = MODES[spec["rounding"]]
    if spec.get("scale", "absmax") != "absmax":
        raise ValueError(f"scale: the fused GPU steps use 'absmax' state scales, got "
                         f"{spec['scale']!r}")
    if mode not in (MODES["nearest"], MODES["stochastic"]):
        raise ValueError(f"rounding: expected 'nearest' or 'stochastic' state rounding, got "
                         f"{spec['rounding']!r}")
    out = dict(mode=mode, elem_max=1.0)
    if codec == "exmy":
        f = _format(spec["format"])
        e, m, b, flags = format_args(f, "saturate", "error", "clamp")
        out.update(kind=ST_EXMY, code_bits=int(f.bits), exp_bits=e, man_bits=m, bias=b,
                   flags=flags, elem_max=float(np.float32(f.max)))
        return out, None
    bits = int(spec["bits"])
    out.update(code_bits=bits)
    if codec == "log" and float(spec.get("quantile") or 0.0) > 0.0:
        out.update(kind=ST_LOGQ, log_bits=bits, log_signed=int(bool(spec["signed"])),
                   log_zero=int(bool(spec["zero"])), quantile=_f32(spec["quantile"]))
        return out, None
    levels = table_levels(spec)
    out.update(kind=ST_TABLE, nlev=int(levels.size))
    return out, levels


def _spec_key(spec: Dict[str, Any]) -> Tuple:
    return tuple(sorted((k, v) for k, v in spec.items() if k != "fields"))


def fill_state(d: np.void, state: Any, stream: int, addr: Callable[[Any], int],
               levels: Callable[[np.ndarray], int], n: int, block: int, arg: str) -> None:
    """Fill one state descriptor from a state argument of the Rust entry format: a float32
    array, or (spec, packed, scales, alphas). `addr(array, arg)` gives an array's address,
    `levels(table)` the address of a table's levels where the kernel can read them."""
    d["stream"] = int(stream) & (2**64 - 1)
    if not isinstance(state, tuple):
        _check_len(arg, state, n)
        d["kind"], d["data"] = ST_F32, addr(state, arg)
        return
    spec, packed, scales, alphas = state
    if int(spec["block"]) != block:
        raise ValueError(f"{arg}: block size {spec['block']} differs from the step's {block}")
    fields, lv = _spec_static(_spec_key(spec))
    for k, v in fields.items():
        d[k] = v
    nb = -(-n // block)
    _check_len(arg, packed, packed_len(n, d["code_bits"]))
    _check_len(arg, scales, nb)
    _check_len(arg, alphas, nb if d["kind"] == ST_LOGQ else 0)
    d["data"], d["scales"] = addr(packed, arg), addr(scales, arg)
    d["alphas"] = addr(alphas, arg) if d["kind"] == ST_LOGQ else 0
    d["levels"] = levels(lv) if lv is not None else 0


def _check_len(arg: str, a: Any, want: int) -> None:
    got = int(np.prod(a.shape)) if hasattr(a, "shape") else len(a)
    if got != want:
        raise ValueError(f"{arg}: expected {want} elements, got {got}")


def _offsets(offsets: Sequence[int] | None, n: int) -> Sequence[int]:
    if offsets is None:
        return [0] * n
    if len(offsets) != n:
        raise ValueError(f"offsets: expected one per entry ({n}), got {len(offsets)}")
    return offsets


def adamw_descs(entries: Sequence, block: int, addr, levels,
                offsets: Sequence[int] | None = None) -> np.ndarray:
    """Descriptors of `_core.adamw_step_group` entries: (param, grad, exp_avg, exp_avg_sq,
    scalars (8), (stream_m, stream_v), param_stream, kind); `offsets`: each tensor's first
    element in a larger one (FSDP shards), keying stochastic rounding as in Rust."""
    out = np.zeros(len(entries), TENSOR_DESC)
    out["offset"] = _offsets(offsets, len(entries))
    for d, (p, g, m, v, scalars, streams, pstream, kind) in zip(out, entries):
        n = _param(d, p, g, kind, addr)
        d["hp"] = [_f32(s) for s in scalars]
        d["pstream"] = int(pstream)
        fill_state(d["st"][0], m, streams[0], addr, levels, n, block, "exp_avg")
        fill_state(d["st"][1], v, streams[1], addr, levels, n, block, "exp_avg_sq")
    return out


def sgd_descs(entries: Sequence, block: int, addr, levels,
              offsets: Sequence[int] | None = None) -> np.ndarray:
    """Descriptors of `_core.sgd_step_group` entries: (param, grad, momentum_buffer,
    (lr, momentum, 1 − dampening, weight_decay), nesterov, first, stream, param_stream, kind)."""
    out = np.zeros(len(entries), TENSOR_DESC)
    out["offset"] = _offsets(offsets, len(entries))
    for d, (p, g, b, hp, nesterov, first, stream, pstream, kind) in zip(out, entries):
        n = _param(d, p, g, kind, addr)
        d["hp"][:4] = [_f32(s) for s in hp]
        d["nesterov"], d["first"], d["pstream"] = int(bool(nesterov)), int(bool(first)), pstream
        fill_state(d["st"][0], b, stream, addr, levels, n, block, "momentum_buffer")
    return out


def muon_descs(grad: Any, buf: Any, beta: float, nesterov: bool, block: int, stream: int,
               addr, levels, offset: int = 0) -> np.ndarray:
    """The descriptor of `_core.muon_momentum(grad, buf, beta, nesterov, block, seed, stream)`:
    the float32 gradient is the "parameter" the direction overwrites."""
    out = np.zeros(1, TENSOR_DESC)
    d = out[0]
    n = _param(d, grad, None, "float32", addr)
    d["offset"] = int(offset)
    d["hp"][0] = _f32(beta)
    d["nesterov"] = int(bool(nesterov))
    fill_state(d["st"][0], buf, stream, addr, levels, n, block, "momentum_buffer")
    return out


def _param(d: np.void, p: Any, g: Any, kind: str, addr) -> int:
    if kind not in PKINDS:
        raise TypeError(f"param: expected float32, bfloat16 or float16 parameters, got {kind}")
    n = int(np.prod(p.shape))
    if g is not None:
        _check_len("grad", g, n)
    d["n"], d["pkind"], d["param"] = n, PKINDS[kind], addr(p, "param")
    d["grad"] = addr(g, "grad") if g is not None else 0
    return n


# ---------------------------------------------------------------- the CUDA side

SOURCES = ("lowfp_elem.cuh", "lowfp_optim.cuh", "lowfp_optim.cu")


def source() -> str:
    """The source of the optimizer kernels handed to CuPy (see :func:`_loader.source`)."""
    from ._loader import source

    return source("lowfp_optim.cu", SOURCES)


def _module(device_id: int) -> Any:
    from ._loader import module

    return module(device_id, "lowfp_optim.cu", SOURCES)


_LEVELS: Dict[Tuple[int, bytes], Any] = {}


def _device_levels(cp: Any) -> Callable[[np.ndarray], int]:
    """Table levels uploaded once per (device, table) and kept: their address."""
    dev = cp.cuda.Device().id

    def get(lv: np.ndarray) -> int:
        key = (dev, lv.tobytes())
        if key not in _LEVELS:
            _LEVELS[key] = cp.asarray(lv)
        return int(_LEVELS[key].data.ptr)
    return get


def _cuda_addr(device: Any) -> Callable[[Any], int]:
    """Address of a CUDA torch tensor or CuPy array on `device`, checked."""
    from .codec import is_cupy, is_torch_cuda

    def addr(a: Any, arg: str) -> int:
        if is_torch_cuda(a):
            if not a.is_contiguous():
                raise ValueError(f"{arg}: a non-contiguous CUDA tensor; pass .contiguous()")
            if a.device != device:
                raise ValueError(f"{arg}: on {a.device}, the step's parameters on {device}")
            return int(a.data_ptr())
        if is_cupy(a):
            if not a.flags.c_contiguous:
                raise ValueError(f"{arg}: a non-contiguous CuPy array; pass "
                                 "cupy.ascontiguousarray(...)")
            return int(a.data.ptr)
        where = getattr(a, "device", "the CPU")
        raise TypeError(f"{arg}: expected a CUDA torch tensor or CuPy array, got "
                        f"{type(a).__name__} on {where}; keep every tensor of a step on the "
                        "parameters' device")
    return addr


def launch_plan(op: str, descs: np.ndarray, block: int, seed: int,
                param_stochastic: bool) -> Dict[str, Any]:
    """Everything one launch of ``lf_optim_step`` needs, as host data: ``grid`` (tiles in all),
    ``smem`` (dynamic shared memory bytes), ``meta`` (the tile prefix then the descriptors, as
    bytes) and the scalar ``args`` after ``meta``. The host check runs this very plan."""
    n = descs["n"].astype(np.uint64)
    tile = tile_size(block)
    tiles = (n + np.uint64(tile - 1)) // np.uint64(tile)
    prefix = np.zeros(len(descs) + 1, np.uint64)
    np.cumsum(tiles, out=prefix[1:])
    nb = tile // block
    nlev = [max([1 << int(d["st"][k]["log_bits"]) for d in descs
                 if d["st"][k]["kind"] == ST_LOGQ] + [0]) for k in range(2)]
    # shared memory: vals (2 × tile f32), amax (2·nb u32), sel (3·nb u32), levels per log
    # state (f32), codes (tile u8)
    smem = 8 * tile + 20 * nb + 4 * nb * (nlev[0] + nlev[1]) + tile
    meta = np.concatenate([prefix.view(np.uint8), descs.view(np.uint8)])
    args = (OPS[op], len(descs), block, tile, int(seed) & (2**64 - 1), int(bool(param_stochastic)),
            nlev[0], nlev[1])
    return dict(grid=int(prefix[-1]), smem=(smem + 15) // 16 * 16, meta=meta, args=args)


def _launch(op: str, descs: np.ndarray, block: int, seed: int, param_stochastic: bool,
            cp: Any) -> None:
    plan = launch_plan(op, descs, block, seed, param_stochastic)
    if plan["grid"] == 0:
        return
    o, count, blk, tile, sd, ps, nl0, nl1 = plan["args"]
    dmeta = cp.asarray(plan["meta"])
    bad = cp.zeros(1, cp.uint32)
    kernel = _module(cp.cuda.Device().id).get_function("lf_optim_step")
    kernel((plan["grid"],), (256,),
           (np.int32(o), dmeta, np.uint64(count), np.uint32(blk), np.uint32(tile), np.uint64(sd),
            np.int32(ps), np.uint32(nl0), np.uint32(nl1), bad), shared_mem=plan["smem"])
    # `bad` (levels that collide: a log code with too many bits for its base) stays on the
    # device; reading it would synchronize. The optimizers' presets cannot reach it.


def _torch_device(entries: Sequence) -> Any:
    p = entries[0][0]
    return getattr(p, "device", None)


def adamw_step_group(entries: Sequence, block: int, seed: int, param_stochastic: bool,
                     offsets: Sequence[int] | None = None) -> None:
    """`_core.adamw_step_group` for CUDA tensors: one launch, on torch's current stream.

    Args:
        entries: per tensor (param, grad, exp_avg, exp_avg_sq, scalars, (stream_m, stream_v),
            param_stream, kind): flat contiguous CUDA tensors (16-bit parameters and gradients
            as bfloat16/float16 tensors), each state a float32 tensor or (spec, packed, scales,
            alphas); scalars = (1 − lr·wd, l2, 1 − β1, β2, 1 − β2, eps, lr / bc1, sqrt(bc2)).
        block, seed, param_stochastic, offsets: as in the Rust core.

    Raises:
        ImportError: CuPy is missing. TypeError/ValueError: host arrays, another device,
            non-contiguous tensors, lengths or block sizes that do not match.
    """
    from ._loader import cupy
    from .codec import _device_id, _stream

    cp = cupy()
    if not entries:
        return
    with cp.cuda.Device(_device_id(entries[0][0])), _stream(entries[0][0]):
        descs = adamw_descs(entries, block, _cuda_addr(_torch_device(entries)),
                            _device_levels(cp), offsets)
        _launch("adamw", descs, block, seed, param_stochastic, cp)


def sgd_step_group(entries: Sequence, block: int, seed: int, param_stochastic: bool,
                   offsets: Sequence[int] | None = None) -> None:
    """`_core.sgd_step_group` for CUDA tensors: one launch, on torch's current stream.

    Args:
        entries: per tensor (param, grad, momentum_buffer, (lr, momentum, 1 − dampening,
            weight_decay), nesterov, first, stream, param_stream, kind), as adamw_step_group.
        block, seed, param_stochastic, offsets: as in the Rust core.

    Raises:
        As adamw_step_group.
    """
    from ._loader import cupy
    from .codec import _device_id, _stream

    cp = cupy()
    if not entries:
        return
    with cp.cuda.Device(_device_id(entries[0][0])), _stream(entries[0][0]):
        descs = sgd_descs(entries, block, _cuda_addr(_torch_device(entries)), _device_levels(cp),
                          offsets)
        _launch("sgd", descs, block, seed, param_stochastic, cp)


def muon_momentum(grad: Any, buf: Any, beta: float, nesterov: bool, block: int, seed: int,
                  stream: int, offset: int = 0) -> None:
    """`_core.muon_momentum` for CUDA tensors: the direction replaces `grad` in place.

    Args:
        grad: flat float32 CUDA tensor (overwritten). buf: the momentum state (float32 tensor
            or (spec, packed, scales, alphas)). beta, nesterov, block, seed, stream, offset: as
            in the Rust core.

    Raises:
        As adamw_step_group.
    """
    from ._loader import cupy
    from .codec import _device_id, _stream

    cp = cupy()
    with cp.cuda.Device(_device_id(grad)), _stream(grad):
        descs = muon_descs(grad, buf, beta, nesterov, block, stream,
                           _cuda_addr(getattr(grad, "device", None)), _device_levels(cp), offset)
        _launch("muon", descs, block, seed, False, cp)
