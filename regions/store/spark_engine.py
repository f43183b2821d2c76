"""Materialisation on Feast's own Spark compute engine (``spark.engine``), for regions that
outgrow one machine.

Feast's engine reads the view's window through the region's offline store, deduplicates in Spark
and writes the online store from each executor (``mapInPandas`` → ``online_write_batch``). Around
it this module keeps what the local path keeps: the same latest-row-per-entity delta (read with
the same DuckDB query) for the batch snapshot, and per-view counts for the ledger and lineage.
Executors run this interpreter in local mode (``PYSPARK_PYTHON``); on a cluster the operator's
Spark image must carry the same packages.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path

from feast import FeatureStore
from feast.infra.common.materialization_job import (
    MaterializationJobStatus,
    MaterializationTask,
)
from feast.infra.offline_stores.offline_utils import get_offline_store_from_config
from feast.infra.online_stores.helpers import get_online_store_from_config

from fedstore.regions.store.engine import ViewMaterialization, _Counted
from fedstore.regions.store.erasure_list import read_erased
from fedstore.regions.store.online_entries import remove_erased_online
from fedstore.regions.store.source_reader import read_latest


class SparkMaterializer:
    def __init__(self, store: FeatureStore, *, chunk_rows: int = 100_000) -> None:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        from feast.infra.compute_engines.spark.compute import (
            SparkComputeEngine,  # pyspark is optional
        )

        self.store = store
        self.chunk_rows = chunk_rows
        self.offline_store = get_offline_store_from_config(store.config.offline_store)
        self.engine = SparkComputeEngine(
            repo_config=store.config, offline_store=self.offline_store,
            online_store=get_online_store_from_config(store.config.online_store),
        )

    def materialize_view(self, task: MaterializationTask, *, delta_path: Path | None = None,
                         late_before: datetime | None = None,
                         created_since: datetime | None = None) -> ViewMaterialization:
        """``late_before`` is not used: Feast's writer does not say which rows it wrote, so none are
        counted late (the ledger holds null). Nor is ``created_since``: Feast's engine reads the
        task's event-time window only, and the snapshot's rows must be the ones written online."""
        fv = task.feature_view
        counted = _Counted(read_latest(fv, task.start_time, task.end_time, config=self.store.config,
                                       offline_store=self.offline_store, batch_rows=self.chunk_rows), delta_path)
        try:
            for _ in counted:
                pass
        finally:
            counted.close()
        written: int | None = 0
        if fv.online and counted.rows:
            (job,) = self.engine.materialize(self.store.registry, [task])
            if job.status() != MaterializationJobStatus.SUCCEEDED:
                error = job.error()
                raise RuntimeError(f"Spark materialisation of {fv.name} failed: {error}") from error
            written = None  # Feast's writer skips values that are not newer; it does not say how many
            # Feast's engine read the sources itself, erased entities included: take them out again
            erased = read_erased(Path(self.store.repo_path))
            if erased:
                remove_erased_online(self.store, Path(self.store.repo_path), erased, fv)
        return ViewMaterialization(
            view=fv.name, start=task.start_time, end=task.end_time, rows_read=counted.rows, rows_written=written,
            rows_skipped_stale=None if written is None else 0, delta_path=delta_path if counted.rows else None,
            path="spark" if fv.online else "offline-only", rows_late=None if written is None else 0,
        )
