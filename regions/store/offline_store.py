"""A Feast offline store whose point-in-time join is a search over each view's sorted rows
(``sorted_search``), or DuckDB's ASOF join (``point_in_time``) where the views' rows do not fit in
the memory limit.

Named in each region's ``feature_store.yaml`` (``offline_store: {type:
regions.store.offline_store.AsofOfflineStore}``), so ``FeatureStore.get_historical_features``,
``fedstore region training-set`` and the gRPC training-set stream all use it. Everything else
(``pull_latest_from_table_or_query`` for materialisation, writes, monitoring) is Feast's DuckDB
offline store, inherited unchanged; so is a historical retrieval this join does not cover
(no entity set, ``filter_by_created_timestamp``, on-demand views, sources other than local Parquet).

The entity set is a DataFrame, as in Feast, or — an addition — the path or glob of Parquet files,
which DuckDB streams; ``AsofRetrievalJob.to_parquet`` writes the result batch by batch (the
search) or with ``COPY … TO`` (the ASOF join, whose sort DuckDB spills to a temporary directory),
so a training set larger than memory never is held in it.
``AsofRetrievalJob.filtered`` adds an ``EntityFilter`` (the training sets' consent and erasure
filter) to the same query, ahead of the views' joins.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Final, Iterator, List, Literal, Mapping, Optional, Union

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from feast.data_format import ParquetFormat
from feast.feature_view import FeatureView
from feast.infra.offline_stores import offline_utils
from feast.infra.offline_stores.duckdb import DuckDBOfflineStore, DuckDBOfflineStoreConfig
from feast.infra.offline_stores.file_source import FileSource
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.infra.registry.base_registry import BaseRegistry
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.repo_config import RepoConfig
from feast.saved_dataset import SavedDatasetStorage
from pydantic import StrictStr

from fedstore.regions.store import sorted_search
from fedstore.regions.store.batch_streams import in_order
from fedstore.regions.store.parquet_output import require_compression, write_parquet
from fedstore.regions.store.point_in_time import FILE, ROW, ViewJoin, asof_query, literal, quote, ties_query

OFFLINE_STORE_TYPE: Final = "fedstore.regions.store.offline_store.AsofOfflineStore"
_ENTITIES = "__fedstore_entities"
_TIME = "__fedstore_t"  # the entity row's time in µs since the epoch (UTC), what the search compares


class AsofOfflineStoreConfig(DuckDBOfflineStoreConfig):
    """``offline_store`` block of feature_store.yaml."""

    type: StrictStr = OFFLINE_STORE_TYPE
    memory_limit: str = "512MB"
    """DuckDB's memory limit for one retrieval; a larger sort spills to a temporary directory."""
    threads: int | None = None
    """DuckDB's threads for one retrieval (default: DuckDB's, one per core)."""
    join: Literal["auto", "search", "asof"] = "auto"
    """How each view is joined: ``search`` (``sorted_search``: the views' rows held in memory,
    sorted; the entity rows streamed past them, never sorted), ``asof`` (DuckDB's ASOF join, which
    spills to disk), or ``auto``: search when the views' rows fit in ``memory_limit``."""


class AsofOfflineStore(DuckDBOfflineStore):
    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: List[FeatureView],
        feature_refs: List[str],
        entity_df: Union[pd.DataFrame, str, None],
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        filter_by_created_timestamp: bool = False,
        **kwargs: Any,
    ) -> RetrievalJob:
        if (
            entity_df is None
            or filter_by_created_timestamp  # a per-entity-row cut on created time: no ASOF join
            or kwargs
            or OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry)
            or not all(_local_parquet(fv) for fv in feature_views)
        ):
            return DuckDBOfflineStore.get_historical_features(
                config, feature_views, feature_refs, entity_df, registry, project,
                full_feature_names, filter_by_created_timestamp, **kwargs,
            )
        entities = EntitySet.of(entity_df)
        views = [_view_join(fv, feature_refs, full_feature_names) for fv in feature_views]
        settings = config.offline_store
        return AsofRetrievalJob(
            entities=entities,
            views=views,
            feature_refs=feature_refs,
            full_feature_names=full_feature_names,
            memory_limit=getattr(settings, "memory_limit", "512MB"),
            threads=getattr(settings, "threads", None),
            repo_path=str(config.repo_path),
            join=getattr(settings, "join", "auto"),
        )


