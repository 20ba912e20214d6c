"""The packed-state machinery every lowfp optimizer shares: :class:`PackedOptimizer`.

A subclass names its per-parameter states (``_STATES``), the constructor argument holding
each state's codec (``_CODEC_ARGS``), and implements ``_step_group`` (the fused call of one
param group). Everything else lives here, once: codec validation, state creation, the
per-group step plan, validation before mutation, the non-finite policy, self-describing
state dicts, pickling, reporting.

Design notes
- **Storage.** A state is a float32 tensor of the parameter's shape, or blockwise quantized
  as ``"<name>.codes"`` (uint8, packed), ``"<name>.scales"`` and ``"<name>.alphas"``
  (float32). Blocks run over the parameter's elements in logical (C) order, whatever its
  memory layout, so a checkpoint does not depend on ``channels_last`` or transposes; a
  non-contiguous parameter steps through one contiguous copy of it and of its gradient,
  written back after the step. Rejected: blocks in memory order (no copy, but the states of
  a channels_last model would not load into a contiguous one, and results would differ from
  the contiguous model's).
- **Step plan.** Per param group, the parameters' codec handles (``_core.BlockSpec``, built
  once per codec and block size) and the NumPy views of their state tensors are kept between
  steps, rebuilt when the group's parameters or storage options change, and dropped by every
  path that replaces state tensors (``load_state_dict``, ``__setstate__``, the imports).
  A parameter's view is kept while the parameter shows the same memory (``p.data`` may be
  reassigned); gradients are viewed afresh every step and the views dropped after it (so
  ``zero_grad`` frees them). The states' ``step`` counters are 0-d views of one tensor per
  plan, advanced by one in-place add. Rejected: a foreach add over the counters (about a
  microsecond per tensor), host-only counters (torch's state dicts and tools read ``step``).
- **Atomic steps.** Every parameter of every group is checked, and the non-finite check is
  done, before any state is created or any counter advanced: a step that raises leaves
  weights, states and counters as they were.
- **Checkpoints say what their bytes are.** ``state_dict()`` adds, beside each quantized
  state, ``"<name>.codec"``: the codec as plain data, the block size, the scale rule and the
  layout version (weights_only loads keep working). ``load_state_dict`` compares them with
  this optimizer's, per parameter, and raises ValueError naming both; state dicts from
  before the descriptions (layout 1) load with this optimizer's codecs when the shapes fit.
  ``load_state_dict(sd, requantize=True)`` converts between codecs explicitly (decode with
  the saved codec, encode with this one, nearest rounding).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, AbstractSet, Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from .. import _core, _validate
from .._common import TABLE_ROUNDINGS
from .._types import TableRounding
from ..codec import Dynamic, Linear, Log, _check_choice
from ..formats import format as _format
from ..qtensor import _codec_from_spec, _codec_spec
from . import distributed as _dist

if TYPE_CHECKING:
    from ..cuda.optim import DeviceSkip

__all__ = ["PackedOptimizer", "LAYOUT_VERSION"]

#: Version of the packed-state layout written in ``state_dict()`` (1: before codec
#: descriptions; 2: ``"<name>.codec"`` beside each quantized state).
LAYOUT_VERSION = 2

_KINDS = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
_PLAIN = (torch.nn.Parameter, torch.Tensor)  # not DTensors, FSDP1 flat parameters, …
_PARTS = ("codes", "scales", "alphas")
#: States that are never negative (the second moments of the Adam family): a saved one
#: holding a negative value is an error, not a NaN step.
_NONNEGATIVE = frozenset({"exp_avg_sq", "max_exp_avg_sq"})


def flat(t: torch.Tensor):
    """A NumPy view of a contiguous CPU tensor: float32 as is, 16-bit floats as their uint16
    bit patterns. CUDA tensors stay tensors (flat views), for lowfp.cuda.optim."""
    if t.is_cuda:
        return t.view(-1)
    if t.dtype is torch.float32:
        return t.detach().numpy()
    if t.dtype in (torch.bfloat16, torch.float16):
        return t.detach().view(torch.int16).numpy().view(np.uint16)
    return t.detach().numpy()


def run_closure(closure):
    """Evaluate an optimizer closure with gradients enabled (None without one)."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def cuda_optim():
    """lowfp.cuda.optim (imported on first use: CuPy is optional)."""
    from ..cuda import optim

    return optim


def plain_codec(codec: Any) -> Optional[dict]:
    """A codec as plain data (str/int/float/bool dict, for weights_only state dicts)."""
    if codec is None:
        return None
    return {k: v for k, v in _codec_spec(codec).items() if k != "fields"}


def check_block(block_size: Any, arg: str = "block_size") -> int:
    if not (
        isinstance(block_size, int)
        and not isinstance(block_size, bool)
        and 16 <= block_size <= 4096
        and block_size % 8 == 0
    ):
        raise ValueError(f"{arg}: expected a multiple of 8 in 16..4096, got {block_size!r}")
    return block_size


def check_codec(codec: Any, arg: str):
    """None, or a validated codec object, for one state."""
    if codec is None or isinstance(codec, (Linear, Dynamic, Log)):
        return codec
    if isinstance(codec, dict):  # plain data, as state dicts hold it
        return _codec_from_spec(codec)
    if isinstance(codec, str) or hasattr(codec, "exp_bits"):
        try:
            f = _format(codec)
        except ValueError as e:  # the format's message, under this argument's name
            msg = str(e)
            raise ValueError(f"{arg}: {msg[5:] if msg.startswith('fmt: ') else msg}") from None
        if f.bits > 8:
            raise ValueError(f"{arg}: expected a format of at most 8 bits, got {f.name}")
        return f
    raise TypeError(
        f"{arg}: expected None, a format name, or a Linear/Dynamic/Log codec, "
        f"got {type(codec).__name__}"
    )


