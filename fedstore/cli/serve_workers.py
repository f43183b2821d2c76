"""The parent of ``fedstore serve --workers N``: starts the workers, replaces one that dies, and
gives up when one keeps dying.

A worker may die of anything: SIGKILL from the kernel's OOM killer, SIGTERM from an operator, a
crash. The node would otherwise run at reduced capacity without a word, so the parent says which
worker died and how, and starts another in its place on the same port (its siblings serve
meanwhile). A worker that dies at once on every start (a port another program took, a region whose
registry was removed) must not spin: each death within the window waits longer before the next
start, and the ``RestartBudget``-th death within it stops the node with one line.

A worker that fails with a user's mistake (its one line, sent up its pipe) before the node ever
served is that mistake, the same for every worker: the node stops at once and says it once.
"""

from __future__ import annotations

import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import Callable

from fedstore.regions.errors import RegionError

# what a worker sends up its pipe: ("serving", address) once it serves, ("error", one line) before it exits 1
WorkerMessage = tuple[str, str]
# starts worker ``i`` with the sending end of its pipe; returns the started process
StartWorker = Callable[[int, Connection], BaseProcess]


@dataclass(frozen=True)
class RestartBudget:
    """How many deaths of one worker within ``window_seconds`` the parent accepts, and how long it
    waits before each restart: none after a lone death, then 1 s, 2 s, 4 s … up to ``max_delay``."""

    deaths: int = 5
    window_seconds: float = 60.0
    first_delay: float = 1.0
    max_delay: float = 10.0

    def __post_init__(self) -> None:
        if self.deaths < 1:
            raise ValueError(f"a restart budget needs at least 1 death, got {self.deaths}")
        if not 0 < self.window_seconds < float("inf"):
            raise ValueError(f"the restart window must be a number of seconds above 0, got {self.window_seconds}")

    def delay(self, recent: int) -> float:
        """Seconds before a restart, after ``recent`` deaths within the window (this one included)."""
        return 0.0 if recent <= 1 else min(self.max_delay, self.first_delay * 2 ** (recent - 2))


@dataclass
class DeathRecord:
    """One worker's deaths within the budget's window."""

    budget: RestartBudget
    times: deque[float] = field(default_factory=deque)

    def died(self, now: float) -> int:
        """Count a death at ``now``; returns the deaths within the window, this one included."""
        self.times.append(now)
        while self.times and self.times[0] <= now - self.budget.window_seconds:
            self.times.popleft()
        return len(self.times)


def death_of(exitcode: int) -> str:
    """How a process ended, in words: ``was killed by SIGKILL``, ``exited with code 1``."""
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return "exited" if exitcode == 0 else f"exited with code {exitcode}"


@dataclass
class _Slot:
    """Worker ``index``: its current process, the parent's end of its pipe, and its story."""

    index: int
    process: BaseProcess
    pipe: Connection
    deaths: DeathRecord
    error: str | None = None  # its last one-line error
    restart_at: float | None = None  # dead, to be started again at this time


class WorkerPool:
    """Runs ``workers`` processes from ``start`` until ``stopping`` is set, replacing the dead."""

    def __init__(
        self,
        code: str,
        workers: int,
        start: StartWorker,
        pipe: Callable[[], tuple[Connection, Connection]],
        *,
        budget: RestartBudget,
        say: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.code = code
        self.workers = workers
        self._start = start
        self._pipe = pipe
        self.budget = budget
        self._say = say
        self._clock = clock
        self._slots: list[_Slot] = []
        self._served = False  # has any worker served yet?

    def run(self, stopping: threading.Event) -> None:
        """Serve until ``stopping`` is set, then stop every worker (each drains its calls). Raises
        RegionError when the node cannot go on: a user's mistake before it served, or a worker out
        of its restart budget."""
        try:
            for i in range(self.workers):
                reader, writer = self._pipe()
                self._slots.append(_Slot(i, self._launch(i, writer), reader, DeathRecord(self.budget)))
            while not stopping.is_set():
                self._watch(stopping)
        except BaseException:
            self._stop_all()
            raise
        failed = self._stop_all()
        if failed:
            raise RegionError(f"{self.code}: serving workers did not stop cleanly: {'; '.join(failed)}")

    def _launch(self, index: int, writer: Connection) -> BaseProcess:
        try:
            return self._start(index, writer)
        finally:
            writer.close()  # the worker holds its own copy: a dead worker's pipe then reads as closed

    def _watch(self, stopping: threading.Event) -> None:
        now = self._clock()
        pending = [s.restart_at for s in self._slots if s.restart_at is not None]
        timeout = min([0.5] + [max(0.0, at - now) for at in pending])
        alive = [s for s in self._slots if s.restart_at is None]
        wait([s.process.sentinel for s in alive] + [s.pipe for s in alive], timeout)
        for slot in self._slots:
            if stopping.is_set():
                return  # a death now is the stop under way (Ctrl-C reaches every worker too)
            if slot.restart_at is None:
                self._read(slot)
                if slot.process.exitcode is not None:
                    self._died(slot)
            elif slot.restart_at <= self._clock():
                self._restart(slot)

    def _read(self, slot: _Slot) -> None:
        try:
            while slot.pipe.poll():
                kind, text = slot.pipe.recv()
                if kind == "serving":
                    self._served = True
                elif kind == "error":
                    slot.error = text
        except (EOFError, OSError):  # the worker is gone (its end closed); its exit code tells how
            pass

    def _died(self, slot: _Slot) -> None:
        how = death_of(slot.process.exitcode or 0)
        pid = slot.process.pid
        error, slot.error = slot.error, None
        slot.process.join()
        slot.pipe.close()
        if error is not None and not self._served:
            raise RegionError(error)  # the same mistake in every worker: said once, the node stops
        why = f": {error}" if error else ""
        recent = slot.deaths.died(self._clock())
        if recent >= self.budget.deaths:
            raise RegionError(
                f"{self.code}: worker {slot.index} died {recent} times within {self.budget.window_seconds:.0f} s "
                f"(the last time it {how}{why}); fedstore serve gives up"
            )
        delay = self.budget.delay(recent)
        slot.restart_at = self._clock() + delay
        if delay:
            self._say(f"{self.code}: worker {slot.index} (pid {pid}) {how}{why}; {recent} deaths within "
                      f"{self.budget.window_seconds:.0f} s: restarting it in {delay:.0f} s")
            return
        self._restart(slot, f"{self.code}: worker {slot.index} (pid {pid}) {how}{why}; ")

    def _restart(self, slot: _Slot, said: str = "") -> None:
        reader, writer = self._pipe()
        slot.process, slot.pipe, slot.restart_at = self._launch(slot.index, writer), reader, None
        self._say(f"{said or f'{self.code}: worker {slot.index} '}restarted as pid {slot.process.pid}")

    def _stop_all(self) -> list[str]:
        """SIGTERM to every running worker (each drains its own calls) and wait for them all; the
        workers that ended otherwise than by that SIGTERM or a clean exit, in words."""
        running = [s for s in self._slots if s.restart_at is None and not s.pipe.closed]
        for s in running:
            if s.process.is_alive():
                s.process.terminate()
        for s in running:
            s.process.join()
            s.pipe.close()
        return [f"worker {s.index} {death_of(s.process.exitcode or 0)}" for s in running
                if s.process.exitcode not in (0, -signal.SIGTERM)]
