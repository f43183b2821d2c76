"""Which files a view's source is: one Parquet file, or a glob of them (partitioned data).

Feast's DuckDB offline store hands a ``FileSource`` path to DuckDB's ``read_parquet``, which takes
a glob (``sources/transactions/*.parquet``, ``sources/transactions/**/*.parquet``), so an upstream
job that lands one file per day or per partition needs no merge step. What this project opens
itself (the column check, the time column's type, the fingerprints of what a job read) expands the
same glob here, sorted, so every part is checked and recorded.
"""

from __future__ import annotations

from pathlib import Path

_WILDCARDS = frozenset("*?[")


def is_glob(path: Path) -> bool:
    return any(c in _WILDCARDS for c in str(path))


def source_files(path: Path) -> list[Path]:
    """The Parquet files a source path names, sorted; empty when there are none (yet)."""
    if not is_glob(path):
        return [path] if path.is_file() else []
    parts = path.parts
    first = next(i for i, part in enumerate(parts) if any(c in _WILDCARDS for c in part))
    root, pattern = Path(*parts[:first]), str(Path(*parts[first:]))
    if not root.is_dir():
        return []
    return sorted(p for p in root.glob(pattern) if p.is_file())


def missing_source_hint(path: Path) -> str:
    """Why a source path names no file, for an operator: a directory needs a glob to name its files."""
    if path.is_dir():
        return f"{path} is a directory: name its files with a glob in the feature view's source, e.g. {path / '*.parquet'}"
    return f"no file matches {path}" if is_glob(path) else f"{path} does not exist"
