"""The registry's durable store (SQLite, one transaction per change, an audit row for each).

"At most one version per stage per region" is a unique index, not only a check, so even a writer
that bypassed this module could not break it; writers serialise on ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import builtins  # ModelRegistry.list shadows the type in the class's annotations
import json
import math
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from pathlib import Path

from fedstore.aggregator.errors import NotFound, PolicyRefused, Rejected
from fedstore.aggregator.registry.model import (
    Deployment,
    DeploymentEvent,
    Evidence,
    GateFinding,
    ModelCandidate,
    ModelVersion,
    ReadinessItem,
    StageAssignment,
)
from fedstore.aggregator.registry.policy import StageState, check_gates, check_promotion, degraded, gate_findings
from fedstore.aggregator.training.metrics import AucEstimate
from fedstore.federation.deployment_policy import READINESS_ITEMS
from fedstore.aggregator.training.influence import RegionInfluence
from fedstore.federation import FederationConfig
from fedstore.federation.errors import ConfigError
from fedstore.federation.consent import ConsentBasis
from fedstore.federation.traffic import STAGES, shares

_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")  # matched whole: "$" would let a final newline through
_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    name TEXT NOT NULL, version INTEGER NOT NULL, strategy TEXT NOT NULL, feature_service TEXT NOT NULL,
    features TEXT NOT NULL, schema_hash TEXT NOT NULL, parameters TEXT NOT NULL, submissions TEXT NOT NULL,
    epsilon_by_region TEXT NOT NULL, tags TEXT NOT NULL, registered_by TEXT NOT NULL, registered_at TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS evaluations (
    name TEXT NOT NULL, version INTEGER NOT NULL, region TEXT NOT NULL, metrics TEXT NOT NULL,
    submission_id TEXT NOT NULL PRIMARY KEY, at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS assignments (
    region TEXT NOT NULL, stage TEXT NOT NULL, name TEXT NOT NULL, version INTEGER NOT NULL,
    since TEXT NOT NULL, until TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS one_version_per_stage ON assignments (region, stage) WHERE until IS NULL;
CREATE TABLE IF NOT EXISTS evidence (
    name TEXT NOT NULL, version INTEGER NOT NULL, region TEXT NOT NULL, stage TEXT NOT NULL, segment TEXT NOT NULL,
    auc REAL, auc_se REAL, auc_lower REAL, auc_upper REAL, examples REAL NOT NULL, positives REAL NOT NULL,
    submission_id TEXT NOT NULL, at TEXT NOT NULL, calibration_error REAL, calibration_se REAL,
    PRIMARY KEY (submission_id, segment)
);
CREATE TABLE IF NOT EXISTS readiness (
    name TEXT NOT NULL, version INTEGER NOT NULL, item TEXT NOT NULL, value TEXT NOT NULL, who TEXT NOT NULL,
    at TEXT NOT NULL, PRIMARY KEY (name, version, item)
);
CREATE TABLE IF NOT EXISTS audit (
    event_id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, who TEXT NOT NULL, action TEXT NOT NULL,
    region TEXT NOT NULL, stage TEXT NOT NULL, name TEXT NOT NULL, version INTEGER NOT NULL,
    from_stage TEXT NOT NULL, why TEXT NOT NULL, outcome TEXT NOT NULL
);
"""


