"""The region's durable privacy-budget ledger: ε (and δ) per calendar month, never overspent.

A spend is recorded in the same SQLite transaction that checks the month's totals, so two
publishes racing cannot both squeeze under the limit. Spends within a month add up (basic
composition), which is what a privacy filter over the month's releases amounts to.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

from fedstore.regions.errors import RegionError, must_be_writable


class BudgetExceeded(RegionError):
    """Publishing would spend more privacy budget than the region has left this month."""

    REASON = "BUDGET_EXCEEDED"


class BudgetLedger:
    def __init__(self, path: Path, region: str, *, epsilon_per_month: float, delta_per_month: float = 1e-5) -> None:
        if epsilon_per_month <= 0:
            raise ValueError("epsilon_per_month must be positive")
        self.path = path
        self.region = region
        self.limit = epsilon_per_month
        self.delta_limit = delta_per_month
        # before any budget is spent or anything released
        with must_be_writable(region, "the privacy budget ledger", path):
            path.parent.mkdir(parents=True, exist_ok=True)
            with closing(sqlite3.connect(path)) as db, db:
                db.execute(
                    "CREATE TABLE IF NOT EXISTS spends (submission_id TEXT PRIMARY KEY, period TEXT NOT NULL,"
                    " epsilon REAL NOT NULL, at TEXT NOT NULL, delta REAL NOT NULL DEFAULT 0)"
                )
                columns = {row[1] for row in db.execute("PRAGMA table_info(spends)")}
                if "delta" not in columns:  # a ledger written before δ was tracked
                    db.execute("ALTER TABLE spends ADD COLUMN delta REAL NOT NULL DEFAULT 0")

    @staticmethod
    def period(when: datetime) -> str:
        return when.astimezone(UTC).strftime("%Y-%m")

    def spent(self, period: str) -> float:
        return self.totals(period)[0]

    def totals(self, period: str) -> tuple[float, float]:
        with closing(sqlite3.connect(self.path)) as db:
            eps, delta = db.execute(
                "SELECT COALESCE(SUM(epsilon), 0), COALESCE(SUM(delta), 0) FROM spends WHERE period=?", (period,)
            ).fetchone()
        return float(eps), float(delta)

    def remaining(self, period: str) -> float:
        return max(self.limit - self.spent(period), 0.0)

    def spend(self, submission_id: str, epsilon: float, when: datetime, delta: float = 0.0) -> None:
        period = self.period(when)
        with closing(sqlite3.connect(self.path, isolation_level=None)) as db:
            db.execute("BEGIN IMMEDIATE")  # one writer at a time: check and spend together
            try:
                total, total_delta = db.execute(
                    "SELECT COALESCE(SUM(epsilon), 0), COALESCE(SUM(delta), 0) FROM spends WHERE period=?", (period,)
                ).fetchone()
                if total + epsilon > self.limit + 1e-12:
                    raise BudgetExceeded(
                        f"region {self.region}: publishing would spend ε={epsilon:.3f}, but only "
                        f"ε={max(self.limit - total, 0):.3f} of {self.limit:.3f} is left for {period}; nothing was published"
                    )
                if total_delta + delta > self.delta_limit * (1 + 1e-9):
                    raise BudgetExceeded(
                        f"region {self.region}: publishing would spend δ={delta:.1e}, but only "
                        f"δ={max(self.delta_limit - total_delta, 0):.1e} of {self.delta_limit:.1e} is left for {period}; "
                        "nothing was published"
                    )
                db.execute("INSERT INTO spends (submission_id, period, epsilon, at, delta) VALUES (?,?,?,?,?)",
                           (submission_id, period, epsilon, when.isoformat(), delta))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def carry(self, submission_id: str, when: datetime) -> str:
        """Move a queued submission's spend to the month of ``when`` (its sending), if that month's
        budget holds it; returns the month. The centre charges a submission to its own month of
        receipt, so a release queued in one month and sent in the next is spent in the next one
        here as well. Raises BudgetExceeded (the spend stays where it was) when it does not fit."""
        period = self.period(when)
        with closing(sqlite3.connect(self.path, isolation_level=None)) as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute("SELECT period, epsilon, delta FROM spends WHERE submission_id=?",
                                 (submission_id,)).fetchone()
                if row is not None and row[0] != period:
                    total, total_delta = db.execute(
                        "SELECT COALESCE(SUM(epsilon), 0), COALESCE(SUM(delta), 0) FROM spends WHERE period=?",
                        (period,)).fetchone()
                    if total + row[1] > self.limit + 1e-12 or total_delta + row[2] > self.delta_limit * (1 + 1e-9):
                        raise BudgetExceeded(
                            f"region {self.region}: {submission_id} was queued in {row[0]} and is sent in {period}, "
                            f"whose budget has ε={max(self.limit - total, 0):.3f} left of the ε={row[1]:.3f} it needs")
                    db.execute("UPDATE spends SET period=? WHERE submission_id=?", (period, submission_id))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return period
