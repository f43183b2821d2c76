"""``fedstore.serving.v1.FeatureServing/Score``: the region's deployed model scores entities where
their data lives.

    request ─▶ the deployment held now (one reference, kept for the whole call)
            ─▶ the models' features through the lookup path (``OnlineFeatures``: online store, or the
               snapshot, with the same statuses and job ids a lookup has)
            ─▶ per entity: the stage that serves it (``federation.traffic.route``, the registry's
               split), its score and each feature's contribution; every shadow model's score
            ─▶ the prediction log's queue (refused when full: nothing is answered unlogged)
            ─▶ the call's audit record (``use_audit``), made after the log's verdict so its outcome
               is what the caller got: ``answered``, or ``refused: <why>`` when the log refused
            ─▶ the answer, without any shadow score

**Per call, only what the call needs**: the deployment's plan (features, bounds, each model's
positions and weights) is worked out once per deployment and feature service; a call rescales each
value once for every model, writes the answer's bytes straight from the scores (``score_wire``: no
protobuf object per entity or contribution) and a tuple per entity for the log, and hands those to
the log's queue without waking its writer (``prediction_log``, ``day_log``).

**Consent**: an entity without consent for the call's purpose (``serving.consent``) is not scored
and not logged: its result is ``scored: false`` with status ``WITHHELD_NO_CONSENT``.

**Missing and stale values** are scored as training saw them: a value that is not found, null, or
older than its view's max age is imputed as ``federation.training.rescale`` imputes a missing value
(rescaled 0, the catalog's lower bound), and the answer says so per feature (its status, ``imputed``)
and per entity (``imputed``, a count), so a caller may decline such a score.

An entity's key for the split is its value of the feature service's one join key (its text), or
for several join keys their values joined by "|" in the service's join-key order.

Served where lookups are (the lookup lane, or grpc's public API when the lane cannot attach) behind
the node's token guard (role ``lookup``, the region's own credentials only: a contribution is a
weight times a feature's value).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from fedstore.federation.consent import Purpose
from fedstore.federation.traffic import route
from fedstore.proto.fedstore.serving.v1 import serving_pb2 as pb
from fedstore.serving import score_wire as wire
from fedstore.serving.catalog import FeatureRef, Resolved
from fedstore.serving.deployed import DeployedModel, Deployment
from fedstore.serving.entities import lookup_parser
from fedstore.serving.errors import InvalidRequest, NoModel, Overloaded, ServingError
from fedstore.serving.features import FALLBACK, Answer, OnlineFeatures
from fedstore.serving.lookup_methods import LaneMethod
from fedstore.serving.prediction_log import LogFull, Prediction, PredictionLog, ShadowScore, new_prediction_id
from fedstore.serving.servicer import encode_metadata

SERVICE = pb.DESCRIPTOR.services_by_name["FeatureServing"].full_name
METHOD = "Score"
_NUMERIC = ("int64_value", "int32_value", "double_value", "float_value", "bool_value")


@dataclass(frozen=True)
class _Plan:
    """Scoring one feature service with one deployment, worked out once per deployment: the union
    of the models' features, their bounds as vectors, and per model where its features sit in that
    union and its weights, so a call rescales each value once for every model."""

    serving: Mapping[str, DeployedModel]  # stage -> the model that takes its traffic
    shadows: tuple[DeployedModel, ...]
    refs: tuple[str, ...]  # the features any model reads, in first-use order
    lower: np.ndarray  # per ref: the catalog's bounds, as trained
    upper: np.ndarray
    inverse_range: np.ndarray
    # per serving stage: its features in the model's order as (ref, position in refs)
    layout: Mapping[str, tuple[tuple[str, int], ...]]
    # per model (serving stages, then the shadows in order): the positions of its features in refs
    # and its weights, which turn a scaled row into its contributions
    positions: tuple[np.ndarray, ...]
    weights: tuple[np.ndarray, ...]
    # the same as Python floats and lists, for calls of a few entities (SMALL_CALL)
    bounds: tuple[tuple[float, float, float], ...]  # per ref: lower, upper, 1 / (upper - lower)
    terms: tuple[tuple[tuple[int, float], ...], ...]  # per model: (position in refs, weight) per feature
    # per serving stage, its answer's constant bytes (score_wire): each feature's field, in layout
    # order, and the model's name, version, stage and intercept
    heads: Mapping[str, tuple[bytes, ...]]
    model_bytes: Mapping[str, tuple[bytes, bytes]]


def _plan(deployment: Deployment, feature_service: str) -> _Plan:
    serving = deployment.serving(feature_service)
    shadows = deployment.shadows(feature_service)
    models = (*serving.values(), *shadows)
    refs = tuple(dict.fromkeys(f for m in models for f in m.model.features))
    at = {ref: j for j, ref in enumerate(refs)}
    bounds = {f: (s.lower, s.upper) for m in models for f, s in zip(m.model.features, m.specs(), strict=True)}
    lower = np.array([bounds[r][0] for r in refs], dtype=float)
    upper = np.array([bounds[r][1] for r in refs], dtype=float)
    inverse_range = 1.0 / (upper - lower)
    return _Plan(
        serving=serving, shadows=shadows, refs=refs, lower=lower, upper=upper, inverse_range=inverse_range,
        layout={stage: tuple((f, at[f]) for f in m.model.features) for stage, m in serving.items()},
        positions=tuple(np.array([at[f] for f in m.model.features], dtype=np.intp) for m in models),
        weights=tuple(np.asarray(m.model.weights, dtype=float) for m in models),
        bounds=tuple(zip(lower.tolist(), upper.tolist(), inverse_range.tolist(), strict=True)),
        terms=tuple(tuple((at[f], float(w)) for f, w in zip(m.model.features, m.model.weights, strict=True))
                    for m in models),
        heads={stage: tuple(wire.feature_head(f) for f in m.model.features) for stage, m in serving.items()},
        model_bytes={stage: wire.model_fields(m.name, m.version, m.stage, m.model.intercept)
                     for stage, m in serving.items()})


# below this many entities a call is scored in plain Python: numpy's fixed cost per operation
# (some fifteen of them a call) is more than the arithmetic of a few rows
SMALL_CALL = 4


def _contributions(plan: _Plan, values: list[list[float]]) -> list[list[list[float]]]:
    """Per model (serving stages, then shadows), per entity, its features' wᵢ·xᵢ, with x clipped to
    the catalog's bounds and rescaled to [0, 1] as trained (a missing value sits at its lower
    bound, so it scales to 0: imputed). The same operations in the same order either way, so a
    contribution is the same number whichever way its call was scored."""
    if len(values) < SMALL_CALL:
        scaled = [[(min(max(v, lo), hi) - lo) * inv for v, (lo, hi, inv) in zip(row, plan.bounds, strict=True)]
                  for row in values]
        return [[[row[j] * w for j, w in terms] for row in scaled] for terms in plan.terms]
    x = np.array(values, dtype=float)
    scaled_all = (np.clip(x, plan.lower, plan.upper) - plan.lower) * plan.inverse_range
    return [(scaled_all[:, at] * w).tolist() for at, w in zip(plan.positions, plan.weights, strict=True)]


class Scorer:
    def __init__(self, features: OnlineFeatures, deployment: Callable[[], Deployment | None],
                 log: PredictionLog | None, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.features = features
        self.deployment = deployment
        self.log = log
        self.clock = clock
        # the plans of the deployment held now, by feature service; replaced whole when it changes
        # (one reference, so a lookup thread sees the old pair or the new, never a mix)
        self._plans: tuple[Deployment | None, dict[str, _Plan]] = (None, {})

    def plan(self, deployment: Deployment, feature_service: str) -> _Plan:
        held, plans = self._plans
        if held is not deployment:
            plans = {}
            self._plans = (deployment, plans)
        found = plans.get(feature_service)
        if found is None:
            found = plans[feature_service] = _plan(deployment, feature_service)
        return found

    def score(self, feature_service: str, columns: Mapping[str, Sequence[object]], *,
              time_left: float | None = None, purpose: Purpose = Purpose.SERVING) -> bytes:
        """The serialised ``ScoreResponse`` (``score_wire``) for these entities, each one logged."""
        region = self.features.region
        if self.log is None:
            raise NoModel(f"region {region} scores no model: its serving.models section is not configured",
                          reason="MODELS_NOT_CONFIGURED")
        if not feature_service:
            raise InvalidRequest("feature_service is required: the feature service of the model to score with",
                                 reason="FEATURE_SERVICE_REQUIRED")
        deployment = self.deployment()  # this call's deployment, whatever a poll swaps in meanwhile
        plan = self.plan(deployment, feature_service) if deployment else None
        if plan is None or not plan.serving:
            shadows = plan.shadows if plan else ()
            held = f" (in shadow only: {', '.join(m.label for m in shadows)})" if shadows else ""
            raise NoModel(f"region {region}: no model takes traffic for feature service {feature_service!r} here{held}",
                          reason="NO_MODEL")
        resolved = self.features.resolve(feature_service=None, refs=plan.refs)
        # the call's audit record waits for the log's verdict, so it says what the caller got
        answer = self.features.get(resolved, columns, time_left=time_left, purpose=purpose, audited=False)
        try:
            results, rows = self._scored(plan, feature_service, resolved, answer)
            if rows:
                self.log.append(rows)  # before answering: an answered prediction is a logged one
        except LogFull as e:
            self.features.metrics.predictions("refused_log_full", len(rows))
            self.features.record(resolved, purpose, answer, f"refused: {e}")
            raise Overloaded(f"region {region}: {e}", reason="PREDICTION_LOG_FULL") from None
        except Exception as e:
            self.features.record(resolved, purpose, answer, type(e).__name__)
            raise
        # after the log took the rows: should the trail refuse the record now, the caller gets
        # RESOURCE_EXHAUSTED and the log holds predictions nobody received, never the other way round
        self.features.record(resolved, purpose, answer)
        return wire.response(results, encode_metadata(answer, region))  # as a lookup's answer has it

    def _scored(self, plan: _Plan, feature_service: str, resolved: Resolved,
                answer: Answer) -> tuple[list[bytes], list[Prediction]]:
        """Each entity's result on the wire, and the log's rows (none for an entity withheld)."""
        region = self.features.region
        serving, shadows, refs = plan.serving, plan.shadows, plan.refs
        withheld = answer.withheld
        values, codes, present = _values(resolved, answer, plan.bounds)
        contributions = _contributions(plan, values)
        # a score is its model's intercept plus its contributions, summed in order
        served = {stage: [m.model.intercept + math.fsum(c) for c in cs]
                  for (stage, m), cs in zip(serving.items(), contributions, strict=False)}
        parts = dict(zip(serving, contributions, strict=False))
        shadow_scores = [[m.model.intercept + math.fsum(c) for c in cs]
                         for m, cs in zip(shadows, contributions[len(serving):], strict=True)]
        keys = _entity_keys(resolved, answer)
        occupied = set(serving)
        jobs = _entity_jobs(self.features, resolved, answer)
        now = self.clock()
        results: list[bytes] = []
        rows: list[Prediction] = []
        contribution = wire.contribution
        for i, key in enumerate(keys):
            if withheld and i in withheld:  # no consent for this purpose: not scored, nothing logged
                results.append(wire.withheld_entity(pb.WITHHELD_NO_CONSENT))
                continue
            stage = route(region, key, occupied)
            model = serving.get(stage) if stage else None
            here, row_values = present[i], values[i]
            shadow = tuple(ShadowScore(s.name, s.version, got[i]) for s, got in zip(shadows, shadow_scores, strict=True))
            pid = new_prediction_id()
            score: float | None = None
            if model is not None:
                stage = model.stage
                score = served[stage][i]
                codes_here = codes[i]
                entity = [contribution(head, row_values[j], c, codes_here[j], not here[j])
                          for head, (_, j), c in zip(plan.heads[stage], plan.layout[stage], parts[stage][i], strict=True)]
                imputed = sum(not here[j] for _, j in plan.layout[stage])
                results.append(wire.scored_entity(pid, score, _probability(score, model.model.link),
                                                  plan.model_bytes[stage], entity, jobs[i], imputed))
            else:
                results.append(wire.unscored_entity(pid, jobs[i]))
            rows.append(Prediction(
                prediction_id=pid, at=now, entity=str(key), feature_service=feature_service,
                model=model.name if model else "", version=model.version if model else 0,
                stage=model.stage if model else "", score=score, shadow=shadow, features=refs,
                values=tuple(v if ok else None for v, ok in zip(row_values, here, strict=True)),
                imputed=tuple(r for r, ok in zip(refs, here, strict=True) if not ok), job_ids=tuple(jobs[i]),
                source=answer.source))
        return results, rows


def _values(resolved: Resolved, answer: Answer,
            bounds: Sequence[tuple[float, float, float]]) -> tuple[list[list[float]], list[list[int]], list[list[bool]]]:
    """Per entity: each ref's value as a float (its lower bound where not PRESENT: the imputation),
    its FeatureStatus, and whether it was PRESENT. View by view: an entity's row and its age are
    looked at once per view, not once per feature."""
    n, refs = answer.entities.count, resolved.refs
    lower = [b[0] for b in bounds]
    x = [list(lower) for _ in range(n)]
    status: list[list[int]] = [[pb.NOT_FOUND] * len(refs) for _ in range(n)]
    now, present_code, null_code, isnan = answer.now, pb.PRESENT, pb.NULL_VALUE, math.isnan
    for view, ttl, members in _by_view(resolved):
        rows = answer.rows[view]
        for i in range(n):
            values, ts = rows.values[i], rows.timestamps[i]
            if values is None or ts is None:
                continue
            here = status[i]
            if ttl is not None and now - (ts[0] + ts[1] / 1e9) > ttl:
                for j, _ in members:
                    here[j] = pb.OUTSIDE_MAX_AGE
                continue
            xi = x[i]
            for j, at in members:
                raw = values[at]
                number = _number(raw) if raw else None  # the stored Value's bytes, read without a message
                if number is None:
                    number = _parsed(raw, refs[j])
                    if number is None:
                        here[j] = null_code
                        continue
                if isnan(number):
                    here[j] = null_code
                    continue
                xi[j], here[j] = number, present_code
    return x, status, [[c == present_code for c in row] for row in status]


def _by_view(resolved: Resolved) -> tuple[tuple[str, float | None, tuple[tuple[int, int], ...]], ...]:
    """Per view of the refs: its name, max age, and (position in refs, position in its row values)."""
    hit = resolved.memo.get("score-views")
    if hit is None:
        positions = resolved.value_positions()
        hit = resolved.memo["score-views"] = tuple(
            (v.name, v.ttl_seconds, tuple((j, at) for j, (ref, at) in enumerate(zip(resolved.refs, positions, strict=True))
                                          if ref.view == v.name))
            for v in resolved.views)
    return hit  # type: ignore[return-value]


def _parsed(raw: bytes | None, ref: FeatureRef) -> float | None:
    """A stored Value's number by the generated class (None: no value); a text or bytes value is
    the deployment's mistake, not the caller's."""
    value = pb.Value.FromString(raw) if raw else None
    kind = value.WhichOneof("kind") if value is not None else None
    if kind is None:
        return None
    if kind not in _NUMERIC:
        raise ServingError(f"{ref.view}:{ref.feature} holds {kind} values, which a linear model cannot score",
                           reason="FEATURE_NOT_NUMERIC")
    return float(getattr(value, kind))


_DOUBLE_AT, _FLOAT_AT = struct.Struct("<d").unpack_from, struct.Struct("<f").unpack_from
_VARINT_TAGS = frozenset((0x18, 0x20, 0x38))  # int32_value, int64_value, bool_value (wire type 0)


def _number(raw: bytes) -> float | None:
    """The number a serialised ``Value`` holds when it is one double, float, non-negative int or
    bool (what features are); None for anything else, which the generated class reads. The same
    float the class gives: a float32 widened exactly, an int converted."""
    tag, n = raw[0], len(raw)
    if tag == 0x29 and n == 9:
        return float(_DOUBLE_AT(raw, 1)[0])
    if tag == 0x35 and n == 5:
        return float(_FLOAT_AT(raw, 1)[0])
    if tag in _VARINT_TAGS and 2 <= n <= 10 and raw[-1] < 0x80:
        if n == 2:
            return float(raw[1] != 0) if tag == 0x38 else float(raw[1])
        number, shift = 0, 0
        for byte in raw[1:-1]:
            if byte < 0x80:  # the varint ended early: another field follows
                return None
            number |= (byte & 0x7F) << shift
            shift += 7
        number |= raw[-1] << shift
        if tag == 0x38 or number >= 1 << 63 or (tag == 0x18 and number >= 1 << 31):
            return None  # a bool's long form, or a negative number: the class reads those
        return float(number)
    return None


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
    if answer.entities.count == 1 and answer.source != FALLBACK:
        return [list(answer.job_ids)]  # the online answer's jobs were attributed the same way, row by row
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
    """The Score method as a lane method: request bytes and the seconds left in, response bytes out,
    a ``ServingError`` its status. It runs where lookups run: on the lookup lane, or through grpc's
    public API (``serving.lookup_public``) when the lane cannot attach; the token guard and the
    metric are theirs (``serving.lookup_methods.outcome``)."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self._parse = lookup_parser(pb.ScoreRequest, scorer.features.max_entities, _longest)

    def lane_method(self) -> LaneMethod:
        return LaneMethod(f"/{SERVICE}/{METHOD}", METHOD, self.Score)

    def Score(self, body: bytes, time_left: float | None, purpose: Purpose = Purpose.SERVING) -> bytes:
        request = self._parse(body)  # a request that does not parse is INVALID_ARGUMENT (InvalidRequest)
        return self.scorer.score(request.feature_service, _columns(request), time_left=time_left, purpose=purpose)


def _columns(request: pb.ScoreRequest) -> dict[str, list[object]]:
    columns: dict[str, list[object]] = {}
    for key, col in request.entities.items():
        kind = col.WhichOneof("values")
        columns[key] = getattr(col, kind).values[:] if kind else []  # a list copy; list() is slower on upb
    return columns


def _longest(request: pb.ScoreRequest) -> int:
    return max((len(getattr(col, kind).values) for col in request.entities.values()
                if (kind := col.WhichOneof("values")) is not None), default=0)


__all__ = ["Scorer", "ScoringServicer"]
