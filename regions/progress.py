"""Progress of long work (materialisation, training-set export), shown the way its reader sees it.

On a terminal: a tqdm bar, redrawn in place. Anywhere else (a log file, a CI job, a scheduler's
or a pod's log) a redrawn bar arrives as one long line of carriage returns, so there the work says
in plain lines, at most one per ``interval`` seconds, how many rows it has done, at what rate and,
when the total is known, what share.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, Protocol, TextIO

from tqdm import tqdm

LOG_INTERVAL_SECONDS = 10.0


class Progress(Protocol):
    def update(self, n: int = 1) -> object: ...

    def close(self) -> None: ...


class LineProgress:
    """Plain progress lines, at most one per ``interval`` seconds (none for work shorter than that)."""

    def __init__(
        self,
        label: str,
        total: int | None,
        stream: TextIO,
        *,
        interval: float = LOG_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label, self.total, self.stream, self.interval, self.clock = label, total, stream, interval, clock
        self.rows = 0
        self._began = self._said = clock()

    def update(self, n: int = 1) -> None:
        self.rows += n
        now = self.clock()
        if now - self._said >= self.interval:
            self._said = now
            print(self.line(now), file=self.stream, flush=True)

    def line(self, now: float) -> str:
        elapsed = max(now - self._began, 1e-9)
        rate = self.rows / elapsed
        done = f"{self.rows:,} rows"
        if self.total:
            share = self.rows / self.total
            left = (self.total - self.rows) / rate if rate > 0 else float("inf")
            done = f"{self.rows:,} of {self.total:,} rows ({share:.0%}, about {_duration(left)} left)"
        return f"{self.label}: {done} in {_duration(elapsed)}, {rate:,.0f} rows/s"

    def close(self) -> None:
        pass  # the work's own summary line follows


def progress(
    label: str, *, total: int | None, show: bool, stream: TextIO | None = None, interval: float = LOG_INTERVAL_SECONDS
) -> Progress:
    """A bar on a terminal, plain lines elsewhere, nothing when ``show`` is off."""
    out = sys.stderr if stream is None else stream
    if show and not out.isatty():
        return LineProgress(label, total, out, interval=interval)
    return tqdm(total=total, desc=label, unit=" rows", disable=not show, leave=False, file=out)


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "an unknown time"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