def check_lr(lr: Any) -> None:
    if torch.is_tensor(lr):
        if lr.numel() != 1:
            raise ValueError(f"lr: a tensor lr must have one element, got {lr.numel()}")
        lr = float(lr)
    if not lr >= 0.0:
        raise ValueError(f"lr: expected >= 0, got {lr}")


def _scalar(x: Any) -> float:
    """A hyperparameter as a Python float (torch accepts 1-element tensors for lr/betas)."""
    return float(x) if torch.is_tensor(x) else x


_SPECS: Dict[tuple, Any] = {}  # (codec as plain data, block, rounding) -> (dict, BlockSpec)


def spec_dict(spec: Any) -> dict:
    """The plain dict of a block spec given as a dict or as a ``_core.BlockSpec``."""
    return spec if isinstance(spec, dict) else spec.to_dict()


def _block_spec(codec: Any, block: int, rounding: str):
    """(spec dict, ``_core.BlockSpec``) of a codec, built once per process."""
    plain = plain_codec(codec)
    assert plain is not None  # the codec of a quantized state
    key = (tuple(sorted(plain.items())), block, rounding)
    hit = _SPECS.get(key)
    if hit is None:
        d: Dict[str, Any] = {"bits": 0, "signed": True, "zero": True, "alpha": 0.5, "quantile": 0.0}
        d.update(_codec_spec(codec))
        d.update(block=block, scale="absmax", rounding=rounding)
        handle = _core.BlockSpec(d)
        hit = _SPECS[key] = (d, handle)
    return hit


def describe(codec: Any, block: int) -> dict:
    """How a quantized state's bytes are to be read, as plain data (the checkpoint contract)."""
    return {
        "codec": plain_codec(codec),
        "block": block,
        "scale": "absmax",
        "layout": LAYOUT_VERSION,
    }


class _Entry:
    """One parameter of a group's step plan."""

    __slots__ = ("p", "index", "specs", "st", "args", "t", "views", "wview", "wptr", "slot")
    slot: int  # the entry's index in its _Plan (set by the plan)

    def __init__(self, p: torch.Tensor, index: int, specs: tuple):
        self.p, self.index, self.specs = p, index, specs
        self.st: Optional[dict] = None  # the state dict the cached args were made from
        self.args: tuple = ()
        self.t = 0  # the step count, mirrored on the host
        self.views: Optional[tuple] = None  # this step's (param, grad, kind, write-back)
        # the parameter's view and the address it shows
        self.wview: Any = None
        self.wptr: Optional[int] = None


class _Plan:
    """A param group's step plan: its entries and what they were built from."""

    __slots__ = ("key", "entries", "counts")

    def __init__(self, key: tuple, entries: List[_Entry]):
        self.key, self.entries = key, entries
        # The entries' step counters: each state's "step" is a 0-d view of one slot, so a
        # step advances them all with one in-place add (a foreach add over thousands of
        # scalar tensors costs about a microsecond each).
        self.counts = torch.zeros(len(entries), dtype=torch.float32)
        for i, e in enumerate(entries):
            e.slot = i


