"""Model quality from a region's noisy score histograms: AUC, accuracy, base rate.

AUC from binned scores: P(score₁ > score₀) with ties inside a bin counted half, the
Mann–Whitney statistic on histograms. Post-processing of released numbers: free of privacy cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from fedstore.federation.privacy_maps import evaluation_floor
from fedstore.federation.training import SCORE_EDGES


def auc(negatives: list[int] | np.ndarray, positives: list[int] | np.ndarray) -> float:
    neg, pos = np.asarray(negatives, dtype=float), np.asarray(positives, dtype=float)
    n0, n1 = neg.sum(), pos.sum()
    if n0 <= 0 or n1 <= 0:
        return float("nan")
    below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])  # negatives in lower bins
    return float((pos * (below + 0.5 * neg)).sum() / (n0 * n1))


def accuracy(negatives: list[int] | np.ndarray, positives: list[int] | np.ndarray, threshold: float = 0.0) -> float:
    """Share classified right when a log-odds above ``threshold`` (default: p > ½) means class 1."""
    neg, pos = np.asarray(negatives, dtype=float), np.asarray(positives, dtype=float)
    upper = np.asarray(SCORE_EDGES[1:])
    above = upper > threshold  # bins entirely or partly above: read as predicted positive
    total = neg.sum() + pos.sum()
    return float((neg[~above].sum() + pos[above].sum()) / total) if total else float("nan")


def evaluation_metrics(counts: dict[int, list[int]]) -> dict[str, float]:
    neg, pos = counts[0], counts[1]
    n0, n1 = float(sum(neg)), float(sum(pos))
    return {"auc": auc(neg, pos), "accuracy": accuracy(neg, pos), "positives": n1, "examples": n0 + n1,
            "base_rate": n1 / (n0 + n1) if n0 + n1 else float("nan")}


@dataclass(frozen=True)
class AucEstimate:
    """AUC from noisy histograms with its uncertainty: the noise the region declared and the sampling."""

    auc: float
    se: float  # standard deviation over the bootstrap
    lower: float  # point − z·se
    upper: float
    examples: float  # noisy: the released counts' total
    positives: float
    calibration_error: float = float("nan")  # expected calibration error over the score bins
    calibration_se: float = float("nan")  # its standard deviation over the same bootstrap


def auc_with_uncertainty(negatives: list[int], positives: list[int], noise_scale: float, *, draws: int = 400,
                         confidence: float = 0.90, seed: int = 0) -> AucEstimate:
    """Parametric bootstrap of the release: each draw samples outcomes like the released ones (Poisson
    per bin around them: the outcomes are themselves a sample), adds discrete Laplace noise of the
    declared scale and clamps at 0, as the region did, and computes the AUC; the spread of those AUCs
    is the estimate's standard error, and the bounds are the point ∓ z·se (symmetric: the percentiles
    of releases of a release would carry the clamp's bias twice). Post-processing of released numbers
    (the seed is the centre's), free of privacy cost."""
    floor = evaluation_floor(noise_scale, len(negatives))  # the clamp's mass in empty bins is not outcomes

    def cut(h: np.ndarray) -> np.ndarray:
        return np.where(h < floor, 0.0, h)

    neg, pos = cut(np.asarray(negatives, dtype=float)), cut(np.asarray(positives, dtype=float))
    rng = np.random.default_rng(seed)
    p = -np.expm1(-1.0 / noise_scale) if noise_scale > 0 else 1.0

    def noise(shape: tuple[int, int]) -> np.ndarray:  # discrete Laplace: a difference of two geometrics
        return (rng.geometric(p, shape) - rng.geometric(p, shape)).astype(float)

    shape = (draws, len(neg))
    n_b = cut(np.clip(rng.poisson(neg, shape) + noise(shape), 0, None))
    p_b = cut(np.clip(rng.poisson(pos, shape) + noise(shape), 0, None))
    values = np.array([auc(n_b[i], p_b[i]) for i in range(draws)])
    values = values[np.isfinite(values)]
    eces = np.array([calibration_error(n_b[i], p_b[i]) for i in range(draws)])
    eces = eces[np.isfinite(eces)]
    point = auc(neg, pos)
    total, n1 = float(neg.sum() + pos.sum()), float(pos.sum())
    ece = calibration_error(neg, pos)
    ece_se = float(eces.std(ddof=1)) if len(eces) > 1 else float("nan")
    if len(values) < 2 or not np.isfinite(point):
        return AucEstimate(point, float("nan"), float("nan"), float("nan"), total, n1, ece, ece_se)
    se = float(values.std(ddof=1))
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    return AucEstimate(point, se, point - z * se, point + z * se, total, n1, ece, ece_se)


def calibration_error(negatives: np.ndarray, positives: np.ndarray) -> float:
    """Expected calibration error of a logistic model from its score histograms: per bin, |observed
    share of class 1 − the probability at the bin's middle log-odds|, weighted by the bin's count."""
    neg, pos = np.asarray(negatives, dtype=float), np.asarray(positives, dtype=float)
    n = neg + pos
    if n.sum() <= 0:
        return float("nan")
    edges = np.asarray(SCORE_EDGES)
    predicted = 1 / (1 + np.exp(-(edges[:-1] + edges[1:]) / 2))
    observed = np.divide(pos, n, out=np.zeros_like(pos), where=n > 0)
    return float((n * np.abs(observed - predicted)).sum() / n.sum())
