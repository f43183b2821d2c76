"""The client serving apps import: a thin, explicit wrapper over the generated stub.

    client = FeatureClient("127.0.0.1:50151", token=os.environ["FEDSTORE_TOKEN"])
    result = client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": [1, 2]})
    result.to_dict()   # {"customer_id": [1, 2], "spend_7d": [...], ...}

Feast's call shape works too, so code written against ``FeatureStore.get_online_features`` moves
over unchanged: ``features=["customer_transactions:spend_7d", ...]`` (or a Feast ``FeatureService``)
and ``entity_rows=[{"customer_id": 1}, {"customer_id": 2}]``; ids may be numpy integers; the result
has ``to_dict()``, ``to_df()`` and ``to_arrow()``.

``address`` is any gRPC target: ``host:port``, ``dns:///serving.my.svc:50151`` (every address the
name resolves to: a region's serving pods) or ``ipv4:10.0.0.1:50151,10.0.0.2:50151``. Calls are
spread over all of them (round robin), and a call a node refused before doing any work
(UNAVAILABLE: shutting down, unreachable or its connection reset; RESOURCE_EXHAUSTED or CANCELLED:
at its limit) is retried on the next one, within the call's deadline, by gRPC's own retry policy.
A worker of ``fedstore serve --workers N`` that stops or dies sends its clients to its siblings on
the same port: a lookup in flight on it is retried there.
"""

from __future__ import annotations

import json
import numbers
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Mapping, Sequence

import grpc

from fedstore.federation.consent import PURPOSE_METADATA
from fedstore.proto.fedstore.serving.v1 import serving_pb2 as pb
from fedstore.proto.fedstore.serving.v1 import serving_pb2_grpc

RECONNECT_BACKOFF_MS = (100, 5000)  # first and longest wait before a failed connection is tried again

_STATUS = {pb.PRESENT: "present", pb.NOT_FOUND: "not_found", pb.NULL_VALUE: "null", pb.OUTSIDE_MAX_AGE: "outside_max_age",
           pb.WITHHELD_NO_CONSENT: "withheld_no_consent"}


@dataclass(frozen=True)
class OnlineResult:
    entities: dict[str, list[Any]]
    feature_names: list[str]
    values: dict[str, list[Any]]  # None where status is not "present"
    statuses: dict[str, list[str]]
    region: str
    source: str  # "online_store" or "batch_fallback"
    snapshot_age_seconds: float | None
    job_ids: list[str]

    def to_dict(self) -> dict[str, list[Any]]:
        return {**self.entities, **self.values}

    def to_df(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.to_dict())

    def to_arrow(self) -> Any:
        """A pyarrow Table: entity columns, then one column per feature (null where not present)."""
        import pyarrow as pa

        return pa.table(self.to_dict())


class _Client:
    """What both clients hold: one channel (round robin, retries), its stub and the caller's token."""

    _api: Any  # grpc or grpc.aio, whose channel functions have the same names

    def __init__(
        self,
        address: str,
        token: str | None = None,
        *,
        root_certificates: bytes | None = None,
        timeout: float = 2.0,
        retries: int = 2,
        purpose: str | None = None,
    ) -> None:
        """``purpose``: what the features are used for (``fedstore.federation.consent.Purpose``), sent
        as the ``fedstore-purpose`` metadata; None: the credential's one purpose."""
        self._channel = _open_channel(self._api, address, root_certificates, retries)
        self._stub = serving_pb2_grpc.FeatureServingStub(self._channel)
        self._metadata = ((("authorization", f"Bearer {token}"),) if token else ()) + (
            ((PURPOSE_METADATA, purpose),) if purpose else ())
        self.timeout = timeout


