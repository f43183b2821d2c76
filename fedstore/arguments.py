"""Argument types the commands share (a bad value is argparse's one-line usage error, exit 2),
and the check of an output file a command will write."""

from __future__ import annotations

import argparse
from datetime import date, datetime, timezone
from pathlib import Path

from regions.errors import RegionError


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from None


def iso_time(text: str) -> datetime:
    """An ISO 8601 time; one without an offset is UTC."""
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 time, got {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def path_arg(text: str) -> Path:
    """A file or directory name; an empty one (an unset shell variable, say) is refused, not read as
    the current directory."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return Path(text)


def output_file(path: Path, option: str) -> Path:
    """A file a command will write, checked before any work: not a directory; its folder created."""
    if path.is_dir():
        raise RegionError(f"{option} {path} is a directory: give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RegionError(f"{option} {path}: cannot create the directory {path.parent} ({e.strerror})") from None
    return path
