"""Validation of the entity columns of a request: one clear error per kind of mistake."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from feast.value_type import ValueType

from serving.catalog import Resolved
from serving.errors import InvalidRequest

_PY_TYPES = {ValueType.INT64: int, ValueType.INT32: int, ValueType.STRING: str}


@dataclass(frozen=True)
class Entities:
    columns: dict[str, list[object]]
    count: int

    def keys(self, join_keys: tuple[str, ...]) -> list[tuple[object, ...]]:
        """Each row's entity key: its values of these join keys, in order."""
        return list(zip(*(self.columns[k] for k in join_keys)))


def validate(columns: Mapping[str, Sequence[object]], resolved: Resolved, *, limit: int) -> Entities:
    if not columns:
        raise InvalidRequest("no entities given: pass at least one entity column")
    lengths = {k: len(v) for k, v in columns.items()}
    if len(set(lengths.values())) > 1:
        detail = ", ".join(f"{k}={n}" for k, n in lengths.items())
        raise InvalidRequest(f"entity columns have different lengths ({detail})")
    count = next(iter(lengths.values()))
    if count == 0:
        raise InvalidRequest("entity columns are empty")
    if count > limit:
        raise InvalidRequest(f"{count} entities requested; this node serves at most {limit} per request")
    for key in resolved.join_keys:
        if key not in columns:
            raise InvalidRequest(
                f"missing join key {key!r} (the requested features need {', '.join(resolved.join_keys)})"
            )
    types = resolved.join_key_types
    for key in resolved.join_keys:
        want = _PY_TYPES.get(types[key])
        values = columns[key]
        if want is not None and not all(type(x) is want for x in values):
            raise InvalidRequest(
                f"join key {key!r} must be {types[key].name.lower()} values"
            )
    return Entities(columns={k: list(columns[k]) for k in resolved.join_keys}, count=count)
