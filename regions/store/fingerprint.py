"""Fingerprints of source files: what a job read, so every online value is traceable.

A file's SHA-256 is remembered (``fingerprints.db`` in the region's directory) against what the
file system says of it: size, modification and change times, inode. A partitioned source grows a
part at a time, and without that every incremental job would hash every old part again. A rewrite
always moves the change time (which, unlike the modification time, no copy tool can set back), so a
changed file is never taken for the one hashed before.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from fedstore.regions.errors import must_be_writable
from fedstore.regions.store.source_files import source_files


@dataclass(frozen=True)
class SourceFingerprint:
    path: str  # relative to the region's data directory
    sha256: str
    bytes: int
    modified: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class FingerprintCache:
    """SHA-256 per file, valid while the file's size, mtime, ctime and inode are what they were."""

    def __init__(self, path: Path, region: str) -> None:
        self.path = path
        self.hashed = 0  # files read and hashed by this instance (the rest came from the cache)
        with must_be_writable(region, "the source fingerprint cache", path):
            path.parent.mkdir(parents=True, exist_ok=True)
            with closing(self._connect()) as db, db:
                db.execute("CREATE TABLE IF NOT EXISTS hashes (path TEXT PRIMARY KEY, bytes INTEGER NOT NULL,"
                           " mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, inode INTEGER NOT NULL,"
                           " sha256 TEXT NOT NULL)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30)  # a job and a dataset build may share it

    def sha256(self, path: Path, stat: os.stat_result) -> str:
        return self.sha256_many([(path, stat)])[0]

    def sha256_many(self, files: list[tuple[Path, os.stat_result]]) -> list[str]:
        """Each file's digest: one connection for all of them (a partitioned source may have
        thousands of parts), known ones looked up, the rest hashed and remembered together."""
        with closing(self._connect()) as db:
            known = {}
            for path, stat in files:
                name = str(path.resolve())
                row = db.execute("SELECT bytes, mtime_ns, ctime_ns, inode, sha256 FROM hashes WHERE path=?",
                                 (name,)).fetchone()
                if row is not None and tuple(row[:4]) == _identity(stat):
                    known[name] = str(row[4])
            digests, learned = [], []
            for path, stat in files:
                name = str(path.resolve())
                digest = known.get(name)
                if digest is None:
                    digest = known[name] = _sha256(path)
                    self.hashed += 1
                    key = _identity(stat)
                    if _identity(path.stat()) == key:  # unchanged while it was read: worth remembering
                        learned.append((name, *key, digest))
                digests.append(digest)
            if learned:
                with db:
                    db.executemany("INSERT OR REPLACE INTO hashes VALUES (?,?,?,?,?,?)", learned)
        return digests


def fingerprint(path: Path, base: Path, cache: FingerprintCache | None = None) -> SourceFingerprint:
    return _fingerprints([path], base, cache)[0]


def source_fingerprints(
    sources: Iterable[Path], base: Path, cache: FingerprintCache | None = None
) -> list[SourceFingerprint]:
    """One fingerprint per file the sources name (each part of a partitioned source), each file once."""
    files = dict.fromkeys(f for source in sources for f in source_files(source))
    return _fingerprints(list(files), base, cache)


def _fingerprints(paths: list[Path], base: Path, cache: FingerprintCache | None) -> list[SourceFingerprint]:
    stats = [(path, path.stat()) for path in paths]
    digests = cache.sha256_many(stats) if cache is not None else [_sha256(path) for path in paths]
    return [
        SourceFingerprint(
            path=str(path.relative_to(base)) if path.is_relative_to(base) else str(path),
            sha256=digest,
            bytes=stat.st_size,
            modified=stat.st_mtime,
        )
        for (path, stat), digest in zip(stats, digests, strict=True)
    ]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _identity(stat: os.stat_result) -> tuple[int, int, int, int]:
    return stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino
