"""SGD with a momentum buffer in packed low-bit storage (CPU, fused Rust step).

Also home of :class:`_PackedStates`, the state-layout mixin that :class:`SGD` and
:class:`lowfp.optim.muon.Muon` share with :class:`lowfp.optim.AdamW`: the methods that do not
depend on AdamW's two states are AdamW's own (borrowed, not copied); only the state list is
restated here.
"""

from __future__ import annotations

from typing import Any, Dict

import torch

from .. import _core
from ..codec import _check_choice
from . import _KINDS, AdamW, _check_block, _codec, _cuda_optim, _flat, _run_closure
from . import distributed as _dist

__all__ = ["SGD"]


class _PackedStates:
    """Per-parameter states stored like AdamW's: float32 tensors, or blockwise quantized as
    ``"<name>.codes"`` (uint8), ``"<name>.scales"`` and ``"<name>.alphas"`` (float32).

    The subclass lists its state names in ``_STATES`` and calls :meth:`_configure`.
    """

    _STATES: tuple = ()
    _CODEC_ARGS = {"momentum_buffer": "momentum_codec"}
    _STORAGE_OPTIONS = AdamW._STORAGE_OPTIONS

    # AdamW's methods, shared as they are: they read only _codecs, _block, _rounding,
    # _min_quant, _STATES, _CODEC_ARGS, _init_state and summary from ``self``.
    _spec = AdamW._spec
    _quantized = AdamW._quantized
    _state_arg = AdamW._state_arg
    _check_layout = AdamW._check_layout
    state_nbytes = AdamW.state_nbytes
    add_param_group = AdamW.add_param_group
    _check_overrides = AdamW._check_overrides
    _override_keys = AdamW._override_keys
    _opt = AdamW._opt
    _codec_of = AdamW._codec_of
    _group_of = AdamW._group_of
    state_dict = AdamW.state_dict
    _check_saved_overrides = AdamW._check_saved_overrides
    _set_step_policies = AdamW._set_step_policies

    @staticmethod
    def _check(p: torch.Tensor) -> None:
        """AdamW's checks (sparse, complex, device, contiguity), then float32 only: these
        steps read the parameter and gradient as float32 NumPy views."""
        AdamW._check(p)
        if p.dtype != torch.float32 or p.grad.dtype != torch.float32:
            raise TypeError(f"param: expected float32 parameters and gradients, got {p.dtype} "
                            f"and {p.grad.dtype}")

    def _configure(self, codecs: Dict[str, Any], block_size: int, rounding: str, seed: int,
                   min_quant_size: int) -> None:
        """Validate and store the storage options (the same rules as AdamW's)."""
        _check_choice("rounding", rounding, ("nearest", "stochastic"))
        _check_block(block_size)
        if not (isinstance(seed, int) and 0 <= seed < 1 << 64):
            raise ValueError(f"seed: expected an integer in [0, 2**64), got {seed!r}")
        self._codecs = {name: _codec(c, arg) for name, (c, arg) in codecs.items()}
        self._block = block_size
        self._rounding = rounding
        self._seed = seed
        self._min_quant = int(min_quant_size)

    _init_state = AdamW._init_state
    _restore_loaded = AdamW._restore_loaded
    _state_lines = AdamW._state_lines
    _advance = AdamW._advance

    load_state_dict = AdamW.load_state_dict


