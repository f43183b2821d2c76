"""`fedstore region publish-stats`: compute, spend budget, anonymise, queue in the outbox.

    exact statistics (stay here) ─▶ budget ledger: spend ε (δ) or refuse ─▶ OpenDP noise + suppression
                                                                          ─▶ outbox/<id>.json (queued)

Three kinds of submission, each its own budget spend: per-feature ``features`` statistics (drift
baselines), per-class ``training`` statistics (global training) and an ``evaluation`` of a
candidate model. The budget is spent before any noisy number exists, so a failure after it errs on
the side of privacy. Sending the outbox (with retries) is ``outbox.send_outbox``.

Beside each queued release the region keeps, for itself alone, the consent basis it rested on
(``<data_dir>/consent/releases/<submission>.json``: purpose, policy, the records' fingerprint, the
time consent was judged at and how many entities it left out): never in the outbox body, which
holds what the centre is sent and nothing else.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from fedstore.federation import PrivacyConfig, RegionConfig
from fedstore.federation.consent import Purpose
from fedstore.federation.statistics import CATALOG, FeatureSpec, SegmentSpec
from fedstore.federation.traffic import STAGES
from fedstore.federation.training import LinearModel, TrainingSpec
from fedstore.regions.consent import consent_gate
from fedstore.regions.errors import RegionError
from fedstore.regions.publishing.anonymise import AnonymisedStatistics, anonymise, noise_is_finite
from fedstore.regions.publishing.budget import BudgetLedger
from fedstore.regions.publishing.evaluation import (
    EvaluationRelease,
    evaluation_scale,
    release_evaluation,
    score_histograms,
)
from fedstore.regions.publishing.examples import labelled_examples
from fedstore.regions.publishing.statistics import compute_segment_statistics, compute_statistics
from fedstore.regions.publishing.training_statistics import (
    TrainingRelease,
    TrainingStatistics,
    class_statistics,
    release_training,
)
from fedstore.regions.outcomes import read_judged
from fedstore.regions.publishing.evidence import EvidenceRelease, exact_evidence, release_evidence
from fedstore.regions.store.node import RegionNode


class RegionPlace(Protocol):
    """What spending and queueing need of a region: its code and its data directory."""

    @property
    def code(self) -> str: ...

    @property
    def data_dir(self) -> Path: ...


def outbox_dir(data_dir: Path) -> Path:
    return data_dir / "outbox"


def whole_day(when: datetime) -> datetime:
    """The UTC midnight at or before ``when``: a window is whole days, so its ends carry nothing but
    a date (a time of day, or nanoseconds, would be a channel of its own to the centre)."""
    return when.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def publish_statistics(
    node: RegionNode,
    privacy: PrivacyConfig,
    *,
    epsilon: float,
    end: datetime | None = None,
    days: int = 30,
    catalog: tuple[FeatureSpec, ...] = CATALOG,
    segment: SegmentSpec | None = None,
) -> tuple[str, AnonymisedStatistics, Path]:
    _positive(epsilon)
    now = datetime.now(UTC)
    end = whole_day(end or now)
    start = end - timedelta(days=days)
    consent = consent_gate(node.region, Purpose.GLOBAL_STATISTICS)
    stats = compute_statistics(node, catalog, start, end, consent)
    if not any(f.count or f.null_count for f in stats.features):
        # noise alone would be released, and ε spent on it: refuse before the budget is touched
        left_out = max(stats.consent_excluded.values(), default=0)
        why = f" with consent for {consent.purpose.value} ({left_out} left out)" if left_out else ""
        raise RegionError(f"region {node.code} has no data{why} between {start:%Y-%m-%d %H:%M} and "
                          f"{end:%Y-%m-%d %H:%M} UTC; nothing published, no ε spent")
    by_segment = compute_segment_statistics(node, catalog, segment, start, end, consent) if segment else {}
    # with a segment breakdown the budget is halved between the whole region and the segments;
    # segments hold disjoint entities, so together they cost what the costliest one does
    # (parallel composition)
    share = epsilon / 2 if segment else epsilon
    specs = {s.ref: s for s in catalog}
    if not noise_is_finite(tuple(specs[f.ref] for f in stats.features), epsilon=share):
        raise RegionError(f"epsilon {epsilon:g} is too small: the noise it needs is infinite; nothing published, "
                          "no ε spent")
    submission_id = _spend(node, privacy, "stats", epsilon, 0.0, now)  # refuses (nothing released) when over budget
    released = anonymise(stats, catalog, epsilon=share, minimum_cohort=privacy.minimum_cohort)
    segments, suppressed_segments, segment_eps = [], [], 0.0
    for value, seg_stats in by_segment.items():
        noisy = anonymise(seg_stats, catalog, epsilon=share, minimum_cohort=privacy.minimum_cohort)
        segment_eps = max(segment_eps, noisy.accounting.epsilon)
        if noisy.features:
            segments.append({"dimension": segment.dimension, "value": value,  # type: ignore[union-attr]
                             "features": [asdict(f) for f in noisy.features]})
        else:
            suppressed_segments.append(value)
    spent = released.accounting.epsilon + segment_eps
    assert spent <= epsilon * (1 + 1e-9), "OpenDP accounting exceeds the spend"
    body = _header(node, submission_id, now, "features", status="queued" if released.features else "suppressed")
    body.update(asdict(released))
    if segment:
        body["accounting"]["epsilon"] = spent
        body.update(segments=segments, suppressed_segments=suppressed_segments)
    body["consent"] = _record_basis(node, submission_id, {**consent.snapshot(), "as_of": end.isoformat(),
                                                         "left_out": stats.consent_excluded})
    return submission_id, released, _queue(node, body)


def publish_training_statistics(
    node: RegionNode,
    privacy: PrivacyConfig,
    spec: TrainingSpec,
    *,
    epsilon: float,
    end: datetime | None = None,
    days: int = 30,
) -> tuple[str, TrainingRelease, Path]:
    _positive(epsilon)
    now = datetime.now(UTC)
    end = whole_day(end or now)
    start = end - timedelta(days=days)
    consent = consent_gate(node.region, Purpose.GLOBAL_STATISTICS)
    examples = labelled_examples(node, spec, start, end, consent)
    exact = class_statistics(examples, spec.feature_service, spec.label, norm_bound=spec.norm_bound,
                             centre=spec.centre)
    submission_id = _spend(node, privacy, "train", epsilon, privacy.delta, now)
    released = release_training(exact, epsilon=epsilon, delta=privacy.delta, minimum_cohort=privacy.minimum_cohort,
                                norm_bound=spec.norm_bound, centre=spec.centre)
    assert released.epsilon <= epsilon * (1 + 1e-6) and released.delta <= privacy.delta * (1 + 1e-9)
    body = _header(node, submission_id, now, "training", status="queued" if released.statistics else "suppressed")
    body.update(start=start.isoformat(), end=end.isoformat(), features=[], suppressed=[],
                training={**asdict(released.statistics), "noise_scale": released.scale} if released.statistics else None,
                accounting={**_accounting("gaussian", released.epsilon, released.delta, released.epsilon,
                                          privacy.minimum_cohort, {"training": released.scales}),
                            "rho": released.rho, "conversion": released.conversion})
    body["consent"] = _record_basis(node, submission_id, {**consent.snapshot(), "as_of": end.isoformat(),
                                                         "left_out": {spec.label: examples.consent_excluded}})
    return submission_id, released, _queue(node, body)


def exact_training_statistics(node: RegionNode, spec: TrainingSpec, *, end: datetime | None = None,
                              days: int = 30) -> TrainingStatistics:
    """The exact statistics ``publish_training_statistics`` would release, consent gate included:
    a secure-aggregation round's input (``secure_round``), which never leaves unmasked."""
    return secure_training_input(node, spec, end=end, days=days)[0]