class PackedOptimizer(torch.optim.Optimizer):
    """Base class of the lowfp optimizers: per-parameter states in float32 or packed low-bit
    storage, fused steps (see the module docstring). Not used directly."""

    #: The per-parameter states, in order.
    _STATES: Tuple[str, ...] = ()
    #: The constructor argument (and param-group key) naming each state's codec.
    _CODEC_ARGS: Dict[str, str] = {}
    #: Storage options a param group may override, with the attribute holding the default.
    _STORAGE_OPTIONS = {
        "block_size": "_block",
        "rounding": "_rounding",
        "min_quant_size": "_min_quant",
    }
    #: Attributes beyond torch's ``defaults``/``state``/``param_groups`` that pickling and
    #: deepcopy keep (subclasses add theirs).
    _PICKLED: Tuple[str, ...] = (
        "_codecs",
        "_block",
        "_rounding",
        "_seed",
        "_min_quant",
        "_nonfinite",
        "_param_rounding",
        "skipped_steps",
        "_warned_skip",
    )

    # ------------------------------------------------------------ configuration

    def _configure(
        self,
        codecs: Dict[str, Any],
        *,
        block_size: int,
        rounding: TableRounding,
        seed: Any,
        min_quant_size: Any,
        nonfinite: str,
        param_rounding: TableRounding,
    ) -> None:
        """Validate and store the storage options and step policies (before torch's
        ``__init__`` adds the param groups)."""
        _check_choice("rounding", rounding, TABLE_ROUNDINGS)
        _check_choice("nonfinite", nonfinite, ("skip", "error"))
        _check_choice("param_rounding", param_rounding, TABLE_ROUNDINGS)
        check_block(block_size)
        if not (isinstance(seed, int) and 0 <= seed < 1 << 64):
            raise ValueError(f"seed: expected an integer in [0, 2**64), got {seed!r}")
        if not (isinstance(min_quant_size, int) and min_quant_size >= 0):
            raise ValueError(f"min_quant_size: expected a non-negative int, got {min_quant_size!r}")
        self._codecs = {name: check_codec(c, self._CODEC_ARGS[name]) for name, c in codecs.items()}
        self._block, self._rounding, self._seed = block_size, rounding, seed
        self._min_quant = min_quant_size
        self._nonfinite, self._param_rounding = nonfinite, param_rounding
        self.skipped_steps = 0
        self._warned_skip = False
        self._plans: Dict[int, _Plan] = {}
        self._dskip: Optional[DeviceSkip] = None  # CUDA: the device-side skips

    @property
    def _DEVICE_SKIP(self) -> bool:  # noqa: N802 - a flag that subclasses override
        """Whether CUDA steps may skip on the device (every group's step is one fused kernel)."""
        return False

    @property
    def skipped_steps(self) -> int:
        """Steps skipped for a non-finite gradient (CUDA: waits for outstanding steps)."""
        self._sync_skips()
        return self._skipped

    @skipped_steps.setter
    def skipped_steps(self, v: int) -> None:
        self._skipped = v

    def _sync_skips(self) -> None:
        """Read back every outstanding CUDA step's skip (waits for the device)."""
        ds = getattr(self, "_dskip", None)
        if ds is not None and ds.pending:
            self._count_skips(len(ds.resolve(block=True)))

    def _count_skips(self, n: int) -> None:
        if n:
            self._skipped += n
            self._warn_skip()

    def _warn_skip(self) -> None:
        if not self._warned_skip:
            self._warned_skip = True
            warnings.warn(
                f"{type(self).__name__}: a gradient holds NaN or inf; the step was "
                "skipped (nothing changed). Further skips are counted in "
                "skipped_steps without a warning; nonfinite='error' raises instead.",
                RuntimeWarning,
                stacklevel=5,
            )

    def __getstate__(self) -> Dict[str, Any]:
        self._sync_skips()
        state = super().__getstate__()
        state.update({k: getattr(self, k) for k in self._PICKLED if hasattr(self, k)})
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        skipped = state.pop("skipped_steps", 0)
        super().__setstate__(state)
        self._skipped, self._dskip = skipped, None
        self._plans = {}

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """Add a param group (see torch.optim.Optimizer), validating its storage overrides."""
        self._check_overrides(param_group)
        super().add_param_group(param_group)
        self._plans = {}

    def _check_overrides(self, group: Dict[str, Any]) -> None:
        """Validate (and normalize, in place) a param group's storage overrides."""
        for arg in dict.fromkeys(self._CODEC_ARGS.values()):
            if arg in group:
                group[arg] = check_codec(group[arg], arg)
        if "block_size" in group:
            check_block(group["block_size"])
        if "rounding" in group:
            _check_choice("rounding", group["rounding"], TABLE_ROUNDINGS)
        if "min_quant_size" in group and not (
            isinstance(group["min_quant_size"], int) and group["min_quant_size"] >= 0
        ):
            raise ValueError(
                f"min_quant_size: expected a non-negative int, got {group['min_quant_size']!r}"
            )

    def _override_keys(self) -> tuple:
        return tuple(dict.fromkeys((*self._CODEC_ARGS.values(), *self._STORAGE_OPTIONS)))

    def _opt(self, group: Optional[dict], key: str):
        """A storage option (``block_size``, ``rounding``, ``min_quant_size``) of a group."""
        if group is not None and key in group:
            return group[key]
        return getattr(self, self._STORAGE_OPTIONS[key])

    def _codec_of(self, name: str, group: Optional[dict]):
        arg = self._CODEC_ARGS[name]
        if group is not None and arg in group:
            return group[arg]
        return self._codecs[name]

    def _group_of(self, p: torch.Tensor) -> Optional[dict]:
        for g in self.param_groups:
            if any(q is p for q in g["params"]):
                return g
        return None

    def _spec(self, name: str, group: Optional[dict] = None) -> Optional[dict]:
        """The block spec (plain dict) of a quantized state of the group; None for float32."""
        codec = self._codec_of(name, group)
        if codec is None:
            return None
        return _block_spec(codec, self._opt(group, "block_size"), self._opt(group, "rounding"))[0]

    def _quantized(self, p: torch.Tensor, name: str, group: Optional[dict] = None) -> bool:
        return (
            self._codec_of(name, group) is not None
            and p.numel() >= self._opt(group, "min_quant_size")
            # a sharded DTensor whose rows do not hold whole blocks keeps float32 states
            and _dist.block_aligned(p, self._opt(group, "block_size"))
        )

    def _specs(self, p: torch.Tensor, group: Optional[dict]) -> tuple:
        """Per state: None (float32) or (codec, spec dict, handle) for parameter p."""
        out: List[Optional[tuple]] = []
        for name in self._STATES:
            if not self._quantized(p, name, group):
                out.append(None)
                continue
            codec = self._codec_of(name, group)
            d, h = _block_spec(codec, self._opt(group, "block_size"), self._opt(group, "rounding"))
            out.append((codec, d, h))
        return tuple(out)

    def _init_state(self, p: torch.Tensor, group: Optional[dict] = None) -> Dict[str, torch.Tensor]:
        group = self._group_of(p) if group is None else group
        st: Dict[str, torch.Tensor] = {"step": torch.tensor(0.0)}
        n = _dist.local(p).numel()  # a DTensor's states live on its local shard
        for name, spec in zip(self._STATES, self._specs(p, group)):
            if spec is None:
                st[name] = torch.zeros(_dist.local(p).shape, dtype=torch.float32, device=p.device)
                continue
            _, d, h = spec
            packed_len, nblocks, nalphas, _ = _core.blockwise_layout(h, n)
            packed = np.empty(packed_len, np.uint8)
            scales = np.empty(nblocks, np.float32)
            alphas = np.empty(nalphas, np.float32)
            _core.blockwise_quantize(np.zeros(n, np.float32), h, packed, scales, alphas, 0, 0)
            st[f"{name}.codes"] = torch.from_numpy(packed).to(p.device)
            st[f"{name}.scales"] = torch.from_numpy(scales).to(p.device)
            st[f"{name}.alphas"] = torch.from_numpy(alphas).to(p.device)
        return st

    # ------------------------------------------------------------ the step plan

    def _plan(self, gi: int, group: dict) -> _Plan:
        """The group's step plan, rebuilt when its parameters or storage options changed."""
        key = (*group["params"], *(group.get(k) for k in self._override_keys()))
        plan = self._plans.get(gi)
        if (
            plan is not None
            and len(plan.key) == len(key)
            and all(a is b for a, b in zip(plan.key, key))
        ):
            return plan
        base = sum(len(g["params"]) for g in self.param_groups[:gi])
        for p in group["params"]:
            _dist.check_flat(p)
        entries = [
            _Entry(p, base + i + 1, self._specs(p, group)) for i, p in enumerate(group["params"])
        ]
        plan = self._plans[gi] = _Plan(key, entries)
        return plan

    def _bind(self, plan: "_Plan", e: _Entry, st: dict) -> None:
        """Take a new or loaded state into the entry: NumPy views of its tensors as the fused
        steps take them, and its step counter as a view of the plan's slot (value kept)."""
        args = []
        for name, spec in zip(self._STATES, e.specs):
            if spec is None:
                args.append(flat(st[name]))
            else:
                handle = spec[1] if e.p.is_cuda else spec[2]
                args.append((handle, *(flat(st[f"{name}.{k}"]) for k in _PARTS)))
        c = plan.counts[e.slot]
        c.copy_(st["step"])
        st["step"] = c
        e.st, e.args, e.t = st, tuple(args), int(c)

    #: Whether the fused step reads the entries' views (Muon builds its own inputs).
    _VIEWS = True

    def _stepping(self, group: dict, plan: _Plan) -> list:
        """The group's entries with a gradient, each checked (raises before anything
        changes) and given this step's views (:meth:`_views`)."""
        out = []
        negate = bool(group.get("maximize", False))
        for e in plan.entries:
            p = e.p
            g = p.grad
            if g is None:
                continue
            if not (
                type(p) in _PLAIN
                and g.dtype is p.dtype
                and p.dtype in _KINDS
                and not g.is_sparse
                and g.shape == p.shape
                and g.device == p.device
            ):
                self._check(p, e.index)  # raises, naming the parameter (or a DTensor passes)
            e.views = self._views(e, negate) if self._VIEWS else None
            out.append(e)
        return out

    def _check(self, p: torch.Tensor, index: int) -> None:
        """A parameter this optimizer can step (raises ValueError/TypeError naming it)."""
        g = p.grad
        assert g is not None  # called for parameters with a gradient
        what = f"param {index - 1} (shape {tuple(p.shape)})"
        if g.is_sparse:
            raise ValueError(f"grad of {what}: sparse gradients are not supported")
        if p.is_complex() or g.is_complex():
            raise TypeError(f"{what}: complex parameters are not supported")
        if p.dtype not in _KINDS or g.dtype != p.dtype:
            raise TypeError(
                f"{what}: expected float32, bfloat16 or float16 parameters with "
                f"gradients of the same dtype, got {p.dtype} and {g.dtype}"
            )
        if p.device.type not in ("cpu", "cuda"):
            raise ValueError(f"{what}: on {p.device}; lowfp.optim runs on CPU and CUDA tensors")
        if g.device != p.device:
            raise ValueError(f"grad of {what}: on {g.device}, its parameter on {p.device}")
        if g.shape != p.shape:
            raise ValueError(f"grad of {what}: shape {tuple(g.shape)} differs from the parameter's")
        _dist.check_param(p)  # FSDP1 flat parameters, DTensor placements

    def _prepare(self) -> Optional[list]:
        """Check every group, apply the non-finite policy; then create missing states and
        advance the step counters. Returns per group (group, entries), or None when the step
        is skipped. Nothing is changed before every check has passed."""
        todo, plans = [], []
        try:
            for gi, group in enumerate(self.param_groups):
                plan = self._plan(gi, group)
                plans.append(plan)
                todo.append((group, self._stepping(group, plan)))
            go = self._grads_finite([e for _, es in todo for e in es])
        except BaseException:
            self._drop_views()
            raise
        if not go:
            self._drop_views()
            return None
        state = self.state
        for (group, entries), plan in zip(todo, plans):
            if not entries or not self._has_state(group):
                continue
            for e in entries:
                st = state.get(e.p)  # one lookup per entry (tensors hash in Python)
                if not st:
                    st = state[e.p]
                    st.update(self._init_state(e.p, group))
                if e.st is not st:  # a new or loaded state: its views, its counter
                    self._bind(plan, e, st)
            if len(entries) == len(plan.entries):
                plan.counts.add_(1.0)
            else:
                plan.counts.index_add_(
                    0, torch.tensor([e.slot for e in entries]), torch.ones(len(entries))
                )
            for e in entries:
                e.t += 1
        return todo

    @torch.no_grad()
    def step(self, closure=None):
        """One optimization step (see torch.optim.Optimizer.step): every group's parameters
        with gradients, one fused call per group."""
        loss = run_closure(closure)
        todo: Any = ()
        try:
            todo = self._prepare() or ()
            for group, entries in todo:
                if entries:
                    self._step_group(group, entries)
        finally:
            ds = self._dskip
            if ds is not None and ds.bit >= 0:  # a CUDA step skipping on the device: close it
                ds.end([e for _, es in todo for e in es])
            self._drop_views()
        return loss

    def _step_group(self, group: dict, entries: list) -> None:
        """The fused step of one group's entries (checked, states created, counted)."""
        raise NotImplementedError

    def _has_state(self, group: dict) -> bool:
        """Whether the group's parameters keep states (SGD without momentum has none)."""
        return True

    def _device_skip(self, entries: List[_Entry]) -> bool:
        """CUDA steps that skip on the device (lowfp.cuda.optim.DeviceSkip): every entry on
        one CUDA device, plain tensors, nonfinite="skip", an optimizer whose groups step in
        fused kernels only. Opens the step (the check kernel) and returns True then."""
        dev = entries[0].p.device if entries else None
        if not (
            self._DEVICE_SKIP
            and self._nonfinite == "skip"
            and dev is not None
            and dev.type == "cuda"
            and all(
                e.views is not None and type(e.p) in _PLAIN and e.p.device == dev for e in entries
            )
        ):
            if self._dskip is not None and self._dskip.pending:  # back to host checks
                self._sync_skips()
                self._refresh_counts(entries)
            return False
        if self._dskip is None or self._dskip.device != dev:
            self._sync_skips()
            self._dskip = cuda_optim().DeviceSkip(dev)
        ds = self._dskip
        self._count_skips(len(ds.resolve(block=False)))
        ds.begin(entries)
        self._refresh_counts(entries)
        return True

    def _refresh_counts(self, entries: List[_Entry]) -> None:
        """Entries whose step counter a device read-back corrected: their host mirrors too."""
        ds = self._dskip
        assert ds is not None  # called while the device skip is on
        for e in entries:
            if e.p in ds.dirty:
                ds.dirty.discard(e.p)
                if e.st is not None:
                    e.t = int(e.st["step"])

    def _step_context(self, entries: List[_Entry], scalars_at: Any = None) -> dict:
        """Keyword arguments of a CUDA group step under the device skip (else none)."""
        ds = self._dskip
        if ds is None or ds.bit < 0:
            return {}
        return {"ctx": ds.context([e.p for e in entries], [e.t for e in entries], scalars_at)}

    def _grads_finite(self, entries: List[_Entry]) -> bool:
        """Apply the ``nonfinite`` policy; True when the step may proceed."""
        if self._device_skip(entries):
            return True
        gpu: List[torch.Tensor] = []
        views: List[np.ndarray] = []
        kinds: List[str] = []
        others: List[torch.Tensor] = []
        for e in entries:
            if e.views is None:
                assert e.p.grad is not None  # the step's entries have gradients
                g = _dist.local(e.p.grad)
                (gpu if g.is_cuda else others).append(g)
            elif e.p.is_cuda:
                gpu.append(e.views[1])
            else:  # the step's own dense views: one parallel scan in Rust for them all
                views.append(e.views[1])
                kinds.append(e.views[2])
        finite = _core.all_finite_many(views, kinds) and all(
            bool(torch.isfinite(g).all()) for g in others
        )
        if finite and gpu:  # CUDA gradients: one host synchronization for them all
            finite = bool(torch.stack([torch.isfinite(g).all() for g in gpu]).all())
        params = [e.p for e in entries]
        # sharded DTensors: a NaN in one rank's shard skips the step on every rank
        if _dist.agree(finite, params):
            return True
        if self._nonfinite == "error":
            raise ValueError("grad: a gradient holds NaN or inf (nonfinite='error')")
        self._count_skips(1)
        return False

    def _drop_views(self) -> None:
        """Forget this step's views (they hold the gradients, which ``zero_grad`` must be
        able to free)."""
        for plan in self._plans.values():
            for e in plan.entries:
                e.views = None

    @staticmethod
    def _views(e: _Entry, negate: bool = False):
        """(param, grad, kind) of an entry as NumPy views of dense local tensors (CUDA: flat
        tensors), and the (param, copy) pair to write back after the step, or None. A
        non-contiguous parameter or gradient steps through a contiguous copy; ``negate``
        (torch's ``maximize``) steps with a negated copy of the gradient. The parameter's
        view is kept between steps while the parameter still shows the same memory (a
        reassigned ``p.data`` has another address: the live view keeps the old one alive)."""
        p = e.p
        plain = type(p) in _PLAIN
        w = p if plain else _dist.local(p)
        assert p.grad is not None  # the step's entries have gradients
        g = p.grad if plain else _dist.local(p.grad)
        if negate:
            g = torch.neg(g)
        elif not g.is_contiguous():
            g = g.contiguous()
        kind = _KINDS[w.dtype]
        if not w.is_contiguous():
            wc = w.contiguous()
            return flat(wc), flat(g), kind, (w, wc)
        ptr = w.data_ptr()
        if ptr != e.wptr or w.is_cuda or e.wview.size != w.numel():
            e.wview, e.wptr = flat(w), ptr
        return e.wview, flat(g), kind, None

    @staticmethod
    def _write_back(copies: list) -> None:
        for w, wc in copies:
            w.copy_(wc)

    # ------------------------------------------------------------ checkpoints

    def state_dict(self) -> Dict[str, Any]:
        """torch's state dict, plus what the bytes are: ``"<name>.codec"`` beside each
        quantized state, ``"lowfp"`` (layout version, optimizer class), and param-group codec
        overrides as plain data. Loads with ``torch.load(..., weights_only=True)``."""
        self._sync_skips()  # CUDA: exact step counters
        sd = super().state_dict()
        for g in sd["param_groups"]:
            for arg in dict.fromkeys(self._CODEC_ARGS.values()):
                if arg in g:
                    g[arg] = plain_codec(g[arg])
        groups = [g for g in self.param_groups for _ in g["params"]]
        ids = [i for g in sd["param_groups"] for i in g["params"]]
        for i, group in zip(ids, groups):
            st = sd["state"].get(i)
            if not st:
                continue
            st = sd["state"][i] = dict(st)
            for name in self._STATES:
                if f"{name}.codes" in st:
                    st[f"{name}.codec"] = describe(
                        self._codec_of(name, group), self._opt(group, "block_size")
                    )
        sd["lowfp"] = {"layout": LAYOUT_VERSION, "optimizer": type(self).__name__}
        return _dist.wrap_state_dict(self, sd)  # DTensor parameters: DTensor states, for DCP

    def load_state_dict(self, state_dict: Dict[str, Any], *, requantize: bool = False) -> None:
        """Load a state dict saved by a lowfp optimizer (``weights_only`` loads work).

        Args:
            state_dict: as ``state_dict()`` returns it (layout 1, from before codec
                descriptions, loads with this optimizer's codecs when the shapes fit).
            requantize: convert states saved with other codecs: decode them with the saved
                codec and encode them with this optimizer's (nearest rounding). Without it a
                codec mismatch is an error.

        Raises:
            ValueError: a saved state's codec, block size or layout differs from this
                optimizer's (naming the parameter and both), the param groups' storage
                overrides differ, or the state's shapes do not match; a value is out of
                range (a hyperparameter, a step that is not an integer >= 0, a non-finite or
                negative scale, a per-block base outside (0, 1), a code without a level, a
                non-finite state, a negative second moment). Nothing is loaded then.
            TypeError: a part of the state dict has the wrong type (codes not uint8, ...).
        """
        if (
            not isinstance(state_dict, dict)
            or "state" not in state_dict
            or "param_groups" not in state_dict
        ):
            raise ValueError(
                "state_dict: expected a dict with 'state' and 'param_groups' (as "
                "Optimizer.state_dict() returns)"
            )
        self._sync_skips()  # outstanding CUDA steps must not correct the loaded counters
        sd = dict(state_dict)
        sd.pop("lowfp", None)
        # torch.distributed.checkpoint loads the non-tensor leaves of a nested state dict
        # (the codec descriptions) a second time under string keys ("0" beside 0): drop the
        # echoes, which torch's load would otherwise keep as states of no parameter.
        state = sd["state"]
        if not isinstance(state, dict):
            raise TypeError(
                f"state_dict: state: expected a dict (parameter id -> state), got "
                f"{type(state).__name__}"
            )
        echoes = [k for k in state if isinstance(k, str) and k.isdigit() and int(k) in state]
        if echoes:
            sd["state"] = {k: v for k, v in state.items() if k not in echoes}
        overrides = self._check_saved_overrides(sd)
        sd["param_groups"] = [self._legacy_group(g) for g in sd["param_groups"]]
        converted = self._check_saved_codecs(sd, requantize)
        super().load_state_dict(sd)
        self._restore_loaded(sd, overrides, converted)

    def _legacy_group(self, g: dict) -> dict:
        """A saved param group in this version's keys (subclasses rename old keys)."""
        return g

    def _saved_params(self, state_dict: Dict[str, Any]):
        """(saved id, parameter, group, position) for every saved state, as torch pairs them."""
        out, pos = {}, 0
        for saved_g, g in zip(state_dict["param_groups"], self.param_groups):
            for i, p in zip(saved_g["params"], g["params"]):
                out[i] = (p, g, pos)
                pos += 1
        return out

    def _check_saved_codecs(self, state_dict: Dict[str, Any], requantize: bool) -> dict:
        """Compare every saved quantized state's description with this optimizer's codec for
        that parameter. Returns {(saved id, name): saved codec} for states to convert."""
        ids = self._saved_params(state_dict)
        convert = {}
        # copies of the saved states (the step counters are normalized in them)
        state_dict["state"] = dict(state_dict["state"])
        for i, saved in state_dict["state"].items():
            if i not in ids:
                raise ValueError(
                    f"state_dict: state: expected states of the parameter ids the "
                    f"param groups list, got one for id {i!r}"
                )
            if not isinstance(saved, dict):
                raise TypeError(
                    f"state_dict: state {i!r}: expected a dict (state name -> "
                    f"tensor), got {type(saved).__name__}"
                )
            saved = state_dict["state"][i] = dict(saved)
            p, group, pos = ids[i]
            what = f"parameter {pos} (shape {tuple(p.shape)})"
            if any(torch.is_tensor(t) for t in saved.values()) or "step" in saved:
                if "step" not in saved:
                    raise _validate.missing(
                        f"state_dict: {what}", "step", "a step counter beside the states"
                    )
                saved["step"] = _validate.step(f"state_dict: {what}", saved["step"])
            for name in self._STATES:
                quantized = self._quantized(p, name, group)
                mine = (
                    describe(self._codec_of(name, group), self._opt(group, "block_size"))
                    if quantized
                    else None
                )
                if f"{name}.codes" in saved:
                    theirs = saved.get(f"{name}.codec")
                    if theirs is None:  # layout 1: read with this optimizer's codecs
                        continue
                    # checked, and in its canonical form (what describe() writes)
                    theirs = describe(
                        *_validate.description(theirs, f"state_dict: {what} {name}", LAYOUT_VERSION)
                    )
                elif name in saved:
                    theirs = None  # float32
                else:
                    continue  # torch's own load / the layout check reports it
                if theirs == mine:
                    continue
                if not requantize:
                    raise ValueError(
                        f"state_dict: {name} of {what} was saved as {_show(theirs)}, this "
                        f"optimizer stores it as {_show(mine)}; pass requantize=True to "
                        "convert (decode, re-encode to nearest), or build the optimizer with "
                        "the saved codecs"
                    )
                convert[(i, name)] = theirs
            # the saved tensors' shapes, dtypes and values, before anything is loaded
            tensors = {k: _dist.unwrap_state(k, t) for k, t in saved.items() if torch.is_tensor(t)}
            self._check_layout(p, tensors, group, skip={name for (j, name) in convert if j == i})
            self._check_values(
                p,
                group,
                tensors,
                f"state_dict: {what}",
                {name: convert[(j, name)] for (j, name) in convert if j == i},
            )
        return convert

    def _check_values(
        self, p: torch.Tensor, group: dict, st: Dict[str, torch.Tensor], where: str, converted: dict
    ) -> None:
        """A saved state's values (its layout checked): see ``_validate.state_values``. A
        state to convert is read with its saved codec (``converted``: name -> description,
        None for float32), after its own layout is checked."""
        if not st:
            return
        n = _dist.local(p).numel()
        specs = self._specs(p, group)
        for name, spec in zip(self._STATES, specs):
            if name in converted:
                theirs = converted[name]
                bs = (
                    None
                    if theirs is None
                    else _block_spec(check_codec(theirs["codec"], name), theirs["block"], "nearest")
                )
                _check_parts(where, st, name, None if bs is None else bs[1], n)
            else:
                bs = None if spec is None else spec[1:]
            if (name if bs is None else f"{name}.codes") not in st:
                continue  # layout-checked: a state this parameter does not keep
            _validate.state_values(where, st, name, bs, n, name in _NONNEGATIVE)

    def _check_saved_overrides(self, state_dict: Dict[str, Any]) -> list:
        """Each param group's storage overrides as configured; a ValueError if the saved
        groups' differ (torch's load replaces group values with the saved ones)."""
        _validate.param_groups(
            state_dict["param_groups"], [len(g["params"]) for g in self.param_groups]
        )
        keys = self._override_keys()
        codec_args = set(self._CODEC_ARGS.values())
        overrides = [{k: g[k] for k in keys if k in g} for g in self.param_groups]
        unset = "(not set)"
        for i, (saved_group, mine) in enumerate(zip(state_dict["param_groups"], overrides)):
            for k in keys:
                saved, ours = saved_group.get(k, unset), mine.get(k, unset)
                if k in codec_args:
                    ours = ours if ours == unset else plain_codec(ours)
                    if isinstance(saved, dict):  # checked, in its canonical form
                        saved = plain_codec(
                            _validate.codec(saved, f"state_dict: param group {i}", k)
                        )
                    elif saved != unset and saved is not None:
                        saved = plain_codec(check_codec(saved, k))
                elif saved != unset and not isinstance(saved, (int, str)):
                    raise TypeError(
                        f"state_dict: param group {i}: {k}: expected an int or a "
                        f"str, got {type(saved).__name__}"
                    )
                if saved != ours:
                    raise ValueError(
                        f"state_dict: param group {i} was saved with {k}={saved!r},"
                        f" this optimizer has {k}={ours!r}"
                    )
        return overrides

    def _restore_loaded(self, state_dict: Dict[str, Any], overrides: list, converted: dict) -> None:
        """After torch's load_state_dict: put back each group's storage overrides (torch
        replaced them with the saved plain data), undo torch's casts, convert what was asked,
        check the layout."""
        for g, mine in zip(self.param_groups, overrides):
            for k in self._override_keys():
                g.pop(k, None)
            g.update(mine)
        self._plans = {}
        ids = self._saved_params(state_dict)
        for i, saved in state_dict["state"].items():
            p, group, _ = ids[i]
            st = self.state[p]
            for k in [k for k in st if k.endswith(".codec")]:
                del st[k]
            # torch casts every state tensor of a float parameter to the parameter's dtype
            # (packed codes to float32, float32 moments to bfloat16): put back the saved ones.
            # The step counter is copied too: torch keeps the saved tensor itself, which the
            # in-place counter update would then share with the optimizer that saved it.
            for k, t in saved.items():
                if torch.is_tensor(t):
                    dev = "cpu" if k == "step" else _dist.local(p).device  # CPU file, CUDA params
                    st[k] = _dist.unwrap_state(k, t).detach().to(dev).clone().contiguous()
            for name in self._STATES:
                if (i, name) in converted:
                    self._convert(p, group, st, name, converted[(i, name)])

    def _convert(self, p, group, st, name: str, theirs: Optional[dict]) -> None:
        """Re-encode one loaded state from the saved codec (``theirs``) to this one's."""
        if theirs is None:
            value = st.pop(name).float().reshape(-1).cpu()
        else:
            d, h = _block_spec(check_codec(theirs["codec"], name), theirs["block"], "nearest")
            value = self._decode(st, p, name, h)
            for k in _PARTS:
                st.pop(f"{name}.{k}")
        fresh = self._init_state(p, group)
        if name in fresh:
            st[name] = value.view(_dist.local(p).shape).to(p.device)
            return
        spec = self._specs(p, group)[self._STATES.index(name)]
        h = _block_spec(spec[0], self._opt(group, "block_size"), "nearest")[1]
        parts = [fresh[f"{name}.{k}"].cpu() for k in _PARTS]
        codes, scales, alphas = (t.numpy() for t in parts)
        _core.blockwise_quantize(value.numpy(), h, codes, scales, alphas, 0, 0)
        for k, t in zip(_PARTS, parts):
            st[f"{name}.{k}"] = t.to(p.device)

    def _check_layout(
        self,
        p: torch.Tensor,
        st: Dict[str, torch.Tensor],
        group: dict,
        skip: AbstractSet[str] = frozenset(),
    ) -> None:
        """A saved state must have this optimizer's tensors for ``p`` (shapes, dtypes), but
        for the states named in ``skip`` (converted on load)."""
        if not st:
            return
        want = self._init_state(p, group)
        for k, t in want.items():
            if k == "step" or k.split(".")[0] in skip:
                continue
            if k not in st or st[k].shape != t.shape or (k != "step" and st[k].dtype != t.dtype):
                got = f"{tuple(st[k].shape)} {st[k].dtype}" if k in st else "missing"
                raise ValueError(
                    f"state_dict: state {k!r} of a parameter of shape {tuple(p.shape)} is {got}, "
                    f"expected {tuple(t.shape)} {t.dtype}: saved with a different "
                    f"configuration ({self.summary().splitlines()[0]} …)"
                )

    # ------------------------------------------------------------ plain float32 states

    def dequantized_state(self, p: torch.Tensor, name: str) -> torch.Tensor:
        """One state of parameter ``p`` decoded to float32, in ``p``'s (local) shape, on the
        CPU: what the next step will read.

        Raises:
            KeyError: ``p`` has no state yet, or this optimizer has no state ``name``.
        """
        if name not in self._STATES:
            raise KeyError(f"name: expected one of {self._STATES}, got {name!r}")
        st = self.state.get(p)
        if not st:
            raise KeyError("p: this parameter has no state yet (no step has touched it)")
        return self._decode(st, p, name).view(_dist.local(p).shape)

    def _decode(
        self, st: Dict[str, torch.Tensor], p: torch.Tensor, name: str, handle: Any = None
    ) -> torch.Tensor:
        """A state as a flat float32 CPU tensor."""
        if name in st:
            return st[name].detach().float().reshape(-1).cpu().clone()
        if handle is None:
            handle = self._specs(p, self._group_of(p))[self._STATES.index(name)][2]
        out = np.empty(_dist.local(p).numel(), np.float32)
        _core.blockwise_dequantize(
            st[f"{name}.codes"].cpu().numpy(),
            handle,
            st[f"{name}.scales"].cpu().numpy(),
            st[f"{name}.alphas"].cpu().numpy(),
            1.0,
            out,
        )
        return torch.from_numpy(out)

    # ------------------------------------------------------------ reporting

    def state_nbytes(self) -> int:
        """Exact bytes of all optimizer state (the step counters included)."""
        return sum(
            t.numel() * t.element_size()
            for st in self.state.values()
            for t in st.values()
            if torch.is_tensor(t)
        )

    def _state_lines(self) -> list:
        """One line per state: how it is stored."""
        lines = []
        for name in self._STATES:
            c = self._codecs[name]
            how = (
                "float32"
                if c is None
                else (
                    f"{c!r}, block {self._block}, fp32 absmax scales, {self._rounding} rounding"
                    + (f"; float32 below {self._min_quant} elements" if self._min_quant > 0 else "")
                )
            )
            lines.append(f"{name}: {how}")
        for i, g in enumerate(self.param_groups):
            own = {k: g[k] for k in self._override_keys() if k in g}
            if own:
                how = ", ".join(f"{k}={'float32' if v is None else v!r}" for k, v in own.items())
                lines.append(f"param group {i} ({len(g['params'])} tensors): {how}")
        return lines

    def _count_lines(self) -> list:
        """Tensors with quantized states, and state bytes per parameter element."""
        params = [p for g in self.param_groups for p in g["params"] if self.state.get(p)]
        quant = sum(1 for p in params if any(k.endswith(".codes") for k in self.state[p]))
        elems = sum(_dist.local(p).numel() for p in params)
        nbytes = self.state_nbytes()
        f32 = 4 * len(self._STATES) * elems
        lines = [f"tensors with state: {len(params)} ({quant} with quantized states)"]
        if elems:
            lines.append(
                f"state bytes per parameter: {nbytes / elems:.3f} (float32 states: "
                f"{4 * len(self._STATES)}; {nbytes / f32:.1%} of float32)"
            )
        return lines

    def summary(self) -> str:
        """How each state is stored; how many tensors have quantized states; bytes per
        parameter against float32 states; the bytes of all state."""
        return "\n".join(
            self._state_lines() + self._count_lines() + [f"state bytes: {self.state_nbytes()}"]
        )


