"""Who a caller is, from the token it presents: shared by every gRPC door of the product."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fedstore.federation.config import TokenConfig
from fedstore.federation.consent import Purpose
from fedstore.federation.roles import Role


@dataclass(frozen=True)
class Caller:
    name: str
    regions: tuple[str, ...]  # ("*",): every region (a centre credential; it holds no row role)
    roles: frozenset[Role] = frozenset()  # what it may do, in each of its regions (federation.roles)
    purposes: frozenset[Purpose] = frozenset()  # what its lookups and scores may be for

    def allows(self, region: str) -> bool:
        """May act for ``region`` (its roles, checked per method by ``federation.access``, say how)."""
        return "*" in self.regions or region in self.regions

    def bound_to(self, region: str) -> bool:
        """A credential of ``region`` alone: the only kind that may read the region's rows."""
        return self.regions == (region,)


class TokenBook:
    def __init__(self, tokens: tuple[TokenConfig, ...]) -> None:
        # secrets are read once at start-up: a missing env var fails the start, not a request
        self._entries = [(t.secret().encode(), Caller(t.name, t.regions, t.roles, t.purposes)) for t in tokens]

    @property
    def callers(self) -> tuple[Caller, ...]:
        """Every caller the book knows (for decisions made once, at start-up)."""
        return tuple(caller for _, caller in self._entries)

    def caller(self, token: str) -> Caller | None:
        given = token.encode()
        found = None
        for secret, caller in self._entries:
            if hmac.compare_digest(secret, given):  # constant time, and no early exit
                found = caller
        return found


def authorization_scheme(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    """The scheme of the caller's ``authorization`` metadata ("Bearer", "Basic", ...), None without one."""
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            return text.strip().partition(" ")[0][:20] or None
    return None


def bearer_token(metadata: tuple[tuple[str, str | bytes], ...] | None) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None
