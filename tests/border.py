"""Mutual TLS for the tests' centres: a development CA the session makes once, and the config
sections that put every test federation's border on it (``with_mtls``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedstore.federation.jurisdictions import JURISDICTIONS
from fedstore.cli.dev_certificates import DevPKI, make_dev_pki


def make_pki(out: Path) -> DevPKI:
    return make_dev_pki(out, list(JURISDICTIONS))


def with_mtls(raw: dict[str, Any], pki: DevPKI) -> dict[str, Any]:
    """``raw`` (a federation config mapping) with the centre on mutual TLS and every region's
    client certificate named; returns ``raw`` itself."""
    agg = raw.setdefault("aggregator", {}) or {}
    raw["aggregator"] = agg
    agg["tls"] = {"cert": str(pki.centre.cert), "key": str(pki.centre.key), "client_ca": str(pki.ca)}
    agg["operator_tls"] = {"cert": str(pki.operator.cert), "key": str(pki.operator.key), "ca": str(pki.ca)}
    for region in raw["regions"]:
        pair = pki.regions[region["code"]]
        region["centre_tls"] = {"cert": str(pair.cert), "key": str(pair.key), "ca": str(pki.ca)}
    return raw
