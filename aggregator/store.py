"""Accepted submissions: an append-only DuckDB store with receipts.

Rows are only ever inserted, one transaction per submission (header and features together), so a
rejected or failed submission leaves nothing behind.

Quarantine is append-only too: ``quarantine_events`` holds every hold (by the centre's check),
acceptance and rejection (by an operator), and a submission's status is its latest event. A held
or rejected submission stays stored (a region's retry is a replay) but ``features`` and
``latest_training`` — what merging and training read — leave it out.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from fedstore.aggregator.errors import StoreInUse
from fedstore.aggregator.submission import ConsentClaim, Submission
from fedstore.federation.consent import ConsentBasis

_SCHEMA = """
CREATE TABLE IF NOT EXISTS submissions (
    submission_id VARCHAR PRIMARY KEY, region VARCHAR NOT NULL, period VARCHAR NOT NULL,
    window_start TIMESTAMPTZ NOT NULL, window_end TIMESTAMPTZ NOT NULL,
    mechanism VARCHAR NOT NULL, epsilon DOUBLE NOT NULL, delta DOUBLE NOT NULL,
    minimum_cohort BIGINT NOT NULL, content_sha256 VARCHAR NOT NULL,
    receipt_id VARCHAR NOT NULL, accepted_at TIMESTAMPTZ NOT NULL, epsilon_per_query DOUBLE
);
-- a store written before ε per query was kept: its submissions have none (their noise is unknown)
ALTER TABLE submissions ADD COLUMN IF NOT EXISTS epsilon_per_query DOUBLE;
CREATE TABLE IF NOT EXISTS feature_statistics (
    submission_id VARCHAR NOT NULL, ref VARCHAR NOT NULL, count BIGINT NOT NULL,
    null_count BIGINT NOT NULL, sum DOUBLE NOT NULL, sum_sq DOUBLE NOT NULL, histogram BIGINT[] NOT NULL
);
CREATE TABLE IF NOT EXISTS segment_statistics (
    submission_id VARCHAR NOT NULL, dimension VARCHAR NOT NULL, value VARCHAR NOT NULL, ref VARCHAR NOT NULL,
    count BIGINT NOT NULL, null_count BIGINT NOT NULL, sum DOUBLE NOT NULL, sum_sq DOUBLE NOT NULL,
    histogram BIGINT[] NOT NULL
);
CREATE TABLE IF NOT EXISTS training_statistics (
    submission_id VARCHAR NOT NULL, feature_service VARCHAR NOT NULL, label VARCHAR NOT NULL,
    features VARCHAR[] NOT NULL, class_label BIGINT NOT NULL, n DOUBLE NOT NULL,
    sum_x DOUBLE[] NOT NULL, xtx DOUBLE[] NOT NULL
);
-- XᵀX over both classes, one per training submission (class rows then carry an empty xtx; a store
-- written before has per-class xtx and no row here)
CREATE TABLE IF NOT EXISTS training_moments (submission_id VARCHAR NOT NULL, xtx DOUBLE[] NOT NULL);
-- what a release rested on (issue 30): its purpose, whether consent was required, the region's snapshot id
CREATE TABLE IF NOT EXISTS consent_basis (
    submission_id VARCHAR NOT NULL, purpose VARCHAR NOT NULL, consent_required BOOLEAN NOT NULL,
    snapshot_id VARCHAR NOT NULL
);
-- a secure-aggregation sum's basis per member region (the sum "A+B+C" is one submission of many regions)
CREATE TABLE IF NOT EXISTS member_consent_basis (
    submission_id VARCHAR NOT NULL, region VARCHAR NOT NULL, purpose VARCHAR NOT NULL,
    consent_required BOOLEAN NOT NULL, snapshot_id VARCHAR NOT NULL
);
CREATE SEQUENCE IF NOT EXISTS quarantine_event_ids START 1;
CREATE TABLE IF NOT EXISTS quarantine_events (
    event_id BIGINT PRIMARY KEY DEFAULT nextval('quarantine_event_ids'), happened_at TIMESTAMPTZ NOT NULL,
    who VARCHAR NOT NULL, action VARCHAR NOT NULL, submission_id VARCHAR NOT NULL, why VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS evaluations (
    submission_id VARCHAR NOT NULL, model_name VARCHAR NOT NULL, model_version BIGINT NOT NULL,
    class_label BIGINT NOT NULL, counts BIGINT[] NOT NULL
);
"""


_TABLES = ("submissions", "feature_statistics", "segment_statistics", "training_statistics", "training_moments",
           "evaluations", "quarantine_events", "consent_basis", "member_consent_basis")


@dataclass(frozen=True)
class FeatureRow:
    """One feature of one accepted submission, as released."""

    submission_id: str
    region: str
    ref: str
    count: int
    sum: float
    sum_sq: float
    histogram: tuple[int, ...]
    epsilon_per_query: float | None  # None: stored before it was kept
    period: str = ""


@dataclass(frozen=True)
class TrainingRow:
    submission_id: str
    region: str
    features: tuple[str, ...]
    label: int
    n: float
    sum_x: tuple[float, ...]
    xtx: tuple[float, ...]  # the submission's XᵀX over both classes (upper triangle), on each of its class rows
    epsilon: float
    delta: float = 0.0
    period: str = ""
    consent: ConsentBasis | None = None  # what the release rested on; None: it recorded no basis
    # a secure-aggregation sum's: each member region's basis (those that sent one)
    member_consent: Mapping[str, ConsentBasis] = field(default_factory=dict)


# quarantine actions, as stored
QUARANTINE, ACCEPT, REJECT = "quarantine", "accept", "reject"
# submissions whose latest quarantine event holds them out (held, or rejected for good)
_HELD = ("(SELECT submission_id FROM (SELECT submission_id, action, row_number() OVER "
         "(PARTITION BY submission_id ORDER BY event_id DESC) AS k FROM quarantine_events) "
         "WHERE k = 1 AND action <> 'accept')")


@dataclass(frozen=True)
class QuarantineEvent:
    event_id: int
    at: datetime
    who: str
    action: str  # quarantine | accept | reject
    submission_id: str
    region: str
    period: str
    kind: str  # features | training
    why: str


@dataclass(frozen=True)
class StoredReceipt:
    submission_id: str
    receipt_id: str
    accepted_at: datetime
    content_sha256: str


def _aggregate(row: tuple[Any, ...] | None) -> tuple[Any, ...]:
    assert row is not None, "an aggregate query returns one row"
    return row


class SubmissionStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = duckdb.connect(str(path))
        except duckdb.IOException as e:
            if "lock" not in str(e).lower():
                raise
            raise StoreInUse(
                f"the submission store {path} is open in another process (is another `fedstore aggregator serve` "
                "running on this data directory?)",
                reason="STORE_IN_USE",
            ) from None
        self._db.execute(_SCHEMA)
        self._lock = threading.Lock()  # one DuckDB connection, used by one thread at a time

    def close(self) -> None:
        self._db.close()

    def receipt(self, submission_id: str) -> StoredReceipt | None:
        with self._lock:
            return self._receipt(submission_id)

    def _receipt(self, submission_id: str) -> StoredReceipt | None:
        row = self._db.execute(
            "SELECT submission_id, receipt_id, accepted_at, content_sha256 FROM submissions WHERE submission_id=?",
            [submission_id],
        ).fetchone()
        return StoredReceipt(*row) if row else None

    def stored_counts(self) -> dict[str, int]:
        """How many rows each table holds (an auditor's check that a refusal left nothing behind)."""
        with self._lock:
            return {table: int(_aggregate(self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone())[0])
                    for table in _TABLES}

    def epsilon_spent(self, region: str, period: str) -> float:
        with self._lock:
            (total,) = _aggregate(self._db.execute(
                "SELECT COALESCE(SUM(epsilon), 0) FROM submissions WHERE region=? AND period=?", [region, period]
            ).fetchone())
        return float(total)

    def accept(self, sub: Submission, *, epsilon: float, delta: float, period: str, accepted_at: datetime,
               epsilon_limit: float, delta_limit: float = 1.0, quarantine_why: str | None = None,
               member_consent: Mapping[str, ConsentClaim] | None = None) -> StoredReceipt:
        """Store the submission in one transaction, charged (``epsilon``, ``delta``) in ``period``,
        if the region's budget for that period allows.

        With ``quarantine_why`` it is stored held (a quarantine event by the centre in the same
        transaction): kept, counted against the budget (it was released), but neither merged nor
        trained on until an operator accepts it.

        The charge is the centre's own computation and the period its own month of receipt; the
        budget is re-added from what this store holds, not from what the region claims. Raises
        ``AlreadyStored`` when the id was stored since the caller looked (a concurrent attempt of
        the same submission, e.g. a region's retry while its first attempt was still being stored).
        """
        receipt = StoredReceipt(sub.submission_id, uuid.uuid4().hex, accepted_at.astimezone(timezone.utc),
                                sub.content_sha256)
        acc = sub.claims
        assert sub.window_start is not None and sub.window_end is not None, "a validated submission has its window"
        with self._lock:
            self._db.execute("BEGIN TRANSACTION")
            try:
                # a call with the same id may have stored it since the caller looked (a region's retry
                # after its deadline, two send-stats at once): that is a replay, not a second insert
                first = self._receipt(sub.submission_id)
                if first is not None:
                    raise AlreadyStored(first)
                spent, spent_delta = _aggregate(self._db.execute(
                    "SELECT COALESCE(SUM(epsilon), 0), COALESCE(SUM(delta), 0) FROM submissions WHERE region=? AND period=?",
                    [sub.region, period],
                ).fetchone())
                if spent + epsilon > epsilon_limit + 1e-9 or spent_delta + delta > delta_limit * (1 + 1e-9):
                    raise BudgetRefused(float(spent), float(spent_delta))
                self._db.execute(
                    "INSERT INTO submissions (submission_id, region, period, window_start, window_end, mechanism,"
                    " epsilon, delta, minimum_cohort, content_sha256, receipt_id, accepted_at, epsilon_per_query)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    [sub.submission_id, sub.region, period, sub.window_start.to_datetime(),
                     sub.window_end.to_datetime(), acc.mechanism, epsilon,
                     delta, acc.minimum_cohort, receipt.content_sha256, receipt.receipt_id, receipt.accepted_at,
                     acc.epsilon_per_query],
                )
                if sub.features:
                    self._db.executemany(
                        "INSERT INTO feature_statistics VALUES (?,?,?,?,?,?,?)",
                        [[sub.submission_id, f.ref, f.count, f.null_count, f.sum, f.sum_sq, list(f.histogram)]
                         for f in sub.features],
                    )
                segment_rows = [[sub.submission_id, g.dimension, g.value, f.ref, f.count, f.null_count, f.sum,
                                 f.sum_sq, list(f.histogram)] for g in sub.segments for f in g.features]
                if segment_rows:
                    self._db.executemany("INSERT INTO segment_statistics VALUES (?,?,?,?,?,?,?,?,?)", segment_rows)
                if sub.training is not None:
                    t = sub.training
                    self._db.executemany(
                        "INSERT INTO training_statistics VALUES (?,?,?,?,?,?,?,?)",
                        [[sub.submission_id, t.feature_service, t.label, list(t.features), c.label, c.n,
                          list(c.sum_x), list(c.xtx)] for c in t.classes],
                    )
                    self._db.execute("INSERT INTO training_moments VALUES (?,?)", [sub.submission_id, list(t.xtx)])
                if sub.evaluation is not None:
                    e = sub.evaluation
                    self._db.executemany(
                        "INSERT INTO evaluations VALUES (?,?,?,?,?)",
                        [[sub.submission_id, e.model_name, e.model_version, h.label, list(h.counts)] for h in e.classes],
                    )
                if sub.consent is not None:
                    c = sub.consent
                    self._db.execute("INSERT INTO consent_basis VALUES (?,?,?,?)",
                                     [sub.submission_id, c.purpose, c.consent_required, c.snapshot_id])
                for member, c in sorted((member_consent or {}).items()):
                    self._db.execute("INSERT INTO member_consent_basis VALUES (?,?,?,?,?)",
                                     [sub.submission_id, member, c.purpose, c.consent_required, c.snapshot_id])
                if quarantine_why is not None:
                    self._event(QUARANTINE, sub.submission_id, who="centre", why=quarantine_why, at=receipt.accepted_at)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return receipt

    def features(self, period: str | None) -> list[FeatureRow]:
        """Feature statistics to merge: every stored submission's, except those quarantine holds out."""
        sql = ("SELECT s.submission_id, s.region, f.ref, f.count, f.sum, f.sum_sq, f.histogram, s.epsilon_per_query, "
               f"s.period FROM feature_statistics f JOIN submissions s USING (submission_id) "
               f"WHERE s.submission_id NOT IN {_HELD}")
        args: list[object] = []
        if period:
            sql += " AND s.period = ?"
            args.append(period)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY s.accepted_at", args).fetchall()
        return [FeatureRow(r[0], r[1], r[2], int(r[3]), float(r[4]), float(r[5]), tuple(r[6]),
                           None if r[7] is None else float(r[7]), r[8]) for r in rows]


    def latest_training(self, feature_service: str, period: str | None) -> list[TrainingRow]:
        """Each region's most recent accepted training statistics for a feature service.

        One submission per region: two windows of the same region overlap in entities, so adding
        them would count an entity twice and break the sensitivity the noise was scaled for.
        """
        sql = """
            WITH latest AS (
                SELECT s.submission_id, s.region, s.epsilon, s.delta, s.period,
                       row_number() OVER (PARTITION BY s.region ORDER BY s.accepted_at DESC) AS k
                FROM submissions s JOIN (SELECT DISTINCT submission_id FROM training_statistics
                                         WHERE feature_service = ?) t USING (submission_id)
                WHERE (? IS NULL OR s.period = ?) AND s.submission_id NOT IN """ + _HELD + """
            )
            SELECT l.submission_id, l.region, t.features, t.class_label, t.n, t.sum_x, t.xtx, l.epsilon, l.delta,
                   l.period, m.xtx, c.purpose, c.consent_required, c.snapshot_id
            FROM latest l JOIN training_statistics t USING (submission_id)
                 LEFT JOIN training_moments m USING (submission_id)
                 LEFT JOIN consent_basis c USING (submission_id)
            WHERE l.k = 1 ORDER BY l.region, t.class_label"""
        with self._lock:
            rows = self._db.execute(sql, [feature_service, period, period]).fetchall()
            sums = sorted({r[0] for r in rows if "+" in r[1]})
            members = self._db.execute(
                "SELECT submission_id, region, purpose, consent_required, snapshot_id FROM member_consent_basis "
                "WHERE list_contains(?, submission_id)", [sums]).fetchall() if sums else []
        # a submission stored before XᵀX was released once carries one per class: their sum is the same
        legacy: dict[str, np.ndarray] = {}
        for r in rows:
            if r[10] is None:
                legacy[r[0]] = legacy.get(r[0], 0) + np.asarray(r[6], dtype=float)
        by_sum: dict[str, dict[str, ConsentBasis]] = {}
        for m in members:
            by_sum.setdefault(m[0], {})[m[1]] = ConsentBasis(m[2], bool(m[3]), m[4])
        return [TrainingRow(r[0], r[1], tuple(r[2]), int(r[3]), float(r[4]), tuple(r[5]),
                            tuple(r[10]) if r[10] is not None else tuple(map(float, legacy[r[0]])), float(r[7]),
                            float(r[8]), r[9], ConsentBasis(r[11], bool(r[12]), r[13]) if r[11] is not None else None,
                            by_sum.get(r[0], {}))
                for r in rows]

    # --- quarantine (append-only events; a submission's status is its latest) -----------------

    def quarantine(self, submission_id: str, *, why: str, at: datetime | None = None) -> bool:
        """Hold a stored submission back (the centre's check at merge or training time).

        False when it is already held or an operator has decided on it: an operator's acceptance is
        final, the automatic check never overrides it.
        """
        with self._lock:
            self._db.execute("BEGIN TRANSACTION")
            try:
                if self._status(submission_id) is not None or self._receipt(submission_id) is None:
                    self._db.execute("ROLLBACK")
                    return False
                self._event(QUARANTINE, submission_id, who="centre", why=why, at=at or datetime.now(timezone.utc))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return True

    def decide(self, submission_id: str, action: str, *, who: str, why: str,
               at: datetime | None = None) -> QuarantineEvent:
        """An operator's acceptance or rejection of a held submission, on the trail with who and why."""
        assert action in (ACCEPT, REJECT)
        with self._lock:
            self._db.execute("BEGIN TRANSACTION")
            try:
                status = self._status(submission_id)
                if status != QUARANTINE:
                    raise QuarantineNotHeld(submission_id, status)
                event_id = self._event(action, submission_id, who=who, why=why, at=at or datetime.now(timezone.utc))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return next(e for e in self.quarantine_events(submission_id) if e.event_id == event_id)

    def quarantine_status(self, submission_id: str) -> str | None:
        """The latest quarantine action on a submission; None when it was never held."""
        with self._lock:
            return self._status(submission_id)

    def quarantine_events(self, submission_id: str | None = None) -> list[QuarantineEvent]:
        sql = """
            SELECT q.event_id, q.happened_at, q.who, q.action, q.submission_id, s.region, s.period,
                   CASE WHEN EXISTS (SELECT 1 FROM training_statistics t WHERE t.submission_id = q.submission_id)
                        THEN 'training' ELSE 'features' END, q.why
            FROM quarantine_events q JOIN submissions s USING (submission_id)
            WHERE (? IS NULL OR q.submission_id = ?) ORDER BY q.event_id"""
        with self._lock:
            rows = self._db.execute(sql, [submission_id, submission_id]).fetchall()
        return [QuarantineEvent(*r) for r in rows]

    def region_overview(self, period: str) -> list[tuple[str, str, int, int, float]]:
        """Per region and kind (the id's middle part: stats, training, evaluation) of a period: the
        submissions stored, how many quarantine holds out now, and the ε charged."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT region, split_part(submission_id, '-', 2), count(*), "
                f"count(*) FILTER (WHERE submission_id IN {_HELD}), sum(epsilon) FROM submissions "
                "WHERE period = ? GROUP BY 1, 2 ORDER BY 1, 2", [period]).fetchall()
        return [(str(r), str(k), int(n), int(h), float(e)) for r, k, n, h, e in rows]

    def held(self, period: str | None) -> list[str]:
        """Ids of the submissions quarantine holds out now (held or rejected), of a period or all."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT submission_id FROM submissions WHERE submission_id IN {_HELD} AND (? IS NULL OR period = ?) "
                "ORDER BY accepted_at", [period, period]).fetchall()
        return [r[0] for r in rows]

    def operator_accepted(self) -> set[str]:
        """Submissions an operator released from quarantine: the automatic check leaves them be."""
        with self._lock:
            rows = self._db.execute(
                "SELECT submission_id FROM (SELECT submission_id, action, row_number() OVER (PARTITION BY submission_id "
                "ORDER BY event_id DESC) AS k FROM quarantine_events) WHERE k = 1 AND action = 'accept'").fetchall()
        return {r[0] for r in rows}

    def _status(self, submission_id: str) -> str | None:
        row = self._db.execute("SELECT action FROM quarantine_events WHERE submission_id=? ORDER BY event_id DESC LIMIT 1",
                               [submission_id]).fetchone()
        return None if row is None else str(row[0])

    def _event(self, action: str, submission_id: str, *, who: str, why: str, at: datetime) -> int:
        row = self._db.execute("INSERT INTO quarantine_events (happened_at, who, action, submission_id, why) VALUES (?,?,?,?,?) "
                               "RETURNING event_id", [at, who, action, submission_id, why]).fetchone()
        return int(_aggregate(row)[0])

    def segments(self, submission_id: str) -> list[tuple[str, str, str, int]]:
        """(dimension, value, ref, noisy count) of a submission's segment statistics."""
        with self._lock:
            return self._db.execute(
                "SELECT dimension, value, ref, count FROM segment_statistics WHERE submission_id=? "
                "ORDER BY dimension, value, ref", [submission_id]).fetchall()

    def evaluation(self, submission_id: str) -> tuple[str, int, dict[int, list[int]]] | None:
        with self._lock:
            rows = self._db.execute(
                "SELECT model_name, model_version, class_label, counts FROM evaluations WHERE submission_id=?",
                [submission_id],
            ).fetchall()
        if not rows:
            return None
        return rows[0][0], int(rows[0][1]), {int(r[2]): list(r[3]) for r in rows}


class AlreadyStored(Exception):
    """A submission with this id was stored by an earlier (or concurrent) call: its receipt."""

    def __init__(self, receipt: StoredReceipt) -> None:
        super().__init__(receipt.submission_id)
        self.receipt = receipt


class QuarantineNotHeld(Exception):
    """Only a held submission can be accepted or rejected: this one is unknown, never held or decided."""

    def __init__(self, submission_id: str, status: str | None) -> None:
        super().__init__(submission_id)
        self.submission_id = submission_id
        self.status = status


class BudgetRefused(Exception):
    def __init__(self, spent: float, spent_delta: float = 0.0) -> None:
        super().__init__(spent)
        self.spent = spent
        self.spent_delta = spent_delta
