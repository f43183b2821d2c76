"""``fedstore.serving.v1.FeatureServing``: the node's own contract.

The request is parsed with the generated message class; the response is encoded by hand from
the stored bytes (``serving.wire``) and handed to gRPC as bytes, which is what keeps a 100-entity
answer in the low milliseconds. Clients use the ordinary generated stub.
"""

from __future__ import annotations

import time
from typing import Callable

import grpc

from proto.fedstore.serving.v1 import serving_pb2 as pb
from serving.catalog import Resolved
from serving.errors import InvalidRequest, ServingError
from serving.features import FALLBACK, Answer, OnlineFeatures
from serving.wire import field, string_field, varint

SERVICE = pb.DESCRIPTOR.services_by_name["FeatureServing"].full_name
METHOD = "GetOnlineFeatures"

_NOT_FOUND = field(0x0A, b"\x10" + varint(pb.NOT_FOUND))  # an EntityResult.features entry
_STATUS_PRESENT = b"\x10" + varint(pb.PRESENT)
_STATUS_NULL = b"\x10" + varint(pb.NULL_VALUE)
_STATUS_OUTSIDE = b"\x10" + varint(pb.OUTSIDE_MAX_AGE)
_ONE_BYTE = tuple(bytes((i,)) for i in range(128))


def entity_columns(request: pb.GetOnlineFeaturesRequest) -> dict[str, list[object]]:
    columns: dict[str, list[object]] = {}
    for key, col in request.entities.items():
        kind = col.WhichOneof("values")
        if kind == "int64_values":
            columns[key] = list(col.int64_values.values)
        elif kind == "string_values":
            columns[key] = list(col.string_values.values)
        else:
            columns[key] = []
    return columns


def encode_response(answer: Answer, region: str, full_feature_names: bool) -> bytes:
    """A serialised GetOnlineFeaturesResponse (canonical field order)."""
    resolved = answer.resolved
    names, cols = _layout(resolved, full_feature_names)
    out = [names]
    one = _ONE_BYTE
    for row in range(answer.entities.count):
        # per view: None (not found), or (values or None if expired, the tail after the value)
        state: dict[str, tuple[dict[str, bytes] | None, bytes] | None] = {}
        for v in resolved.views:
            rows = answer.rows[v.name]
            values, ts = rows.values[row], rows.timestamps[row]
            if values is None or ts is None:
                state[v.name] = None
            else:
                ts_field = field(0x1A, rows.ts_raw[row] or b"")
                state[v.name] = (None if answer.expired(v, ts) else values, ts_field)
        parts: list[bytes] = []
        for feature, view in cols:
            st = state[view]
            if st is None:
                parts.append(_NOT_FOUND)
                continue
            values, ts_field = st
            if values is None:
                parts.append(field(0x0A, _STATUS_OUTSIDE + ts_field))
                continue
            value = values.get(feature, b"")
            if not value:
                parts.append(field(0x0A, _STATUS_NULL + ts_field))
                continue
            n = len(value)
            inner = 2 + n + 2 + len(ts_field)
            if inner < 128:  # the common case, without intermediate objects
                parts += (b"\x0a", one[inner], b"\x0a", one[n], value, _STATUS_PRESENT, ts_field)
            else:
                parts.append(field(0x0A, field(0x0A, value) + _STATUS_PRESENT + ts_field))
        out.append(field(0x12, b"".join(parts)))
    meta = [string_field(0x0A, region), b"\x10" + varint(pb.BATCH_FALLBACK if answer.source == FALLBACK else pb.ONLINE_STORE)]
    if answer.snapshot_age_seconds is not None:
        age = max(answer.snapshot_age_seconds, 0.0)
        seconds, nanos = int(age), int(round((age - int(age)) * 1e9)) % 1_000_000_000
        meta.append(field(0x1A, (b"\x08" + varint(seconds) if seconds else b"") + (b"\x10" + varint(nanos) if nanos else b"")))
    meta += [string_field(0x22, j) for j in answer.job_ids]
    out.append(field(0x1A, b"".join(meta)))
    return b"".join(out)


def _layout(resolved: Resolved, full: bool) -> tuple[bytes, tuple[tuple[str, str], ...]]:
    """The encoded feature names and the (feature, view) columns, once per resolution."""
    key = ("v1-layout", full)
    hit = resolved.memo.get(key)
    if hit is None:
        names = b"".join(string_field(0x0A, r.output_name(full)) for r in resolved.refs)
        hit = resolved.memo[key] = (names, tuple((r.feature, r.view) for r in resolved.refs))
    return hit  # type: ignore[return-value]


class FeatureServingServicer:
    def __init__(self, features: OnlineFeatures) -> None:
        self.features = features

    def handler(self) -> grpc.GenericRpcHandler:
        method = grpc.unary_unary_rpc_method_handler(
            self.GetOnlineFeatures,
            request_deserializer=pb.GetOnlineFeaturesRequest.FromString,
            response_serializer=_identity,
        )
        return grpc.method_handlers_generic_handler(SERVICE, {"GetOnlineFeatures": method})

    async def GetOnlineFeatures(self, request: pb.GetOnlineFeaturesRequest, context: grpc.aio.ServicerContext) -> bytes:
        began = time.perf_counter()
        metrics = self.features.metrics
        try:
            which = request.WhichOneof("features")
            resolved = self.features.resolve(
                feature_service=request.feature_service if which == "feature_service" else None,
                refs=list(request.feature_refs.refs),
            )
            answer = await self.features.get(resolved, entity_columns(request), time_left=context.time_remaining())
            response = encode_response(answer, self.features.region, request.full_feature_names)
        except ServingError as e:
            # counted before abort: the caller has its answer as soon as abort sends the status
            metrics.answered(METHOD, e.code, time.perf_counter() - began)
            await context.abort(e.code, str(e))
            raise  # unreachable: abort raises
        except Exception:
            metrics.answered(METHOD, grpc.StatusCode.INTERNAL, time.perf_counter() - began)
            raise
        metrics.answered(METHOD, grpc.StatusCode.OK, time.perf_counter() - began)
        return response


_identity: Callable[[bytes], bytes] = lambda b: b  # noqa: E731

__all__ = ["FeatureServingServicer", "InvalidRequest", "encode_response", "entity_columns"]
