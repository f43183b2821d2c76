"""grpc.health.v1.Health for the serving node and the centre, without the stock servicer's deadlock.

grpcio-health-checking's ``HealthServicer`` sends each status update to every ``Watch`` stream while
holding its lock, and a send waits for grpc's server thread to complete it; that same thread runs
the callback of a closing ``Watch``, which takes the lock. One watcher closing while a status is set
froze the server thread, and with it every call of the node (seen in the suite: a node's refresher
sets its statuses every tick). Here no lock is held across a send: each watcher has its own, and the
servicer's lock only guards the table of statuses and watchers. A watcher is only sent a status
that changed, and always the latest one, so updates racing each other cannot leave it on a stale one.
"""

from __future__ import annotations

import threading
from functools import partial
from typing import Any, Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedstore.federation.error_boundary import abort
from fedstore.federation.errors import NotFound, Unimplemented

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class _Watcher:
    """One open Watch stream: sends are serialised per stream and always carry the current status."""

    def __init__(self, send: Callable[[Any], object]) -> None:
        self._send = send
        self._lock = threading.Lock()
        self._sent: int | None = None

    def deliver(self, current: Callable[[], int]) -> None:
        with self._lock:
            status = current()  # read under this stream's lock: the last delivery sends the latest
            if status != self._sent:
                self._sent = status
                self._send(health_pb2.HealthCheckResponse(status=status))

    def close(self) -> None:
        with self._lock:
            self._send(None)  # ends the stream (grpc's callback protocol for non-blocking handlers)


class HealthService(health_pb2_grpc.HealthServicer):
    """Check and Watch over a table of statuses; ``""`` is SERVING until told otherwise."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status: dict[str, int] = {"": SERVING}
        self._watchers: dict[str, set[_Watcher]] = {}
        self._shutting_down = False

    def status(self, service: str) -> int | None:
        with self._lock:
            return self._status.get(service)

    def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext) -> health_pb2.HealthCheckResponse:
        status = self.status(request.service)
        if status is None:
            abort(context, NotFound(f"no health status for service {request.service!r}",
                                    reason="UNKNOWN_HEALTH_SERVICE"))
        return health_pb2.HealthCheckResponse(status=status)

    def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.ServicerContext,
              send_response_callback: Callable[[Any], object] | None = None) -> None:
        if send_response_callback is None:  # grpc calls non-blocking handlers with the callback
            abort(context, Unimplemented("health Watch needs grpc's non-blocking handlers", reason="WATCH_UNSUPPORTED"))
            return
        send = send_response_callback
        service = request.service
        watcher = _Watcher(send)
        with self._lock:
            self._watchers.setdefault(service, set()).add(watcher)

        def closed() -> None:  # on grpc's server thread: takes only the table's lock, never a send
            with self._lock:
                self._watchers.get(service, set()).discard(watcher)
            # the stream is over; grpc ignores a send on it, so closing needs no stream lock
            send(None)

        if not context.add_callback(closed):
            closed()  # already over
            return
        watcher.deliver(partial(self._current, service))

    Watch.experimental_non_blocking = True  # type: ignore[attr-defined]  # no thread held per stream

    def set(self, service: str, status: int) -> None:
        """Set one service's status; open watchers of it get it if it changed. After
        ``enter_graceful_shutdown`` statuses no longer change."""
        with self._lock:
            if self._shutting_down or self._status.get(service) == status:
                return
            self._status[service] = status
            watchers = tuple(self._watchers.get(service, ()))
        for watcher in watchers:  # outside the table's lock: a send waits for grpc's server thread
            watcher.deliver(partial(self._current, service))

    def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING, for good (balancers look elsewhere while calls drain)."""
        with self._lock:
            if self._shutting_down:
                return
            self._shutting_down = True
            for service in self._status:
                self._status[service] = NOT_SERVING
            pending = [(service, tuple(ws)) for service, ws in self._watchers.items()]
        for service, watchers in pending:
            for watcher in watchers:
                watcher.deliver(partial(self._current, service))

    def _current(self, service: str) -> int:
        with self._lock:
            return self._status.get(service, SERVICE_UNKNOWN)
