"""Each region's influence on a trained model: the model fitted again without it (leave-one-region-out).

Post-processing of released statistics only, so it costs no privacy budget. For region r:

* ``weight_change`` = ‖w − w₋ᵣ‖ / ‖w‖ and ``weight_cosine`` = cos(w, w₋ᵣ): how much of the model is r's;
* ``auc_others_with`` / ``auc_others_without``: the mean AUC, over the *other* regions, of w and of
  w₋ᵣ, each judged on those regions' released class statistics. For a linear score s = w·x with
  class means μ₀, μ₁ and covariances Σ₀, Σ₁, AUC = Φ(w·(μ₁ − μ₀) / sqrt(wᵀΣ₀w + wᵀΣ₁w)) under
  Gaussian classes; it ranks models on data the centre never sees, from numbers it already holds.

A region is ``flagged`` when it flips the model (cosine below 0) or the others' AUC is at least
``AUC_FLAG`` better without it: what a label-swapped or inflated release does.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import numpy as np

from fedstore.aggregator.errors import AggregatorError
from fedstore.aggregator.store import TrainingRow
from fedstore.aggregator.training.pooled import pool
from fedstore.aggregator.training.strategy import Strategy
from fedstore.federation.training import LinearModel, from_triangle

M = TypeVar("M", bound=Any)  # a protobuf message class with RegionInfluence's fields

AUC_FLAG = 0.05  # the others' AUC gained by leaving a region out that flags it


@dataclass(frozen=True)
class RegionInfluence:
    region: str
    submission_id: str
    example_share: float
    weight_change: float  # nan when the model cannot be fitted without the region
    weight_cosine: float
    auc_others_with: float | None
    auc_others_without: float | None
    flagged: bool

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> RegionInfluence:
        return cls(**d)  # type: ignore[arg-type]


def influence(rows: list[TrainingRow], features: tuple[str, ...], strategy: Strategy, feature_service: str,
              model: LinearModel) -> list[RegionInfluence]:
    by_region: dict[str, list[TrainingRow]] = defaultdict(list)
    for r in rows:
        by_region[r.region].append(r)
    if len(by_region) < 2:
        return []  # with one region, nothing is left to fit without it
    w = np.asarray(model.weights, dtype=float)
    total_n = sum(r.n for r in rows)
    out = []
    for region in sorted(by_region):
        rest = [r for r in rows if r.region != region]
        others = [rs for reg, rs in sorted(by_region.items()) if reg != region]
        try:
            without = np.asarray(strategy.fit(pool(rest, features), feature_service).weights, dtype=float)
        except (AggregatorError, np.linalg.LinAlgError):
            without = None
        with_auc = _mean_auc(w, others, len(features))
        if without is None:
            change, cosine, without_auc = math.nan, math.nan, None
        else:
            norm = float(np.linalg.norm(w))
            change = float(np.linalg.norm(w - without)) / norm if norm > 0 else math.inf
            denominator = norm * float(np.linalg.norm(without))
            cosine = float(w @ without) / denominator if denominator > 0 else math.nan
            without_auc = _mean_auc(without, others, len(features))
        gained = (without_auc - with_auc) if without_auc is not None and with_auc is not None else 0.0
        out.append(RegionInfluence(
            region=region, submission_id=by_region[region][0].submission_id,
            example_share=sum(r.n for r in by_region[region]) / total_n if total_n > 0 else math.nan,
            weight_change=change, weight_cosine=cosine, auc_others_with=with_auc, auc_others_without=without_auc,
            flagged=bool(cosine < 0 or gained >= AUC_FLAG),
        ))
    return out


def statistics_auc(w: np.ndarray, classes: list[TrainingRow], d: int) -> float | None:
    """AUC of the linear score w·x on one region's released class statistics (Gaussian classes)."""
    by_label = {r.label: r for r in classes}
    if set(by_label) != {0, 1} or min(by_label[0].n, by_label[1].n) < 2:
        return None
    moments = []
    for c in (0, 1):
        r = by_label[c]
        mu = np.asarray(r.sum_x) / r.n
        cov = from_triangle(list(r.xtx), d) / r.n - np.outer(mu, mu)
        moments.append((mu, max(float(w @ cov @ w), 0.0)))  # noise can make a variance negative
    (mu0, v0), (mu1, v1) = moments
    spread = math.sqrt(v0 + v1)
    if spread == 0:
        return None
    return 0.5 * (1 + math.erf(float(w @ (mu1 - mu0)) / spread / math.sqrt(2)))


def _mean_auc(w: np.ndarray, regions: list[list[TrainingRow]], d: int) -> float | None:
    aucs = [a for rs in regions for a in [statistics_auc(w, rs, d)] if a is not None]
    return float(np.mean(aucs)) if aucs else None


def influence_message(i: RegionInfluence, message: Callable[..., M]) -> M:
    """``i`` as a protobuf message of either contract that carries it (the aggregator's TrainResult,
    the registry's model); the AUCs stay unset where the others had no evaluation."""
    out = message(region=i.region, submission_id=i.submission_id, example_share=i.example_share,
                  weight_change=i.weight_change, weight_cosine=i.weight_cosine, flagged=i.flagged)
    if i.auc_others_with is not None:
        out.auc_others_with = i.auc_others_with
    if i.auc_others_without is not None:
        out.auc_others_without = i.auc_others_without
    return out
