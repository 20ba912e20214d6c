"""Fused optimizer steps on CUDA tensors: the multi-tensor kernels of
``kernels/lowfp_optim.cu`` behind the entry formats of the Rust core's
``_core.adamw_step_group`` / ``adamw_amsgrad_step_group`` / ``sgd_step_group`` /
``muon_momentum``.

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

import weakref
from functools import lru_cache
from typing import Any, Callable, Dict, Sequence, Tuple

import numpy as np

from .._common import TABLE_ROUNDINGS, check_choice, packed_len, table_levels
from ..formats import format as _format
from ._params import MODES, format_args

#: LF_OP_* of lowfp_optim.cuh.
OPS = {"adamw": 0, "sgd": 1, "muon": 2, "adamw_amsgrad": 3}
#: LF_MAX_STATES of lowfp_optim.cuh: states per tensor (AMSGrad: m, v, v_max).
MAX_STATES = 3
#: LF_ST_* of lowfp_optim.cuh.
ST_F32, ST_EXMY, ST_TABLE, ST_LOGQ = 1, 2, 3, 4
#: LF_IN_* of the parameter kinds.
PKINDS = {"float32": 0, "float16": 2, "bfloat16": 3}
#: LF_MAX_LEVELS of lowfp_optim.cuh.
MAX_LEVELS = 256

_I8, _U8, _F8 = "<i8", "<u8", "<f8"
STATE_DESC = np.dtype(
    [
        ("kind", _I8),
        ("mode", _I8),
        ("code_bits", _I8),
        ("exp_bits", _I8),
        ("man_bits", _I8),
        ("bias", _I8),
        ("flags", _I8),
        ("nlev", _I8),
        ("log_bits", _I8),
        ("log_signed", _I8),
        ("log_zero", _I8),
        ("elem_max", _F8),
        ("quantile", _F8),
        ("stream", _U8),
        ("data", _U8),
        ("scales", _U8),
        ("alphas", _U8),
        ("levels", _U8),
    ]
)
TENSOR_DESC = np.dtype(
    [
        ("n", _U8),
        ("pkind", _I8),
        ("param", _U8),
        ("grad", _U8),
        ("pstream", _U8),
        ("offset", _U8),
        ("nesterov", _I8),
        ("first", _I8),
        ("hp", _F8, (8,)),
        ("st", STATE_DESC, (MAX_STATES,)),
        ("t", _I8),
        ("pending", _U8),
    ]
)
#: LF_SKIP_BITS of lowfp_optim.cuh: steps whose skip the host may not have seen yet.
SKIP_BITS = 30


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
        raise ValueError(
            f"scale: the fused GPU steps use 'absmax' state scales, got {spec['scale']!r}"
        )
    if spec["rounding"] not in TABLE_ROUNDINGS:
        raise ValueError(
            f"rounding: expected one of {TABLE_ROUNDINGS} state rounding, got {spec['rounding']!r}"
        )
    out = dict(mode=mode, elem_max=1.0)
    if codec == "exmy":
        f = _format(spec["format"])
        e, m, b, flags = format_args(f, "saturate", "error", "clamp")
        out.update(
            kind=ST_EXMY,
            code_bits=int(f.bits),
            exp_bits=e,
            man_bits=m,
            bias=b,
            flags=flags,
            elem_max=float(np.float32(f.max)),
        )
        return out, None
    bits = int(spec["bits"])
    out.update(code_bits=bits)
    if codec == "log" and float(spec.get("quantile") or 0.0) > 0.0:
        out.update(
            kind=ST_LOGQ,
            log_bits=bits,
            log_signed=int(bool(spec["signed"])),
            log_zero=int(bool(spec["zero"])),
            quantile=_f32(spec["quantile"]),
        )
        return out, None
    levels = table_levels(spec)
    out.update(kind=ST_TABLE, nlev=int(levels.size))
    return out, levels


def _spec_key(spec: Dict[str, Any]) -> Tuple:
    return tuple(sorted((k, v) for k, v in spec.items() if k != "fields"))


def fill_state(
    d: np.void,
    state: Any,
    stream: int,
    addr: Callable[[Any], int],
    levels: Callable[[np.ndarray], int],
    n: int,
    block: int,
    arg: str,
) -> None:
    """Fill one state descriptor from a state argument of the Rust entry format: a float32
    array, or (spec, packed, scales, alphas). `addr(array, arg)` gives an array's address,
    `levels(table)` the address of a table's levels where the kernel can read them."""
    one = np.zeros(1, STATE_DESC)
    _fill_states(one, [state], [stream], [n], block, addr, levels, arg)
    d[...] = one[0]


