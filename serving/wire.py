"""Protobuf wire encoding of the serving responses, straight from stored bytes.

Values come out of Redis (and the loaded snapshot) as serialised Feast ``Value`` and
``Timestamp`` messages; ``fedstore.serving.v1.Value`` shares Feast's field numbers, so a response
is assembled by concatenating those bytes with a few tags and lengths, with no per-value protobuf
objects. The serving tests parse the responses with the generated classes and compare them
with Feast's own answers (``tests/test_serving.py``, ``tests/test_fast_path_compat.py``).
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=4096)
def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


ONE_BYTE = tuple(bytes((i,)) for i in range(256))  # indexing beats building bytes((i,)) per call


def field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2) with a one-byte tag."""
    n = len(payload)
    return ONE_BYTE[tag] + (ONE_BYTE[n] if n < 128 else varint(n)) + payload


def fields(tag: int, payloads: list[bytes]) -> bytes:
    """``field(tag, p)`` for each payload, concatenated: one join where all are of one length
    below 128 (the values of a fixed-width feature across entities, their timestamps)."""
    if not payloads:
        return b""
    n = len(payloads[0])
    if n < 128 and min(map(len, payloads)) == n == max(map(len, payloads)):
        head = ONE_BYTE[tag] + ONE_BYTE[n]
        return head + head.join(payloads)
    return b"".join([field(tag, p) for p in payloads])


def string_field(tag: int, text: str) -> bytes:
    return field(tag, text.encode("utf-8"))
