"""What a training set may hold: erased entities never, entities without consent as the caller asks.

Applied to each chunk of entity rows before Feast's point-in-time join, per row at its own
``event_timestamp`` (consent as it held when the example happened): ``exclude`` drops a row whose
entity had not consented to local training then, ``mark`` keeps it with ``consent_local_training``
false, for a caller who must show what was left out. Rows of an erased entity are always dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa

from fedstore.regions.consent import ConsentGate
from fedstore.regions.datasets.entities import TIMESTAMP
from fedstore.regions.store.erasure_list import ErasedKeys

MODES = ("exclude", "mark")
MARK_COLUMN = "consent_local_training"


@dataclass
class ChunkFilter:
    gate: ConsentGate
    erased: ErasedKeys
    join_keys: list[str]
    mode: str = "exclude"
    rows_erased: int = 0  # rows left out because their entity was erased
    rows_without_consent: int = 0  # rows excluded or marked
    kept: int = 0  # rows let through (marked ones included)

    def apply(self, chunk: pd.DataFrame) -> pd.DataFrame:
        keys = [k for k in self.join_keys if k in chunk.columns]
        if self.erased:
            hit = pd.Series(False, index=chunk.index)
            for k in keys:
                hit |= chunk[k].isin(self.erased.by_key.get(k, ()))
            if hit.any():
                self.rows_erased += int(hit.sum())
                chunk = chunk[~hit.to_numpy()]
        if not self.gate.active or chunk.empty:
            if self.mode == "mark":
                chunk = chunk.assign(**{MARK_COLUMN: True})
            return chunk
        table = pa.Table.from_pandas(chunk[[*keys, TIMESTAMP]], preserve_index=False)
        ok = self.gate.allowed(table, keys, table.column(TIMESTAMP).combine_chunks())
        self.rows_without_consent += int((~ok).sum())
        if self.mode == "mark":
            return chunk.assign(**{MARK_COLUMN: ok})
        return chunk[ok]

    def basis(self) -> dict[str, Any]:
        """For the manifest: the consent snapshot used and what it changed."""
        return {**self.gate.snapshot(), "mode": self.mode, "as_of": f"each row's {TIMESTAMP}",
                f"rows_{'marked' if self.mode == 'mark' else 'excluded'}_without_consent": self.rows_without_consent,
                "erased_entities_listed": sum(len(v) for v in self.erased.by_key.values()),
                "rows_excluded_erased": self.rows_erased}
