"""What global training may learn from, agreed by both sides of the border.

A *training spec* names a feature service, its label, the catalog features a model uses (in
model order) and a public row-norm bound C. Regions summarise labelled examples as sufficient
statistics over features clipped to the catalog's bounds, rescaled to [0, 1] and then scaled
down to L2 norm at most C (``clip_rows``); the centre fits models from those sums and hands back
a :class:`LinearModel` that regions score locally. The rescaling is shared here so the two sides
can never disagree about what a coefficient multiplies.

A region releases per class c n_c and Σx_c (d numbers), and once for both classes the upper
triangle of XᵀX (d(d+1)/2 numbers, row-major): the centre only ever uses XᵀX summed over the
classes, and for a 0/1 label Xᵀy = Σx of class 1, so ridge regression and linear discriminant
analysis both follow.

Choosing C (docs/privacy.md, "Training releases"): a catalog decision made without the private
rows, from public knowledge of each rescaled feature's typical size (its documentation, or the
federation's already released DP feature statistics, whose sums of squares give E[x_j²] at no
further cost): C ≈ 1.5·sqrt(Σ_j E[x_j²]), never above √d (the box's own bound). Rows beyond C
are shrunk, not dropped: too small a C biases the statistics, too large a C adds noise.

A public centre m (the spec's ``centre``: in rescaled units, e.g. the federation's released DP
feature means) makes C much smaller: rows are shrunk towards m to ‖x − m‖ ≤ C, and the noise is
added to the statistics of x − m (sensitivity C, not ‖m‖ + C); the region then adds m back with
its own noisy counts (``uncentred``: post-processing, a linear map), so what travels is still n,
Σx and XᵀX. LDA's and ridge's fits do not depend on where the rows are measured from, so the
centre fits as before. With a centre, choose C ≈ 1.5·sqrt(Σ_j Var(x_j)) (the same DP feature
statistics give the variances): on the benchmark's real data this is 1.5 to 2.5 times smaller
than the uncentred bound, and the noise shrinks with it (docs/privacy.md).
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
    # the public bound on a rescaled row's L2 norm; None: the box's own, √d (no row is shrunk)
    row_norm: float | None = None
    # the public point rows are measured from (rescaled units, one per feature); None: the origin
    centre: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.row_norm is not None and not (np.isfinite(self.row_norm) and self.row_norm > 0):
            raise ConfigError(f"training spec {self.feature_service}: row_norm must be a positive number, "
                              f"got {self.row_norm!r}")
        if self.centre is not None and (len(self.centre) != len(self.features)
                                        or not all(0.0 <= float(v) <= 1.0 for v in self.centre)):
            raise ConfigError(f"training spec {self.feature_service}: centre must give one number in [0, 1] "
                              f"per feature ({len(self.features)}), got {self.centre!r}")

    @property
    def dimension(self) -> int:
        return len(self.features)

    @property
    def norm_bound(self) -> float:
        """C: how far a rescaled row may be from the centre (every row is shrunk to at most this before any sum)."""
        return float(self.row_norm) if self.row_norm is not None else float(np.sqrt(self.dimension))

    @property
    def origin(self) -> np.ndarray:
        """The centre m as a vector (zeros when the spec has none)."""
        return np.zeros(self.dimension) if self.centre is None else np.asarray(self.centre, dtype=float)

    def specs(self, catalog: tuple[FeatureSpec, ...] = CATALOG) -> tuple[FeatureSpec, ...]:
        by_ref = {s.ref: s for s in catalog}
        missing = [f for f in self.features if f not in by_ref]
        if missing:
            raise ConfigError(f"training spec {self.feature_service}: {missing[0]} is not in the statistics catalog")
        return tuple(by_ref[f] for f in self.features)


# fraud_scoring's C: counts and amounts sit in the lower tenth to third of their catalog ranges
# for a typical customer, ratios and rates near 0, KYC level and account age spread over their
# range (the synthetic generator's documentation and the federation's DP feature means): so
# sqrt(Σ E[x_j²]) ≈ 0.9, and C = 1.5 shrinks only unusual rows (the box's bound is √8 ≈ 2.83)
TRAINING_SPECS: tuple[TrainingSpec, ...] = (
    TrainingSpec("fraud_scoring", "is_fraud", tuple(s.ref for s in CATALOG), row_norm=1.5),
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


def release_size(d: int) -> int:
    """Numbers in one training release: n and Σx per class, one upper triangle of XᵀX."""
    return len(LABELS) * (1 + d) + triangle_size(d)


# How a training release's privacy budget (its zCDP ρ) is shared between its parts. One entity
# moves its own class's n by 1, its class's Σx by its row (L2 norm ≤ C) and the triangle of XᵀX
# by that of xxᵀ (L2 norm ≤ ‖x‖² ≤ C²). Each part is multiplied by weight_p = sqrt(share_p) / C^k
# (k = 0, 1, 2) before Gaussian noise of one scale σ is added, and divided after: the weighted
# release then moves by at most sqrt(Σ share_p) = 1 in L2 norm, part p costs share_p of ρ, and its
# noise has sd σ / weight_p. n gets a share of its own so suppression is decided on a count
# whose noise does not grow with d; Σx, which a linear model's direction needs most (divided by
# the minority class's n), gets the largest; XᵀX is divided by every example and shrunk anyway.
BUDGET_SHARES = {"n": 0.1, "sum_x": 0.6, "xtx": 0.3}


def part_weights(norm_bound: float) -> dict[str, float]:
    """Per part of a training release, the weight that makes its sensitivity its budget share."""
    c = float(norm_bound)
    s = BUDGET_SHARES
    return {"n": float(np.sqrt(s["n"])), "sum_x": float(np.sqrt(s["sum_x"])) / c, "xtx": float(np.sqrt(s["xtx"])) / c**2}


def release_weights(d: int, norm_bound: float) -> np.ndarray:
    """The weights in release order: n₀, n₁, Σx₀, Σx₁, triangle of XᵀX."""
    w = part_weights(norm_bound)
    k = len(LABELS)
    return np.concatenate([np.full(k, w["n"]), np.full(k * d, w["sum_x"]), np.full(triangle_size(d), w["xtx"])])


Parts = tuple[tuple[float, ...], tuple[tuple[float, ...], ...], tuple[float, ...]]  # n, Σx per class, XᵀX's triangle


def _moved(ns: tuple[float, ...], sums: tuple[tuple[float, ...], ...], xtx: tuple[float, ...], shift: np.ndarray
           ) -> Parts:
    """The statistics of the rows x + shift, from those of x: Σ(x+s) = Σx + n·s and
    Σ(x+s)(x+s)ᵀ = XᵀX + Σx·sᵀ + s·Σxᵀ + n·s·sᵀ (Σx and n over both classes). Linear in the
    statistics, so it applies as well to noisy ones and to a secure sum (post-processing)."""
    d = len(sums[0])
    if not np.any(shift):
        return tuple(map(float, ns)), tuple(tuple(map(float, x)) for x in sums), tuple(map(float, xtx))
    total_n = float(sum(ns))
    total_x = np.sum([np.asarray(x, dtype=float) for x in sums], axis=0)
    moved_sums = tuple(tuple(map(float, np.asarray(x, dtype=float) + n * shift)) for n, x in zip(ns, sums, strict=True))
    m = from_triangle(np.asarray(xtx, dtype=float), d)
    m = m + np.outer(total_x, shift) + np.outer(shift, total_x) + total_n * np.outer(shift, shift)
    return tuple(map(float, ns)), moved_sums, tuple(map(float, triangle(m)))


def centred(ns: tuple[float, ...], sums: tuple[tuple[float, ...], ...], xtx: tuple[float, ...],
            centre: np.ndarray | None) -> Parts:
    """Statistics of x − m from those of x (what the noise is added to)."""
    d = len(sums[0])
    return _moved(ns, sums, xtx, -(np.zeros(d) if centre is None else np.asarray(centre, dtype=float)))


def uncentred(ns: tuple[float, ...], sums: tuple[tuple[float, ...], ...], xtx: tuple[float, ...],
              centre: np.ndarray | None) -> Parts:
    """Statistics of x from those of x − m, with the counts given (noisy ones for a noisy release)."""
    d = len(sums[0])
    return _moved(ns, sums, xtx, np.zeros(d) if centre is None else np.asarray(centre, dtype=float))


def weighted_release(ns: tuple[float, ...], sums: tuple[tuple[float, ...], ...], xtx: tuple[float, ...],
                     norm_bound: float, centre: np.ndarray | None = None) -> np.ndarray:
    """A release's numbers in release order (n per class, Σx per class, XᵀX's triangle), measured
    from the centre and weighted: the vector whose L2 sensitivity is 1 (what the noise is added
    to, alone or in a secure sum)."""
    d = len(sums[0])
    ns, sums, xtx = centred(ns, sums, xtx, centre)
    vector = np.array([*ns, *(v for s in sums for v in s), *xtx], dtype=float)
    return vector * release_weights(d, norm_bound)


def unweighted_release(weighted: np.ndarray, d: int, norm_bound: float, centre: np.ndarray | None = None) -> Parts:
    """``weighted_release`` undone: (n per class, Σx per class, XᵀX's triangle) of the rows
    themselves, the centre added back with the (noisy) counts the vector holds."""
    v = np.asarray(weighted, dtype=float) / release_weights(d, norm_bound)
    k = len(LABELS)
    ns = tuple(map(float, v[:k]))
    sums = tuple(tuple(map(float, v[k + i * d:k + (i + 1) * d])) for i in range(k))
    return uncentred(ns, sums, tuple(map(float, v[k + k * d:])), centre)


def noise_sds(scale: float, norm_bound: float) -> dict[str, float]:
    """Per part, the sd of the Gaussian noise on each released number when σ = ``scale``."""
    return {part: scale / w for part, w in part_weights(norm_bound).items()}


# The weighted release's L2 sensitivity: one by construction of ``part_weights``.
L2_SENSITIVITY = 1.0


def clip_rows(x: np.ndarray, norm_bound: float, centre: np.ndarray | None = None) -> np.ndarray:
    """Rows (already rescaled to [0, 1]) shrunk towards the centre (the origin when None) to
    distance at most C; nearer rows are untouched. A shrunk row lies between the centre and
    itself, both in the [0, 1] box, so the centre's range checks still hold."""
    x = np.asarray(x, dtype=float)
    m = np.zeros(x.shape[1] if x.ndim == 2 else 0) if centre is None else np.asarray(centre, dtype=float)
    norms = np.linalg.norm(x - m, axis=1) if x.size else np.zeros(x.shape[0])
    factor = np.minimum(1.0, norm_bound / np.maximum(norms, 1e-300))
    return m + (x - m) * factor[:, None]


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
