"""Shared fixtures: one real redis-server per region, and small federations on tmp dirs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from border import make_pki  # noqa: E402
from redis_servers import RedisServer, start_redis  # noqa: E402

from fedstore.federation import FederationConfig, load_config  # noqa: E402

REGION_ROWS = {
    "MY": ("Malaysia", "PDPA-MY", "Asia/Kuala_Lumpur"),
    "SG": ("Singapore", "PDPA-SG", "Asia/Singapore"),
    "ID": ("Indonesia", "UU PDP", "Asia/Jakarta"),
}


@pytest.fixture(scope="session")
def redis_per_region() -> Iterator[dict[str, RedisServer]]:
    """One real redis-server per region on its own free loopback port, stopped after the session."""
    servers: dict[str, RedisServer] = {}
    try:
        for code in REGION_ROWS:
            servers[code] = start_redis()
        yield servers
    finally:
        for s in servers.values():
            s.stop()


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory):  # -> fedstore.cli.dev_certificates.DevPKI
    """A development CA for the session: the centre's certificate (127.0.0.1, localhost), one client
    certificate per region and one for the centre's own tools. Every test centre speaks mutual TLS."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture()
def clean_redis(redis_per_region: dict[str, RedisServer]) -> dict[str, RedisServer]:
    for s in redis_per_region.values():
        s.client().flushall()
    return redis_per_region


def write_config(path: Path, online: dict[str, dict], *, codes: tuple[str, ...] = ("MY", "SG")) -> Path:
    regions = []
    for i, code in enumerate(codes):
        name, law, tz = REGION_ROWS[code]
        regions.append({
            "code": code, "jurisdiction": name, "law": law, "timezone": tz,
            "data_dir": f"data/{code}", "online_store": online[code],
            "serving_address": f"127.0.0.1:{51000 + i}",
        })
    path.write_text(yaml.safe_dump({"federation": {"name": "test"}, "regions": regions}))
    return path


@pytest.fixture()
def redis_federation(tmp_path: Path, clean_redis: dict[str, RedisServer]) -> FederationConfig:
    """MY and SG, each on its own real Redis."""
    cfg = write_config(
        tmp_path / "fedstore.yaml",
        {code: {"type": "redis", "url": clean_redis[code].url} for code in ("MY", "SG")},
    )
    return load_config(cfg)


@pytest.fixture()
def sqlite_federation(tmp_path: Path) -> FederationConfig:
    cfg = write_config(tmp_path / "fedstore.yaml", {c: {"type": "sqlite"} for c in ("MY", "SG")})
    return load_config(cfg)
