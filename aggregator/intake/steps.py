"""The centre's business steps, apart from any transport: a submission's intake and a training run.

A submission: identity → replay (the original receipt for the same content) → validate (the
centre's own charge) → the evaluated model exists → quarantine gate → store, the budget recounted
from what the store holds, in one transaction → receipt; a stored evaluation reaches the registry
and the evaluation hook once. A rule broken raises the ``AggregatorError`` that names it; the gRPC
servicer (``intake.server``) only parses requests into value objects, calls these steps and turns
their answers, or their errors, into responses.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from fedstore.aggregator.errors import NotAllowed, NotFound, OverBudget, Rejected
from fedstore.aggregator.intake.metrics import AggregatorMetrics
from fedstore.aggregator.submission import Evaluation, Submission
from fedstore.aggregator.intake.accounting import Charge
from fedstore.aggregator.intake.validation import check_identity, receipt_period, validate
from fedstore.aggregator.quarantine.gate import QuarantineGate
from fedstore.aggregator.quarantine.screen import Finding
from fedstore.aggregator.registry.store import ModelRegistry
from fedstore.aggregator.store import (
    QUARANTINE,
    REJECT,
    AlreadyStored,
    BudgetRefused,
    QuarantineEvent,
    StoredReceipt,
    SubmissionStore,
)
from fedstore.aggregator.training.metrics import auc_with_uncertainty, evaluation_metrics
from fedstore.aggregator.training.train import TrainOutcome, TrainRequest, train
from fedstore.federation import FederationConfig
from fedstore.federation.statistics import CATALOG
from fedstore.federation.tokens import Caller

# the centre's clock: the month a submission is charged to is the month it is received in
Clock = Callable[[], datetime]
# (model name, version, region, metrics, submission id): where a region's evaluation goes once stored
EvaluationHook = Callable[[str, int, str, dict[str, float], str], None]


@dataclass(frozen=True)
class Receipt:
    submission_id: str
    receipt_id: str
    accepted_at: datetime
    replay: bool
    epsilon_spent_in_period: float
    quarantine_rule: str | None  # None: not held; else why (a held one's finding, or an operator's rejection)


class Centre:
    """The steps, over the centre's store, registry, quarantine gate, metrics and clock."""

    def __init__(self, config: FederationConfig, store: SubmissionStore, *, metrics: AggregatorMetrics,
                 registry: ModelRegistry | None, on_evaluation: EvaluationHook | None, clock: Clock) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.registry = registry
        self.on_evaluation = on_evaluation
        self.clock = clock
        self.catalog = {s.ref: s for s in CATALOG}
        self.quarantine = QuarantineGate(store, config.quarantine, self.catalog)

    # --- a submission ---------------------------------------------------------------------------

    def submit(self, sub: Submission, caller: Caller) -> Receipt:
        regions = set(self.config.codes)
        # who may send this id, before the store is asked about it: another region's id gets
        # the same refusal whether it was ever accepted or not
        check_identity(sub, caller=caller, regions=regions)
        previous = self.store.receipt(sub.submission_id)
        if previous is not None:
            return self._replay(previous, sub, caller)
        now = self.clock()
        charge = validate(sub, caller=caller, catalog=self.catalog, privacy=self.config.privacy,
                          regions=regions, now=now)
        if sub.evaluation is not None and self.registry is not None:
            try:
                self.registry.get(sub.evaluation.model_name, sub.evaluation.model_version)
            except NotFound as e:
                raise Rejected(f"{e}", rule="model") from None
        # out of line with the other regions: stored, but held out of merging and training
        finding = self.quarantine.check(sub)
        try:
            stored = self._store(sub, charge, now, finding)
        except AlreadyStored as e:  # a concurrent call with the same id stored it first
            return self._replay(e.receipt, sub, caller)
        self.metrics.accepted.labels(sub.region, sub.kind).inc()
        if finding is not None:
            self.metrics.quarantined.labels(sub.region, sub.kind).inc()
        if sub.evaluation is not None:
            self._record_evaluation(sub)
        return self._receipt(stored, sub, replay=False)

    def _store(self, sub: Submission, charge: Charge, now: datetime, finding: Finding | None) -> StoredReceipt:
        """Stored with the centre's charge, the budget recounted from the store in the same transaction."""
        privacy = self.config.privacy
        try:
            return self.store.accept(sub, epsilon=charge.epsilon, delta=charge.delta,
                                     period=receipt_period(now), accepted_at=now,
                                     epsilon_limit=privacy.epsilon_per_month, delta_limit=privacy.delta_per_month,
                                     quarantine_why=finding.why() if finding else None)
        except BudgetRefused as e:
            raise OverBudget(
                f"region {sub.region} has spent ε={e.spent:.3f} of "
                f"{privacy.epsilon_per_month:.3f} (δ={e.spent_delta:.1e} of "
                f"{privacy.delta_per_month:.1e}) in {sub.period} by the centre's records; "
                f"ε={charge.epsilon:.3f} (δ={charge.delta:.1e}) more is refused", rule="budget"
            ) from None

    def _replay(self, previous: StoredReceipt, sub: Submission, caller: Caller) -> Receipt:
        """The original receipt for a submission id already stored, if this is the same submission
        (the caller's identity and the id's region were checked before the store was asked)."""
        if not caller.allows(sub.region) or previous.content_sha256 != sub.content_sha256:
            raise Rejected(f"submission id {sub.submission_id!r} was accepted with other content", rule="replay")
        self.metrics.replayed.labels(sub.region).inc()
        if sub.evaluation is not None and self.registry is not None:
            # the first attempt may have stored the submission but failed before its metrics
            # reached the registry; the region's retry is this replay, so it completes them
            self._record_evaluation(sub)
        return self._receipt(previous, sub, replay=True)

    def _record_evaluation(self, sub: Submission) -> None:
        """The evaluation's metrics into the registry, once per submission id (a replay of a
        recorded one changes nothing), then the hook."""
        e = sub.evaluation
        assert e is not None, "called for evaluations only"
        if e.stage:
            self._record_evidence(sub, e)
            return
        found = evaluation_metrics({label: list(counts) for label, counts in e.counts.items()})
        if self.registry is not None and not self.registry.record_evaluation(
            e.model_name, e.model_version, sub.region, found, submission_id=sub.submission_id
        ):
            return  # already recorded
        if self.on_evaluation is not None:
            self.on_evaluation(e.model_name, e.model_version, sub.region, found, sub.submission_id)

    def _record_evidence(self, sub: Submission, e: Evaluation) -> None:
        """Outcome evidence: AUC and its uncertainty, whole region and per segment, into the registry;
        then the region's canaries follow it (rolled back when worse than the incumbent beyond the margin)."""
        if self.registry is None:
            return
        # the bootstrap's seed is the submission's: the same release always gives the same bounds
        seed = int.from_bytes(hashlib.sha256(sub.submission_id.encode()).digest()[:8], "big")
        parts = {"": e.counts, **e.segments}
        estimates = {segment: auc_with_uncertainty(list(counts[0]), list(counts[1]), e.noise_scale, seed=seed)
                     for segment, counts in parts.items()}
        if self.registry.record_evidence(e.model_name, e.model_version, sub.region, e.stage, estimates,
                                         submission_id=sub.submission_id):
            self.registry.follow_evidence(sub.region)

    def _receipt(self, stored: StoredReceipt, sub: Submission, *, replay: bool) -> Receipt:
        events = self.store.quarantine_events(stored.submission_id)
        status = events[-1].action if events else None
        why = {QUARANTINE: events[-1].why if events else "", REJECT: "rule quarantine: rejected by an operator"}
        return Receipt(stored.submission_id, stored.receipt_id, stored.accepted_at, replay,
                       self.store.epsilon_spent(sub.region, sub.period), why.get(status or ""))

    # --- training and the merged view ---------------------------------------------------------

    def train(self, request: TrainRequest, caller: Caller) -> TrainOutcome:
        if not caller.allows("*"):
            raise NotAllowed(f"caller {caller.name!r} may not train federation-wide models", rule="identity")
        self.quarantine.sweep_training(request.feature_service, request.period)
        held = [e.submission_id for e in self.held_events(request.period) if e.kind == "training"]
        return train(self.store, request, registry=self.registry, who=caller.name, quarantined=held,
                     minimum_expected_auc=self.config.training.minimum_expected_auc)

    def held_events(self, period: str | None) -> list[QuarantineEvent]:
        """The latest quarantine event of every submission quarantine holds out now (of a period, or all)."""
        held = set(self.store.held(period))
        latest = {e.submission_id: e for e in self.store.quarantine_events() if e.submission_id in held}
        return list(latest.values())
