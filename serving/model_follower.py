"""A region's serving node follows its deployment at the centre's registry.

On its own thread (a slow or unreachable centre never holds up the refresher's health checks), every
``poll_seconds``: ``GetDeployment`` for the region over the region's mutual-TLS link to the centre
(``federation.channels``), and ``GetModel`` for each version it has not fetched before. Each model is
checked against the region's own policy (``serving.deployed.refusal``); a refused one is logged,
written to ``<data_dir>/models/refusals.jsonl`` and counted, and its stage keeps the version this
node ran there before (or stays empty). The new deployment is saved to disk (and each stage that
changed appended to ``changes.jsonl``: the region's dashboard shows rollbacks from it), then swapped in with one
reference assignment: a Score call holds the deployment it started with, so none fails or mixes two.

At start the node scores with the deployment saved last, until the registry answers: a centre
outage, at start or later, never stops scoring.

Only these two requests ever cross from this module to the centre; nothing of the prediction log
does (an import contract in pyproject.toml keeps that module out of reach of this one).
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

import grpc

from fedstore.federation.channels import CentreLink, handshake_problem
from fedstore.federation.consent import ConsentBasis
from fedstore.federation.deployment_policy import DeploymentPolicy
from fedstore.federation.training import LinearModel
from fedstore.proto.fedstore.registry.v1 import registry_pb2 as pb
from fedstore.proto.fedstore.registry.v1 import registry_pb2_grpc
from fedstore.serving.deployed import DeployedModel, Deployment, DeploymentStore, Refused, refusal
from fedstore.serving.metrics import ServingMetrics

log = logging.getLogger(__name__)

CALL_TIMEOUT_SECONDS = 10.0


class DeploymentFollower:
    def __init__(self, region: str, policy: DeploymentPolicy, link: CentreLink, token: str, store: DeploymentStore,
                 metrics: ServingMetrics, *, poll_seconds: float) -> None:
        self.region = region
        self.policy = policy
        self.link = link
        self.store = store
        self.metrics = metrics
        self.poll_seconds = poll_seconds
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._versions: dict[tuple[str, int], pb.ModelVersion] = {}  # fetched versions never change
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"models-{region}", daemon=True)
        self._channel: grpc.Channel | None = None
        self._failing: str | None = None
        self._seen: tuple[tuple[str, str, int], ...] | None = None  # the registry's last answer
        self.current: Deployment | None = self._recheck(store.load())
        if self.current is not None:
            log.info("region %s: scoring with the deployment saved at %s until the registry answers: %s",
                     region, self.current.fetched_at.isoformat(), self.current.describe())
            self._export(self.current)

    def _recheck(self, saved: Deployment | None) -> Deployment | None:
        """The saved deployment, less what the region's policy (perhaps tightened since) refuses now."""
        if saved is None:
            return None
        kept = []
        for m in saved.models:
            why = refusal(m, self.region, self.policy)
            if why is None:
                kept.append(m)
                continue
            log.error("region %s: the saved deployment's %s is refused by the region's policy now: %s", self.region,
                      m.label, why)
            self.metrics.model_refused(m.name, m.version, m.stage, why.split(":", 1)[0].removeprefix("rule "))
            self.store.record_refusal(self.region, Refused(m.stage, m.name, m.version, why))
        return Deployment(saved.region, tuple(kept), saved.fetched_at)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=CALL_TIMEOUT_SECONDS + 5)
        if self._channel is not None:
            self._channel.close()

    def _loop(self) -> None:
        while True:
            self.poll_once()
            if self._stop.wait(self.poll_seconds):
                return

    def poll_once(self) -> bool:
        """Ask the registry once; True when the deployment changed. A failure is logged when it
        starts and when it ends, and the deployment held stays."""
        try:
            changed = self._poll()
        except grpc.RpcError as e:
            why = handshake_problem(e) or f"{e.code().name}: {e.details()}"
            self._failed(why)
            return False
        except Exception as e:  # noqa: BLE001 -- the follower outlives a bad answer; the next poll retries
            self._failed(f"{type(e).__name__}: {e}")
            return False
        if self._failing is not None:
            log.info("region %s: the registry answers again", self.region)
            self._failing = None
        self.metrics.registry_reachable(True)
        return changed

    def _failed(self, why: str) -> None:
        self.metrics.registry_reachable(False)
        if self._failing is None:
            held = self.current.describe() if self.current is not None else "no model"
            log.warning("region %s: the registry cannot be asked for the deployment (%s); scoring with %s, "
                        "asking again every %.1f s", self.region, why, held, self.poll_seconds)
        self._failing = why

    def _poll(self) -> bool:
        if self._channel is None:
            self._channel = self.link.channel()
        stub = registry_pb2_grpc.RegistryStub(self._channel)
        answer = stub.GetDeployment(pb.GetDeploymentRequest(region=self.region), metadata=self._metadata,
                                    timeout=CALL_TIMEOUT_SECONDS)
        key = tuple((s.stage, s.name, s.version) for s in answer.stages)
        if key == self._seen:
            return False
        before = self.current
        kept: list[DeployedModel] = []
        refused: list[Refused] = []
        for s in answer.stages:
            version = self._versions.get((s.name, s.version))
            if version is None:
                version = stub.GetModel(pb.GetModelRequest(name=s.name, version=s.version), metadata=self._metadata,
                                        timeout=CALL_TIMEOUT_SECONDS)
                self._versions[(s.name, s.version)] = version
            model, why = self._model(s.stage, version)
            if why is None and model is not None:
                kept.append(model)
                continue
            r = Refused(s.stage, s.name, s.version, why or "rule schema: unreadable")
            refused.append(r)
            previous = next((m for m in (before.models if before else ()) if m.stage == s.stage), None)
            if previous is not None and (previous.name, previous.version) != (s.name, s.version):
                kept.append(previous)  # the stage keeps what this region ran there before
            log.error("region %s: refused to load %s v%d for %s: %s; %s", self.region, s.name, s.version, s.stage,
                      r.reason, f"{previous.label} keeps serving it" if previous else "the stage stays empty here")
            self.metrics.model_refused(s.name, s.version, s.stage, r.reason.split(":", 1)[0].removeprefix("rule "))
            self.store.record_refusal(self.region, r)
        new = Deployment(self.region, tuple(kept), datetime.now(UTC), tuple(refused))
        try:
            for m in kept:
                self.store.save_version(m)
            self.store.save(new)
            self.store.record_changes(before, new)
        except OSError as e:  # scoring goes on with it; only a restart during an outage would miss it
            log.error("region %s: the deployment cannot be saved to %s (%s)", self.region, self.store.path, e)
        self.current = new  # one reference swap: calls under way keep the deployment they started with
        self._seen = key
        self._export(new)
        log.info("region %s: deployment loaded: %s", self.region, new.describe())
        return before is None or before.key != new.key

    def _model(self, stage: str, v: pb.ModelVersion) -> tuple[DeployedModel | None, str | None]:
        try:
            linear = LinearModel(feature_service=v.feature_service, features=tuple(v.features),
                                 weights=tuple(v.weights), intercept=v.intercept, link=v.link or "logistic")
        except ValueError as e:
            return None, f"rule schema: {e}"
        metrics = next((dict(m.metrics) for m in v.metrics if m.region == self.region), {})
        model = DeployedModel(stage=stage, name=v.name, version=v.version, model=linear, schema_hash=v.schema_hash,
                              source_regions=tuple(v.source_regions), submissions=tuple(v.submissions),
                              metrics=metrics, epsilon_by_region=dict(v.epsilon_by_region),
                              consent_basis={b.region: ConsentBasis(b.purpose, b.consent_required, b.snapshot_id)
                                             for b in v.consent_basis})
        return model, refusal(model, self.region, self.policy)

    def _export(self, deployment: Deployment) -> None:
        self.metrics.models_loaded({m.stage: (m.name, m.version) for m in deployment.models})


__all__ = ["DeploymentFollower"]
