"""The aggregator's gRPC server: authenticate, validate, check the budget, store, receipt."""

from __future__ import annotations

import hashlib
import logging
from concurrent import futures
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedstore.aggregator.errors import (
    AggregatorError,
    NotAllowed,
    NotFound,
    OverBudget,
    Rejected,
)
from fedstore.aggregator.global_statistics import merge
from fedstore.aggregator.intake.identity import check_certificate_region
from fedstore.aggregator.intake.metrics import AggregatorMetrics, rule_of
from fedstore.aggregator.intake.validation import check_identity, kind_of, receipt_period, valid_period, validate
from fedstore.aggregator.intake.wire import refusal
from fedstore.aggregator.quarantine.gate import QuarantineGate
from fedstore.aggregator.quarantine.review import decide, quarantine_list
from fedstore.aggregator.registry.service import RegistryServicer
from fedstore.aggregator.registry.store import ModelRegistry
from fedstore.aggregator.store import (
    QUARANTINE,
    REJECT,
    AlreadyStored,
    BudgetRefused,
    QuarantineEvent,
    StoredReceipt,
    SubmissionStore,
    content_hash,
)
from fedstore.aggregator.training.metrics import auc_with_uncertainty, evaluation_metrics
from fedstore.aggregator.training.train import train
from fedstore.federation import ConfigError, FederationConfig
from fedstore.federation.access import AccessGuard
from fedstore.federation.grpc_handlers import generic_handler, limit_streams, reject_malformed, status_details
from fedstore.federation.health_service import HealthService
from fedstore.federation.reflection import ServerReflection
from fedstore.federation.request_metrics import RequestMetrics, method_paths
from fedstore.federation.statistics import CATALOG
from fedstore.federation.tls import server_credentials
from fedstore.federation.tokens import Caller, TokenBook, bearer_token
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2 as pb
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2_grpc
from fedstore.proto.fedstore.registry.v1 import registry_pb2, registry_pb2_grpc

log = logging.getLogger(__name__)

# threads of the centre's server, and how many of them open reflection streams may hold at once
WORKERS, REFLECTION_STREAMS = 8, 2
# The largest request the centre reads (rule size). An honest submission is a few kilobytes (every
# list in it is bounded by the catalog: features, bins, segments, classes); grpc's own limit, 4 MiB,
# refuses larger ones before they are read (RESOURCE_EXHAUSTED), this one names its rule.
MAX_REQUEST_BYTES = 256 * 1024

# the centre's clock: the month a submission is charged to is the month it is received in
Clock = Callable[[], datetime]


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


# (model name, version, region, metrics, submission id): where a region's evaluation goes once stored
EvaluationHook = Callable[[str, int, str, dict[str, float], str], None]


