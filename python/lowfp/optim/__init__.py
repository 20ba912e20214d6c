"""Torch optimizers whose states live in packed low-bit storage (CPU, fused Rust steps).

Each state (first moment ``exp_avg``, second moment ``exp_avg_sq``) is chosen on its own:
``None`` (float32), a float format of at most 8 bits (``"e4m3"``, …), or a
:class:`lowfp.Linear`, :class:`lowfp.Dynamic` or :class:`lowfp.Log` codec, stored blockwise
with float32 absmax scales. One call into Rust per param group decodes both states of every
parameter, applies the update, re-encodes the states and writes the weights, in one pass over
memory, multithreaded, with the GIL released.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

import numpy as np

from .. import _core
from ..codec import Dynamic, Linear, Log, _check_choice
from ..formats import format as _format
from ..qtensor import _codec_spec

try:
    import torch
except ImportError as e:  # pragma: no cover - torch is an optional extra
    raise ImportError("lowfp.optim needs torch: pip install 'lowfp[torch]'") from e

from . import distributed as _dist  # DTensor (FSDP2) parameters and DCP checkpoints

__all__ = ["AdamW", "AdamW8bit", "AdamW4bit", "AdamWFp8", "SOLO", "solo_beta1",
           "LowPrecision", "Q", "SGD", "Muon", "Muon8bit"]

_STATES = ("exp_avg", "exp_avg_sq")


def _grad_finite(g: torch.Tensor) -> bool:
    """No NaN or inf in g: a parallel Rust scan for contiguous float32/bfloat16 CPU tensors."""
    g = _dist.local(g)  # a DTensor gradient: this rank's shard (ranks agree in _grads_finite)
    if g.device.type == "cpu" and g.is_contiguous() and g.dtype in _KINDS:
        return _core.all_finite(_flat(g), _KINDS[g.dtype])
    return bool(torch.isfinite(g).all())


def _cuda_optim():
    """lowfp.cuda.optim (imported on first use: CuPy is optional)."""
    from ..cuda import optim

    return optim


def _run_closure(closure):
    """Evaluate an optimizer closure with gradients enabled (None without one)."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


_KINDS = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


def _flat(t: torch.Tensor) -> np.ndarray:
    """A 1-D NumPy view: float32 as is, 16-bit floats as their uint16 bit patterns.
    CUDA tensors stay tensors (flat views), for lowfp.cuda.optim."""
    if t.is_cuda:
        return t.view(-1)
    if t.dtype in (torch.bfloat16, torch.float16):
        return t.view(-1).view(torch.int16).numpy().view(np.uint16)
    return t.view(-1).numpy()


def _plain_codec(codec: Any):
    """A codec as plain data (str/int/float/bool dict, for weights_only state dicts)."""
    if codec is None:
        return None
    return {k: v for k, v in _codec_spec(codec).items() if k != "fields"}


def _check_block(block_size: Any, arg: str = "block_size") -> int:
    if not (isinstance(block_size, int) and 16 <= block_size <= 4096 and block_size % 8 == 0):
        raise ValueError(f"{arg}: expected a multiple of 8 in 16..4096, got {block_size!r}")
    return block_size


def _codec(codec: Any, arg: str):
    """None, or a validated codec object, for one state."""
    if codec is None or isinstance(codec, (Linear, Dynamic, Log)):
        return codec
    if isinstance(codec, str) or hasattr(codec, "exp_bits"):
        f = _format(codec)
        if f.bits > 8:
            raise ValueError(f"{arg}: expected a format of at most 8 bits, got {f.name}")
        return f
    raise TypeError(f"{arg}: expected None, a format name, or a Linear/Dynamic/Log codec, "
                    f"got {type(codec).__name__}")


