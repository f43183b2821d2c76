"""Is a listening address free for this node? Asked before grpc is: grpc answers a busy port with
an error line of its own on stderr and a bare failure, where an operator needs one plain sentence.

The check binds (never listens) with the options grpc's server uses: SO_REUSEADDR always, and
SO_REUSEPORT when several workers share the port, so a port held by this node's own workers passes
and one held by anything else does not. grpc still binds for real afterwards (the port may be taken
in between); this only turns the usual mistake into a clear message.
"""

from __future__ import annotations

import errno
import os
import socket
import sys


class CannotListen(OSError):
    """The address cannot be listened on: another process holds it, it is not this host's, or it
    is no address at all."""


def claim_port(address: str) -> socket.socket | None:
    """Hold this host's claim to the port of ``address`` for the life of the returned socket.

    Workers that share a port (SO_REUSEPORT) would silently share it with any other process of the
    same user that does the same: a second ``fedstore serve --workers N`` left running, or another
    region's, and callers would get answers from whichever the kernel picks. The claim is a name in
    Linux's abstract socket namespace: one holder per port per host, released when the process
    dies however it dies, and no file to clean up. None where there is no such namespace.
    """
    port = address.rpartition(":")[2]
    if not sys.platform.startswith("linux") or port in ("", "0"):
        return None
    claim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        claim.bind(f"\0fedstore-serve:{port}")
    except OSError:
        claim.close()
        raise CannotListen(
            f"cannot listen on {address}: another `fedstore serve` on this host already serves port {port}"
        ) from None
    return claim


def check_bindable(address: str, *, reuse_port: bool) -> None:
    """Raise CannotListen unless at least one of the addresses ``host:port`` resolves to can be
    bound (grpc serves when it can bind one of them). Port 0 (any free port) always passes."""
    host, _, port_text = address.rpartition(":")
    if not port_text.isdigit() or int(port_text) > 65535:  # the resolver would take 99999 as 34463
        raise CannotListen(f"cannot listen on {address}: {port_text!r} is not a port number (0 to 65535)")
    port = int(port_text)
    if port == 0:
        return
    name = host.strip("[]") or None  # "[::]:50051" and ":50051" as grpc reads them
    try:
        candidates = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise CannotListen(f"cannot listen on {address}: {e.strerror}") from None
    reasons = []
    for family, kind, proto, _, sockaddr in candidates:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port and hasattr(socket, "SO_REUSEPORT"):
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                probe.bind(sockaddr)
                return
            except OSError as e:
                hint = " (another process may be listening there)" if e.errno == errno.EADDRINUSE else ""
                reasons.append(f"{e.strerror or e}{hint}")
    raise CannotListen(f"cannot listen on {address}: {'; '.join(dict.fromkeys(reasons))}")  # each reason once


def stop_listening(port: int) -> int:
    """Close this process's listening sockets on ``port`` at once, before grpc's own stop; returns
    how many it closed (0 where Linux's /proc is not there to find them).

    Workers sharing a port (SO_REUSEPORT): the kernel hands each new connection to one of their
    listening sockets. grpc's stop sends GOAWAY to its clients while its listener is still open; a
    client that reconnects at once can be handed to that closing listener and be reset, and then
    waits out its reconnect backoff (measured: ~1 s of UNAVAILABLE). Closed first, the kernel hands
    every new connection to the sibling workers, and the GOAWAY that follows sends clients there.

    grpc owns the socket, so its descriptor is pointed at a fresh unbound socket (``dup2``) instead
    of being closed: the listening socket closes (no descriptor refers to it any more) without
    grpc's poller seeing a failed accept, and grpc closes the stand-in on its own stop.
    """
    fd_dir = "/proc/self/fd"
    if not os.path.isdir(fd_dir):
        return 0
    closed = 0
    for name in os.listdir(fd_dir):
        try:
            if not os.readlink(f"{fd_dir}/{name}").startswith("socket:"):
                continue
            probe = socket.socket(fileno=os.dup(int(name)))  # a second descriptor: to ask, never to close grpc's
        except OSError:  # closed meanwhile (the listing's own descriptor, say)
            continue
        try:
            if (probe.type != socket.SOCK_STREAM or probe.family not in (socket.AF_INET, socket.AF_INET6)
                    or not probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                    or probe.getsockname()[1] != port):
                continue
            with socket.socket(probe.family, socket.SOCK_STREAM) as stand_in:
                os.dup2(stand_in.fileno(), int(name))
            closed += 1
        except OSError:
            continue
        finally:
            probe.close()  # the last reference to a listener just replaced: the kernel closes it here
    return closed


__all__ = ["CannotListen", "check_bindable", "claim_port", "stop_listening"]
