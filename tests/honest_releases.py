"""Honest submissions made by the regions' own release functions (OpenDP noise, suppression,
accounting) and the outbox's own conversion to the wire, from exact statistics of synthetic
values: what a well-behaved region sends, without a Feast node behind it."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import datetime, timedelta, timezone

import numpy as np

from fedstore.federation.statistics import CATALOG, FeatureSpec
from fedstore.federation.training import LABELS, TRAINING_SPECS, clip_rows, triangle
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2 as pb
from fedstore.regions.publishing.anonymise import anonymise
from fedstore.regions.publishing.evaluation import ScoreHistograms, release_evaluation
from fedstore.regions.publishing.outbox import to_proto
from fedstore.regions.publishing.statistics import FeatureStatistics, RegionStatistics
from fedstore.regions.publishing.training_statistics import ClassStatistics, TrainingStatistics, release_training

SPEC = TRAINING_SPECS[0]


def exact_feature(spec: FeatureSpec, values: np.ndarray, nulls: int) -> FeatureStatistics:
    """The exact statistics of one feature over ``values`` (clipped) and ``nulls`` missing ones,
    as regions/publishing/statistics.py computes them."""
    v = np.clip(np.asarray(values, dtype=float), spec.lower, spec.upper)
    idx = np.clip(np.searchsorted(spec.edges, v, side="right") - 1, 0, spec.bins - 1)
    return FeatureStatistics(spec.ref, int(v.size), int(nulls), float(v.sum()), float((v ** 2).sum()),
                             tuple(int(h) for h in np.bincount(idx, minlength=spec.bins)))


def exact_region(rng: np.random.Generator, entities: int, specs: tuple[FeatureSpec, ...] = CATALOG,
                 ) -> list[FeatureStatistics]:
    """Every feature of a view over the view's same entities (some of them without a value)."""
    out = []
    for spec in specs:
        missing = int(rng.integers(0, max(entities // 10, 1) + 1))
        values = rng.uniform(spec.lower - 0.1 * (spec.upper - spec.lower), spec.upper * 1.1, entities - missing)
        out.append(exact_feature(spec, values, missing))
    return out


def _header(region: str, kind: str, now: datetime, days: int = 30) -> dict:
    end = now.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    return {"submission_id": f"{region.lower()}-{kind}-{uuid.uuid4().hex}", "region": region,
            "period": now.strftime("%Y-%m"), "created_at": now.isoformat(), "status": "queued",
            "start": (end - timedelta(days=days)).isoformat(), "end": end.isoformat()}


def features_submission(region: str, exact: list[FeatureStatistics], *, epsilon: float, now: datetime,
                        minimum_cohort: int = 10, segments: dict[str, list[FeatureStatistics]] | None = None,
                        catalog: tuple[FeatureSpec, ...] = CATALOG) -> pb.Submission | None:
    """What publish_statistics queues (None: every feature suppressed), on the wire."""
    body = features_body(region, exact, epsilon=epsilon, now=now, minimum_cohort=minimum_cohort, segments=segments,
                         catalog=catalog)
    return None if body is None else to_proto(body)


def features_body(region: str, exact: list[FeatureStatistics], *, epsilon: float, now: datetime,
                  minimum_cohort: int = 10, segments: dict[str, list[FeatureStatistics]] | None = None,
                  catalog: tuple[FeatureSpec, ...] = CATALOG) -> dict | None:
    """The outbox file publish_statistics writes (None: every feature suppressed)."""
    share = epsilon / 2 if segments else epsilon
    end = now
    stats = RegionStatistics(region, end - timedelta(days=30), end, tuple(exact))
    released = anonymise(stats, catalog, epsilon=share, minimum_cohort=minimum_cohort)
    if not released.features:
        return None
    body = {**asdict(released), **_header(region, "stats", now)}  # the header's whole-day window
    if segments:
        parts, suppressed, seg_eps = [], [], 0.0
        for value, seg_exact in segments.items():
            noisy = anonymise(RegionStatistics(region, end - timedelta(days=30), end, tuple(seg_exact)), catalog,
                              epsilon=share, minimum_cohort=minimum_cohort)
            seg_eps = max(seg_eps, noisy.accounting.epsilon)
            if noisy.features:
                parts.append({"dimension": "home_city", "value": value, "features": [asdict(f) for f in noisy.features]})
            else:
                suppressed.append(value)
        body["accounting"]["epsilon"] = released.accounting.epsilon + seg_eps
        body.update(segments=parts, suppressed_segments=suppressed)
    return body


def exact_training(rng: np.random.Generator, n: tuple[int, int], d: int = SPEC.dimension) -> TrainingStatistics:
    """As class_statistics computes them: rows in [0, 1], shrunk to the spec's norm bound C."""
    classes, xtx = [], np.zeros((d, d))
    for label, count in zip(LABELS, n, strict=True):
        x = rng.uniform(0, 1, (count, d)) ** rng.uniform(0.3, 3, d)
        x[rng.random((count, d)) < 0.1] = 0.0  # missing values become 0
        x = clip_rows(x, SPEC.norm_bound)
        classes.append(ClassStatistics(label, float(count), tuple(map(float, x.sum(axis=0)))))
        xtx += x.T @ x
    return TrainingStatistics(SPEC.feature_service, SPEC.label, SPEC.features[:d], tuple(classes),
                              tuple(map(float, triangle(xtx))))


def training_submission(region: str, exact: TrainingStatistics, *, epsilon: float, delta: float, now: datetime,
                        minimum_cohort: int = 10) -> pb.Submission | None:
    released = release_training(exact, epsilon=epsilon, delta=delta, minimum_cohort=minimum_cohort,
                                norm_bound=SPEC.norm_bound)
    if released.statistics is None:
        return None
    body = {**_header(region, "train", now), "features": [], "suppressed": [],
            "training": {**asdict(released.statistics), "noise_scale": released.scale},
            "accounting": {"mechanism": "gaussian", "epsilon": released.epsilon, "delta": released.delta,
                           "epsilon_per_query": released.epsilon, "minimum_cohort": minimum_cohort}}
    return to_proto(body)


def evaluation_submission(region: str, counts: dict[int, tuple[int, ...]], *, epsilon: float, now: datetime,
                          name: str = "fraud_scoring_lda", version: int = 1,
                          minimum_cohort: int = 10) -> pb.Submission | None:
    released = release_evaluation(ScoreHistograms(f"{name}:{version}", counts), epsilon=epsilon,
                                  minimum_cohort=minimum_cohort)
    if released.histograms is None:
        return None
    body = {**_header(region, "eval", now), "features": [], "suppressed": [],
            "evaluation": {"model_name": name, "model_version": version, "noise_scale": released.scale,
                           "counts": {str(k): list(v) for k, v in released.histograms.counts.items()}},
            "accounting": {"mechanism": "laplace", "epsilon": released.epsilon, "delta": 0.0,
                           "epsilon_per_query": released.epsilon, "minimum_cohort": minimum_cohort}}
    return to_proto(body)


def evidence_submission(region: str, whole: dict[int, tuple[int, ...]], segments: dict[str, dict[int, tuple[int, ...]]],
                        *, epsilon: float, now: datetime, stage: str = "canary_5", name: str = "fraud_scoring_lda",
                        version: int = 1, minimum_cohort: int = 10) -> pb.Submission:
    """Outcome evidence as a region releases it (regions/publishing/evidence.py), per home city."""
    from fedstore.regions.publishing.evidence import ExactEvidence, release_evidence

    released = release_evidence(ExactEvidence(name, version, stage, whole, segments), epsilon=epsilon,
                                minimum_cohort=minimum_cohort, segmented=True)
    assert released.whole is not None
    body = {**_header(region, "eval", now), "features": [], "suppressed": [],
            "evaluation": {"model_name": name, "model_version": version, "noise_scale": released.scale,
                           "stage": stage, "segment_dimension": "home_city",
                           "counts": {str(k): list(v) for k, v in released.whole.items()},
                           "segments": [{"value": v, "counts": {str(k): list(c) for k, c in h.items()}}
                                        for v, h in released.segments.items()],
                           "suppressed_segments": list(released.suppressed_segments)},
            "accounting": {"mechanism": "laplace", "epsilon": released.epsilon, "delta": 0.0,
                           "epsilon_per_query": released.epsilon, "minimum_cohort": minimum_cohort}}
    return to_proto(body)
