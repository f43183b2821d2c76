"""Errors a user can fix: printed as one line, exit code 2."""

from pathlib import Path

from federation import ConfigError
from regions.errors import RegionError

USER_ERRORS: tuple[type[Exception], ...] = (ConfigError, RegionError)


def output_file(path: Path, option: str) -> Path:
    """A file a command will write, checked before any work: not a directory; its folder created."""
    if path.is_dir():
        raise RegionError(f"{option} {path} is a directory: give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RegionError(f"{option} {path}: cannot create the directory {path.parent} ({e.strerror})") from None
    return path
