"""Torch optimizers whose states live in packed low-bit storage (fused Rust steps on CPU,
CuPy kernels on CUDA).

Each state (AdamW's ``exp_avg``, ``exp_avg_sq``; SGD's and Muon's ``momentum_buffer``) is
chosen on its own: ``None`` (float32), a float format of at most 8 bits (``"e4m3"``, …), or a
:class:`lowfp.Linear`, :class:`lowfp.Dynamic` or :class:`lowfp.Log` codec, stored blockwise
with float32 absmax scales. One call into Rust per param group decodes the states of every
parameter, applies the update, re-encodes the states and writes the weights, in one pass over
memory, multithreaded, with the GIL released.

Modules: :mod:`.base` (the shared packed-state machinery), :mod:`.adamw` (AdamW and its
presets), :mod:`.sgd`, :mod:`.muon`, :mod:`.lowprec` (the LowPrecision research wrapper),
:mod:`.distributed` (DTensor/FSDP2 and DCP helpers).
"""

try:
    import torch  # noqa: F401
except ImportError as e:  # pragma: no cover - torch is an optional extra
    raise ImportError("lowfp.optim needs torch: pip install 'lowfp[torch]'") from e

from .adamw import SOLO, AdamW, AdamW4bit, AdamW8bit, AdamWFp8, solo_beta1
from .base import LAYOUT_VERSION, PackedOptimizer
from .lowprec import LowPrecision, Q
from .muon import Muon, Muon8bit
from .sgd import SGD

__all__ = [
    "AdamW",
    "AdamW8bit",
    "AdamW4bit",
    "AdamWFp8",
    "SOLO",
    "solo_beta1",
    "LowPrecision",
    "Q",
    "SGD",
    "Muon",
    "Muon8bit",
    "PackedOptimizer",
    "LAYOUT_VERSION",
]
