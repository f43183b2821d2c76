"""Argument types the commands share (a bad value is argparse's one-line usage error, exit 2),
and the check of an output file a command will write."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import date, datetime, timezone
from pathlib import Path

from fedstore.federation.personal_data import identifier_in
from fedstore.regions.errors import RegionError


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def positive_float(number: str = "a number", subject: str = "") -> Callable[[str], float]:
    """A finite number above zero: ``number`` names it in the refusal ("a number of seconds"),
    ``subject`` what must be positive ("ε ")."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {number}: {text!r}") from None
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{subject}must be a positive {number.removeprefix('a ')}: {text!r}")
        return value

    return parse


def no_identifier(text: str) -> str:
    """Text a person types that the centre keeps (a reason, a readiness item): refused here, before it
    leaves the region, when it holds an identifier (rule personal_data; the centre refuses it too)."""
    found = identifier_in(text)
    if found:
        raise argparse.ArgumentTypeError(f"rule personal_data: it holds what looks like {found}; personal data "
                                         "never crosses the border (name a ticket or a runbook instead)")
    return text


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


def host_port(text: str) -> str:
    """``host:port`` (an IPv6 host in brackets); anything else would only surface later as a server
    that "did not answer"."""
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected host:port (e.g. 127.0.0.1:50100), got {text!r}")
    return text.strip()


def view_names(text: str) -> tuple[str, ...]:
    """Comma-separated feature view names, each once; none at all is refused (`--views ""` from an
    unset variable would otherwise mean every view)."""
    names = tuple(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    if not names:
        raise argparse.ArgumentTypeError(f"expected one or more feature view names, got {text!r}")
    return names


def output_file(path: Path, option: str) -> Path:
    """A file a command will write, checked before any work: not a directory; its folder created."""
    if path.is_dir():
        raise RegionError(f"{option} {path} is a directory: give a file name")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RegionError(f"{option} {path}: cannot create the directory {path.parent} ({e.strerror})") from None
    return path


def port_number(text: str) -> int:
    """A TCP port, 0 for any free one."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port 0–65535, got {text!r}")
    return int(text)
