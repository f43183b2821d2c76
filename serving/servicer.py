"""``fedstore.serving.v1.FeatureServing``: the node's own contract.

Served on the lookup lane (``serving.lookup_lane``), or grpc's public API (``serving.lookup_public``)
when the lane cannot attach. The request is parsed with the generated
message class; the response is encoded by hand from the stored bytes (``serving.wire``) and handed
to gRPC as bytes, which is what keeps a 100-entity answer in the low milliseconds. Clients use the
ordinary generated stub.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

from fedstore.federation.consent import Purpose
from fedstore.proto.fedstore.serving.v1 import serving_pb2 as pb
from fedstore.serving.catalog import Resolved
from fedstore.serving.entities import lookup_parser
from fedstore.serving.errors import InvalidRequest
from fedstore.serving.features import FALLBACK, Answer, OnlineFeatures
from fedstore.serving.lookup_methods import LaneMethod
from fedstore.serving.wire import ONE_BYTE, field, string_field, varint

SERVICE = pb.DESCRIPTOR.services_by_name["FeatureServing"].full_name
METHOD = "GetOnlineFeatures"

_NOT_FOUND = field(0x0A, b"\x10" + varint(pb.NOT_FOUND))  # an EntityResult.features entry
_STATUS_PRESENT = b"\x10" + varint(pb.PRESENT)
_STATUS_NULL = b"\x10" + varint(pb.NULL_VALUE)
_STATUS_OUTSIDE = b"\x10" + varint(pb.OUTSIDE_MAX_AGE)
_WITHHELD = field(0x0A, b"\x10" + varint(pb.WITHHELD_NO_CONSENT))  # no value, no timestamp


def entity_columns(request: pb.GetOnlineFeaturesRequest) -> dict[str, list[object]]:
    columns: dict[str, list[object]] = {}
    for key, col in request.entities.items():
        kind = col.WhichOneof("values")
        if kind == "int64_values":
            columns[key] = col.int64_values.values[:]  # a list copy; list() is slower on upb containers
        elif kind == "string_values":
            columns[key] = col.string_values.values[:]
        else:
            columns[key] = []
    return columns


def _longest(request: pb.GetOnlineFeaturesRequest) -> int:
    """The length of the request's longest entity column."""
    return max((len(getattr(col, kind).values) for col in request.entities.values()
                if (kind := col.WhichOneof("values")) is not None), default=0)


def encode_response(answer: Answer, region: str, full_feature_names: bool) -> bytes:
    """A serialised GetOnlineFeaturesResponse (canonical field order)."""
    resolved = answer.resolved
    names, values_at, one_view = _layout(resolved, full_feature_names)
    views = [(v.ttl_seconds, answer.rows[v.name]) for v in resolved.views]
    now = answer.now
    out = [names]
    one, present, null = ONE_BYTE, _STATUS_PRESENT, _STATUS_NULL
    withheld = answer.withheld
    for row in range(answer.entities.count):
        if withheld and row in withheld:  # no consent for the call's purpose (serving.consent)
            out.append(field(0x12, _WITHHELD * len(values_at)))
            continue
        # per view, in resolved.views order: (its values, its timestamp field, 4 + that field's
        # length) when present and fresh, else (None, the whole entry every feature of the view gets, 0)
        cells: list[tuple[Sequence[bytes | None] | None, bytes, int]] = []
        for ttl, rows in views:
            values, ts = rows.values[row], rows.timestamps[row]
            if values is None or ts is None:
                cells.append((None, _NOT_FOUND, 0))
                continue
            tail = field(0x1A, rows.ts_raw[row] or b"")
            if ttl is not None and now - (ts[0] + ts[1] / 1e9) > ttl:  # older than the view's max age
                cells.append((None, field(0x0A, _STATUS_OUTSIDE + tail), 0))
            else:
                cells.append((values, tail, 4 + len(tail)))
        if one_view:  # one view, so its values are in the response's order: no per-feature lookup
            values, tail, base = cells[0]
            if values is None:
                out.append(field(0x12, tail * len(values_at)))
                continue
            n = len(values[0] or b"")
            short = n and base + n < 128 and None not in values
            if short and min(map(len, values)) == n == max(map(len, values)):  # type: ignore[arg-type]
                # every value present and of one length (fixed-width types, most rows): one join
                head, post = b"\x0a" + one[base + n] + b"\x0a" + one[n], present + tail
                out.append(field(0x12, head + (post + head).join(values) + post))  # type: ignore[arg-type]
                continue
        parts: list[bytes] = []
        for at, i in values_at:
            values, tail, base = cells[at]
            if values is None:
                parts.append(tail)
                continue
            value = values[i]
            if not value:
                parts.append(field(0x0A, null + tail))
                continue
            n = len(value)
            inner = base + n
            if inner < 128:  # the common case, without intermediate objects
                parts += (b"\x0a", one[inner], b"\x0a", one[n], value, present, tail)
            else:
                parts.append(field(0x0A, field(0x0A, value) + present + tail))
        out.append(field(0x12, b"".join(parts)))
    out.append(field(0x1A, encode_metadata(answer, region)))
    return b"".join(out)


