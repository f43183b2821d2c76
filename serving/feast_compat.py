"""Feast's own ``GrpcFeatureServer/GetOnlineFeatures`` (what ``feast listen`` serves), on the fast path,
and Feast's ``feast.serving.ServingService`` (what Feast's Java client and Go server speak): the same
request and response messages, so one answer serves both.

Clients built on Feast's stubs work unchanged and get what ``feast listen`` would give on the same
store, including Feast's conventions: entity columns first in the response, no max-age check
(every found value is PRESENT), a null value is an empty ``Value``, and, on Redis, an entity that
is not there at all comes back PRESENT with empty values and a zero timestamp.
Feature order follows the feature service's definition (Feast's own order depends on Python's
set ordering, so clients must not rely on it).
"""

from __future__ import annotations

from importlib.metadata import version
from typing import cast

from feast.protos.feast.serving import GrpcServer_pb2, ServingService_pb2
from feast.protos.feast.serving.ServingService_pb2 import (
    FieldStatus,
    GetFeastServingInfoRequest,
    GetFeastServingInfoResponse,
    GetOnlineFeaturesRequest,
)
from feast.protos.feast.types.Value_pb2 import Value
from feast.type_map import feast_value_type_to_python_type

from fedstore.federation.consent import Purpose
from fedstore.serving.entities import lookup_parser
from fedstore.serving.errors import InvalidRequest
from fedstore.serving.features import Answer, OnlineFeatures
from fedstore.serving.lookup_methods import LaneMethod
from fedstore.serving.wire import field, fields, string_field

SERVICE = GrpcServer_pb2.DESCRIPTOR.services_by_name["GrpcFeatureServer"].full_name
METHOD = "feast.GetOnlineFeatures"
SERVING_SERVICE = ServingService_pb2.DESCRIPTOR.services_by_name["ServingService"].full_name


class FeastCompatServicer:
    def __init__(self, features: OnlineFeatures, *, missing_entity_is_present: bool) -> None:
        self.features = features
        self.missing_entity_is_present = missing_entity_is_present  # Feast's Redis behaviour
        self._parse = lookup_parser(GetOnlineFeaturesRequest, features.max_entities, _longest)
        self._parse_info = lookup_parser(GetFeastServingInfoRequest, features.max_entities, lambda _: 0)
        self._info = GetFeastServingInfoResponse(version=version("feast")).SerializeToString()

    def lane_methods(self) -> tuple[LaneMethod, ...]:
        """Feast's service names and request messages; the responses are sent as encoded bytes.
        ``GrpcFeatureServer``'s other methods (Push, WriteToOnlineStore) are not served (their
        policy refuses them). ``ServingService`` is served whole: its two methods."""
        return (
            LaneMethod(f"/{SERVICE}/GetOnlineFeatures", METHOD, self.GetOnlineFeatures),
            LaneMethod(f"/{SERVING_SERVICE}/GetOnlineFeatures", "feast.serving.GetOnlineFeatures",
                       self.GetOnlineFeatures),
            LaneMethod(f"/{SERVING_SERVICE}/GetFeastServingInfo", "feast.serving.GetFeastServingInfo",
                       self.GetFeastServingInfo),
        )

    def GetFeastServingInfo(self, body: bytes, time_left: float | None, purpose: Purpose = Purpose.SERVING) -> bytes:
        """The Feast version whose contract these answers follow (the request has no fields)."""
        self._parse_info(body)  # a malformed message is INVALID_ARGUMENT, as for any other method
        return self._info

    def GetOnlineFeatures(self, body: bytes, time_left: float | None, purpose: Purpose = Purpose.SERVING) -> bytes:
        request = self._parse(body)
        which = request.WhichOneof("kind")
        resolved = self.features.resolve(
            feature_service=request.feature_service if which == "feature_service" else None,
            refs=tuple(request.features.val) if which == "features" else (),
            full_feature_names=request.full_feature_names,
        )
        columns: dict[str, list[object]] = {}
        for key, repeated in request.entities.items():
            try:
                columns[key] = [_python_value(v) for v in repeated.val]
            except Exception:
                raise InvalidRequest(f"entity column {key!r} holds values Feast cannot read",
                                     reason="INVALID_ENTITY_VALUES") from None
        answer = self.features.get(resolved, columns, time_left=time_left, purpose=purpose)
        entity_values = [(key, [v.SerializeToString() for v in repeated.val]) for key, repeated in request.entities.items()]
        return encode_feast_response(answer, entity_values, request.full_feature_names, self.missing_entity_is_present)