class FeatureClient(_Client):
    """Blocking lookups; ``AsyncFeatureClient`` is the same for asyncio applications."""

    _api = grpc

    def get_online_features(
        self,
        *,
        entities: Mapping[str, Sequence[Any]] | None = None,
        feature_service: Any = None,
        features: Any = None,
        full_feature_names: bool = False,
        entity_rows: Sequence[Mapping[str, Any]] | None = None,
    ) -> OnlineResult:
        columns = entity_columns(entities, entity_rows)
        request = build_request(columns, feature_service, features, full_feature_names)
        response = self._stub.GetOnlineFeatures(request, timeout=self.timeout, metadata=self._metadata)
        return _result(response, columns)

    def score(self, *, feature_service: str, entities: Mapping[str, Sequence[Any]] | None = None,
              entity_rows: Sequence[Mapping[str, Any]] | None = None) -> pb.ScoreResponse:
        """The region's deployed model's score of each entity, with its model, version, stage,
        per-feature contributions and prediction id (``fedstore region explain --prediction``)."""
        request = pb.ScoreRequest(feature_service=feature_service)
        _entities(request, entity_columns(entities, entity_rows))
        response: pb.ScoreResponse = self._stub.Score(request, timeout=self.timeout, metadata=self._metadata)
        return response

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "FeatureClient":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncFeatureClient(_Client):
    """The same lookups for asyncio applications (grpc.aio): ``await client.get_online_features(...)``.
    Create and use it on one event loop."""

    _api = grpc.aio

    async def get_online_features(
        self,
        *,
        entities: Mapping[str, Sequence[Any]] | None = None,
        feature_service: Any = None,
        features: Any = None,
        full_feature_names: bool = False,
        entity_rows: Sequence[Mapping[str, Any]] | None = None,
    ) -> OnlineResult:
        columns = entity_columns(entities, entity_rows)
        request = build_request(columns, feature_service, features, full_feature_names)
        response = await self._stub.GetOnlineFeatures(request, timeout=self.timeout, metadata=self._metadata)
        return _result(response, columns)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncFeatureClient":
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


def entity_columns(entities: Mapping[str, Sequence[Any]] | None,
                   entity_rows: Sequence[Mapping[str, Any]] | None) -> dict[str, list[Any]]:
    """Columns (``entities={"customer_id": [1, 2]}``) or Feast's rows (``entity_rows=[{...}, ...]``)
    as columns of plain ints or strs; a mistake is a ValueError before anything is sent."""
    if (entities is None) == (entity_rows is None):
        raise ValueError("give exactly one of entities (columns) or entity_rows (Feast's rows)")
    if entity_rows is not None:
        rows = list(entity_rows)
        if not rows or not all(isinstance(r, Mapping) for r in rows):
            raise ValueError("entity_rows must be a non-empty list of dicts, e.g. [{'customer_id': 1}]")
        keys = list(rows[0])
        if any(list(r) != keys and set(r) != set(keys) for r in rows):
            raise ValueError(f"every entity row must have the same keys as the first: {keys}")
        entities = {k: [r[k] for r in rows] for k in keys}
    assert entities is not None
    if isinstance(entities, (str, bytes)) or not isinstance(entities, Mapping):
        raise ValueError("entities must map each join key to its values, e.g. {'customer_id': [1, 2]}")
    return {key: [_id(key, v) for v in (values if not isinstance(values, (str, bytes)) else [values])]
            for key, values in entities.items()}


def _id(key: str, value: Any) -> int | str:
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, str)):
        raise ValueError(f"entity column {key!r}: {value!r} is not an integer or a string id")
    return value if isinstance(value, str) else int(value)  # numpy integers are Integral


def build_request(
    entities: Mapping[str, Sequence[Any]],
    feature_service: Any,
    features: Any,
    full_feature_names: bool,
) -> pb.GetOnlineFeaturesRequest:
    """The v1 request; a mistake in the arguments is a ValueError before anything is sent."""
    if features is not None and not isinstance(features, (str, bytes)) and hasattr(features, "feature_view_projections"):
        feature_service, features = features.name, None  # a Feast FeatureService, as Feast's SDK takes it
    if (feature_service is None) == (features is None):
        raise ValueError("give exactly one of feature_service or features")
    if isinstance(features, str):
        raise ValueError(f"features={features!r} is one string: give a list of 'view:feature' references, "
                         f"or feature_service={features!r}")
    request = pb.GetOnlineFeaturesRequest(full_feature_names=full_feature_names)
    if feature_service is not None:
        if not isinstance(feature_service, str):
            feature_service = getattr(feature_service, "name", feature_service)
        request.feature_service = str(feature_service)
    else:
        request.feature_refs.refs.extend(str(f) for f in features)
    _entities(request, entities)
    return request


