"""Server TLS that follows its certificate files: shared by every gRPC door of the product.

Certificates are rotated in place (cert-manager, a renewal cron) while servers keep running. gRPC
asks for the certificate at each new connection's handshake; the files are re-read only when they
changed, and a new pair is taken only once it is complete and consistent (the key matches the
certificate), so a rotation caught half-written keeps the old pair until the second file lands.
Connections already open keep the certificate they were opened with.

With a client CA (the centre's border), every client must present a certificate that chains to it
(mutual TLS); the CA file is followed the same way, so a CA rolled over in place needs no restart.
"""

from __future__ import annotations

import logging
import ssl
import threading
from pathlib import Path

import grpc

from fedstore.federation.errors import ConfigError

log = logging.getLogger(__name__)


class RotatingCertificate:
    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self._lock = threading.Lock()
        pair = self._read()
        if pair is None:
            raise ConfigError(f"TLS: {cert} and {key} cannot be read as a certificate and its private key")
        self._pair = pair
        self._ca = self._read_ca()
        if client_ca is not None and self._ca is None:
            raise ConfigError(f"TLS: {client_ca} cannot be read as a CA certificate (PEM)")
        self._version = self._stat()

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(self._pair, self._ca), self._fetch,
            require_client_authentication=self.client_ca is not None)

    @staticmethod
    def _configuration(pair: tuple[bytes, bytes], ca: bytes | None) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=ca)

    def _stat(self) -> tuple[int, ...]:
        files = (self.cert, self.key) if self.client_ca is None else (self.cert, self.key, self.client_ca)
        return tuple(v for f in files for st in (f.stat(),) for v in (st.st_mtime_ns, st.st_size))

    def _read(self) -> tuple[bytes, bytes] | None:
        """(key, certificate chain) when the files hold a matching pair, else None."""
        try:
            key, cert = self.key.read_bytes(), self.cert.read_bytes()
            # the empty password: an encrypted key (which gRPC cannot use) fails here, never prompts
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(self.cert, self.key, password=b"")
        except (OSError, ssl.SSLError, ValueError):
            return None
        if cert != self.cert.read_bytes():  # replaced while being checked: the next handshake retries
            return None
        return key, cert

    def _read_ca(self) -> bytes | None:
        """The client CA's PEM when the file holds at least one certificate (None: no CA, or unreadable)."""
        if self.client_ca is None:
            return None
        try:
            ca = self.client_ca.read_bytes()
            ssl.create_default_context(cadata=ca.decode("ascii"))
        except (OSError, ssl.SSLError, ValueError, UnicodeDecodeError):
            return None
        return ca

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC at each handshake: a new configuration when the files changed, else None."""
        try:
            version = self._stat()
        except OSError:
            return None  # mid-rotation (a file briefly missing): keep serving the current pair
        with self._lock:
            if version == self._version:
                return None
            pair, ca = self._read(), self._read_ca()
            if pair is None or (self.client_ca is not None and ca is None):
                return None  # incomplete or mismatched: keep the current pair, look again next time
            self._version, self._pair, self._ca = version, pair, ca
        log.info("TLS: %s changed; new connections use the new certificate", self.cert)
        return self._configuration(pair, ca)


def server_credentials(cert: Path, key: Path, client_ca: Path | None = None) -> grpc.ServerCredentials:
    """Credentials for ``add_secure_port`` that pick up rotated certificate files by themselves; with
    ``client_ca``, a client without a certificate that chains to it is refused at the handshake."""
    return RotatingCertificate(cert, key, client_ca).credentials()


def https_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server ``SSLContext`` for an HTTPS door (the dashboards) that follows rotated certificate files
    like the gRPC doors: at each handshake the files are looked at, and a new, complete and matching pair
    is taken for that connection and the ones after it. No client certificate: a browser has none; the
    door's own credential check (a bearer token or session) is behind it."""
    follower = RotatingCertificate(cert, key)  # refuses a pair that does not match, in one line

    def load() -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert, key, password=b"")
        return ctx

    base = load()
    seen, current = follower._stat(), base
    lock = threading.Lock()

    def on_hello(sock: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _ctx: ssl.SSLContext) -> None:
        nonlocal seen, current
        try:
            version = follower._stat()
        except OSError:
            version = seen  # mid-rotation (a file briefly missing): keep the current pair
        with lock:
            if version != seen and follower._read() is not None:
                try:
                    current, seen = load(), version
                    log.info("TLS: %s changed; new HTTPS connections use the new certificate", cert)
                except (OSError, ssl.SSLError):
                    pass  # replaced while loading: look again at the next handshake
            chosen = current
        if chosen is not base:
            sock.context = chosen

    base.sni_callback = on_hello
    return base
