"""Reads the latest row per entity in a window from a view's source, as a stream of Arrow batches.

Parquet sources (a file, or a glob of partition files) are read by DuckDB directly (the region's
offline engine) with Feast's semantics: event time within [start, end] inclusive, one row per
entity, latest event time first, then latest created time. Streaming batches keep memory bounded whatever the table size. Any other kind of
source goes through Feast's own offline store (``pull_latest_from_table_or_query``).
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureView, FileSource
from feast.repo_config import RepoConfig

from regions.errors import InvalidSource
from regions.store.definitions import batch_source
from regions.store.source_files import missing_source_hint, source_files


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
) -> Iterator[pa.RecordBatch]:
    source = batch_source(fv)
    join_keys = [e.name for e in fv.entity_columns]
    features = [f.name for f in fv.features]
    if isinstance(source, FileSource) and source.path.endswith(".parquet") and "://" not in source.path:
        path = Path(source.path)
        if not path.is_absolute():
            path = Path(config.repo_path or ".") / path
        yield from _duckdb_latest(path, source, join_keys, features, start, end, batch_rows)
        return
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
    ts_type = pq.read_schema(files[0]).field(reverse.get(ts, ts)).type
    aware = getattr(ts_type, "tz", None) is not None
    # compare in the column's own kind of time, never through the session time zone
    lo, hi = (start.astimezone(timezone.utc), end.astimezone(timezone.utc))
    if not aware:
        lo, hi = lo.replace(tzinfo=None), hi.replace(tzinfo=None)
    wanted = join_keys + features + [ts] + ([created] if created else [])
    select = ", ".join(f"{_quote(reverse.get(c, c))} AS {_quote(c)}" for c in dict.fromkeys(wanted))
    order = f"{_quote(ts)} DESC" + (f", {_quote(created)} DESC" if created else "")
    sql = f"""
        SELECT * EXCLUDE (__rn) FROM (
            SELECT *, row_number() OVER (PARTITION BY {", ".join(map(_quote, join_keys))} ORDER BY {order}) AS __rn
            FROM (SELECT {select} FROM read_parquet(?))
            WHERE {_quote(ts)} >= ? AND {_quote(ts)} <= ?
        ) WHERE __rn = 1
    """
    con = duckdb.connect()
    try:
        relation = con.sql(sql, params=[str(path), lo, hi])
        # duckdb 2 renamed the relation's record_batch() to to_arrow_reader(); each version's stubs lack the other
        stream = getattr(relation, "to_arrow_reader", None) or getattr(relation, "record_batch")
        reader = stream(batch_rows)
        for batch in reader:
            if batch.num_rows:
                yield batch
    except duckdb.Error as e:  # the footers were checked; a damaged page shows only now
        raise InvalidSource(f"source {path} could not be read: {str(e).splitlines()[0]}") from None
    finally:
        con.close()
