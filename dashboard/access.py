"""Who may read a dashboard: the ``audit`` role of ``federation.roles``, for the page's region.

The same credentials as every gRPC door (``auth.tokens`` of the config, ``federation.tokens``): an
``Authorization: Bearer`` header, or — for a browser, which cannot send one without script — a
session cookie the login form sets after checking the same token. The cookie names the caller and
an expiry, signed with a key drawn when the server starts (a restart signs everyone out), and
carries no secret. No credential: 401; a credential without ``audit`` for the region: 403.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from fedstore.federation.roles import Role
from fedstore.federation.tokens import Caller, TokenBook, bearer_token

DASHBOARD_ROLE = Role.AUDIT  # a region's trail is an audit; its dashboard is the same reader's
SESSION_COOKIE = "fedstore_dashboard"
SESSION_SECONDS = 8 * 3600


@dataclass(frozen=True)
class Decision:
    status: int  # 200, 401 or 403
    caller: Caller | None
    reason: str


class DashboardAccess:
    def __init__(self, book: TokenBook, region: str | None) -> None:
        self._book = book
        self._region = region  # None: the centre's page, which spans every region
        self._key = secrets.token_bytes(32)
        self._by_name = {c.name: c for c in book.callers}

    def decide(self, authorization: str | None, cookie: str | None) -> Decision:
        caller = None
        if authorization:
            token = bearer_token((("authorization", authorization),))
            caller = self._book.caller(token) if token else None
            if caller is None:
                return Decision(401, None, "the bearer token is not one this federation issued")
        elif cookie:
            caller = self._session_caller(cookie)
        if caller is None:
            return Decision(401, None, "sign in with a token that holds the audit role")
        return self.admit(caller)

    def admit(self, caller: Caller) -> Decision:
        if DASHBOARD_ROLE not in caller.roles:
            held = ", ".join(sorted(caller.roles)) or "none"
            return Decision(403, caller, f"caller {caller.name!r} lacks role {DASHBOARD_ROLE} (it holds: {held})")
        if self._region is None and caller.regions != ("*",):
            return Decision(403, caller, f"the centre's dashboard spans every region: only a credential for '*' "
                                         f"is admitted; {caller.name!r} acts for {', '.join(caller.regions)}")
        if self._region is not None and not caller.allows(self._region):
            return Decision(403, caller, f"caller {caller.name!r} acts for {', '.join(caller.regions)}, "
                                         f"not region {self._region}")
        return Decision(200, caller, "")

    def login(self, token: str) -> tuple[Decision, str | None]:
        """The decision for a token typed into the form, and the session cookie when admitted."""
        caller = self._book.caller(token)
        if caller is None:
            return Decision(401, None, "that token is not one this federation issued"), None
        decision = self.admit(caller)
        return decision, (self._sign(caller.name) if decision.status == 200 else None)

    def _sign(self, name: str) -> str:
        body = f"{name}|{int(time.time()) + SESSION_SECONDS}"
        return body + "|" + hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()

    def _session_caller(self, cookie: str) -> Caller | None:
        body, _, mac = cookie.rpartition("|")
        name, _, expiry = body.partition("|")
        good = hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(good, mac) or not expiry.isdigit() or int(expiry) < time.time():
            return None
        return self._by_name.get(name)
