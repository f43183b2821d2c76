"""A view's batch snapshot compiled once per host into one file that every serving process maps.

`fedstore serve --workers N` runs N processes; each loading the same Parquet snapshot on its own
held N copies of it and paid the decoding N times. Instead the first process to need a snapshot
version compiles it into a *pack* — named sections of raw arrays and byte buffers, behind a small
JSON header — under ``<data_dir>/serving-cache/``, and every process maps that file read-only, so
the host's page cache holds one copy whatever N is. A lock file makes the others wait for the
first compile rather than repeat it; the pack appears by an atomic rename, so a reader never sees a
half-written one. Where the data directory is read-only the pack is built in memory instead (one
copy per process, as before).

    MAGIC | u64 header length | header JSON | pad to 8 | section … (each padded to 8)
"""

from __future__ import annotations

import fcntl
import json
import logging
import mmap
import os
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

log = logging.getLogger(__name__)

MAGIC = b"FEDSTORE-SNAPSHOT-PACK v1\n"
CACHE_DIR = "serving-cache"

# what a pack's builder returns: the header (JSON-able) and the sections, by name
Built = tuple[dict[str, Any], Mapping[str, bytes | memoryview]]

# the struct codes sections are read as: integers only, since memoryview.cast's return type depends on the code
IntTypecode = Literal["b", "B", "h", "H", "i", "I", "l", "L", "q", "Q"]


class PackError(Exception):
    """A pack file that is not one this version can read (it is compiled again)."""


@dataclass(frozen=True)
class Pack:
    """One compiled snapshot: its header and named byte ranges of one buffer (a mapping or bytes)."""

    buffer: mmap.mmap | bytes
    header: dict[str, Any]
    sections: dict[str, tuple[int, int]]  # name → (offset, length)
    path: Path | None  # None: built in memory, not shared

    def offset(self, name: str) -> int:
        return self.sections[name][0]

    def array(self, name: str, typecode: IntTypecode) -> memoryview:
        """A section as an array of machine numbers (no copy)."""
        offset, length = self.sections[name]
        return memoryview(self.buffer)[offset : offset + length].cast(typecode)

    @property
    def size(self) -> int:
        return len(self.buffer)


def encode(header: dict[str, Any], sections: Mapping[str, bytes | memoryview]) -> list[bytes | memoryview]:
    """The pack's bytes as a list of chunks (written one after another). Section offsets in the
    header count from the end of the padded header, so the header need not know its own length."""
    layout: dict[str, tuple[int, int]] = {}
    offset = 0
    for n, data in sections.items():
        layout[n] = (offset, memoryview(data).nbytes)
        offset = _pad(offset + memoryview(data).nbytes)
    head = json.dumps({**header, "sections": layout}).encode()
    first = MAGIC + struct.pack("<Q", len(head)) + head
    chunks: list[bytes | memoryview] = [first + b"\0" * (_pad(len(first)) - len(first))]
    for data in sections.values():
        flat = memoryview(data).cast("B")
        chunks += [flat, b"\0" * (_pad(len(flat)) - len(flat))]
    return chunks


def decode(buffer: mmap.mmap | bytes, path: Path | None = None) -> Pack:
    start = len(MAGIC) + 8
    if len(buffer) < start or buffer[: len(MAGIC)] != MAGIC:
        raise PackError("not a snapshot pack of this version")
    (head_len,) = struct.unpack_from("<Q", buffer, len(MAGIC))
    base = _pad(start + head_len)
    try:
        header = json.loads(bytes(buffer[start : start + head_len]))
        sections = {n: (base + int(o), int(length)) for n, (o, length) in header.pop("sections").items()}
    except (ValueError, KeyError, TypeError) as e:
        raise PackError(f"unreadable pack header: {e}") from e
    if any(o + length > len(buffer) for o, length in sections.values()):
        raise PackError("pack is shorter than its header says")
    return Pack(buffer, header, sections, path)


