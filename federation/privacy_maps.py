"""The privacy maps both sides of the border compute with: one place says, per kind of release,
which OpenDP mechanism adds the noise and what ε (and δ) a noise scale costs at the catalog's
public sensitivity.

A region calls these to choose its scales and to account for its spend; the centre calls the very
same functions on the scales a submission declares, and charges what they say, never the region's
claim. Everything here is public: mechanisms, sensitivities, scales. No data passes through.

    features ..... Laplace (OpenDP's discrete Laplace for counts and histograms, its float
                   sampler for sums); sensitivities in ``feature_queries``
    training ..... Gaussian on the weighted release (n and Σx per class, one XᵀX), L2 sensitivity
                   1 by the weights of ``fedstore.federation.training.part_weights`` (rows clipped to the
                   spec's norm bound C). OpenDP accounts for it in zCDP, ρ = 1 / (2σ²) exactly,
                   and converts ρ to (ε, δ) with its zCDP → approximate-DP map (the optimal
                   conversion for a ρ-zCDP mechanism, Canonne, Kamath and Steinke 2020). The
                   Gaussian's own exact (ε, δ) curve (Balle and Wang 2018) would need ~7% less
                   noise, but OpenDP certifies its sampled Gaussian in zCDP only, so it is not used.
    evaluation ... discrete Laplace on the score histograms, L1 sensitivity 1
"""

from __future__ import annotations

import functools
import math

import opendp.prelude as dp

from fedstore.federation.statistics import FeatureSpec
from fedstore.federation.training import L2_SENSITIVITY

dp.enable_features("contrib")

# The five numbers released per feature, with the OpenDP space each lives in. One entity more or
# less moves a count, a null count and (in L1) a histogram by 1, a sum of clipped values by the
# larger bound's magnitude, a sum of squares by the larger square.
QUERY_NAMES = ("count", "null_count", "histogram", "sum", "sum_sq")
_SPACES = {
    "int": (dp.atom_domain(T=int), dp.absolute_distance(T=int)),
    "vector": (dp.vector_domain(dp.atom_domain(T=int)), dp.l1_distance(T=int)),
    "float": (dp.atom_domain(T=float, nan=False), dp.absolute_distance(T=float)),
}


def feature_queries(spec: FeatureSpec) -> dict[str, tuple[str, float]]:
    """Per query of one feature: (OpenDP space, sensitivity at one entity)."""
    return {
        "count": ("int", 1),
        "null_count": ("int", 1),
        "histogram": ("vector", 1),
        "sum": ("float", float(spec.sum_sensitivity)),
        "sum_sq": ("float", float(spec.sum_sq_sensitivity)),
    }


def laplace(kind: str, scale: float) -> dp.Measurement:
    """OpenDP's Laplace mechanism on one query's space (discrete on integers)."""
    domain, metric = _SPACES[kind]
    return dp.m.make_laplace(domain, metric, scale=scale)


def space(kind: str) -> tuple[dp.Domain, dp.Metric]:
    """The OpenDP (domain, metric) of a query's number."""
    return _SPACES[kind]


def laplace_epsilon(kind: str, sensitivity: float, scale: float) -> float:
    """ε of Laplace noise of ``scale`` on a query of ``sensitivity``, by OpenDP's privacy map.

    ValueError when OpenDP refuses the scale (not finite, negative)."""
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"a noise scale must be a finite positive number, got {scale!r}")
    d_in = float(sensitivity) if kind == "float" else int(sensitivity)
    try:
        return float(laplace(kind, scale).map(d_in))
    except dp.OpenDPException as e:
        raise ValueError(f"OpenDP refuses Laplace scale {scale!r}: {e}") from None


# How a training release's (ε, δ) follows from its noise: written beside every figure that states it.
GAUSSIAN_CONVERSION = ("OpenDP Gaussian, zCDP rho = 1/(2 sigma^2) at L2 sensitivity 1, "
                       "converted to (epsilon, delta) by OpenDP's zCDP-to-approxDP map (Canonne-Kamath-Steinke 2020)")

