"""The one way a client reaches the centre: mutual TLS with the caller's own certificate.

Every link that crosses a border (a region's outbox, its drift baseline, `fedstore train`, the
registry commands, the demo) gets its channel here, from the federation config:

- a region presents ``regions[].centre_tls`` (its certificate names the region, see
  ``federation.identity``) and trusts the centre's certificate only if it chains to that ``ca``;
- the centre's own tools present ``aggregator.operator_tls``;
- plaintext only where the config says ``aggregator.plaintext: true`` (local development), with
  a warning each time a link is made; without it a missing ``centre_tls`` is a one-line error.

Files are read when a link is made, so a rotated client certificate is used from the next command on.
"""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from typing import Sequence

import grpc

from fedstore.federation.config import ClientTLSConfig, FederationConfig, PrivacyConfig
from fedstore.federation.errors import ConfigError

log = logging.getLogger(__name__)

PLAINTEXT_WARNING = ("aggregator.plaintext is set: tokens and statistics cross to the centre unencrypted and "
                     "unauthenticated by certificate; for local development only")


@dataclass(frozen=True)
class ClientCredentials:
    """A client certificate, its key and the CA trusted for the centre, read and checked (PEM bytes)."""

    cert: bytes
    key: bytes
    ca: bytes


@dataclass(frozen=True)
class CentreLink:
    """How one party reaches the centre: the address and the credentials it presents there."""

    address: str
    who: str  # "region MY" or "the centre's operator": for messages
    credentials: ClientCredentials | None  # None: plaintext, allowed by aggregator.plaintext only
    # what the sender's own border checks before anything crosses this link (regions/publishing/egress.py):
    # the region it speaks for (None: the centre's operator, who sends no statistics) and the federation's
    # minimum cohort
    region: str | None = None
    minimum_cohort: int = PrivacyConfig.minimum_cohort

    def channel(self, options: Sequence[tuple[str, object]] = ()) -> grpc.Channel:
        if self.credentials is None:
            return grpc.insecure_channel(self.address, options=list(options))
        c = self.credentials
        creds = grpc.ssl_channel_credentials(root_certificates=c.ca, private_key=c.key, certificate_chain=c.cert)
        return grpc.secure_channel(self.address, creds, options=list(options))


def centre_link(config: FederationConfig, region: str | None, address: str | None = None) -> CentreLink:
    """The link of ``region`` (a code) to the centre, or of the centre's own tools when None."""
    address = address or config.aggregator.address
    if region is None:
        who, where, tls = "the centre's operator", "aggregator.operator_tls", config.aggregator.operator_tls
    else:
        r = config.region(region)
        who, where, tls = f"region {r.code}", f"regions[{r.code}].centre_tls", r.centre_tls
    if config.aggregator.plaintext:
        log.warning(PLAINTEXT_WARNING)
        return CentreLink(address, who, None, region, config.privacy.minimum_cohort)
    if tls is None:
        raise ConfigError(
            f"{where}: missing: the centre accepts mutual TLS only; name {who}'s client certificate, key and the "
            "centre's CA (`fedstore certs init` makes development ones), or set aggregator.plaintext: true for "
            "local development")
    return CentreLink(address, who, read_client_credentials(tls, where), region, config.privacy.minimum_cohort)


def read_client_credentials(tls: ClientTLSConfig, where: str) -> ClientCredentials:
    """The files of ``tls``, checked now: a wrong path or a key of another certificate is a one-line
    error before any call, not a handshake failure the centre cannot explain."""
    data = {}
    for name in ("cert", "key", "ca"):
        path = getattr(tls, name)
        try:
            data[name] = path.read_bytes()
        except OSError as e:
            raise ConfigError(f"{where}.{name}: cannot read {path}: {e.strerror}") from None
    try:
        ssl.create_default_context(ssl.Purpose.SERVER_AUTH).load_cert_chain(tls.cert, tls.key, password=b"")
    except (ssl.SSLError, ValueError):
        raise ConfigError(f"{where}: {tls.cert} and {tls.key} are not a certificate and its private key (PEM, "
                          "unencrypted, matching)") from None
    try:
        ssl.create_default_context(cadata=data["ca"].decode("ascii"))
    except (ssl.SSLError, ValueError, UnicodeDecodeError):
        raise ConfigError(f"{where}.ca: {tls.ca} holds no CA certificate (PEM)") from None
    return ClientCredentials(cert=data["cert"], key=data["key"], ca=data["ca"])


def handshake_problem(error: grpc.RpcError) -> str | None:
    """Plain words for a call that failed in the TLS handshake (None for any other failure).

    The client sees the centre's certificate refused as such; the centre refusing the client's
    certificate shows only as a connection closed during set-up, which a centre going down would
    look like too: the words say both."""
    code = error.code() if callable(getattr(error, "code", None)) else None
    if code != grpc.StatusCode.UNAVAILABLE:
        return None
    details = str(error.details() or "")
    lowered = details.lower()
    if "handshake" in lowered or "certificate_verify_failed" in lowered or "ssl_error" in lowered:
        reason = details.rpartition("OPENSSL_internal:")[2] or details
        return (f"the TLS handshake with the centre failed ({reason.strip()}): its certificate does not chain to "
                "the CA this side trusts, or does not name the address dialled")
    return None


__all__ = ["CentreLink", "ClientCredentials", "PLAINTEXT_WARNING", "centre_link", "handshake_problem",
           "read_client_credentials"]
