"""A region's gRPC serving node: wiring, health, reflection, metrics, TLS and graceful shutdown.

Services on one port:
  fedstore.serving.v1.FeatureServing   this project's contract (statuses, source, job ids)
  GrpcFeatureServer                    Feast's own ``feast listen`` contract, for Feast clients
  feast.serving.ServingService         Feast's serving contract (its Java client, its Go server)
  fedstore.datasets.v1.HistoricalFeatures  point-in-time training sets, streamed as Arrow
  grpc.health.v1.Health                "" = can answer at all (online store or snapshot);
                                       "fedstore.online_store" = the online store itself
  grpc.reflection.v1 and v1alpha       so ``grpcurl list`` works

The lookup methods and ``FeatureServing/Score`` (``serving.scoring``) run on the lookup lane
(``serving.lookup_lane``): threads that poll grpc's core for their calls and answer each where it
arrives, without the thread hand-offs grpc's Python servers make per call. The lane uses grpc's
private core; when this grpcio lacks a piece of it (or ``serving.lookup_path`` is ``public``) the
same methods are answered through grpc's public API (``serving.lookup_public``): slower, never
down; the start-up log and ``fedstore_lookup_path`` say which. Everything else is grpc's thread-pool server on the same port: health, reflection,
training-set streams. When the region scores (``serving.models``) the deployment follower and the
prediction log start and stop with the node.
Registry, snapshot and consent-record reloads run on the refresher thread.
With ``serving.http_port``, Feast's feature-server HTTP API (``serving.http_api``) on a port of its
own, answered by the same lookup path behind the same guard.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from concurrent import futures
from dataclasses import dataclass
from functools import partial
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable, Collection, Sequence

import grpc
from feast.protos.feast.serving import GrpcServer_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedstore.federation import FederationConfig, RegionConfig
from fedstore.federation.access import admitted_call
from fedstore.federation.channels import centre_link
from fedstore.federation.error_boundary import ErrorBoundary
from fedstore.federation.grpc_handlers import generic_handler
from fedstore.federation.health_service import HealthService
from fedstore.federation.reflection import ServerReflection
from fedstore.federation.tls import server_credentials
from fedstore.proto.fedstore.datasets.v1 import datasets_pb2
from fedstore.proto.fedstore.serving.v1 import serving_pb2
from fedstore.online import ClusterTarget, Load, OnlineMarker
from fedstore.regions.store.engine import redis_target
from fedstore.regions.errors import StorageError
from fedstore.regions.store.feast_config import REGISTRY_FILE
from fedstore.regions.store.ledger import JobLedger
from fedstore.regions.store.node import RegionNode
from fedstore.serving.auth import TokenBook, TokenGuard
from fedstore.serving.breaker import CircuitBreaker
from fedstore.serving.catalog import CatalogCache
from fedstore.serving.consent import ConsentCheck
from fedstore.serving.datasets_servicer import HistoricalFeaturesServicer
from fedstore.serving.fallback import SnapshotCache
from fedstore.serving.feast_compat import SERVING_SERVICE, FeastCompatServicer
from fedstore.serving.entities import max_lookup_bytes
from fedstore.serving.feast_json import POLICY as HTTP_POLICY
from fedstore.serving.feast_json import FeastJson
from fedstore.serving.features import OnlineFeatures
from fedstore.serving.http_api import INLINE_MAX_BYTES, FeastHttpApi, HttpSettings, PipelinedLookups
from fedstore.serving.loaded_views import UNCHECKED, LoadedViews
from fedstore.serving.lookup_methods import LANE, PUBLIC, LaneMethod
from fedstore.serving.lookup_public import PublicLookups
from fedstore.serving.metrics import ServingMetrics
from fedstore.serving.open_streams import LimitOpenStreams
from fedstore.serving.online import ClusterReader, FeastReader, OnlineReader, RedisReader
from fedstore.serving.ports import CannotListen, check_bindable, stop_listening
from fedstore.serving.servicer import FeatureServingServicer
from fedstore.serving.scoring import Scorer, ScoringServicer
from fedstore.serving.deployed import Deployment, DeploymentStore
from fedstore.serving.model_follower import DeploymentFollower
from fedstore.serving.prediction_log import PredictionLog
from fedstore.serving.use_audit import UseAudit

if TYPE_CHECKING:
    from fedstore.serving.lookup_lane import LookupLane

log = logging.getLogger(__name__)

ONLINE_STORE_HEALTH = "fedstore.online_store"
# NOT_SERVING while a view's newest snapshot file cannot be loaded (the last good one is served)
SNAPSHOT_HEALTH = "fedstore.snapshot"
SERVICE_NAMES = (
    serving_pb2.DESCRIPTOR.services_by_name["FeatureServing"].full_name,
    GrpcServer_pb2.DESCRIPTOR.services_by_name["GrpcFeatureServer"].full_name,
    SERVING_SERVICE,
    datasets_pb2.DESCRIPTOR.services_by_name["HistoricalFeatures"].full_name,
)


@dataclass(frozen=True)
class NodeAddress:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


class ServingNode:
    def __init__(
        self,
        config: FederationConfig,
        region: RegionConfig,
        *,
        address: str | None = None,
        refresh_seconds: float = 1.0,
        reuse_port: bool = False,
        metrics_port: int | None = None,
        http_port: int | None = None,
        centre_address: str | None = None,
    ) -> None:
        """``centre_address``: where the registry is (default: the config's aggregator address).
        ``http_port``: instead of the config's ``serving.http_port`` (0: any free port; tests)."""
        self.region = region
        self.refresh_seconds = refresh_seconds
        self._reuse_port = reuse_port
        check_bindable(address or region.serving_address, reuse_port=reuse_port)  # before any loading: fail fast
        node = RegionNode(region)
        if not node.is_applied:
            from fedstore.regions.errors import RegionNotReady

            raise RegionNotReady(
                f"region {region.code} has no registry yet: run `fedstore region apply --region {region.code}` first"
            )
        store = node.store
        settings = region.serving
        target = redis_target(store.config)
        timeout = settings.online_timeout_ms / 1000
        self.reader: OnlineReader
        if isinstance(target, ClusterTarget):
            self.reader = ClusterReader(target, store.project, timeout_seconds=timeout)
        elif target is not None:
            self.reader = RedisReader(target, store.project, timeout_seconds=timeout)
        else:
            self.reader = FeastReader(store)
        self._ledger: JobLedger
        try:
            self._ledger = node.ledger
        except (StorageError, sqlite3.DatabaseError) as e:
            # a read-only data volume (or a file sqlite cannot read): serving only reads the ledger (the
            # marker's loads, a gauge), and without it an online store that lost its rows would be
            # answered as "not found"; a ledger that cannot be read at all is seen by ``_expected``
            log.warning("region %s: the job ledger %s cannot be opened for writing (%s); serving reads it read-only",
                        region.code, node.ledger_path, e)
            self._ledger = JobLedger(node.ledger_path, region.code, read_only=True)
        # the refresher compares the online marker with the ledger: did Redis lose the rows the ledger says it holds?
        self._loaded = LoadedViews(region.code, OnlineMarker(target, store.project, timeout_seconds=max(timeout, 1.0)),
                                   self._ledger) if target is not None else None
        self._checking = threading.Lock()
        self._seen_not_loaded: frozenset[str] = frozenset()  # views the last marker check found not loaded
        # whether the ledger's loads were read once: until they are, the marker cannot be checked, and
        # every served view is answered as not loaded (``_check_loaded``)
        self._loads_read = False
        self._watermarks: tuple[float, dict[str, datetime | None]] = (-1.0, {})
        self.catalog = CatalogCache(store, region.data_dir / REGISTRY_FILE)
        self.snapshots = SnapshotCache(region.data_dir)
        self._failing: dict[str, str] = {}  # refresher step -> its last error, while it fails
        self.metrics = ServingMetrics(region.code)
        self._refresh_snapshots()
        self.metrics.snapshot_size(self.snapshots.held_bytes())
        self.features = OnlineFeatures(
            region=region.code,
            catalog=self.catalog,
            reader=self.reader,
            snapshots=self.snapshots,
            breaker=CircuitBreaker(
                failure_threshold=settings.breaker_failures, reset_seconds=settings.breaker_reset_seconds
            ),
            max_entities=settings.max_entities,
            metrics=self.metrics,
            online_timeout_seconds=None if isinstance(self.reader, FeastReader) else timeout,
        )
        if self._loaded is not None:
            self.features.check_loaded = self._check_loaded
        self.consent = ConsentCheck(region) if region.consent.required else None
        if self.consent is not None:
            self.features.consent = self.consent
            self._run_step("consent", self.consent.refresh)  # unreadable: everyone withheld until it reads
        self.audit = UseAudit(region.data_dir, retention_days=settings.audit_retention_days,
                              entity_ids=settings.audit_entity_ids)
        self.features.audit = self.audit
        self.health = HealthService()
        self._tokens = TokenBook(config.tokens)
        self._compat = FeastCompatServicer(self.features, missing_entity_is_present=target is not None)
        self.follower, self.predictions = self._models(config, centre_address)
        scoring = ScoringServicer(Scorer(self.features, self._deployment, self.predictions))
        lookups = (FeatureServingServicer(self.features).lane_method(), *self._compat.lane_methods(),
                   scoring.lane_method())
        bind = address or region.serving_address
        http_port = http_port if http_port is not None else settings.http_port
        self.http: FeastHttpApi | None = None
        if http_port is not None:  # bound now: a port in use fails before the node starts
            json_api = FeastJson(self.features, missing_entity_is_present=target is not None)
            self.http = FeastHttpApi(
                json_api.lane_method(), HTTP_POLICY, TokenGuard((), self._tokens, region.code, self.metrics),
                self.metrics, self._can_answer,
                HttpSettings(host=bind.rpartition(":")[0], port=http_port, threads=settings.lookup_threads,
                             max_body_bytes=max_lookup_bytes(settings.max_entities),
                             max_connections=settings.max_concurrent_calls, tls_cert=settings.tls_cert,
                             tls_key=settings.tls_key, reuse_port=reuse_port,
                             # inline on the event loop only when the online read is bounded (Redis)
                             inline_max_bytes=0 if isinstance(self.reader, FeastReader) else INLINE_MAX_BYTES),
                name=region.code, pipelined=self._pipelined(json_api))
        try:
            self.server, self._lane, self.public_path_reason = self._build(lookups)
            port = self._listen(self.server, bind)
        except BaseException:
            if self.http is not None:
                self.http.close()
            raise
        self.lookup_path = LANE if self._lane is not None else PUBLIC
        self.metrics.lookup_path(self.lookup_path, (LANE, PUBLIC))
        self.address = NodeAddress(bind.rpartition(":")[0], port)
        self.metrics_port = metrics_port if metrics_port is not None else settings.metrics_port
        self._stop = threading.Event()
        self._refresher = threading.Thread(target=self._refresh_loop, name=f"refresh-{region.code}", daemon=True)

    def _pipelined(self, json_api: FeastJson) -> PipelinedLookups | None:
        """On a single Redis, the HTTP API's small lookups read it from its event loop (``serving.loop_redis``)."""
        reader = self.reader
        if type(reader) is not RedisReader:  # a cluster routes per master; another store has no pipeline
            return None
        return PipelinedLookups(lambda body, purpose, call: json_api.answer_steps(body, None, purpose, pipelined=True,
                                                                          call=call),
                                reader.target, reader.timeout)

    def _models(self, config: FederationConfig,
                centre_address: str | None) -> tuple[DeploymentFollower | None, PredictionLog | None]:
        """The deployment follower and the prediction log, when the region scores (``serving.models``)."""
        models = self.region.serving.models
        if models is None:
            return None, None
        token = next(t for t in config.tokens if t.name == models.registry_token)  # checked by the config
        follower = DeploymentFollower(
            self.region.code, config.policy(self.region.code), centre_link(config, self.region.code, centre_address),
            token.secret(), DeploymentStore(self.region.data_dir), self.metrics, poll_seconds=models.poll_seconds)
        log = PredictionLog(self.region.data_dir, retention_days=models.prediction_retention_days,
                            max_batches=models.log_queue_batches,
                            on_written=lambda n: self.metrics.predictions("logged", n))
        return follower, log

    def _deployment(self) -> Deployment | None:
        return self.follower.current if self.follower is not None else None

    def _build(self, lookups: Sequence[LaneMethod]) -> tuple[grpc.Server, LookupLane | None, str]:
        """The grpc server, with the lookups on the lane attached to it, or (None and why not) served
        through grpc's public API by the server itself."""
        settings = self.region.serving
        datasets = HistoricalFeaturesServicer(self.region).handler()
        why = "serving.lookup_path is public" if settings.lookup_path == PUBLIC else ""
        if not why:
            try:  # grpc's private core: a grpcio without it is served on the public path, not refused
                from fedstore.serving.lookup_lane import LaneUnsupported, LookupLane
            except ImportError as e:
                why = f"grpc's private core cannot be imported ({e})"
        if not why:
            guard = TokenGuard((datasets,), self._tokens, self.region.code, self.metrics)
            lane = LookupLane(lookups, guard, self.metrics, threads=settings.lookup_threads,
                              name=f"lookup-{self.region.code}", max_calls=settings.max_concurrent_calls)
            server = self._grpc_server(guard, lookup_threads=0)
            try:
                lane.attach(server)
                return server, lane, ""
            except LaneUnsupported as e:  # nothing was registered; a fresh server all the same
                why = str(e)
        public = PublicLookups(lookups, self.metrics, partial(admitted_call, self._tokens))
        guard = TokenGuard((datasets, public), self._tokens, self.region.code, self.metrics)
        return self._grpc_server(guard, lookup_threads=settings.lookup_threads), None, why

    def _grpc_server(self, guard: TokenGuard, *, lookup_threads: int) -> grpc.Server:
        """grpc's thread-pool server with the guarded services and the open ones; ``lookup_threads``
        more pool threads when it answers lookups itself (the public path)."""
        settings = self.region.serving
        reuse_port = self._reuse_port
        # idle open streams (health Watch, reflection) never take every call
        stream_limit = max(1, settings.max_concurrent_calls // 2)
        server = grpc.server(
            # training-set streams, reflection streams (each holds a thread while open), health checks
            futures.ThreadPoolExecutor(max_workers=settings.workers + lookup_threads + stream_limit,
                                       thread_name_prefix=f"serve-{self.region.code}"),
            # an overloaded node refuses at once (RESOURCE_EXHAUSTED: the caller retries elsewhere)
            # instead of queueing calls without bound
            maximum_concurrent_rpcs=settings.max_concurrent_calls,
            # a refusal a handler raises becomes its status and details here (the lane answers its own)
            interceptors=[ErrorBoundary()],
            # several worker processes may share one port (SO_REUSEPORT); one alone must not
            # silently share a port with a stale server
            options=[
                ("grpc.so_reuseport", 1 if reuse_port else 0),
                ("grpc.max_receive_message_length", 256 * 1024 * 1024),  # entity frames for training sets
                # lookups waiting for a lookup thread: beyond this many, grpc turns them away at once
                # (CANCELLED; FeatureClient retries those on the next node)
                ("grpc.server.max_pending_requests", settings.max_concurrent_calls),
                ("grpc.server.max_pending_requests_hard_limit", settings.max_concurrent_calls),
            ],
        )
        open_to_all = LimitOpenStreams((
            generic_handler(health_pb2_grpc.add_HealthServicer_to_server, self.health),
            ServerReflection(SERVICE_NAMES + (health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,)),
        ), limit=stream_limit)
        server.add_generic_rpc_handlers((guard, open_to_all))
        return server

    def _listen(self, server: grpc.Server, bind: str) -> int:
        settings = self.region.serving
        if settings.tls_cert and settings.tls_key:
            port = server.add_secure_port(bind, server_credentials(settings.tls_cert, settings.tls_key))
        else:
            port = server.add_insecure_port(bind)
        if port == 0:
            raise CannotListen(f"cannot listen on {bind}: the address is in use or not available here")
        return int(port)

    def start(self) -> "ServingNode":
        self._run_step("health", self._check_health)  # an unreadable ledger must not keep the node down
        self.audit.start()
        if self.predictions is not None:
            self.predictions.start()
        if self.follower is not None:
            self.follower.start()
        self.server.start()
        if self._lane is not None:
            self._lane.start()
        self._refresher.start()
        if self.metrics_port:
            self.metrics.serve(self.metrics_port)
        if self.http is not None:
            self.http.start()
            log.info("region %s: Feast's HTTP feature-server API on port %d", self.region.code, self.http.port)
        log.info("region %s serving on %s", self.region.code, self.address)
        if self._lane is not None:
            log.info("region %s: lookups on the fast lane (grpc's core, %d threads)", self.region.code,
                     self.region.serving.lookup_threads)
        elif self.region.serving.lookup_path == PUBLIC:
            log.info("region %s: lookups on grpc's public API because %s", self.region.code, self.public_path_reason)
        else:  # the lane was wanted: a grpcio the lane does not fit is worth an operator's look
            log.warning("region %s: lookups on grpc's public API (slower) because %s", self.region.code,
                        self.public_path_reason)
        return self

    def stop(self, grace: float = 5.0) -> None:
        """Stop taking calls, let in-flight calls finish (up to ``grace`` seconds), then close."""
        if self._stop.is_set():
            return  # already stopped: the loop is closed
        self._stop.set()
        # NOT_SERVING first (health-checking balancers look elsewhere; the refresher can no longer
        # set it back), and, beside sibling workers on the port, no new connection lands here
        # before grpc's GOAWAY sends this node's clients to them (see ports.stop_listening)
        self.health.enter_graceful_shutdown()
        if self._reuse_port:
            stop_listening(self.address.port)
        if self._refresher.is_alive():
            self._refresher.join(timeout=5)
        if self._loaded is not None:
            self._loaded.close()
        if self.http is not None:
            self.http.stop(grace)
        self.server.stop(grace).wait(grace + 30)
        if self._lane is not None:
            self._lane.stop()
        if self.follower is not None:
            self.follower.stop()
        if self.predictions is not None:
            self.predictions.close()  # after the calls drained: every answered prediction is written
        self.audit.close()  # likewise every answered call's record
        close = getattr(self.reader, "close", None)
        if close:
            close()

    def wait(self) -> None:
        self.server.wait_for_termination()

    def _refresh_loop(self) -> None:
        # each step on its own: a snapshot that cannot be loaded once stopped the health and lost-row
        # checks too (they shared one try), and a node answered "online" from an emptied Redis
        steps: tuple[tuple[str, Callable[[], object]], ...] = (
            ("registry", self._refresh_catalog), ("snapshots", self._refresh_snapshots),
            ("health", self._check_health), ("freshness", self._export_freshness),
            ("retention", self._export_retention))
        if self.consent is not None:
            steps += (("consent", self.consent.refresh),)
        while not self._stop.wait(self.refresh_seconds):
            for name, step in steps:
                self._run_step(name, step)

    def _run_step(self, name: str, step: Callable[[], object]) -> None:
        """One refresher step; a failure is logged when it starts and when it ends, not every tick."""
        try:
            step()
        except Exception as e:  # noqa: BLE001 -- the refresher must outlive a bad moment; the next tick retries
            if name not in self._failing:
                if isinstance(e, (OSError, sqlite3.Error)):  # the data volume (full, read-only): no bug, one line
                    log.error("region %s: refresh step %s failed: %s (retried every %gs)", self.region.code, name,
                              e, self.refresh_seconds)
                else:
                    log.exception("region %s: refresh step %s failed (retried every %gs)", self.region.code, name,
                                  self.refresh_seconds)
            self._failing[name] = str(e)
            return
        if self._failing.pop(name, None) is not None:
            log.info("region %s: refresh step %s works again", self.region.code, name)

    def _refresh_catalog(self) -> None:
        if self.catalog.refresh_if_changed():
            log.info("region %s: registry changed; catalog reloaded", self.region.code)

    def _refresh_snapshots(self) -> None:
        """Load the snapshots of the current catalog's views that changed and drop those of views it
        no longer serves. A file that cannot be loaded keeps the view's last good snapshot: logged
        once, exported as a gauge and as the ``fedstore.snapshot`` health status."""
        catalog = self.catalog.current
        views = list(catalog.views.values())
        before = dict(self.snapshots.failed)
        reloaded = self.snapshots.refresh(views)
        dropped = self.snapshots.drop_unlisted(views, catalog.version[0])
        if reloaded:
            log.info("region %s: snapshots reloaded: %s", self.region.code, ", ".join(reloaded))
        if dropped:
            log.info("region %s: no longer served, snapshots dropped: %s", self.region.code, ", ".join(dropped))
        for view, why in self.snapshots.failed.items():
            if before.get(view) != why:
                log.error("region %s: the newest snapshot of %s cannot be loaded (%s); the last good one is served",
                          self.region.code, view, why)
        for view in before.keys() - self.snapshots.failed.keys():
            log.info("region %s: the snapshot of %s loads again", self.region.code, view)
        if reloaded or dropped:
            self.metrics.snapshot_size(self.snapshots.held_bytes())
        self.metrics.snapshots_failed(sorted(self.snapshots.failed))

    def _export_retention(self) -> None:
        """Whether each day log's retention is held by a clock it distrusts (its writer logged why, once)."""
        logs = {"audit": self.audit, "predictions": self.predictions}
        self.metrics.retention_held({name: log.retention_held is not None for name, log in logs.items()
                                     if log is not None})

    def _export_freshness(self) -> None:
        """Freshness per view as a gauge; the ledger is re-read only when it changed."""
        try:
            mtime = self._ledger.path.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime != self._watermarks[0]:
            views = list(self.catalog.current.views)
            self._watermarks = (mtime, {v: self._ledger.watermark(v) for v in views})
        now = datetime.now(timezone.utc)
        for view, until in self._watermarks[1].items():
            if until is not None:
                self.metrics.view_freshness(view, (now - until).total_seconds())

    def _check_health(self) -> None:
        up = self.reader.ping()  # blocking: on the calling thread, not the loop
        self.metrics.online_store_up(up)
        try:
            if up:
                self._check_loaded()
            elif self._loaded is not None and isinstance(self.reader, RedisReader):
                # down: what the marker must name once it is back, so its first answers are checked too
                self.reader.expect(self._expected(self.catalog.current.views))
        finally:
            # the marker check reads the job ledger, which may fail to read (a corrupt file, a volume
            # gone): the statuses still follow the store (they stayed SERVING with Redis gone); lookups
            # keep checking the marker against the last loads read, or, before any was, are answered
            # as not loaded (``_expected``)
            self._set_health(up)

    def _set_health(self, up: bool) -> None:
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        views = tuple(self.catalog.current.views.values())
        can_answer = up or self.snapshots.has(views)
        whole = up and not self.features.not_loaded
        states = {ONLINE_STORE_HEALTH: serving if whole else not_serving,
                  SNAPSHOT_HEALTH: not_serving if self.snapshots.failed else serving}
        states.update({name: serving if can_answer else not_serving for name in ("",) + SERVICE_NAMES})
        for name, status in states.items():
            self.health.set(name, status)

    def _can_answer(self) -> bool:
        """The node as a whole can answer (online store or snapshot): its "" health status."""
        return self.health.status("") == health_pb2.HealthCheckResponse.SERVING

    def _check_loaded(self) -> None:
        """Views the online store lost or holds older rows of are answered from the snapshot."""
        if self._loaded is None:
            return
        with self._checking:  # the refresher's, and a half-open probe's on a cluster
            views = self.catalog.current.views
            wanted = self._expected(views)
            if isinstance(self.reader, RedisReader):  # every lookup checks the marker against these
                self.reader.expect(wanted)
            self.features.latest_loads = {v: load.job_id for v, load in wanted.items()}
            # against what this check last saw, not features.not_loaded: lookups add the views they
            # find lost at once, and the loss is still logged here once, with its cause
            change = self._loaded.check(views, self._seen_not_loaded, wanted)
            if change is not None:
                self._seen_not_loaded = frozenset(change.not_loaded)
                self.features.not_loaded = frozenset(change.not_loaded)
                self.metrics.views_not_loaded(change.not_loaded)

    def _expected(self, views: Collection[str]) -> dict[str, Load]:
        """The ledger's last load of each served view. Raises when the ledger cannot be read; before
        its loads were ever read, every served view is then not loaded (``unchecked``): the node does
        not know what the marker should name, so Redis's "not found" is no answer (it may be an
        emptied Redis's) and they are answered from the snapshot, as lost views are."""
        try:
            wanted = self._loaded.expected(views) if self._loaded is not None else {}
        except (sqlite3.Error, OSError):
            if not self._loads_read:
                unchecked = {v: UNCHECKED for v in views}
                if self.features.not_loaded != frozenset(unchecked):
                    log.warning("region %s: the online marker cannot be checked (the job ledger cannot be read); "
                                "answering %s from the batch snapshot until it can", self.region.code,
                                ", ".join(sorted(unchecked)))
                self.features.not_loaded = frozenset(unchecked)
                self.metrics.views_not_loaded(unchecked)
            raise
        self._loads_read = True
        return wanted
