"""Consent at lookup time: which entities of a lookup or a score are withheld for the call's purpose.

A purpose the region's law makes depend on consent (its ``consent.required``) is checked per
entity against the region's consent records (``regions/consent/records.py``) as they hold now.
Reading the records per call would cost milliseconds, so the node keeps, per such purpose and
join key, one in-memory set: the entities whose consent holds (``default: deny``) or those whose
record says they withdrew (``default: allow``, the smaller set). A lookup costs one set membership
test per entity and join key (well under a microsecond); the set is rebuilt by the node's refresher
when the records file changes, or when a grant or withdrawal dated in the future comes due, so a
withdrawal is honoured within one refresh tick (``refresh_seconds``, 1 s by default) of its
record landing. Memory: about 60 bytes per entity listed, per purpose that needs consent.

Until the records have been read once (or while they are not readable at start-up) every entity
is withheld for such a purpose: deny by default. A file that breaks later keeps the last good sets
(the refresher logs it). A purpose that needs no consent is never checked.

Withheld entities get no value and no timestamp: ``WITHHELD_NO_CONSENT`` per value in this
project's API; NOT_FOUND in Feast's contracts (gRPC and HTTP), whose status enum has no such
reason, so Feast clients stay valid (the node counts them on ``fedstore_consent_withheld_total``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Callable

from fedstore.federation import RegionConfig
from fedstore.federation.consent import ConsentPolicy, Purpose
from fedstore.regions.consent.records import ConsentRecords
from fedstore.serving.entities import Entities

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PurposeState:
    """One purpose's verdicts, as they held when read."""

    allows_unlisted: bool  # the region's default: a person without a record is allowed (opt-out)
    listed: dict[str, frozenset[object]]  # join key -> the held ids (default deny) or the refused (allow)

    def withheld(self, entities: Entities, join_keys: tuple[str, ...]) -> tuple[int, ...]:
        """The rows (indices) any of whose join keys' entities is not allowed."""
        empty: frozenset[object] = frozenset()
        if entities.count == 1:  # the usual lookup: no intermediate collections
            for key in join_keys:
                if (entities.columns[key][0] in self.listed.get(key, empty)) is self.allows_unlisted:
                    return (0,)
            return ()
        out: set[int] = set()
        for key in join_keys:
            listed = self.listed.get(key, empty)
            values = entities.columns[key]
            if self.allows_unlisted:
                out.update(i for i, v in enumerate(values) if v in listed)
            else:
                out.update(i for i, v in enumerate(values) if v not in listed)
        return tuple(sorted(out))


_NOBODY = PurposeState(False, {})  # before the records were read: everyone is withheld


class ConsentCheck:
    """The serving node's consent verdicts per purpose, rebuilt by ``refresh`` (one thread calls it);
    lookups read the current mapping (replaced whole, never mutated)."""

    def __init__(self, region: RegionConfig, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.region = region.code
        self.policy: ConsentPolicy = region.consent
        self.records = ConsentRecords(region.data_dir, region.code)
        self.clock = clock
        self._states: dict[Purpose, PurposeState] = {p: _NOBODY for p in self.policy.required}
        self._read: tuple[tuple[int, int, int] | None, datetime | None] | None = None  # (file stat, next change)

    def requires(self, purpose: Purpose) -> bool:
        return purpose in self.policy.required

    def withheld(self, purpose: Purpose, entities: Entities, join_keys: tuple[str, ...]) -> tuple[int, ...]:
        """The rows of ``entities`` without consent for ``purpose`` now (none when it needs none)."""
        state = self._states.get(purpose)
        return () if state is None else state.withheld(entities, join_keys)

    def refresh(self) -> bool:
        """Re-read the records when the file changed or a dated record came due; True when re-read."""
        if not self.policy.required:
            return False
        now = self.clock()
        stat = self._stat()
        if self._read is not None:
            seen, due = self._read
            if seen == stat and (due is None or now < due):
                return False
        self.records.check()  # a broken file raises here: the last good verdicts stay
        states: dict[Purpose, PurposeState] = {}
        first_due: datetime | None = None
        for purpose in self.policy.required:
            by_key, due = self.records.every_key_at(purpose, now)
            allow = self.policy.default_allows
            states[purpose] = PurposeState(
                allow, {k: frozenset((refused if allow else held).to_pylist()) for k, (held, refused) in by_key.items()})
            if due is not None and (first_due is None or due < first_due):
                first_due = due
        self._states = states
        self._read = (stat, first_due)
        return True

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.records.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)


__all__ = ["ConsentCheck", "PurposeState"]
