"""Feast's own ``GrpcFeatureServer/GetOnlineFeatures`` (what ``feast listen`` serves), on the fast path.

Clients built on Feast's stubs work unchanged and get what ``feast listen`` would give on the same
store, including Feast's conventions: entity columns first in the response, no max-age check
(every found value is PRESENT), a null value is an empty ``Value``, and, on Redis, an entity that
is not there at all comes back PRESENT with empty values and a zero timestamp.
Feature order follows the feature service's definition (Feast's own order depends on Python's
set ordering, so clients must not rely on it).
"""

from __future__ import annotations

import time

import grpc
from feast.protos.feast.serving.GrpcServer_pb2_grpc import GrpcFeatureServerServicer
from feast.protos.feast.serving.ServingService_pb2 import (
    FieldStatus,
    GetOnlineFeaturesRequest,
    GetOnlineFeaturesResponse,
)
from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type
from google.protobuf.timestamp_pb2 import Timestamp

from serving.errors import InvalidRequest, ServingError
from serving.features import OnlineFeatures

METHOD = "feast.GetOnlineFeatures"


class FeastCompatServicer(GrpcFeatureServerServicer):
    def __init__(self, features: OnlineFeatures, *, missing_entity_is_present: bool) -> None:
        self.features = features
        self.missing_entity_is_present = missing_entity_is_present  # Feast's Redis behaviour

    async def GetOnlineFeatures(  # type: ignore[override]  # the aio server awaits it
        self, request: GetOnlineFeaturesRequest, context: grpc.aio.ServicerContext
    ) -> GetOnlineFeaturesResponse:
        began = time.perf_counter()
        metrics = self.features.metrics
        try:
            response = await self._answer(request)
        except ServingError as e:
            metrics.answered(METHOD, e.code, time.perf_counter() - began)  # before abort answers the caller
            await context.abort(e.code, str(e))
            raise
        except Exception:
            metrics.answered(METHOD, grpc.StatusCode.INTERNAL, time.perf_counter() - began)
            raise
        metrics.answered(METHOD, grpc.StatusCode.OK, time.perf_counter() - began)
        return response

    async def _answer(self, request: GetOnlineFeaturesRequest) -> GetOnlineFeaturesResponse:
        which = request.WhichOneof("kind")
        resolved = self.features.resolve(
            feature_service=request.feature_service if which == "feature_service" else None,
            refs=list(request.features.val) if which == "features" else [],
        )
        columns: dict[str, list[object]] = {}
        for key, repeated in request.entities.items():
            try:
                columns[key] = [feast_value_type_to_python_type(v) for v in repeated.val]
            except Exception:
                raise InvalidRequest(f"entity column {key!r} holds values Feast cannot read") from None
        answer = await self.features.get(resolved, columns)
        response = GetOnlineFeaturesResponse()
        names = response.metadata.feature_names.val
        zero = Timestamp()
        for key, repeated in request.entities.items():
            names.append(key)
            response.results.append(
                GetOnlineFeaturesResponse.FeatureVector(
                    values=list(repeated.val),
                    statuses=[FieldStatus.PRESENT] * len(repeated.val),
                    event_timestamps=[zero] * len(repeated.val),
                )
            )
        count = answer.entities.count
        for ref, name in zip(resolved.refs, answer.names(request.full_feature_names), strict=False):
            values: list[bytes] = []
            statuses = []
            stamps = []
            rows = answer.rows[ref.view]
            for row in range(count):
                found = rows.values[row]
                # Feast neither checks max age online nor marks nulls: a found row is PRESENT
                if found is None and not self.missing_entity_is_present:
                    statuses.append(FieldStatus.NOT_FOUND)
                else:
                    statuses.append(FieldStatus.PRESENT)
                values.append((found or {}).get(ref.feature, b""))
                raw_ts = rows.ts_raw[row]
                stamps.append(Timestamp.FromString(raw_ts) if raw_ts else zero)
            protos = [ValueProto.FromString(v) for v in values]
            names.append(name)
            response.results.append(
                GetOnlineFeaturesResponse.FeatureVector(values=protos, statuses=statuses, event_timestamps=stamps)
            )
        return response
