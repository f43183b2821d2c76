"""``fedstore.serving.v1.FeatureServing/Score``: the region's deployed model scores entities where
their data lives.

    request ─▶ the deployment held now (one reference, kept for the whole call)
            ─▶ the models' features through the lookup path (``OnlineFeatures``: online store, or the
               snapshot, with the same statuses and job ids a lookup has)
            ─▶ per entity: the stage that serves it (``federation.traffic.route``, the registry's
               split), its score and each feature's contribution; every shadow model's score
            ─▶ the prediction log's queue (refused when full: nothing is answered unlogged)
            ─▶ the answer, without any shadow score

**Consent**: an entity without consent for the call's purpose (``serving.consent``) is not scored
and not logged: its result is ``scored: false`` with status ``WITHHELD_NO_CONSENT``.

**Missing and stale values** are scored as training saw them: a value that is not found, null, or
older than its view's max age is imputed as ``federation.training.rescale`` imputes a missing value
(rescaled 0, the catalog's lower bound), and the answer says so per feature (its status, ``imputed``)
and per entity (``imputed``, a count), so a caller may decline such a score.

An entity's key for the split is its value of the feature service's one join key (its text), or
for several join keys their values joined by "|" in the service's join-key order.

Served on grpc's thread-pool server behind the node's token guard (role ``lookup``, the region's
own credentials only: a contribution is a weight times a feature's value).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

import grpc
import numpy as np

from fedstore.federation.consent import Purpose
from fedstore.federation.grpc_handlers import status_details
from fedstore.federation.traffic import route
from fedstore.proto.fedstore.serving.v1 import serving_pb2 as pb
from fedstore.serving.catalog import Resolved
from fedstore.serving.deployed import DeployedModel, Deployment
from fedstore.serving.entities import lookup_parser
from fedstore.serving.errors import InvalidRequest, NoModel, Overloaded, ServingError
from fedstore.serving.features import FALLBACK, Answer, OnlineFeatures
from fedstore.serving.metrics import ServingMetrics
from fedstore.serving.prediction_log import LogFull, Prediction, PredictionLog, ShadowScore, new_prediction_id

SERVICE = pb.DESCRIPTOR.services_by_name["FeatureServing"].full_name
METHOD = "Score"
_NUMERIC = ("int64_value", "int32_value", "double_value", "float_value", "bool_value")


class Scorer:
    def __init__(self, features: OnlineFeatures, deployment: Callable[[], Deployment | None],
                 log: PredictionLog | None, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.features = features
        self.deployment = deployment
        self.log = log
        self.clock = clock

    def score(self, feature_service: str, columns: Mapping[str, Sequence[object]], *,
              time_left: float | None = None, purpose: Purpose = Purpose.SERVING) -> pb.ScoreResponse:
        region = self.features.region
        if self.log is None:
            raise NoModel(f"region {region} scores no model: its serving.models section is not configured")
        if not feature_service:
            raise InvalidRequest("feature_service is required: the feature service of the model to score with")
        deployment = self.deployment()  # this call's deployment, whatever a poll swaps in meanwhile
        serving = deployment.serving(feature_service) if deployment else {}
        shadows = deployment.shadows(feature_service) if deployment else ()
        if not serving:
            held = f" (in shadow only: {', '.join(m.label for m in shadows)})" if shadows else ""
            raise NoModel(f"region {region}: no model takes traffic for feature service {feature_service!r} here{held}")
        models = (*serving.values(), *shadows)
        refs = tuple(dict.fromkeys(f for m in models for f in m.model.features))
        resolved = self.features.resolve(feature_service=None, refs=refs)
        answer = self.features.get(resolved, columns, time_left=time_left, purpose=purpose)
        withheld = answer.withheld
        x, status = _values(resolved, answer)
        column = {ref: j for j, ref in enumerate(refs)}
        # per model (one version per stage), all entities at once: contributions, scores, as lists
        parts = {m.stage: _contributions(m, x, column) for m in models}
        scores = {m.stage: (m.model.intercept + parts[m.stage].sum(axis=1)).tolist() for m in models}
        lists = {stage: p.tolist() for stage, p in parts.items()}
        layout = {m.stage: [(f, column[f], spec.lower) for f, spec in zip(m.model.features, m.specs(), strict=True)]
                  for m in serving.values()}
        present = (status == pb.PRESENT).tolist()
        values, codes = x.tolist(), status.tolist()
        keys = _entity_keys(resolved, answer)
        occupied = set(serving)
        jobs = _entity_jobs(self.features, resolved, answer)
        now = self.clock()
        results, rows = [], []
        for i, key in enumerate(keys):
            if withheld and i in withheld:  # no consent for this purpose: not scored, nothing logged
                results.append(pb.EntityScore(scored=False, status=pb.WITHHELD_NO_CONSENT))
                continue
            stage = route(region, key, occupied)
            model = serving.get(stage) if stage else None
            shadow = tuple(ShadowScore(s.name, s.version, scores[s.stage][i]) for s in shadows)
            here, row_values = present[i], values[i]
            pid = new_prediction_id()
            result = pb.EntityScore(prediction_id=pid, materialization_job_ids=jobs[i], scored=model is not None)
            score: float | None = None
            if model is not None:
                score = scores[model.stage][i]
                result.score, result.model, result.version, result.stage = score, model.name, model.version, model.stage
                result.intercept = model.model.intercept
                result.probability = _probability(score, model.model.link)
                imputed_here = 0
                for (f, j, lower), c in zip(layout[model.stage], lists[model.stage][i], strict=True):
                    ok = here[j]
                    imputed_here += not ok
                    result.contributions.add(feature=f, value=row_values[j] if ok else lower, contribution=c,
                                             status=codes[i][j], imputed=not ok)
                result.imputed = imputed_here
            results.append(result)
            rows.append(Prediction(
                prediction_id=pid, at=now, entity=str(key), feature_service=feature_service,
                model=model.name if model else "", version=model.version if model else 0,
                stage=model.stage if model else "", score=score, shadow=shadow, features=refs,
                values=tuple(v if ok else None for v, ok in zip(row_values, here, strict=True)),
                imputed=tuple(r for r, ok in zip(refs, here, strict=True) if not ok), job_ids=tuple(jobs[i]),
                source=answer.source))
        try:
            if rows:
                self.log.append(rows)  # before answering: an answered prediction is a logged one
        except LogFull as e:
            self.features.metrics.predictions("refused_log_full", len(rows))
            raise Overloaded(f"region {region}: {e}") from None
        metadata = pb.ResponseMetadata(region=region, materialization_job_ids=answer.job_ids,
                                       source=pb.BATCH_FALLBACK if answer.source == FALLBACK else pb.ONLINE_STORE)
        if answer.snapshot_age_seconds is not None:
            metadata.snapshot_age.FromNanoseconds(int(max(answer.snapshot_age_seconds, 0.0) * 1e9))
        return pb.ScoreResponse(results=results, metadata=metadata)


def _values(resolved: Resolved, answer: Answer) -> tuple[np.ndarray, np.ndarray]:
    """Each entity's value of each ref as a float (NaN where not PRESENT), and its FeatureStatus."""
    n, refs = answer.entities.count, resolved.refs
    x = np.full((n, len(refs)), np.nan)
    status = np.full((n, len(refs)), pb.NOT_FOUND, dtype=np.int32)
    positions = resolved.value_positions()
    ttls = {v.name: v.ttl_seconds for v in resolved.views}
    for j, (ref, at) in enumerate(zip(refs, positions, strict=True)):
        rows, ttl = answer.rows[ref.view], ttls[ref.view]
        for i in range(n):
            values, ts = rows.values[i], rows.timestamps[i]
            if values is None or ts is None:
                continue
            if ttl is not None and answer.now - (ts[0] + ts[1] / 1e9) > ttl:
                status[i, j] = pb.OUTSIDE_MAX_AGE
                continue
            raw = values[at]
            value = pb.Value.FromString(raw) if raw else None
            kind = value.WhichOneof("kind") if value is not None else None
            if kind is None:
                status[i, j] = pb.NULL_VALUE
                continue
            if kind not in _NUMERIC:
                raise ServingError(f"{ref.view}:{ref.feature} holds {kind} values, which a linear model cannot score")
            number = float(getattr(value, kind))
            if math.isnan(number):
                status[i, j] = pb.NULL_VALUE
                continue
            x[i, j], status[i, j] = number, pb.PRESENT
    return x, status


