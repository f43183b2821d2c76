"""The aggregator's gRPC server: a thin adapter over the centre's steps (``intake.steps``), and its wiring."""

from __future__ import annotations

import logging
from concurrent import futures
from datetime import datetime, timezone
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedstore.aggregator.errors import AggregatorError, NotAllowed, Rejected
from fedstore.aggregator.global_statistics import merge
from fedstore.aggregator.intake.identity import check_certificate_region
from fedstore.aggregator.intake.messages import receipt_message, train_request, train_result
from fedstore.aggregator.intake.metrics import AggregatorMetrics
from fedstore.aggregator.intake.secure_rounds import SecureRounds
from fedstore.aggregator.intake.secure_server import SecureAggregationServicer
from fedstore.aggregator.intake.steps import Centre, Clock, EvaluationHook
from fedstore.aggregator.intake.submission_wire import parse_submission
from fedstore.aggregator.intake.validation import valid_period
from fedstore.aggregator.intake.wire import refusal
from fedstore.aggregator.quarantine.review import decide, quarantine_list
from fedstore.aggregator.registry.service import RegistryServicer
from fedstore.aggregator.registry.store import ModelRegistry
from fedstore.aggregator.store import SubmissionStore
from fedstore.federation import ConfigError, FederationConfig
from fedstore.federation.border_rules import MAX_REQUEST_BYTES  # rule size: the region sends no more either
from fedstore.federation.access import AccessGuard
from fedstore.federation.error_boundary import ErrorBoundary
from fedstore.federation.errors import Unauthenticated
from fedstore.federation.grpc_handlers import generic_handler, limit_streams, reject_malformed
from fedstore.federation.health_service import HealthService
from fedstore.federation.reflection import ServerReflection
from fedstore.federation.request_metrics import RequestMetrics, method_paths
from fedstore.federation.tls import server_credentials
from fedstore.federation.tokens import Caller, TokenBook, bearer_token
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2 as pb
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2_grpc
from fedstore.proto.fedstore.registry.v1 import registry_pb2, registry_pb2_grpc

log = logging.getLogger(__name__)

