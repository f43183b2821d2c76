"""The wire → domain adapter of a submission: the one place that reads the protobuf ``Submission``.

Lossless for every field a rule judges (``intake.submission``); the content hash is computed here,
from the message's deterministic serialisation, exactly as the store has always recorded it, so a
replay of a submission stored before this adapter existed still matches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from fedstore.aggregator.submission import (
    UNSPECIFIED,
    Accounting,
    ClassStatistics,
    ConsentClaim,
    Evaluation,
    EvaluationSegment,
    FeatureStatistics,
    Instant,
    NoiseScales,
    ScoreHistogram,
    Segment,
    Submission,
    TrainingStatistics,
    kind_of,
)
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2 as pb


def content_hash(message: pb.Submission) -> str:
    return hashlib.sha256(message.SerializeToString(deterministic=True)).hexdigest()


def parse_submission(message: pb.Submission) -> Submission:
    m = message
    return Submission(
        submission_id=m.submission_id, region=m.region, period=m.period,
        kind=kind_of(training=m.HasField("training"), evaluation=m.HasField("evaluation")),
        content_sha256=content_hash(m),
        window_start=Instant(m.window_start.seconds, m.window_start.nanos) if m.HasField("window_start") else None,
        window_end=Instant(m.window_end.seconds, m.window_end.nanos) if m.HasField("window_end") else None,
        accounting=_accounting(m.accounting) if m.HasField("accounting") else None,
        features=_features(m.features), suppressed=tuple(m.suppressed),
        segments=tuple(Segment(g.dimension, g.value, _features(g.features)) for g in m.segments),
        suppressed_segments=tuple(m.suppressed_segments),
        training=parse_training(m.training) if m.HasField("training") else None,
        evaluation=_evaluation(m.evaluation) if m.HasField("evaluation") else None,
        consent=(ConsentClaim(m.consent.purpose, m.consent.consent_required, m.consent.snapshot_id)
                 if m.HasField("consent") else None),
    )


def _mechanism(number: int) -> str:
    if number == pb.MECHANISM_UNSPECIFIED:
        return UNSPECIFIED
    # a number the contract does not define stays a number (rule mechanism names it)
    return pb.Mechanism.Name(number) if number in pb.Mechanism.values() else str(number)


def _accounting(a: pb.PrivacyAccounting) -> Accounting:
    return Accounting(_mechanism(a.mechanism), a.epsilon, a.delta, a.epsilon_per_query, a.minimum_cohort)


def _features(features: Iterable[pb.FeatureStatistics]) -> tuple[FeatureStatistics, ...]:
    return tuple(
        FeatureStatistics(f.ref, f.count, f.null_count, f.sum, f.sum_sq, tuple(f.histogram), tuple(f.edges),
                          NoiseScales(f.noise.count, f.noise.null_count, f.noise.histogram, f.noise.sum,
                                      f.noise.sum_sq) if f.HasField("noise") else None)
        for f in features)


def parse_training(t: pb.TrainingStatistics) -> TrainingStatistics:
    return TrainingStatistics(t.feature_service, t.label, tuple(t.features),
                              tuple(ClassStatistics(c.label, c.n, tuple(c.sum_x), tuple(c.xtx)) for c in t.classes),
                              t.noise_scale, tuple(t.xtx))


def _histograms(classes: Iterable[pb.ScoreHistogram]) -> tuple[ScoreHistogram, ...]:
    return tuple(ScoreHistogram(h.label, tuple(h.counts)) for h in classes)


def _evaluation(e: pb.Evaluation) -> Evaluation:
    return Evaluation(e.model_name, e.model_version, tuple(e.score_edges), _histograms(e.classes), e.noise_scale,
                      stage=e.stage, segment_dimension=e.segment_dimension,
                      segment_classes=tuple(EvaluationSegment(g.value, _histograms(g.classes)) for g in e.segments),
                      suppressed_segments=tuple(e.suppressed_segments))
