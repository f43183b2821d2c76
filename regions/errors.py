"""The one error root of the region node. Messages are for operators: one plain line.

A ``RegionError`` is also a kind of refusal (``federation.errors``): FAILED_PRECONDITION unless its
class says otherwise, for the region's gRPC services (training sets) that end with one; each class
names the reason its refusals give (``REASON``, in docs/clients.md's table)."""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from fedstore.federation import errors as kinds


class RegionError(kinds.FailedPrecondition):
    """Something an operator can act on went wrong in a region node."""

    REASON = "REGION_PRECONDITION"


class RegionNotReady(RegionError):
    """The region lacks something a command needs (no data generated, not applied yet)."""

    REASON = "REGION_NOT_READY"


class MaterializationError(RegionError):
    """A materialisation job failed; the ledger records it."""

    REASON = "MATERIALIZATION_FAILED"


class StorageError(RegionError):
    """A file or database in the region's data directory cannot be written (a read-only volume, a
    directory of another user, a full disk)."""

    REASON = "STORAGE_UNUSABLE"


@contextmanager
def must_be_writable(region: str, what: str, path: Path) -> Iterator[None]:
    """Turn a failure to create or write one of the region's SQLite files into one plain line
    (sqlite says "attempt to write a readonly database")."""
    try:
        yield
    except (OSError, sqlite3.OperationalError) as e:
        raise StorageError(f"region {region}: cannot write {what} {path} ({e}): the region's data directory "
                           "must be writable by this user") from None


class JobRunning(RegionError):
    """Another materialisation job of the region holds its job lock; nothing was done."""

    REASON = "JOB_RUNNING"


class InvalidSource(RegionError):
    """A region source file that is not Parquet or lacks a column its feature view reads."""

    REASON = "INVALID_SOURCE"


# the kind first: it, not RegionError's, fixes the status
class InvalidEntities(kinds.InvalidArgument, RegionError):
    """An entity file a training set cannot be built from (missing, empty, wrong columns or types)."""

    REASON = "INVALID_ENTITIES"


class UnknownName(kinds.NotFound, RegionError):
    """A feature service, feature view or label this region does not have."""

    REASON = "UNKNOWN_NAME"


class InvalidOutput(RegionError):
    """An output path a command cannot write to (a directory, its own input, an uncreatable folder)."""

    REASON = "INVALID_OUTPUT"
