"""Outcome evidence: a deployed version's scores on the entities whose outcomes arrived, released as
noisy score histograms per outcome class — for the whole region and per segment of the shared catalog.

    judged table (regions/outcomes.py, stays here) ─▶ one row per entity: its latest outcome in the
    window for this version and stage ─▶ bin by SCORE_EDGES per class, whole and per segment ─▶
    OpenDP discrete Laplace on all bins at once ─▶ suppression per segment on the noisy counts

Each entity contributes one outcome, to one bin of one class of the whole and of one segment: the
L1 sensitivity is 2 with segments (1 without). Every segment value of the catalog gets its noise, an
empty one included, so which segments had outcomes is not told by their presence. The centre turns the
histograms into AUC with its uncertainty (``aggregator/training/metrics.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fedstore.federation.privacy_maps import evaluation_floor, evaluation_mechanism, evaluation_scale
from fedstore.federation.training import LABELS, SCORE_EDGES

Histograms = dict[int, tuple[int, ...]]  # label -> counts per SCORE_EDGES bin


@dataclass(frozen=True)
class ExactEvidence:
    name: str
    version: int
    stage: str
    whole: Histograms
    segments: dict[str, Histograms]  # every allowed value of the segment, empty ones too


@dataclass(frozen=True)
class EvidenceRelease:
    name: str
    version: int
    stage: str
    whole: Histograms | None  # None: a class below the minimum cohort (after noise)
    segments: dict[str, Histograms]  # released segments
    suppressed_segments: tuple[str, ...]
    epsilon: float
    scale: float
    sensitivity: int


def _bins(scores: np.ndarray, labels: np.ndarray) -> Histograms:
    bins = len(SCORE_EDGES) - 1
    idx = np.clip(np.searchsorted(SCORE_EDGES, scores, side="right") - 1, 0, bins - 1)  # open ends
    return {c: tuple(int(v) for v in np.bincount(idx[labels == c], minlength=bins)) for c in LABELS}


def exact_evidence(judged: pa.Table, *, name: str, version: int, stage: str, start: datetime, end: datetime,
                   segment_of: Mapping[str, str] | None = None, segment_values: tuple[str, ...] = ()) -> ExactEvidence:
    """The exact histograms (they stay in the region): each entity's latest outcome in [start, end)
    judged against this version at this stage."""
    at = judged.schema.field("outcome_at").type
    mask = pc.and_kleene(pc.equal(judged["model"], name), pc.equal(judged["version"], version))
    mask = pc.and_kleene(mask, pc.equal(judged["stage"], stage))
    mask = pc.and_kleene(mask, pc.greater_equal(judged["outcome_at"], pa.scalar(start, at)))
    t = judged.filter(pc.and_kleene(mask, pc.less(judged["outcome_at"], pa.scalar(end, at))))
    # one outcome per entity (the privacy unit): its latest
    t = t.sort_by([("entity", "ascending"), ("outcome_at", "descending")])
    entities = t["entity"].to_numpy(zero_copy_only=False)
    first = np.ones(len(entities), dtype=bool)
    first[1:] = entities[1:] != entities[:-1]
    entities = entities[first]
    scores = t["score"].to_numpy(zero_copy_only=False)[first]
    labels = t["label"].to_numpy(zero_copy_only=False)[first]
    segments: dict[str, Histograms] = {}
    if segment_of is not None:
        of = np.array([segment_of.get(str(e), "") for e in entities], dtype=object)
        for value in segment_values:
            mask = of == value
            segments[value] = _bins(scores[mask], labels[mask])
    return ExactEvidence(name, version, stage, _bins(scores, labels), segments)


def release_evidence(exact: ExactEvidence, *, epsilon: float, minimum_cohort: int,
                     segmented: bool) -> EvidenceRelease:
    sensitivity = 2 if segmented else 1
    scale = evaluation_scale(epsilon, sensitivity)
    measurement = evaluation_mechanism(scale)
    spent = float(measurement.map(sensitivity))
    parts: list[Histograms] = [exact.whole] + ([exact.segments[v] for v in exact.segments] if segmented else [])
    vector = [v for h in parts for c in LABELS for v in h[c]]
    noisy = [max(int(v), 0) for v in measurement(vector)]  # clamping is post-processing
    bins = len(SCORE_EDGES) - 1
    out: list[Histograms] = []
    for i in range(len(parts)):
        block = noisy[i * bins * len(LABELS):(i + 1) * bins * len(LABELS)]
        out.append({c: tuple(block[j * bins:(j + 1) * bins]) for j, c in enumerate(LABELS)})

    floor = evaluation_floor(scale, len(SCORE_EDGES) - 1)

    def small(h: Histograms) -> bool:  # on the noisy counts, bins within the noise read as empty
        return any(sum(b for b in v if b >= floor) < minimum_cohort for v in h.values())

    whole = None if small(out[0]) else out[0]
    released, suppressed = {}, []
    for value, h in zip(exact.segments if segmented else (), out[1:]):
        if small(h):
            suppressed.append(value)
        else:
            released[value] = h
    return EvidenceRelease(exact.name, exact.version, exact.stage, whole, released, tuple(suppressed), spent, scale,
                           sensitivity)


__all__ = ["EvidenceRelease", "ExactEvidence", "exact_evidence", "release_evidence"]
