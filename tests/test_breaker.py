"""The online store's circuit breaker, on a clock the test moves."""

from __future__ import annotations

import pytest

from fedstore.serving.breaker import CLOSED, HALF_OPEN, OPEN, PASS, PROBE, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_consecutive_failures_probes_once_and_closes_on_success():
    clock = Clock()
    b = CircuitBreaker(failure_threshold=3, reset_seconds=2.0, clock=clock)
    assert b.allow() and not b.failure() and not b.failure()
    b.success()  # a success in between: the count starts again
    assert [b.failure() for _ in range(3)] == [False, False, True]  # True once: when it opened
    assert b.state == OPEN and not b.allow()
    clock.now += 2.0
    assert b.state == HALF_OPEN
    assert b.allow() and not b.allow()  # one probe at a time
    assert not b.failure()  # the probe failed: open again, but it was not closed, so no new "opened"
    assert b.state == OPEN
    clock.now += 2.0
    assert b.allow()
    assert b.success() and b.state == CLOSED  # True: this success closed the circuit
    assert not b.success()


def test_a_released_probe_lets_the_next_call_probe():
    clock = Clock()
    b = CircuitBreaker(failure_threshold=1, reset_seconds=1.0, clock=clock)
    assert b.failure()
    clock.now += 1.0
    assert b.allow() and not b.allow()
    b.release()  # the probe ended without a verdict (its caller's deadline ran out)
    assert b.state == HALF_OPEN and b.allow()


@pytest.mark.parametrize("kw", [dict(failure_threshold=0, reset_seconds=1.0), dict(failure_threshold=1, reset_seconds=0)])
def test_nonsense_settings_are_refused(kw):
    with pytest.raises(ValueError):
        CircuitBreaker(**kw)


def test_only_the_probe_lets_the_next_probe_go():
    """Calls let through while the circuit was closed can end after it opened and went half-open
    (on other lookup threads). Their ends must not free the probe slot, or several probes would
    hammer a store that is still down."""
    clock = Clock()
    b = CircuitBreaker(failure_threshold=1, reset_seconds=1.0, clock=clock)
    early, late = b.allow(), b.allow()  # two calls under way on a closed circuit
    assert early == late == PASS
    assert b.failure(early)  # one fails: open
    clock.now += 1.0
    probe = b.allow()
    assert probe == PROBE and not b.allow()
    b.release(late)  # the other ends without a verdict: the probe is still out
    assert not b.allow()
    b.failure(late)  # or fails late: still only the one probe
    clock.now += 1.0
    assert not b.allow()
    b.release(probe)  # the probe's own end lets the next one go
    assert b.allow() == PROBE
