"""The lookup lane: the node's online-feature lookups answered on threads that poll grpc's core.

grpc's Python servers hand every call between threads: the thread-pool server from its
completion-queue poller to a pool thread and back for each step of a call; the asyncio server from
its poller thread to the event loop, four times a call. On this project's 2-core benchmark machine
those wake-ups cost more CPU than a 1-entity lookup itself (an empty call on the asyncio server
reached about 7,000 calls/s; the same call answered where the event arrives, 17,000).

So the lookup methods are registered with the server's core on a completion queue of their own,
and a few lane threads poll that queue and run each call where its events arrive: request in,
token checked, Redis read (blocking, with the caller's deadline), response out, no hand-off. Every
other method (health, reflection, training-set streams) stays with grpc's own server on the same
port. A slow lookup holds its lane thread only, and the online read waits with the GIL released.

This uses grpc's core binding (``grpc._cython.cygrpc``: the operations grpc's own server is built
on) and the server's core object, which no grpcio release promises to keep: every piece the lane
uses is checked when it attaches, before it changes anything (``LaneUnsupported``), and a node whose
lane cannot attach answers the same methods through grpc's public API (``serving.lookup_public``;
what a call gets is computed once, by ``serving.lookup_methods.outcome``, for both).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Sequence, cast

import grpc
from grpc._cython import cygrpc

from fedstore.federation.access import AccessGuard, Refusal
from fedstore.federation.consent import Purpose
from fedstore.federation.errors import Internal, ResourceExhausted
from fedstore.serving.lookup_methods import INTERNAL_DETAILS, LaneMethod, Outcome, outcome, refused
from fedstore.serving.metrics import ServingMetrics

log = logging.getLogger(__name__)

NO_DEADLINE = 1e17  # grpc core reports "no deadline" as a time near 2**63 seconds
_FLAGS = 0
_CALL_OK = 0  # grpc_call_error GRPC_CALL_OK

# every piece of grpc's core binding the lane uses (a class and what of it the lane calls or reads;
# typed in stubs/grpc/_cython/cygrpc.pyi): all checked by ``attach`` before it registers anything,
# so a grpcio without one of them leaves the server untouched
CYGRPC_PIECES = {
    "CompletionQueue": ("poll", "shutdown"),
    "Server": ("register_completion_queue", "register_method", "request_registered_call"),
    "Call": ("start_server_batch",),
    "CompletionType": ("queue_shutdown", "queue_timeout"),
    "ReceiveMessageOperation": ("message",),
    "SendInitialMetadataOperation": (),
    "SendMessageOperation": (),
    "ReceiveCloseOnServerOperation": (),
    "SendStatusFromServerOperation": (),
}


class LaneUnsupported(RuntimeError):
    """This grpcio's server is not built as the lane expects (its internals changed)."""


@dataclass(eq=False)
class _Request:
    """The tag of a request for the next call of one method."""

    method: LaneMethod


@dataclass(eq=False)
class _Call:
    """The tag of a call's batches: the call, its method, and whether its answer was sent."""

    call: cygrpc.Call
    method: LaneMethod
    deadline: float
    began: float
    answered: bool = False
    purpose: Purpose = Purpose.SERVING  # what the guard admitted the call for
    caller: str = ""  # whom (the credential's name)