class ModelRegistry:
    def __init__(self, path: Path, config: FederationConfig,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.path = path
        self.config = config
        self._clock = clock  # injectable: the time gates are tested with a clock of their own
        path.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(path)) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            # a registry written before influence was kept: its versions have none
            if "influence" not in {r[1] for r in db.execute("PRAGMA table_info(models)")}:
                db.execute("ALTER TABLE models ADD COLUMN influence TEXT NOT NULL DEFAULT '[]'")
                db.commit()
            # ... and before the consent basis was: its versions rest on none recorded
            if "consent_basis" not in {r[1] for r in db.execute("PRAGMA table_info(models)")}:
                db.execute("ALTER TABLE models ADD COLUMN consent_basis TEXT NOT NULL DEFAULT '{}'")
                db.commit()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        try:
            db.execute("BEGIN IMMEDIATE")  # one writer at a time: check and change together
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        finally:
            db.close()

    # --- versions ---------------------------------------------------------------------------

    def register(self, candidate: ModelCandidate, *, who: str, reuse: bool = False) -> ModelVersion:
        """The next version of the candidate's name; with ``reuse``, the version already registered with
        the same strategy, lineage and parameters, if any (training again on the same statistics)."""
        if not _NAME.fullmatch(candidate.name):
            raise Rejected(f"model name {candidate.name!r}: lower-case letters, digits and _ only", rule="model_name")
        for code in candidate.epsilon_by_region:
            for member in code.split("+"):  # a secure-aggregation sum: its survivors, "A+B+C"
                self.region_code(member)
        now = self._clock()
        with self._write() as db:
            if reuse:  # checked in the same transaction as the insert: two trainings register one version
                same = db.execute(
                    "SELECT MAX(version) FROM models WHERE name=? AND strategy=? AND submissions=? AND parameters=?",
                    (candidate.name, candidate.strategy, json.dumps(list(candidate.submissions)),
                     json.dumps(dict(candidate.parameters)))).fetchone()[0]
                if same is not None:
                    return self._get(db, candidate.name, same)
            (latest,) = db.execute("SELECT COALESCE(MAX(version), 0) FROM models WHERE name=?",
                                   (candidate.name,)).fetchone()
            db.execute(
                "INSERT INTO models (name, version, strategy, feature_service, features, schema_hash, parameters, "
                "submissions, epsilon_by_region, tags, registered_by, registered_at, influence, consent_basis) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (candidate.name, latest + 1, candidate.strategy, candidate.feature_service,
                 json.dumps(list(candidate.features)), candidate.schema_hash, json.dumps(dict(candidate.parameters)),
                 json.dumps(list(candidate.submissions)), json.dumps(dict(candidate.epsilon_by_region)),
                 json.dumps(dict(candidate.tags)), who, now.isoformat(),
                 json.dumps([i.to_dict() for i in candidate.influence]),
                 json.dumps({r: b.as_dict() for r, b in candidate.consent_basis.items()})),
            )
        return self.get(candidate.name, latest + 1)

    def record_evaluation(self, name: str, version: int, region: str, metrics: Mapping[str, float], *,
                          submission_id: str) -> bool:
        """Record a region's evaluation once per submission id; False when it was already there."""
        self.get(name, version)
        self.region_code(region)
        with self._write() as db:
            cur = db.execute("INSERT OR IGNORE INTO evaluations VALUES (?,?,?,?,?,?)",
                             (name, version, region, json.dumps(dict(metrics)), submission_id, self._clock().isoformat()))
            return cur.rowcount == 1

    def get(self, name: str, version: int) -> ModelVersion:
        with closing(sqlite3.connect(self.path)) as db:
            return self._get(db, name, version)

    def _get(self, db: sqlite3.Connection, name: str, version: int) -> ModelVersion:
        row = db.execute("SELECT * FROM models WHERE name=? AND version=?", (name, version)).fetchone()
        if row is None:
            known = db.execute("SELECT MAX(version) FROM models WHERE name=?", (name,)).fetchone()[0]
            raise NotFound(f"no model {name!r} v{version}" + (f"; latest is v{known}" if known else
                                                               "; no model of that name is registered"),
                           reason="UNKNOWN_MODEL_VERSION")
        evals = db.execute("SELECT region, metrics, submission_id FROM evaluations WHERE name=? AND version=?"
                           " ORDER BY at", (name, version)).fetchall()
        evidence = _latest_evidence(db, name, version)
        ready = db.execute("SELECT item, value, who, at FROM readiness WHERE name=? AND version=? ORDER BY item",
                           (name, version)).fetchall()
        v = self._version(row, evals)
        return ModelVersion(v.candidate, v.version, v.jurisdictions, v.registered_by, v.registered_at, v.metrics,
                            v.evaluation_submissions, evidence,
                            tuple(ReadinessItem(i, val, w, datetime.fromisoformat(a)) for i, val, w, a in ready))

    def list(self, name: str | None = None) -> list[ModelVersion]:
        with closing(sqlite3.connect(self.path)) as db:
            rows = db.execute("SELECT name, version FROM models WHERE ? IS NULL OR name=? ORDER BY name, version",
                              (name, name)).fetchall()
        return [self.get(n, v) for n, v in rows]

    def _version(self, row: tuple, evals: builtins.list[tuple]) -> ModelVersion:
        (name, version, strategy, service, features, schema_hash, parameters, submissions, eps, tags, who, at,
         influence, consent) = row
        candidate = ModelCandidate(name, strategy, service, tuple(json.loads(features)), schema_hash,
                                   json.loads(parameters), tuple(json.loads(submissions)), json.loads(eps),
                                   json.loads(tags), tuple(RegionInfluence.from_dict(i) for i in json.loads(influence)),
                                   {r: ConsentBasis.from_dict(b) for r, b in json.loads(consent).items()})
        # a secure-aggregation sum is stored as the region "A+B+C" (its survivors): every one of them
        regions = [self.config.region(c) for c in sorted({c for key in candidate.epsilon_by_region
                                                          for c in key.split("+")})]
        return ModelVersion(
            candidate=candidate, version=version,
            jurisdictions=tuple(f"{r.code} ({r.jurisdiction}, {r.law})" for r in regions),
            registered_by=who, registered_at=datetime.fromisoformat(at),
            metrics={r: json.loads(m) for r, m, _ in evals}, evaluation_submissions={r: s for r, _, s in evals},
        )

    # --- stages -----------------------------------------------------------------------------

    def promote(self, name: str, version: int, region: str, stage: str, *, who: str, why: str) -> DeploymentEvent:
        region = self.region_code(region)
        _stage(stage)
        model = self.get(name, version)
        with self._write() as db:
            current = db.execute("SELECT stage FROM assignments WHERE region=? AND name=? AND version=? AND until IS NULL",
                                 (region, name, version)).fetchone()
            current_stage = current[0] if current else None
            if current_stage == stage:
                raise Rejected(f"{name} v{version} already serves {stage} in {region}", reason="STAGE_ALREADY_SERVED")
            occupant = db.execute("SELECT name, version FROM assignments WHERE region=? AND stage=? AND until IS NULL",
                                  (region, stage)).fetchone()
            was_in_shadow = db.execute(
                "SELECT 1 FROM assignments WHERE region=? AND stage='shadow' AND name=? AND version=?",
                (region, name, version)).fetchone() is not None
            refusal: PolicyRefused | None
            policy = self.config.policy(region)
            try:
                check_promotion(model, region, stage, policy, current_stage=current_stage,
                                was_in_shadow=was_in_shadow, occupant=tuple(occupant) if occupant else None)
                check_gates(model, region, stage, policy.gates, current_stage=current_stage,
                            state=self._stage_state(db, model, region, current_stage))
            except PolicyRefused as e:
                refusal = e
            else:
                refusal = None
                now = self._clock().isoformat()
                # a version serves one stage per region: moving it up vacates where it was
                db.execute("UPDATE assignments SET until=? WHERE region=? AND until IS NULL AND "
                           "((name=? AND version=?) OR stage=?)", (now, region, name, version, stage))
                db.execute("INSERT INTO assignments VALUES (?,?,?,?,?,NULL)", (region, stage, name, version, now))
            event = self._audit(db, who, "promote", region, stage, name, version, current_stage or "", why,
                                f"refused: {refusal}" if refusal else "applied")
        if refusal:
            raise refusal  # the refusal is on the audit trail already
        return event

    def _stage_state(self, db: sqlite3.Connection, model: ModelVersion, region: str,
                     current_stage: str | None) -> StageState:
        since = db.execute("SELECT since FROM assignments WHERE region=? AND name=? AND version=? AND until IS NULL",
                           (region, model.name, model.version)).fetchone()
        full = db.execute("SELECT name, version FROM assignments WHERE region=? AND stage='full' AND until IS NULL",
                          (region,)).fetchone()
        incumbent = tuple(full) if full and tuple(full) != (model.name, model.version) else None
        ready = db.execute("SELECT item FROM readiness WHERE name=? AND version=?", (model.name, model.version))
        return StageState(
            since=datetime.fromisoformat(since[0]) if since else None, now=self._clock(),
            evidence=_latest_evidence(db, model.name, model.version, region, current_stage) if current_stage else (),
            incumbent=(incumbent[0], incumbent[1]) if incumbent else None,
            incumbent_evidence=_latest_evidence(db, incumbent[0], incumbent[1], region, "full") if incumbent else (),
            readiness=frozenset(r[0] for r in ready))

    def gates(self, name: str, version: int) -> builtins.list[GateFinding]:
        """Each evidence gate for the version's next promotion, in every region where it serves below
        full (what `registry show` prints; every region has the time gate)."""
        model = self.get(name, version)
        out: builtins.list[GateFinding] = []
        with closing(sqlite3.connect(self.path)) as db:
            rows = db.execute("SELECT region, stage FROM assignments WHERE name=? AND version=? AND until IS NULL "
                              "ORDER BY region", (name, version)).fetchall()
            for region, stage in rows:
                gates = self.config.policy(region).gates
                if stage == "full":
                    continue
                target = STAGES[STAGES.index(stage) + 1]
                out += gate_findings(model, region, target, gates, current_stage=stage,
                                     state=self._stage_state(db, model, region, stage))
        return out

    def record_evidence(self, name: str, version: int, region: str, stage: str,
                        parts: Mapping[str, AucEstimate], *, submission_id: str) -> bool:
        """A region's outcome evidence (segment "" = the whole region), once per submission id; False when
        it was already there."""
        self.get(name, version)
        region = self.region_code(region)
        _stage(stage)
        at = self._clock().isoformat()
        with self._write() as db:
            if db.execute("SELECT 1 FROM evidence WHERE submission_id=?", (submission_id,)).fetchone():
                return False
            db.executemany("INSERT INTO evidence VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", [
                (name, version, region, stage, segment, *_finite(e.auc, e.se, e.lower, e.upper), e.examples,
                 e.positives, submission_id, at, *_finite(e.calibration_error, e.calibration_se))
                for segment, e in parts.items()])
        return True

    def record_readiness(self, name: str, version: int, items: Mapping[str, str], *, who: str) -> ModelVersion:
        """Record (or replace) items of the version's production-readiness checklist."""
        self.get(name, version)
        unknown = sorted(set(items) - set(READINESS_ITEMS))
        if unknown:
            raise Rejected(f"{unknown[0][:40]!r} is not a checklist item ({', '.join(READINESS_ITEMS)})", rule="readiness")
        empty = sorted(k for k, v in items.items() if not v.strip())
        if empty or not items:
            raise Rejected(f"{'item ' + empty[0] + ' is empty' if empty else 'no item given'}", rule="readiness")
        at = self._clock().isoformat()
        with self._write() as db:
            db.executemany("INSERT OR REPLACE INTO readiness VALUES (?,?,?,?,?,?)",
                           [(name, version, k, v, who, at) for k, v in sorted(items.items())])
        return self.get(name, version)

    def follow_evidence(self, region: str) -> DeploymentEvent | None:
        """Roll back a canary of ``region`` whose evidence is worse than the incumbent's beyond the
        margin (the region's gates, auto_rollback): the rollback, with the evidence as its reason, or None."""
        region = self.region_code(region)
        gates = self.config.policy(region).gates
        if not gates.auto_rollback:
            return None
        with closing(sqlite3.connect(self.path)) as db:
            rows: dict[str, tuple[str, int]] = {st: (n, v) for st, n, v in db.execute(
                "SELECT stage, name, version FROM assignments WHERE region=? AND until IS NULL", (region,))}
            if "full" not in rows:
                return None
            incumbent = _latest_evidence(db, rows["full"][0], rows["full"][1], region, "full")
            for stage in ("canary_5", "canary_25"):
                if stage not in rows:
                    continue
                bad = degraded(_latest_evidence(db, rows[stage][0], rows[stage][1], region, stage), incumbent, gates)
                if bad is None:
                    continue
                inc = next(e for e in incumbent if e.segment == bad.segment)
                why = (f"evidence: AUC {bad.auc:.3f} vs {inc.auc:.3f} for {rows['full'][0]} v{rows['full'][1]} "
                       f"in {bad.where} (submission {bad.submission_id[:40]}), worse beyond the margin {gates.margin:g}")
                return self.rollback(region, stage, who="centre:evidence", why=why[:280])
        return None

    def rollback(self, region: str, stage: str, *, who: str, why: str) -> DeploymentEvent:
        region = self.region_code(region)
        _stage(stage)
        with self._write() as db:
            current = db.execute("SELECT rowid, name, version FROM assignments WHERE region=? AND stage=? AND until IS NULL",
                                 (region, stage)).fetchone()
            if current is None:
                raise Rejected(f"nothing serves {stage} in {region}: there is nothing to roll back",
                               reason="NOTHING_TO_ROLL_BACK")
            now = self._clock().isoformat()
            db.execute("UPDATE assignments SET until=? WHERE rowid=?", (now, current[0]))
            # what served this stage before, if it is not serving elsewhere in the region now and was
            # not itself rolled back from this stage since it started there (else a second rollback
            # would bounce forward to the version the first one removed)
            previous = db.execute(
                "SELECT a.name, a.version FROM assignments a WHERE a.region=? AND a.stage=? AND a.rowid < ? "
                "AND NOT (a.name=? AND a.version=?) AND NOT EXISTS (SELECT 1 FROM assignments b WHERE b.region=a.region AND b.name=a.name "
                "AND b.version=a.version AND b.until IS NULL) AND NOT EXISTS (SELECT 1 FROM audit e WHERE e.action='rollback' "
                "AND e.outcome LIKE 'applied%' AND e.region=a.region AND e.stage=a.stage AND e.name=a.name "
                "AND e.version=a.version AND e.at >= a.since) ORDER BY a.rowid DESC LIMIT 1",
                (region, stage, current[0], current[1], current[2])).fetchone()
            if previous:
                db.execute("INSERT INTO assignments VALUES (?,?,?,?,?,NULL)", (region, stage, *previous, now))
            restored = f"restored {previous[0]} v{previous[1]}" if previous else "stage now empty"
            return self._audit(db, who, "rollback", region, stage, current[1], current[2], stage, why,
                               f"applied: {restored}")

    def record_refusal(self, action: str, region: str, stage: str, name: str, version: int, *, who: str, why: str,
                       reason: str) -> DeploymentEvent:
        """Put a change refused before it reached the store (e.g. a caller not allowed in the region) on the trail."""
        region = self.region_code(region)
        with self._write() as db:
            return self._audit(db, who, action, region, stage, name, version, "", why, f"refused: {reason}")

    def deployment(self, region: str) -> Deployment:
        region = self.region_code(region)
        with closing(sqlite3.connect(self.path)) as db:
            rows = db.execute("SELECT stage, name, version FROM assignments WHERE region=? AND until IS NULL",
                              (region,)).fetchall()
        share = shares({r[0] for r in rows})
        order = {s: i for i, s in enumerate(STAGES)}
        return Deployment(region, tuple(StageAssignment(s, n, v, share[s])
                                        for s, n, v in sorted(rows, key=lambda r: order[r[0]])))

    def audit(self, region: str | None = None, name: str | None = None) -> builtins.list[DeploymentEvent]:
        if region:
            region = self.region_code(region)
        with closing(sqlite3.connect(self.path)) as db:
            rows = db.execute("SELECT * FROM audit WHERE (? IS NULL OR region=?) AND (? IS NULL OR name=?) "
                              "ORDER BY event_id", (region, region, name, name)).fetchall()
        return [_event(r) for r in rows]

    def _audit(self, db: sqlite3.Connection, *values: object) -> DeploymentEvent:
        at = self._clock().isoformat()
        cur = db.execute("INSERT INTO audit (at, who, action, region, stage, name, version, from_stage, why, outcome) "
                         "VALUES (?,?,?,?,?,?,?,?,?,?)", (at, *values))
        return _event(db.execute("SELECT * FROM audit WHERE event_id=?", (cur.lastrowid,)).fetchone())

    def region_code(self, code: str) -> str:
        """The federation's code for region ``code``; Rejected (INVALID_ARGUMENT) when it has no such region."""
        try:
            return self.config.region(code).code
        except ConfigError as e:
            raise Rejected(str(e), reason="UNKNOWN_REGION") from None


