"""lowfp optimizers under torch.distributed: DTensor parameters (FSDP2), checkpoints (DCP).

DDP and ``ZeroRedundancyOptimizer`` need nothing from this module: their optimizers see plain
local tensors. FSDP2 (``torch.distributed.fsdp.fully_shard``) hands the optimizer DTensors
sharded on dim 0; the optimizers call the helpers below so that

* states are built and stepped on the local shard (``p.to_local()``, ``p.grad.to_local()``),
  never gathered (Muon excepted, see :func:`full_rows`);
* ``state_dict()`` holds DTensors laid out like the parameter, so that
  ``torch.distributed.checkpoint`` (DCP) saves, loads and reshards them.

Block alignment (the choice this module is built around). A packed state is blocks of
``block_size`` consecutive elements of the flat local shard, one float32 scale per block.
FSDP2 cuts a parameter between rows of dim 0 (``torch.chunk`` rows per rank). When the row
length ``cols = numel / shape[0]`` is a multiple of ``block_size``, every block lies inside one
row, so the blocks of a shard are exactly the blocks of the whole tensor, whatever the world
size. The state dict then exposes

    <state>.codes   uint8   (rows, cols·bits/8)   the packed stream, one row per parameter row
    <state>.scales  float32 (rows, cols/block)    the block scales of that row
    <state>.alphas  float32 (rows, cols/block)    per-block log bases (SOLO), if the codec has any

each a DTensor with the parameter's placements. Resharding moves whole rows, hence whole blocks:
loading into any world size is a byte copy, bit-exact. A parameter whose row length is not a
multiple of the block size (1-D biases and norms, odd widths) keeps float32 states when it is a
sharded DTensor (exact too, 8 bytes per element for AdamW); rejected alternatives: decoding to
float32 in the checkpoint and re-encoding on load (re-encoding need not give back the codes:
log bases are recomputed from decoded values, a float format's scale amax/M need not round back
to itself, so even a same-size resume could drift), and blocks relative to each shard (their
scales would not survive a change of world size).

Stochastic rounding keys its random bits by the element's index in the whole tensor: the fused
steps take each shard's offset (:func:`element_offset`), so a shard draws the bits its elements
draw in one process, and results do not depend on the world size.

Supported placements: every mesh dimension ``Replicate()`` or ``Shard(0)`` (FSDP2's default).
Anything else (``Shard(d)`` with d > 0, ``Partial``, strided sharding) and FSDP1's flat
parameters raise ValueError at the first step.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Dict, Iterable

import torch

from .. import _core

__all__ = [
    "is_dtensor",
    "check_param",
    "local",
    "block_aligned",
    "wrap_state_dict",
    "unwrap_state",
    "init_state",
    "element_offset",
    "full_rows",
    "local_rows",
    "agree",
]

# torch.distributed.tensor is imported only once a DTensor exists (it costs ~0.5 s to import):
# no DTensor can exist before its module is imported, so is_dtensor looks it up in sys.modules.
if TYPE_CHECKING:
    from torch.distributed.tensor import DTensor, Replicate, Shard
    from typing_extensions import TypeGuard

    from .base import PackedOptimizer
else:
    DTensor = Replicate = Shard = None


def _load() -> None:
    global DTensor, Replicate, Shard
    if DTensor is None:
        from torch.distributed.tensor import DTensor, Replicate, Shard  # noqa: F811


_PLAIN = (torch.Tensor, torch.nn.Parameter)


def is_dtensor(t: Any) -> TypeGuard[DTensor]:
    """True for a ``torch.distributed.tensor.DTensor``."""
    if type(t) in _PLAIN:  # the common case, without DTensor's slow isinstance check
        return False
    mod = sys.modules.get("torch.distributed.tensor")
    if mod is None or not isinstance(t, getattr(mod, "DTensor", ())):
        return False
    _load()
    return True


def local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (a view: in-place writes reach the parameter), else t."""
    return t.to_local() if is_dtensor(t) else t


def _sharded(p: torch.Tensor) -> TypeGuard[DTensor]:
    return is_dtensor(p) and any(not isinstance(pl, Replicate) for pl in p.placements)