def _contributions(model: DeployedModel, x: np.ndarray, column: Mapping[str, int]) -> np.ndarray:
    """weight × value clipped to the catalog's bounds and rescaled to [0, 1] (missing: 0), n × d."""
    specs = model.specs()
    raw = x[:, [column[f] for f in model.model.features]]
    lower = np.array([s.lower for s in specs])
    upper = np.array([s.upper for s in specs])
    scaled = np.nan_to_num((np.clip(raw, lower, upper) - lower) / (upper - lower), nan=0.0)
    return scaled * np.asarray(model.model.weights, dtype=float)


def _probability(score: float, link: str) -> float:
    if link == "logistic":
        return 1.0 / (1.0 + math.exp(-score)) if score > -700 else 0.0
    return min(max(score, 0.0), 1.0)


def _entity_keys(resolved: Resolved, answer: Answer) -> list[str | int]:
    """The key each entity is split by (see the module's docstring)."""
    columns = [answer.entities.columns[k] for k in resolved.join_keys]
    if len(columns) == 1:
        return list(columns[0])  # type: ignore[arg-type]  # join keys are int or str (validated)
    return ["|".join(str(v) for v in row) for row in zip(*columns, strict=True)]


def _entity_jobs(features: OnlineFeatures, resolved: Resolved, answer: Answer) -> list[list[str]]:
    """Per entity, the materialisation jobs that wrote its values (as a lookup attributes them)."""
    out: list[set[str]] = [set() for _ in range(answer.entities.count)]
    for v in resolved.views:
        got = answer.rows[v.name]
        if answer.source == FALLBACK:  # from the snapshot: its own row's job, as a lookup names it
            exact, newer = False, None
        else:
            exact, newer = features.attribution(v.name, got)
        rows = features.snapshots.job_per_row(v.name, answer.entities.keys(v.join_keys), got, exact=exact, newer=newer)
        for i, job in enumerate(rows):
            if job:
                out[i].add(job)
    return [sorted(s) for s in out]


