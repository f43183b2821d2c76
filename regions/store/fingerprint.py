"""Fingerprints of source files: what a job read, so every online value is traceable."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

from regions.store.source_files import source_files


@dataclass(frozen=True)
class SourceFingerprint:
    path: str  # relative to the region's data directory
    sha256: str
    bytes: int
    modified: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def fingerprint(path: Path, base: Path) -> SourceFingerprint:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    stat = path.stat()
    return SourceFingerprint(
        path=str(path.relative_to(base)) if path.is_relative_to(base) else str(path),
        sha256=digest.hexdigest(),
        bytes=stat.st_size,
        modified=stat.st_mtime,
    )


def source_fingerprints(sources: Iterable[Path], base: Path) -> list[SourceFingerprint]:
    """One fingerprint per file the sources name (each part of a partitioned source), each file once."""
    files = dict.fromkeys(f for source in sources for f in source_files(source))
    return [fingerprint(f, base) for f in files]
