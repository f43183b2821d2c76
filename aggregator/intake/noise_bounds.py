"""How far privacy noise can move a released number, except with a stated small probability.

The plausibility rules (``plausibility.py``) reject a submission only when no honest release could
have produced it unless its noise exceeded one of these bounds. Each bound holds with probability
at least 1 − p; a rule built from several uses a union bound and splits its p between them, so
every rule's false-reject probability on an honest release is at most ``FALSE_REJECT`` (1e-9).

The bounds are Chernoff bounds, valid for every scale and number of terms (no normal
approximation):

- a sum of k independent Laplace(b) variables (continuous, or OpenDP's discrete Laplace, whose
  moment generating function is never larger): P(|Σ| ≥ t) ≤ 2·exp(−λt)/(1 − b²λ²)^k at the best λ;
- a sum of k absolute values of Laplace(b): each is at most Exponential(b) + 1 in distribution (the
  +1 covers the discrete Laplace's integer steps), and a sum of k Exponential(b) is Gamma(k, b):
  P(G ≥ t) ≤ (t/kb)^k·exp(k − t/b) for t > kb;
- a Gaussian N(0, σ²): P(|X| ≥ zσ) with z from the normal quantile;
- a χ² with k degrees of freedom (Laurent and Massart 2000): P(χ² ≥ k + 2√(kx) + 2x) ≤ e^−x.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import NormalDist

FALSE_REJECT = 1e-9  # per rule, on an honest release


def _solve(f: Callable[[float], float], lo: float, hi: float, p: float) -> float:
    """The smallest t in [lo, hi] (to 1e-9 relative) with f(t) ≤ p; f decreasing in t."""
    while f(hi) > p:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if f(mid) > p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-9 * hi:
            break
    return hi


def laplace_sum(k: int, b: float, p: float = FALSE_REJECT) -> float:
    """t with P(|L₁ + … + L_k| ≥ t) ≤ p for independent Laplace variables of scale at most b."""
    if k <= 0 or b <= 0:
        return 0.0

    def log_bound(t: float) -> float:
        u = (-k * b + math.sqrt((k * b) ** 2 + t * t)) / t  # the optimal λ·b of the Chernoff bound
        return math.log(2) - u * t / b - k * math.log1p(-u * u)

    return _solve(log_bound, 1e-12, k * b * 10 + 1, math.log(p))


def abs_laplace_sum(k: int, b: float, p: float = FALSE_REJECT) -> float:
    """t with P(|L₁| + … + |L_k| ≥ t) ≤ p for independent Laplace variables of scale at most b
    (discrete or continuous)."""
    if k <= 0:
        return 0.0
    if b <= 0:
        return float(k)

    def log_bound(t: float) -> float:
        if t <= k * b:
            return 0.0
        return k * math.log(t / (k * b)) + k - t / b

    return _solve(log_bound, k * b, k * b * 10 + 10 * b, math.log(p)) + k


def gaussian(sigma: float, p: float = FALSE_REJECT) -> float:
    """t with P(|N(0, σ²)| ≥ t) ≤ p."""
    return NormalDist().inv_cdf(1 - p / 2) * sigma


def chi2(k: int, p: float = FALSE_REJECT) -> float:
    """t with P(χ²_k ≥ t) ≤ p."""
    x = math.log(1 / p)
    return k + 2 * math.sqrt(k * x) + 2 * x
