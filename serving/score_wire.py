"""``ScoreResponse`` on the wire, written straight from the scores: no protobuf object per entity
or per contribution.

Building an ``EntityScore`` and its contributions as generated messages, then serialising them, was
most of what Score added to a lookup of one entity (each keyword-built submessage costs more than
the arithmetic that fills it). The bytes here are exactly what the generated classes serialise
(canonical field order, proto3 defaults left out): ``tests/test_scoring.py`` compares the two.

``fedstore.serving.v1``'s field numbers (serving.proto)::

    EntityScore  1 prediction_id  2 score  3 probability  4 model  5 version  6 stage  7 intercept
                 8 contributions  9 materialization_job_ids  10 imputed  11 scored  12 status
    Contribution 1 feature  2 value  3 contribution  4 status  5 imputed
    ScoreResponse 1 results  2 metadata
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from functools import lru_cache

from fedstore.serving.wire import ONE_BYTE, field, string_field, varint

_DOUBLE = struct.Struct("<d").pack
_ZERO = _DOUBLE(0.0)  # a double whose bits are all zero is proto3's default: not written (-0.0 is)


def double_field(tag: int, x: float) -> bytes:
    packed = _DOUBLE(x)
    return b"" if packed == _ZERO else ONE_BYTE[tag] + packed


def varint_field(tag: int, n: int) -> bytes:
    # negative int64s take ten bytes, as two's complement in 64 bits
    return b"" if n == 0 else ONE_BYTE[tag] + varint(n & 0xFFFFFFFFFFFFFFFF)


def feature_head(feature: str) -> bytes:
    """A contribution's feature field: the same for every entity, made once per deployment."""
    return string_field(0x0A, feature)


def contribution(head: bytes, value: float, contrib: float, status: int, imputed: bool) -> bytes:
    """One ``EntityScore.contributions`` entry (field 8), with its tag and length."""
    v, c = _DOUBLE(value), _DOUBLE(contrib)
    body = b"".join((head, b"" if v == _ZERO else b"\x11" + v, b"" if c == _ZERO else b"\x19" + c,
                     b"" if status == 0 else b"\x20" + varint(status), b"\x28\x01" if imputed else b""))
    return field(0x42, body)


def model_fields(name: str, version: int, stage: str, intercept: float) -> tuple[bytes, bytes]:
    """The served model's fields 4–6 and 7, made once per deployment (they sit either side of
    nothing the entity adds, but 7 follows 3: kept apart so the order stays canonical)."""
    return (string_field(0x22, name) if name else b"") + varint_field(0x28, version) + \
        (string_field(0x32, stage) if stage else b""), double_field(0x39, intercept)


def scored_entity(prediction_id: str, score: float, probability: float, model: tuple[bytes, bytes],
                  contributions: Sequence[bytes], job_ids: Sequence[str], imputed: int) -> bytes:
    """One ``ScoreResponse.results`` entry (field 1) for an entity a model scored."""
    body = b"".join((string_field(0x0A, prediction_id), double_field(0x11, score), double_field(0x19, probability),
                     model[0], model[1], *contributions, *map(_job, job_ids),
                     varint_field(0x50, imputed), b"\x58\x01"))
    return field(0x0A, body)


def unscored_entity(prediction_id: str, job_ids: Sequence[str]) -> bytes:
    """An entity no stage covers: logged, answered without a score."""
    return field(0x0A, b"".join((string_field(0x0A, prediction_id), *map(_job, job_ids))))


def withheld_entity(status: int) -> bytes:
    """An entity without consent for the call's purpose: only its status (not scored, not logged)."""
    return field(0x0A, varint_field(0x60, status))


@lru_cache(maxsize=1024)
def _job(job_id: str) -> bytes:
    return string_field(0x4A, job_id)  # job ids repeat across calls: encoded once each


def response(entities: Sequence[bytes], metadata: bytes) -> bytes:
    """The whole ``ScoreResponse``: its results in request order, then its (serialised) metadata."""
    return b"".join((*entities, field(0x12, metadata)))


__all__ = ["contribution", "double_field", "feature_head", "model_fields", "response", "scored_entity",
           "unscored_entity", "varint_field", "withheld_entity"]
