"""Listening and serving a dashboard app with uvicorn: in the foreground, or beside the centre's gRPC
server in the same process (a thread), where it reads the live store and counters. Over HTTPS when
given a TLS context (``federation.tls.https_context``: the region's or the centre's own certificate)."""

from __future__ import annotations

import socket
import ssl
import threading

import uvicorn
from starlette.applications import Starlette


class CannotListen(Exception):
    """The dashboard's address is taken or not this host's."""


def listen(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)  # from here on connections queue until the server accepts: announce, then serve
    except OSError as e:
        sock.close()
        raise CannotListen(f"cannot listen on {host}:{port}: {e.strerror}") from None
    return sock


def _server(app: Starlette, tls: ssl.SSLContext | None) -> uvicorn.Server:
    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                         ssl_context_factory=(lambda _config, _default: tls) if tls else None))


def serve_forever(app: Starlette, sock: socket.socket, tls: ssl.SSLContext | None = None) -> None:
    _server(app, tls).run(sockets=[sock])


def serve_in_thread(app: Starlette, sock: socket.socket, tls: ssl.SSLContext | None = None) -> uvicorn.Server:
    """Started in a daemon thread; ``should_exit = True`` on the returned server stops it."""
    server = _server(app, tls)
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="dashboard", daemon=True).start()
    return server
