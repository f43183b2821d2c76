"""Materialisation jobs: offline Parquet -> online store + batch snapshot, recorded in the ledger.

    ledger: running ─▶ [per view: Feast offline read ─▶ fast online write (or Feast's Spark engine)]
                   ─▶ snapshots staged ─▶ succeeded ─▶ snapshots published
                 └──────────────────────── any error ───────────────────────▶ failed (with the error)

While it runs, the job records its progress in the ledger after every chunk written online (per
view, rows read and written so far) and after every snapshot: a killed job's row is then
recorded with what it had written, ending when it was last seen.

The online write of a view is idempotent (a row never overwrites one with a later event time, and
an equal row is left alone), so re-running a failed or killed job converges to the same online
state. An incremental job reads again the region's lateness window before the previous job's end
(``materialization.lateness_hours``): a row that arrived late, after that job had read past its
event time, is loaded when it is newer than what is online, and counted late in the ledger; so is
one of any event time created since the previous job started (less that window).

One job per region runs at a time: two would merge their rows into the same snapshots at once
(one's rows lost, or a snapshot credited to a job the ledger says failed), so a second is refused
while the first holds the region's job lock.

Sources are checked against the views' declared schemas first (the data contract): strict by
default, a breach fails the job before anything is written; with ``quarantine`` the rows that
break it are set aside beside the job (``quarantine.py``), counted in the ledger and the lineage.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from feast.infra.common.materialization_job import MaterializationTask
from feast.infra.offline_stores.offline_utils import get_offline_store_from_config
from feast.infra.online_stores.helpers import get_online_store_from_config
from openlineage.client.event_v2 import RunState
from tqdm import tqdm

from fedstore.regions.errors import JobRunning, MaterializationError, RegionError
from fedstore.regions.progress import progress
from fedstore.regions.store.definitions import batch_source
from fedstore.regions.store.engine import FastMaterializationEngine, ViewMaterialization, redis_target
from fedstore.regions.store.fingerprint import source_fingerprints
from fedstore.regions.store.ledger import RUNNING, SUCCEEDED, JobLedger, JobRecord
from fedstore.regions.store.lineage import ContractFacetData, file_dataset, online_dataset
from fedstore.regions.store.node import RegionNode
from fedstore.online import BEHIND, LOST, Load, OnlineMarker, RespError
from fedstore.regions.store.quarantine import Quarantine
from fedstore.regions.store.snapshot import publish_staged, settle_staged, snapshot_path, staged_dir, write_snapshot

if TYPE_CHECKING:
    from feast import FeatureView

    from fedstore.regions.store.spark_engine import SparkMaterializer

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
LOCK_FILE = "materialize.lock"


@dataclass(frozen=True)
class MaterializeRequest:
    views: tuple[str, ...] = ()  # empty: every registered view
    incremental: bool = False
    end: datetime | None = None  # default: now
    show_progress: bool = True
    # rows breaking the data contract are set aside (quarantine/<job>/<view>.parquet), the rest loaded;
    # False: strict, the job fails on the first breach; None: the region's materialization.on_contract_violation
    quarantine: bool | None = None


def materialize(
    node: RegionNode,
    request: MaterializeRequest,
    *,
    say: Callable[[str], None] = lambda _: None,
) -> JobRecord:
    """Run one materialisation job for a region; returns its ledger record (succeeded)."""
    now = datetime.now(timezone.utc)
    end = (request.end or now).astimezone(timezone.utc)
    if end > now:
        # the ledger would record the views as materialised up to then, and every incremental job
        # before that time would be refused
        raise RegionError(f"{node.code}: the window end {end.isoformat()} is in the future (now {now:%Y-%m-%d %H:%M} "
                          f"UTC; a time without an offset is UTC)")
    if request.quarantine is None:
        request = replace(request, quarantine=node.region.materialization.on_contract_violation == "quarantine")
    if request.quarantine and node.region.materialization.engine == "spark":
        # Feast's Spark engine reads the source itself: the rows breaking the contract cannot be set aside
        raise RegionError(f"{node.code}: --quarantine needs the local engine (this region materialises with "
                          "Feast's Spark engine, which reads the sources itself); run without it")
    with _job_lock(node):
        return _run(node, request, end, now, say)


@contextmanager
def _job_lock(node: RegionNode) -> Iterator[None]:
    """Hold the region's materialisation lock for the whole job, or refuse at once.

    An flock, so a killed job's lock goes with its process and never needs clearing by hand.
    """
    node.data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(node.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JobRunning(_running_message(node, node.data_dir / LOCK_FILE)) from None
        yield
    finally:
        os.close(fd)  # releases the lock


job_lock = _job_lock  # erasure (regions/consent/erasure.py) holds it too: no snapshot merge runs while it rewrites them


def _running_message(node: RegionNode, lock: Path) -> str:
    running = node.ledger.jobs(status=RUNNING, limit=1)
    if not running:  # the holder has not written its ledger row yet
        return (f"{node.code}: another materialisation job of this region is starting (it holds {lock}); "
                "nothing was done: run again when it has finished")
    job = running[0]
    return (f"{node.code}: materialisation job {job.job_id} is still running (process {job.pid} on {job.host}, "
            f"started {job.started_at:%Y-%m-%d %H:%M:%S} UTC); nothing was done: run again when it has finished")


def _run(node: RegionNode, request: MaterializeRequest, end: datetime, now: datetime,
         say: Callable[[str], None]) -> JobRecord:
    for abandoned in node.ledger.recover_abandoned(none_running=True):  # we hold the region's job lock
        say(f"{node.code}: job {abandoned.job_id} was abandoned by a dead process; marked failed")
    # a killed job leaves its staged rows (as large as what it read); no other job runs to need them
    shutil.rmtree(node.data_dir / "staging", ignore_errors=True)
    # and its staged snapshots: published if the ledger says it succeeded, else dropped
    for published in settle_staged(node.data_dir, lambda job_id: _succeeded(node.ledger, job_id)):
        say(f"{node.code}: published the snapshots of job {published}, which ended before it could")
    views = node.feature_views(list(request.views))
    sources = node.require_sources(views, check_columns=False)  # checked inside the job: a bad source fails it
    store = node.store
    target = redis_target(store.config)
    marker = OnlineMarker(target, store.project) if target is not None else None
    refill = _views_to_refill(node, [fv.name for fv in views], marker, say) if request.incremental else set()
    windows: dict[str, tuple[datetime, datetime]] = {}
    # per view, the previous job's window end: rows written from before it arrived late
    late_before: dict[str, datetime | None] = {}
    # per view, rows created since then are read whatever their event time: the previous job's
    # start, less the lateness window for rows that landed a while after they were created
    created_since: dict[str, datetime | None] = {}
    lateness = timedelta(hours=node.region.materialization.lateness_hours)
    tracks_created = node.region.materialization.engine != "spark"  # Feast's Spark engine reads a window only
    for fv in views:
        # ends and starts a clock ahead recorded (after now) are no watermark: never a window that ends before it starts
        watermark = node.ledger.watermark(fv.name, now) if request.incremental and fv.name not in refill else None
        if watermark is not None and watermark > end:
            raise MaterializationError(
                f"{node.code}: {fv.name} is already materialised up to {watermark.isoformat()}, "
                f"after the requested end {end.isoformat()}"
            )
        late_before[fv.name] = watermark
        windows[fv.name] = (_lateness_start(watermark, lateness), end)
        previous = node.ledger.last_start(fv.name, now) if watermark is not None and tracks_created else None
        created_since[fv.name] = _lateness_start(previous, lateness) if previous is not None else None
    prints = [f.as_dict() for f in source_fingerprints(sources, node.data_dir, node.fingerprints)]
    job = node.ledger.start(
        mode="incremental" if request.incremental else "full",
        views=[fv.name for fv in views],
        windows=windows,
        sources=prints,
    )
    columns = {fv.name: _columns(fv) for fv in views}
    inputs = [file_dataset(node.data_dir / str(p["path"])) for p in prints]
    online = {fv.name: online_dataset(node.region.online_store, store.project, fv.name, columns[fv.name]) for fv in views}
    snapshots = [file_dataset(snapshot_path(node.data_dir, fv.name), columns[fv.name]) for fv in views]
    outputs = [*online.values(), *snapshots]
    nominal = (min(w[0] for w in windows.values()), end) if windows else None
    node.lineage.emit(RunState.START, job_id=job.job_id, job_name="materialize", inputs=inputs, outputs=outputs,
                      window=nominal)
    say(f"{node.code}: job {job.job_id} started ({job.mode}, {len(views)} views)")

    engine: FastMaterializationEngine | SparkMaterializer
    if node.region.materialization.engine == "spark":
        from fedstore.regions.store.spark_engine import SparkMaterializer  # imports pyspark only when chosen

        say(f"{node.code}: materialising with Feast's Spark engine ({node.region.materialization.spark_master})")
        engine = SparkMaterializer(store)
    else:
        engine = FastMaterializationEngine(
            repo_config=store.config,
            offline_store=get_offline_store_from_config(store.config.offline_store),
            online_store=get_online_store_from_config(store.config.online_store),
        )
    per_view: dict[str, dict[str, int | str | None]] = {}
    results: list[ViewMaterialization] = []
    staging = node.data_dir / "staging" / job.job_id
    try:
        node.check_sources(views, quarantine=bool(request.quarantine))
        if marker is not None:
            marker.begin(job.job_id)
        for fv in views:
            # until the view is done its counts are unknown: a job failing half-way through it has
            # written some of its rows online, and the ledger must not say it wrote none
            per_view[fv.name] = dict.fromkeys(("rows_read", "rows_written", "rows_skipped", "rows_late"))
            start, stop = windows[fv.name]
            delta = staging / f"{fv.name}.parquet"
            task = MaterializationTask(
                project=store.project,
                feature_view=fv,
                start_time=start,
                end_time=stop,
                tqdm_builder=_progress_bar(f"{node.code} {fv.name}", request.show_progress),
            )
            quarantine = Quarantine(node.data_dir / "quarantine" / job.job_id / f"{fv.name}.parquet")
            if request.quarantine:
                per_view[fv.name]["rows_quarantined"] = None
            if isinstance(engine, FastMaterializationEngine):  # (Feast's Spark engine reports no chunks)
                result = engine.materialize_view(task, delta_path=delta, late_before=late_before[fv.name],
                                                 created_since=created_since[fv.name],
                                                 quarantine=quarantine if request.quarantine else None,
                                                 on_chunk=_Progress(node.ledger, job.job_id, per_view, fv.name))
            else:  # quarantine is refused for Spark before the job
                result = engine.materialize_view(task, delta_path=delta, late_before=late_before[fv.name],
                                                 created_since=created_since[fv.name])
            results.append(result)
            per_view[fv.name] = {
                "rows_read": result.rows_read,
                "rows_written": result.rows_written,
                "rows_skipped": result.rows_skipped_stale,
                # counted only where a previous window was read again (incremental jobs)
                "rows_late": result.rows_late if late_before[fv.name] is not None else None,
            }
            if request.quarantine:
                per_view[fv.name].update(_quarantined(quarantine))
            node.ledger.heartbeat(job.job_id, per_view)
            say(f"{node.code}: {fv.name}: read {result.rows_read:,} rows, {_quarantine_note(quarantine, request)}"
                f"{_written(result)} via {result.path}{_late(result, late_before[fv.name])}")
        for fv, result in zip(views, results, strict=False):
            write_snapshot(
                node.data_dir,
                fv.name,
                result.delta_path,
                join_keys=[e.name for e in fv.entity_columns],
                timestamp_field=batch_source(fv).timestamp_field,
                job_id=job.job_id,
                stage=True,  # published with the job's success, all together
            )
            store.registry.apply_materialization(fv, store.project, result.start, result.end, commit=True)
            node.ledger.heartbeat(job.job_id, per_view)
        # after every row: a marker promises the rows are there, so none is written if the store
        # was emptied while the job ran (the rows it wrote before that are gone)
        if marker is not None and not marker.finish(job.job_id, {fv.name: Load(job.job_id, job.started_at) for fv in views}):
            raise MaterializationError(
                "the online store was emptied while the job ran (Redis restarted without persistence, or was "
                "flushed): the rows it wrote before that are gone; run the job again"
            )
    except (Exception, KeyboardInterrupt) as e:
        # Ctrl-C too: left running, the job was recorded later as abandoned by a dead process, with
        # none of the rows the views done before it had written online
        interrupted = isinstance(e, KeyboardInterrupt)
        message = "interrupted (Ctrl-C)" if interrupted else f"{type(e).__name__}: {e}"
        node.ledger.fail(job.job_id, message, per_view)
        shutil.rmtree(staged_dir(node.data_dir, job.job_id), ignore_errors=True)  # never published
        node.lineage.emit(RunState.FAIL, job_id=job.job_id, job_name="materialize", inputs=inputs, outputs=outputs,
                          window=nominal, error=message, contract=_contract(request, per_view))
        if interrupted:
            raise
        raise MaterializationError(f"{node.code}: job {job.job_id} failed: {message}") from e
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if marker is not None:
            marker.close()
    marked = tuple(fv.name for fv in views) if marker is not None else ()
    record = node.ledger.succeed(job.job_id, per_view, marked_online=marked)
    publish_staged(node.data_dir, job.job_id)  # a kill before this: the next job publishes them
    written = [replace(d, rows=n if isinstance(n := per_view.get(view, {}).get("rows_written"), int) else None)
               for view, d in online.items()]
    node.lineage.emit(RunState.COMPLETE, job_id=job.job_id, job_name="materialize", inputs=inputs,
                      outputs=[*written, *snapshots], window=nominal, contract=_contract(request, per_view))
    late = f", {record.rows_late:,} late rows loaded" if record.rows_late else ""
    say(f"{node.code}: job {job.job_id} succeeded in {record.duration_s:.1f}s{late}")
    return record


def _columns(fv: FeatureView) -> tuple[tuple[str, str], ...]:
    """A view's columns as lineage's schema facet lists them: join keys, then features."""
    keys = tuple((c.name, str(c.dtype)) for c in fv.entity_columns)
    return keys + tuple((f.name, str(f.dtype)) for f in fv.features)


class _Progress:
    """Per chunk a view writes online, the job's progress so far, recorded in the ledger (one small
    commit per chunk of thousands of rows)."""

    def __init__(self, ledger: JobLedger, job_id: str, per_view: dict[str, dict[str, int | str | None]], view: str) -> None:
        self.ledger, self.job_id, self.per_view, self.view = ledger, job_id, per_view, view
        self.read = self.written = 0

    def __call__(self, rows: int, written: int) -> None:
        self.read += rows
        self.written += written
        so_far: dict[str, int | str | None] = {"rows_read": self.read, "rows_written": self.written,
                                         "rows_skipped": self.read - self.written, "rows_late": None}
        self.ledger.heartbeat(self.job_id, {**self.per_view, self.view: so_far})


def _succeeded(ledger: JobLedger, job_id: str) -> bool:
    try:
        return ledger.get(job_id).status == SUCCEEDED
    except KeyError:
        return False


def _lateness_start(watermark: datetime | None, lateness: timedelta) -> datetime:
    """Where a view's window starts: the previous end less the lateness window (never before 1970)."""
    if watermark is None:
        return EPOCH
    return EPOCH if watermark - EPOCH <= lateness else watermark - lateness