# threads of the centre's server, and how many of them open reflection streams may hold at once
WORKERS, REFLECTION_STREAMS = 8, 2


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class AggregatorServicer(aggregator_pb2_grpc.AggregatorServicer):
    """The Aggregator service over gRPC: authenticate, parse the request into a value object, call
    the step (``intake.steps``), answer; a step's ``AggregatorError`` becomes its status and details
    at the server's error boundary (``federation.error_boundary``)."""

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
        self.store = store
        self.metrics = metrics or AggregatorMetrics()
        self.book = TokenBook(config.tokens)
        self.centre = Centre(config, store, metrics=self.metrics, registry=registry, on_evaluation=on_evaluation,
                             clock=clock)

    def authenticate(self, context: grpc.ServicerContext) -> Caller:
        token = bearer_token(context.invocation_metadata())
        caller = self.book.caller(token) if token else None
        if caller is None:
            raise Unauthenticated("missing or unknown token", reason="TOKEN_UNKNOWN" if token else "TOKEN_MISSING")
        return caller

    def Submit(self, request: pb.Submission, context: grpc.ServicerContext) -> pb.Receipt:
        caller = self.authenticate(context)
        try:
            if not self.config.aggregator.plaintext:  # local development has no certificate to bind to
                check_certificate_region(context, request.region)
            return receipt_message(self.centre.submit(parse_submission(request), caller))
        except AggregatorError as e:
            region = request.region if request.region in self.config.codes else "unknown"
            self.metrics.rejected.labels(region, e.rule or "other", e.status.value).inc()
            raise

    def Train(self, request: pb.TrainRequest, context: grpc.ServicerContext) -> pb.TrainResult:
        caller = self.authenticate(context)
        wanted = train_request(request)
        try:
            outcome = self.centre.train(wanted, caller)
        except AggregatorError:
            self.metrics.trainings.labels(wanted.strategy, "refused").inc()
            raise
        self.metrics.trainings.labels(outcome.strategy, "trained").inc()
        return train_result(outcome)

    def GetGlobalStatistics(self, request: pb.GetGlobalStatisticsRequest, context: grpc.ServicerContext) -> pb.GlobalStatistics:
        self.authenticate(context)
        if request.period and not valid_period(request.period):  # else no submission matches: an empty answer
            raise Rejected(f"period {request.period!r} is not YYYY-MM", reason="INVALID_PERIOD")
        self.centre.quarantine.sweep_features(request.period or None)
        merged = merge(self.store.features(request.period or None), self.centre.catalog)
        merged.quarantined.extend(e.submission_id for e in self.centre.held_events(request.period or None)
                                  if e.kind == "features")
        return merged

    def _operator(self, context: grpc.ServicerContext) -> Caller:
        # the access guard admitted only the `audit` role for every region ("*"): the centre's operator,
        # never a region's credential (federation/roles.py); this is defence in depth
        caller = self.authenticate(context)
        if not caller.allows("*"):
            raise NotAllowed(f"caller {caller.name!r} may not review quarantined statistics", rule="identity")
        return caller

    def ListQuarantine(self, request: pb.ListQuarantineRequest, context: grpc.ServicerContext) -> pb.QuarantineList:
        self._operator(context)
        return quarantine_list(self.store, include_decided=request.include_decided)

    def DecideQuarantine(self, request: pb.QuarantineDecision, context: grpc.ServicerContext) -> pb.QuarantineEvent:
        caller = self._operator(context)
        return decide(self.store, request, who=caller.name)


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
    served = (pb.DESCRIPTOR.services_by_name["Aggregator"], registry_pb2.DESCRIPTOR.services_by_name["Registry"],
              pb.DESCRIPTOR.services_by_name["SecureAggregation"])
    secure = SecureAggregationServicer(SecureRounds(config, store, clock), servicer.authenticate,
                                       certificates=not agg.plaintext)
    # metrics outermost: they count the status the error boundary sent
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=WORKERS), interceptors=[
        RequestMetrics(servicer.metrics.registry, "fedstore_centre", method_paths(*served)), ErrorBoundary()])
    # a caller's bytes that are no request get INVALID_ARGUMENT, not grpc's INTERNAL; so does a
    # request with fields or enum values its contract does not define (wire.py), or larger than
    # MAX_REQUEST_BYTES; before any is read, the guard refuses callers whose roles do not admit the
    # method (federation.roles)
    server.add_generic_rpc_handlers((AccessGuard((
        reject_malformed(generic_handler(aggregator_pb2_grpc.add_AggregatorServicer_to_server, servicer), refusal,
                         MAX_REQUEST_BYTES),
        reject_malformed(generic_handler(registry_pb2_grpc.add_RegistryServicer_to_server,
                                         RegistryServicer(registry, servicer.authenticate)), refusal, MAX_REQUEST_BYTES),
        reject_malformed(generic_handler(aggregator_pb2_grpc.add_SecureAggregationServicer_to_server, secure), refusal,
                         MAX_REQUEST_BYTES),
    ), servicer.book, None, servicer.metrics),))
    checker = HealthService()
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    names = (pb.DESCRIPTOR.services_by_name["Aggregator"].full_name,
             registry_pb2.DESCRIPTOR.services_by_name["Registry"].full_name,
             health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             pb.DESCRIPTOR.services_by_name["SecureAggregation"].full_name)
    # anyone may open a reflection stream and keep it open: a few of them, not the pool's every thread
    server.add_generic_rpc_handlers((limit_streams(ServerReflection(names), REFLECTION_STREAMS),))
    for name in ("", names[0], names[1], names[3]):
        checker.set(name, health_pb2.HealthCheckResponse.SERVING)  # the store opened: it can accept
    if credentials is not None:
        port = server.add_secure_port(address, credentials)
    else:
        log.warning("aggregator.plaintext is set: the centre accepts connections without TLS and binds no "
                    "submission to a certificate; for local development only")
        port = server.add_insecure_port(address)
    return server, port, store
