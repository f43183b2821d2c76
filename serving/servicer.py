"""``fedstore.serving.v1.FeatureServing``: the node's own contract."""

from __future__ import annotations

import time

import grpc
from feast.value_type import ValueType
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from proto.fedstore.serving.v1 import serving_pb2 as pb
from proto.fedstore.serving.v1 import serving_pb2_grpc
from serving.errors import InvalidRequest, ServingError
from serving.features import FALLBACK, NOT_FOUND, NULL_VALUE, OUTSIDE_MAX_AGE, PRESENT, Answer, OnlineFeatures

_STATUS = {
    PRESENT: pb.PRESENT,
    NOT_FOUND: pb.NOT_FOUND,
    NULL_VALUE: pb.NULL_VALUE,
    OUTSIDE_MAX_AGE: pb.OUTSIDE_MAX_AGE,
}
_FIELD = {
    ValueType.DOUBLE: "double_value",
    ValueType.FLOAT: "float_value",
    ValueType.INT64: "int64_value",
    ValueType.INT32: "int32_value",
    ValueType.BOOL: "bool_value",
    ValueType.STRING: "string_value",
    ValueType.BYTES: "bytes_value",
}


def entity_columns(request: pb.GetOnlineFeaturesRequest) -> dict[str, list[object]]:
    columns: dict[str, list[object]] = {}
    for key, col in request.entities.items():
        kind = col.WhichOneof("values")
        if kind == "int64_values":
            columns[key] = list(col.int64_values.values)
        elif kind == "string_values":
            columns[key] = list(col.string_values.values)
        else:
            raise InvalidRequest(f"entity column {key!r} has no values")
    return columns


def to_response(answer: Answer, region: str, full_feature_names: bool) -> pb.GetOnlineFeaturesResponse:
    resolved = answer.resolved
    views = {v.name: v for v in resolved.views}
    cols = [(ref, views[ref.view], _FIELD.get(views[ref.view].features[ref.feature], "string_value"))
            for ref in resolved.refs]
    results = []
    for row in range(answer.entities.count):
        features = []
        for ref, view, field in cols:
            status, value, ts = answer.cell(ref, view, row)
            fv = pb.FeatureValue(status=_STATUS[status])
            if status == PRESENT:
                if field == "string_value" and not isinstance(value, str):
                    value = str(value)
                setattr(fv.value, field, value)
            if ts is not None:
                fv.event_timestamp.CopyFrom(Timestamp(seconds=ts[0], nanos=ts[1]))
            features.append(fv)
        results.append(pb.EntityResult(features=features))
    meta = pb.ResponseMetadata(
        region=region,
        source=pb.BATCH_FALLBACK if answer.source == FALLBACK else pb.ONLINE_STORE,
        materialization_job_ids=list(answer.job_ids),
    )
    if answer.snapshot_age_seconds is not None:
        age = Duration()
        age.FromNanoseconds(int(answer.snapshot_age_seconds * 1e9))
        meta.snapshot_age.CopyFrom(age)
    return pb.GetOnlineFeaturesResponse(
        feature_names=answer.names(full_feature_names), results=results, metadata=meta
    )


class FeatureServingServicer(serving_pb2_grpc.FeatureServingServicer):
    def __init__(self, features: OnlineFeatures) -> None:
        self.features = features

    def GetOnlineFeatures(
        self, request: pb.GetOnlineFeaturesRequest, context: grpc.ServicerContext
    ) -> pb.GetOnlineFeaturesResponse:
        metrics = self.features.metrics
        began = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            which = request.WhichOneof("features")
            resolved = self.features.resolve(
                feature_service=request.feature_service if which == "feature_service" else None,
                refs=list(request.feature_refs.refs),
            )
            answer = self.features.get(resolved, entity_columns(request))
            return to_response(answer, self.features.region, request.full_feature_names)
        except ServingError as e:
            code = e.code
            context.abort(e.code, str(e))
            raise  # unreachable: abort raises
        finally:
            metrics.requests.labels("GetOnlineFeatures", code.name).inc()
            metrics.latency.labels("GetOnlineFeatures").observe(time.perf_counter() - began)
