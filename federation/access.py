"""Whether a caller may call a method, from ``federation.roles``: decided once per caller and
method when a server starts, and looked up (two dict reads) on every call, before its message is read.

Every guarded server (a region's serving node, the centre) puts an ``AccessGuard`` in front of its
services. A call without a valid ``authorization: Bearer <token>`` is UNAUTHENTICATED; a known
caller the table does not admit, or any caller of a method the table does not name, is
PERMISSION_DENIED, naming the rule it broke ("rule role: …"; the refusal's ``rule``). Health and reflection are not
behind the guard (``Scope.OPEN``). What the guard cannot know before the request is read, the
region a request names (``Scope.REQUEST_REGION``), its service checks with ``Caller.allows``.

A call of a lookup-role method (lookups, Score) is made for a purpose (``federation.consent``): the
one its ``fedstore-purpose`` metadata names, or its credential's only one. A purpose the credential
does not carry (``auth.tokens[].purposes``), or none named when it carries several, is
PERMISSION_DENIED, before the message is read; the admitted purpose goes with the call (``Admitted``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import grpc

from fedstore.federation.consent import PURPOSE_METADATA, Purpose
from fedstore.federation.error_boundary import abort, code_of
from fedstore.federation.errors import FedstoreError, PermissionDenied, Unauthenticated
from fedstore.federation.grpc_handlers import first_handler
from fedstore.federation.roles import POLICIES, Role, Scope
from fedstore.federation.tokens import Caller, TokenBook, authorization_scheme, bearer_token


Refusal = FedstoreError  # why a call is refused: its kind (the status), its message and its rule


def decide(caller: Caller, method: str, *, region: str | None) -> Refusal | None:
    """Why ``caller`` may not call ``method`` on a server of ``region`` (None: the centre); None: admitted.

    For ``Scope.REQUEST_REGION`` this is the role only: the request's region is its service's check."""
    policy = POLICIES.get(method)
    if policy is None or policy.scope is Scope.NOT_SERVED:
        return PermissionDenied(f"{method} has no access policy that admits any caller (deny by default)",
                                rule="policy")
    if policy.scope is Scope.OPEN:
        return None
    assert policy.role is not None
    if policy.role not in caller.roles:
        held = ", ".join(sorted(caller.roles)) or "none"
        rows = (f"; {method} returns rows, which only a credential of the region alone may read, and a credential "
                "for every region ('*'), as the centre's are, never holds a row role"
                if policy.scope is Scope.ROWS and "*" in caller.regions else "")
        return PermissionDenied(f"caller {caller.name!r} lacks role {policy.role} that {method} needs (it holds: {held}){rows}",
                                rule="role")
    if policy.scope is Scope.ROWS:
        if region is None:
            return PermissionDenied(f"{method} returns rows, never at the centre", rule="rows")
        if not caller.bound_to(region):
            why = ("it is a credential for every region ('*'), as the centre's are"
                   if "*" in caller.regions else f"it is bound to {', '.join(caller.regions)}")
            return PermissionDenied(f"{method} returns region {region}'s rows, so only a credential of region "
                                    f"{region} alone is admitted; caller {caller.name!r} is not: {why}", rule="rows")
    elif policy.scope is Scope.FEDERATION and caller.regions != ("*",):
        return PermissionDenied(f"{method} spans every region, so only a credential for '*' is admitted; "
                                f"caller {caller.name!r} acts for {', '.join(caller.regions)}", rule="region")
    elif region is not None and not caller.allows(region):  # a node of one region: its own callers only
        return PermissionDenied(f"caller {caller.name!r} may not act in region {region} "
                                f"(it acts for {', '.join(caller.regions)})", rule="region")
    return None


def admitted_call(book: TokenBook, metadata: tuple[tuple[str, str | bytes], ...] | None) -> Admitted:
    """Whom and for what purpose the guard admitted a call: a handler on grpc's own server, which
    gets the call's metadata but not the guard's verdict, asks it again (uncounted)."""
    caller = book.caller(bearer_token(metadata) or "")
    got = call_purpose(caller, metadata) if caller is not None else None
    if caller is None or not isinstance(got, Purpose):  # unreachable for an admitted call: refused before it ran
        raise PermissionError("the call was not admitted for a purpose")
    return Admitted(caller.name, got)


# methods whose calls name a purpose: the lookup role's (rows of persons, used for something)
PURPOSEFUL = frozenset(m for m, p in POLICIES.items() if p.role is Role.LOOKUP)


def unauthenticated(metadata: tuple[tuple[str, str | bytes], ...] | None) -> Refusal:
    """The refusal of a call without a bearer token."""
    scheme = authorization_scheme(metadata)
    if scheme is not None and scheme.lower() != "bearer":
        return Unauthenticated(f"unsupported authorization scheme {scheme!r}: send 'authorization: Bearer <token>' "
                               "metadata", reason="UNSUPPORTED_AUTH_SCHEME")
    return Unauthenticated("missing token: send 'authorization: Bearer <token>' metadata", reason="TOKEN_MISSING")


UNKNOWN_TOKEN = Unauthenticated("unknown token", reason="TOKEN_UNKNOWN")


@dataclass(frozen=True, slots=True)
class Admitted:
    """An admitted call: who, and what for (for a method whose role carries a purpose; else None)."""

    caller: str
    purpose: Purpose | None = None


def call_purpose(caller: Caller, metadata: tuple[tuple[str, str | bytes], ...] | None) -> Purpose | Refusal:
    """The purpose a call is made for: the one its ``fedstore-purpose`` metadata names, or the
    credential's only one; a purpose the credential does not carry is refused (PERMISSION_DENIED)."""
    named = None
    for key, value in metadata or ():
        if key == PURPOSE_METADATA:
            named = (value.decode(errors="replace") if isinstance(value, bytes) else value).strip()
            break
    held = ", ".join(sorted(p.value for p in caller.purposes)) or "none"
    if not named:
        if len(caller.purposes) == 1:
            return next(iter(caller.purposes))
        return PermissionDenied(f"caller {caller.name!r} may act for several purposes ({held}): name one in "
                                f"the {PURPOSE_METADATA!r} metadata", rule="purpose")
    try:
        purpose = Purpose(named)
    except ValueError:
        return PermissionDenied(f"unknown purpose {named[:40]!r} in {PURPOSE_METADATA!r}; purposes are "
                                f"{', '.join(p.value for p in Purpose)}", rule="purpose")
    if purpose not in caller.purposes:
        return PermissionDenied(f"caller {caller.name!r} may not use features for {purpose.value} "
                                f"(its purposes: {held})", rule="purpose")
    return purpose