class EntitySet:
    """The entity rows: a DataFrame (held by the job) or Parquet files (streamed by DuckDB)."""

    def __init__(self, frame: pd.DataFrame | None, parquet: str | None, columns: list[str], timestamp_col: str) -> None:
        self.frame = frame
        self.parquet = parquet
        self.columns = columns
        self.timestamp_col = timestamp_col

    @classmethod
    def of(cls, entity_df: pd.DataFrame | str) -> "EntitySet":
        if isinstance(entity_df, str):
            schema = _parquet_schema(entity_df)
            ts = offline_utils.infer_event_timestamp_from_entity_df(schema)
            return cls(None, entity_df, list(schema), ts)
        ts = offline_utils.infer_event_timestamp_from_entity_df(dict(zip(entity_df.columns, entity_df.dtypes)))
        frame = entity_df.copy(deep=False)
        col = frame[ts].infer_objects()
        if pd.api.types.is_string_dtype(col) or pd.api.types.is_object_dtype(col):
            frame[ts] = pd.to_datetime(col, utc=True)  # as Feast's _to_utc
        columns = [str(c) for c in frame.columns]
        frame[FILE] = np.zeros(len(frame), dtype=np.int8)
        frame[ROW] = np.arange(len(frame), dtype=np.int64)
        return cls(frame, None, columns, ts)

    def relation(self) -> str:
        if self.parquet is None:
            return f"SELECT * FROM {_ENTITIES}"
        # file_index: the file's place in the glob's (sorted) expansion; a file name per row sorted slowly
        return (f"SELECT * EXCLUDE (file_row_number), file_index AS {FILE}, file_row_number AS {ROW} "
                f"FROM read_parquet({literal(self.parquet)}, file_row_number = true)")

    def register(self, conn: duckdb.DuckDBPyConnection) -> None:
        if self.frame is not None:
            conn.register(_ENTITIES, self.frame)  # as a pandas frame: times become microseconds, as in Feast

    def time_range(self) -> tuple[datetime, datetime]:
        col = quote(self.timestamp_col)
        with _connection("256MB", None) as conn:
            self.register(conn)
            lo, hi = conn.execute(f"SELECT min(CAST({col} AS TIMESTAMPTZ)), max(CAST({col} AS TIMESTAMPTZ)) "
                                  f"FROM ({self.relation()})").fetchone() or (None, None)
        return lo, hi


@dataclass(frozen=True)
class EntityFilter:
    """Entity rows kept, dropped or marked inside the join's own query, before any view is joined
    (consent and erasure, say): no second copy of the entity set is written for it."""

    relation: Callable[[str], str]
    """The entity set's relation (SQL) -> the filtered one: every column kept (``FILE`` and ``ROW`` too)."""
    added_columns: tuple[str, ...] = ()  # columns it adds, carried into the result like the entity set's
    tables: Mapping[str, pa.Table] = field(default_factory=dict)  # Arrow tables its SQL names