def secure_training_input(node: RegionNode, spec: TrainingSpec, *, end: datetime | None = None, days: int = 30,
                          round_id: str | None = None) -> tuple[TrainingStatistics, dict[str, Any] | None]:
    """``exact_training_statistics`` and, with ``round_id``, the consent basis its masked input to
    that round rests on, kept beside the region's releases as a plain training release's
    (``consent/releases/<region>-secagg-<random>.json``, naming the round: the centre's id never
    names a file here); what crosses the border with the masked input is the same ``ConsentBasis``."""
    end = whole_day(end or datetime.now(UTC))
    consent = consent_gate(node.region, Purpose.GLOBAL_STATISTICS)
    examples = labelled_examples(node, spec, end - timedelta(days=days), end, consent)
    exact = class_statistics(examples, spec.feature_service, spec.label, norm_bound=spec.norm_bound,
                             centre=spec.centre)
    if round_id is None:
        return exact, None
    return exact, _record_basis(node, f"{node.region.code.lower()}-secagg-{uuid.uuid4().hex}", {
        **consent.snapshot(), "as_of": end.isoformat(), "round_id": round_id,
        "left_out": {spec.label: examples.consent_excluded}})


def publish_evaluation(
    node: RegionNode,
    privacy: PrivacyConfig,
    spec: TrainingSpec,
    model: LinearModel,
    *,
    name: str,
    version: int,
    epsilon: float,
    end: datetime | None = None,
    days: int = 30,
) -> tuple[str, EvaluationRelease, Path]:
    _positive(epsilon)
    if tuple(model.features) != spec.features:
        raise RegionError(f"model {name} v{version} uses other features than training spec {spec.feature_service}")
    now = datetime.now(UTC)
    end = whole_day(end or now)
    start = end - timedelta(days=days)
    consent = consent_gate(node.region, Purpose.EVALUATION)
    examples = labelled_examples(node, spec, start, end, consent)
    exact = score_histograms(model, f"{name}:{version}", examples)
    try:
        evaluation_scale(epsilon)  # OpenDP finds none for a tiny ε: refuse before the spend, not after it
    except ValueError:
        raise RegionError(f"epsilon {epsilon:g} is too small: the noise it needs is infinite; nothing published, "
                          "no ε spent") from None
    submission_id = _spend(node, privacy, "eval", epsilon, 0.0, now)
    released = release_evaluation(exact, epsilon=epsilon, minimum_cohort=privacy.minimum_cohort)
    body = _header(node, submission_id, now, "evaluation", status="queued" if released.histograms else "suppressed")
    body.update(start=start.isoformat(), end=end.isoformat(), features=[], suppressed=[],
                evaluation={"model_name": name, "model_version": version, "noise_scale": released.scale,
                            "counts": {str(k): list(v) for k, v in released.histograms.counts.items()}}
                if released.histograms else None,
                accounting=_accounting("laplace", released.epsilon, 0.0, released.epsilon, privacy.minimum_cohort,
                                       {"evaluation": {"histograms": released.scale}}))
    body["consent"] = _record_basis(node, submission_id, {**consent.snapshot(), "as_of": end.isoformat(),
                                                         "left_out": {spec.label: examples.consent_excluded}})
    return submission_id, released, _queue(node, body)


