"""The one error root of the region node. Messages are for operators: one plain line."""


class RegionError(Exception):
    """Something an operator can act on went wrong in a region node."""


class RegionNotReady(RegionError):
    """The region lacks something a command needs (no data generated, not applied yet)."""


class MaterializationError(RegionError):
    """A materialisation job failed; the ledger records it."""


class StorageError(RegionError):
    """A file or database in the region's data directory cannot be written (a read-only volume, a
    directory of another user, a full disk)."""


class JobRunning(RegionError):
    """Another materialisation job of the region holds its job lock; nothing was done."""


class InvalidSource(RegionError):
    """A region source file that is not Parquet or lacks a column its feature view reads."""


class InvalidEntities(RegionError):
    """An entity file a training set cannot be built from (missing, empty, wrong columns or types)."""


class UnknownName(RegionError):
    """A feature service, feature view or label this region does not have."""


class InvalidOutput(RegionError):
    """An output path a command cannot write to (a directory, its own input, an uncreatable folder)."""