class AsofRetrievalJob(RetrievalJob):
    """The join, run when asked for: as Arrow, as pandas (Feast's API), or straight into Parquet."""

    def __init__(self, *, entities: EntitySet, views: list[ViewJoin], feature_refs: list[str],
                 full_feature_names: bool, memory_limit: str, threads: int | None, repo_path: str,
                 join: str = "auto") -> None:
        super().__init__()
        self._entities = entities
        self._views = views
        self._feature_refs = feature_refs
        self._full_feature_names = full_feature_names
        self._memory_limit = memory_limit
        self._threads = threads
        self._repo_path = repo_path
        self._join = join
        self._metadata: RetrievalMetadata | None = None
        self._filter: EntityFilter | None = None

    def filtered(self, entity_filter: EntityFilter) -> "AsofRetrievalJob":
        """The same join over the entity rows ``entity_filter`` lets through (a new job)."""
        job = copy.copy(self)
        job._filter = entity_filter
        job._metadata = None
        return job

    def _prepare(self, conn: duckdb.DuckDBPyConnection) -> None:
        self._entities.register(conn)
        for name, table in (self._filter.tables if self._filter else {}).items():
            conn.register(name, table)

    def sql(self, *, utc_times: bool = False, ordered: bool = True, views: list[ViewJoin] | None = None) -> str:
        """The query; ``utc_times`` turns the entity timestamp into a UTC instant (for files);
        ``ordered`` keeps the entity set's row order (a sort of the whole result); ``views`` as
        ``views_on`` found them (by default every tie on event time is broken by created time)."""
        e = self._entities
        relation, columns = e.relation(), e.columns
        if self._filter is not None:
            relation, columns = self._filter.relation(relation), [*columns, *self._filter.added_columns]
        return asof_query(relation, columns, e.timestamp_col, self._views if views is None else views,
                          ordered=ordered, utc_times=utc_times)

    def views_on(self, conn: duckdb.DuckDBPyConnection) -> list[ViewJoin]:
        """The views, each told whether its source has ties on event time right before the join
        reads it (a source replaced in between is read as it is then, as by Feast's own join)."""
        return [replace(v, created_ties=bool(conn.execute(ties_query(v)).fetchall()[0][0]))
                if v.created_timestamp_column and v.features else v for v in self._views]

    @contextmanager
    def _searched(self, conn: duckdb.DuckDBPyConnection, *, utc_times: bool, ordered: bool,
                  batch_rows: int = 65_536) -> Iterator[tuple[pa.Schema, Iterator[pa.RecordBatch]] | None]:
        """The join by ``sorted_search`` as a schema and a stream of batches, or None where the
        ASOF join must do it (asked to, views larger than the memory limit, keys of other types).
        The stream reads ``conn``: it is read within the block. Small batches (64k rows) let the
        Parquet writer start early and keep the threads' batches in cache."""
        if self._join == "asof" or (self._join == "auto" and not self._views_fit(conn)):
            yield None
            return
        e = self._entities
        relation, columns = e.relation(), e.columns
        if self._filter is not None:
            relation, columns = self._filter.relation(relation), [*columns, *self._filter.added_columns]
        ts = quote(e.timestamp_col)
        out = [f"CAST(e.{ts} AS TIMESTAMPTZ) AS {ts}" if utc_times and c == e.timestamp_col else f"e.{quote(c)}"
               for c in columns]
        # the rows' own order but where the filter's ASOF join moved them (the views' joins move none)
        order = f" ORDER BY e.{FILE}, e.{ROW}" if ordered and self._filter is not None else ""
        query = f"SELECT {', '.join(out)}, epoch_us(CAST(e.{ts} AS TIMESTAMPTZ)) AS {_TIME} FROM ({relation}) AS e{order}"
        empty = conn.sql(f"SELECT * FROM ({query}) LIMIT 0").to_arrow_table()
        types = {f.name: f.type for f in empty.schema}
        try:
            views = [sorted_search.load(conn, v, types) for v in self._views if v.features]
        except sorted_search.NotSearchable:
            yield None
            return
        schema = sorted_search.join(empty.to_batches()[0] if empty.num_rows else
                                    pa.RecordBatch.from_pylist([], schema=empty.schema), _TIME, views, columns).schema
        # a frame is scanned by DuckDB through pandas, at a cost per batch: fewer, larger batches
        rows = batch_rows if e.frame is None else 4 * batch_rows
        reader = conn.sql(query).to_arrow_reader(rows)
        workers = max(1, min(self._threads or os.cpu_count() or 1, 4))
        per_thread = threading.local()  # each joining thread's scratch, for this retrieval only

        def joined(batch: pa.RecordBatch) -> pa.RecordBatch:
            if not hasattr(per_thread, "scratch"):
                per_thread.scratch = sorted_search.Scratch()
            return sorted_search.join(batch, _TIME, views, columns, per_thread.scratch)

        yield schema, in_order(joined, reader, workers)

    def _views_fit(self, conn: duckdb.DuckDBPyConnection) -> bool:
        """Whether the views' rows, held sorted in memory, fit in the memory limit (from the
        sources' footers: rows × columns read × 16 bytes, a sort's copy included)."""
        budget = _bytes(self._memory_limit)
        need = 0
        for v in self._views:
            if v.features and v.path is not None:
                rows = conn.sql(f"SELECT coalesce(sum(num_rows), 0) FROM parquet_file_metadata({literal(v.path)})"
                                ).fetchall()[0][0]
                need += int(rows) * (len(v.join_key_map) + len(v.features) + 2) * 16
        return budget is not None and need <= budget

    def _to_arrow_internal(self, timeout: Optional[int] = None) -> pa.Table:
        with _connection(self._memory_limit, self._threads) as conn:
            self._prepare(conn)
            with self._searched(conn, utc_times=False, ordered=True) as searched:
                if searched is not None:
                    schema, batches = searched
                    return pa.Table.from_batches(list(batches), schema)
            return conn.sql(self.sql(views=self.views_on(conn))).to_arrow_table()

    def _to_df_internal(self, timeout: Optional[int] = None) -> pd.DataFrame:
        return self._to_arrow_internal(timeout).to_pandas()

    def to_parquet(self, path: Path, *, row_group_rows: int = 122_880, ordered: bool = True,
                   compression: str = "auto") -> int:
        """Write the result to ``path`` as Parquet, streamed (bounded memory), entity time in UTC;
        returns the rows written. Unordered, the rows come as the join makes them (as Feast's do),
        which spares a sort of the whole result where the ASOF join does it. ``compression``: see
        ``parquet_output`` (DuckDB's COPY, which writes the ASOF join's result, takes ``auto`` as
        Snappy: it chooses each column's dictionary itself but compresses every column alike)."""
        require_compression(compression)  # before it is written into the COPY statement
        with _connection(self._memory_limit, self._threads) as conn:
            self._prepare(conn)
            with self._searched(conn, utc_times=True, ordered=ordered) as searched:
                if searched is not None:
                    return write_parquet(path, *searched, row_group_rows, compression)
            query = self.sql(utc_times=True, ordered=ordered, views=self.views_on(conn))
            codec = {"auto": "snappy", "none": "uncompressed"}.get(compression, compression)
            row = conn.execute(f"COPY ({query}) TO {literal(str(path))} "
                               f"(FORMAT parquet, ROW_GROUP_SIZE {int(row_group_rows)}, COMPRESSION {codec})").fetchone()
        return int(row[0]) if row else 0

    @property
    def full_feature_names(self) -> bool:
        return self._full_feature_names

    @property
    def on_demand_feature_views(self) -> List[OnDemandFeatureView]:
        return []  # a request with on-demand views goes to Feast's own store

    @property
    def metadata(self) -> Optional[RetrievalMetadata]:
        if self._metadata is None:  # computed when asked: for files it is one more scan
            e = self._entities
            lo, hi = e.time_range()
            self._metadata = RetrievalMetadata(features=self._feature_refs,
                                               keys=list(set(e.columns) - {e.timestamp_col}),
                                               min_event_timestamp=lo, max_event_timestamp=hi)
        return self._metadata

    def persist(self, storage: SavedDatasetStorage, allow_overwrite: bool = False,
                timeout: Optional[int] = None) -> None:
        import ibis  # type: ignore[import-untyped]
        from feast.infra.offline_stores.duckdb import _write_data_source

        _write_data_source(ibis.memtable(self.to_arrow()), storage.to_data_source(), self._repo_path,
                           "overwrite", allow_overwrite)


