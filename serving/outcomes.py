"""Late outcomes joined, point in time, to the predictions they judge (`fedstore region outcomes`).

An outcome (entity, outcome time, label) judges the entity's last logged prediction *before* the
outcome, if that prediction lies within ``window`` of it (a chargeback weeks later judges the score
the entity had then, not one made after the fact). The prediction's served model, at its stage, and
each of its shadow models get a row of ``regions/outcomes.py``'s table. Everything stays in the
region: the prediction log, the outcome file and the judged table.

Ingesting is idempotent: an outcome already judged (same entity and outcome time) is replaced by the
newer file's row, so a file sent twice counts once and a corrected label wins.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fedstore.regions.errors import RegionError
from fedstore.regions.outcomes import SCHEMA, read_judged, write_judged
from fedstore.serving.prediction_log import read_predictions


@dataclass(frozen=True)
class OutcomeSummary:
    received: int  # outcomes in the file
    judged: int  # outcomes matched to a prediction within the window
    unmatched: int  # no prediction of the entity within the window before the outcome
    replaced: int  # outcomes already in the table (same entity and time), replaced by this file's
    rows: int  # rows the judged table holds now (one per outcome and model version)


def read_outcome_file(path: Path) -> pa.Table:
    """The file's entity, outcome_at, label columns, checked: one-line RegionError on a breach."""
    try:
        raw = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise RegionError(f"outcomes: cannot read {path} as Parquet ({e})") from None
    missing = [c for c in ("entity", "outcome_at", "label") if c not in raw.column_names]
    if missing:
        raise RegionError(f"outcomes: {path.name} lacks column {', '.join(missing)} (needs entity, outcome_at, label)")
    for c in ("entity", "outcome_at", "label"):
        if raw.column(c).null_count:
            raise RegionError(f"outcomes: {path.name} has {raw.column(c).null_count:,} null {c} values")
    at = raw.column("outcome_at")
    if not pa.types.is_timestamp(at.type):
        raise RegionError(f"outcomes: outcome_at must be a timestamp, found {at.type}")
    label = raw.column("label")
    if not (pa.types.is_integer(label.type) or pa.types.is_boolean(label.type)):
        raise RegionError(f"outcomes: label must be 0 or 1 (integer or boolean), found {label.type}")
    label = pc.cast(label, pa.int64())
    bad = pc.sum(pc.invert(pc.is_in(label, pa.array([0, 1])))).as_py()
    if bad:
        raise RegionError(f"outcomes: {bad:,} labels are neither 0 nor 1")
    if at.type.tz is None:  # a naive time is read as UTC, as the sources' are
        at = pc.assume_timezone(at, "UTC")
    return pa.table({"entity": pc.cast(raw.column("entity"), pa.string()),
                     "outcome_at": pc.cast(at, pa.timestamp("us", tz="UTC")), "label": label})


def judge(outcomes: pa.Table, predictions: pa.Table, window: timedelta) -> pa.Table:
    """Each outcome with the entity's last prediction before it (within ``window``), one row per
    model version scoring in that prediction; outcomes without one are left out."""
    con = duckdb.connect()
    try:
        con.register("o", outcomes)
        con.register("p", predictions.select(["prediction_id", "at", "entity", "model", "version", "stage", "score",
                                              "shadow"]))
        # ASOF: per outcome the latest prediction strictly before it (a score made after the outcome
        # could have seen it); the window is checked after, so an older one never stands in
        joined = con.sql(f"""
            WITH j AS (
                SELECT o.entity, o.outcome_at, o.label, p.prediction_id, p.at AS predicted_at,
                       p.model, p.version, p.stage, p.score, p.shadow
                FROM o ASOF JOIN p ON o.entity = p.entity AND o.outcome_at > p.at
                WHERE p.at >= o.outcome_at - INTERVAL {int(window.total_seconds())} SECOND
            )
            SELECT entity, outcome_at, label, prediction_id, predicted_at, model, version, stage, score
            FROM j WHERE model <> '' AND score IS NOT NULL
            UNION ALL
            SELECT entity, outcome_at, label, prediction_id, predicted_at, s.model, s.version, 'shadow', s.score
            FROM (SELECT *, UNNEST(shadow) AS s FROM j) WHERE s.score IS NOT NULL
            ORDER BY outcome_at, entity, stage
        """).to_arrow_table()
    finally:
        con.close()
    if isinstance(joined, pa.RecordBatchReader):
        joined = joined.read_all()
    return joined.cast(SCHEMA)


def ingest_outcomes(data_dir: Path, path: Path, *, window: timedelta) -> OutcomeSummary:
    if window <= timedelta(0):
        raise RegionError("outcomes: the window must be positive")
    outcomes = read_outcome_file(path)
    judged = judge(outcomes, read_predictions(data_dir), window)
    previous = read_judged(data_dir)
    new_keys = pa.table({"entity": outcomes["entity"], "outcome_at": outcomes["outcome_at"]})
    con = duckdb.connect()
    try:
        con.register("prev", previous)
        con.register("k", new_keys)
        kept = con.sql("SELECT prev.* FROM prev ANTI JOIN k USING (entity, outcome_at)").to_arrow_table()
        replaced = con.sql("SELECT COUNT(*) FROM (SELECT DISTINCT entity, outcome_at FROM prev "
                               "SEMI JOIN k USING (entity, outcome_at))").fetchall()[0][0]
        con.register("judged", judged)
        matched = con.sql("SELECT COUNT(DISTINCT (entity, outcome_at)) FROM judged").fetchall()[0][0] \
            if judged.num_rows else 0
    finally:
        con.close()
    if isinstance(kept, pa.RecordBatchReader):
        kept = kept.read_all()
    table = pa.concat_tables([kept.cast(SCHEMA), judged])
    write_judged(data_dir, table)
    return OutcomeSummary(received=outcomes.num_rows, judged=int(matched), unmatched=outcomes.num_rows - int(matched),
                          replaced=int(replaced), rows=table.num_rows)


__all__ = ["OutcomeSummary", "ingest_outcomes", "judge", "read_outcome_file"]
