"""Reads the latest row per entity in a window from a view's source, as a stream of Arrow batches.

Parquet sources (a file, or a glob of partition files) are read by DuckDB directly (the region's
offline engine) with Feast's semantics: event time within [start, end] inclusive, one row per
entity, latest event time first, then latest created time. With ``created_since`` (an incremental
job), rows created since then are read too whatever their event time (up to ``end``): rows that
arrived late, long after their event. Streaming batches keep memory bounded whatever the table size. Any other kind of
source goes through Feast's own offline store (``pull_latest_from_table_or_query``). Either way the
region's erasure list (``erasure_list.py``) is applied: an erased entity's rows are never read out.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureView, FileSource
from feast.repo_config import RepoConfig

from fedstore.regions.errors import InvalidSource
from fedstore.regions.store.definitions import batch_source
from fedstore.regions.store.erasure_list import ErasedKeys, read_erased
from fedstore.regions.store.quarantine import Quarantine, contract_sql, earlier_files, unseen_sql, write_rejected
from fedstore.regions.store.source_files import missing_source_hint, source_files


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def read_latest(
    fv: FeatureView,
    start: datetime,
    end: datetime,
    *,
    config: RepoConfig,
    offline_store: Any,
    batch_rows: int,
    created_since: datetime | None = None,
    quarantine: Quarantine | None = None,
) -> Iterator[pa.RecordBatch]:
    """With ``quarantine``, rows that break the view's contract are set aside there (``quarantine.py``)."""
    join_keys = [e.name for e in fv.entity_columns]
    # the repo path is the region's data directory (feast_config.repo_config), where its ledger lives
    erased = read_erased(Path(config.repo_path)) if config.repo_path else ErasedKeys()
    batches = _read(fv, start, end, join_keys, config=config, offline_store=offline_store, batch_rows=batch_rows,
                    created_since=created_since, quarantine=quarantine, erased=erased)
    if not erased:
        yield from batches
        return
    for batch in batches:
        kept = erased.drop(batch, join_keys)
        if kept.num_rows:
            yield kept


def _read(
    fv: FeatureView,
    start: datetime,
    end: datetime,
    join_keys: list[str],
    *,
    config: RepoConfig,
    offline_store: Any,
    batch_rows: int,
    created_since: datetime | None,
    quarantine: Quarantine | None,
    erased: ErasedKeys,
) -> Iterator[pa.RecordBatch]:
    source = batch_source(fv)
    features = [f.name for f in fv.features]
    if isinstance(source, FileSource) and source.path.endswith(".parquet") and "://" not in source.path:
        path = Path(source.path)
        if not path.is_absolute():
            path = Path(config.repo_path or ".") / path
        yield from _duckdb_latest(path, source, join_keys, features, start, end, batch_rows, created_since,
                                  fv if quarantine is not None else None, quarantine, erased)
        return
    if quarantine is not None:
        raise InvalidSource(f"feature view {fv.name}: quarantine mode reads local Parquet sources only "
                            f"({source.name} is not one); run without --quarantine")
    # Feast's offline store reads an event-time window only: late rows are found by the window alone
    job = offline_store.pull_latest_from_table_or_query(
        config=config,
        data_source=source,
        join_key_columns=join_keys,
        feature_name_columns=features,
        timestamp_field=source.timestamp_field,
        created_timestamp_column=source.created_timestamp_column,
        start_date=start,
        end_date=end,
    )
    yield from job.to_arrow().to_batches(max_chunksize=batch_rows)


