"""The dashboard's web server: one Starlette app per page, its HTML rebuilt off the request path.

A page is built (profiles, a judged day per feature and day, figures) by a background thread every
``refresh`` seconds and served from memory, so a request costs the access check and a copy: the
first paint never waits on DuckDB or matplotlib. No script on any page; everything works without it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from urllib.parse import parse_qs

from markupsafe import escape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from fedstore.dashboard.access import SESSION_COOKIE, SESSION_SECONDS, DashboardAccess
from fedstore.dashboard.pages import message_page

_HEADERS = {
    # nothing on the page needs script, a frame or another origin: say so, so none can be injected
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class PageCache:
    """The latest HTML of a page, and the error of the latest failed build (served until one succeeds)."""

    def __init__(self, build: Callable[[], str], refresh_seconds: float) -> None:
        self._build = build
        self._refresh = refresh_seconds
        self._lock = threading.Lock()
        self._html: str | None = None
        self._error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def rebuild(self) -> None:
        try:
            html = self._build()
        except Exception as e:  # noqa: BLE001 — a page that cannot be built says why, and the server stays up
            with self._lock:
                self._error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            return
        with self._lock:
            self._html, self._error = html, None

    def start(self) -> None:
        self.rebuild()
        self._thread = threading.Thread(target=self._loop, name="dashboard-refresh", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self._refresh):
            self.rebuild()

    def current(self) -> tuple[str | None, str | None]:
        with self._lock:
            return self._html, self._error


def dashboard_app(access: DashboardAccess, cache: PageCache, title: str) -> Starlette:
    def page(request: Request) -> Response:
        decision = access.decide(request.headers.get("authorization"), request.cookies.get(SESSION_COOKIE))
        if decision.status != 200:
            return _refused(decision.status, decision.reason)
        html, error = cache.current()
        if html is None:
            return _html(message_page(title, f"The page could not be built: {error or 'still building'}.",
                                      login=False), 503)
        if error:  # the last good page, said to be old: a reviewer must not take it for the current state
            html = html.replace("<body>", f'<body>\n<p class="alarm">This page is from an earlier build: the '
                                f"latest failed ({escape(error)}).</p>", 1)
        return _html(html, 200)

    async def login(request: Request) -> Response:
        # the form is urlencoded: parsed here rather than through Starlette's form(), which needs
        # python-multipart for a field this small
        body = await request.body()
        token = parse_qs(body.decode("utf-8", errors="replace"), max_num_fields=4).get("token", [""])[0]
        decision, cookie = access.login(token.strip())
        if cookie is None:
            return _refused(decision.status, decision.reason)
        response = RedirectResponse("./", status_code=303)
        # over HTTPS the browser keeps the session to HTTPS (uvicorn sets the scheme from the TLS socket)
        response.set_cookie(SESSION_COOKIE, cookie, max_age=SESSION_SECONDS, httponly=True, samesite="strict",
                            path="/", secure=request.url.scheme == "https")
        return response

    def _refused(status: int, reason: str) -> Response:
        heading = "Sign in" if status == 401 else "Not allowed"
        response = _html(message_page(f"{title}: {heading.lower()}", reason, login=status == 401), status)
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="fedstore dashboard"'
        return response

    def health(request: Request) -> Response:  # open, like grpc health: it reveals nothing
        html, _ = cache.current()
        return PlainTextResponse("ok" if html is not None else "building", status_code=200 if html else 503)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        cache.stop()

    return Starlette(routes=[Route("/", page), Route("/login", login, methods=["POST"]),
                             Route("/healthz", health)], lifespan=lifespan)


def _html(text: str, status: int) -> HTMLResponse:
    return HTMLResponse(text, status_code=status, headers=_HEADERS)
