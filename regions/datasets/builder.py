"""Builds a point-in-time-correct training set from a region's history, in bounded memory.

    entity file ──▶ Feast get_historical_features (the region's offline store: one DuckDB ASOF
                    join, TTL honoured, nothing from after each row's event time, regions/store/
                    offline_store.py) ──COPY, streamed──▶ Parquet ──▶ manifest + region index

In that same query, before any view is joined, the entity rows pass ``consent_filter.py`` (only
when it changes anything): erased entities are dropped, and those without consent for local
training at each row's time are dropped or marked (``consent``); the manifest records the consent
snapshot used and what it changed.

The output is written to a temporary file and renamed only when complete: a failed or
interrupted build leaves no partial dataset behind.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Callable

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from feast import FeatureService, FeatureView
from feast.errors import FeatureServiceNotFoundException

from fedstore.federation.consent import Purpose
from fedstore.regions.consent import consent_gate
from fedstore.regions.datasets.consent_filter import MARK_COLUMN, MODES, TrainingSetFilter
from fedstore.regions.datasets.entities import TIMESTAMP, EntityFile
from fedstore.regions.datasets.manifest import DatasetManifest, manifest_path, read_manifest, record, require_index
from fedstore.regions.errors import InvalidEntities, InvalidOutput, InvalidSource, RegionNotReady, UnknownName
from fedstore.regions.processes import alive
from fedstore.regions.progress import progress
from fedstore.regions.store.fingerprint import fingerprint, source_fingerprints
from fedstore.regions.store.node import RegionNode
from fedstore.regions.store.erasure_list import read_erased
from fedstore.regions.store.offline_store import OFFLINE_STORE_TYPE, AsofRetrievalJob
from fedstore.regions.store.parquet_output import require_compression
from fedstore.regions.store.source_files import is_glob
from fedstore.regions.store.point_in_time import literal, quote

_ARROW_TYPES = {"INT64": pa.int64(), "INT32": pa.int32(), "STRING": pa.string()}


@dataclass(frozen=True)
class TrainingSetRequest:
    entities: Path
    feature_service: str
    out: Path
    label: str | None = None
    chunk_rows: int = 122_880  # rows per row group of the output (DuckDB's default): what a reader holds at once
    compression: str = "auto"  # of the output's columns: auto (where it pays) | none | snappy | zstd | lz4 | gzip
    consent: str = "exclude"  # rows without consent for local training: exclude | mark
    show_progress: bool = True


@dataclass(frozen=True)
class Plan:
    refs: list[str]
    views: list[FeatureView]
    join_keys: dict[str, pa.DataType]


def plan(node: RegionNode, feature_service: str, label: str | None) -> Plan:
    """The feature refs, views and join keys of a request, checked against the region's registry."""
    if not node.is_applied:
        raise RegionNotReady(
            f"region {node.code} has no registry yet: run `fedstore region apply --region {node.code}` first"
        )
    store = node.store
    store.refresh_registry()  # once; every lookup below then reads the cached registry
    try:
        service: FeatureService = store.get_feature_service(feature_service, allow_cache=True)
    except FeatureServiceNotFoundException:
        known = ", ".join(sorted(s.name for s in store.list_feature_services()))
        raise UnknownName(f"unknown feature service {feature_service!r}; region {node.code} has {known}") from None
    refs = [f"{p.name_to_use()}:{f.name}" for p in service.feature_view_projections for f in p.features]
    used = [store.get_feature_view(p.name, allow_registry_cache=True) for p in service.feature_view_projections]
    if label:
        views = {fv.name: fv for fv in store.list_feature_views(allow_cache=True)}
        holders = [v for v in views.values() if v.tags.get("role") == "label" and label in {f.name for f in v.features}]
        if not holders:
            labels = sorted(f.name for v in views.values() if v.tags.get("role") == "label" for f in v.features)
            raise UnknownName(f"unknown label {label!r}; region {node.code} has labels {', '.join(labels) or 'none'}")
        refs.append(f"{holders[0].name}:{label}")
        used.append(holders[0])
    join_keys = {
        e.name: _ARROW_TYPES.get(e.dtype.to_value_type().name, pa.string()) for v in used for e in v.entity_columns
    }
    return Plan(refs=refs, views=list(dict.fromkeys(used)), join_keys=join_keys)


