"""The global key generator behind ``seed=None``.

Design notes
- Every public function that takes a ``seed`` for stochastic rounding or random bits defaults
  to ``seed=None``: the call draws a fresh 64-bit key here, so consecutive calls get
  independent bits (rounding a gradient every step is unbiased across steps, not correlated).
  An explicit integer seed bypasses this module entirely and gives the same bits as always.
- The generator is counter-based, like the element generator below it: key k (k = 0, 1, …
  since the last reset) is splitmix64's output for the state ``base + (k + 1) * GAMMA``, i.e.
  the k-th output of the splitmix64 sequence seeded with ``base``. A key is a pure function of
  (base, k), so a program that calls :func:`manual_seed` and then makes the same calls in the
  same order draws the same keys.
- The default base is fixed (0, as after ``manual_seed(0)``), like torch's default generator:
  a program is reproducible run to run without any call. Call :func:`manual_seed` with a
  per-run or per-rank value to get different streams.
- Keys are drawn only by calls that use them (stochastic rounding without ``random_bits``,
  :func:`lowfp.random_bits`), so adding a round-to-nearest call does not shift later keys.
- Thread safety: one lock around the counter (a few hundred ns per draw, uncontended). The
  order in which concurrent threads draw keys is the order they take the lock.
- Independent of ``torch.manual_seed`` and NumPy's generators: lowfp imports neither torch's
  RNG nor changes theirs. After ``os.fork`` the child continues from the parent's counter (as
  torch's CPU generator does); call :func:`manual_seed` in each worker to separate them.
- Rejected: ``os.urandom`` keys by default (irreproducible programs); keys from torch's
  generator (needs torch at import time and would perturb the caller's torch RNG stream).
"""

from __future__ import annotations

import threading

_MASK = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15

_lock = threading.Lock()
_base = 0
_count = 0


def _mix(z: int) -> int:
    """splitmix64's finalizer (Steele, Lea, Flood 2014; the constants of Vigna's reference)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def manual_seed(seed: int) -> None:
    """Reset lowfp's global key generator, so that the ``seed=None`` calls that follow draw
    the same keys in every run.

    Args:
        seed: an int with ``-2**63 <= seed < 2**64`` (negative values are taken modulo 2**64,
            as torch does).

    Raises:
        TypeError: seed is not an int.
        ValueError: seed is out of range.
    """
    global _base, _count
    if not isinstance(seed, int) and not hasattr(seed, "__index__") or isinstance(seed, bool):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    s = int(seed.__index__())
    if not -(1 << 63) <= s < (1 << 64):
        raise ValueError(f"seed: expected -2**63 <= seed < 2**64, got {s}")
    with _lock:
        _base, _count = s & _MASK, 0


def next_seed() -> int:
    """A fresh 64-bit key: the next output of the global splitmix64 sequence."""
    global _count
    with _lock:
        _count += 1
        k = _count
        b = _base
    return _mix((b + k * _GAMMA) & _MASK)


def initial_seed() -> int:
    """The base the generator was last reset to (0 by default)."""
    return _base
