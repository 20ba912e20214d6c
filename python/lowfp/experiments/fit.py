"""Robust straight-line fits for the experiment tables: Huber regression by IRLS with
leave-one-out (jackknife) intervals.

A line ``y = a + b·x`` is fitted by iteratively reweighted least squares on Huber's loss
(``c = 1.345``, 95% efficiency under normal errors), the residual scale re-estimated each
iteration as MAD/0.6745. Points more than ``c`` scales from the line get weight ``c/|r/s|``, so a
diverged run (one huge log-loss) moves the fit little, where least squares would follow it.

Intervals: the jackknife refits the line n times leaving one point out; the standard error of a
coefficient is ``sqrt((n−1)/n · Σ(θ₍ᵢ₎ − θ̄)²)`` and the reported interval ``θ̂ ± 1.96·SE``
(a normal approximation: with a handful of points it is a rough guide, not a coverage promise).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence, Tuple

import numpy as np

__all__ = ["HuberFit", "huber_line", "least_squares_line", "fit_with_jackknife"]

HUBER_C = 1.345
_MAD_TO_SD = 0.6745


def _check(x: Sequence[float], y: Sequence[float], min_n: int) -> Tuple[np.ndarray, np.ndarray]:
    xa = np.asarray(x, dtype=np.float64).reshape(-1)
    ya = np.asarray(y, dtype=np.float64).reshape(-1)
    if xa.shape != ya.shape:
        raise ValueError(f"x, y: expected the same length, got {xa.size} and {ya.size}")
    if xa.size < min_n:
        raise ValueError(f"x: expected at least {min_n} points, got {xa.size}")
    if not (np.all(np.isfinite(xa)) and np.all(np.isfinite(ya))):
        raise ValueError("x, y: expected finite values (drop diverged runs first)")
    if np.ptp(xa) == 0:
        raise ValueError("x: expected at least two distinct values")
    return xa, ya


def _wls(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> Tuple[float, float]:
    sw = w.sum()
    xm, ym = (w * x).sum() / sw, (w * y).sum() / sw
    sxx = (w * (x - xm) ** 2).sum()
    b = (w * (x - xm) * (y - ym)).sum() / sxx if sxx > 0 else 0.0
    return float(ym - b * xm), float(b)


def least_squares_line(x: Sequence[float], y: Sequence[float]) -> Tuple[float, float]:
    """(intercept, slope) of ordinary least squares."""
    xa, ya = _check(x, y, 2)
    return _wls(xa, ya, np.ones_like(xa))


def huber_line(x: Sequence[float], y: Sequence[float], c: float = HUBER_C,
               max_iter: int = 100, tol: float = 1e-10) -> Tuple[float, float]:
    """(intercept, slope) minimizing Huber's loss of the scaled residuals, by IRLS.

    Raises:
        ValueError: fewer than 2 points, non-finite values, a single distinct x, c <= 0.
    """
    if not c > 0:
        raise ValueError(f"c: expected > 0, got {c}")
    xa, ya = _check(x, y, 2)
    a, b = _wls(xa, ya, np.ones_like(xa))
    for _ in range(max_iter):
        r = ya - (a + b * xa)
        s = np.median(np.abs(r - np.median(r))) / _MAD_TO_SD
        if s <= 1e-12 * max(1.0, float(np.abs(ya).max())):
            break  # (almost) all points on the line: nothing left to down-weight
        u = np.abs(r) / s
        w = np.where(u <= c, 1.0, c / np.maximum(u, 1e-300))
        a2, b2 = _wls(xa, ya, w)
        done = abs(a2 - a) + abs(b2 - b) <= tol * (1.0 + abs(a) + abs(b))
        a, b = a2, b2
        if done:
            break
    return a, b


@dataclasses.dataclass(frozen=True)
class HuberFit:
    """A Huber line with jackknife standard errors and ±1.96·SE intervals."""

    intercept: float
    slope: float
    intercept_se: float
    slope_se: float
    n: int

    @property
    def slope_interval(self) -> Tuple[float, float]:
        return (self.slope - 1.96 * self.slope_se, self.slope + 1.96 * self.slope_se)

    @property
    def intercept_interval(self) -> Tuple[float, float]:
        return (self.intercept - 1.96 * self.intercept_se,
                self.intercept + 1.96 * self.intercept_se)


def fit_with_jackknife(x: Sequence[float], y: Sequence[float]) -> HuberFit:
    """Huber line of y on x and leave-one-out (jackknife) standard errors (needs ≥ 3 points,
    and every leave-one-out subset must keep two distinct x).

    Raises:
        ValueError: as :func:`huber_line`, or fewer than 3 points.
    """
    xa, ya = _check(x, y, 3)
    a, b = huber_line(xa, ya)
    n = xa.size
    loo = np.array([huber_line(np.delete(xa, i), np.delete(ya, i)) for i in range(n)])
    se = np.sqrt((n - 1) / n * ((loo - loo.mean(axis=0)) ** 2).sum(axis=0))
    return HuberFit(a, b, float(se[0]), float(se[1]), int(n))