_VECTORS = dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.l2_distance(T=float)


def _gaussian(scale: float, delta: float) -> dp.Measurement:
    return dp.c.make_fix_delta(dp.c.make_zCDP_to_approxDP(dp.m.make_gaussian(*_VECTORS, scale=scale)), delta)


def gaussian(scale: float, delta: float) -> dp.Measurement:
    """OpenDP's Gaussian mechanism on float vectors, its zCDP converted to (ε, δ) at ``delta``."""
    return _gaussian(scale, delta)


def gaussian_rho(scale: float) -> float:
    """ρ (zCDP) of a training release with noise of ``scale``, by OpenDP's own privacy map."""
    return float(dp.m.make_gaussian(*_VECTORS, scale=scale).map(L2_SENSITIVITY))


def gaussian_epsilon(scale: float, delta: float) -> tuple[float, float]:
    """(ε, δ) of a training release: Gaussian noise of ``scale`` on the weighted release (L2
    sensitivity 1), at the release's δ. ValueError when OpenDP refuses the parameters."""
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"a noise scale must be a finite positive number, got {scale!r}")
    if not (math.isfinite(delta) and 0 < delta < 1):
        raise ValueError(f"a Gaussian release needs 0 < δ < 1, got {delta!r}")
    try:
        eps, got_delta = _gaussian(scale, delta).map(L2_SENSITIVITY)
    except dp.OpenDPException as e:
        raise ValueError(f"OpenDP refuses Gaussian scale {scale!r} at δ {delta!r}: {e}") from None
    return float(eps), float(got_delta)


@functools.lru_cache(maxsize=64)  # a pure function whose binary search builds ~100 measurements
def gaussian_scale(epsilon: float, delta: float) -> float:
    """The smallest noise scale OpenDP certifies for (ε, δ) on the weighted release."""
    return float(dp.binary_search_param(lambda s: _gaussian(s, delta), d_in=L2_SENSITIVITY, d_out=(epsilon, delta)))


def evaluation_mechanism(scale: float) -> dp.Measurement:
    """Discrete Laplace on the score histograms of all classes at once (L1 sensitivity 1)."""
    return laplace("vector", scale)


def evaluation_epsilon(scale: float, sensitivity: int = 1) -> float:
    """ε of an evaluation release with noise of ``scale``; ValueError when OpenDP refuses it.
    ``sensitivity`` 2 for outcome evidence with segments: an entity is in the whole and in one segment."""
    return laplace_epsilon("vector", sensitivity, scale)


def evaluation_floor(scale: float, bins: int) -> int:
    """Bins of a released score histogram (``bins`` of them) below this count are read as empty: noise
    alone lifts a bin to it with probability under 0.05 / bins (a discrete Laplace of ``scale``
    exceeds k with probability under e^(−k/scale)), so under 0.05 of a bin per histogram. The region
    clamps noisy bins at 0, which leaves about half a scale in every empty bin; read as counts, that
    mass spread over the score range pulls an AUC towards ½ and makes an empty segment look like a
    cohort. Post-processing, applied alike by the region (suppression) and the centre (AUC)."""
    return math.ceil(scale * math.log(bins / 0.05)) if scale > 0 else 0


def evaluation_scale(epsilon: float, sensitivity: int = 1) -> float:
    """The Laplace scale OpenDP certifies for ε on the score histograms; ValueError when no finite
    scale does (a tiny ε, 1e-30 say)."""
    if not epsilon > 0:
        raise ValueError("epsilon must be positive")
    try:
        return float(dp.binary_search_param(evaluation_mechanism, d_in=sensitivity, d_out=epsilon))
    except dp.OpenDPException:
        raise ValueError(f"no finite noise scale gives epsilon {epsilon:g}") from None