def check_param(p: torch.Tensor) -> None:
    """Reject parameters this package cannot step correctly under torch.distributed.

    Raises:
        ValueError: FSDP1 flat parameters (``FullyShardedDataParallel``), or a DTensor
            parameter (or gradient) placed other than ``Replicate()`` / ``Shard(0)``.
    """
    check_flat(p)
    if not is_dtensor(p):
        return
    _check_placements(p)


def check_flat(p: torch.Tensor) -> None:
    """Reject an FSDP1 flat parameter (a plain Parameter with FSDP's flags: checked once, when
    an optimizer's step plan is built)."""
    if getattr(p, "_is_flat_param", False) or getattr(p, "_fsdp_flattened", False):
        raise ValueError(
            "param: an FSDP1 flat parameter (FullyShardedDataParallel); lowfp.optim keeps "
            "per-parameter packed states, which FSDP1's flattened shards and optim_state_dict "
            "cannot hold: use torch.distributed.fsdp.fully_shard (FSDP2) instead"
        )


def _check_placements(p: DTensor) -> None:
    for what, t in (("param", p), ("grad", p.grad)):
        if t is None:
            continue
        if not is_dtensor(t):
            raise ValueError(
                f"{what}: a DTensor parameter needs a DTensor gradient, got {type(t).__name__}"
            )
        for pl in t.placements:
            if not (type(pl) is Replicate or (type(pl) is Shard and pl.dim == 0)):
                raise ValueError(
                    f"{what}: DTensor placements {tuple(t.placements)} are not supported; "
                    "lowfp.optim steps DTensors that are replicated or sharded on dim 0 "
                    "(FSDP2's fully_shard), where packed blocks stay inside rows"
                )
    grad = p.grad  # None or, as checked above, a DTensor
    if is_dtensor(grad) and tuple(grad.placements) != tuple(p.placements):
        raise ValueError(
            f"grad: placements {tuple(grad.placements)} differ from the "
            f"parameter's {tuple(p.placements)}"
        )


