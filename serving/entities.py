"""Validation of the entity columns of a request: one clear error per kind of mistake."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence, cast

from feast.value_type import ValueType

from fedstore.federation.grpc_handlers import Malformed, bounded_parser
from fedstore.serving.catalog import Resolved
from fedstore.serving.errors import InvalidRequest

_PY_TYPES = {ValueType.INT64: int, ValueType.INT32: int, ValueType.STRING: str}

# The largest lookup request a node reads: grpc's default receive limit, or 4 KiB per entity it
# serves if that is more. The server accepts far larger messages (training-set entity frames), and
# a lookup that large would be parsed and copied on a lookup thread before its entities are counted.
LOOKUP_BYTES_PER_ENTITY, MIN_LOOKUP_BYTES = 4096, 4 * 1024 * 1024


def max_lookup_bytes(max_entities: int) -> int:
    return max(MIN_LOOKUP_BYTES, LOOKUP_BYTES_PER_ENTITY * max_entities)


def too_many(count: int, limit: int) -> InvalidRequest:
    """The refusal of ``count`` entities, more than ``limit``."""
    return InvalidRequest(f"{count} entities requested; this node serves at most {limit} per request",
                          reason="TOO_MANY_ENTITIES")


def lookup_parser(message_class: Any, max_entities: int, longest: Callable[[Any], int]) -> Callable[[bytes], Any]:
    """A lookup request's bytes as ``message_class``, or InvalidRequest. A request too large to be a
    lookup is refused unread; an entity takes at least a byte, so only a request of more bytes than
    the entity limit can hold too many, and only such a request has its entities counted
    (``longest``: its longest entity column) before the lookup copies them."""
    parse = bounded_parser(message_class, max_bytes=max_lookup_bytes(max_entities), inspect_above=max_entities,
                           inspect=lambda r: too_many(n, max_entities) if (n := longest(r)) > max_entities else None)

    def parsed(body: bytes) -> Any:
        request = parse(body)
        if isinstance(request, Malformed):
            raise request.error()
        return request

    return parsed


_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


@dataclass(slots=True)  # not frozen: built for every lookup, and frozen __init__ costs three times more
class Entities:
    columns: dict[str, list[object]]
    count: int

    def keys(self, join_keys: tuple[str, ...]) -> list[tuple[object, ...]]:
        """Each row's entity key: its values of these join keys, in order."""
        return list(zip(*(self.columns[k] for k in join_keys)))


def validate(columns: Mapping[str, Sequence[object]], resolved: Resolved, *, limit: int) -> Entities:
    # one pass per check, no intermediate collections: this runs on every lookup
    if not columns:
        raise InvalidRequest("no entities given: pass at least one entity column", reason="NO_ENTITIES")
    count = -1
    for values in columns.values():
        if count < 0:
            count = len(values)
        elif len(values) != count:
            detail = ", ".join(f"{k}={len(v)}" for k, v in columns.items())
            raise InvalidRequest(f"entity columns have different lengths ({detail})", reason="ENTITY_COLUMNS_UNEQUAL")
    if count == 0:
        raise InvalidRequest("entity columns are empty", reason="NO_ENTITIES")
    if count > limit:
        raise too_many(count, limit)
    for key in resolved.join_keys:
        if key not in columns:
            raise InvalidRequest(
                f"missing join key {key!r} (the requested features need {', '.join(resolved.join_keys)})",
                reason="MISSING_JOIN_KEY",
            )
    types = resolved.join_key_types
    kept: dict[str, list[object]] = {}  # the join keys' columns, as they were given (not copied)
    for key in resolved.join_keys:
        values = columns[key]
        kind = types[key]
        want = _PY_TYPES.get(kind)
        if want is not None:
            for x in values:
                if type(x) is not want:
                    raise InvalidRequest(f"join key {key!r} must be {kind.name.lower()} values"
                                         + (", not null" if x is None else ""), reason="INVALID_ENTITY_VALUES")
            if kind is ValueType.INT32:  # a value its 4 bytes cannot hold names no entity (nor encodes as a key)
                ints = cast("Sequence[int]", values)  # ints: checked just above
                if not (_INT32_MIN <= min(ints) and max(ints) <= _INT32_MAX):
                    raise InvalidRequest(f"join key {key!r} must be int32 values, within [{_INT32_MIN}, {_INT32_MAX}]",
                                         reason="INVALID_ENTITY_VALUES")
        kept[key] = values if type(values) is list else list(values)
    return Entities(columns=kept, count=count)