def _views_to_refill(
    node: RegionNode, views: list[str], marker: OnlineMarker | None, say: Callable[[str], None]
) -> set[str]:
    """Views an incremental job must load in full: the online store lost their rows (no marker) or
    holds older ones (an earlier job's marker), so loading from the watermark would leave them
    missing or stale for good."""
    expected = node.ledger.online_loads() if marker is not None else {}
    wanted = [v for v in views if v in expected]
    if marker is None or not wanted:
        return set()
    try:
        found = marker.read()
    except RespError:
        return set()  # the store cannot be asked: the job's own writes fail and say why
    states = node.ledger.online_states({v: expected[v] for v in wanted}, found)
    refill = set()
    for view in wanted:
        load, state = expected[view], states[view]
        if state == LOST:
            say(f"{node.code}: {view}: the online store no longer holds this view's rows (the marker of job "
                f"{load.job_id} is gone: Redis restarted without persistence, or was flushed); "
                "loading it in full instead of incrementally")
        elif state == BEHIND:
            older = found[view]
            say(f"{node.code}: {view}: the online store holds older rows than the ledger's last load (job "
                f"{older.job_id if older else '?'} instead of {load.job_id}: restored from an earlier backup?); "
                "loading it in full instead of incrementally")
        else:
            continue
        refill.add(view)
    return refill