class AccessObserver(Protocol):
    """Who was admitted, who was refused (metrics)."""

    def admitted(self, caller: str) -> None: ...

    def refused(self, code: grpc.StatusCode, caller: str) -> None: ...


class AccessGuard(grpc.GenericRpcHandler):
    """The guarded services' handlers for the callers ``POLICIES`` admits; a refusal, unread, else.

    ``region``: the region this server serves (a serving node), or None (the centre)."""

    def __init__(self, services: Sequence[grpc.GenericRpcHandler], book: TokenBook, region: str | None,
                 observer: AccessObserver | None = None) -> None:
        self.services = tuple(services)
        self.book = book
        self.region = region
        self.observer = observer
        # every caller's decision for every method in the table, made once: a call costs two lookups
        self._decisions: dict[str, dict[str, Refusal | None]] = {
            c.name: {m: decide(c, m, region=region) for m in POLICIES} for c in book.callers
        }

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = first_handler(self.services, handler_call_details)
        if handler is None:
            return None  # not a guarded method: the next handler's, or UNIMPLEMENTED
        refusal = self.refusal(handler_call_details.invocation_metadata, handler_call_details.method)
        return handler if refusal is None else deny_unread(refusal)

    def refusal(self, metadata: tuple[tuple[str, str | bytes], ...] | None, method: str) -> Refusal | None:
        """Why a call of ``method`` with this metadata is refused (counted); None: admitted (counted)."""
        got = self.admit(metadata, method)
        return got if isinstance(got, Refusal) else None

    def admit(self, metadata: tuple[tuple[str, str | bytes], ...] | None, method: str) -> Refusal | Admitted:
        """Why a call of ``method`` is refused, or who it is and its purpose (each counted)."""
        token = bearer_token(metadata)
        if not token:
            missing = unauthenticated(metadata)
            self._refused(missing, "")
            return missing
        caller = self.book.caller(token)
        if caller is None:
            self._refused(UNKNOWN_TOKEN, "")
            return UNKNOWN_TOKEN
        decisions = self._decisions[caller.name]
        refusal = decisions[method] if method in decisions else decide(caller, method, region=self.region)
        purpose = None
        if refusal is None and method in PURPOSEFUL:
            got = call_purpose(caller, metadata)
            refusal, purpose = (got, None) if isinstance(got, Refusal) else (None, got)
        if refusal is not None:
            self._refused(refusal, caller.name)
            return refusal
        if self.observer is not None:
            self.observer.admitted(caller.name)
        return Admitted(caller.name, purpose)


    def _refused(self, refusal: Refusal, caller: str) -> None:
        if self.observer is not None:
            self.observer.refused(code_of(refusal), caller)


def deny_unread(refusal: Refusal) -> grpc.RpcMethodHandler:
    """A refusal that never reads the caller's message. A client-streaming handler: grpc reads a
    stream's messages only when the handler asks for them, and on the wire a unary request is a
    stream of one, so a caller without a valid token cannot make the server receive the up to
    256 MiB a serving node accepts for training-set entity frames (a unary handler would read it all first)."""

    def handler(requests: object, context: grpc.ServicerContext) -> None:
        # sent here, not raised to the error boundary: one refusal is shared by every call it refuses
        abort(context, refusal)

    return grpc.stream_unary_rpc_method_handler(handler)


__all__ = ["Admitted", "AccessGuard", "AccessObserver", "PURPOSEFUL", "Refusal", "admitted_call", "call_purpose", "UNKNOWN_TOKEN", "decide", "deny_unread", "unauthenticated"]
