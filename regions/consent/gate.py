"""The consent filter one use of data passes through: a purpose, the region's policy, its records.

A gate for a purpose the region's law does not make depend on consent lets everything through
without reading the records. Otherwise each row's entity keys are checked point in time
(``records.py``), and the rows of an entity without consent for the purpose are left out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fedstore.federation import RegionConfig
from fedstore.federation.consent import ConsentPolicy, Purpose
from fedstore.regions.consent.records import ConsentRecords


@dataclass(frozen=True)
class ConsentGate:
    purpose: Purpose
    policy: ConsentPolicy
    records: ConsentRecords
    # (join key, time) -> the keys held and refused then; filled as the gate is used, one use at a time
    _states: dict[tuple[str, datetime], tuple[pa.Array, pa.Array]] = field(default_factory=dict, compare=False,
                                                                           repr=False)

    @property
    def active(self) -> bool:
        return self.policy.requires(self.purpose)

    def allowed(self, table: pa.Table, join_keys: list[str], at: datetime | pa.Array) -> np.ndarray:
        """Per row, whether every entity it names consented to the purpose at ``at``."""
        ok = np.ones(table.num_rows, dtype=bool)
        if not self.active:
            return ok
        for key in join_keys:
            keys = table.column(key).combine_chunks()
            if isinstance(at, datetime):
                ok &= self._at(key, keys, at)
            else:
                ok &= self.records.held(self.purpose, key, keys, at, default=self.policy.default_allows)
        return ok

    def _at(self, join_key: str, keys: pa.Array, at: datetime) -> np.ndarray:
        if (join_key, at) not in self._states:
            self._states[(join_key, at)] = self.records.states_at(self.purpose, join_key, at)
        held, refused = self._states[(join_key, at)]
        if self.policy.default_allows:  # everyone but those whose record says no
            hit = pc.is_in(keys, value_set=refused.cast(keys.type))
            return ~np.asarray(hit.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)
        hit = pc.is_in(keys, value_set=held.cast(keys.type))
        return np.asarray(hit.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)

    def keep(self, table: pa.Table, join_keys: list[str], at: datetime | pa.Array) -> tuple[pa.Table, int]:
        """The rows with consent, and how many were left out."""
        if not self.active or table.num_rows == 0:
            return table, 0
        ok = self.allowed(table, join_keys, at)
        return table.filter(pa.array(ok)), int((~ok).sum())

    def in_query(self, join_keys: list[str], at: datetime) -> ConsentInQuery | None:
        """The filter as sets of entity ids a source read joins in its own query (one hash join per
        key, no pass over the rows in Python), judged at ``at``; each key's state is read from the
        records once per gate and time, whichever views use it. None when there are no records to
        join (``keep`` then decides on the default alone, at no cost)."""
        if not self.active or not self.records.exists():
            return None
        sets = []
        for key in join_keys:
            if (key, at) not in self._states:
                self._states[(key, at)] = self.records.states_at(self.purpose, key, at)
            held, refused = self._states[(key, at)]
            # default deny keeps those whose consent holds; default allow drops those whose record says no
            sets.append((key, refused if self.policy.default_allows else held))
        return ConsentInQuery(sets, keep_listed=not self.policy.default_allows)

    def snapshot(self) -> dict[str, Any]:
        """The consent basis of a use: purpose, policy, and the records' fingerprint when they were read."""
        basis: dict[str, Any] = {"purpose": self.purpose.value, "requires_consent": self.active,
                                 "default": self.policy.default}
        if self.active:
            basis["records"] = self.records.snapshot()
        return basis


@dataclass
class ConsentInQuery:
    """A consent filter as sets of entity ids a source read joins (``ConsentGate.in_query``): per
    join key, (the key, its set of ids). The reader that applies it sets ``left_out`` (rows it left
    out); None: not applied, filter the rows yourself."""

    sets: list[tuple[str, pa.Array]]
    keep_listed: bool  # keep a row whose keys are all in their sets (else: none of them is)
    left_out: int | None = None


def consent_gate(region: RegionConfig, purpose: Purpose) -> ConsentGate:
    """The region's gate for one purpose; its records are checked once here when the purpose needs them."""
    records = ConsentRecords(region.data_dir, region.code)
    gate = ConsentGate(purpose, region.consent, records)
    if gate.active:
        records.check()
    return gate
