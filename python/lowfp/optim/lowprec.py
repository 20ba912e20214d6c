"""Quantized-training emulation around any torch optimizer: :class:`LowPrecision` and :class:`Q`.

``LowPrecision(optimizer, grad=..., weight=..., states=...)`` rounds, at every step,

1. every gradient to the ``grad`` format (in place, before the inner step),
2. then calls the inner optimizer's ``step`` (AdamW, SGD, torch.optim.Muon, lowfp's AdamW, …),
3. then rounds the updated weights to the ``weight`` format and the named optimizer states
   (``exp_avg``, ``exp_avg_sq``, ``momentum_buffer``, …) to their formats, in place.

This is the setting of the convergence analyses of Adam and Muon under floating-point
quantization (gradients, weights and both moments quantized) and of SGD with low-precision
gradients: the arithmetic of the inner step stays in the tensors' dtype (float32 usually) and
every value that would be *stored* in low precision is rounded to its format — exactly, with any
lowfp format (``"e4m3"``, ``"e5m2"``, ``"e2m1"``, ``"bfloat16"``, ``"e<X>m<Y>"``, …).

Stochastic rounding is reproducible: the random bits of element ``i`` of a tensor are keyed by
``(seed, stream, i)`` where ``stream`` mixes (parameter index, step count, kind) with a fixed
64-bit arithmetic mix (``_stream``), so every tensor, step and kind (gradient, weight, each
state) draws fresh bits and a run with the same seed is bit-identical from process to process.

Non-finite gradients (``nonfinite=``):

- ``"skip"`` (default): if any gradient is NaN/inf — before or after rounding to the ``grad``
  format (an ``overflow="nonfinite"`` format can turn a large finite gradient into inf/NaN) —
  the whole step is skipped: gradients, weights and states are left untouched, the inner
  optimizer is not called (its step counters do not advance), and :attr:`skipped_steps` counts
  it. The wrapper's own step counter still advances (fresh random streams next time).
- ``"propagate"``: the step runs as the inner optimizer would run it; non-finite elements pass
  through every quantizer unchanged (a format without NaN does not raise), so NaN/inf reach the
  weights and states as they would without the wrapper.

Devices: CUDA tensors are rounded on their device through lowfp's CUDA dispatch
(``lowfp.quantize`` on a CUDA tensor runs :mod:`lowfp.cuda`, bit for bit the CPU's values) when
:func:`lowfp.cuda.available` says CuPy sees a device; otherwise (no CuPy) and for other
accelerators they go through a CPU copy. CPU tensors are rounded in place of the call as before.

Tracking (``track=True``): at every step that is not skipped, :attr:`LowPrecision.tracker`
gets one row per rounded kind of tensor (``"grad"``, ``"weight"``, each named state), summed
over the parameters. With t the float value before rounding (the float32 *shadow* of the
rounded tensor r = Q(t)) and ``old`` the stored value before the step:

- ``rel_error`` = ||r - t|| / ||t||;
- ``shrinkage`` = <r, t> / ||t||^2 (q_k of the analyses of SGD with low-precision gradients;
  1 when nothing is lost, below 1 when rounding shrinks the tensor);
- ``flushed`` = #(t != 0 and r == 0) / #(t != 0): the fraction flushed to zero;
- ``unchanged`` (weights and states; NaN for gradients) = #(t != old and r == old) /
  #(t != old): the fraction of the elements the update moved whose stored value it did not
  change (swamping);
- ``drift`` (weights; NaN otherwise) = ||w - s|| / ||s|| with s a persistent float32 shadow of
  the weights that accumulates every step's unrounded update t - old from the first tracked
  step: how far the stored weights have fallen behind float32 accumulation of the same updates.

Ratios with a zero denominator are NaN. The tracker is not part of the state dict.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import zlib
from collections import OrderedDict
from typing import Any, Dict, List, Optional, Tuple, Union

from .. import codec as _codec
from .._table import Table
from .._types import Overflow, Rounding
from ..formats import Format
from ..formats import format as _format

try:
    import torch
except ImportError as e:  # pragma: no cover - torch is an optional extra
    raise ImportError("lowfp.optim needs torch: pip install 'lowfp[torch]'") from e

__all__ = ["LowPrecision", "Q", "Tracker"]

_MASK = (1 << 64) - 1
_KIND_GRAD = 0
_KIND_WEIGHT = 1
_NONFINITE = ("skip", "propagate")


@dataclasses.dataclass(frozen=True)
class Q:
    """How one kind of tensor is rounded.

    Args:
        fmt: a lowfp format name, alias or spec (``"e4m3"``, ``"bf16"``, ``"e3m2"``, …) or a
            :class:`lowfp.Format`.
        rounding: ``"nearest"`` (ties to even), ``"stochastic"``, or any other lowfp rounding
            (``"toward_zero"``, ``"nearest_away"``, ``"up"``, ``"down"``).
        overflow: ``"saturate"`` (default: values beyond the format's max become ±max) or
            ``"nonfinite"`` (inf, else NaN, as ml_dtypes does).

    Raises:
        ValueError: unknown format, rounding or overflow.
    """

    fmt: Union[str, Format]
    rounding: Rounding = "nearest"
    overflow: Overflow = "saturate"

    def __post_init__(self) -> None:
        _format(self.fmt)  # raises ValueError naming the bad format
        _codec._check_choice("rounding", self.rounding, _codec.ROUNDINGS)
        _codec._check_choice("overflow", self.overflow, _codec.OVERFLOWS)

    @property
    def format(self) -> Format:
        """The resolved :class:`lowfp.Format`."""
        return _format(self.fmt)

    def __str__(self) -> str:
        return f"{self.format.name} ({self.rounding}, overflow={self.overflow})"


QuantizerLike = Union[None, str, Format, Q, Dict[str, Any]]


def _as_q(spec: QuantizerLike, arg: str) -> Optional[Q]:
    """None, or a validated :class:`Q`, from a quantizer spec."""
    if spec is None or isinstance(spec, Q):
        return spec
    if isinstance(spec, (str, Format)):
        return Q(spec)
    if isinstance(spec, dict):
        extra = set(spec) - {"fmt", "rounding", "overflow"}
        if extra or "fmt" not in spec:
            raise TypeError(
                f"{arg}: a quantizer dict takes the keys 'fmt' (required), "
                f"'rounding' and 'overflow'; got {sorted(spec)}"
            )
        return Q(**spec)
    raise TypeError(
        f"{arg}: expected None, a format name, a lowfp.Format, a dict or a "
        f"lowfp.optim.Q, got {type(spec).__name__}"
    )


def _mix64(x: int) -> int:
    """SplitMix64's finalizer: a fixed bijection of 64-bit ints (no per-process randomness)."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def _stream(index: int, step: int, kind: int) -> int:
    """The stochastic-rounding stream of (parameter index, step count, kind), in [0, 2**64)."""
    return _mix64(_mix64(_mix64(kind & _MASK) ^ (step & _MASK)) ^ (index & _MASK))


def _state_kind(name: str) -> int:
    """A fixed kind id per state name (CRC-32, not Python's per-process string hash)."""
    return 2 + zlib.crc32(name.encode("utf-8"))


@functools.lru_cache(maxsize=None)
def _cuda_available() -> bool:
    """lowfp.cuda.available(), asked once per process (it tries to import CuPy)."""
    from .. import cuda

    return cuda.available()


def _device_rounds(x: torch.Tensor) -> bool:
    """Whether x is rounded on its own device (a CUDA tensor with lowfp.cuda available)
    rather than through a CPU copy."""
    return x.device.type == "cuda" and _cuda_available()


#: Columns of the tracker's rows.
TRACK_COLUMNS = (
    "step",
    "tensor",
    "numel",
    "rel_error",
    "shrinkage",
    "flushed",
    "unchanged",
    "drift",
)


class Tracker(Table):
    """Per-step rounding statistics of a ``LowPrecision(track=True)`` run: a
    :class:`lowfp._table.Table` whose rows have the columns :data:`TRACK_COLUMNS` (defined in
    the module docstring); ``rows``, ``column(name)``, ``to_csv(path)``."""

    def __init__(self) -> None:
        super().__init__()
        self._sums: Dict[str, List[torch.Tensor]] = {}
        self._numel: Dict[str, int] = {}
        self.shadow: Dict[torch.Tensor, torch.Tensor] = {}

    def add(
        self,
        name: str,
        t: torch.Tensor,
        r: torch.Tensor,
        old: Optional[torch.Tensor] = None,
        shadow: Optional[torch.Tensor] = None,
    ) -> None:
        """Accumulate one tensor's sums for this step (float64, on the tensor's device)."""
        t64, r64 = t.detach().double(), r.detach().double()
        nz = t64 != 0
        sums = [
            (r64 - t64).square().sum(),
            t64.square().sum(),
            (r64 * t64).sum(),
            nz.sum(),
            (nz & (r64 == 0)).sum(),
        ]
        if old is not None:
            o64 = old.detach().double()
            moved = t64 != o64
            sums += [moved.sum(), (moved & (r64 == o64)).sum()]
        if shadow is not None:
            sums += [(r64 - shadow.double()).square().sum(), shadow.double().square().sum()]
        acc = self._sums.get(name)  # summed on the device; read once per step in end_step
        self._sums[name] = sums if acc is None else [a + b.to(a.device) for a, b in zip(acc, sums)]
        self._numel[name] = self._numel.get(name, 0) + t.numel()

    def discard(self) -> None:
        """Drop the sums accumulated for the current step."""
        self._sums.clear()
        self._numel.clear()

    def end_step(self, step: int) -> None:
        """Turn the accumulated sums into one row per tensor kind."""

        def ratio(a: float, b: float) -> float:
            return a / b if b else math.nan

        for name, sums in self._sums.items():
            v = [float(x) for x in sums]
            d2, t2, rt, nz, fl = v[:5]
            rest = v[5:]
            unchanged = ratio(rest[1], rest[0]) if name != "grad" and len(rest) >= 2 else math.nan
            drift = math.sqrt(ratio(rest[-2], rest[-1])) if name == "weight" else math.nan
            self.rows.append(
                {
                    "step": step,
                    "tensor": name,
                    "numel": self._numel[name],
                    "rel_error": math.sqrt(ratio(d2, t2)),
                    "shrinkage": ratio(rt, t2),
                    "flushed": ratio(fl, nz),
                    "unchanged": unchanged,
                    "drift": drift,
                }
            )
        self.discard()


class LowPrecision(torch.optim.Optimizer):
    """Wrap a torch optimizer to emulate training with low-precision gradients, weights, states.

    Args:
        optimizer: any ``torch.optim.Optimizer`` instance (already built on the parameters).
        grad: quantizer of the gradients (None: unchanged). A format name means round to
            nearest with saturation; pass ``Q(fmt, rounding, overflow)`` or a dict of the same
            keys for anything else.
        weight: quantizer of the weights after each step (None: unchanged).
        states: ``{state name: quantizer}`` for the inner optimizer's per-parameter states,
            e.g. ``{"exp_avg": Q("e4m3", "stochastic"), "exp_avg_sq": Q("e5m2")}``. Names
            are checked at the first step that updates a parameter: a name no parameter has
            raises ValueError listing the states the optimizer has (the inner step of that call
            has then already been applied). A state absent from some parameters only (lowfp's
            AdamW keeps packed states under other names for large tensors) is skipped there.
        seed: key of the stochastic rounding, an int in [0, 2**64).
        nonfinite: ``"skip"`` (default) or ``"propagate"``: what a step with a NaN/inf
            gradient does (see the module docstring).
        track: keep per-step rounding statistics in :attr:`tracker` (a :class:`Tracker`;
            see the module docstring). Costs a few passes over the rounded tensors, a copy of
            the weights and tracked states during the step and a float32 shadow of the weights.

    Only parameters that have a gradient at a step are rounded (the ones the inner optimizer
    updates); call :meth:`quantize_weights` once to round the initial weights too.

    Raises:
        TypeError: optimizer is not a torch optimizer; a quantizer spec of the wrong type.
        ValueError: unknown format, rounding, overflow, nonfinite; a bad seed.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        grad: QuantizerLike = None,
        weight: QuantizerLike = None,
        states: Optional[Dict[str, QuantizerLike]] = None,
        seed: int = 0,
        nonfinite: str = "skip",
        track: bool = False,
    ):
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer: expected a torch.optim.Optimizer instance, got "
                f"{type(optimizer).__name__}"
            )
        if states is None:
            states = {}
        if not isinstance(states, dict):
            raise TypeError(
                f"states: expected a dict of state name -> quantizer, got {type(states).__name__}"
            )
        for name in states:
            if not isinstance(name, str):
                raise TypeError(f"states: names must be strings, got {name!r}")
            if name == "step":
                raise ValueError("states: 'step' is a counter, not a quantizable state")
        if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= _MASK:
            raise ValueError(f"seed: expected an int in [0, 2**64), got {seed!r}")
        _codec._check_choice("nonfinite", nonfinite, _NONFINITE)
        if not isinstance(track, bool):
            raise TypeError(f"track: expected a bool, got {type(track).__name__}")
        self.optimizer = optimizer
        #: Per-step rounding statistics (``track=True``), else None.
        self.tracker: Optional[Tracker] = Tracker() if track else None
        self.grad = _as_q(grad, "grad")
        self.weight = _as_q(weight, "weight")
        self.states: Dict[str, Q] = {}
        for name, spec in states.items():
            q = _as_q(spec, f"states[{name!r}]")
            if q is not None:
                self.states[name] = q
        self.seed = seed
        self.nonfinite = nonfinite
        self._step = 0
        self._skipped = 0
        self._states_checked = False
        self._dtype_ok: set = set()
        # What torch.optim.Optimizer.__init__ sets besides defaults/state/param_groups (which
        # are the inner optimizer's, shared, below): hooks work on the wrapper as on any
        # optimizer, and LR schedulers accept it.
        self._optimizer_step_pre_hooks = OrderedDict()
        self._optimizer_step_post_hooks = OrderedDict()
        self._optimizer_state_dict_pre_hooks = OrderedDict()
        self._optimizer_state_dict_post_hooks = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks = OrderedDict()
        self._optimizer_load_state_dict_post_hooks = OrderedDict()
        self._patch_step_function()

    # ------------------------------------------------------------ the inner optimizer's views

    @property
    def param_groups(self) -> List[Dict[str, Any]]:
        return self.optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: List[Dict[str, Any]]) -> None:
        self.optimizer.param_groups = value

    @property
    def state(self):
        return self.optimizer.state

    @state.setter
    def state(self, value) -> None:
        self.optimizer.state = value

    @property
    def defaults(self) -> Dict[str, Any]:
        return self.optimizer.defaults

    @defaults.setter
    def defaults(self, value: Dict[str, Any]) -> None:
        self.optimizer.defaults = value

    @property
    def step_count(self) -> int:
        """Calls of :meth:`step` so far (skipped ones included)."""
        return self._step

    @property
    def skipped_steps(self) -> int:
        """Steps skipped for a non-finite gradient (``nonfinite="skip"``)."""
        return self._skipped

    def zero_grad(self, set_to_none: bool = True) -> None:
        """The inner optimizer's zero_grad."""
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """Add a group to the inner optimizer (its parameters get the next indices)."""
        self.optimizer.add_param_group(param_group)

    def state_dict(self) -> Dict[str, Any]:
        """The inner optimizer's state dict plus ``"lowprec"``: the wrapper's counters."""
        sd = dict(self.optimizer.state_dict())
        sd["lowprec"] = {"step": self._step, "skipped": self._skipped}
        return sd

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Load a state dict of :meth:`state_dict` (or a plain one of the inner optimizer,
        which leaves the wrapper's counters as they are)."""
        sd = dict(state_dict)
        own = sd.pop("lowprec", None)
        self.optimizer.load_state_dict(sd)
        if own is not None:
            self._step = int(own["step"])
            self._skipped = int(own["skipped"])

    def __getstate__(self) -> Dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_optimizer_")}

    def __repr__(self) -> str:
        def how(q: Optional[Q]) -> str:
            return "unchanged" if q is None else str(q)

        inner = "\n".join("    " + line for line in repr(self.optimizer).splitlines())
        lines = [
            f"LowPrecision(seed={self.seed}, nonfinite={self.nonfinite!r}, "
            f"steps={self._step}, skipped={self._skipped})",
            f"  grad:   {how(self.grad)}",
            f"  weight: {how(self.weight)}",
        ]
        for name, q in self.states.items():
            lines.append(f"  state {name}: {how(q)}")
        if not self.states:
            lines.append("  states: unchanged")
        lines.append("  inner:")
        lines.append(inner)
        return "\n".join(lines)

    # ------------------------------------------------------------ rounding

    def _params(self) -> List[Tuple[int, torch.Tensor]]:
        """(global index, parameter) over all groups, in order."""
        out: List[Tuple[int, torch.Tensor]] = []
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                out.append((len(out), p))
        return out

    def _check_dtype(self, t: torch.Tensor, q: Q, what: str) -> None:
        """Fail before anything is modified when t's dtype cannot hold q's format exactly."""
        key = (t.dtype, q.format.name)
        if key in self._dtype_ok:
            return
        if t.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            raise TypeError(
                f"{what}: expected a float32/float64/float16/bfloat16 tensor, got {t.dtype}"
            )
        try:
            _codec.quantize(torch.zeros(1, dtype=t.dtype), q.format)
        except ValueError as e:
            raise ValueError(
                f"{what}: cannot round {t.dtype} tensors to {q.format.name}: {e}"
            ) from None
        self._dtype_ok.add(key)

    def _round(self, t: torch.Tensor, q: Q, stream: int) -> torch.Tensor:
        """t rounded to q (a new tensor of t's dtype, device and shape); non-finite elements
        pass through unchanged."""
        x = t.detach()
        here = x.device.type == "cpu" or _device_rounds(x)
        src = x if here else x.cpu()
        r = _codec.quantize(
            src,
            q.format,
            rounding=q.rounding,
            overflow=q.overflow,
            seed=self.seed,
            stream=stream,
            nan="zero",
        )
        finite = torch.isfinite(src)
        if src.device.type != "cpu":  # no host sync on a device: select unconditionally
            r = torch.where(finite, r, src)
        elif not bool(finite.all()):
            r = torch.where(finite, r, src)
        return r.to(x.device) if r.device != x.device else r

    def _check_states(self, names_seen: set) -> None:
        missing = [n for n in self.states if n not in names_seen]
        if missing:
            have = ", ".join(sorted(names_seen)) or "(none)"
            raise ValueError(
                f"states: {type(self.optimizer).__name__} has no state {missing[0]!r} "
                f"(its quantizable states: {have}); the inner step of this call was applied "
                "without rounding"
            )

    def quantize_weights(self) -> None:
        """Round every parameter to the ``weight`` format now (e.g. the initial weights);
        a no-op without a weight quantizer. Uses step count 0's streams."""
        if self.weight is None:
            return
        with torch.no_grad():
            for i, p in self._params():
                self._check_dtype(p, self.weight, "weight")
                p.copy_(self._round(p, self.weight, _stream(i, 0, _KIND_WEIGHT)))

    @torch.no_grad()
    def step(self, closure=None):
        """Round the gradients, run the inner step, round the weights and named states.

        A closure is evaluated once, before the gradients are rounded; the inner step gets
        none (optimizers that re-evaluate it, like LBFGS, would see unrounded gradients).
        Returns the closure's loss (or None).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._step += 1
        t = self._step
        live = [(i, p) for i, p in self._params() if p.grad is not None]
        for _, p in live:
            if p.grad.is_sparse:
                raise ValueError("grad: sparse gradients are not supported")
            if self.grad is not None:
                self._check_dtype(p.grad, self.grad, "grad")
            if self.weight is not None:
                self._check_dtype(p, self.weight, "weight")

        # 1. gradients: rounded out of place first, so a skipped step leaves them untouched
        rounded = []
        finite = True
        for i, p in live:
            g = p.grad
            if self.grad is not None:
                g = self._round(g, self.grad, _stream(i, t, _KIND_GRAD))
                if self.tracker is not None:
                    self.tracker.add("grad", p.grad, g)
            if self.nonfinite == "skip" and finite:
                finite = bool(torch.isfinite(g).all())
            rounded.append(g)
        if not finite:
            self._skipped += 1
            if self.tracker is not None:
                self.tracker.discard()  # a skipped step leaves no row
            return loss
        if self.grad is not None:
            for (_, p), g in zip(live, rounded):
                p.grad.copy_(g)
        del rounded

        # 2. the inner step (tracking: the stored values it starts from)
        before: Dict[Tuple[int, str], torch.Tensor] = {}
        if self.tracker is not None:
            for i, p in live:
                st = self.optimizer.state.get(p, {})
                for name in self.states:
                    v = st.get(name)
                    if torch.is_tensor(v) and v.is_floating_point():
                        before[i, name] = v.detach().clone()
                if self.weight is not None:
                    before[i, "weight"] = p.detach().clone()
        self.optimizer.step()

        # 3. states and weights
        if self.states and live and not self._states_checked:
            seen = set()
            for _, p in self._params():
                for k, v in self.optimizer.state.get(p, {}).items():
                    if (
                        k != "step"
                        and torch.is_tensor(v)
                        and v.is_floating_point()
                        and v.numel() == p.numel()
                    ):
                        seen.add(k)
            self._check_states(seen)
            self._states_checked = True
        for i, p in live:
            st = self.optimizer.state.get(p, {})
            for name, q in self.states.items():
                v = st.get(name)
                if torch.is_tensor(v) and v.is_floating_point():
                    self._check_dtype(v, q, f"states[{name!r}]")
                    r = self._round(v, q, _stream(i, t, _state_kind(name)))
                    if self.tracker is not None:
                        old = before.get((i, name))
                        self.tracker.add(name, v, r, torch.zeros_like(v) if old is None else old)
                    v.copy_(r)
            if self.weight is not None:
                r = self._round(p, self.weight, _stream(i, t, _KIND_WEIGHT))
                if self.tracker is not None:
                    old = before[i, "weight"]
                    sh = self.tracker.shadow.get(p)
                    if sh is None:
                        sh = self.tracker.shadow[p] = old.to(torch.float32, copy=True)
                    sh.add_(p.detach().float() - old.float())
                    self.tracker.add("weight", p, r, old, sh)
                p.copy_(r)
        if self.tracker is not None:
            self.tracker.end_step(t)
        return loss
