"""Robust fits for the experiment tables: Huber regression by IRLS with leave-one-out
(jackknife) intervals, for straight lines and for the scaling law ``L(N) = E + A·N^(−alpha)``
(:func:`fit_power_law`: linear in (E, A) for a fixed alpha, so alpha is profiled).

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

__all__ = [
    "HuberFit",
    "huber_line",
    "least_squares_line",
    "fit_with_jackknife",
    "PowerLawFit",
    "fit_power_law",
]

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


def huber_line(
    x: Sequence[float],
    y: Sequence[float],
    c: float = HUBER_C,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> Tuple[float, float]:
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
        return (
            self.intercept - 1.96 * self.intercept_se,
            self.intercept + 1.96 * self.intercept_se,
        )


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


# ------------------------------------------------------------------ power law with an offset


@dataclasses.dataclass(frozen=True)
class PowerLawFit:
    """``L(N) = E + A·N^(−alpha)`` fitted by Huber regression, with leave-one-out (jackknife)
    standard errors and ±1.96·SE intervals of each parameter."""

    E: float
    A: float
    alpha: float
    E_se: float
    A_se: float
    alpha_se: float
    n: int

    def __call__(self, N) -> np.ndarray:
        return self.E + self.A * np.asarray(N, dtype=np.float64) ** (-self.alpha)

    def interval(self, name: str) -> Tuple[float, float]:
        """The ±1.96·SE interval of ``"E"``, ``"A"`` or ``"alpha"``."""
        if name not in ("E", "A", "alpha"):
            raise ValueError(f"name: expected 'E', 'A' or 'alpha', got {name!r}")
        v, se = getattr(self, name), getattr(self, name + "_se")
        return (v - 1.96 * se, v + 1.96 * se)


def _huber_linear(
    X: np.ndarray, y: np.ndarray, c: float, max_iter: int = 50
) -> Tuple[np.ndarray, float]:
    """Huber regression of y on the columns of X by IRLS (MAD scale); returns (coef, loss)."""
    w = np.ones_like(y)
    coef = np.linalg.lstsq(X, y, rcond=None)[0]
    for _ in range(max_iter):
        r = y - X @ coef
        s = np.median(np.abs(r - np.median(r))) / _MAD_TO_SD
        if s <= 1e-12 * max(1.0, float(np.abs(y).max())):
            break
        u = np.abs(r) / s
        w = np.where(u <= c, 1.0, c / np.maximum(u, 1e-300))
        sw = np.sqrt(w)
        new = np.linalg.lstsq(X * sw[:, None], y * sw, rcond=None)[0]
        done = np.abs(new - coef).sum() <= 1e-12 * (1.0 + np.abs(coef).sum())
        coef = new
        if done:
            break
    r = y - X @ coef
    s = float(np.median(np.abs(r - np.median(r))) / _MAD_TO_SD)
    if s <= 1e-12 * max(1.0, float(np.abs(y).max())):
        return coef, float(0.5 * (r * r).sum())  # (almost) exact: Huber = least squares
    a = np.abs(r)
    return coef, float(np.where(a <= c * s, 0.5 * r * r, c * s * a - 0.5 * (c * s) ** 2).sum())


def _power_law(
    N: np.ndarray, L: np.ndarray, c: float, alphas: np.ndarray
) -> Tuple[float, float, float]:
    """Profile fit: for each alpha the model is linear in (E, A); the best alpha of the grid is
    refined by golden-section search between its neighbours."""
    logn = np.log(N)

    def at(alpha: float):
        X = np.stack([np.ones_like(N), np.exp(-alpha * logn)], axis=1)
        return _huber_linear(X, L, c)

    losses = [at(a)[1] for a in alphas]
    i = int(np.argmin(losses))
    lo, hi = alphas[max(0, i - 1)], alphas[min(len(alphas) - 1, i + 1)]
    g = (np.sqrt(5.0) - 1) / 2
    x1, x2 = hi - g * (hi - lo), lo + g * (hi - lo)
    f1, f2 = at(x1)[1], at(x2)[1]
    for _ in range(60):
        if f1 <= f2:
            hi, x2, f2 = x2, x1, f1
            x1 = hi - g * (hi - lo)
            f1 = at(x1)[1]
        else:
            lo, x1, f1 = x1, x2, f2
            x2 = lo + g * (hi - lo)
            f2 = at(x2)[1]
    alpha = (lo + hi) / 2
    (E, A), _ = at(alpha)
    return float(E), float(A), float(alpha)


def fit_power_law(
    N: Sequence[float],
    L: Sequence[float],
    c: float = HUBER_C,
    alpha_range: Tuple[float, float] = (0.01, 3.0),
) -> PowerLawFit:
    """Fit ``L(N) = E + A·N^(−alpha)`` (a scaling law: loss vs parameters N) by Huber
    regression of the residuals in L (IRLS with a MAD scale, as :func:`huber_line`), profiling
    alpha over a log grid of ``alpha_range`` refined by golden-section search; leave-one-out
    (jackknife) standard errors as :func:`fit_with_jackknife`.

    Raises:
        ValueError: fewer than 4 points, non-finite values, N ≤ 0, fewer than 3 distinct N.
    """
    Na, La = _check(N, L, 4)
    if np.any(Na <= 0):
        raise ValueError("N: expected positive sizes")
    if np.unique(Na).size < 3:
        raise ValueError("N: expected at least three distinct sizes")
    lo, hi = alpha_range
    if not 0 < lo < hi:
        raise ValueError(f"alpha_range: expected 0 < low < high, got {alpha_range!r}")
    alphas = np.exp(np.linspace(np.log(lo), np.log(hi), 120))
    E, A, alpha = _power_law(Na, La, c, alphas)
    n = Na.size
    loo = []
    for i in range(n):
        Ni, Li = np.delete(Na, i), np.delete(La, i)
        loo.append(_power_law(Ni, Li, c, alphas) if np.unique(Ni).size >= 3 else (E, A, alpha))
    loo = np.array(loo)
    se = np.sqrt((n - 1) / n * ((loo - loo.mean(axis=0)) ** 2).sum(axis=0))
    return PowerLawFit(E, A, alpha, float(se[0]), float(se[1]), float(se[2]), int(n))
