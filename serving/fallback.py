"""The batch snapshot in memory: what a region answers when its online store cannot.

Each view's ``snapshots/<view>.parquet`` (written by every materialisation) is loaded and reloaded
when the file changes (checked by the server's refresher). It is compiled once per host into a pack
(`snapshot_pack.py`) that every serving process of the host maps, so N worker processes share one
copy. It is held compactly: each feature is one buffer of values pre-encoded in Feast's stored form
plus an array of their ends (no Python object per value); the entity keys are sorted and searched
by bisection — integers as themselves, any other key (strings, several join keys) by a canonical
byte form; event times and job ids are arrays. A fallback answer slices the few rows it needs, so
it costs about what an online answer does. (Holding a Python ``bytes`` per value took ~1.1 GB and
2.8 s per million entities × 10 features in every process.)
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from feast.value_type import ValueType

from fedstore.online import Segment, encode_timestamps, encode_values, to_bytes
from fedstore.regions.store.snapshot import JOB_COLUMN, read_snapshot_info, snapshot_path
from fedstore.serving import snapshot_pack
from fedstore.serving.catalog import Resolved, ViewSpec
from fedstore.serving.entities import Entities
from fedstore.serving.online import ViewRows
from fedstore.serving.snapshot_pack import Built, Pack

_INT_KEYS = (ValueType.INT64, ValueType.INT32)


def canonical_key(key: tuple[object, ...]) -> bytes:
    """One byte form of an entity key, the same for the snapshot's values and a request's (both
    Python ints, strs, bytes): sortable, and never ending in a NUL byte (numpy's sort needs that)."""
    return repr(key).encode("utf-8")


class _Encoded:
    """One column, every row's bytes back to back in one buffer, with each row's end offset."""

    __slots__ = ("buffer", "base", "ends")

    def __init__(self, pack: Pack, name: str) -> None:
        self.buffer = pack.buffer
        self.base = pack.offset(name)
        self.ends = pack.array(f"{name}.ends", pack.header["ends"])

    def __getitem__(self, row: int) -> bytes:
        base, ends = self.base, self.ends
        return self.buffer[base + (ends[row - 1] if row else 0) : base + ends[row]]

    def __len__(self) -> int:
        return len(self.ends)


class _Keys(Protocol):
    def row(self, key: tuple[object, ...]) -> int | None: ...

    def rows(self, keys: list[tuple[object, ...]]) -> list[int | None]: ...


class _IntKeys:
    """One integer join key: the keys sorted, searched by bisection (16 bytes per entity)."""

    def __init__(self, pack: Pack) -> None:
        self.keys = pack.array("keys", "q")
        self.positions = pack.array("positions", "q")
        # numpy views of the same memory, for requests with many entities
        self._np_keys = np.frombuffer(self.keys, dtype=np.int64)
        self._np_positions = np.frombuffer(self.positions, dtype=np.int64)

    def row(self, key: tuple[object, ...]) -> int | None:
        k = key[0]
        i = bisect_right(self.keys, k) - 1  # type: ignore[call-overload]  # of repeated keys the last row wins
        if i >= 0 and self.keys[i] == k:
            return self.positions[i]
        return None

    def rows(self, keys: list[tuple[object, ...]]) -> list[int | None]:
        if len(keys) < 16:  # bisection per key is cheaper than numpy's fixed cost
            return [self.row(k) for k in keys]
        wanted = np.fromiter((k[0] for k in keys), dtype=np.int64, count=len(keys))
        at = np.searchsorted(self._np_keys, wanted, side="right") - 1
        hit = (at >= 0) & (self._np_keys[np.maximum(at, 0)] == wanted)
        found = self._np_positions[np.maximum(at, 0)]
        return [int(r) if h else None for r, h in zip(found.tolist(), hit.tolist(), strict=True)]


class _CanonicalKeys:
    """Any other key (strings, several join keys): the canonical byte forms sorted, bisected."""

    def __init__(self, pack: Pack) -> None:
        self.sorted = _Encoded(pack, "keys")
        self.positions = pack.array("positions", "q")

    def row(self, key: tuple[object, ...]) -> int | None:
        want, keys = canonical_key(key), self.sorted
        i = bisect_right(keys, want) - 1  # of repeated keys the last row wins
        if i >= 0 and keys[i] == want:
            return self.positions[i]
        return None

    def rows(self, keys: list[tuple[object, ...]]) -> list[int | None]:
        return [self.row(k) for k in keys]


@dataclass(frozen=True)
class LoadedSnapshot:
    """A view's snapshot, pre-encoded in Feast's stored form so fallback answers cost no more
    than online ones: values as serialised ``Value`` bytes, times as serialised ``Timestamp``."""

    view: str
    version: tuple[int, int]
    written_at: datetime
    keys: _Keys
    columns: dict[str, _Encoded]
    ts_raw: _Encoded
    ts_micros: memoryview  # event time per row, unix microseconds
    job_codes: memoryview  # per row, an index into job_names
    job_names: list[str]
    pack: Pack
    job_id: str  # the job whose success published this snapshot ("" in a pack compiled before it was kept)

    @classmethod
    def from_pack(cls, pack: Pack, version: tuple[int, int]) -> "LoadedSnapshot":
        h = pack.header
        keys: _Keys = _IntKeys(pack) if h["keys"] == "int" else _CanonicalKeys(pack)
        return cls(
            h["view"], version, datetime.fromisoformat(h["written_at"]), keys,
            {f: _Encoded(pack, f"feature:{f}") for f in h["features"]}, _Encoded(pack, "ts"),
            pack.array("ts_micros", "q"), pack.array("job_codes", "i"), list(h["job_names"]), pack,
            h.get("job_id", ""),
        )

    @property
    def held_bytes(self) -> int:
        """The pack's size: memory this view's snapshot takes on the host (mapped from one file
        shared by the host's serving processes, unless the data directory is read-only)."""
        return self.pack.size

    @property
    def shared(self) -> bool:
        return self.pack.path is not None

    def timestamp(self, row: int) -> tuple[int, int]:
        """(seconds, nanos), as the online path decodes it."""
        micros = self.ts_micros[row]
        return micros // 1_000_000, (micros % 1_000_000) * 1000


class SnapshotCache:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._lock = threading.Lock()
        self._views: dict[str, LoadedSnapshot] = {}
        # view -> why its newest snapshot file could not be loaded (the last good one is still served),
        # and that file's version: it is not read again every tick, only once it changes
        self.failed: dict[str, str] = {}
        self._bad: dict[str, tuple[int, int]] = {}

    def refresh(self, views: list[ViewSpec]) -> list[str]:
        """(Re)load the snapshots whose files changed; returns the views reloaded.

        A file that cannot be loaded (damaged, or of other types than the view declares) leaves the
        view's last good snapshot in place and is named in ``failed`` until a later file loads; the
        other views are reloaded all the same."""
        reloaded = []
        for v in views:
            try:
                if self._reload(v):
                    reloaded.append(v.name)
                if v.name not in self._bad:
                    self.failed.pop(v.name, None)
            except Exception as e:  # noqa: BLE001 -- any failure of one file must not stop the others, nor health
                self.failed[v.name] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
        return reloaded

    def _reload(self, v: ViewSpec) -> bool:
        """Load ``v``'s snapshot if its file changed; whether it was (re)loaded."""
        path = snapshot_path(self.data_dir, v.name)
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        version = (st.st_mtime_ns, st.st_size)
        current = self._views.get(v.name)
        if (current is not None and current.version == version) or self._bad.get(v.name) == version:
            return False
        self._bad[v.name] = version  # until it has loaded
        if current is None and pq.read_metadata(path).num_rows == 0:
            # nothing to answer from; older versions wrote such a file, without the view's
            # columns, for a job whose window held no rows, and the node failed to start on it
            del self._bad[v.name]
            return False
        loaded = _load(path, v, version, self.data_dir)
        with self._lock:
            self._views[v.name] = loaded
        del self._bad[v.name]
        return True

    def drop_unlisted(self, views: list[ViewSpec], registry_mtime_ns: int) -> list[str]:
        """Forget the snapshots of views no longer served (gone from the registry whose file has
        this mtime, or made offline-only) and remove their packs from this host's cache; returns
        the views dropped."""
        keep = {v.name for v in views}
        with self._lock:
            dropped = [name for name in self._views if name not in keep]
            for name in dropped:
                del self._views[name]
        removed = snapshot_pack.remove_unlisted(self.data_dir / snapshot_pack.CACHE_DIR, keep, registry_mtime_ns)
        return sorted(set(dropped) | set(removed))

    def age_seconds(self, views: tuple[ViewSpec, ...], now: datetime) -> float | None:
        """Age of the oldest snapshot among these views (None if one is missing)."""
        ages = []
        for v in views:
            snap = self._views.get(v.name)
            if snap is None:
                return None
            ages.append((now - snap.written_at).total_seconds())
        return max(ages) if ages else None

    def held_bytes(self) -> dict[str, int]:
        """Per loaded view, the memory its snapshot holds."""
        return {name: snap.held_bytes for name, snap in list(self._views.items())}

    def has(self, views: tuple[ViewSpec, ...]) -> bool:
        return all(v.name in self._views for v in views)

    def read(self, resolved: Resolved, entities: Entities) -> tuple[dict[str, ViewRows], set[str]]:
        out: dict[str, ViewRows] = {}
        jobs: set[str] = set()
        for v in resolved.views:
            snap = self._views[v.name]
            features = resolved.features_of(v.name)
            wanted = [snap.columns.get(f) for f in features]
            rows = ViewRows.empty(features, entities.count)
            found = snap.keys.rows(entities.keys(v.join_keys))
            for i, idx in enumerate(found):
                if idx is None:
                    continue
                rows.values[i] = [col[idx] if col is not None else b"" for col in wanted]
                rows.ts_raw[i] = snap.ts_raw[idx]
                rows.timestamps[i] = snap.timestamp(idx)
                job = snap.job_names[snap.job_codes[idx]]
                if job:  # rows from before job ids were recorded have none
                    jobs.add(job)
            out[v.name] = rows
        return out, jobs

    def job_of(self, view: str) -> str | None:
        """The job whose snapshot of the view is loaded (None: none is)."""
        snap = self._views.get(view)
        return None if snap is None else snap.job_id

    def jobs_for(self, view: str, keys: list[tuple[object, ...]], rows: ViewRows, *,
                 exact: bool, newer: str | None) -> set[str]:
        """The jobs that wrote these online rows (``job_per_row``'s, as a set)."""
        return {job for job in self.job_per_row(view, keys, rows, exact=exact, newer=newer) if job}

    def job_per_row(self, view: str, keys: list[tuple[object, ...]], rows: ViewRows, *,
                    exact: bool, newer: str | None) -> list[str | None]:
        """The job that wrote each online row, or None where it is not known.

        A row is the snapshot's when the snapshot holds the entity at the same event time (if
        ``exact``: to the second, with the same stored bytes): then the job the snapshot names for
        it wrote it.
        Any other row was written since the snapshot's job, by ``newer`` when the caller knows which
        job that is (else it is not attributed). ``exact`` is for when the online store may hold
        rows newer than the snapshot's (a job writing, or one finished since the snapshot loaded):
        a correction keeps its event time and differs only in its bytes.
        """
        snap = self._views.get(view)
        if snap is None:
            return [newer if ts is not None else None for ts in rows.timestamps]
        out: list[str | None] = []
        micros, codes, names = snap.ts_micros, snap.job_codes, snap.job_names
        columns = [snap.columns.get(f) for f in rows.features] if exact else []
        for row, (idx, ts) in enumerate(zip(snap.keys.rows(keys), rows.timestamps, strict=True)):
            if ts is None:
                out.append(None)
                continue
            sec, nanos = ts  # the snapshot holds microseconds
            if idx is not None and (
                # to the second when exact: Feast's SQLite store keeps no fraction; the bytes decide
                micros[idx] // 1_000_000 == sec and _same_bytes(rows.values[row], columns, idx) if exact
                else nanos % 1000 == 0 and micros[idx] == sec * 1_000_000 + nanos // 1000
            ):
                out.append(names[codes[idx]] or None)  # rows from before job ids were recorded have none
            else:
                out.append(newer)
        return out


def _same_bytes(values: Sequence[bytes | None] | None, columns: list[_Encoded | None], idx: int) -> bool:
    """Does an online row hold the snapshot row's stored bytes (null, b"" and a missing column alike)?"""
    return all((v or b"") == (b"" if col is None else col[idx]) for v, col in zip(values or (), columns, strict=True))


def _load(path: Path, view: ViewSpec, version: tuple[int, int], data_dir: Path) -> LoadedSnapshot:
    """The view's pack for this snapshot version: mapped if a process of this host compiled it,
    else compiled now (the pack's name changes with the snapshot file's mtime and size)."""
    pack = snapshot_pack.shared(data_dir / snapshot_pack.CACHE_DIR, view.name, version,
                                lambda: _compile(path, view, data_dir))
    return LoadedSnapshot.from_pack(pack, version)


def _compile(path: Path, view: ViewSpec, data_dir: Path) -> Built:
    """Decode a snapshot's Parquet into a pack's header and sections."""
    table = pq.read_table(path)
    info = read_snapshot_info(data_dir, view.name)
    written_at = info.written_at if info else datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
    sections: dict[str, Any] = {}
    blobs: dict[str, tuple[bytes, np.ndarray]] = {}  # byte columns: the bytes and each row's length
    key_columns = [table.column(k) for k in view.join_keys]
    if len(view.join_keys) == 1 and view.join_key_types[0] in _INT_KEYS and not key_columns[0].null_count:
        kind = "int"
        keys = key_columns[0].to_numpy().astype(np.int64)
        order = np.argsort(keys, kind="stable")  # stable: of repeated keys the last row wins
        sections["keys"] = keys[order]
    else:
        kind = "canonical"
        forms = [canonical_key(k) for k in zip(*(c.to_pylist() for c in key_columns), strict=True)]
        order = np.argsort(np.array(forms, dtype=bytes), kind="stable")
        ordered = [forms[i] for i in order.tolist()]
        blobs["keys"] = b"".join(ordered), np.array([len(f) for f in ordered], dtype=np.int64)
    sections["positions"] = order.astype(np.int64)
    features = [f for f in view.features if f in table.column_names]
    encoded = {f"feature:{f}": encode_values(table.column(f), view.features[f]) for f in features}
    ts_col = table.column(view.timestamp_field)
    encoded["ts"] = encode_timestamps(ts_col) if table.num_rows else Segment(0, ())
    blobs.update({name: (to_bytes(segment), segment.lengths()) for name, segment in encoded.items()})
    # row ends fit 32 bits unless a buffer reaches 2 GiB: half the memory for the ends
    ends = "i" if max((len(blob) for blob, _ in blobs.values()), default=0) < 2**31 else "q"
    for name, (blob, lengths) in blobs.items():
        sections[name] = blob
        sections[f"{name}.ends"] = np.cumsum(lengths, dtype=np.int32 if ends == "i" else np.int64)
    micros = ts_col.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy().astype(np.int64)
    sections["ts_micros"] = micros
    if JOB_COLUMN in table.column_names:
        jobs = pc.fill_null(table.column(JOB_COLUMN).combine_chunks().cast(pa.string()), "")
        dictionary = jobs.dictionary_encode()
        job_names = [str(j) for j in dictionary.dictionary.to_pylist()]
        sections["job_codes"] = dictionary.indices.to_numpy(zero_copy_only=False).astype(np.int32)
    else:
        job_names, sections["job_codes"] = [""], np.zeros(table.num_rows, dtype=np.int32)
    header = {"view": view.name, "rows": table.num_rows, "written_at": written_at.isoformat(), "keys": kind,
              "features": features, "ends": ends, "job_names": job_names, "job_id": info.job_id if info else ""}
    return header, {n: np.ascontiguousarray(v).data if isinstance(v, np.ndarray) else v
                    for n, v in sections.items()}