def in_memory(built: Built) -> Pack:
    return decode(b"".join(encode(*built)))


def shared(cache_dir: Path, view: str, version: tuple[int, int], build: Callable[[], Built]) -> Pack:
    """Map the pack of this view's snapshot version (its file's mtime in ns and size) from
    ``cache_dir``, compiling it first if no process of this host has (the others wait on the view's
    lock meanwhile). Older packs of the view are removed once a newer one is in place; processes
    still mapping them keep their mapping."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        lock = os.open(cache_dir / f"{view}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:  # a read-only data directory: each process keeps its own copy
        log.info("snapshot cache %s is not writable (%s); holding the snapshot in this process", cache_dir, e)
        return in_memory(build())
    path = cache_dir / f"{view}@{version[0]}-{version[1]}.pack"
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _map(path)
        except (FileNotFoundError, PackError):
            pass
        for stale in cache_dir.glob(f".{view}@*.tmp"):  # left by a process that died compiling (we hold the lock)
            stale.unlink(missing_ok=True)
        began = time.monotonic()
        built = build()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as out:
                out.writelines(encode(*built))
            os.replace(tmp, path)  # readers see the whole pack or none
        except OSError as e:
            tmp.unlink(missing_ok=True)
            log.info("could not write snapshot pack %s (%s); holding the snapshot in this process", path, e)
            return in_memory(built)
        for old in cache_dir.glob(f"{view}@*.pack"):
            # only older ones: a process still on an older snapshot must not remove a newer pack
            if old != path and _mtime_of(old) < version[0]:
                old.unlink(missing_ok=True)
        pack = _map(path)
        log.info("compiled the batch snapshot of %s into %s (%.1f MB in %.2f s); this host's other serving "
                 "processes map it", view, path, pack.size / 1e6, time.monotonic() - began)
        return pack
    finally:
        os.close(lock)  # closing releases the lock


def remove_unlisted(
    cache_dir: Path, views: set[str], registry_mtime_ns: int, *, grace_seconds: float = 60.0
) -> list[str]:
    """Remove the packs (and locks, and orphaned temp files) of views not in ``views``: views the
    registry (as of ``registry_mtime_ns``) no longer serves. Processes still mapping such a pack
    keep their mapping. A file written after that registry change and less than ``grace_seconds``
    ago is left alone: another process may already be on a newer registry that added the view
    (removing it would only cost that process a compile, but there is no need); past the grace,
    every process has seen the change, so what is left is garbage."""
    removed: set[str] = set()
    now_ns = time.time_ns()
    try:
        entries = list(cache_dir.iterdir())
    except OSError:  # no cache (nothing compiled yet) or not readable: nothing to tidy
        return []
    for entry in entries:
        name = entry.name
        if name.endswith(".pack"):
            view = name.rsplit("@", 1)[0]
        elif name.endswith(".lock"):
            view = name[: -len(".lock")]
        elif name.startswith(".") and name.endswith(".tmp"):
            view = name[1:].rsplit("@", 1)[0]
        else:
            continue
        if view in views:
            continue
        try:
            written = entry.stat().st_mtime_ns
            if written >= registry_mtime_ns and now_ns - written < grace_seconds * 1e9:
                continue
            entry.unlink()
        except FileNotFoundError:  # another process of the host removed it first
            continue
        except OSError as e:  # a read-only cache: leave it, serving is unaffected (debug: this runs every refresh)
            log.debug("could not remove %s (%s)", entry, e)
            continue
        if name.endswith(".pack"):
            removed.add(view)
    return sorted(removed)


def _map(path: Path) -> Pack:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise PackError("empty pack")
        buffer = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ)
    return decode(buffer, path)


def _mtime_of(pack: Path) -> int:
    """The snapshot mtime a pack's name records (-1 for a name this version did not write)."""
    try:
        return int(pack.stem.split("@", 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return -1


def _pad(n: int) -> int:
    return (n + 7) & ~7
