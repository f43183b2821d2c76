"""A circuit breaker for the online store: stop hammering a dead Redis, probe it now and then.

closed ──(N consecutive failures)──▶ open ──(reset time passed)──▶ half-open: one probe
   ▲                                                                   │ success │ failure
   └───────────────────────────────────────────────────────────────────┘         └─▶ open
"""

from __future__ import annotations

import threading
import time
from typing import Callable

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"
# what allow() grants: a call on a closed circuit, the half-open circuit's one probe, or nothing ("")
PASS, PROBE, REFUSED = "pass", "probe", ""


class CircuitBreaker:
    def __init__(
        self,
        *,
        failure_threshold: int,
        reset_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if reset_seconds <= 0:
            raise ValueError("reset_seconds must be positive")
        self._threshold = failure_threshold
        self._reset = reset_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> str:
        with self._lock:
            return self._state()

    def _state(self) -> str:
        if self._opened_at is None:
            return CLOSED
        if self._clock() - self._opened_at >= self._reset:
            return HALF_OPEN
        return OPEN

    def allow(self) -> str:
        """May this call try the online store? PASS (closed), PROBE (half-open: one caller at a
        time), or REFUSED, which is falsy. Hand the grant back to ``release`` or ``failure``: only
        the probe's own outcome lets the next probe go (calls let through while the circuit was
        still closed may end after it opened, on other threads)."""
        if self._opened_at is None:  # closed, the usual case: no lock needed to say so
            return PASS
        with self._lock:
            state = self._state()
            if state == CLOSED:
                return PASS
            if state == HALF_OPEN and not self._probing:
                self._probing = True
                return PROBE
            return REFUSED

    def success(self) -> bool:
        """Record a success; True when it closed an open circuit (the store is back)."""
        if self._opened_at is None and not self._failures and not self._probing:
            return False  # closed with nothing to forget, the usual case: no lock needed
        with self._lock:
            was_open = self._opened_at is not None
            self._failures = 0
            self._opened_at = None
            self._probing = False
            return was_open

    def release(self, grant: str = PROBE) -> None:
        """The call that was allowed ended without a verdict on the store (the caller's own deadline
        ran out first): nothing is counted, and when it was the probe the next call may probe."""
        if grant == PROBE:
            with self._lock:
                self._probing = False

    def failure(self, grant: str = PROBE) -> bool:
        """Record a failure; True when it opened a closed circuit."""
        with self._lock:
            was_closed = self._opened_at is None
            self._failures += 1
            if grant == PROBE:
                self._probing = False
            if self._opened_at is not None or self._failures >= self._threshold:
                self._opened_at = self._clock()
                return was_closed
            return False

    @property
    def reset_seconds(self) -> float:
        return self._reset
