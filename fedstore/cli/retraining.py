"""The retraining steps, each idempotent and resumable: one module used by the Prefect flow
(`retraining_flow.py`), the plain CLI (`fedstore retrain …`) and the Kubernetes CronJobs.

    publish  in each region taking part with budget left: per-class training statistics (Gaussian DP)
             for the run's window, queued in the outbox
    send     the region's outbox to the centre (a retry is a replay with the original receipt)
    train    the centre fits a model on the accepted statistics and registers it
    shadow   the new version in shadow, in every region whose policy allows it

A run is named by its window (feature service, window end, days) and its ε. A rerun after a crash
skips what is done, judged on durable state and never on an orchestrator's cache:

    publish  the outbox already holds a training submission of the run's window (queued, sent,
             rejected or suppressed): nothing is spent again
    send     nothing queued: nothing to do
    train    the registry holds a version whose lineage names a submission of this run: that version
             (where the outboxes are out of sight, the centre's own key: training again on the
             statistics a version was trained on returns that version)
    shadow   the version already serves a stage in the region: nothing to do

A region's policy refusing the version (rule sources, a shadow occupied by another) is an outcome, not
a failure; a centre that does not answer is a failure (the step is retried, or the run resumed).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fedstore.federation import ConfigError, FederationConfig
from fedstore.federation.roles import Role
from fedstore.federation.training import TRAINING_SPECS, training_spec
from fedstore.regions.errors import RegionError

DONE, ALREADY, SKIPPED, REFUSED = "done", "already done", "skipped", "refused"


class RetrainError(RegionError):
    """A step that could not finish (the centre unreachable, training refused): rerun to resume."""


@dataclass(frozen=True)
class RetrainRun:
    """What names a run: the same values on a rerun find the same outbox files and registry version."""

    end: datetime  # the window's end, a UTC midnight (the close of the last day it includes)
    epsilon: float  # what each region spends on its training statistics
    days: int = 30
    feature_service: str = TRAINING_SPECS[0].feature_service
    strategy: str = "lda"
    name: str = ""  # registry name; "" = the centre's default, <feature service>_<strategy>
    address: str | None = None  # the centre's address; None = the config's

    @property
    def start(self) -> datetime:
        return self.end - timedelta(days=self.days)

    def to_dict(self) -> dict[str, Any]:  # what the flow takes as parameters
        return {"end": self.end.isoformat(), "epsilon": self.epsilon, "days": self.days,
                "feature_service": self.feature_service, "strategy": self.strategy, "name": self.name,
                "address": self.address}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RetrainRun:
        """The run ``to_dict`` wrote; without an end (a scheduled run), the window ends yesterday."""
        return cls(**{**raw, "end": datetime.fromisoformat(raw["end"]) if raw.get("end") else window_end()})


def window_end(day: datetime | None = None) -> datetime:
    """The close of ``day`` (default: yesterday, the last complete day), as a UTC midnight."""
    when = day or datetime.now(UTC) - timedelta(days=1)
    return (when.astimezone(UTC) + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class StepOutcome:
    step: str
    region: str  # "" for the centre's step
    status: str  # done, already done, skipped, refused
    detail: str
    submission_id: str = ""
    version: int = 0

    def line(self) -> str:
        where = f"{self.region}: " if self.region else "centre: "
        return f"{where}{self.step}: {self.status}: {self.detail}"


def credential(config: FederationConfig, role: Role, region: str | None = None) -> str:
    """The secret of the config's first credential with ``role`` (in ``region``, when named; else a
    federation-wide one first: the centre's train job lists the registry as the centre, not as a region)."""
    for t in sorted(config.tokens, key=lambda t: region is None and "*" not in t.regions):
        if role in t.roles and (region is None or t.allows(region)):
            try:
                return t.secret()
            except ConfigError as e:  # an unset variable or an unreadable file: one line, naming the step's role
                raise RetrainError(f"credential {t.name} ({role.value}): {e}") from None
    raise RetrainError(f"the config has no credential with the {role.value} role"
                       + (f" for region {region}" if region else ""))


# --- publish ------------------------------------------------------------------------------------

def run_submission(data_dir: Path, run: RetrainRun) -> tuple[str, str] | None:
    """The training submission of ``run``'s window in a region's outbox: (id, status), or None."""
    from fedstore.regions.publishing.publish import outbox_dir

    for path in sorted(outbox_dir(data_dir).glob("*.json")):
        try:
            body = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(body, dict) or body.get("kind") != "training":
            continue
        training = body.get("training") or {}
        if (body.get("start") == run.start.isoformat() and body.get("end") == run.end.isoformat()
                and training.get("feature_service", run.feature_service) == run.feature_service):
            return str(body["submission_id"]), str(body.get("status", ""))
    return None