_TEMPLATES: Dict[int, Tuple[Any, np.ndarray, Any]] = {}  # id(spec) -> (spec, record, levels)


def _template(spec: Any, block: int, arg: str) -> Tuple[np.ndarray, Any]:
    """(a STATE_DESC record with the spec's layout fields, table levels or None), cached per
    spec object (the optimizers pass the same dict every step)."""
    hit = _TEMPLATES.get(id(spec))
    if hit is None or hit[0] is not spec:
        rec = np.zeros(1, STATE_DESC)
        fields, lv = _spec_static(_spec_key(spec))
        for k, v in fields.items():
            rec[k] = v
        hit = _TEMPLATES[id(spec)] = (spec, rec, lv)
    if int(spec["block"]) != block:
        raise ValueError(f"{arg}: block size {spec['block']} differs from the step's {block}")
    return hit[1], hit[2]


#: id(state) -> (weak reference to its first array, n, block, data, scales, alphas, template
#: record or None for float32, levels): what a state's descriptor needs, checked once. The
#: optimizers pass the same state objects every step (their plans keep them); the weak
#: reference tells a live state from a new object that reuses a dead one's id, and keeps no
#: state memory alive.
_STATE_CACHE: Dict[int, tuple] = {}


def _state_fields(state: Any, n: int, block: int, addr: Callable, arg: str) -> tuple:
    """(data, scales, alphas, template record or None, levels) of one state, checked."""
    first = state[1] if isinstance(state, tuple) else state
    hit = _STATE_CACHE.get(id(state))
    if hit is not None and hit[0]() is first and hit[1] == n and hit[2] == block:
        return hit[3:]
    if not isinstance(state, tuple):
        _check_len(arg, state, n)
        out = (addr(state, arg), 0, 0, None, None)
    else:
        spec, packed, scales, alphas = state
        rec, lv = _template(spec, block, arg)
        kind, bits = int(rec["kind"][0]), int(rec["code_bits"][0])
        nb = -(-n // block)
        _check_len(arg, packed, packed_len(n, bits))
        _check_len(arg, scales, nb)
        _check_len(arg, alphas, nb if kind == ST_LOGQ else 0)
        out = (
            addr(packed, arg),
            addr(scales, arg),
            addr(alphas, arg) if kind == ST_LOGQ else 0,
            rec,
            lv,
        )
    try:
        ref = weakref.ref(first)
    except TypeError:  # not weakly referable (a plain sequence): not cached
        return out
    if len(_STATE_CACHE) > 1 << 16:  # dead entries of replaced states: start over
        _STATE_CACHE.clear()
    _STATE_CACHE[id(state)] = (ref, n, block, *out)
    return out


def _fill_states(
    st: np.ndarray,
    states: Sequence,
    streams: Sequence[int],
    ns: Sequence[int],
    block: int,
    addr: Callable,
    levels: Callable,
    arg: str,
) -> None:
    """Fill the STATE_DESC column `st` (one record per tensor) from the tensors' states: one
    Python pass for their addresses (each state checked once, then cached), then whole
    columns at once (field by field record writes cost ~0.5 ms per tensor: a 1000-tensor
    group would spend its step time there)."""
    m = len(states)
    data, scl, alp = np.zeros(m, np.uint64), np.zeros(m, np.uint64), np.zeros(m, np.uint64)
    groups: Dict[int, Tuple[np.ndarray, Any, list]] = {}
    f32 = []
    for i, (state, n) in enumerate(zip(states, ns)):
        data[i], scl[i], alp[i], rec, lv = _state_fields(state, n, block, addr, arg)
        if rec is None:
            f32.append(i)
        else:
            groups.setdefault(id(rec), (rec, lv, []))[2].append(i)
    for rec, lv, idx in groups.values():
        st[idx] = rec[0]
        if lv is not None:
            st["levels"][idx] = levels(lv)
    if f32:
        st["kind"][f32] = ST_F32
    st["data"], st["scales"], st["alphas"] = data, scl, alp
    st["stream"] = np.array([int(x) & (2**64 - 1) for x in streams], np.uint64)


def _check_len(arg: str, a: Any, want: int) -> None:
    if isinstance(a, np.ndarray):
        got = a.size
    elif hasattr(a, "numel"):  # torch
        got = a.numel()
    else:  # CuPy, sequences
        got = int(np.prod(a.shape)) if hasattr(a, "shape") else len(a)
    if got != want:
        raise ValueError(f"{arg}: expected {want} elements, got {got}")


def _offsets(offsets: Sequence[int] | None, n: int) -> Sequence[int]:
    if offsets is None:
        return [0] * n
    if len(offsets) != n:
        raise ValueError(f"offsets: expected one per entry ({n}), got {len(offsets)}")
    return offsets


def _params(out: np.ndarray, ps: Sequence, gs: Sequence, kinds: Sequence[str], addr) -> list:
    """Fill the parameter columns (n, pkind, param, grad); returns the element counts."""
    m = len(ps)
    ns, pk = [0] * m, [0] * m
    pa, ga = np.zeros(m, np.uint64), np.zeros(m, np.uint64)
    for i, (p, g, kind) in enumerate(zip(ps, gs, kinds)):
        if kind not in PKINDS:
            raise TypeError(f"param: expected float32, bfloat16 or float16 parameters, got {kind}")
        n = p.numel() if hasattr(p, "numel") else int(p.size)
        if g is not None:
            _check_len("grad", g, n)
            ga[i] = addr(g, "grad")
        ns[i], pk[i], pa[i] = n, PKINDS[kind], addr(p, "param")
    out["n"], out["pkind"], out["param"], out["grad"] = ns, pk, pa, ga
    return ns


def _u64s(xs: Sequence[int]) -> np.ndarray:
    return np.array([int(x) & (2**64 - 1) for x in xs], np.uint64)


def _hp(scalars: Sequence[tuple]) -> np.ndarray:
    """float32 scalars (as the Rust bindings take them) as float64 rows; tensors of one step
    share their scalar tuple, so each distinct tuple is converted once."""
    rows: Dict[int, int] = {}
    idx = [rows.setdefault(id(sc), len(rows)) for sc in scalars]
    uniq = list({id(sc): sc for sc in scalars}.values())
    return np.float32(uniq).astype(np.float64)[idx]


# ---------------------------------------------------------------- group plans
#
# Design notes
# - Most of a launch does not change between steps of a param group: each state's layout
#   record and addresses, the tile prefix (tiles of whole state blocks before each tensor),
#   the shared-memory size and the log-quantile level counts. A GroupPlan keeps them; a step
#   fills only what changes (parameter and gradient addresses and kinds, scalars, streams,
#   step numbers, pending masks, first-step flags) and reuses the rest, as the CPU step plan
#   of lowfp.optim.base keeps its entries.
# - Kept per (op, block, the states' identities), checked at every step: every state still
#   the same object (weak references to its arrays: a replaced or reloaded state, or a new
#   one reusing a dead one's id, rebuilds) and every parameter still of its size (a resized
#   parameter rebuilds, which re-checks and names the mismatch). Rejected: a key handed down
#   by the optimizer (it would tie this module to lowfp.optim's plan objects).

#: LRU bound of _GROUP_PLANS (param groups alive at once in a process).
_GROUP_PLANS_MAX = 256
_GROUP_PLANS: "Dict[tuple, GroupPlan]" = {}


class GroupPlan:
    """What the launches of one param group share between steps: ``st`` (the STATE_DESC
    columns, streams left 0), ``tiles`` (prefix, smem, nlev of the launch) and what keeps it
    valid (``refs``: weak references to the states' arrays; ``ns``: the tensors' sizes)."""

    __slots__ = ("refs", "ns", "st", "tiles")

    def __init__(self, refs: tuple, ns: np.ndarray, st: np.ndarray, tiles: tuple):
        self.refs, self.ns, self.st, self.tiles = refs, ns, st, tiles


def _first(state: Any) -> Any:
    return state[1] if isinstance(state, tuple) else state


def group_plan(
    op: str,
    states: Sequence[Sequence],
    ns: Sequence[int],
    block: int,
    addr,
    levels,
    args: Sequence[str],
) -> GroupPlan:
    """The GroupPlan of a group (`states`: per column the tensors' states; `ns`: the tensors'
    sizes), from the cache when its states are the same objects with the same sizes, else
    built (every state checked) and cached."""
    flat_states = [s for col in states for s in col]
    key = (op, block, *map(id, flat_states))
    nsa = np.asarray(ns, np.uint64)
    gp = _GROUP_PLANS.get(key)
    if (
        gp is not None
        and np.array_equal(gp.ns, nsa)
        and all(r() is _first(s) for r, s in zip(gp.refs, flat_states))
    ):
        _GROUP_PLANS[key] = _GROUP_PLANS.pop(key)  # most recently used last
        return gp
    m = len(ns)
    st = np.zeros((m, MAX_STATES), STATE_DESC)
    for j, (col, arg) in enumerate(zip(states, args)):
        _fill_states(st[:, j], col, [0] * m, ns, block, addr, levels, arg)
    gp = GroupPlan((), nsa, st, tile_plan(nsa, st, block))
    try:
        gp.refs = tuple(weakref.ref(_first(s)) for s in flat_states)
    except TypeError:  # not weakly referable (plain sequences): not kept
        return gp
    _GROUP_PLANS.pop(key, None)
    while len(_GROUP_PLANS) >= _GROUP_PLANS_MAX:
        del _GROUP_PLANS[next(iter(_GROUP_PLANS))]
    _GROUP_PLANS[key] = gp
    return gp


def _descs(
    op: str, entries: Sequence, block: int, addr, levels, offsets: Sequence[int] | None
) -> Tuple[np.ndarray, GroupPlan | None]:
    """(descriptors, group plan) of `_core.adamw_step_group` / `adamw_amsgrad_step_group` /
    `sgd_step_group` entries."""
    out = np.zeros(len(entries), TENSOR_DESC)
    if not len(entries):
        return out, None
    out["offset"] = _offsets(offsets, len(entries))
    if op in ("adamw", "adamw_amsgrad"):
        p, g, m, v, scalars, streams, pstream, kind = zip(*[e[:8] for e in entries])
        cols, args = [m, v], ["exp_avg", "exp_avg_sq"]
        sts = [[s[0] for s in streams], [s[1] for s in streams]]
        if op == "adamw_amsgrad":  # (…, kind, max_exp_avg_sq, its stream)
            cols.append([e[8] for e in entries])
            args.append("max_exp_avg_sq")
            sts.append([e[9] for e in entries])
        out["hp"] = _hp(scalars)
    else:
        p, g, b, hp, nesterov, first, stream, pstream, kind = zip(*entries)
        cols, args, sts = [b], ("momentum_buffer",), [stream]
        out["hp"][:, :4] = _hp(hp)[:, :4]
        out["nesterov"] = [int(bool(x)) for x in nesterov]
        out["first"] = [int(bool(x)) for x in first]
    ns = _params(out, p, g, kind, addr)
    gp = group_plan(op, cols, ns, block, addr, levels, args)
    out["st"] = gp.st
    for j, col in enumerate(sts):
        out["st"][:, j]["stream"] = _u64s(col)
    out["pstream"] = _u64s(pstream)
    out["t"] = out["pstream"] >> np.uint64(32)  # lowfp's streams carry the step number
    return out, gp


def adamw_descs(
    entries: Sequence, block: int, addr, levels, offsets: Sequence[int] | None = None
) -> np.ndarray:
    """Descriptors of `_core.adamw_step_group` entries: (param, grad, exp_avg, exp_avg_sq,
    scalars (8), (stream_m, stream_v), param_stream, kind); `offsets`: each tensor's first
    element in a larger one (FSDP shards), keying stochastic rounding as in Rust."""
    return _descs("adamw", entries, block, addr, levels, offsets)[0]


def adamw_amsgrad_descs(
    entries: Sequence, block: int, addr, levels, offsets: Sequence[int] | None = None
) -> np.ndarray:
    """Descriptors of `_core.adamw_amsgrad_step_group` entries: an AdamW entry, then
    (max_exp_avg_sq, its stream)."""
    return _descs("adamw_amsgrad", entries, block, addr, levels, offsets)[0]


def sgd_descs(
    entries: Sequence, block: int, addr, levels, offsets: Sequence[int] | None = None
) -> np.ndarray:
    """Descriptors of `_core.sgd_step_group` entries: (param, grad, momentum_buffer,
    (lr, momentum, 1 − dampening, weight_decay), nesterov, first, stream, param_stream, kind)."""
    return _descs("sgd", entries, block, addr, levels, offsets)[0]


def muon_descs(
    grad: Any,
    buf: Any,
    beta: float,
    nesterov: bool,
    block: int,
    stream: int,
    addr,
    levels,
    offset: int = 0,
) -> np.ndarray:
    """The descriptor of `_core.muon_momentum(grad, buf, beta, nesterov, block, seed, stream)`:
    the float32 gradient is the "parameter" the direction overwrites."""
    out = np.zeros(1, TENSOR_DESC)
    ns = _params(out, [grad], [None], ["float32"], addr)
    out["offset"] = int(offset)
    out["hp"][0, 0] = _f32(beta)
    out["nesterov"] = int(bool(nesterov))
    _fill_states(out["st"][:, 0], [buf], [stream], ns, block, addr, levels, "momentum_buffer")
    return out


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
                raise ValueError(
                    f"{arg}: a non-contiguous CuPy array; pass cupy.ascontiguousarray(...)"
                )
            return int(a.data.ptr)
        where = getattr(a, "device", "the CPU")
        raise TypeError(
            f"{arg}: expected a CUDA torch tensor or CuPy array, got "
            f"{type(a).__name__} on {where}; keep every tensor of a step on the "
            "parameters' device"
        )

    return addr


def tile_plan(ns: np.ndarray, st: np.ndarray, block: int) -> Tuple[np.ndarray, int, list]:
    """(tile prefix, dynamic shared memory bytes, log-quantile level counts per state column)
    of a launch over tensors of sizes `ns` with state columns `st` (STATE_DESC, m × 3)."""
    n = np.asarray(ns, np.uint64)
    tile = tile_size(block)
    tiles = (n + np.uint64(tile - 1)) // np.uint64(tile)
    prefix = np.zeros(n.size + 1, np.uint64)
    np.cumsum(tiles, out=prefix[1:])
    nb = tile // block
    nlev = []
    for k in range(MAX_STATES):
        logq = st["log_bits"][:, k][st["kind"][:, k] == ST_LOGQ]
        nlev.append(int(1 << int(logq.max())) if logq.size else 0)
    # shared memory (lowfp_optim.cu), nv = 3 with a third state (AMSGrad) else 2: vals
    # (nv × tile f32), amax (nv·nb u32), sel (3·nb u32), levels per log state (f32), codes
    # (tile u8)
    nv = 3 if (st["kind"][:, 2] != 0).any() else 2
    smem = 4 * nv * tile + 4 * (nv + 3) * nb + 4 * nb * sum(nlev) + tile
    return prefix, (smem + 15) // 16 * 16, nlev


def _param_mode(param_rounding: str) -> int:
    """The kernel's mode number of a parameter rounding (the Rust core's check)."""
    check_choice("param_rounding", param_rounding, TABLE_ROUNDINGS)
    return MODES[param_rounding]


def launch_plan(
    op: str,
    descs: np.ndarray,
    block: int,
    seed: int,
    param_rounding: str,
    tab: np.ndarray | None = None,
    tiles: Tuple[np.ndarray, int, list] | None = None,
) -> Dict[str, Any]:
    """Everything one launch of ``lf_optim_step`` needs, as host data: ``grid`` (tiles in all),
    ``smem`` (dynamic shared memory bytes), ``meta`` (the tile prefix, the descriptors, then
    the scalar table `tab` (rows of 8 float64) if any, as bytes), ``tab_offset`` (the table's
    byte offset in meta, or None) and the scalar ``args`` after ``meta``. `tiles`: the
    group's :func:`tile_plan` when kept (:class:`GroupPlan`), else built from `descs`. The
    host check runs this very plan."""
    prefix, smem, nlev = tiles if tiles is not None else tile_plan(descs["n"], descs["st"], block)
    parts = [prefix.view(np.uint8), descs.view(np.uint8)]
    tab_offset = None
    if tab is not None:
        tab_offset = sum(p.size for p in parts)  # a multiple of 8: prefix and descriptors are
        parts.append(np.ascontiguousarray(tab, np.float64).reshape(-1).view(np.uint8))
    meta = np.concatenate(parts)
    args = (
        OPS[op],
        len(descs),
        block,
        tile_size(block),
        int(seed) & (2**64 - 1),
        _param_mode(param_rounding),
        nlev[0],
        nlev[1],
        nlev[2],
    )
    return dict(grid=int(prefix[-1]), smem=smem, meta=meta, args=args, tab_offset=tab_offset)


def prepare(
    op: str,
    entries: Sequence,
    block: int,
    seed: int,
    param_rounding: str,
    addr,
    levels,
    offsets: Sequence[int] | None = None,
    ctx: "StepContext | None" = None,
) -> Dict[str, Any]:
    """The launch plan of one step of a group (`op`: "adamw", "adamw_amsgrad" or "sgd"):
    descriptors from the entries over the group's kept GroupPlan, the device-skip inputs of
    `ctx`. The CUDA steps launch it; the host check runs it."""
    descs, gp = _descs(op, entries, block, addr, levels, offsets)
    tab = None
    if ctx is not None:
        descs["pending"] = ctx.pending
        tab = ctx.tab
    return launch_plan(
        op, descs, block, seed, param_rounding, tab, None if gp is None else gp.tiles
    )


def check_plan(descs: np.ndarray, tile: int = 2048) -> Dict[str, Any]:
    """The launch of ``lf_optim_check`` over descriptors (only n, pkind and grad are read):
    ``grid``, ``meta`` (tile prefix then descriptors), ``tile``."""
    n = descs["n"].astype(np.uint64)
    tiles = (n + np.uint64(tile - 1)) // np.uint64(tile)
    prefix = np.zeros(len(descs) + 1, np.uint64)
    np.cumsum(tiles, out=prefix[1:])
    return dict(
        grid=int(prefix[-1]),
        meta=np.concatenate([prefix.view(np.uint8), descs.view(np.uint8)]),
        tile=tile,
    )


def _check_capture() -> None:
    """A step cannot be captured in a CUDA graph (docs/gpu.md): say so instead of failing
    inside CuPy's upload."""
    try:
        import torch
    except ImportError:  # CuPy arrays without torch: no torch capture to be inside of
        return
    if torch.cuda.is_current_stream_capturing():
        raise RuntimeError(
            "lowfp.optim: a CUDA step cannot be captured in a CUDA graph (its "
            "descriptors and scalars are uploaded from the host at every step); "
            "step outside the captured region"
        )


def _launch(
    op: str,
    descs: np.ndarray | None,
    block: int,
    seed: int,
    param_rounding: str,
    cp: Any,
    ctx: "StepContext | None" = None,
    plan: Dict[str, Any] | None = None,
) -> None:
    if plan is None:
        tab = None
        if ctx is not None:
            descs["pending"] = ctx.pending
            tab = ctx.tab
        plan = launch_plan(op, descs, block, seed, param_rounding, tab)
    if plan["grid"] == 0:
        return
    o, count, blk, tile, sd, ps, nl0, nl1, nl2 = plan["args"]
    dmeta = cp.asarray(plan["meta"])
    bad = cp.zeros(1, cp.uint32)
    word, bit, tab_ptr, t0, ntab = 0, 0, 0, 0, 0
    if ctx is not None:
        word, bit = ctx.word, ctx.bit
        if plan["tab_offset"] is not None:
            tab_ptr, t0, ntab = int(dmeta.data.ptr) + plan["tab_offset"], ctx.t0, len(ctx.tab)
    kernel = _module(cp.cuda.Device().id).get_function("lf_optim_step")
    kernel(
        (plan["grid"],),
        (256,),
        (
            np.int32(o),
            dmeta,
            np.uint64(count),
            np.uint32(blk),
            np.uint32(tile),
            np.uint64(sd),
            np.int32(ps),
            np.uint32(nl0),
            np.uint32(nl1),
            np.uint32(nl2),
            bad,
            np.uint64(word),
            np.int64(bit),
            np.uint64(tab_ptr),
            np.int64(t0),
            np.int64(ntab),
        ),
        shared_mem=plan["smem"],
    )
    # `bad` (levels that collide: a log code with too many bits for its base; 8: a step
    # number outside the table) stays on the device; reading it would synchronize. The
    # optimizers' presets cannot reach it.


def _torch_device(entries: Sequence) -> Any:
    p = entries[0][0]
    return getattr(p, "device", None)


def _step_group(
    op: str,
    entries: Sequence,
    block: int,
    seed: int,
    param_rounding: str,
    offsets: Sequence[int] | None,
    ctx: "StepContext | None",
) -> None:
    """One launch of the step kernel `op` over `entries`, on torch's current stream (the body
    of adamw_step_group, adamw_amsgrad_step_group and sgd_step_group)."""
    from ._loader import cupy
    from .codec import _device_id, _stream

    cp = cupy()
    if not entries:
        return
    _check_capture()
    with cp.cuda.Device(_device_id(entries[0][0])), _stream(entries[0][0]):
        plan = prepare(
            op,
            entries,
            block,
            seed,
            param_rounding,
            _cuda_addr(_torch_device(entries)),
            _device_levels(cp),
            offsets,
            ctx,
        )
        _launch(op, None, block, seed, param_rounding, cp, ctx, plan)


def adamw_step_group(
    entries: Sequence,
    block: int,
    seed: int,
    param_rounding: str,
    offsets: Sequence[int] | None = None,
    ctx: "StepContext | None" = None,
) -> None:
    """`_core.adamw_step_group` for CUDA tensors: one launch, on torch's current stream.

    Args:
        entries: per tensor (param, grad, exp_avg, exp_avg_sq, scalars, (stream_m, stream_v),
            param_stream, kind): flat contiguous CUDA tensors (16-bit parameters and gradients
            as bfloat16/float16 tensors), each state a float32 tensor or (spec, packed, scales,
            alphas); scalars = (1 − lr·wd, l2, 1 − β1, β2, 1 − β2, eps, lr / bc1, sqrt(bc2)).
        block, seed, param_rounding, offsets: as in the Rust core.
        ctx: the device skip of this step (:meth:`DeviceSkip.context`), or None.

    Raises:
        ImportError: CuPy is missing. TypeError/ValueError: host arrays, another device,
            non-contiguous tensors, lengths or block sizes that do not match.
    """
    _step_group("adamw", entries, block, seed, param_rounding, offsets, ctx)


def adamw_amsgrad_step_group(
    entries: Sequence,
    block: int,
    seed: int,
    param_rounding: str,
    offsets: Sequence[int] | None = None,
    ctx: "StepContext | None" = None,
) -> None:
    """`_core.adamw_amsgrad_step_group` for CUDA tensors: one launch, on torch's current
    stream.

    Args:
        entries: per tensor an adamw_step_group entry, then (max_exp_avg_sq, its stream): the
            running maximum of the second moment, a float32 tensor or (spec, packed, scales,
            alphas) like the other states.
        block, seed, param_rounding, offsets, ctx: as adamw_step_group.

    Raises:
        As adamw_step_group.
    """
    _step_group("adamw_amsgrad", entries, block, seed, param_rounding, offsets, ctx)


def sgd_step_group(
    entries: Sequence,
    block: int,
    seed: int,
    param_rounding: str,
    offsets: Sequence[int] | None = None,
    ctx: "StepContext | None" = None,
) -> None:
    """`_core.sgd_step_group` for CUDA tensors: one launch, on torch's current stream.

    Args:
        entries: per tensor (param, grad, momentum_buffer, (lr, momentum, 1 − dampening,
            weight_decay), nesterov, first, stream, param_stream, kind), as adamw_step_group.
        block, seed, param_rounding, offsets: as in the Rust core.
        ctx: as adamw_step_group (the table is not used: SGD's scalars do not depend on t).

    Raises:
        As adamw_step_group.
    """
    _step_group("sgd", entries, block, seed, param_rounding, offsets, ctx)


def muon_momentum(
    grad: Any,
    buf: Any,
    beta: float,
    nesterov: bool,
    block: int,
    seed: int,
    stream: int,
    offset: int = 0,
) -> None:
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
        descs = muon_descs(
            grad,
            buf,
            beta,
            nesterov,
            block,
            stream,
            _cuda_addr(getattr(grad, "device", None)),
            _device_levels(cp),
            offset,
        )
        _launch("muon", descs, block, seed, "nearest", cp)


# ---------------------------------------------------------------- device skip
#
# Design notes
# - torch's fused optimizers take GradScaler's `found_inf` as a device tensor and skip inside
#   the kernel; lowfp does the same for its own non-finite policy (nonfinite="skip"): one
#   launch of lf_optim_check over every gradient of the step sets this step's bit of a device
#   word, and every step kernel of the step reads it. Nothing waits for the host.
# - The host counts steps before it knows whether they were skipped. Each tensor's
#   descriptor carries the step number as the host counts it (t) and the bits of the earlier
#   steps it took part in whose outcome the host has not read yet (pending); the kernel's
#   step number is t − popcount(word & pending). The host supplies the scalars for every step
#   number that can result (a table of rows, usually one or two), computed by the optimizer's
#   own formula, so the GPU's bits equal the CPU's whatever was skipped.
# - After each step the word is copied to pinned memory behind an event; the host reads it
#   when the event has completed (never waiting) at the next step, and then corrects its
#   counters ("step" states, skipped_steps). Only when all LF_SKIP_BITS (30) bits are in use
#   (the host 30 steps ahead of the device) does it wait for the oldest. `skipped_steps`,
#   `state_dict()`, `load_state_dict()` and pickling wait for every outstanding step, so what
#   they show is exact.
# - Rejected: reading the flag on the host before each step (the synchronization this
#   replaces), and keeping the step counts on the device only (torch's capturable mode): the
#   bias corrections 1 − β^t would then be computed on the device, where pow() does not give
#   the CPU's bits.


class StepContext:
    """The device-skip inputs of one step kernel: word address, this step's bit, per-tensor
    pending masks, the scalar table (rows for t0, t0 + 1, ...; None for SGD)."""

    __slots__ = ("word", "bit", "pending", "tab", "t0")

    def __init__(self, word: int, bit: int, pending: np.ndarray, tab: np.ndarray | None, t0: int):
        self.word, self.bit, self.pending, self.tab, self.t0 = word, bit, pending, tab, t0


class DeviceSkip:
    """The device-side non-finite skips of one optimizer on one CUDA device (design notes
    above). `torch` is the torch module (a stand-in in the host tests)."""

    def __init__(self, device: Any, torch: Any = None):
        if torch is None:
            import torch
        self.torch = torch
        self.device = device
        self.word = torch.zeros(1, dtype=torch.int32, device=device)
        self.pending: list = []  # (bit, event, pinned word, [(param, state dict)]), oldest first
        self.masks: Dict[Any, int] = {}  # param -> pending bits it took part in
        self.skipped = 0  # skips read back so far
        self.bit = -1  # this step's bit (-1: no step open)
        self.params: list = []
        self.dirty: set = set()  # params whose state's step counter a read-back corrected

    # ------------------------------------------------------------ one step

    def begin(self, entries: Sequence, cp: Any = None) -> None:
        """Open a step over `entries` (all of the step's; each with .p, .views (param, grad,
        kind, copy)): read back what has completed, take a free bit, launch the check."""
        self.resolve(block=False)
        used = {b for b, *_ in self.pending}
        while len(used) >= SKIP_BITS:  # the host is SKIP_BITS steps ahead: wait for one
            self.resolve(block=True, count=1)
            used = {b for b, *_ in self.pending}
        bit = min(set(range(SKIP_BITS)) - used)
        self.word.bitwise_and_(~(1 << bit))
        self.bit, self.params = bit, [e.p for e in entries]
        descs = np.zeros(len(entries), TENSOR_DESC)
        for d, e in zip(descs, entries):
            _, g, kind, _ = e.views
            d["n"], d["pkind"], d["grad"] = g.numel(), PKINDS[kind], g.data_ptr()
        self._launch_check(descs, cp)

    def _launch_check(self, descs: np.ndarray, cp: Any) -> None:
        plan = check_plan(descs)
        if plan["grid"] == 0:
            return
        if cp is None:
            from ._loader import cupy

            cp = cupy()
        from .codec import _stream

        with cp.cuda.Device(self.device.index), _stream(self.word):
            dmeta = cp.asarray(plan["meta"])
            kernel = _module(cp.cuda.Device().id).get_function("lf_optim_check")
            kernel(
                (plan["grid"],),
                (256,),
                (
                    dmeta,
                    np.uint64(len(descs)),
                    np.uint32(plan["tile"]),
                    np.uint64(self.word.data_ptr()),
                    np.uint32(self.bit),
                ),
            )

    def context(
        self, params: Sequence, ts: Sequence[int], scalars_at: Callable[[int], tuple] | None
    ) -> StepContext:
        """The StepContext of a group: its params, their step numbers as the host counts them
        (this step included), and the optimizer's scalars as a function of t (None: none
        depend on t)."""
        pending = np.array([self.masks.get(p, 0) for p in params], np.uint64)
        tab, t0 = None, 0
        if scalars_at is not None and len(ts):
            lag = max(bin(int(m)).count("1") for m in pending) if len(pending) else 0
            t0 = max(1, min(ts) - lag)
            tab = np.array(
                [[_f32(v) for v in scalars_at(t)] for t in range(t0, max(ts) + 1)], np.float64
            )
        return StepContext(self.word.data_ptr(), self.bit, pending, tab, t0)

    def end(self, entries: Sequence) -> None:
        """Close the step: copy the word behind an event; record who took part (`entries`:
        those whose step kernels were launched; none when the step failed before)."""
        if not entries:  # nothing stepped: the bit is free again
            self.bit, self.params = -1, []
            return
        torch = self.torch
        pinned = torch.empty(1, dtype=torch.int32, pin_memory=True)
        pinned.copy_(self.word, non_blocking=True)
        ev = torch.cuda.Event()
        ev.record(torch.cuda.current_stream(self.device))
        bit = 1 << self.bit
        for e in entries:
            self.masks[e.p] = self.masks.get(e.p, 0) | bit
        self.pending.append((self.bit, ev, pinned, [(e.p, e.st) for e in entries]))
        self.bit, self.params = -1, []

    # ------------------------------------------------------------ reading back

    def resolve(self, block: bool, count: int | None = None) -> list:
        """Read back completed steps (all outstanding ones, waiting, when `block`; at most
        `count`): correct the step counters of skipped steps. Returns the params of every
        step read back as skipped, oldest first."""
        skipped = []
        done = 0
        while self.pending and (count is None or done < count):
            bit, ev, pinned, parts = self.pending[0]
            if not block and not ev.query():
                break
            ev.synchronize()
            if (int(pinned[0]) >> bit) & 1:
                self.skipped += 1
                for p, st in parts:
                    st["step"].sub_(1)  # the live counter (a view of the plan's counts)
                    self.dirty.add(p)
                skipped.append([p for p, _ in parts])
            for p, _ in parts:
                m = self.masks.get(p, 0) & ~(1 << bit)
                if m:
                    self.masks[p] = m
                else:
                    self.masks.pop(p, None)
            self.pending.pop(0)
            done += 1
        return skipped
