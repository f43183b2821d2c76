"""Distances between two histograms on the same agreed edges: PSI and the Jensen–Shannon distance."""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import jensenshannon

_FLOOR = 1e-4  # a share of zero would make PSI infinite; treat it as one in ten thousand


def _shares(hist: np.ndarray) -> np.ndarray:
    h = np.asarray(hist, dtype=float)
    total = h.sum()
    p = h / total if total > 0 else np.full(h.shape, 1 / h.size)
    p = np.maximum(p, _FLOOR)
    return p / p.sum()


def psi(baseline: np.ndarray, current: np.ndarray) -> float:
    """Population stability index: Σ (c − b) · ln(c / b) over bins; 0.1 is a shift, 0.2 a large one."""
    b, c = _shares(baseline), _shares(current)
    return float(np.sum((c - b) * np.log(c / b)))


def js_distance(baseline: np.ndarray, current: np.ndarray) -> float:
    """Jensen–Shannon distance (base 2): 0 identical, 1 disjoint."""
    return float(jensenshannon(_shares(baseline), _shares(current), base=2))