def publish_evidence(
    region: RegionConfig,
    privacy: PrivacyConfig,
    *,
    name: str,
    version: int,
    stage: str,
    epsilon: float,
    segment: SegmentSpec | None = None,
    segment_of: Mapping[str, str] | None = None,  # entity -> segment value, with ``segment``
    join_key: str = "customer_id",  # the key the prediction log's entities are values of (consent)
    end: datetime | None = None,
    days: int = 30,
    now: datetime | None = None,
) -> tuple[str, EvidenceRelease, Path]:
    """Outcome evidence of ``name`` v``version`` at ``stage`` (the region's judged outcomes, see
    ``evidence.py``), as an ``evaluation`` submission with a stage and, with ``segment``, per segment."""
    _positive(epsilon)
    if stage not in STAGES:
        raise RegionError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
    if (segment is None) != (segment_of is None):
        raise RegionError("a segment breakdown needs both the segment and each entity's value")
    now = now or datetime.now(UTC)
    end = whole_day(end or now)
    start = end - timedelta(days=days)
    values = segment.values.get(region.code, ()) if segment else ()
    judged = read_judged(region.data_dir)
    # the region's consent for evaluation, as it held at the window's end (as every release's)
    consent = consent_gate(region, Purpose.EVALUATION)
    left_out = 0
    if consent.active and judged.num_rows:
        ok = consent.allowed(pa.table({join_key: judged["entity"]}), [join_key], end)
        left_out = len(set(judged.filter(pa.array(~ok))["entity"].to_pylist()))
        judged = judged.filter(pa.array(ok))
    exact = exact_evidence(judged, name=name, version=version, stage=stage, start=start,
                           end=end, segment_of=segment_of, segment_values=values)
    if not any(sum(v) for v in exact.whole.values()):
        raise RegionError(f"no outcomes judged {name} v{version} at {stage} in {region.code} between "
                          f"{start:%Y-%m-%d} and {end:%Y-%m-%d}; nothing published, no ε spent")
    try:
        evaluation_scale(epsilon, 2 if segment else 1)
    except ValueError:
        raise RegionError(f"epsilon {epsilon:g} is too small: the noise it needs is infinite; nothing published, "
                          "no ε spent") from None
    submission_id = _spend(region, privacy, "eval", epsilon, 0.0, now)
    released = release_evidence(exact, epsilon=epsilon, minimum_cohort=privacy.minimum_cohort,
                                segmented=segment is not None)
    assert released.epsilon <= epsilon * (1 + 1e-9), "OpenDP accounting exceeds the spend"
    basis = _record_basis(region, submission_id, {**consent.snapshot(), "as_of": end.isoformat(),
                                                  "left_out": {"outcomes": left_out}})
    body = _header(region, submission_id, now, "evaluation", status="queued" if released.whole else "suppressed")
    body.update(start=start.isoformat(), end=end.isoformat(), features=[], suppressed=[],
                evaluation={"model_name": name, "model_version": version, "noise_scale": released.scale,
                            "stage": stage, "segment_dimension": segment.dimension if segment else "",
                            "counts": {str(k): list(v) for k, v in released.whole.items()},
                            "segments": [{"value": v, "counts": {str(k): list(c) for k, c in h.items()}}
                                         for v, h in released.segments.items()],
                            "suppressed_segments": list(released.suppressed_segments)}
                if released.whole else None,
                accounting=_accounting("laplace", released.epsilon, 0.0, released.epsilon, privacy.minimum_cohort,
                                       {"evaluation": {"histograms": released.scale}}))
    body["consent"] = basis
    return submission_id, released, _queue(region, body)


