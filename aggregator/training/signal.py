"""How much of the class signal survives the noise: estimated before fitting, from released
statistics only (post-processing, no budget spent), per region and for the pooled statistics.

Under Gaussian classes with a shared covariance Σ, LDA's AUC is Φ(√(M/2)) with M = Δμᵀ Σ⁻¹ Δμ
(the squared Mahalanobis distance between the class means). Fitted from noisy class means
Δμ̂ = Δμ + e, e of per-coordinate variance v_j (Σx's noise over n_c, and n's through the delta
method, summed over regions), the score w = S⁻¹Δμ̂ has mean difference ≈ M and variance
≈ 2(M + Σ_j v_j (S⁻¹)_jj) per class, so its expected AUC is Φ(M / √(2(M + N))),
N = Σ_j v_j (S⁻¹)_jj. M itself is estimated unbiasedly as Δμ̂ᵀS⁻¹Δμ̂ − N. XᵀX's noise is left
out (it is divided by every example, and the fit shrinks it); S is the fit's own regularised one.

The centre says what it finds in the training output, warns about regions whose own statistics
keep little signal, and refuses to fit when the pooled statistics' expected AUC is below the
federation's floor (``training.minimum_expected_auc``): such a model would be worse than useless.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from fedstore.aggregator.errors import NotEnoughStatistics
from fedstore.aggregator.store import TrainingRow
from fedstore.aggregator.training.lda import scatter_covariance, within_class_covariance
from fedstore.aggregator.training.noise_floor import noise_floor
from fedstore.aggregator.training.pooled import PooledStatistics, pool
from fedstore.federation.privacy_maps import gaussian_scale
from fedstore.federation.training import TrainingSpec, noise_sds


@dataclass(frozen=True)
class Signal:
    region: str  # "" for the pooled statistics
    separation: float  # estimated noise-free Mahalanobis distance √M between the class means
    noise: float  # √N: the noise's share of the same distance
    auc_without_noise: float
    expected_auc: float
    warning: str = ""


def _phi(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def _noise_sd(row: TrainingRow, spec: TrainingSpec) -> dict[str, float]:
    """The noise sds of one release, recomputed from its (ε, δ) as the centre charged them."""
    try:
        return noise_sds(gaussian_scale(row.epsilon, row.delta), spec.norm_bound)
    except Exception:  # OpenDP finds no scale: the release's noise is unknown, count it as none
        return {"n": 0.0, "sum_x": 0.0, "xtx": 0.0}


def estimate(stats: PooledStatistics, rows: list[TrainingRow], spec: TrainingSpec, region: str = "") -> Signal:
    """The signal of ``stats`` (pooled from ``rows``, one submission per region)."""
    c0, c1 = stats.classes[0], stats.classes[1]
    if min(c0.n, c1.n) < 2:
        return Signal(region, 0.0, math.inf, 0.5, 0.5)
    mu0, mu1 = c0.sum_x / c0.n, c1.sum_x / c1.n
    variance = np.zeros(stats.dimension)
    for r in {r.submission_id: r for r in rows}.values():  # each release's noise, once
        sd = _noise_sd(r, spec)
        for mu, n in ((mu0, c0.n), (mu1, c1.n)):
            # n's noise moves Σx/n by its distance from the spec's centre (m added back with n̂)
            variance += (sd["sum_x"] ** 2 + ((mu - spec.origin) * sd["n"]) ** 2) / n**2
    inverse = np.linalg.inv(within_class_covariance(stats, floor=noise_floor(scatter_covariance(stats))))
    diff = mu1 - mu0
    noise = float(variance @ np.diag(inverse))
    m = max(float(diff @ inverse @ diff) - noise, 0.0)
    expected = _phi(m / math.sqrt(2 * (m + noise))) if m > 0 else 0.5
    return Signal(region, math.sqrt(m), math.sqrt(noise), _phi(math.sqrt(m / 2)), expected)


def signals(rows: list[TrainingRow], spec: TrainingSpec, *, floor: float) -> list[Signal]:
    """Per region and pooled (first), each with a warning where the noise leaves too little;
    NotEnoughStatistics (one line) when the pooled estimate is below ``floor``."""
    by_region: dict[str, list[TrainingRow]] = defaultdict(list)
    for r in rows:
        by_region[r.region].append(r)
    out = [_judged(estimate(pool(rows, spec.features), rows, spec), floor, "the pooled statistics")]
    for region in sorted(by_region):
        rs = by_region[region]
        try:
            s = estimate(pool(rs, spec.features), rs, spec, region)
        except (np.linalg.LinAlgError, ValueError):
            s = Signal(region, 0.0, math.inf, 0.5, 0.5)
        out.append(_judged(s, floor, f"region {region}'s statistics alone"))
    pooled = out[0]
    if pooled.expected_auc < floor:
        raise NotEnoughStatistics(
            f"training refused: the noise leaves too little signal (expected AUC {pooled.expected_auc:.3f} < floor "
            f"{floor:g}; class separation {pooled.separation:.3f} against noise {pooled.noise:.3f}); "
            "more examples per region or a larger ε per region are needed", reason="TOO_LITTLE_SIGNAL")
    return out


def _judged(s: Signal, floor: float, what: str) -> Signal:
    kept = (s.expected_auc - 0.5) / (s.auc_without_noise - 0.5) if s.auc_without_noise > 0.5 else 0.0
    if s.expected_auc >= floor and kept >= 0.5:
        return s
    return Signal(s.region, s.separation, s.noise, s.auc_without_noise, s.expected_auc,
                  f"{what}: expected AUC {s.expected_auc:.3f} of {s.auc_without_noise:.3f} without noise "
                  f"(class separation {s.separation:.3f}, noise on it {s.noise:.3f})")