def _finite(*values: float) -> tuple[float | None, ...]:
    return tuple(v if math.isfinite(v) else None for v in values)  # SQLite keeps no NaN


def _stage(stage: str) -> None:
    if stage not in STAGES:
        raise Rejected(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}", rule="stage")


def _event(r: tuple) -> DeploymentEvent:
    return DeploymentEvent(r[0], datetime.fromisoformat(r[1]), *r[2:])


def _evidence_row(r: tuple) -> Evidence:
    region, stage, segment, auc, se, lower, upper, examples, positives, submission_id, at, ece, ece_se = r
    nan = float("nan")
    return Evidence(region, stage, segment, nan if auc is None else auc, nan if se is None else se,
                    nan if lower is None else lower, nan if upper is None else upper, examples, positives,
                    submission_id, datetime.fromisoformat(at), nan if ece is None else ece,
                    nan if ece_se is None else ece_se)


def _latest_evidence(db: sqlite3.Connection, name: str, version: int, region: str | None = None,
                     stage: str | None = None) -> tuple[Evidence, ...]:
    """The latest evidence per region, stage and segment (a later release replaces an earlier one)."""
    rows = db.execute(
        "SELECT region, stage, segment, auc, auc_se, auc_lower, auc_upper, examples, positives, submission_id, at, "
        "calibration_error, calibration_se FROM evidence e WHERE name=? AND version=? AND (? IS NULL OR region=?) AND (? IS NULL OR stage=?) "
        "AND rowid = (SELECT MAX(rowid) FROM evidence f WHERE f.name=e.name AND f.version=e.version "
        "AND f.region=e.region AND f.stage=e.stage AND f.segment=e.segment) ORDER BY region, stage, segment",
        (name, version, region, region, stage, stage)).fetchall()
    return tuple(_evidence_row(r) for r in rows)
