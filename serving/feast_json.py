"""Feast's feature-server JSON (``feast serve``'s ``POST /get-online-features``), answered by the one answer path.

The request is Feast's JSON: ``entities`` (join key -> list of values), ``features`` (a list of
``view:feature``) or ``feature_service``, ``full_feature_names``. The answer is built exactly as
the gRPC ``GetOnlineFeatures`` of Feast's contract builds it (``feast_compat``: entity columns
first, Feast's statuses), and written as the JSON Feast's own ``convert_response_to_dict`` makes of
that message, the function ``feast serve`` answers with, without building the message
(``feast_response_json``): values, statuses and timestamps are Feast's byte for byte.
"""

from __future__ import annotations

import json
from typing import Any

from feast.protos.feast.serving.ServingService_pb2 import FieldStatus
from feast.type_map import python_values_to_proto_values
from feast.value_type import ValueType

from fedstore.federation.consent import Purpose
from fedstore.serving.errors import InvalidRequest
from fedstore.serving.feast_response_json import (
    TimestampTexts,
    native_value,
    native_values,
    response_json,
    status_names,
    timestamp_text,
    vector,
)
from fedstore.serving.features import Answer, OnlineFeatures, Steps, run
from fedstore.serving.lookup_methods import LaneMethod
from fedstore.serving.use_audit import CallOf

PATH = "/get-online-features"
LABEL = "http.get-online-features"  # the method label on metrics
# its access policy: Feast's ServingService lookup, the same contract over gRPC (federation.roles)
POLICY = "/feast.serving.ServingService/GetOnlineFeatures"

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_KEY_TYPES = {ValueType.INT64: ValueType.INT64, ValueType.INT32: ValueType.INT32, ValueType.STRING: ValueType.STRING}


class FeastJson:
    """``answer(request JSON bytes, seconds left)`` -> response JSON bytes, or a ``ServingError``."""

    def __init__(self, features: OnlineFeatures, *, missing_entity_is_present: bool) -> None:
        self.features = features
        self.missing_entity_is_present = missing_entity_is_present  # as feast_compat: Feast's Redis behaviour
        self._stamps = TimestampTexts()

    def lane_method(self) -> LaneMethod:
        return LaneMethod(PATH, LABEL, self.answer)

    def answer(self, body: bytes, time_left: float | None, purpose: Purpose = Purpose.SERVING) -> bytes:
        return run(self.answer_steps(body, time_left, purpose))

    def answer_steps(self, body: bytes, time_left: float | None, purpose: Purpose = Purpose.SERVING, *,
                     pipelined: bool = False, call: CallOf | None = None) -> Steps[bytes]:
        """``answer`` as steps (``OnlineFeatures.get_steps``): with ``pipelined``, the online read is
        yielded; ``call`` names the call for the audit record (None: this thread's ``CALL``)."""
        request = _request(body)
        service = request.get("feature_service")
        refs = request.get("features", [])
        full = request.get("full_feature_names", False)
        resolved = self.features.resolve(feature_service=service or None, refs=tuple(refs), full_feature_names=full)
        columns: dict[str, list[object]] = request["entities"]
        answer = yield from self.features.get_steps(resolved, columns, time_left=time_left, purpose=purpose,
                                                    pipelined=pipelined, call=call)
        types = resolved.join_key_types
        entity_values = [(key, _echoed(key, values, types.get(key))) for key, values in columns.items()]
        return _json(answer, entity_values, full, self.missing_entity_is_present, self._stamps)


_EPOCH = timestamp_text(b"")