class AggregatorServicer(aggregator_pb2_grpc.AggregatorServicer):
    def __init__(
        self,
        config: FederationConfig,
        store: SubmissionStore,
        metrics: AggregatorMetrics | None = None,
        on_evaluation: EvaluationHook | None = None,
        registry: ModelRegistry | None = None,
        clock: Clock = _utc_now,
    ) -> None:
        self.config = config
        self.clock = clock
        self.store = store
        self.metrics = metrics or AggregatorMetrics()
        self.on_evaluation = on_evaluation
        self.registry = registry
        self.book = TokenBook(config.tokens)
        self.catalog = {s.ref: s for s in CATALOG}
        self.quarantine = QuarantineGate(store, config.quarantine, self.catalog)

    def authenticate(self, context: grpc.ServicerContext) -> Caller:
        token = bearer_token(context.invocation_metadata())
        caller = self.book.caller(token) if token else None
        if caller is None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or unknown token")
        return caller

    def Submit(self, request: pb.Submission, context: grpc.ServicerContext) -> pb.Receipt:
        caller = self.authenticate(context)
        try:
            if not self.config.aggregator.plaintext:  # local development has no certificate to bind to
                check_certificate_region(context, request.region)
            regions = set(self.config.codes)
            # who may send this id, before the store is asked about it: another region's id gets
            # the same refusal whether it was ever accepted or not
            check_identity(request, caller=caller, regions=regions)
            previous = self.store.receipt(request.submission_id)
            if previous is not None:
                return self._replay(previous, request, caller)
            now = self.clock()
            charge = validate(request, caller=caller, catalog=self.catalog, privacy=self.config.privacy,
                              regions=regions, now=now)
            if request.HasField("evaluation") and self.registry is not None:
                try:
                    self.registry.get(request.evaluation.model_name, request.evaluation.model_version)
                except NotFound as e:
                    raise Rejected(f"rule model: {e}") from None
            # out of line with the other regions: stored, but held out of merging and training
            finding = self.quarantine.check(request)
            try:
                privacy = self.config.privacy
                stored = self.store.accept(request, epsilon=charge.epsilon, delta=charge.delta,
                                           period=receipt_period(now), accepted_at=now,
                                           epsilon_limit=privacy.epsilon_per_month, delta_limit=privacy.delta_per_month,
                                           quarantine_why=finding.why() if finding else None)
            except AlreadyStored as e:  # a concurrent call with the same id stored it first
                return self._replay(e.receipt, request, caller)
            except BudgetRefused as e:
                raise OverBudget(
                    f"rule budget: region {request.region} has spent ε={e.spent:.3f} of "
                    f"{self.config.privacy.epsilon_per_month:.3f} (δ={e.spent_delta:.1e} of "
                    f"{self.config.privacy.delta_per_month:.1e}) in {request.period} by the centre's records; "
                    f"ε={charge.epsilon:.3f} (δ={charge.delta:.1e}) more is refused"
                ) from None
            self.metrics.accepted.labels(request.region, kind_of(request)).inc()
            if finding is not None:
                self.metrics.quarantined.labels(request.region, kind_of(request)).inc()
            if request.HasField("evaluation"):
                self._record_evaluation(request)
            return self._receipt(stored, request, replay=False)
        except AggregatorError as e:
            self.metrics.rejected.labels(rule_of(str(e)), e.code.name).inc()
            context.abort(e.code, status_details(str(e)))
            raise

    def _replay(self, previous: StoredReceipt, request: pb.Submission, caller: Caller) -> pb.Receipt:
        """The original receipt for a submission id already stored, if this is the same submission
        (the caller's identity and the id's region were checked before the store was asked)."""
        if not caller.allows(request.region) or previous.content_sha256 != content_hash(request):
            raise Rejected(f"rule replay: submission id {request.submission_id!r} was accepted with other content")
        self.metrics.replayed.labels(request.region).inc()
        if request.HasField("evaluation") and self.registry is not None:
            # the first attempt may have stored the submission but failed before its metrics
            # reached the registry; the region's retry is this replay, so it completes them
            self._record_evaluation(request)
        return self._receipt(previous, request, replay=True)

    def _record_evaluation(self, request: pb.Submission) -> None:
        """The evaluation's metrics into the registry, once per submission id (a replay of a
        recorded one changes nothing), then the hook."""
        e = request.evaluation
        if e.stage:
            self._record_evidence(request)
            return
        found = evaluation_metrics({h.label: list(h.counts) for h in e.classes})
        if self.registry is not None and not self.registry.record_evaluation(
            e.model_name, e.model_version, request.region, found, submission_id=request.submission_id
        ):
            return  # already recorded
        if self.on_evaluation is not None:
            self.on_evaluation(e.model_name, e.model_version, request.region, found, request.submission_id)

    def _record_evidence(self, request: pb.Submission) -> None:
        """Outcome evidence: AUC and its uncertainty, whole region and per segment, into the registry;
        then the region's canaries follow it (rolled back when worse than the incumbent beyond the margin)."""
        if self.registry is None:
            return
        e = request.evaluation
        # the bootstrap's seed is the submission's: the same release always gives the same bounds
        seed = int.from_bytes(hashlib.sha256(request.submission_id.encode()).digest()[:8], "big")
        parts = {"": e.classes, **{f"{e.segment_dimension}={g.value}": g.classes for g in e.segments}}
        estimates = {}
        for segment, classes in parts.items():
            counts = {h.label: list(h.counts) for h in classes}
            estimates[segment] = auc_with_uncertainty(counts[0], counts[1], e.noise_scale, seed=seed)
        if self.registry.record_evidence(e.model_name, e.model_version, request.region, e.stage, estimates,
                                         submission_id=request.submission_id):
            self.registry.follow_evidence(request.region)

    def _receipt(self, stored: StoredReceipt, request: pb.Submission, *, replay: bool) -> pb.Receipt:
        ts = Timestamp()
        ts.FromDatetime(stored.accepted_at.astimezone(timezone.utc))
        events = self.store.quarantine_events(stored.submission_id)
        status = events[-1].action if events else None
        why = {QUARANTINE: events[-1].why if events else "", REJECT: "rule quarantine: rejected by an operator"}
        return pb.Receipt(
            submission_id=stored.submission_id, receipt_id=stored.receipt_id, accepted_at=ts, replay=replay,
            epsilon_spent_in_period=self.store.epsilon_spent(request.region, request.period),
            quarantined=status in why, quarantine_rule=why.get(status or "", ""),
        )

    def Train(self, request: pb.TrainRequest, context: grpc.ServicerContext) -> pb.TrainResult:
        caller = self.authenticate(context)
        try:
            if not caller.allows("*"):
                raise NotAllowed(f"rule identity: caller {caller.name!r} may not train federation-wide models")
            self.quarantine.sweep_training(request.feature_service, request.period or None)
            held = [e.submission_id for e in self._held_events(request.period or None) if e.kind == "training"]
            result = train(self.store, request, registry=self.registry, who=caller.name, quarantined=held,
                           minimum_expected_auc=self.config.training.minimum_expected_auc)
            self.metrics.trainings.labels(result.strategy, "trained").inc()
            return result
        except AggregatorError as e:
            self.metrics.trainings.labels(request.strategy or "lda", "refused").inc()
            context.abort(e.code, status_details(str(e)))
            raise

    def GetGlobalStatistics(self, request: pb.GetGlobalStatisticsRequest, context: grpc.ServicerContext) -> pb.GlobalStatistics:
        self.authenticate(context)
        if request.period and not valid_period(request.period):  # else no submission matches: an empty answer
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, status_details(f"period {request.period!r} is not YYYY-MM"))
        self.quarantine.sweep_features(request.period or None)
        merged = merge(self.store.features(request.period or None), self.catalog)
        merged.quarantined.extend(e.submission_id for e in self._held_events(request.period or None)
                                  if e.kind == "features")
        return merged

    def _held_events(self, period: str | None) -> list[QuarantineEvent]:
        """The latest quarantine event of every submission quarantine holds out now (of a period, or all)."""
        held = set(self.store.held(period))
        latest = {e.submission_id: e for e in self.store.quarantine_events() if e.submission_id in held}
        return list(latest.values())

    def _operator(self, context: grpc.ServicerContext) -> Caller:
        # the access guard admitted only the `audit` role for every region ("*"): the centre's operator,
        # never a region's credential (federation/roles.py); this is defence in depth
        caller = self.authenticate(context)
        if not caller.allows("*"):
            raise NotAllowed(f"rule identity: caller {caller.name!r} may not review quarantined statistics")
        return caller

    def ListQuarantine(self, request: pb.ListQuarantineRequest, context: grpc.ServicerContext) -> pb.QuarantineList:
        try:
            self._operator(context)
            return quarantine_list(self.store, include_decided=request.include_decided)
        except AggregatorError as e:
            context.abort(e.code, status_details(str(e)))
            raise

    def DecideQuarantine(self, request: pb.QuarantineDecision, context: grpc.ServicerContext) -> pb.QuarantineEvent:
        try:
            caller = self._operator(context)
            return decide(self.store, request, who=caller.name)
        except AggregatorError as e:
            context.abort(e.code, status_details(str(e)))
            raise


