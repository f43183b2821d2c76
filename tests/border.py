"""Mutual TLS for the tests' centres: a development CA the session makes once, and the config
sections that put every test federation's border on it (``with_mtls``); the identifiers an attacker
tries to carry across it (``IDENTIFIERS``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedstore.federation.jurisdictions import JURISDICTIONS
from fedstore.cli.dev_certificates import DevPKI, make_dev_pki


# (what, how it is written): identifiers of the seven jurisdictions, and the same disguised
IDENTIFIERS = [
    ("a MyKad number (MY)", "880101-14-5566"), ("a Malaysian mobile number", "+60 12-345 6789"),
    ("an NRIC number (SG)", "S1234567D"), ("a FIN number (SG)", "G7654321N"), ("a Singapore number", "+65 9123 4567"),
    ("a NIK number (ID)", "3174011508900001"), ("an Indonesian mobile number", "+62 812-3456-7890"),
    ("a Thai ID number (TH)", "1-1037-02071-81-1"), ("a Thai mobile number", "+66 81 234 5678"),
    ("a CCCD number (VN)", "001088012345"), ("a Vietnamese mobile number", "+84 912 345 678"),
    ("a PhilSys number (PH)", "1234-5678-9012-3456"), ("a Philippine mobile number", "+63 917 123 4567"),
    ("an HKID number (HK)", "A123456(7)"), ("a Hong Kong number", "+852 5123 4567"),
    ("an e-mail address", "jane.tan@example.com"), ("an IPv4 address", "10.1.2.3"), ("an IPv6 address", "2001:db8::42"),
    ("a card number", "4111 1111 1111 1111"),
    ("a MyKad number in full-width digits", "８８０１０１-１４-５５６６"), ("a Thai ID in Thai digits", "๑๑๐๓๗๐๒๐๗๑๘๑๑"),
    ("a MyKad number in Arabic-Indic digits", "٨٨٠١٠١١٤٥٥٦٦"), ("a MyKad number in mathematical digits", "𝟖𝟖𝟎𝟏𝟎𝟏𝟏𝟒𝟓𝟓𝟔𝟔"),
    ("a card number spaced digit by digit", "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1"),
    ("a number dotted like a version", "8.8.0.1.0.1.1.4"),
    ("a MyKad number glued to a date", "1988-01-01-14-5566"),
    ("an e-mail address with a full-width at", "jane.tan＠example.com"),
    ("a MyKad number base64-encoded", "ODgwMTAxMTQ1NTY2"), ("a name hex-encoded", "4a616e652054616e"),
]


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


def two_region_federation(path: Path, pki: DevPKI, tokens: dict[str, str], roles: list[str],
                          serving_port_base: int) -> Path:
    """A federation of MY and SG (SQLite online stores) whose regions hold ``tokens`` (code ->
    secret, read from ``AGG_TOKEN_<code>``: the caller sets those) with ``roles``, over mutual TLS;
    written to ``path``."""
    import yaml

    raw = {
        "federation": {"name": "t"},
        "regions": [
            {"code": c, "jurisdiction": j, "law": law, "timezone": tz, "data_dir": f"data/{c}",
             "online_store": {"type": "sqlite"}, "serving_address": f"127.0.0.1:{serving_port_base + i}"}
            for i, (c, j, law, tz) in enumerate([("MY", "Malaysia", "PDPA-MY", "Asia/Kuala_Lumpur"),
                                                 ("SG", "Singapore", "PDPA-SG", "Asia/Singapore")])
        ],
        "auth": {"tokens": [{"name": f"region-{c.lower()}", "secret_env": f"AGG_TOKEN_{c}", "regions": [c],
                             "roles": roles} for c in tokens]},
        "privacy": {"epsilon_per_month": 3.0, "minimum_cohort": 10},
    }
    path.write_text(yaml.safe_dump(with_mtls(raw, pki)))
    return path