class AdamW(torch.optim.Optimizer):
    """AdamW (or Adam with ``decoupled=False``) with low-bit packed states.

    Args:
        params: parameters or param groups (float32 CPU tensors).
        lr, betas, eps, weight_decay: as torch.optim.AdamW.
        decoupled: True for AdamW's decoupled weight decay, False for Adam's L2 term.
        exp_avg, exp_avg_sq: codec of each state (None = float32).
        block_size: elements per block of the quantized states (16..4096, multiple of 8).
        rounding: "nearest" or "stochastic" re-encoding of the states.
        seed: key of the stochastic rounding (with the step, parameter and state).
        min_quant_size: parameters with fewer elements keep float32 states.
        nonfinite: what a step does when any gradient holds NaN or ±inf: "skip" (default:
            nothing is updated, ``skipped_steps`` counts it; packed states never see a NaN)
            or "error" (ValueError).
        param_rounding: how bfloat16/float16 parameters take the float32 update: "stochastic"
            (default, so small updates are not lost without an fp32 master copy) or "nearest".
            States are float32 or packed whatever the parameter's dtype.

    Per-parameter storage: a param group may set its own ``exp_avg``, ``exp_avg_sq``,
    ``block_size``, ``rounding`` and ``min_quant_size`` (e.g. ``{"params": [emb.weight],
    "exp_avg": None, "exp_avg_sq": None}`` keeps an embedding's states in float32); the
    constructor's values are the defaults. ``state_dict()`` holds them as plain data, and
    loading checks that they match.

    Raises:
        ValueError: hyperparameters out of range, unknown codecs.
    """

    #: The per-parameter states, in order (subclasses sharing this storage list their own).
    _STATES = _STATES
    #: CUDA parameters step through lowfp.cuda.optim (an optimizer borrowing _advance without
    #: this flag rejects them).
    _CUDA = True
    #: The constructor argument (and param-group key) naming each state's codec.
    _CODEC_ARGS = {"exp_avg": "exp_avg", "exp_avg_sq": "exp_avg_sq"}
    #: Storage options a param group may override, with the attribute holding the default.
    _STORAGE_OPTIONS = {"block_size": "_block", "rounding": "_rounding",
                        "min_quant_size": "_min_quant"}

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, *, decoupled: bool = True,
                 exp_avg: Any = None, exp_avg_sq: Any = None, block_size: int = 256,
                 rounding: str = "nearest", seed: int = 0, min_quant_size: int = 4096,
                 nonfinite: str = "skip", param_rounding: str = "stochastic"):
        if not lr >= 0.0:
            raise ValueError(f"lr: expected >= 0, got {lr}")
        if not eps >= 0.0:
            raise ValueError(f"eps: expected >= 0, got {eps}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"betas: expected each in [0, 1), got {betas}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay: expected >= 0, got {weight_decay}")
        _check_choice("rounding", rounding, ("nearest", "stochastic"))
        self._set_step_policies(nonfinite, param_rounding)
        _check_block(block_size)
        self._codecs = {"exp_avg": _codec(exp_avg, "exp_avg"),
                        "exp_avg_sq": _codec(exp_avg_sq, "exp_avg_sq")}
        self._block = block_size
        self._rounding = rounding
        self._seed = int(seed)
        self._min_quant = int(min_quant_size)
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        decoupled=decoupled)
        super().__init__(params, defaults)

    def _set_step_policies(self, nonfinite: str, param_rounding: str) -> None:
        """Validate and store the ``nonfinite`` and ``param_rounding`` options (shared by the
        optimizers that borrow AdamW's step machinery); reset ``skipped_steps``."""
        _check_choice("nonfinite", nonfinite, ("skip", "error"))
        _check_choice("param_rounding", param_rounding, ("nearest", "stochastic"))
        self._nonfinite, self._param_rounding = nonfinite, param_rounding
        self.skipped_steps = 0

    # ------------------------------------------------------------ state layout

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """Add a param group (see torch.optim.Optimizer), validating its storage overrides."""
        self._check_overrides(param_group)
        torch.optim.Optimizer.add_param_group(self, param_group)

    def _check_overrides(self, group: Dict[str, Any]) -> None:
        """Validate (and normalize, in place) a param group's storage overrides."""
        for arg in self._CODEC_ARGS.values():
            if arg in group:
                group[arg] = _codec(group[arg], arg)
        if "block_size" in group:
            _check_block(group["block_size"])
        if "rounding" in group:
            _check_choice("rounding", group["rounding"], ("nearest", "stochastic"))
        if "min_quant_size" in group and not (
                isinstance(group["min_quant_size"], int) and group["min_quant_size"] >= 0):
            raise ValueError("min_quant_size: expected a non-negative int, got "
                             f"{group['min_quant_size']!r}")

    def _override_keys(self) -> tuple:
        return (*self._CODEC_ARGS.values(), *self._STORAGE_OPTIONS)

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
        codec = self._codec_of(name, group)
        if codec is None:
            return None
        d = {"bits": 0, "signed": True, "zero": True, "alpha": 0.5, "quantile": 0.0}
        d.update(_codec_spec(codec))
        d.update(block=self._opt(group, "block_size"), scale="absmax",
                 rounding=self._opt(group, "rounding"))
        return d

    def _quantized(self, p: torch.Tensor, name: str, group: Optional[dict] = None) -> bool:
        return (self._codec_of(name, group) is not None
                and p.numel() >= self._opt(group, "min_quant_size")
                # a sharded DTensor whose rows do not hold whole blocks keeps float32 states
                and _dist.block_aligned(p, self._opt(group, "block_size")))

    def _init_state(self, p: torch.Tensor, group: Optional[dict] = None
                    ) -> Dict[str, torch.Tensor]:
        group = self._group_of(p) if group is None else group
        st: Dict[str, torch.Tensor] = {"step": torch.tensor(0.0)}
        n = _dist.local(p).numel()  # a DTensor's states live on its local shard
        for name in self._STATES:
            if not self._quantized(p, name, group):
                st[name] = torch.zeros(_dist.local(p).shape, dtype=torch.float32,
                                       device=p.device)
                continue
            spec = self._spec(name, group)
            packed_len, nblocks, nalphas, _ = _core.blockwise_layout(spec, n)
            packed = np.empty(packed_len, np.uint8)
            scales = np.empty(nblocks, np.float32)
            alphas = np.empty(nalphas, np.float32)
            _core.blockwise_quantize(np.zeros(n, np.float32), spec, packed, scales, alphas, 0, 0)
            st[f"{name}.codes"] = torch.from_numpy(packed).to(p.device)
            st[f"{name}.scales"] = torch.from_numpy(scales).to(p.device)
            st[f"{name}.alphas"] = torch.from_numpy(alphas).to(p.device)
        return st

    def _state_arg(self, st: Dict[str, torch.Tensor], p: torch.Tensor, name: str,
                   group: Optional[dict] = None):
        if name in st:
            return _flat(st[name])
        group = self._group_of(p) if group is None else group
        return (self._spec(name, group), _flat(st[f"{name}.codes"]),
                _flat(st[f"{name}.scales"]), _flat(st[f"{name}.alphas"]))

    # ------------------------------------------------------------ the step

    @torch.no_grad()
    def step(self, closure=None):
        """One optimization step (see torch.optim.Optimizer.step)."""
        loss = _run_closure(closure)
        if not self._grads_finite():
            return loss
        index = 0
        for group in self.param_groups:
            b1, b2 = group["betas"]
            lr, wd, eps = group["lr"], group["weight_decay"], group["eps"]
            entries = []  # the whole group goes to Rust in one call
            offsets = []  # FSDP2 shards: where the local rows start in the whole tensor
            for p in group["params"]:
                index += 1
                if p.grad is None:
                    continue
                st, t = self._advance(p, group)
                offsets.append(_dist.element_offset(p))
                bc1 = 1 - b1**t
                scalars = (
                    1 - lr * wd if group["decoupled"] else 1.0,
                    0.0 if group["decoupled"] else wd,
                    1 - b1, b2, 1 - b2, eps, lr / bc1, math.sqrt(1 - b2**t),
                )
                stream = (t << 32) | (index << 2)  # | 0: exp_avg, 1: exp_avg_sq, 2: param
                entries.append((_flat(_dist.local(p)), _flat(_dist.local(p.grad)),
                                self._state_arg(st, p, "exp_avg", group),
                                self._state_arg(st, p, "exp_avg_sq", group), scalars,
                                (stream, stream | 1), stream | 2, _KINDS[p.dtype]))
            if entries:  # CUDA parameters: the same entries to lowfp.cuda.optim's kernels
                core = _cuda_optim() if torch.is_tensor(entries[0][0]) else _core
                core.adamw_step_group(entries, self._opt(group, "block_size"), self._seed,
                                      self._param_rounding == "stochastic", offsets)
        return loss

    def _advance(self, p: torch.Tensor, group: Optional[dict] = None):
        """Check ``p``, create its state on first use, count the step: (state, step)."""
        self._check(p)
        if p.is_cuda and not getattr(self, "_CUDA", False):
            raise ValueError(f"param: on {p.device}; {type(self).__name__} runs on CPU tensors")
        st = self.state[p]
        if not st:
            st.update(self._init_state(p, group))
        st["step"] += 1
        return st, int(st["step"].item())

    def _grads_finite(self) -> bool:
        """Apply the ``nonfinite`` policy; True when the step may proceed."""
        params = [p for group in self.param_groups for p in group["params"]]
        on_gpu = [p.grad is not None and p.grad.is_cuda and not p.grad.is_sparse for p in params]
        finite = all(p.grad is None or p.grad.is_sparse or _grad_finite(p.grad)
                     for p, gpu in zip(params, on_gpu) if not gpu)
        if finite and any(on_gpu):  # CUDA gradients: one host synchronization for them all
            finite = bool(torch.stack([torch.isfinite(_dist.local(p.grad)).all()
                                       for p, gpu in zip(params, on_gpu) if gpu]).all())
        # sharded DTensors: a NaN in one rank's shard skips the step on every rank
        if not _dist.agree(finite, params):
            if self._nonfinite == "error":
                raise ValueError("grad: a gradient holds NaN or inf (nonfinite='error')")
            self.skipped_steps += 1
            return False
        return True

    @staticmethod
    def _check(p: torch.Tensor) -> None:
        _dist.check_param(p)  # FSDP1 flat parameters, DTensor placements
        if p.grad.is_sparse:
            raise ValueError("grad: sparse gradients are not supported")
        if p.is_complex() or p.grad.is_complex():
            raise TypeError("param: complex parameters are not supported")
        if p.device.type not in ("cpu", "cuda"):
            raise ValueError(f"param: on {p.device}; lowfp.optim runs on CPU and CUDA tensors")
        if p.grad.device != p.device:
            raise ValueError(f"grad: on {p.grad.device}, its parameter on {p.device}")
        if p.dtype not in _KINDS or p.grad.dtype != p.dtype:
            raise TypeError("param: expected float32, bfloat16 or float16 parameters with "
                            f"gradients of the same dtype, got {p.dtype} and {p.grad.dtype}")
        if not (_dist.local(p).is_contiguous() and _dist.local(p.grad).is_contiguous()):
            raise ValueError("param: expected contiguous parameters and gradients")

    def state_dict(self) -> Dict[str, Any]:
        """torch's state dict, with param-group codec overrides as plain data."""
        sd = torch.optim.Optimizer.state_dict(self)
        for g in sd["param_groups"]:
            for arg in self._CODEC_ARGS.values():
                if arg in g:
                    g[arg] = _plain_codec(g[arg])
        return _dist.wrap_state_dict(self, sd)  # DTensor parameters: DTensor states, for DCP

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Load a state dict saved by this optimizer class (``weights_only`` loads work).

        Raises:
            ValueError: the saved param groups' storage overrides differ from this optimizer's
                (checked before anything is loaded), or a state's layout does not match.
        """
        overrides = self._check_saved_overrides(state_dict)
        torch.optim.Optimizer.load_state_dict(self, state_dict)
        self._restore_loaded(state_dict, overrides)

    def _check_saved_overrides(self, state_dict: Dict[str, Any]) -> list:
        """Each param group's storage overrides as configured; a ValueError if the saved
        groups' differ (torch's load replaces group values with the saved ones)."""
        keys = self._override_keys()
        codec_args = set(self._CODEC_ARGS.values())
        overrides = [{k: g[k] for k in keys if k in g} for g in self.param_groups]
        unset = "(not set)"
        for i, (saved_group, mine) in enumerate(zip(state_dict["param_groups"], overrides)):
            for k in keys:
                saved, ours = saved_group.get(k, unset), mine.get(k, unset)
                if k in codec_args:
                    ours = ours if ours == unset else _plain_codec(ours)
                    if saved != unset and saved is not None and not isinstance(saved, dict):
                        saved = _plain_codec(_codec(saved, k))
                if saved != ours:
                    raise ValueError(f"state_dict: param group {i} was saved with {k}={saved!r},"
                                     f" this optimizer has {k}={ours!r}")
        return overrides

    def _restore_loaded(self, state_dict: Dict[str, Any], overrides: list) -> None:
        """After torch's load_state_dict: put back each group's storage overrides (torch
        replaced them with the saved plain data), undo torch's casts, check the layout."""
        for g, mine in zip(self.param_groups, overrides):
            for k in self._override_keys():
                g.pop(k, None)
            g.update(mine)
        # torch casts every state tensor of a float parameter to the parameter's dtype (packed
        # codes to float32, float32 moments to bfloat16): put the saved tensors back as saved.
        params = [p for g in self.param_groups for p in g["params"]]
        # keyed as torch keys them: by the saved groups' ids (ints, or FQNs from DCP helpers)
        ids = dict(zip((i for g in state_dict["param_groups"] for i in g["params"]), params))
        for i, saved in state_dict["state"].items():
            st = self.state[ids[i]]
            for k, t in saved.items():
                if torch.is_tensor(t) and k != "step":
                    dev = _dist.local(ids[i]).device  # a CPU checkpoint into CUDA params
                    st[k] = _dist.unwrap_state(k, t).detach().to(dev).clone().contiguous()
        for p, st in self.state.items():
            self._check_layout(p, st)

    def _check_layout(self, p: torch.Tensor, st: Dict[str, torch.Tensor]) -> None:
        """A loaded state must match this optimizer's codecs and block size."""
        want = self._init_state(p, self._group_of(p))
        for k, t in want.items():
            if k not in st or st[k].shape != t.shape:
                got = tuple(st[k].shape) if k in st else "missing"
                raise ValueError(
                    f"state_dict: state {k!r} of a parameter of shape {tuple(p.shape)} is {got}, "
                    f"expected {tuple(t.shape)}: saved with a different configuration "
                    f"({self.summary().splitlines()[0]} …)")

    # ------------------------------------------------------------ plain torch state

    def _dequantize(self, st: Dict[str, torch.Tensor], p: torch.Tensor, name: str):
        if name in st:
            return st[name].clone()
        out = np.empty(p.numel(), np.float32)
        _core.blockwise_dequantize(st[f"{name}.codes"].numpy(),
                                   self._spec(name, self._group_of(p)),
                                   st[f"{name}.scales"].numpy(), st[f"{name}.alphas"].numpy(),
                                   np.float32(1.0), out)
        return torch.from_numpy(out).view_as(p)

    def to_torch_state_dict(self) -> Dict[str, Any]:
        """This optimizer's state as ``torch.optim.AdamW`` (or ``Adam``) holds it, in float32:
        load it with ``torch.optim.AdamW(params).load_state_dict(...)``."""
        sd = self.state_dict()
        params = [p for g in self.param_groups for p in g["params"]]
        state = {}
        for i, p in enumerate(params):
            st = self.state.get(p)
            if st:
                state[i] = {"step": st["step"].clone(),
                            **{n: self._dequantize(st, p, n) for n in _STATES}}
        groups = []
        for g in sd["param_groups"]:
            g = {k: v for k, v in g.items()
                 if k != "decoupled" and k not in self._override_keys()}
            g.update(amsgrad=False, maximize=False, foreach=None, capturable=False,
                     differentiable=False, fused=None)
            groups.append(g)
        return {"state": state, "param_groups": groups}

    def load_torch_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Take over the state of a ``torch.optim.AdamW``/``Adam`` (float32 moments),
        quantizing the moments with this optimizer's codecs (nearest rounding).

        Raises:
            ValueError: the number of parameter groups or parameters does not match.
        """
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
                len(a["params"]) != len(b["params"]) for a, b in zip(groups, self.param_groups)):
            raise ValueError("state_dict: parameter groups do not match this optimizer's")
        params = [p for g in self.param_groups for p in g["params"]]
        for g, mine in zip(groups, self.param_groups):
            for k in ("lr", "betas", "eps", "weight_decay"):
                mine[k] = g[k]
        self.state.clear()
        for i, st in state_dict["state"].items():
            p = params[int(i)]
            group = self._group_of(p)
            new = self._init_state(p, group)
            new["step"] = torch.as_tensor(st["step"], dtype=torch.float32).clone()
            for name in _STATES:
                value = st[name].detach().to(torch.float32).contiguous().view(-1)
                if name in new:
                    new[name] = value.view_as(p).clone()
                    continue
                _core.blockwise_quantize(value.numpy(), self._spec(name, group),
                                         new[f"{name}.codes"].numpy(),
                                         new[f"{name}.scales"].numpy(),
                                         new[f"{name}.alphas"].numpy(), 0, 0)
            self.state[p] = new

    def load_bitsandbytes(self, bnb_optimizer: Any) -> None:
        """Take over the states of a bitsandbytes 8-bit Adam/AdamW optimizer over the same
        parameters (in the same order). Their codes index bitsandbytes' dynamic map, which is
        :class:`lowfp.Dynamic` bit for bit, and their absmax values are our block scales, so
        the import copies bytes: decoded states are identical.

        Raises:
            ValueError: this optimizer's codecs or block size differ from bitsandbytes' layout
                (Dynamic(8) signed m, Dynamic(8) unsigned v, block 256), or the parameters do
                not match.
        """
        want = (Dynamic(8, True).spec(), Dynamic(8, False).spec())
        for g in self.param_groups:
            got = tuple(_codec_spec(c) if c else None
                        for c in (self._codec_of(n, g) for n in _STATES))
            if got != want or self._opt(g, "block_size") != 256:
                break
        else:
            got = want
        if got != want:
            raise ValueError("bnb_optimizer: needs exp_avg=Dynamic(8), "
                             "exp_avg_sq=Dynamic(8, signed=False), block_size=256 (AdamW8bit)")
        mine = [p for g in self.param_groups for p in g["params"]]
        theirs = [p for g in bnb_optimizer.param_groups for p in g["params"]]
        if len(mine) != len(theirs) or any(a.shape != b.shape for a, b in zip(mine, theirs)):
            raise ValueError("bnb_optimizer: its parameters do not match this optimizer's")
        for p, q in zip(mine, theirs):
            src = bnb_optimizer.state.get(q)
            if not src:
                continue
            st = self._init_state(p)
            st["step"] = torch.tensor(float(src["step"]))
            for k, name in ((1, "exp_avg"), (2, "exp_avg_sq")):
                codes = src[f"state{k}"]
                if codes.dtype != torch.uint8:  # bitsandbytes keeps small tensors in float32
                    if name not in st:
                        raise ValueError(f"bnb_optimizer: float32 state for a parameter of "
                                         f"{p.numel()} elements; set min_quant_size to match")
                    st[name] = codes.detach().float().view_as(p).clone()
                    continue
                if name in st:
                    raise ValueError(f"bnb_optimizer: 8-bit state for a parameter of "
                                     f"{p.numel()} elements; set min_quant_size to match")
                st[f"{name}.codes"] = codes.detach().reshape(-1).clone()
                st[f"{name}.scales"] = src[f"absmax{k}"].detach().float().reshape(-1).clone()
            self.state[p] = st

    # ------------------------------------------------------------ reporting

    def state_nbytes(self) -> int:
        """Exact bytes of all optimizer state (the step counters included)."""
        return sum(t.numel() * t.element_size() for st in self.state.values()
                   for t in st.values() if torch.is_tensor(t))

    def _state_lines(self) -> list:
        """One line per state: how it is stored."""
        lines = []
        for name in self._STATES:
            c = self._codecs[name]
            how = "float32" if c is None else (
                f"{c!r}, block {self._block}, fp32 absmax scales, {self._rounding} rounding"
                + (f"; float32 below {self._min_quant} elements" if self._min_quant > 0 else ""))
            lines.append(f"{name}: {how}")
        for i, g in enumerate(self.param_groups):
            own = {k: g[k] for k in self._override_keys() if k in g}
            if own:
                how = ", ".join(f"{k}={'float32' if v is None else v!r}" for k, v in own.items())
                lines.append(f"param group {i} ({len(g['params'])} tensors): {how}")
        return lines

    def summary(self) -> str:
        """One line per state: how it is stored; then the bytes of all state."""
        return "\n".join(self._state_lines() + [f"state bytes: {self.state_nbytes()}"])


def AdamW8bit(params, **kwargs) -> AdamW:  # noqa: N802 - the name users know
    """AdamW with bitsandbytes' dynamic 8-bit states (signed m, unsigned v), block 256."""
    kwargs.setdefault("block_size", 256)
    return AdamW(params, exp_avg=Dynamic(8, signed=True), exp_avg_sq=Dynamic(8, signed=False),
                 **kwargs)


