"""A region scores a candidate model on its own labelled examples and releases only noisy metrics.

What leaves is a histogram of the model's log-odds scores per label class on the agreed
``SCORE_EDGES``, with OpenDP's discrete Laplace noise: one entity lands in one bin of one class,
so the L1 sensitivity of the whole release is 1. From two such histograms the centre computes AUC,
accuracy and calibration; it never sees a prediction or a label.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fedstore.federation.privacy_maps import evaluation_mechanism, evaluation_scale
from fedstore.federation.training import LABELS, SCORE_EDGES, LinearModel
from fedstore.regions.publishing.cleansers import MinimumCohort, at_the_border
from fedstore.regions.publishing.examples import LabelledExamples


@dataclass(frozen=True)
class ScoreHistograms:
    model: str  # "<name>:<version>" as the registry knows it
    counts: dict[int, tuple[int, ...]]  # label -> counts per SCORE_EDGES bin

    def cohorts(self) -> Mapping[str, float]:
        return {f"class {label}": sum(v) for label, v in self.counts.items()}

    def without(self, withheld: tuple[str, ...]) -> None:
        return None  # a model's quality is not judged on one class


@dataclass(frozen=True)
class EvaluationRelease:
    histograms: ScoreHistograms | None  # None: a class below the minimum cohort (after noise)
    epsilon: float
    scale: float
    minimum_cohort: int


def score_histograms(model: LinearModel, name: str, ex: LabelledExamples) -> ScoreHistograms:
    if tuple(ex.features) != tuple(model.features):
        raise ValueError("the examples' features differ from the model's")
    logit = model.logit(ex.x)
    bins = len(SCORE_EDGES) - 1
    idx = np.clip(np.searchsorted(SCORE_EDGES, logit, side="right") - 1, 0, bins - 1)  # open ends
    return ScoreHistograms(name, {c: tuple(int(v) for v in np.bincount(idx[ex.y == c], minlength=bins)) for c in LABELS})


def release_evaluation(exact: ScoreHistograms, *, epsilon: float, minimum_cohort: int) -> EvaluationRelease:
    border = (MinimumCohort(minimum_cohort),)
    scale = evaluation_scale(epsilon)
    measurement = evaluation_mechanism(scale)
    spent = float(measurement.map(1))
    vector = [v for c in LABELS for v in exact.counts[c]]
    noisy = [max(int(v), 0) for v in measurement(vector)]  # clamping is post-processing
    bins = len(SCORE_EDGES) - 1
    counts = {c: tuple(noisy[i * bins:(i + 1) * bins]) for i, c in enumerate(LABELS)}
    return EvaluationRelease(at_the_border(ScoreHistograms(exact.model, counts), border), spent, scale, minimum_cohort)
