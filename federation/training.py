"""What global training may learn from, agreed by both sides of the border.

A *training spec* names a feature service, its label and the catalog features a model uses, in
model order. Regions summarise labelled examples as per-class sufficient statistics over features
clipped to the catalog's bounds and rescaled to [0, 1]; the centre fits models from those sums and
hands back a :class:`LinearModel` that regions score locally. The rescaling is shared here so the
two sides can never disagree about what a coefficient multiplies.

Per class c the sufficient statistics are n_c, Σx (d numbers) and the upper triangle of XᵀX
(d(d+1)/2 numbers, row-major). Pooled over classes they give XᵀX, and for a 0/1 label
Xᵀy = Σx of class 1, so ridge regression and linear discriminant analysis both follow.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedstore.federation.errors import ConfigError
from fedstore.federation.statistics import CATALOG, FeatureSpec


@dataclass(frozen=True)
class TrainingSpec:
    feature_service: str
    label: str  # a 0/1 label column of an offline-only view tagged role=label
    features: tuple[str, ...]  # catalog refs, in model order

    @property
    def dimension(self) -> int:
        return len(self.features)

    def specs(self, catalog: tuple[FeatureSpec, ...] = CATALOG) -> tuple[FeatureSpec, ...]:
        by_ref = {s.ref: s for s in catalog}
        missing = [f for f in self.features if f not in by_ref]
        if missing:
            raise ConfigError(f"training spec {self.feature_service}: {missing[0]} is not in the statistics catalog")
        return tuple(by_ref[f] for f in self.features)


TRAINING_SPECS: tuple[TrainingSpec, ...] = (
    TrainingSpec("fraud_scoring", "is_fraud", tuple(s.ref for s in CATALOG)),
)
LABELS = (0, 1)

# Evaluation histograms bin a model's logit score on these agreed edges; the ends are open (values
# beyond them fall in the first or last bin). Fine enough that AUC from bins is within ~0.005 of
# the exact rank AUC on the synthetic data.
SCORE_EDGES: tuple[float, ...] = tuple(round(-10 + i * 0.25, 2) for i in range(57))  # -10 … 4


def training_spec(feature_service: str) -> TrainingSpec:
    for spec in TRAINING_SPECS:
        if spec.feature_service == feature_service:
            return spec
    known = ", ".join(s.feature_service for s in TRAINING_SPECS)
    raise ConfigError(f"no training spec for feature service {feature_service!r}; known: {known}")


def schema_hash(spec: TrainingSpec) -> str:
    """What a model's coefficients mean: service, label, features in order, and their bounds."""
    described = [spec.feature_service, spec.label, [(f.ref, f.lower, f.upper) for f in spec.specs()]]
    return hashlib.sha256(json.dumps(described).encode()).hexdigest()


def triangle_size(d: int) -> int:
    return d * (d + 1) // 2


def block_size(d: int) -> int:
    """Numbers released per class: n, Σx, upper triangle of XᵀX."""
    return 1 + d + triangle_size(d)


# How the noise of a Gaussian release is shared between the parts of a class block. Each part is
# multiplied by its weight before unit-scale noise is added and divided after, so a part with a
# smaller weight gets proportionally more noise and costs less sensitivity. Class means (n, Σx)
# drive a linear model; the d(d+1)/2 XᵀX entries are summed over both classes and every region and
# shrunk anyway, so they take the larger share of the noise.
BLOCK_WEIGHTS = {"n": 1.0, "sum_x": 1.0, "xtx": 0.3}


def block_weights(d: int) -> np.ndarray:
    w = BLOCK_WEIGHTS
    return np.concatenate([[w["n"]], np.full(d, w["sum_x"]), np.full(triangle_size(d), w["xtx"])])


def l2_sensitivity(d: int) -> float:
    """How far one entity can move a weighted class block in L2 norm, features rescaled to [0, 1].

    One entity adds 1 to n, x_j ≤ 1 to each Σx_j and x_j·x_k ≤ 1 to each triangle entry, each
    times its part's weight.
    """
    return float(np.sqrt(np.sum(block_weights(d) ** 2)))


def rescale(raw: np.ndarray, specs: tuple[FeatureSpec, ...]) -> np.ndarray:
    """Clip each column to its catalog bounds and map it to [0, 1]; a missing value becomes 0."""
    lower = np.array([s.lower for s in specs], dtype=float)
    upper = np.array([s.upper for s in specs], dtype=float)
    x = np.clip(np.asarray(raw, dtype=float), lower, upper)
    x = (x - lower) / (upper - lower)
    return np.nan_to_num(x, nan=0.0)


def triangle(xtx: np.ndarray) -> np.ndarray:
    """Upper triangle (diagonal included) of a square matrix, row-major."""
    return xtx[np.triu_indices(xtx.shape[0])]


def from_triangle(values: np.ndarray | list[float], d: int) -> np.ndarray:
    """The symmetric matrix whose upper triangle is ``values``."""
    m = np.zeros((d, d))
    m[np.triu_indices(d)] = values
    return m + np.triu(m, 1).T


_EDGE = 1e-3


@dataclass(frozen=True)
class LinearModel:
    """A model the centre trained and a region scores: ``score = intercept + weights · rescale(x)``.

    ``link`` says how to read the score: ``logistic`` (a log-odds; LDA) or ``identity`` (ridge on
    a 0/1 label, a probability-like score). Ranking metrics such as AUC use the score directly.
    """

    feature_service: str
    features: tuple[str, ...]
    weights: tuple[float, ...]
    intercept: float
    link: str = "logistic"
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.weights) != len(self.features):
            raise ValueError("one weight per feature is needed")
        if self.link not in ("logistic", "identity"):
            raise ValueError(f"unknown link {self.link!r}")

    def score(self, x: np.ndarray) -> np.ndarray:
        """Scores of already rescaled rows (n × d)."""
        return self.intercept + np.asarray(x, dtype=float) @ np.asarray(self.weights, dtype=float)

    def logit(self, x: np.ndarray) -> np.ndarray:
        """The score on the log-odds scale the evaluation histograms use."""
        s = self.score(x)
        if self.link == "logistic":
            return s
        # ridge on a 0/1 label: read its score as a probability; outside (δ, 1 − δ) continue the
        # logit linearly, so the map stays strictly increasing and ranks are never tied away
        lo, hi = _EDGE, 1 - _EDGE
        p = np.clip(s, lo, hi)
        out = np.log(p / (1 - p))
        slope = 1 / (_EDGE * (1 - _EDGE))
        return np.where(s < lo, out + (s - lo) * slope, np.where(s > hi, out + (s - hi) * slope, out))

    def to_dict(self) -> dict[str, object]:
        return {"feature_service": self.feature_service, "features": list(self.features),
                "weights": list(self.weights), "intercept": self.intercept, "link": self.link,
                "metadata": dict(self.metadata)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LinearModel:
        """From ``to_dict``'s output, read back from JSON (where NaN and Infinity parse: refused)."""
        weights, intercept = tuple(float(w) for w in d["weights"]), float(d["intercept"])
        if not np.isfinite([*weights, intercept]).all():
            raise ValueError("weights and intercept must be finite numbers")
        return cls(feature_service=str(d["feature_service"]), features=tuple(d["features"]), weights=weights,
                   intercept=intercept, link=str(d.get("link", "logistic")), metadata=dict(d.get("metadata", {})))
