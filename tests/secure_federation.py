"""Three regions (ID, MY, SG) of generated Feast data and a centre on loopback, for the tests that
run secure-aggregation rounds through the CLI (test_secure_aggregation_cli, test_secure_consent_basis).

Each test module names its own federation (``name``): its tokens' environment variables
(``<NAME>_TOKEN_<REGION>``, ``<NAME>_TOKEN_CENTRE``), its serving ports and its data directory."""

from __future__ import annotations

import shutil
import threading
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Callable

import pytest

from conftest import REGION_ROWS
from fedstore.aggregator.intake.server import build_server
from fedstore.cli.entry import main
from fedstore.federation import FederationConfig
from fedstore.regions.store.node import RegionNode
from fedstore.regions.synthetic import generate_region

CODES = ("ID", "MY", "SG")
LAST_DAY = date(2026, 10, 31)
END = datetime(2026, 11, 1, tzinfo=timezone.utc)
WINDOW = ["--days", "14", "--end", END.isoformat()]  # the window every region releases


class Centre:
    """The aggregator on a loopback port that stays the same across a restart."""

    def __init__(self, config: FederationConfig, path: Path) -> None:
        self.config, self.path = config, path
        self.server, port, self.store = build_server(config, path, "127.0.0.1:0")
        self.server.start()
        self.address = f"127.0.0.1:{port}"

    def restart(self) -> None:
        self.server.stop(0).wait()
        self.store.close()
        self.server, port, self.store = build_server(self.config, self.path, self.address)
        assert port, "the centre's port was not free again"
        self.server.start()

    def close(self) -> None:
        self.server.stop(0).wait()
        self.store.close()


def token_env(name: str, who: str) -> str:
    """The environment variable holding ``who``'s token (a region code, or "centre")."""
    return f"{name.upper()}_TOKEN_{who.upper()}"


def set_tokens(mp: pytest.MonkeyPatch, name: str) -> None:
    for who in (*CODES, "centre"):
        mp.setenv(token_env(name, who), f"{name.lower()}-{who.lower()}-secret")


def raw_federation(name: str, *, first_port: int, region_roles: list[str],
                   region: Callable[[str], dict[str, Any]] = lambda code: {}, **sections: Any) -> dict[str, Any]:
    """The config mapping: the three regions (embedded online stores; ``region(code)`` adds to a
    region's section), a token per region with ``region_roles`` and the centre's, a generous budget.
    No signal floor for training: these tests are about rounds, windows, consent and lineage, and
    2,000 customers a region at ε = 4 keep too little fraud signal to clear the default floor (0.55)
    in every draw of the noise (0.534 once); the floor has its own test (test_global_training)."""
    return {
        "federation": {"name": name},
        "regions": [{"code": c, "jurisdiction": REGION_ROWS[c][0], "law": REGION_ROWS[c][1],
                     "timezone": REGION_ROWS[c][2], "data_dir": f"data/{c}", "online_store": {"type": "sqlite"},
                     "serving_address": f"127.0.0.1:{first_port + i}", **region(c)} for i, c in enumerate(CODES)],
        "auth": {"tokens": [{"name": f"region-{c.lower()}", "secret_env": token_env(name, c), "regions": [c],
                             "roles": region_roles} for c in CODES]
                 + [{"name": "centre", "secret_env": token_env(name, "centre"), "regions": ["*"],
                     "roles": ["train", "statistics-read", "registry-read"]}]},
        "privacy": {"epsilon_per_month": 100.0, "delta_per_month": 1e-3, "minimum_cohort": 10},
        "training": {"minimum_expected_auc": 0.0},
        **sections,
    }


def generate(config: FederationConfig, more: Callable[[RegionNode], None] = lambda node: None) -> None:
    """Each region's synthetic data (2,000 customers, 20 days to LAST_DAY), ``more`` of it, applied."""
    for seed, code in enumerate(CODES):
        node = RegionNode(config.region(code))
        generate_region(code, node.data_dir, customers=2_000, days=20, end=LAST_DAY, timezone=REGION_ROWS[code][2],
                        seed=40 + seed)
        more(node)
        node.apply()


def forget_releases(config: FederationConfig, *names: str) -> None:
    """Remove these files or folders of every region's data directory (budgets, outboxes, journals),
    so that a test starts from none."""
    for code in CODES:
        for n in names:
            target = config.region(code).data_dir / n
            if target.is_dir():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)


def cli(config: FederationConfig, *argv: str) -> int:
    return main(["--config", str(config.source), *argv])


def open_round(config: FederationConfig, address: str, capsys: pytest.CaptureFixture[str], *, name: str,
               threshold: int, phase: float) -> str:
    """A round of the three regions at ε 4, opened by the centre's token; its id."""
    assert cli(config, "aggregator", "open-round", "--regions", ",".join(CODES), "--threshold", str(threshold),
               "--epsilon", "4", "--phase-seconds", str(phase), "--token-env", token_env(name, "centre"),
               "--address", address) == 0
    out = capsys.readouterr().out
    round_id = out.splitlines()[0]
    assert round_id.startswith("secagg-") and "a sum needs" in out
    return round_id


def take_part(config: FederationConfig, address: str, regions: tuple[str, ...], round_args: list[str], *,
              name: str) -> tuple[dict[str, int], list[threading.Thread]]:
    """``fedstore region secure-round`` of each region on a thread of its own, started: the exit
    statuses (filled in as they end) and the threads to join."""
    codes: dict[str, int] = {}

    def run(code: str) -> None:
        codes[code] = cli(config, "region", "secure-round", "--region", code, *round_args, *WINDOW,
                          "--token-env", token_env(name, code), "--address", address)

    threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in regions]
    for t in threads:
        t.start()
    return codes, threads
