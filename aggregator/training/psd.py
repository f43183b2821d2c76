"""Noise can make a sum of outer products indefinite; training needs it positive definite."""

from __future__ import annotations

import numpy as np


def nearest_positive_definite(m: np.ndarray, floor: float) -> np.ndarray:
    """Symmetrise and lift every eigenvalue to at least ``floor`` (post-processing: costs no privacy)."""
    sym = (m + m.T) / 2
    values, vectors = np.linalg.eigh(sym)
    return (vectors * np.maximum(values, floor)) @ vectors.T
