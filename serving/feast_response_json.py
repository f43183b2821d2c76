"""Feast's ``GetOnlineFeaturesResponse`` as ``feast serve``'s JSON, built straight from an answer's columns.

``feast serve`` answers with ``json.dumps(convert_response_to_dict(response))``. Building that
response message only to walk it again cost about half of an HTTP answer's own time, so this
module writes the same JSON from the columns the message would hold: one per entity column and
one per feature, each its values (serialised Feast ``Value``s, as stored), statuses and event
timestamps (serialised ``Timestamp``s). Each value and timestamp still goes through Feast's own
converters (``feast.feature_server_utils``), so a value's JSON is Feast's by construction (but a
finite double, the usual feature, read straight from its 9 bytes); what is saved is the message,
the walk, and converting a view's timestamps once instead of once per feature. ``tests/test_feast_response_json.py`` compares the bytes with Feast's path on random
answers; ``tests/test_feast_http.py`` with a real ``feast serve``.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from feast.feature_server_utils import _timestamp_to_str, _value_to_native
from feast.protos.feast.types.Value_pb2 import Value
from google.protobuf.timestamp_pb2 import Timestamp

# FieldStatus's names as Feast's converter spells them (an unknown number is INVALID there too)
_STATUS_NAMES = {0: "INVALID", 1: "PRESENT", 2: "NULL_VALUE", 3: "NOT_FOUND", 4: "OUTSIDE_MAX_AGE"}


@dataclass(frozen=True)
class Column:
    """One ``FeatureVector`` of the response: serialised values, status numbers, serialised timestamps."""

    values: Sequence[bytes]
    statuses: Sequence[int]
    timestamps: Sequence[bytes]


_DOUBLE = struct.Struct("<d")
_DOUBLE_TAG = 0x29  # Value.double_val: field 5, wire type 1 (64-bit)


def native_value(raw: bytes) -> Any:
    """A serialised Feast ``Value`` as Feast's JSON has it (empty bytes: an unset value, null)."""
    if len(raw) == 9 and raw[0] == _DOUBLE_TAG:  # nothing but a double, the usual feature: read it directly
        f = _DOUBLE.unpack_from(raw, 1)[0]
        if math.isfinite(f):
            return f  # else the protobuf JSON strings, as Feast spells them
    return _value_to_native(Value.FromString(raw)) if raw else None


_TAGGED_DOUBLE = np.dtype([("tag", "u1"), ("value", "<f8")])  # a serialised double Value, 9 bytes
_ROWS_FOR_NUMPY = 8  # below this many values numpy's fixed cost is more than it saves


def native_values(raws: list[bytes]) -> list[Any]:
    """``native_value`` of each: a column of finite doubles (the usual feature) read in one go."""
    if len(raws) >= _ROWS_FOR_NUMPY and all(len(r) == 9 for r in raws):
        column = np.frombuffer(b"".join(raws), dtype=_TAGGED_DOUBLE)
        if (column["tag"] == _DOUBLE_TAG).all() and np.isfinite(column["value"]).all():
            return column["value"].tolist()  # Python floats of the same bits: the same repr in the JSON
    return [native_value(r) for r in raws]


def timestamp_text(raw: bytes) -> str:
    """A serialised ``Timestamp`` as Feast's JSON has it (empty bytes: the epoch)."""
    return _timestamp_to_str(Timestamp.FromString(raw))


class TimestampTexts:
    """``timestamp_text`` remembered per serialised timestamp: the rows one job writes share their
    event time, so most answers convert the same few. Bounded: emptied when it holds ``limit``."""

    def __init__(self, limit: int = 4096) -> None:
        self._texts: dict[bytes, str] = {}
        self._limit = limit

    def text(self, raw: bytes) -> str:
        got = self._texts.get(raw)
        if got is None:
            if len(self._texts) >= self._limit:
                self._texts = {}  # replaced, not cleared: another thread may be reading the old one
            got = self._texts[raw] = timestamp_text(raw)
        return got


def status_names(statuses: Sequence[int]) -> list[str]:
    return [_STATUS_NAMES.get(s, "INVALID") for s in statuses]


def vector(values: list[Any], statuses: list[str], timestamps: list[str]) -> dict[str, Any]:
    """One result as Feast's converter builds it: ``event_timestamps`` only when there are any."""
    if timestamps:
        return {"values": values, "statuses": statuses, "event_timestamps": timestamps}
    return {"values": values, "statuses": statuses}


def response_json(feature_names: Sequence[str], results: list[dict[str, Any]]) -> bytes:
    """The whole answer, ``feast serve``'s bytes: results, then the metadata's feature names."""
    return json.dumps({"results": results, "metadata": {"feature_names": list(feature_names)}},
                      separators=(",", ":")).encode()


def columns_json(feature_names: Sequence[str], columns: Sequence[Column]) -> bytes:
    """The JSON of a response holding ``columns`` (the general form; the HTTP API shares converted
    timestamps and statuses between the features of one view)."""
    return response_json(feature_names, [
        vector(native_values(list(c.values)), status_names(c.statuses), [timestamp_text(t) for t in c.timestamps])
        for c in columns
    ])


__all__ = ["Column", "TimestampTexts", "columns_json", "native_value", "native_values", "response_json", "status_names", "timestamp_text",
           "vector"]