def _json(answer: Answer, entity_values: list[tuple[str, list[Any]]], full: bool, missing_is_present: bool,
          texts: TimestampTexts) -> bytes:
    """The JSON of the message ``feast_compat.encode_feast_response`` builds from the same answer
    (its layout, step for step): entity columns as sent (``_echoed``), PRESENT, epoch timestamps;
    then one result per feature, the statuses and timestamps of its view's rows."""
    results = []
    for _, values in entity_values:
        n = len(values)
        results.append(vector(values, ["PRESENT"] * n, [_EPOCH] * n))
    tails: dict[str, tuple[list[str], list[str]]] = {}  # per view: converted once, not once per feature
    for v in answer.resolved.views:
        rows = answer.rows[v.name]
        # Feast neither checks max age online nor marks nulls: a found row is PRESENT
        codes = [FieldStatus.NOT_FOUND if found is None and not missing_is_present else FieldStatus.PRESENT
                 for found in rows.values]
        for i in answer.withheld:  # no consent for the call's purpose: NOT_FOUND, as over gRPC
            codes[i] = FieldStatus.NOT_FOUND
        tails[v.name] = (status_names(codes), [texts.text(ts or b"") for ts in rows.ts_raw])
    for ref, i in zip(answer.resolved.refs, answer.resolved.value_positions(), strict=True):
        statuses, stamps = tails[ref.view]
        values = native_values([(found[i] or b"") if found else b"" for found in answer.rows[ref.view].values])
        results.append(vector(values, statuses, stamps))
    return response_json([k for k, _ in entity_values] + answer.names(full), results)


def _request(body: bytes) -> dict[str, Any]:
    """The request JSON, its fields checked as Feast's server checks them (a pydantic model there)."""
    try:
        request = json.loads(body)
    except ValueError as e:  # UnicodeDecodeError included
        raise InvalidRequest(f"the request body is not JSON ({e})", reason="MALFORMED_REQUEST") from None
    except RecursionError:  # a body of nothing but brackets
        raise InvalidRequest("the request body nests too deeply to be a lookup", reason="MALFORMED_REQUEST") from None
    if not isinstance(request, dict):
        raise InvalidRequest("the request body must be a JSON object with 'entities' and 'features' or 'feature_service'",
                             reason="MALFORMED_REQUEST")
    entities = request.get("entities")
    if not isinstance(entities, dict) or not all(isinstance(v, list) for v in entities.values()):
        raise InvalidRequest("'entities' must be an object of join key -> list of values", reason="MALFORMED_REQUEST")
    for key, values in entities.items():  # JSON numbers have no width; gRPC's int64 fields do
        if any(type(v) is int and not _INT64_MIN <= v <= _INT64_MAX for v in values):
            raise InvalidRequest(f"entity column {key!r} holds an integer outside int64",
                                 reason="INVALID_ENTITY_VALUES")
    service = request.get("feature_service")
    if service is not None and not isinstance(service, str):
        raise InvalidRequest("'feature_service' must be a string", reason="MALFORMED_REQUEST")
    refs = request.get("features", [])
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        raise InvalidRequest("'features' must be a list of 'view:feature' strings", reason="MALFORMED_REQUEST")
    if not service and not refs:
        raise InvalidRequest("name the features: 'features' (a list of 'view:feature') or 'feature_service'",
                             reason="NO_FEATURES")
    for flag in ("full_feature_names", "include_feature_view_version_metadata"):
        if not isinstance(request.get(flag, False), bool):
            raise InvalidRequest(f"{flag!r} must be true or false", reason="MALFORMED_REQUEST")
    if request.get("include_feature_view_version_metadata"):  # versioned views are not served here
        raise InvalidRequest("include_feature_view_version_metadata is not supported by this node",
                             reason="UNSUPPORTED_OPTION")
    return request


def _echoed(key: str, values: list[object], kind: ValueType | None) -> list[Any]:
    """An entity column as Feast's JSON echoes it: each value through a Feast ``Value`` of the
    column's type and back (``_encoded``, ``native_value``); an int64 join key's ints (in range:
    ``_request`` checked) come back as they went, so they skip the round trip."""
    if kind == ValueType.INT64 and all(type(v) is int for v in values):
        return values
    return [native_value(v) for v in _encoded(key, values, kind)]


def _encoded(key: str, values: list[object], kind: ValueType | None) -> list[bytes]:
    """An entity column's values as serialised Feast ``Value``s, as Feast echoes them in the answer:
    a join key's by its type (already checked), any other column's by Feast's own inference."""
    try:
        protos = python_values_to_proto_values(values, _KEY_TYPES.get(kind, ValueType.UNKNOWN) if kind else ValueType.UNKNOWN)
    except Exception:  # noqa: BLE001 -- Feast raises several kinds for values it cannot type
        raise InvalidRequest(f"entity column {key!r} holds values Feast cannot read",
                             reason="INVALID_ENTITY_VALUES") from None
    return [p.SerializeToString() for p in protos]


__all__ = ["FeastJson", "LABEL", "PATH", "POLICY"]
