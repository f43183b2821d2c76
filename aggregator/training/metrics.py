"""Model quality from a region's noisy score histograms: AUC, accuracy, base rate.

AUC from binned scores: P(score₁ > score₀) with ties inside a bin counted half, the
Mann–Whitney statistic on histograms. Post-processing of released numbers: free of privacy cost.
"""

from __future__ import annotations

import numpy as np

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