class ScoringServicer:
    """The Score method as a generic handler for grpc's thread-pool server (behind the token guard)."""

    def __init__(self, scorer: Scorer, metrics: ServingMetrics,
                 purpose_of: Callable[[tuple[tuple[str, str | bytes], ...]], Purpose]) -> None:
        self.scorer = scorer
        self.metrics = metrics
        self.purpose_of = purpose_of  # what the guard admitted a call with this metadata for
        self._parse = lookup_parser(pb.ScoreRequest, scorer.features.max_entities, _longest)

    def handler(self) -> grpc.GenericRpcHandler:
        # raw bytes in, so a request that does not parse is INVALID_ARGUMENT (grpc's own would be INTERNAL)
        method = grpc.unary_unary_rpc_method_handler(self.Score, response_serializer=pb.ScoreResponse.SerializeToString)
        return grpc.method_handlers_generic_handler(SERVICE, {METHOD: method})

    def Score(self, body: bytes, context: grpc.ServicerContext) -> pb.ScoreResponse:
        began = time.perf_counter()
        remaining = context.time_remaining()
        time_left = remaining if remaining is not None and remaining < 1e6 else None
        try:
            request = self._parse(body)
            purpose = self.purpose_of(tuple(context.invocation_metadata()))
            response = self.scorer.score(request.feature_service, _columns(request), time_left=time_left,
                                         purpose=purpose)
        except ServingError as e:
            self.metrics.answered(METHOD, e.code, time.perf_counter() - began)
            context.abort(e.code, status_details(str(e)))
            raise  # unreachable: abort raises
        self.metrics.answered(METHOD, grpc.StatusCode.OK, time.perf_counter() - began)
        return response


def _columns(request: pb.ScoreRequest) -> dict[str, list[object]]:
    columns: dict[str, list[object]] = {}
    for key, col in request.entities.items():
        kind = col.WhichOneof("values")
        columns[key] = list(getattr(col, kind).values) if kind else []
    return columns


def _longest(request: pb.ScoreRequest) -> int:
    return max((len(getattr(col, kind).values) for col in request.entities.values()
                if (kind := col.WhichOneof("values")) is not None), default=0)


__all__ = ["Scorer", "ScoringServicer"]
