"""A development certificate authority: the centre's server certificate and one client certificate per
region (and one for the centre's own tools), so the demo and the tests run with mutual TLS on.

Production takes certificates an operator's own CA issued; they follow the same naming convention,
which is what the centre checks (docs/security.md, "Transport"):

- a region's client certificate carries the URI SAN ``spiffe://fedstore/region/<CODE>`` (one only);
- the centre's tools (train, registry) carry ``spiffe://fedstore/operator/<name>``;
- the centre's server certificate names the host the clients dial (DNS or IP SANs).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedstore.federation.identity import operator_uri, region_uri

CENTRE_HOSTS = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key as files (PEM)."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class DevPKI:
    """What ``make_dev_pki`` wrote."""

    ca: Path
    ca_key: Path
    centre: KeyPair
    operator: KeyPair
    regions: dict[str, KeyPair]


def make_dev_pki(out: Path, regions: list[str], *, hosts: tuple[str, ...] = CENTRE_HOSTS, days: int = 365,
                 now: datetime | None = None, ca_name: str = "fedstore development CA") -> DevPKI:
    """A new CA in ``out`` and the certificates it signs; files that exist already are replaced."""
    now = now or datetime.now(timezone.utc)
    out.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    ca_cert = (
        _builder(ca_subject, ca_subject, ca_key.public_key(), now, days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, ca_key_path = out / "ca.pem", out / "ca-key.pem"
    _write(ca_path, ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(ca_key_path, ca_key)

    def issue(name: str, common_name: str, sans: list[x509.GeneralName], usage: x509.ObjectIdentifier) -> KeyPair:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            _builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]), ca_subject, key.public_key(),
                     now, days)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        pair = KeyPair(out / f"{name}.pem", out / f"{name}-key.pem")
        _write(pair.cert, cert.public_bytes(serialization.Encoding.PEM))
        _write_key(pair.key, key)
        return pair

    centre = issue("centre", hosts[0] if hosts else "fedstore centre", [_host(h) for h in hosts],
                   ExtendedKeyUsageOID.SERVER_AUTH)
    operator = issue("operator", "fedstore operator", [x509.UniformResourceIdentifier(operator_uri("operator"))],
                     ExtendedKeyUsageOID.CLIENT_AUTH)
    issued = {code: issue(f"region-{code}", f"fedstore region {code}",
                          [x509.UniformResourceIdentifier(region_uri(code))], ExtendedKeyUsageOID.CLIENT_AUTH)
              for code in regions}
    return DevPKI(ca_path, ca_key_path, centre, operator, issued)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, now: datetime,
             days: int) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))  # a clock a little behind still accepts it
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _host(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    # a private key readable by its owner only, from the moment it exists
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    tmp.replace(path)