def publish(config: FederationConfig, region: str, run: RetrainRun) -> StepOutcome:
    from fedstore.regions.publishing.budget import BudgetExceeded, BudgetLedger
    from fedstore.regions.publishing.publish import publish_training_statistics
    from fedstore.regions.store.node import RegionNode

    r = config.region(region)
    found = run_submission(r.data_dir, run)
    if found:
        return StepOutcome("publish", r.code, ALREADY, f"submission {found[0]} ({found[1]}) holds this window",
                           submission_id=found[0])
    ledger = BudgetLedger(r.data_dir / "privacy_budget.db", r.code, epsilon_per_month=config.privacy.epsilon_per_month,
                          delta_per_month=config.privacy.delta_per_month)
    left = ledger.remaining(BudgetLedger.period(datetime.now(UTC)))
    if left < run.epsilon:
        return StepOutcome("publish", r.code, SKIPPED, f"ε {left:g} left this month, the run needs {run.epsilon:g}")
    try:
        sid, released, _ = publish_training_statistics(RegionNode(r), config.privacy, training_spec(run.feature_service),
                                                       epsilon=run.epsilon, end=run.end, days=run.days)
    except BudgetExceeded as e:
        return StepOutcome("publish", r.code, SKIPPED, str(e))
    if released.statistics is None:
        return StepOutcome("publish", r.code, SKIPPED, f"submission {sid} suppressed: a class below the minimum "
                           f"cohort (ε={released.epsilon:.3f} spent, nothing to send)", submission_id=sid)
    return StepOutcome("publish", r.code, DONE, f"submission {sid} queued (ε={released.epsilon:.3f})", submission_id=sid)


# --- send ---------------------------------------------------------------------------------------

def send(config: FederationConfig, region: str, run: RetrainRun) -> StepOutcome:
    from fedstore.federation.channels import centre_link
    from fedstore.regions.publishing.budget import BudgetLedger
    from fedstore.regions.publishing.outbox import send_outbox
    from fedstore.regions.publishing.publish import outbox_dir

    r = config.region(region)
    token = credential(config, Role.PUBLISH, r.code)
    ledger = BudgetLedger(r.data_dir / "privacy_budget.db", r.code, epsilon_per_month=config.privacy.epsilon_per_month,
                          delta_per_month=config.privacy.delta_per_month)
    results = send_outbox(outbox_dir(r.data_dir), centre_link(config, r.code, run.address), token, ledger=ledger)
    kept = [f"{sid}: {o}" for sid, o in results if o.startswith("queued")]
    if kept:  # no verdict yet: the step failed, and a rerun sends them
        raise RetrainError(f"{r.code}: {len(kept)} submission(s) still queued: {kept[0]}")
    mine = run_submission(r.data_dir, run)
    status = f"; this run's {mine[0]} is {mine[1]}" if mine else "; no submission of this run"
    if not results:
        return StepOutcome("send", r.code, ALREADY, "nothing queued" + status)
    return StepOutcome("send", r.code, DONE, ", ".join(f"{sid} {o}" for sid, o in results) + status)


# --- train --------------------------------------------------------------------------------------

def run_submissions(config: FederationConfig, regions: Sequence[str], run: RetrainRun) -> set[str]:
    """This run's submissions the centre accepted (sent), across ``regions``."""
    found = (run_submission(config.region(c).data_dir, run) for c in regions)
    return {sid for sid, status in (f for f in found if f) if status == "sent"}


def _rpc(config: FederationConfig, run: RetrainRun, stub: str, method: str, request: Any, token: str,
         timeout: float = 60, region: str | None = None) -> Any:
    import grpc

    from fedstore.federation.channels import centre_link, handshake_problem
    from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2_grpc
    from fedstore.proto.fedstore.registry.v1 import registry_pb2_grpc

    # the operator's certificate where the config names one; else (a region's shadow CronJob, whose config
    # holds its own certificate alone) the region's
    link = centre_link(config, None if config.aggregator.operator_tls is not None else region, run.address)
    with link.channel() as channel:
        client = (aggregator_pb2_grpc.AggregatorStub if stub == "aggregator" else registry_pb2_grpc.RegistryStub)(channel)
        try:
            return getattr(client, method)(request, metadata=(("authorization", f"Bearer {token}"),), timeout=timeout)
        except grpc.RpcError as e:
            if handshake_problem(e):
                raise RetrainError(f"centre at {link.address}: {handshake_problem(e)}") from None
            if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise RetrainError(f"the centre at {link.address} did not answer ({e.code().name})") from None
            raise _Refused(e.code().name, e.details() or "") from None


class _Refused(Exception):
    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code, self.details = code, details


def registered_version(config: FederationConfig, run: RetrainRun, submissions: set[str]) -> tuple[str, int] | None:
    """The registered version trained on a submission of this run, if any: (name, version)."""
    from fedstore.proto.fedstore.registry.v1 import registry_pb2 as rpb

    listed = _rpc(config, run, "registry", "ListModels", rpb.ListModelsRequest(name=run.name),
                  credential(config, Role.REGISTRY_READ), timeout=30)
    hits = [m for m in listed.models if m.feature_service == run.feature_service and set(m.submissions) & submissions]
    if not hits:
        return None
    latest = max(hits, key=lambda m: m.version)
    return latest.name, latest.version


