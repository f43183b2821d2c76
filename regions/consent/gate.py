"""The consent filter one use of data passes through: a purpose, the region's policy, its records.

A gate for a purpose the region's law does not make depend on consent lets everything through
without reading the records. Otherwise each row's entity keys are checked point in time
(``records.py``), and the rows of an entity without consent for the purpose are left out. At one
time (a window's end) the check is a lookup per row in the set of ids the records' spans
(``spans.py``) keep or drop then (``idset.py``); with a time per row, the records' as-of join.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa

from fedstore.federation import RegionConfig
from fedstore.federation.consent import ConsentPolicy, Purpose
from fedstore.regions.consent.idset import IdSet
from fedstore.regions.consent.records import ConsentRecords
from fedstore.regions.consent.spans import ConsentSpans


@dataclass(frozen=True)
class ConsentGate:
    purpose: Purpose
    policy: ConsentPolicy
    records: ConsentRecords
    # the purpose's spans (``spans.py``), read on first use; then per (join key, time) the ids whose
    # record keeps or drops them, as sets looked up a column at a time; one use at a time
    _spans: list[ConsentSpans] = field(default_factory=list, compare=False, repr=False)
    _sets: dict[tuple[str, datetime], IdSet] = field(default_factory=dict, compare=False, repr=False)

    @property
    def active(self) -> bool:
        return self.policy.requires(self.purpose)

    def allowed(self, table: pa.Table, join_keys: list[str], at: datetime | pa.Array) -> np.ndarray:
        """Per row, whether every entity it names consented to the purpose at ``at``."""
        ok = np.ones(table.num_rows, dtype=bool)
        if not self.active:
            return ok
        for key in join_keys:
            keys = table.column(key)
            if isinstance(at, datetime):
                ok &= self._at(key, keys, at)
            else:
                ok &= self.records.held(self.purpose, key, keys.combine_chunks(), at,
                                        default=self.policy.default_allows)
        return ok

    def _at(self, join_key: str, keys: pa.ChunkedArray | pa.Array, at: datetime) -> np.ndarray:
        listed = self._set(join_key, at).contains(keys)
        # default allow: everyone but those whose record says no; default deny: those whose record says yes
        return ~listed if self.policy.default_allows else listed

    def _set(self, join_key: str, at: datetime) -> IdSet:
        if (join_key, at) not in self._sets:
            if not self._spans:
                self._spans.append(self.records.spans(self.purpose))
            held, refused = self._spans[0].states_at(join_key, at)
            # the smaller side of the question: who withdrew (opt-out) or who consented (opt-in)
            self._sets[(join_key, at)] = IdSet.of(refused if self.policy.default_allows else held)
        return self._sets[(join_key, at)]

    def keep(self, table: pa.Table, join_keys: list[str], at: datetime | pa.Array) -> tuple[pa.Table, int]:
        """The rows with consent, and how many were left out."""
        ok, left_out = self.mask(table, join_keys, at)
        return (table if ok is None else table.filter(pa.array(ok))), left_out

    def mask(self, table: pa.Table, join_keys: list[str], at: datetime | pa.Array) -> tuple[np.ndarray | None, int]:
        """Per row whether it has consent (None: every row has), and how many have not: for a
        caller that folds the mask into its own pass rather than copying the table without them."""
        if not self.active or table.num_rows == 0:
            return None, 0
        ok = self.allowed(table, join_keys, at)
        left_out = int(ok.size - np.count_nonzero(ok))
        return (ok if left_out else None), left_out

    def snapshot(self) -> dict[str, Any]:
        """The consent basis of a use: purpose, policy, and the records' fingerprint when they were read."""
        basis: dict[str, Any] = {"purpose": self.purpose.value, "requires_consent": self.active,
                                 "default": self.policy.default}
        if self.active:
            basis["records"] = self.records.snapshot()
        return basis


def consent_gate(region: RegionConfig, purpose: Purpose) -> ConsentGate:
    """The region's gate for one purpose; its records are checked here when the purpose needs them
    (once per version of the file: its span file, written after the check, says it passed)."""
    records = ConsentRecords(region.data_dir, region.code)
    gate = ConsentGate(purpose, region.consent, records)
    if gate.active:
        gate._spans.append(records.spans(purpose))
    return gate
