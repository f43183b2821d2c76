"""Server TLS that follows its certificate files: shared by every gRPC door of the product.

Certificates are rotated in place (cert-manager, a renewal cron) while servers keep running. gRPC
asks for the certificate at each new connection's handshake; the files are re-read only when they
changed, and a new pair is taken only once it is complete and consistent (the key matches the
certificate), so a rotation caught half-written keeps the old pair until the second file lands.
Connections already open keep the certificate they were opened with.
"""

from __future__ import annotations

import logging
import ssl
import threading
from pathlib import Path

import grpc

from federation.errors import ConfigError

log = logging.getLogger(__name__)


class RotatingCertificate:
    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = cert, key
        self._lock = threading.Lock()
        pair = self._read()
        if pair is None:
            raise ConfigError(f"TLS: {cert} and {key} cannot be read as a certificate and its private key")
        self._pair = pair
        self._version = self._stat()

    def credentials(self) -> grpc.ServerCredentials:
        initial = grpc.ssl_server_certificate_configuration([self._pair])
        return grpc.dynamic_ssl_server_credentials(initial, self._fetch)

    def _stat(self) -> tuple[int, int, int, int]:
        c, k = self.cert.stat(), self.key.stat()
        return c.st_mtime_ns, c.st_size, k.st_mtime_ns, k.st_size

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

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC at each handshake: a new configuration when the files changed, else None."""
        try:
            version = self._stat()
        except OSError:
            return None  # mid-rotation (a file briefly missing): keep serving the current pair
        with self._lock:
            if version == self._version:
                return None
            pair = self._read()
            if pair is None:
                return None  # incomplete or mismatched: keep the current pair, look again next time
            self._version, self._pair = version, pair
        log.info("TLS: %s changed; new connections use the new certificate", self.cert)
        return grpc.ssl_server_certificate_configuration([pair])


def server_credentials(cert: Path, key: Path) -> grpc.ServerCredentials:
    """Credentials for ``add_secure_port`` that pick up rotated certificate files by themselves."""
    return RotatingCertificate(cert, key).credentials()