__all__ = ["GAUSSIAN_CONVERSION", "QUERY_NAMES", "gaussian_rho", "secure_sensitivity", "secure_share_mechanism",
           "secure_share_scale", "secure_sum_epsilon", "secure_sum_rho", "evaluation_epsilon", "evaluation_floor", "evaluation_mechanism", "evaluation_scale", "feature_queries",
           "gaussian", "gaussian_epsilon", "gaussian_scale", "laplace", "laplace_epsilon", "space"]


# --- secure aggregation: each region adds a share of the noise, the sum carries all of it --------
#
# Each region of a secure round encodes its weighted release as integers (round(v · 2^f), f the
# encoding's fraction bits; ``federation.secure_aggregation.encoding``) and adds OpenDP's discrete
# Gaussian of scale σ·Δ/√t (``secure_share_scale``), t the round's threshold and Δ the integer L2
# sensitivity: 2^f for the weighted release's sensitivity 1, plus √D for the rounding of D numbers
# on two neighbouring inputs (each coordinate's rounding moves by under 1). The sum of the k ≥ t
# survivors' shares is a sum of k independent discrete Gaussians N_Z(0, σ²Δ²/t): not itself a
# discrete Gaussian, but by Kairouz, Liu and Steinke 2021 (Distributed Discrete Gaussian, Thm. 11)
# it is ρ-zCDP with ρ = ε'²/2, ε' = min(√(Δ²/(kσ_s²) + τD/2), Δ/(√k σ_s) + τ√D),
# τ = 10·Σ_{j=1}^{k−1} exp(−2π²σ_s²·j/(j+1)), σ_s the share's scale. At the scales used (σ_s ≥ 10^4)
# τ underflows to 0 and ρ = t / (2kσ²) ≤ 1/(2σ²): the sum is at least as private as one release at σ.


def secure_sensitivity(dimension: int, fraction_bits: int) -> int:
    """Δ: the integer L2 sensitivity of an encoded weighted release of ``dimension`` numbers."""
    return int(math.ceil(2**fraction_bits + math.sqrt(dimension)))


def secure_share_scale(scale: float, threshold: int, dimension: int, fraction_bits: int) -> float:
    """The discrete Gaussian scale each region adds, in the encoding's integer units."""
    return scale * secure_sensitivity(dimension, fraction_bits) / math.sqrt(threshold)


def secure_share_mechanism(share_scale: float) -> dp.Measurement:
    """OpenDP's discrete Gaussian on integer vectors: one region's share of the noise."""
    return dp.m.make_gaussian(dp.vector_domain(dp.atom_domain(T=int)), dp.l2_distance(T=int), scale=share_scale)


def secure_sum_rho(share_scale: float, survivors: int, dimension: int, fraction_bits: int) -> float:
    """ρ (zCDP) of the decoded sum of ``survivors`` shares, by Kairouz–Liu–Steinke 2021 Thm. 11."""
    if survivors < 1 or not share_scale > 0:
        raise ValueError("a secure sum needs at least one share of positive scale")
    delta_int = secure_sensitivity(dimension, fraction_bits)
    tau = 10 * sum(math.exp(-2 * math.pi**2 * share_scale**2 * j / (j + 1)) for j in range(1, survivors))
    var = survivors * share_scale**2
    eps = min(math.sqrt(delta_int**2 / var + tau * dimension / 2), delta_int / math.sqrt(var) + tau * math.sqrt(dimension))
    return eps**2 / 2


def secure_sum_epsilon(share_scale: float, survivors: int, dimension: int, fraction_bits: int,
                       delta: float) -> tuple[float, float]:
    """(ε, δ) of the decoded sum, converted from ``secure_sum_rho`` by OpenDP's zCDP → approxDP map
    (the same conversion as a single release's)."""
    rho = secure_sum_rho(share_scale, survivors, dimension, fraction_bits)
    # a zCDP measurement of exactly this ρ: OpenDP's Gaussian of scale 1/√(2ρ) at sensitivity 1
    eps, got = _gaussian(1 / math.sqrt(2 * rho), delta).map(L2_SENSITIVITY)
    return float(eps), float(got)
