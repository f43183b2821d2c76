"""`fedstore region erase`: remove one person from everything the region holds, with a receipt.

Sources are owned upstream (the region reads them, never writes them), so the entity is put on the
region's erasure list first (``erasure_list.py``: every later read — materialisation, statistics,
training examples, training sets, and so the snapshot merge — leaves it out), then removed from
what the region itself wrote: its online key (Redis: Feast's key, ``serialize_entity_key`` +
project, one hash for every view; SQLite: its rows in each view's Feast table), every Parquet file
it keeps rows in (published and staged snapshots, quarantined rows; each rewritten beside itself and
renamed over it, atomically), and the serving node's compiled snapshot packs of the views rewritten.
The receipt (what was removed where) is the erasure's row in the ledger. It runs under the region's
job lock, so no materialisation job is merging a snapshot meanwhile.

Statistics already released are not personal data and stay: they are noisy aggregates with
differential privacy over entities, so no released number says anything specific about one person.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import duckdb
import pyarrow.parquet as pq
from feast import FeatureView
from feast.value_type import ValueType
from redis.exceptions import RedisError

from fedstore.regions.datasets.manifest import list_manifests
from fedstore.regions.errors import RegionError, UnknownName
from fedstore.regions.store.materialize import job_lock
from fedstore.regions.store.node import RegionNode
from fedstore.regions.store.online_entries import online_entries, remove_online

SERVING_CACHE = "serving-cache"  # the serving node's compiled snapshots (serving/snapshot_pack.py)
_KEPT_ROWS = ("snapshots", "snapshots-staged", "quarantine")  # folders of Parquet files the region wrote


@dataclass(frozen=True)
class EntityRef:
    join_key: str
    value: int | str

    def __str__(self) -> str:
        return f"{self.join_key}={self.value}"


@dataclass(frozen=True)
class ErasureReceipt:
    receipt_id: str
    entity: str
    erased_at: str
    online_store: str
    online_entries_removed: int  # Redis: the entity's key (one hash, every view); SQLite: its rows in every view's table
    files_rewritten: dict[str, int] = field(default_factory=dict)  # file (relative) -> rows removed
    serving_packs_removed: int = 0
    statistics_released: str = "kept: noisy aggregates under differential privacy are not personal data"


@dataclass(frozen=True)
class ErasureCheck:
    entity: str
    receipts: list[str]
    online_keys: int
    file_rows: dict[str, int]  # files the region wrote that still hold rows of it
    new_datasets: dict[str, int]  # datasets built after its erasure that hold rows of it
    older_datasets: dict[str, int]  # datasets built before it (the caller's files: delete or rebuild them)

    @property
    def clean(self) -> bool:
        return bool(self.receipts) and not self.online_keys and not self.file_rows and not self.new_datasets


def parse_entity(node: RegionNode, text: str) -> EntityRef:
    """``customer_id=123``: a join key of one of the region's entities and a value of its type."""
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key or not raw:
        raise RegionError(f"--entity {text!r}: expected JOIN_KEY=VALUE, e.g. customer_id=123")
    kinds = {e.join_key: e.value_type for e in node.store.list_entities(allow_cache=True)}
    if key not in kinds:
        raise UnknownName(f"--entity {text!r}: region {node.code} has no entity with join key {key!r} "
                          f"(join keys: {', '.join(sorted(kinds))})")
    if kinds[key] in (ValueType.INT64, ValueType.INT32):
        try:
            return EntityRef(key, int(raw))
        except ValueError:
            raise RegionError(f"--entity {text!r}: {key} is an integer key, not {raw!r}") from None
    return EntityRef(key, raw)


def erase(node: RegionNode, entity: EntityRef, *, now: datetime | None = None) -> ErasureReceipt:
    now = now or datetime.now(timezone.utc)
    views = _views_of(node, entity)
    with job_lock(node):
        # listed first: a process killed half-way leaves an entity every read already excludes,
        # and erasing it again removes the rest
        receipt_id = node.ledger.record_erasure(entity.join_key, entity.value, {"status": "started"}, now)
        with _online_store(node, f"{entity} is on the erasure list (every later read leaves it out); run the erase "
                                 "again once the online store answers, to remove it there and from the snapshots"):
            keys = remove_online(node.store, node.data_dir, entity.join_key, entity.value, views)
        files = {}
        for path in _kept_files(node):
            removed = _rewrite_without(path, entity)
            if removed:
                files[str(path.relative_to(node.data_dir))] = removed
        packs = _remove_packs(node, {Path(f).stem for f in files if f.startswith("snapshots/")})
        receipt = ErasureReceipt(receipt_id, str(entity), now.isoformat(), node.region.online_store.type, keys, files,
                                 packs)
        node.ledger.complete_erasure(receipt_id, asdict(receipt))
    return receipt


