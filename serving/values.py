"""Small decoders for the bytes Feast stores in its online store."""

from __future__ import annotations


def _varint(b: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = b[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


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
