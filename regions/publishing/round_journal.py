"""What this region already gave for a window of training statistics: a masked input to a secure
round, and how that ended (in the centre's sum, or released alone as the fall-back).

``fedstore region secure-round`` reads it before joining: a window already in a sum or already
released alone is not given again (it would spend the budget twice for the same entities and, in
two sums, count them twice); a masked input whose round's end this region never learnt is settled
by asking the centre once more. Kept in the region's data directory (``secure_rounds.db``), beside
its budget ledger, and written before the masked input leaves, so a crash leaves it knowing.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

SENT, IN_SUM, FELL_BACK = "sent", "in-sum", "fell-back"
_COLUMNS = 'feature_service, start, "end", round_id, epsilon, state, submission_id'


@dataclass(frozen=True)
class Contribution:
    feature_service: str
    start: str  # the window's bounds, ISO 8601
    end: str
    round_id: str
    epsilon: float  # the round's ε: what a fall-back release is made at
    state: str  # SENT (the round's end not yet known), IN_SUM or FELL_BACK
    submission_id: str  # IN_SUM: the centre's sum; FELL_BACK: this region's release alone ("" suppressed)


class RoundJournal:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path)
        self._db.execute("""CREATE TABLE IF NOT EXISTS contributions (
            feature_service TEXT NOT NULL, start TEXT NOT NULL, "end" TEXT NOT NULL, round_id TEXT NOT NULL,
            epsilon REAL NOT NULL, state TEXT NOT NULL, submission_id TEXT NOT NULL, at TEXT NOT NULL,
            PRIMARY KEY (feature_service, start, "end"))""")
        self._db.commit()

    def close(self) -> None:
        self._db.close()

    def find(self, feature_service: str, start: datetime, end: datetime) -> Contribution | None:
        row = self._db.execute(f'SELECT {_COLUMNS} FROM contributions WHERE feature_service = ? AND start = ? '
                               'AND "end" = ?', (feature_service, start.isoformat(), end.isoformat())).fetchone()
        return Contribution(*row) if row else None

    def of_round(self, round_id: str) -> Contribution | None:
        """The window given to ``round_id`` (for a round the centre no longer knows)."""
        row = self._db.execute(f'SELECT {_COLUMNS} FROM contributions WHERE round_id = ? ORDER BY at DESC',
                               (round_id,)).fetchone()
        return Contribution(*row) if row else None

    def record(self, feature_service: str, start: datetime, end: datetime, *, round_id: str, epsilon: float,
               state: str, submission_id: str, at: datetime) -> None:
        """The window's latest state (one row per window: a later state replaces an earlier one)."""
        self._db.execute('INSERT OR REPLACE INTO contributions VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
                         (feature_service, start.isoformat(), end.isoformat(), round_id, epsilon, state,
                          submission_id, at.isoformat()))
        self._db.commit()