def _bytes(size: str) -> int | None:
    """A memory limit as DuckDB takes it (``512MB``, ``1GiB``...) in bytes; None if not such."""
    text = size.strip().upper().replace(" ", "")
    for unit, factor in (("KIB", 2**10), ("MIB", 2**20), ("GIB", 2**30), ("TIB", 2**40),
                         ("KB", 10**3), ("MB", 10**6), ("GB", 10**9), ("TB", 10**12), ("B", 1)):
        if text.endswith(unit):
            try:
                return int(float(text[: -len(unit)]) * factor)
            except ValueError:
                return None
    return None


def _parquet_schema(files: str) -> dict[str, np.dtype]:
    """Column -> a dtype saying only whether it holds times (what Feast infers the entity time from).
    One file: its footer (pyarrow, ~1 ms); a glob: DuckDB's expansion of it, as the join reads it."""
    def bad(reason: str) -> ValueError:
        return ValueError(f"entity set {files!r} is neither a DataFrame nor readable Parquet files: {reason}")

    if not any(c in files for c in "*?[") and os.path.isfile(files):
        try:
            arrow = pq.read_schema(files)
        except (pa.ArrowInvalid, OSError) as e:
            raise bad(str(e).splitlines()[0]) from None
        return {f.name: np.dtype("datetime64[ns]") if pa.types.is_timestamp(f.type) else np.dtype(object)
                for f in arrow}
    with duckdb.connect() as conn:
        try:
            described = conn.execute(f"DESCRIBE SELECT * FROM read_parquet({literal(files)})").fetchall()
        except duckdb.Error as e:
            raise bad(str(e).splitlines()[0]) from None
    return {name: np.dtype("datetime64[ns]") if str(kind).startswith("TIMESTAMP") else np.dtype(object)
            for name, kind, *_ in described}


