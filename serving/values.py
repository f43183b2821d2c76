"""Feast's serialised ValueProto bytes -> Python values, without a protobuf object per value."""

from __future__ import annotations

import struct
from typing import Any

from feast.protos.feast.types.Value_pb2 import Value as ValueProto
from feast.type_map import feast_value_type_to_python_type

_DOUBLE = struct.Struct("<d")
_FLOAT = struct.Struct("<f")


def _varint(b: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = b[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def decode_value(b: bytes | None) -> Any:
    """None for a missing or null value; the Python value otherwise."""
    if not b:
        return None
    tag = b[0]
    if tag == 0x29 and len(b) == 9:  # double_val
        return _DOUBLE.unpack_from(b, 1)[0]
    if tag in (0x20, 0x18):  # int64_val, int32_val
        value, end = _varint(b, 1)
        if end == len(b):
            return value - (1 << 64) if value >= 1 << 63 else value
    if tag == 0x12:  # string_val
        length, pos = _varint(b, 1)
        if pos + length == len(b):
            return b[pos:].decode("utf-8")
    if tag == 0x35 and len(b) == 5:  # float_val
        return _FLOAT.unpack_from(b, 1)[0]
    if tag == 0x38 and len(b) == 2:  # bool_val
        return bool(b[1])
    return feast_value_type_to_python_type(ValueProto.FromString(b))


def decode_timestamp(b: bytes | None) -> tuple[int, int] | None:
    """(seconds, nanos) of a serialised google.protobuf.Timestamp."""
    if not b:
        return None
    seconds = nanos = 0
    pos = 0
    while pos < len(b):
        tag = b[pos]
        value, pos = _varint(b, pos + 1)
        if tag == 0x08:
            seconds = value - (1 << 64) if value >= 1 << 63 else value
        elif tag == 0x10:
            nanos = value
    return seconds, nanos