def AdamW4bit(params, **kwargs) -> AdamW:  # noqa: N802
    """AdamW with 4-bit states: dynamic signed m, zero-free linear v, block 128."""
    kwargs.setdefault("block_size", 128)
    return AdamW(params, exp_avg=Dynamic(4, signed=True),
                 exp_avg_sq=Linear(4, signed=False, zero=False), **kwargs)


def AdamWFp8(params, **kwargs) -> AdamW:  # noqa: N802
    """AdamW with float8 E4M3 states (absmax-scaled blocks of 256)."""
    kwargs.setdefault("block_size", 256)
    return AdamW(params, exp_avg="e4m3", exp_avg_sq="e4m3", **kwargs)


def solo_beta1(bits: int, beta_ref: float = 0.9, bits_ref: int = 8) -> float:
    """β1 for a signed linear first moment at `bits`, by the rule of SOLO ("Pushing the Limits
    of Low-Bit Optimizers: A Focus on EMA Dynamics"): keep β/(1 − β) · r(b) no larger than at
    the reference precision, with r(b) = 1/(2^(b−1) − 1) the relative step of the code.

    Returns:
        min(beta_ref, x / (1 + x)) with x = β_ref/(1 − β_ref) · r(bits_ref)/r(bits).
    """
    if not (2 <= bits <= 8 and 2 <= bits_ref <= 8):
        raise ValueError(f"bits: expected 2..8, got {bits} (reference {bits_ref})")
    r = lambda b: 1.0 / (2 ** (b - 1) - 1)  # noqa: E731
    x = beta_ref / (1 - beta_ref) * r(bits_ref) / r(bits)
    return min(beta_ref, x / (1 + x))


def SOLO(params, bits: int = 3, *, m_bits: Optional[int] = None, quantile: float = 0.05,  # noqa: N802
         beta2: float = 0.999, **kwargs) -> AdamW:
    """SOLO-style low-bit AdamW: the second moment in `bits`-bit zero-free logarithmic codes
    with a per-block base from a quantile and stochastic rounding (so small EMA updates are not
    swamped; no entry decodes to 0, which would turn its update into lr·m/eps), the first
    moment in `m_bits`-bit (default `bits`) signed linear codes with the precision-specific β1
    of :func:`solo_beta1`, both stochastically rounded, block 128.
    Real k-bit packing: 3 bits take 3/8 of a byte per state.
    """
    m_bits = bits if m_bits is None else m_bits
    kwargs.setdefault("block_size", 128)
    kwargs.setdefault("rounding", "stochastic")
    kwargs.setdefault("betas", (solo_beta1(m_bits), beta2))
    return AdamW(params, exp_avg=Linear(m_bits),
                 exp_avg_sq=Log(bits, zero=False, quantile=quantile), **kwargs)


from .lowprec import LowPrecision, Q  # noqa: E402 - built on the classes above
from .muon import Muon, Muon8bit  # noqa: E402
from .sgd import SGD  # noqa: E402
