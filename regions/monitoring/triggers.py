"""Retraining triggers: drift that persists outside seasonal windows, recorded durably, then handed
to the operator's hook. One-day blips do not trigger; a trigger is recorded once per episode.

Score monitoring's alerts (``score_report.py``) take the same path and table; each entry carries its
``kind`` (the event the hook is told: a feature's ``retraining_trigger``, ``score_drift``,
``shadow_disagreement``), so a reader lists score alerts as score alerts."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from contextlib import closing
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from fedstore.regions.monitoring.drift import DRIFT, OK, DriftJudge, Verdict

RETRAINING = "retraining_trigger"
# a file written before entries had a kind: its score alerts are known by their refs' prefixes
# (``score_report.drift_ref`` / ``disagreement_ref``), the rest were features' triggers
_KIND_OF_OLD_ROWS = ("CASE WHEN ref LIKE 'scores:%' THEN 'score_drift' WHEN ref LIKE 'shadow:%' "
                     f"THEN 'shadow_disagreement' ELSE '{RETRAINING}' END")


@dataclass(frozen=True)
class Trigger:
    region: str
    ref: str
    first_day: date
    last_day: date
    days: int
    scores: tuple[float, ...]
    new: bool  # first time this episode was recorded
    hook: str  # what the operator's hook said, or "" when none is configured


def persistent_drift(judge: DriftJudge, ref: str, day: date, persist_days: int, lookback: int = 60) -> list[Verdict]:
    """The run of drift verdicts ending at ``day``, counting only judged days outside festivals.

    Gap and thin days neither count nor break the run; an OK day (or a seasonal one) ends it.
    """
    run: list[Verdict] = []
    d = day
    for _ in range(lookback):
        v = judge.judge(ref, d)
        if v.verdict == DRIFT and v.seasonal is None:
            run.append(v)
        elif v.verdict == OK or v.seasonal is not None:
            break
        d = date.fromordinal(d.toordinal() - 1)
    return list(reversed(run)) if len(run) >= persist_days else []


class TriggerLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(path)) as db, db:
            db.execute("CREATE TABLE IF NOT EXISTS triggers (region TEXT NOT NULL, ref TEXT NOT NULL, first_day TEXT NOT NULL,"
                       " last_day TEXT NOT NULL, days INTEGER NOT NULL, scores TEXT NOT NULL, recorded_at TEXT NOT NULL,"
                       f" hook TEXT NOT NULL DEFAULT '', kind TEXT NOT NULL DEFAULT '{RETRAINING}',"
                       " PRIMARY KEY (region, ref, first_day))")
            if "kind" not in table_columns(db):  # written before entries had a kind: given theirs, once
                db.execute(f"ALTER TABLE triggers ADD COLUMN kind TEXT NOT NULL DEFAULT '{RETRAINING}'")
                db.execute(f"UPDATE triggers SET kind = {_KIND_OF_OLD_ROWS}")

    def record(self, region: str, run: list[Verdict], command: tuple[str, ...] = (),
               event: str = RETRAINING) -> Trigger:
        ref, first, last = run[0].ref, run[0].day, run[-1].day
        scores = tuple(round(v.psi or 0.0, 4) for v in run)
        with closing(sqlite3.connect(self.path)) as db, db:
            cur = db.execute("INSERT OR IGNORE INTO triggers (region, ref, first_day, last_day, days, scores, recorded_at,"
                             " hook, kind) VALUES (?,?,?,?,?,?,?,'',?)",
                             (region, ref, first.isoformat(), last.isoformat(), len(run), json.dumps(scores),
                              datetime.now(UTC).isoformat(), event))
            new = cur.rowcount == 1
            if not new:  # the episode goes on: extend it
                db.execute("UPDATE triggers SET last_day=?, days=?, scores=? WHERE region=? AND ref=? AND first_day=?",
                           (last.isoformat(), len(run), json.dumps(scores), region, ref, first.isoformat()))
        trigger = Trigger(region, ref, first, last, len(run), scores, new, "")
        if new and command:  # recorded first: a failing hook never loses the trigger
            outcome = _run_hook(command, trigger, event)
            with closing(sqlite3.connect(self.path)) as db, db:
                db.execute("UPDATE triggers SET hook=? WHERE region=? AND ref=? AND first_day=?",
                           (outcome, region, ref, first.isoformat()))
            trigger = Trigger(**{**asdict(trigger), "hook": outcome})
        return trigger

    def all(self) -> list[tuple]:
        with closing(sqlite3.connect(self.path)) as db:
            return db.execute("SELECT region, ref, first_day, last_day, days, hook FROM triggers ORDER BY first_day").fetchall()


def table_columns(db: sqlite3.Connection) -> set[str]:
    return {row[1] for row in db.execute("PRAGMA table_info(triggers)")}


def kind_column(db: sqlite3.Connection) -> str:
    """The SQL for an entry's kind in ``db`` (a read-only reader may meet a file without the column)."""
    return "kind" if "kind" in table_columns(db) else _KIND_OF_OLD_ROWS


def _run_hook(command: tuple[str, ...], trigger: Trigger, event: str) -> str:
    payload = json.dumps({**asdict(trigger), "first_day": trigger.first_day.isoformat(),
                          "last_day": trigger.last_day.isoformat(), "event": event})
    try:
        done = subprocess.run(list(command), input=payload, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"hook failed: {e}"
    return "hook ok" if done.returncode == 0 else f"hook exited {done.returncode}: {done.stderr.strip()[:200]}"