def build_server(
    config: FederationConfig,
    store_path: Path,
    address: str,
    *,
    metrics: AggregatorMetrics | None = None,
    on_evaluation: EvaluationHook | None = None,
    registry_path: Path | None = None,
    clock: Clock = _utc_now,
) -> tuple[grpc.Server, int, SubmissionStore]:
    """The centre's gRPC server: Aggregator and Registry, health checking and reflection (``grpcurl list``).

    The model registry lives beside the submission store unless ``registry_path`` says otherwise.
    The centre speaks mutual TLS only (``aggregator.tls``), or plaintext where the config says
    ``aggregator.plaintext: true`` (local development). ``clock`` is the centre's own time (the
    month it charges a submission to; tests own it).
    """
    agg = config.aggregator
    # before the store opens: a bad certificate file is a one-line error with nothing left open
    credentials: grpc.ServerCredentials | None = None
    if agg.tls_cert and agg.tls_key and agg.tls_client_ca:
        credentials = server_credentials(agg.tls_cert, agg.tls_key, agg.tls_client_ca)
    elif not agg.plaintext:
        raise ConfigError("aggregator.tls: missing: the centre accepts mutual TLS only; name its certificate, key and "
                          "the regions' client CA (`fedstore certs init` makes development ones), or set "
                          "aggregator.plaintext: true for local development")
    store = SubmissionStore(store_path)
    registry = ModelRegistry(registry_path or store_path.parent / "registry.db", config, clock)
    servicer = AggregatorServicer(config, store, metrics, on_evaluation, registry, clock)
    servicer.metrics.zero(config.codes)
    served = (pb.DESCRIPTOR.services_by_name["Aggregator"], registry_pb2.DESCRIPTOR.services_by_name["Registry"])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=WORKERS), interceptors=[
        RequestMetrics(servicer.metrics.registry, "fedstore_centre", method_paths(*served))])
    # a caller's bytes that are no request get INVALID_ARGUMENT, not grpc's INTERNAL; so does a
    # request with fields or enum values its contract does not define (wire.py), or larger than
    # MAX_REQUEST_BYTES; before any is read, the guard refuses callers whose roles do not admit the
    # method (federation.roles)
    server.add_generic_rpc_handlers((AccessGuard((
        reject_malformed(generic_handler(aggregator_pb2_grpc.add_AggregatorServicer_to_server, servicer), refusal,
                         MAX_REQUEST_BYTES),
        reject_malformed(generic_handler(registry_pb2_grpc.add_RegistryServicer_to_server,
                                         RegistryServicer(registry, servicer.authenticate)), refusal, MAX_REQUEST_BYTES),
    ), servicer.book, None, servicer.metrics),))
    checker = HealthService()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    names = (pb.DESCRIPTOR.services_by_name["Aggregator"].full_name,
             registry_pb2.DESCRIPTOR.services_by_name["Registry"].full_name,
             health_pb2.DESCRIPTOR.services_by_name["Health"].full_name)
    # anyone may open a reflection stream and keep it open: a few of them, not the pool's every thread
    server.add_generic_rpc_handlers((limit_streams(ServerReflection(names), REFLECTION_STREAMS),))
    for name in ("", names[0], names[1]):
        checker.set(name, health_pb2.HealthCheckResponse.SERVING)  # the store opened: it can accept
    if credentials is not None:
        port = server.add_secure_port(address, credentials)
    else:
        log.warning("aggregator.plaintext is set: the centre accepts connections without TLS and binds no "
                    "submission to a certificate; for local development only")
        port = server.add_insecure_port(address)
    return server, port, store
