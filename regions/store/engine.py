"""A Feast compute engine whose materialisation writes Redis through the fast bulk path.

Named in each region's ``feature_store.yaml`` (``batch_engine: {type:
regions.store.engine.FastMaterializationEngine}``), so Feast's own ``feast materialize`` uses it
too. The latest row per entity streams from the region's Parquet through DuckDB as Arrow batches
(``source_reader``) and goes to Redis without ever becoming per-row protobuf objects
(``redis_writer``). Any other online store (SQLite, the embedded default) gets Feast's generic
``online_write_batch``, batch by batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Final, Iterable, Iterator, Literal, Optional, Sequence, Union

import pyarrow as pa
import pyarrow.parquet as pq
from feast import BatchFeatureView, Entity, FeatureView, OnDemandFeatureView, StreamFeatureView
from feast.infra.common.materialization_job import (
    MaterializationJob,
    MaterializationJobStatus,
    MaterializationTask,
)
from feast.infra.compute_engines.base import ComputeEngine
from feast.infra.online_stores.redis import RedisOnlineStore, RedisOnlineStoreConfig, RedisType
from feast.infra.registry.base_registry import BaseRegistry
from feast.repo_config import FeastConfigBaseModel, RepoConfig
from feast.utils import _convert_arrow_to_proto, make_tzaware

from fedstore.online import (
    ClusterRedisWriter,
    ClusterTarget,
    FastRedisWriter,
    OnlineMarker,
    RedisTarget,
    ViewLayout,
)
from fedstore.regions.store.definitions import batch_source
from fedstore.regions.store.quarantine import Quarantine
from fedstore.regions.store.source_reader import read_latest

ENGINE_TYPE: Final = "fedstore.regions.store.engine.FastMaterializationEngine"


class FastMaterializationEngineConfig(FeastConfigBaseModel):
    """``batch_engine`` block of feature_store.yaml."""

    type: Literal["fedstore.regions.store.engine.FastMaterializationEngine"] = ENGINE_TYPE
    chunk_rows: int = 20_000
    """Rows per pipelined Redis batch: bounds memory, keeps Redis and Python busy together."""


@dataclass(frozen=True)
class ViewMaterialization:
    """What one feature view's materialisation read and wrote."""

    view: str
    start: datetime
    end: datetime
    rows_read: int
    # None: the engine does not say (Feast's Spark engine skips values not newer than those online
    # without counting them); the ledger then holds null and the operator's message says so
    rows_written: int | None
    rows_skipped_stale: int | None  # already online as they are, or older than what is online
    delta_path: Path | None  # the rows written, as Parquet: the batch snapshot's input
    path: str  # "redis-fast" or "feast-generic"
    # written rows with an event time before the previous job's window end (read again by an
    # incremental job's lateness window); None where the engine does not say what it wrote
    rows_late: int | None = 0


class FastMaterializationJob(MaterializationJob):
    def __init__(
        self,
        job_id: str,
        status: MaterializationJobStatus,
        result: ViewMaterialization | None = None,
        error: BaseException | None = None,
    ) -> None:
        super().__init__()
        self._job_id = job_id
        self._status = status
        self.result = result
        self._error = error

    def status(self) -> MaterializationJobStatus:
        return self._status

    def error(self) -> Optional[BaseException]:
        return self._error

    def should_be_retried(self) -> bool:
        return False

    def job_id(self) -> str:
        return self._job_id

    def url(self) -> Optional[str]:
        return None


def redis_target(config: RepoConfig) -> RedisTarget | ClusterTarget | None:
    """The Redis (or Redis Cluster) the fast paths can use, or None when the store is something else."""
    online = config.online_store
    if not isinstance(online, RedisOnlineStoreConfig):
        return None
    nodes, params = RedisOnlineStore._parse_connection_string(online.connection_string)
    if params.get("ssl"):
        return None  # TLS goes through redis-py (Feast's generic path)
    if online.redis_type == RedisType.redis_cluster:
        return ClusterTarget(nodes=tuple((n["host"], int(n["port"])) for n in nodes),
                             password=params.get("password"), key_ttl_seconds=online.key_ttl_seconds)
    if online.redis_type != RedisType.redis:
        return None
    return RedisTarget(
        host=nodes[0]["host"],
        port=int(nodes[0]["port"]),
        db=int(params.get("db", 0)),
        password=params.get("password"),
        key_ttl_seconds=online.key_ttl_seconds,
    )