def _entities(request: pb.GetOnlineFeaturesRequest | pb.ScoreRequest, entities: Mapping[str, Sequence[Any]]) -> None:
    for key, values in entities.items():
        col = request.entities[key]
        vals = [_id(key, v) for v in values]
        if all(isinstance(v, int) for v in vals):
            col.int64_values.values.extend(vals)
        elif all(isinstance(v, str) for v in vals):
            col.string_values.values.extend(vals)
        else:
            raise ValueError(f"entity column {key!r} must be all int or all str")


def _open_channel(api: Any, address: str, root_certificates: bytes | None, retries: int) -> Any:
    """A channel from ``grpc`` or ``grpc.aio`` (same function names), with balancing and retries."""
    if retries < 0:
        raise ValueError("retries must be 0 or more")
    options = [
        ("grpc.service_config", service_config(retries)),
        ("grpc.enable_retries", 1 if retries else 0),
        # a connection attempt that fails (a worker killed, or stopping, as it arrived) is tried
        # again after 0.1 s rather than grpc's 1 s, during which every call fails at once with
        # UNAVAILABLE; a node away for longer is still tried only every few seconds
        ("grpc.initial_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
        ("grpc.min_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[0]),
        ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MS[1]),
    ]
    if root_certificates is None:
        return api.insecure_channel(address, options=options)
    return api.secure_channel(address, grpc.ssl_channel_credentials(root_certificates), options=options)


def service_config(retries: int) -> str:
    """Round robin over every address of the target; refused calls retried on the next node."""
    config: dict[str, Any] = {"loadBalancingConfig": [{"round_robin": {}}]}
    if retries:
        config["methodConfig"] = [{
            "name": [{"service": pb.DESCRIPTOR.services_by_name["FeatureServing"].full_name}],
            "retryPolicy": {
                "maxAttempts": retries + 1,
                # grpc waits a random time up to the backoff: with the default two retries, up to
                # 0.05 s then 0.2 s, enough on average to outlast a reconnection (0.1 s, above)
                "initialBackoff": "0.05s",
                "maxBackoff": "0.5s",
                "backoffMultiplier": 4,
                # CANCELLED: a node whose lookup threads are all busy and whose queue is full has
                # grpc turn the call away so (lookups are reads: safe to ask the next node)
                "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED", "CANCELLED"],
            },
        }]
        # a success earns what a refusal costs: retries go on while most attempts succeed (one busy
        # node among several) and stop once refusals outnumber them (every node overloaded), so
        # retries never multiply the load on a region that cannot take it
        config["retryThrottling"] = {"maxTokens": 100, "tokenRatio": 1.0}
    return json.dumps(config)


def _result(response: pb.GetOnlineFeaturesResponse, entities: dict[str, list[Any]]) -> OnlineResult:
    names = list(response.feature_names)
    values: dict[str, list[Any]] = {n: [] for n in names}
    statuses: dict[str, list[str]] = {n: [] for n in names}
    for row in response.results:
        for name, fv in zip(names, row.features, strict=False):
            kind = fv.value.WhichOneof("kind")
            values[name].append(getattr(fv.value, kind) if kind and fv.status == pb.PRESENT else None)
            statuses[name].append(_STATUS.get(fv.status, "unspecified"))
    meta = response.metadata
    return OnlineResult(
        entities=entities,
        feature_names=names,
        values=values,
        statuses=statuses,
        region=meta.region,
        source="batch_fallback" if meta.source == pb.BATCH_FALLBACK else "online_store",
        snapshot_age_seconds=meta.snapshot_age.ToTimedelta().total_seconds() if meta.HasField("snapshot_age") else None,
        job_ids=list(meta.materialization_job_ids),
    )