def build_training_set(
    node: RegionNode,
    request: TrainingSetRequest,
    *,
    say: Callable[[str], None] = lambda _: None,
) -> DatasetManifest:
    began = time.perf_counter()
    if request.consent not in MODES:
        raise InvalidEntities(f"consent must be {' or '.join(MODES)}, got {request.consent!r}")
    try:
        require_compression(request.compression)
    except ValueError as e:
        raise InvalidOutput(str(e)) from None
    p = plan(node, request.feature_service, request.label)
    entities = EntityFile(request.entities, p.join_keys)
    features = [r.split(":", 1)[1] for r in p.refs]
    added = [*features, MARK_COLUMN] if request.consent == "mark" else features
    clash = [c for c in entities.passthrough if c in added]
    if clash:  # Feast would fail deep inside the join with a duplicate column
        raise InvalidEntities(
            f"entity file {request.entities} has a column {clash[0]!r} named like a feature the training set "
            f"adds; rename or drop it"
        )
    node.require_sources(p.views)
    gate = TrainingSetFilter(consent_gate(node.region, Purpose.LOCAL_TRAINING), read_erased(node.data_dir),
                             entities.key_types, request.consent)
    out = request.out
    _check_output(out, request.entities, entities.files)
    require_index(node.data_dir, node.code)
    earlier = read_manifest(manifest_path(out)) if out.exists() else None
    previous = earlier.dataset_id if earlier else None  # built at this path before: said when replaced
    _remove_abandoned_partials(out)
    # named by host and process, so a later build can tell a killed build's leftovers from a running one's
    tmp = out.with_name(f".{out.name}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
    manifest_tmp = tmp.with_name(f"{tmp.name}.manifest")
    bar = progress(f"{node.code} training set", total=entities.rows, show=request.show_progress)
    try:
        try:
            tmp.touch(exist_ok=False)  # can we write there at all? Before the expensive join
        except OSError as e:
            raise InvalidOutput(f"cannot write the training set to {out}: {e.strerror}") from None
        entities.require_times()
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fedstore-fingerprint") as pool:
            # the entity file's digest for the manifest, read while the join reads the same bytes
            entity_print = pool.submit(_entity_fingerprint, entities)
            written = _join_to_parquet(node, request.entities, p, tmp, request.chunk_rows, request.compression,
                                       gate if gate.changes_anything else None)
        if gate.changes_anything:
            gate.count(request.entities, entities.rows, tmp, written)
            if gate.kept == 0:
                raise InvalidEntities(
                    f"every row of {request.entities} is of an erased entity or one without consent for local "
                    f"training in region {node.code} ({gate.rows_erased} erased, {gate.rows_without_consent} "
                    f"without consent); no training set was written")
        bar.update(entities.rows)
        schema = pq.read_schema(tmp)
        rows, nulls, (lo, hi) = _summary(tmp, features)
        manifest = _manifest(node, request, p, schema, entities, entity_print.result(), rows, nulls, (lo, hi),
                             began, out)
        manifest = replace(manifest, consent=gate.basis())
        # the manifest is complete before the dataset takes its name, and the old one goes first: a
        # process killed in between leaves a dataset without a manifest, never one beside another
        # dataset's manifest (fingerprinting the sources after the rename took long enough to hit)
        path = manifest_path(out)
        manifest_tmp.write_text(manifest.to_json(), encoding="utf-8")
        path.unlink(missing_ok=True)
        tmp.replace(out)
        manifest_tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        manifest_tmp.unlink(missing_ok=True)
        raise
    finally:
        bar.close()
    record(node.data_dir, manifest, path.resolve())
    replaced = f", replacing dataset {previous}" if previous else ""
    say(f"{node.code}: wrote {rows:,} rows × {len(features)} features to {out} (manifest {path.name}{replaced})")
    return manifest


def _remove_abandoned_partials(out: Path) -> None:
    """Remove what builds to ``out`` killed on this host left (their hidden ``.partial`` dataset and
    manifest, as large as a training set); a running build's, or another host's, are kept."""
    here = socket.gethostname()
    prefix = f".{out.name}."
    for leftover in out.parent.glob(f"{glob.escape(prefix)}*.partial*"):
        name = leftover.name.removeprefix(prefix).split(".partial")[0]
        host, _, rest = name.rpartition(".")[0].rpartition(".")  # <host>.<pid>.<random>
        if host == here and rest.isdigit() and not alive(int(rest)):
            leftover.unlink(missing_ok=True)


def _join_to_parquet(node: RegionNode, entities: Path, p: Plan, dataset: Path, row_group_rows: int,
                     compression: str, gate: TrainingSetFilter | None) -> int:
    """The point-in-time join of the whole entity file by the region's offline store, its rows
    through ``gate`` first, streamed into ``dataset``; the rows written. The sources were checked
    before the build, but a build may run for minutes: a part removed or cut short by an upstream
    job since, or a damaged page the footers did not show, is said in one line."""
    job = node.store.get_historical_features(entity_df=str(entities), features=p.refs)
    if not isinstance(job, AsofRetrievalJob):  # the region's feature_store.yaml names the ASOF store
        raise RegionNotReady(f"region {node.code}: its offline store is not {OFFLINE_STORE_TYPE}; "
                             f"run `fedstore region apply --region {node.code}`")
    if gate is not None:
        job = job.filtered(gate.entity_filter())
    try:
        # rows carry their keys and time: no sort to keep the entity file's order
        return job.to_parquet(dataset, row_group_rows=row_group_rows, ordered=False, compression=compression)
    except duckdb.Error as e:
        raise unreadable_sources(node, p.views, e, "no training set was written") from None


def _summary(dataset: Path, features: list[str]) -> tuple[int, dict[str, int], tuple[datetime | None, datetime | None]]:
    """Rows, nulls per feature and the entity time range of a written dataset, from the statistics
    DuckDB wrote in its footer (a scan only where a row group has none)."""
    meta = pq.read_metadata(dataset)
    names = meta.schema.to_arrow_schema().names
    nulls = dict.fromkeys(features, 0)
    lo = hi = None
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for f in features:
            stats = group.column(names.index(f)).statistics
            if stats is None or not stats.has_null_count:
                return _scanned_summary(dataset, features)
            nulls[f] += stats.null_count
        ts = group.column(names.index(TIMESTAMP)).statistics
        if group.num_rows and (ts is None or not ts.has_min_max):
            return _scanned_summary(dataset, features)
        if group.num_rows:
            lo = ts.min if lo is None or ts.min < lo else lo
            hi = ts.max if hi is None or ts.max > hi else hi
    return meta.num_rows, nulls, (lo, hi)


def _scanned_summary(dataset: Path, features: list[str]) -> tuple[int, dict[str, int], tuple[datetime | None, datetime | None]]:
    nulls = ", ".join(f"count(*) - count({quote(f)})" for f in features)
    conn = duckdb.connect()
    try:
        conn.execute("SET TimeZone = 'UTC'")
        row = conn.execute(f"SELECT count(*), min({quote(TIMESTAMP)}), max({quote(TIMESTAMP)}), {nulls} "
                           f"FROM read_parquet({literal(str(dataset))})").fetchone()
    finally:
        conn.close()
    assert row is not None
    return int(row[0]), {f: int(n) for f, n in zip(features, row[3:])}, (row[1], row[2])


def unreadable_sources(node: RegionNode, views: list[FeatureView], e: duckdb.Error, outcome: str) -> InvalidSource:
    """One line for a DuckDB error of Feast's point-in-time join over the region's sources."""
    # DuckDB adds the query and a caret on further lines; through Feast's ibis a damaged page
    # arrives as "don't know what type", so the sources read are named too
    reason = str(e).splitlines()[0]
    read = ", ".join(str(node.source_path(v)) for v in views)
    return InvalidSource(f"region {node.code}: the sources could not be read ({reason}; read: {read}); {outcome}")


def _manifest(
    node: RegionNode,
    request: TrainingSetRequest,
    p: Plan,
    schema: pa.Schema,
    entities: EntityFile,
    entity_print: dict[str, Any],
    rows: int,
    nulls: dict[str, int],
    time_range: tuple[datetime | None, datetime | None],
    began: float,
    out: Path,
) -> DatasetManifest:
    described = [(f.name, str(f.type)) for f in schema]
    region = node.region
    lo, hi = time_range
    return DatasetManifest(
        dataset_id=f"{node.code.lower()}-ds-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}",
        region=region.code,
        jurisdiction=region.jurisdiction,
        law=region.law,
        feature_service=request.feature_service,
        features=p.refs,
        label=request.label,
        schema=described,
        schema_hash=hashlib.sha256(json.dumps(described).encode()).hexdigest(),
        entity_file={**entity_print, "path": str(request.entities.resolve()), "rows": entities.rows},
        sources=[f.as_dict() for f in source_fingerprints([node.source_path(v) for v in p.views], node.data_dir,
                                                            node.fingerprints)],
        rows=rows,
        nulls=nulls,
        time_range=(lo.isoformat(), hi.isoformat()) if lo and hi else None,
        created_at=datetime.now(timezone.utc).isoformat(),
        duration_s=round(time.perf_counter() - began, 3),
        tool_version=_tool_version(),
        output=str(out.resolve()),
    )


def _entity_fingerprint(entities: EntityFile) -> dict[str, Any]:
    """The entity file's fingerprint; for a glob, each file's, and as ``sha256`` that of their
    digests in the glob's order (one value to compare two datasets' inputs by)."""
    files = [f.resolve() for f in entities.files]
    if not is_glob(entities.path):
        return fingerprint(files[0], files[0].parent).as_dict()
    base = entities.path.resolve().parent
    while is_glob(base):
        base = base.parent
    parts = [fingerprint(f, base) for f in files]
    combined = hashlib.sha256("".join(p.sha256 for p in parts).encode()).hexdigest()
    return {"sha256": combined, "bytes": sum(p.bytes for p in parts), "files": [p.as_dict() for p in parts]}


def _check_output(out: Path, entities: Path, files: list[Path]) -> None:
    """Refuse, before any work, an output that would replace the input (or, for a glob, be read as
    entities by the next build) or cannot be a file."""
    if out.resolve() in {f.resolve() for f in files} or (is_glob(entities) and out.resolve().match(str(entities.resolve()))):
        what = "the entity file itself" if not is_glob(entities) else f"one of the entity files {entities}"
        raise InvalidOutput(f"output {out} is {what}: the training set would overwrite its input")
    if out.is_dir():
        raise InvalidOutput(f"output {out} is a directory: give a file name, e.g. {out / 'train.parquet'}")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InvalidOutput(f"cannot create the output directory {out.parent}: {e.strerror}") from None


def _tool_version() -> str:
    try:
        return f"fedstore {version('fedstore')}"
    except PackageNotFoundError:
        return "fedstore (source tree)"
