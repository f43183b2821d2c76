"""The product's error roots: the federation config's, and the one every refusal a server sends derives from.

A ``FedstoreError`` is a domain exception: it says what kind of refusal it is (its class, and so its
``status``) and, where it has one, the ``rule`` it broke, a short stable identifier ("budget",
"role") that metrics count and a client reads from the status's details. A refusal that breaks no
rule names its ``reason`` instead, in UPPER_SNAKE as Google's APIs do ("TOKEN_MISSING"), at the
raise or once for its class (``REASON``); every one is in docs/clients.md's table of reasons. Domain
code raises these and never names a gRPC status code; the error boundary of each server
(``federation.error_boundary``, and the lookup lane's one answer path) turns them into a status
with details, and the HTTP API into an HTTP status (``serving.http_api``).
"""

from __future__ import annotations

import copy
import re
from enum import Enum
from typing import ClassVar, TypeVar


class ConfigError(ValueError):
    """The federation config is invalid. The message names the offending field in one line."""


class Status(Enum):
    """The kinds of refusal, named as the gRPC status codes the error boundary sends for them."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    NOT_FOUND = "NOT_FOUND"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    UNIMPLEMENTED = "UNIMPLEMENTED"
    INTERNAL = "INTERNAL"


# a reason as Google's APIs spell theirs (google.rpc.ErrorInfo.reason): UPPER_SNAKE, at most 63 characters
_REASON = re.compile(r"[A-Z][A-Z0-9_]{0,61}[A-Z0-9]")


class FedstoreError(Exception):
    """A refusal, or a failure, a server's caller is told about. Subclasses fix ``status``.

    ``rule``: the rule the request broke, when it broke one; the message then reads
    "rule <rule>: <message>", as every rejection of the product has always been worded.
    ``reason``: what the caller reads as ``google.rpc.ErrorInfo.reason``: the rule when there is
    one, else the reason the raise names, else its class's ``REASON``, else the status's name (a
    class without a ``REASON`` leaves it to each raise: tests/test_refusal_reasons.py sees that
    every raise in the servers' packages names one)."""

    status: ClassVar[Status] = Status.INTERNAL
    REASON: ClassVar[str | None] = None

    def __init__(self, message: str = "", *, rule: str | None = None, reason: str | None = None) -> None:
        super().__init__(f"rule {rule}: {message}" if rule else message)
        if reason is not None and not _REASON.fullmatch(reason):
            raise ValueError(f"reason {reason!r} is not UPPER_SNAKE of at most 63 characters")
        self.rule = rule
        self.reason: str = rule or reason or self.REASON or self.status.value


class InvalidArgument(FedstoreError):
    status = Status.INVALID_ARGUMENT


class NotFound(FedstoreError):
    status = Status.NOT_FOUND


class Unauthenticated(FedstoreError):
    status = Status.UNAUTHENTICATED


class PermissionDenied(FedstoreError):
    status = Status.PERMISSION_DENIED


class FailedPrecondition(FedstoreError):
    status = Status.FAILED_PRECONDITION


class ResourceExhausted(FedstoreError):
    status = Status.RESOURCE_EXHAUSTED


class Unavailable(FedstoreError):
    status = Status.UNAVAILABLE


class DeadlineExceeded(FedstoreError):
    status = Status.DEADLINE_EXCEEDED


class Unimplemented(FedstoreError):
    status = Status.UNIMPLEMENTED


class Internal(FedstoreError):
    status = Status.INTERNAL


E = TypeVar("E", bound=FedstoreError)


def reworded(error: E, message: str) -> E:
    """``error`` (its kind and rule) with another message: what the caller sent, in the caller's terms."""
    again = copy.copy(error)
    again.args = (message,)
    return again


__all__ = ["ConfigError", "DeadlineExceeded", "FailedPrecondition", "FedstoreError", "Internal", "InvalidArgument",
           "NotFound", "PermissionDenied", "ResourceExhausted", "Status", "Unauthenticated", "Unavailable",
           "Unimplemented", "reworded"]