class FastMaterializationEngine(ComputeEngine):
    def __init__(
        self,
        *,
        repo_config: RepoConfig,
        offline_store: Any,
        online_store: Any,
        chunk_rows: int = 20_000,
        **kwargs: Any,
    ) -> None:
        super().__init__(repo_config=repo_config, offline_store=offline_store, online_store=online_store)
        self.chunk_rows = chunk_rows

    def update(
        self,
        project: str,
        views_to_delete: Sequence[Union[BatchFeatureView, StreamFeatureView, FeatureView]],
        views_to_keep: Sequence[
            Union[BatchFeatureView, StreamFeatureView, FeatureView, OnDemandFeatureView]
        ],
        entities_to_delete: Sequence[Entity],
        entities_to_keep: Sequence[Entity],
    ) -> None:
        """Nothing to provision: the engine runs in-process. Views Feast deletes (an apply with
        ``objects_to_delete``) lose their rows in the online store, so their online marks go too."""
        marker = self._marker(project)
        if marker is not None and views_to_delete:
            with marker:
                marker.forget([v.name for v in views_to_delete])

    def teardown_infra(
        self,
        project: str,
        fvs: Sequence[Union[BatchFeatureView, StreamFeatureView, FeatureView]],
        entities: Sequence[Entity],
    ) -> None:
        """Nothing of the engine's own; the online store's rows are gone, and so is its marker."""
        marker = self._marker(project)
        if marker is not None:
            with marker:
                marker.clear()

    def _marker(self, project: str) -> OnlineMarker | None:
        target = redis_target(self.repo_config)
        return OnlineMarker(target, project) if target is not None else None

    def _materialize_one(
        self, registry: BaseRegistry, task: MaterializationTask, **kwargs: Any
    ) -> FastMaterializationJob:
        job_id = f"{task.feature_view.name}-{task.start_time}-{task.end_time}"
        try:
            result = self.materialize_view(task)
        except Exception as e:  # Feast's provider re-raises the job's error
            return FastMaterializationJob(job_id, MaterializationJobStatus.ERROR, error=e)
        return FastMaterializationJob(job_id, MaterializationJobStatus.SUCCEEDED, result=result)

    def materialize_view(
        self,
        task: MaterializationTask,
        *,
        delta_path: Path | None = None,
        progress: Callable[[int], None] | None = None,
        late_before: datetime | None = None,
        created_since: datetime | None = None,
        quarantine: Quarantine | None = None,
        on_chunk: Callable[[int, int], None] | None = None,
    ) -> ViewMaterialization:
        """Stream the latest row per entity in the task's window into the online store.

        With ``delta_path``, the rows written are also kept there as Parquet: the input of the
        region's batch snapshot. ``late_before`` (the previous job's window end): rows written with
        an earlier event time are counted late. ``created_since``: rows created since then are
        read too, whatever their event time (``source_reader.read_latest``). ``quarantine``: rows
        that break the view's contract are set aside there, and counted in it (``quarantine.py``).
        ``on_chunk``: called after each chunk written online with (its rows, of them written).
        """
        fv = task.feature_view
        join_keys = {e.name: e.dtype.to_value_type() for e in fv.entity_columns}
        features = tuple((f.name, f.dtype.to_value_type()) for f in fv.features)
        batches = read_latest(
            fv,
            task.start_time,
            task.end_time,
            config=self.repo_config,
            offline_store=self.offline_store,
            batch_rows=self.chunk_rows,
            created_since=created_since,
            quarantine=quarantine,
        )
        counted = _Counted(batches, delta_path)
        bar = task.tqdm_builder(None) if task.tqdm_builder else None  # type: ignore[arg-type]

        def tick(n: int) -> None:
            if bar is not None:
                bar.update(n)
            if progress is not None:
                progress(n)

        try:
            target = redis_target(self.repo_config)
            if not fv.online:
                for _ in counted:
                    pass
                written, stale, late, path = 0, 0, 0, "offline-only"
            elif target is not None:
                layout = ViewLayout(
                    project=task.project,
                    view=fv.name,
                    join_keys=join_keys,
                    features=features,
                    timestamp_field=batch_source(fv).timestamp_field,
                )
                if isinstance(target, ClusterTarget):
                    res = ClusterRedisWriter(target, chunk_rows=self.chunk_rows).write(
                        counted, layout, progress=tick, late_before=late_before, on_chunk=on_chunk)
                    path = "redis-cluster-fast"
                else:
                    res = FastRedisWriter(target, chunk_rows=self.chunk_rows).write(
                        counted, layout, progress=tick, late_before=late_before, on_chunk=on_chunk)
                    path = "redis-fast"
                written, stale, late = res.rows_written, res.rows_skipped_stale, res.rows_late
            else:
                written, late = self._generic_write(fv, counted, join_keys, tick, late_before, on_chunk)
                stale, path = counted.rows - written, "feast-generic"
        finally:
            counted.close()
            if bar is not None:
                bar.close()
        return ViewMaterialization(
            view=fv.name,
            start=task.start_time,
            end=task.end_time,
            rows_read=counted.rows,
            rows_written=written,
            rows_skipped_stale=stale,
            delta_path=delta_path if counted.rows else None,
            path=path,
            rows_late=late,
        )

    def _generic_write(
        self,
        fv: FeatureView,
        batches: Iterable[pa.RecordBatch],
        join_keys: dict[str, Any],
        tick: Callable[[int], None],
        late_before: datetime | None,
        on_chunk: Callable[[int, int], None] | None = None,
    ) -> tuple[int, int]:
        """Feast's ``online_write_batch`` for the rows the fast paths would write (SQLite's
        overwrites whatever it holds, an older event time too); (rows written, of them late)."""
        written = late = 0
        for batch in batches:
            rows = _convert_arrow_to_proto(batch, fv, join_keys)
            stored = self.online_store.online_read(config=self.repo_config, table=fv,
                                                   entity_keys=[r[0] for r in rows])
            wanted = [row for row, (ts, values) in zip(rows, stored, strict=True) if _wins(row[2], row[1], ts, values)]
            if wanted:
                self.online_store.online_write_batch(config=self.repo_config, table=fv, data=wanted, progress=None)
            written += len(wanted)
            if late_before is not None:
                late += sum(make_tzaware(row[2]) < late_before for row in wanted)
            tick(batch.num_rows)
            if on_chunk is not None:
                on_chunk(batch.num_rows, len(wanted))
        return written, late