def _rows(p: torch.Tensor):
    """(rows, cols) of p viewed as (shape[0], -1); a 0-d tensor is one row of one element."""
    rows = p.shape[0] if p.ndim else 1
    return rows, (p.numel() // rows if rows else 0)


def block_aligned(p: torch.Tensor, block: int) -> bool:
    """Whether a sharded DTensor's blocks of ``block`` elements never cross a row (and hence
    never a shard) boundary: True for plain tensors and replicated DTensors."""
    if not _sharded(p):
        return True
    rows, cols = _rows(p)
    return p.ndim >= 1 and cols > 0 and cols % block == 0


def _as_dtensor(p: DTensor, t: torch.Tensor, per_row: int) -> DTensor:
    """Wrap local t (flat, ``local_rows · per_row`` elements) as a (rows, per_row) DTensor
    placed like p. Shares t's storage."""
    rows, _ = _rows(p)
    lrows = local(p).shape[0] if p.ndim else 1
    return DTensor.from_local(
        t.reshape(lrows, per_row),
        p.device_mesh,
        p.placements,
        run_check=False,
        shape=torch.Size((rows, per_row)),
        stride=(per_row, 1),
    )


def wrap_state_dict(optimizer: PackedOptimizer, sd: Dict[str, Any]) -> Dict[str, Any]:
    """DTensor states for DTensor parameters, for DCP.

    Args:
        optimizer: a lowfp optimizer (AdamW, SGD, Muon or its AdamW part).
        sd: torch's ``Optimizer.state_dict()`` of ``optimizer`` (its state tensors are local).

    Returns:
        ``sd`` with the states of DTensor parameters replaced by DTensors laid out like the
        parameter (module docstring), sharing storage with the optimizer's local tensors;
        other parameters' states are left as they are (new dicts, the optimizer's untouched).
    """
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if not any(is_dtensor(p) for p in params):
        return sd
    state = {}
    for i, st in sd["state"].items():
        p = params[int(i)]
        if not is_dtensor(p):
            state[i] = st
            continue
        new = {}
        _, cols = _rows(p)
        for k, t in st.items():
            if k == "step" or not torch.is_tensor(t):
                new[k] = t
            elif "." not in k:  # float32 state: the parameter's layout
                new[k] = DTensor.from_local(
                    t,
                    p.device_mesh,
                    p.placements,
                    run_check=False,
                    shape=p.shape,
                    stride=p.stride(),
                )
            else:
                name, part = k.rsplit(".", 1)
                spec = optimizer._spec(name, optimizer._group_of(p))
                assert spec is not None  # a packed part: the state is quantized
                if part == "alphas" and _core.blockwise_layout(spec, spec["block"])[2] == 0:
                    new[k] = t  # this codec has no per-block bases: empty on every rank
                elif not _sharded(p):  # replicated: the same flat tensor on every rank
                    new[k] = DTensor.from_local(t, p.device_mesh, p.placements, run_check=False)
                else:  # block_aligned(p): whole blocks per row
                    per_row = cols * spec["bits"] // 8 if part == "codes" else cols // spec["block"]
                    new[k] = _as_dtensor(p, t, per_row)
        state[i] = new
    return dict(sd, state=state)


def unwrap_state(key: str, t: Any) -> Any:
    """A saved state tensor as the optimizer keeps it in memory: the local shard, flat for
    packed parts (``*.codes``, ``*.scales``, ``*.alphas``)."""
    if not is_dtensor(t):
        return t
    t = t.to_local()
    return t.reshape(-1) if "." in key else t


def init_state(optimizer: PackedOptimizer) -> None:
    """Create the (zero) states of every parameter that has none, without a step.

    ``dcp.load`` fills the tensors of the state dict it is given, so a fresh optimizer must
    list every state first: call this, then ``dcp.load({"optim": optimizer.state_dict()}, …)``
    and ``optimizer.load_state_dict(...)``. (torch's ``get_state_dict`` does the same with a
    zero-lr step.)

    Args:
        optimizer: :class:`lowfp.optim.AdamW` (and presets), ``SGD`` (groups with momentum)
            or ``Muon`` (both parts).
    """
    inner = getattr(optimizer, "adamw", None)
    if inner is not None:
        init_state(inner)
    for g in [g for g in optimizer.param_groups if optimizer._has_state(g)]:
        for p in g["params"]:
            if p.requires_grad and not optimizer.state.get(p):
                optimizer.state[p].update(optimizer._init_state(p))


def _local_offset(p: DTensor) -> int:
    """First global row of p's local shard."""
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    _, offset = compute_local_shape_and_global_offset(p.shape, p.device_mesh, p.placements)
    return offset[0] if p.ndim else 0


def element_offset(p: torch.Tensor) -> int:
    """Index of p's first local element in the whole tensor (0 unless p is sharded): the
    fused steps key their random bits by it, so that a shard draws the bits the same elements
    draw in one process, at any world size."""
    if not _sharded(p):
        return 0
    rows, cols = _rows(p)
    return _local_offset(p) * cols


def full_rows(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The whole (rows, cols) matrix whose local rows are t, for a DTensor parameter p (an
    all-gather over p's mesh); t itself for a plain parameter. Muon uses it: Newton–Schulz
    needs the whole matrix, so every rank gathers the momentum direction and orthogonalizes
    it redundantly, then keeps its own rows (:func:`local_rows`)."""
    if not _sharded(p):
        return t
    rows, cols = _rows(p)
    return _as_dtensor(p, t, cols).full_tensor()


def local_rows(p: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """The rows of ``full`` (p's global shape, viewed as rows) that p's local shard holds."""
    if not _sharded(p):
        return full
    start = _local_offset(p)
    return full[start : start + local(p).shape[0]]


def agree(ok: bool, params: Iterable[torch.Tensor]) -> bool:
    """``ok`` and-reduced over the mesh of the first sharded DTensor in params (a collective,
    so every rank of that mesh must call it); ``ok`` itself when there is none. Used for the
    non-finite gradient check: one rank's shard may hold the NaN, and every rank must then
    skip the step."""
    p = next((q for q in params if _sharded(q)), None)
    if p is None:
        return ok
    import torch.distributed as dist

    flag = torch.tensor([1 if ok else 0], dtype=torch.int32)
    mesh = p.device_mesh
    for dim in range(mesh.ndim):
        dist.all_reduce(flag, op=dist.ReduceOp.MIN, group=mesh.get_group(dim))
    return bool(flag.item())
