"""The region's audit trail of data use: one record per lookup or score that read features, saying
who (the credential's name), for what (the purpose it was admitted for), through which method,
which feature service (or views), how many entities, and what came of it (``answered``, ``withheld``
when consent kept some entities' values back, or the error that ended it). It stays in the region:

    <data_dir>/audit/uses/day=YYYY-MM-DD/part-<ns>-<id>.parquet

Data minimisation: a record names no entity by default. The trail answers "who used whose data for
what, how much" per call; which persons were read is the one thing that would make the trail itself
a second copy of who-is-a-customer (and of the lookups' pattern per person), so it is only kept when
the region's config asks for it (``serving.audit_entity_ids: true``, e.g. where its regulator
requires per-person access logs); then the ids are written as text, as the prediction log does.

Records are written off the request path by ``day_log.DayLog``, as the prediction log's rows are:
a call queues one tuple under a lock; a writer thread writes a part file at most every
``flush_seconds`` (under a temporary name, then renamed). The queue is bounded: when the writer is
that far behind (a full disk, a directory it cannot create), the call is refused (``Overloaded``,
RESOURCE_EXHAUSTED) before it answers, so no answered use goes unrecorded and memory stays bounded.
``close`` (the node's clean stop, SIGTERM included) writes what is queued. Day partitions older
than ``retention_days`` are deleted, unless the clock moved further forward than the trail trusts
(``day_log``: a stepped clock never deletes the whole trail).

A Score call's record is made after the prediction log took (or refused) its rows, so its outcome
is what the caller got (``OnlineFeatures.record``).

Which call is being answered reaches the features' code through ``CALL`` (set by
``lookup_methods.outcome`` around the answer, on the thread that answers it): the three transports
(the lookup lane, grpc's public path, the HTTP API) share one answer signature, the wire's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, date, datetime
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa

from fedstore.serving.day_log import DayLog, DayLogKind, part_files, read_parts
from fedstore.serving.errors import Overloaded

AUDIT_DIR = "audit/uses"

SCHEMA = pa.schema([
    pa.field("at", pa.timestamp("us", tz="UTC")),
    pa.field("caller", pa.string()),
    pa.field("method", pa.string()),
    pa.field("purpose", pa.string()),
    pa.field("feature_service", pa.string()),  # the service's name, or the views read ("view,view")
    pa.field("entities", pa.int32()),
    pa.field("withheld", pa.int32()),  # entities whose values consent kept back
    # answered | withheld | "refused: <why>" (a Score whose rows the prediction log refused) | the error's kind
    pa.field("outcome", pa.string()),
    pa.field("entity_ids", pa.list_(pa.string())),  # null unless serving.audit_entity_ids
])


class CallOf(NamedTuple):
    """The call being answered on this thread: the admitted caller and the method's label."""

    caller: str
    method: str


# set by lookup_methods.outcome for the length of one answer (a ContextVar: per thread, never shared)
CALL: ContextVar[CallOf | None] = ContextVar("fedstore_call", default=None)


class Use(NamedTuple):  # a tuple: one is built per call on the request path; fields in SCHEMA's order
    at: float  # unix seconds
    caller: str
    method: str
    purpose: str
    feature_service: str
    entities: int
    withheld: int
    outcome: str
    entity_ids: tuple[str, ...] | None


def _day(use: Use) -> date:
    return datetime.fromtimestamp(use.at, UTC).date()


def _refused(why: str) -> Overloaded:
    """A call the trail cannot take now: its writer is behind, or the node is stopping (``why`` says which)."""
    return Overloaded(why, reason="AUDIT_TRAIL_FULL")


KIND: DayLogKind[Use] = DayLogKind(
    schema=SCHEMA, day_of=_day, name="the audit trail", rows="audit records", calls="lookups", refusal=_refused,
    log=logging.getLogger(__name__), thread="use-audit",
    convert={"at": lambda seconds: [int(t * 1_000_000) for t in seconds]})  # unix seconds -> microseconds


class UseAudit(DayLog[Use]):
    """The region's audit trail: a day log of ``Use`` records under ``<data_dir>/audit/uses``."""

    def __init__(self, data_dir: Path, *, retention_days: int, max_records: int = 100_000,
                 entity_ids: bool = False, flush_seconds: float = 1.0,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        super().__init__(KIND, data_dir / AUDIT_DIR, retention_days=retention_days, max_batches=max_records,
                         clock=clock, flush_seconds=flush_seconds)
        self.entity_ids = entity_ids  # whether records name the entities (the region's config says)

    def record(self, use: Use) -> None:
        """Queue one call's record, or refuse the call at once (``Overloaded``; never blocks it)."""
        self.append((use,))


def read_uses(data_dir: Path) -> pa.Table:
    """Every record of the region's audit trail (its part files), oldest part first."""
    return read_parts(part_files(data_dir / AUDIT_DIR), SCHEMA)


__all__ = ["AUDIT_DIR", "CALL", "SCHEMA", "CallOf", "Use", "UseAudit", "read_uses"]