def _progress_bar(label: str, show: bool) -> Callable[[int], tqdm]:
    # Feast types a task's builder as returning a tqdm bar; engines only call update() and close()
    return lambda n: progress(label, total=n, show=show)


def _written(result: ViewMaterialization) -> str:
    if result.rows_written is None:
        return "wrote up to that many entities (the engine does not report how many were already newer online)"
    return f"wrote {result.rows_written:,} entities ({result.rows_skipped_stale or 0:,} already online as new or newer)"


def _late(result: ViewMaterialization, late_before: datetime | None) -> str:
    if late_before is None or result.rows_late is None:
        return ""
    return (f"; {result.rows_late:,} late rows written (event time before the previous end, "
            f"{late_before:%Y-%m-%d %H:%M} UTC)")


def _quarantined(quarantine: Quarantine) -> dict[str, int | str | None]:
    written = quarantine.written
    return {"rows_quarantined": quarantine.rows, "quarantine_file": str(written) if written else None}


def _quarantine_note(quarantine: Quarantine, request: MaterializeRequest) -> str:
    if not request.quarantine:
        return ""
    if quarantine.written is None:
        return "0 quarantined, "
    return f"{quarantine.rows:,} quarantined \u2192 {quarantine.written}, "


def _contract(request: MaterializeRequest, per_view: dict[str, dict[str, int | str | None]]) -> ContractFacetData:
    """What the data contract rejected, per view (the lineage events' facet)."""
    rejected = {view: {"rowsQuarantined": counts.get("rows_quarantined"), "quarantineFile": counts.get("quarantine_file")}
                for view, counts in per_view.items() if "rows_quarantined" in counts} if request.quarantine else {}
    return ContractFacetData("quarantine" if request.quarantine else "strict", rejected)