def check_erasure(node: RegionNode, entity: EntityRef) -> ErasureCheck:
    """What still holds the entity: online key, rows in files the region wrote, datasets built since."""
    receipts = node.ledger.erasures(entity.join_key, entity.value)
    first = min((datetime.fromisoformat(r["erased_at"]) for r in receipts), default=None)
    files = {}
    for path in _kept_files(node):
        n = _count(path, entity)
        if n:
            files[str(path.relative_to(node.data_dir))] = n
    new: dict[str, int] = {}
    older: dict[str, int] = {}
    for listed in list_manifests(node.data_dir):
        m = listed.manifest
        if m is None or listed.replaced_by or not Path(m.output).exists():
            continue
        n = _count(Path(m.output), entity)
        if n:
            after = first is not None and datetime.fromisoformat(m.created_at) >= first
            (new if after else older)[m.output] = n
    with _online_store(node, "nothing was proved"):
        online = online_entries(node.store, node.data_dir, entity.join_key, entity.value, _views_of(node, entity))
    return ErasureCheck(str(entity), [r["receipt_id"] for r in receipts], online, files, new, older)


@contextmanager
def _online_store(node: RegionNode, outcome: str) -> Iterator[None]:
    """An online store that does not answer, in one line."""
    try:
        yield
    except (RedisError, OSError, sqlite3.Error) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RegionError(f"region {node.code}: the online store ({node.region.online_store.type}) did not answer "
                          f"({reason}); {outcome}") from None


def _views_of(node: RegionNode, entity: EntityRef) -> list[FeatureView]:
    return [fv for fv in node.feature_views(online_only=False) if entity.join_key in {e.name for e in fv.entity_columns}]


def _kept_files(node: RegionNode) -> list[Path]:
    return sorted(p for d in _KEPT_ROWS for p in (node.data_dir / d).rglob("*.parquet"))


def _count(path: Path, entity: EntityRef) -> int:
    if entity.join_key not in pq.read_schema(path).names:
        return 0
    with closing(duckdb.connect()) as con:
        row = con.execute(f"SELECT count(*) FROM read_parquet(?) WHERE CAST({_quote(entity.join_key)} AS VARCHAR) = ?",
                          [str(path), str(entity.value)]).fetchone()
    return int(row[0]) if row else 0


def _rewrite_without(path: Path, entity: EntityRef) -> int:
    """Rewrite a Parquet file without the entity's rows (out of core, its metadata kept); the rows removed."""
    removed = _count(path, entity)
    if not removed:
        return 0
    meta = pq.read_schema(path).metadata or {}
    kv = ", ".join(f"'{_literal(k.decode())}': '{_literal(v.decode())}'" for k, v in meta.items()
                   if not k.startswith(b"ARROW"))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.erase.tmp")
    with closing(duckdb.connect()) as con:
        con.execute(f"COPY (SELECT * FROM read_parquet(?) WHERE CAST({_quote(entity.join_key)} AS VARCHAR) "
                    f"IS DISTINCT FROM ?) TO '{_literal(str(tmp))}' (FORMAT parquet"
                    f"{f', KV_METADATA {{{kv}}}' if kv else ''})", [str(path), str(entity.value)])
    tmp.replace(path)  # a reader sees the old file or the new one, never half
    return removed


def _remove_packs(node: RegionNode, views: set[str]) -> int:
    """Remove the serving node's compiled packs of rewritten snapshots (it compiles the new one when
    it sees the snapshot change; a process still mapping an old pack keeps its mapping until then)."""
    cache = node.data_dir / SERVING_CACHE
    removed = 0
    for view in sorted(views):
        if not cache.is_dir():
            break
        fd = os.open(cache / f"{view}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # the lock a compiling worker holds
            for pack in cache.glob(f"{view}@*.pack"):
                pack.unlink(missing_ok=True)
                removed += 1
        finally:
            os.close(fd)
    return removed


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return text.replace("'", "''")


def receipt_json(receipt: ErasureReceipt | ErasureCheck) -> str:
    return json.dumps(asdict(receipt), indent=2, sort_keys=True)