def encode_metadata(answer: Answer, region: str) -> bytes:
    """A serialised ResponseMetadata (without its own tag): the lookups' and Score's."""
    meta = [_metadata_head(region, answer.source == FALLBACK)]
    if answer.snapshot_age_seconds is not None:
        age = max(answer.snapshot_age_seconds, 0.0)
        seconds, nanos = int(age), int(round((age - int(age)) * 1e9)) % 1_000_000_000
        meta.append(field(0x1A, (b"\x08" + varint(seconds) if seconds else b"") + (b"\x10" + varint(nanos) if nanos else b"")))
    meta += map(_job_field, answer.job_ids)
    return b"".join(meta)


@lru_cache(maxsize=16)
def _metadata_head(region: str, fallback: bool) -> bytes:
    return string_field(0x0A, region) + b"\x10" + varint(pb.BATCH_FALLBACK if fallback else pb.ONLINE_STORE)


@lru_cache(maxsize=1024)
def _job_field(job_id: str) -> bytes:
    return string_field(0x22, job_id)  # job ids repeat across requests: encoded once each


def _layout(resolved: Resolved, full: bool) -> tuple[bytes, tuple[tuple[int, int], ...], bool]:
    """Once per resolution: the encoded feature names; where each feature's value is (the index of
    its view in resolved.views, its index in that view's values); whether one view serves all."""
    key = ("v1-layout", full)
    hit = resolved.memo.get(key)
    if hit is None:
        names = b"".join(string_field(0x0A, r.output_name(full)) for r in resolved.refs)
        at = {v.name: i for i, v in enumerate(resolved.views)}
        values_at = tuple((at[r.view], i) for r, i in zip(resolved.refs, resolved.value_positions(), strict=True))
        hit = resolved.memo[key] = (names, values_at, len(resolved.views) == 1)
    return hit  # type: ignore[return-value]


class FeatureServingServicer:
    def __init__(self, features: OnlineFeatures) -> None:
        self.features = features
        self._parse = lookup_parser(pb.GetOnlineFeaturesRequest, features.max_entities, _longest)

    def lane_method(self) -> LaneMethod:
        return LaneMethod(f"/{SERVICE}/{METHOD}", METHOD, self.GetOnlineFeatures)

    def GetOnlineFeatures(self, body: bytes, time_left: float | None, purpose: Purpose = Purpose.SERVING) -> bytes:
        request = self._parse(body)
        which = request.WhichOneof("features")
        resolved = self.features.resolve(
            feature_service=request.feature_service if which == "feature_service" else None,
            refs=tuple(request.feature_refs.refs),
            full_feature_names=request.full_feature_names,
        )
        answer = self.features.get(resolved, entity_columns(request), time_left=time_left, purpose=purpose)
        return encode_response(answer, self.features.region, request.full_feature_names)


__all__ = ["FeatureServingServicer", "InvalidRequest", "encode_response", "entity_columns"]