@contextmanager
def _connection(memory_limit: str, threads: int | None) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection of its own per retrieval (nothing shared between threads or jobs), its
    spill files in a directory of its own, removed after (DuckDB makes it only when it spills)."""
    spill = os.path.join(tempfile.gettempdir(), f"fedstore-asof-{uuid.uuid4().hex}")
    config: dict[str, Any] = {"memory_limit": memory_limit, "temp_directory": spill}
    if threads:
        config["threads"] = threads
    conn = duckdb.connect(config=config)
    try:
        conn.execute("SET TimeZone = 'UTC'")  # naive times are UTC, as in Feast
        yield conn
    finally:
        conn.close()
        shutil.rmtree(spill, ignore_errors=True)


def _local_parquet(fv: FeatureView) -> bool:
    src = fv.batch_source
    return (
        isinstance(src, FileSource)
        and "://" not in src.path
        and (isinstance(src.file_format, ParquetFormat) or (src.file_format is None and src.path.endswith(".parquet")))
    )


def _view_join(fv: FeatureView, feature_refs: list[str], full_feature_names: bool) -> ViewJoin:
    """Feast's ``read_fv`` (ibis.py) in the join's terms: which refs, which output names."""
    src = fv.batch_source
    assert isinstance(src, FileSource)
    prefix = fv.projection.name_to_use()
    names = [r.split(":")[1] for r in feature_refs if r.startswith(f"{prefix}:")]
    base = fv.projection.name_alias or fv.name
    outputs = [f"{base}__{n}" if full_feature_names else n for n in names]
    return ViewJoin(
        source=f"read_parquet({literal(src.path)})",
        path=src.path,
        field_mapping=dict(src.field_mapping),
        timestamp_field=src.timestamp_field,
        created_timestamp_column=src.created_timestamp_column or None,
        join_key_map=dict(fv.projection.join_key_map or {e.name: e.name for e in fv.entity_columns}),
        features=list(zip(names, outputs)),
        ttl=fv.ttl,
    )