def _duckdb_latest(
    path: Path,
    source: FileSource,
    join_keys: list[str],
    features: list[str],
    start: datetime,
    end: datetime,
    batch_rows: int,
    created_since: datetime | None = None,
    fv: FeatureView | None = None,
    quarantine: Quarantine | None = None,
    erased: ErasedKeys | None = None,
) -> Iterator[pa.RecordBatch]:
    reverse = {v: k for k, v in (source.field_mapping or {}).items()}  # feature name -> column
    ts = source.timestamp_field
    created = source.created_timestamp_column
    files = source_files(path)  # a glob names the parts; DuckDB reads them all, by column name
    if not files:
        # the job checked there was one when it started: reading nothing would record the view as
        # materialised up to the window's end, and incremental jobs would never read those rows
        raise InvalidSource(f"source {missing_source_hint(path)} (gone since the job started: removed by "
                            "another process?)")
    schema = pq.read_schema(files[0])
    wanted = join_keys + features + [ts] + ([created] if created else [])
    select = ", ".join(f"{_quote(reverse.get(c, c))} AS {_quote(c)}" for c in dict.fromkeys(wanted))
    contract = None
    from_source = f"SELECT {select} FROM read_parquet(?)"
    if quarantine is not None and fv is not None:
        contract = contract_sql(fv, wanted, reverse, [pq.read_schema(f) for f in files], join_keys, ts)
        from_source = contract.clean
    # compare in each column's own kind of time, never through the session time zone (a broken
    # time column is cast to a time with a zone, UTC)
    aware = {c for c in (ts, created) if c and contract is not None and c in contract.broken}
    lo = _as_column(schema, reverse.get(ts, ts), start, ts in aware)
    hi = _as_column(schema, reverse.get(ts, ts), end, ts in aware)
    order = f"{_quote(ts)} DESC" + (f", {_quote(created)} DESC" if created else "")
    where = f"{_quote(ts)} >= ? AND {_quote(ts)} <= ?"
    params: list[object] = [str(path), lo, hi]
    if created and created_since is not None:
        where = f"({where}) OR ({_quote(created)} >= ? AND {_quote(ts)} <= ?)"
        params += [_as_column(schema, reverse.get(created, created), created_since, created in aware), hi]
    sql = f"""
        SELECT * EXCLUDE (__rn) FROM (
            SELECT *, row_number() OVER (PARTITION BY {", ".join(map(_quote, join_keys))} ORDER BY {order}) AS __rn
            FROM ({from_source})
            WHERE {where}
        ) WHERE __rn = 1
    """
    con = duckdb.connect()
    try:
        if contract is not None and quarantine is not None:
            con.execute("SET TimeZone = 'UTC'")  # text cast to a time: an offset-less one is UTC
            # rows without an event time are in no window: every job reads them (set aside once)
            rejected = (f"SELECT {contract.rejected_columns} FROM ({contract.checked}) "
                        f"WHERE __reason IS NOT NULL AND ({_quote(ts)} IS NULL OR {where})")
            earlier = earlier_files(quarantine)  # rows set aside by earlier jobs are not again
            set_aside: Iterable[pa.RecordBatch] = _stream(
                con.sql(unseen_sql(rejected, earlier), params=params + [str(p) for p in earlier]), batch_rows)
            if erased:  # an erased entity's rows are not kept here either
                set_aside = (erased.drop(b, join_keys) for b in set_aside)
            write_rejected(set_aside, quarantine)
        reader = _stream(con.sql(sql, params=params), batch_rows)
        for batch in reader:
            if batch.num_rows:
                yield batch
    except duckdb.Error as e:  # the footers were checked; a damaged page shows only now
        raise InvalidSource(f"source {path} could not be read: {str(e).splitlines()[0]}") from None
    finally:
        con.close()


def _stream(relation: duckdb.DuckDBPyRelation, batch_rows: int) -> pa.RecordBatchReader:
    # duckdb 2 renamed the relation's record_batch() to to_arrow_reader(); each version's stubs lack the other
    stream = getattr(relation, "to_arrow_reader", None) or getattr(relation, "record_batch")
    reader: pa.RecordBatchReader = stream(batch_rows)
    return reader


def _as_column(schema: pa.Schema, column: str, when: datetime, aware: bool = False) -> datetime:
    """``when`` in UTC, without a zone when the column has none (a naive time is UTC here)."""
    utc = when.astimezone(timezone.utc)
    return utc if aware or getattr(schema.field(column).type, "tz", None) is not None else utc.replace(tzinfo=None)