def _positive(epsilon: float) -> None:
    if not epsilon > 0:
        raise RegionError(f"epsilon must be positive, got {epsilon}")


def _spend(node: RegionPlace, privacy: PrivacyConfig, kind: str, epsilon: float, delta: float, now: datetime) -> str:
    ledger = BudgetLedger(node.data_dir / "privacy_budget.db", node.code, epsilon_per_month=privacy.epsilon_per_month,
                          delta_per_month=privacy.delta_per_month)
    # a random UUID and nothing else: an id that told the time, or anything the region chose, would
    # carry information to the centre beside the statistics (the centre enforces the format)
    submission_id = f"{node.code.lower()}-{kind}-{uuid.uuid4().hex}"
    ledger.spend(submission_id, epsilon, now, delta)
    return submission_id


def _header(node: RegionPlace, submission_id: str, now: datetime, kind: str, *, status: str) -> dict[str, Any]:
    return {"submission_id": submission_id, "region": node.code, "period": BudgetLedger.period(now),
            "created_at": now.isoformat(), "kind": kind, "status": status}


def _accounting(mechanism: str, epsilon: float, delta: float, per_query: float, cohort: int,
                scales: dict[str, dict[str, float]]) -> dict[str, Any]:
    return {"mechanism": mechanism, "epsilon": epsilon, "delta": delta, "epsilon_per_query": per_query,
            "minimum_cohort": cohort, "scales": scales}


def consent_basis_path(data_dir: Path, submission_id: str) -> Path:
    return data_dir / "consent" / "releases" / f"{submission_id}.json"


def _record_basis(node: RegionPlace, submission_id: str, basis: dict[str, Any]) -> dict[str, Any]:
    """Keep the release's consent basis in the region, under a random snapshot id; what crosses the
    border beside the release (``ConsentBasis``): the purpose, whether it needs consent, that id."""
    snapshot_id = uuid.uuid4().hex  # random: the records' fingerprint stays here, the id only points to it
    basis = {**basis, "snapshot_id": snapshot_id}
    path = consent_basis_path(node.data_dir, submission_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(basis, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(path)
    return {"purpose": basis["purpose"], "consent_required": bool(basis["requires_consent"]), "snapshot_id": snapshot_id}


def _queue(node: RegionPlace, body: dict[str, Any]) -> Path:
    box = outbox_dir(node.data_dir)
    box.mkdir(parents=True, exist_ok=True)
    path = box / f"{body['submission_id']}.json"
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(path)
    return path