class SGD(_PackedStates, torch.optim.Optimizer):
    """SGD with momentum (torch.optim.SGD semantics) and a low-bit packed momentum buffer.

    Per parameter and step: ``d = g + wd·p``; the buffer is ``d`` on the first step, then
    ``buf = momentum·buf + (1 − dampening)·d``; the step is ``d + momentum·buf`` with Nesterov,
    else ``buf``; ``p −= lr·step``. One fused Rust call per param group decodes the buffers,
    updates them and the weights, and re-encodes them. With ``momentum=0`` there is no state:
    ``p −= lr·d`` in torch.

    Args:
        params: parameters or param groups (float32, contiguous CPU tensors).
        lr, momentum, dampening, weight_decay, nesterov: as torch.optim.SGD.
        momentum_codec: storage of the momentum buffer: None (float32), a float format of at
            most 8 bits (``"e4m3"``, …), or a :class:`lowfp.Linear`, :class:`lowfp.Dynamic`
            or :class:`lowfp.Log` codec, blockwise with float32 absmax scales.
        block_size: elements per block of a quantized buffer (16..4096, multiple of 8).
        rounding: "nearest" or "stochastic" re-encoding of the buffer.
        seed: key of the stochastic rounding (with the step and the parameter's index).
        min_quant_size: parameters with fewer elements keep a float32 buffer.
        nonfinite: a step with NaN/inf in any gradient is skipped ("skip", counted in
            ``skipped_steps``) or raises ("error"), as in :class:`lowfp.optim.AdamW`.
        param_rounding: bfloat16/float16 parameters (with momentum) take the float32 update with
            "stochastic" (default) or "nearest" rounding; without momentum the update is
            torch's own bfloat16 arithmetic.

    Raises:
        ValueError: hyperparameters out of range (the message names the argument), unknown
            codecs; at ``step``, sparse gradients or non-contiguous / non-CPU tensors.
        TypeError: at ``step``, parameters that are not float32, bfloat16 or float16, or
            gradients of another dtype.
    """

    _STATES = ("momentum_buffer",)
    _CUDA = True  # CUDA parameters step through lowfp.cuda.optim (not yet run on a GPU)
    _check = staticmethod(AdamW._check)  # float32, bfloat16 or float16
    _grads_finite = AdamW._grads_finite

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *,
                 momentum_codec: Any = None, block_size: int = 256, rounding: str = "nearest",
                 seed: int = 0, min_quant_size: int = 4096, nonfinite: str = "skip",
                 param_rounding: str = "stochastic"):
        self._set_step_policies(nonfinite, param_rounding)
        if not lr >= 0.0:
            raise ValueError(f"lr: expected >= 0, got {lr}")
        if not momentum >= 0.0:
            raise ValueError(f"momentum: expected >= 0, got {momentum}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay: expected >= 0, got {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov: requires momentum > 0 and dampening = 0, got "
                             f"momentum={momentum}, dampening={dampening}")
        self._configure({"momentum_buffer": (momentum_codec, "momentum_codec")}, block_size,
                        rounding, seed, min_quant_size)
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening,
                        weight_decay=weight_decay, nesterov=bool(nesterov))
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        """One optimization step (see torch.optim.Optimizer.step)."""
        loss = _run_closure(closure)
        if not self._grads_finite():
            return loss
        index = 0
        for group in self.param_groups:
            lr, mom, wd = group["lr"], group["momentum"], group["weight_decay"]
            entries = []  # the whole group goes to Rust in one call
            offsets = []  # FSDP2 shards: where the local rows start in the whole tensor
            for p in group["params"]:
                index += 1
                if p.grad is None:
                    continue
                self._check(p)
                if mom == 0:
                    # torch.optim.SGD's own operations, so the results are the same bits
                    d = p.grad.add(p, alpha=wd) if wd != 0 else p.grad
                    p.add_(d, alpha=-lr)
                    continue
                st, t = self._advance(p, group)
                offsets.append(_dist.element_offset(p))
                scalars = (lr, mom, 1.0 - group["dampening"], wd)
                stream = (t << 32) | (index << 2)  # AdamW's rule (its first state's stream)
                entries.append((_flat(_dist.local(p)), _flat(_dist.local(p.grad)),
                                self._state_arg(st, p, "momentum_buffer", group), scalars,
                                bool(group["nesterov"]), t == 1, stream, stream | 2,
                                _KINDS[p.dtype]))
            if entries:  # CUDA parameters: the same entries to lowfp.cuda.optim's kernel
                core = _cuda_optim() if torch.is_tensor(entries[0][0]) else _core
                core.sgd_step_group(entries, self._opt(group, "block_size"), self._seed,
                                    self._param_rounding == "stochastic", offsets)
        return loss

    summary = AdamW.summary
