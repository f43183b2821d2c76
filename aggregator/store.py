"""Accepted submissions: an append-only DuckDB store with receipts.

Rows are only ever inserted, one transaction per submission (header and features together), so a
rejected or failed submission leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from proto.fedstore.aggregator.v1 import aggregator_pb2 as pb

_SCHEMA = """
CREATE TABLE IF NOT EXISTS submissions (
    submission_id VARCHAR PRIMARY KEY, region VARCHAR NOT NULL, period VARCHAR NOT NULL,
    window_start TIMESTAMPTZ NOT NULL, window_end TIMESTAMPTZ NOT NULL,
    mechanism VARCHAR NOT NULL, epsilon DOUBLE NOT NULL, delta DOUBLE NOT NULL,
    minimum_cohort BIGINT NOT NULL, content_sha256 VARCHAR NOT NULL,
    receipt_id VARCHAR NOT NULL, accepted_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS feature_statistics (
    submission_id VARCHAR NOT NULL, ref VARCHAR NOT NULL, count BIGINT NOT NULL,
    null_count BIGINT NOT NULL, sum DOUBLE NOT NULL, sum_sq DOUBLE NOT NULL, histogram BIGINT[] NOT NULL
);
"""


@dataclass(frozen=True)
class StoredReceipt:
    submission_id: str
    receipt_id: str
    accepted_at: datetime
    content_sha256: str


def content_hash(sub: pb.Submission) -> str:
    return hashlib.sha256(sub.SerializeToString(deterministic=True)).hexdigest()


class SubmissionStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = duckdb.connect(str(path))
        self._db.execute(_SCHEMA)
        self._lock = threading.Lock()  # one DuckDB connection, used by one thread at a time

    def close(self) -> None:
        self._db.close()

    def receipt(self, submission_id: str) -> StoredReceipt | None:
        with self._lock:
            row = self._db.execute(
                "SELECT submission_id, receipt_id, accepted_at, content_sha256 FROM submissions WHERE submission_id=?",
                [submission_id],
            ).fetchone()
        return StoredReceipt(*row) if row else None

    def epsilon_spent(self, region: str, period: str) -> float:
        with self._lock:
            (total,) = self._db.execute(
                "SELECT COALESCE(SUM(epsilon), 0) FROM submissions WHERE region=? AND period=?", [region, period]
            ).fetchone()
        return float(total)

    def accept(self, sub: pb.Submission, *, epsilon_limit: float) -> StoredReceipt:
        """Store the submission in one transaction, if the region's budget for its period allows.

        The budget is re-added from what this store holds, not from what the region claims.
        """
        receipt = StoredReceipt(sub.submission_id, uuid.uuid4().hex, datetime.now(timezone.utc), content_hash(sub))
        acc = sub.accounting
        with self._lock:
            self._db.execute("BEGIN TRANSACTION")
            try:
                (spent,) = self._db.execute(
                    "SELECT COALESCE(SUM(epsilon), 0) FROM submissions WHERE region=? AND period=?",
                    [sub.region, sub.period],
                ).fetchone()
                if spent + acc.epsilon > epsilon_limit + 1e-9:
                    raise BudgetRefused(float(spent))
                self._db.execute(
                    "INSERT INTO submissions VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    [sub.submission_id, sub.region, sub.period, sub.window_start.ToDatetime(timezone.utc),
                     sub.window_end.ToDatetime(timezone.utc), pb.Mechanism.Name(acc.mechanism), acc.epsilon,
                     acc.delta, acc.minimum_cohort, receipt.content_sha256, receipt.receipt_id, receipt.accepted_at],
                )
                self._db.executemany(
                    "INSERT INTO feature_statistics VALUES (?,?,?,?,?,?,?)",
                    [[sub.submission_id, f.ref, f.count, f.null_count, f.sum, f.sum_sq, list(f.histogram)]
                     for f in sub.features],
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return receipt

    def features(self, period: str | None) -> list[tuple[str, str, str, int, float, float, list[int]]]:
        sql = ("SELECT s.submission_id, s.region, f.ref, f.count, f.sum, f.sum_sq, f.histogram "
               "FROM feature_statistics f JOIN submissions s USING (submission_id)")
        args: list[object] = []
        if period:
            sql += " WHERE s.period = ?"
            args.append(period)
        with self._lock:
            return self._db.execute(sql + " ORDER BY s.accepted_at", args).fetchall()


class BudgetRefused(Exception):
    def __init__(self, spent: float) -> None:
        super().__init__(spent)
        self.spent = spent