def _longest(request: GetOnlineFeaturesRequest) -> int:
    """The length of the request's longest entity column."""
    return max((len(repeated.val) for repeated in request.entities.values()), default=0)


# join keys are nearly always these: read directly, as Feast's own conversion would return them
_SCALAR_KEYS = frozenset(("int64_val", "int32_val", "string_val"))


def _python_value(value: Value) -> object:
    kind = value.WhichOneof("val")
    if kind in _SCALAR_KEYS:
        return getattr(value, kind)
    if kind == "null_val":  # Feast's conversion gives NullValue's number, 0: a null key would read entity 0
        return None
    return feast_value_type_to_python_type(value)


_PRESENT, _NOT_FOUND = bytes((FieldStatus.PRESENT,)), bytes((FieldStatus.NOT_FOUND,))
_ZERO_TS = field(0x1A, b"")  # an empty Timestamp in FeatureVector.event_timestamps


def encode_feast_response(
    answer: Answer, entity_values: list[tuple[str, list[bytes]]], full_feature_names: bool, missing_is_present: bool
) -> bytes:
    """A serialised Feast ``GetOnlineFeaturesResponse``, straight from the stored bytes.

    Entity columns first (their values as sent, PRESENT, zero timestamps), then one
    ``FeatureVector`` per feature: ``values`` (1), packed ``statuses`` (2), ``event_timestamps`` (3).
    """
    key = ("feast-names", full_feature_names, tuple(k for k, _ in entity_values))
    header = cast("bytes | None", answer.resolved.memo.get(key))
    if header is None:  # the names block once per resolution and entity columns (bounded: few)
        names = [k for k, _ in entity_values] + answer.names(full_feature_names)
        header = field(0x0A, field(0x0A, b"".join(string_field(0x0A, n) for n in names)))
        if len(answer.resolved.memo) < 64:
            answer.resolved.memo[key] = header
    out = [header]
    for _, values in entity_values:
        n = len(values)
        out.append(field(0x12, fields(0x0A, values) + field(0x12, _PRESENT * n) + _ZERO_TS * n))
    # statuses and timestamps depend on the view's row only: encoded once per view, not per feature
    tails: dict[str, bytes] = {}
    for v in answer.resolved.views:
        rows = answer.rows[v.name]
        # Feast neither checks max age online nor marks nulls: a found row is PRESENT
        statuses = b"".join(
            _NOT_FOUND if found is None and not missing_is_present else _PRESENT for found in rows.values
        )
        if answer.withheld:  # no consent for the call's purpose: Feast has no such status, NOT_FOUND says it best
            marks = bytearray(statuses)
            for i in answer.withheld:
                marks[i] = FieldStatus.NOT_FOUND
            statuses = bytes(marks)
        tails[v.name] = field(0x12, statuses) + fields(0x1A, [ts or b"" for ts in rows.ts_raw])
    single = answer.entities.count == 1  # the usual lookup: one entity, no per-row join
    for ref, i in zip(answer.resolved.refs, answer.resolved.value_positions(), strict=True):
        found_rows = answer.rows[ref.view].values
        if single:
            found = found_rows[0]
            encoded = field(0x0A, (found[i] or b"") if found else b"")
        else:
            encoded = fields(0x0A, [(found[i] or b"") if found else b"" for found in found_rows])
        out.append(field(0x12, encoded + tails[ref.view]))
    return b"".join(out)