def _sees_outboxes(config: FederationConfig, regions: Sequence[str]) -> bool:
    """Whether this process sees the regions' outboxes (a flow or an operator's machine), or none (a job
    beside the centre, which knows the regions by their codes alone)."""
    from fedstore.regions.publishing.publish import outbox_dir

    return any(outbox_dir(config.region(c).data_dir).is_dir() for c in regions)


def _versions(config: FederationConfig, run: RetrainRun, region: str | None = None) -> dict[int, tuple[str, ...]]:
    from fedstore.proto.fedstore.registry.v1 import registry_pb2 as rpb

    listed = _rpc(config, run, "registry", "ListModels", rpb.ListModelsRequest(name=model_name(run)),
                  credential(config, Role.REGISTRY_READ, region), timeout=30, region=region)
    return {m.version: tuple(m.submissions) for m in listed.models}


def train(config: FederationConfig, regions: Sequence[str], run: RetrainRun) -> StepOutcome:
    from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2 as apb

    if _sees_outboxes(config, regions):
        submissions = run_submissions(config, regions, run)
        if not submissions:
            raise RetrainError(f"no region's statistics of this run reached the centre ({', '.join(regions)}): "
                               "nothing to train on")
        existing = registered_version(config, run, submissions)
        if existing:
            return StepOutcome("train", "", ALREADY, f"{existing[0]} v{existing[1]} was trained on this run's "
                               "statistics", version=existing[1])
    # without the outboxes the centre's own key decides: training again on the statistics a version was
    # trained on returns that version (aggregator/training/train.py)
    before = _versions(config, run)
    try:
        result = _rpc(config, run, "aggregator", "Train", apb.TrainRequest(
            strategy=run.strategy, feature_service=run.feature_service, model_name=run.name),
            credential(config, Role.TRAIN))
    except _Refused as e:
        raise RetrainError(f"the centre refused training ({e})") from None
    if not result.model_version:
        raise RetrainError(f"trained {result.model_name}, but the centre keeps no registry: nothing to shadow")
    if result.model_version in before:
        return StepOutcome("train", "", ALREADY, f"{result.model_name} v{result.model_version} was trained on these "
                           "statistics", version=result.model_version)
    return StepOutcome("train", "", DONE, f"{result.model_name} v{result.model_version} registered, trained on "
                       f"{len(result.submissions)} submission(s)", version=result.model_version)


def model_name(run: RetrainRun) -> str:
    """The registry name of the run's model (the centre's default when the run names none)."""
    return run.name or f"{run.feature_service}_{run.strategy}"


# --- shadow -------------------------------------------------------------------------------------

def trained_version(config: FederationConfig, regions: Sequence[str], run: RetrainRun, region: str | None = None) -> int:
    """The version the train step registered for this run (for a shadow step run on its own): the one
    trained on this run's submissions, or, where the outboxes are out of sight, the latest of the name;
    asked over ``region``'s link and credential when named (the region's shadow CronJob)."""
    if _sees_outboxes(config, regions):
        found = registered_version(config, run, run_submissions(config, regions, run))
        if found is None:
            raise RetrainError("no registered version was trained on this run's statistics: run the train step first")
        return found[1]
    versions = _versions(config, run, region)
    if not versions:
        raise RetrainError(f"no version of {model_name(run)} is registered: run the train step first")
    return max(versions)


def shadow(config: FederationConfig, region: str, run: RetrainRun, version: int) -> StepOutcome:
    from fedstore.proto.fedstore.registry.v1 import registry_pb2 as rpb

    r = config.region(region)
    name = model_name(run)
    deployment = _rpc(config, run, "registry", "GetDeployment", rpb.GetDeploymentRequest(region=r.code),
                      credential(config, Role.REGISTRY_READ, r.code), timeout=30, region=r.code)
    serving = [s.stage for s in deployment.stages if (s.name, s.version) == (name, version)]
    if serving:
        return StepOutcome("shadow", r.code, ALREADY, f"{name} v{version} serves {serving[0]} here", version=version)
    try:
        _rpc(config, run, "registry", "Promote", rpb.PromoteRequest(
            name=name, version=version, region=r.code, stage="shadow",
            why=f"retraining: statistics to {run.end:%Y-%m-%d} ({run.days} days)"),
            credential(config, Role.PROMOTE, r.code), timeout=30, region=r.code)
    except _Refused as e:  # the region's policy said no: recorded on its audit trail, not retried
        return StepOutcome("shadow", r.code, REFUSED, e.details, version=version)
    return StepOutcome("shadow", r.code, DONE, f"{name} v{version} now serves shadow", version=version)


# --- the whole run, without an orchestrator -----------------------------------------------------

def run_all(config: FederationConfig, regions: Sequence[str], run: RetrainRun) -> list[StepOutcome]:
    """Every step in order, in this process (`fedstore retrain run`, a CronJob): what the flow does."""
    out = [publish(config, c, run) for c in regions]
    out += [send(config, c, run) for c in regions]
    trained = train(config, regions, run)
    out.append(trained)
    out += [shadow(config, c, run, trained.version) for c in regions]
    return out