class LookupLane:
    def __init__(
        self,
        methods: Sequence[LaneMethod],
        guard: AccessGuard,
        metrics: ServingMetrics,
        *,
        threads: int,
        name: str,
        max_calls: int = 1000,
    ) -> None:
        if threads < 1:
            raise ValueError("the lookup lane needs at least one thread")
        self.methods = tuple(methods)
        self.guard = guard
        self.metrics = metrics
        self.threads = threads
        self.name = name
        self.max_calls = max_calls  # calls under way at once; more are refused at once
        self._cq: cygrpc.CompletionQueue | None = None  # made by attach, once grpc is known to fit
        self._core: cygrpc.Server | None = None
        self._workers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)

    def attach(self, server: grpc.Server) -> None:
        """Register the lane's methods and queue with ``server``'s core; before it starts.

        ``LaneUnsupported`` when this grpcio lacks a piece the lane uses; then nothing was
        registered (a method registered with the core and never asked for would leave its calls
        waiting until their deadline), and the server can serve the methods through its public API.
        Should registering itself fail, the server may hold part of it: its owner builds another."""
        missing = missing_pieces(server)
        if missing:
            raise LaneUnsupported(
                f"grpcio {grpc.__version__} lacks {', '.join(missing)}, which the lookup lane uses; install a grpcio "
                "version this fedstore supports (see pyproject.toml)"
            )
        core = server._state.server
        try:
            cq = cygrpc.CompletionQueue()
            core.register_completion_queue(cq)
            for method in self.methods:
                core.register_method(method.path)
        except Exception as e:  # their signatures changed: this server may hold part of it, so its owner drops it
            raise LaneUnsupported(f"grpcio {grpc.__version__}: registering the lookup lane with grpc's core failed "
                                  f"({type(e).__name__}: {e}); install a grpcio version this fedstore supports "
                                  "(see pyproject.toml)") from e
        self._cq, self._core = cq, core

    def start(self) -> None:
        """After the server started: ask for calls, one outstanding request per method and thread."""
        for method in self.methods:
            for _ in range(self.threads):
                self._request(_Request(method))
        for i in range(self.threads):
            worker = threading.Thread(target=self._run, name=f"{self.name}-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def stop(self, timeout: float = 10.0) -> None:
        """After the server stopped (its calls drained or cancelled): end the lane's threads."""
        if self._cq is None:  # never attached
            return
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout)
        self._cq.shutdown()
        for worker in self._workers:
            worker.join(timeout)

    # --- the threads ---------------------------------------------------------------------------

    def _request(self, tag: _Request) -> None:
        """Ask for the method's next call. Once the server began shutting down grpc refuses
        (ValueError): no next call then, but the call just taken is still answered (it arrived
        before the shutdown and is drained within the grace period like any other)."""
        assert self._core is not None and self._cq is not None
        try:
            self._core.request_registered_call(self._cq, self._cq, tag.method.path, tag)
        except ValueError as e:  # "server must be started and not shutting down"
            log.debug("lookup lane: no next %s call: %s", tag.method.path, e)

    def _run(self) -> None:
        assert self._cq is not None
        poll = self._cq.poll
        while True:
            event = poll()
            kind = event.completion_type
            if kind == cygrpc.CompletionType.queue_shutdown:
                return
            if kind == cygrpc.CompletionType.queue_timeout:
                continue
            tag = event.tag
            # the tag says which event it is: a _Request's is a call's arrival, a _Call's its batch's end
            if type(tag) is _Request:
                if event.success:  # else the server is shutting down: no new request
                    self._request(tag)
                    self._begin(cast("cygrpc.RequestCallEvent", event), tag.method)
            else:
                self._step(cast("cygrpc.BatchOperationEvent", event), cast(_Call, tag))

    def _begin(self, event: cygrpc.RequestCallEvent, method: LaneMethod) -> None:
        call = _Call(event.call, method, event.call_details.deadline, time.perf_counter())
        with self._lock:
            full = self._in_flight >= self.max_calls
            self._in_flight += 1
        try:
            self._admit(event, call, full)
        except Exception:  # a lane thread must outlive any one call, and the call must end
            self._failed(call)

    def _admit(self, event: cygrpc.RequestCallEvent, call: _Call, full: bool) -> None:
        if full:  # the caller retries elsewhere, instead of waiting behind calls that may be slow
            self._finish(call, refused(ResourceExhausted(
                f"this serving process has {self.max_calls} calls under way, the most it takes",
                reason="TOO_MANY_CALLS")))
            return
        admitted = self.guard.admit(event.invocation_metadata, call.method.path)
        if isinstance(admitted, Refusal):  # refused unread: a caller without a valid token sends nothing we read
            self._finish(call, refused(admitted), measured=False)  # the guard counted it
            return
        if admitted.purpose is not None:
            call.purpose = admitted.purpose
        call.caller = admitted.caller
        self._start(call, (cygrpc.ReceiveMessageOperation(_FLAGS),))

    def _step(self, event: cygrpc.BatchOperationEvent, call: _Call) -> None:
        try:
            self._answer(event, call)
        except Exception:  # a lane thread must outlive any one call, and the call must end
            self._failed(call)

    def _failed(self, call: _Call) -> None:
        """Something unexpected failed while ``call`` was handled: the caller gets INTERNAL (not a
        wait until its deadline, or forever without one) and the call is no longer counted."""
        log.exception("lookup lane: a call failed unexpectedly")
        if call.answered:  # its last batch may be under way: its event ends it; else it never comes
            return
        try:
            self._finish(call, refused(Internal(INTERNAL_DETAILS, reason="INTERNAL_ERROR")), measured=False)
        except Exception:
            log.exception("lookup lane: cannot end a failed call")
            if not call.answered:
                self._done()

    def _answer(self, event: cygrpc.BatchOperationEvent, call: _Call) -> None:
        if call.answered or not event.success:
            # the answer's batch completed (sent, or the caller went away), or the caller cancelled
            # (or its deadline passed) before its request arrived: nothing more to send
            self._done()
            return
        left = None if call.deadline > NO_DEADLINE else call.deadline - time.time()
        got = outcome(call.method, cast("cygrpc.ReceiveMessageOperation", event.batch_operations[0]).message(), left,
                      call.purpose, call.caller)
        self._finish(call, got)

    def _finish(self, call: _Call, got: Outcome, *, measured: bool = True) -> None:
        """Counted before the answer is sent: the caller has it as soon as the batch completes."""
        code, response = got.code, got.response
        if measured:
            self.metrics.answered(call.method.label, code, time.perf_counter() - call.began)
        status = cygrpc.SendStatusFromServerOperation(got.trailers or None, code.value[0], got.details.encode(), _FLAGS)
        if response is None:
            ops: tuple[cygrpc.Operation, ...] = (
                cygrpc.SendInitialMetadataOperation(None, _FLAGS),
                cygrpc.ReceiveCloseOnServerOperation(_FLAGS),
                status,
            )
        else:
            ops = (
                cygrpc.SendInitialMetadataOperation(None, _FLAGS),
                cygrpc.SendMessageOperation(response, _FLAGS),
                cygrpc.ReceiveCloseOnServerOperation(_FLAGS),
                status,
            )
        call.answered = True
        self._start(call, ops)

    def _start(self, call: _Call, ops: tuple[cygrpc.Operation, ...]) -> None:
        """Start a batch of ``call``; when grpc refuses it (the call already ended), no event will
        come for it, so the call is done here."""
        if call.call.start_server_batch(ops, call) != _CALL_OK:
            self._done()

    def _done(self) -> None:
        with self._idle:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.notify_all()


def missing_pieces(server: object) -> list[str]:
    """What of grpc's private core the lane needs that this grpcio (or ``server``) does not have."""
    missing = []
    for name, members in CYGRPC_PIECES.items():
        piece = getattr(cygrpc, name, None)
        if piece is None:
            missing.append(f"grpc._cython.cygrpc.{name}")
        else:
            missing += [f"grpc._cython.cygrpc.{name}.{m}" for m in members if not hasattr(piece, m)]
    server_class = getattr(cygrpc, "Server", None)
    if server_class is not None and not isinstance(getattr(getattr(server, "_state", None), "server", None),
                                                   server_class):
        missing.append("the core server (a grpc.Server's _state.server)")
    return missing


__all__ = ["LaneMethod", "LaneUnsupported", "LookupLane", "missing_pieces"]
