"""Who a client certificate says its holder is: the naming convention both sides of the border read.

A region's client certificate carries exactly one URI subject alternative name
``spiffe://fedstore/region/<CODE>`` (SPIFFE's form of a workload identity); the centre's own tools
carry ``spiffe://fedstore/operator/<name>``. The centre reads these from the peer's verified
certificate (grpc's ``x509_subject_alternative_name``), never from anything the caller sends.
"""

from __future__ import annotations

TRUST_DOMAIN = "spiffe://fedstore"
_REGION = f"{TRUST_DOMAIN}/region/"
_OPERATOR = f"{TRUST_DOMAIN}/operator/"


def region_uri(code: str) -> str:
    return _REGION + code.upper()


def operator_uri(name: str) -> str:
    return _OPERATOR + name


def certificate_regions(sans: list[str]) -> list[str]:
    """The region codes a certificate's subject alternative names claim (a valid one claims one)."""
    return [s[len(_REGION):] for s in sans if s.startswith(_REGION)]