def _check_parts(where: str, st: Dict[str, torch.Tensor], name: str, handle: Any, n: int) -> None:
    """The tensors of a saved state to convert, against its saved codec (``handle``; None:
    float32): present, 1-D, of the dtypes and lengths that codec stores ``n`` elements in."""
    if handle is None:
        want = {name: (torch.float32, n)}
    else:
        packed, blocks, alphas, _ = _core.blockwise_layout(handle, n)
        want = {
            f"{name}.codes": (torch.uint8, packed),
            f"{name}.scales": (torch.float32, blocks),
            f"{name}.alphas": (torch.float32, alphas),
        }
    for k, (dtype, size) in want.items():
        t = st.get(k)
        if t is None:
            raise _validate.missing(where, k, f"a {dtype} tensor of {size} elements")
        if t.dtype != dtype:
            raise TypeError(f"{where}: {k}: expected dtype {dtype}, got {t.dtype}")
        if t.numel() != size or (handle is not None and t.dim() != 1):
            raise _validate.found(
                where,
                k,
                f"{size} elements" + ("" if handle is None else " in one dimension"),
                f"shape {tuple(t.shape)}",
            )


def _show(desc: Optional[dict]) -> str:
    if desc is None:
        return "float32"
    c = dict(desc["codec"])
    kind = c.pop("codec")
    name = c.pop("format", None)
    inner = name if name else ", ".join(f"{k}={v}" for k, v in sorted(c.items()))
    return f"{kind}({inner}) in blocks of {desc['block']}"