def _wins(event: datetime, values: dict[str, Any], stored_event: datetime | None,
          stored: dict[str, Any] | None) -> bool:
    """The writers' rule: a later event time wins; at an equal one, different values (a correction)."""
    if stored_event is None or stored is None:
        return True
    # Feast's SQLite store keeps whole seconds: compared there, a row of the same second is a tie
    event, stored_event = make_tzaware(event).replace(microsecond=0), make_tzaware(stored_event).replace(microsecond=0)
    if event != stored_event:
        return event > stored_event
    # serialised, so a NaN (not equal to itself) equals its stored copy
    return {k: v.SerializeToString() for k, v in values.items()} != {k: v.SerializeToString() for k, v in stored.items()}


class _Counted:
    """Passes batches through, counting rows and (optionally) copying them to a Parquet file."""

    def __init__(self, batches: Iterator[pa.RecordBatch], delta_path: Path | None) -> None:
        self._batches = batches
        self._path = delta_path
        self._writer: pq.ParquetWriter | None = None
        self.rows = 0

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        for batch in self._batches:
            self.rows += batch.num_rows
            if self._path is not None:
                if self._writer is None:
                    self._path.parent.mkdir(parents=True, exist_ok=True)
                    self._writer = pq.ParquetWriter(self._path, batch.schema)
                self._writer.write_batch(batch)
            yield batch

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
