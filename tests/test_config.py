"""The federation config is validated on load, with one-line errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fedstore.federation import ConfigError, load_config, parse_config


def _region(code="MY", **over):
    base = {
        "code": code, "jurisdiction": {"MY": "Malaysia", "SG": "Singapore"}[code],
        "law": {"MY": "PDPA-MY", "SG": "PDPA-SG"}[code],
        "timezone": {"MY": "Asia/Kuala_Lumpur", "SG": "Asia/Singapore"}[code],
        "data_dir": f"data/{code}", "online_store": {"type": "sqlite"},
        "serving_address": f"127.0.0.1:{5000 + len(code) + ord(code[0])}",
    }
    base.update(over)
    return base


def _cfg(*regions):
    return {"federation": {"name": "t"}, "regions": list(regions)}


def test_repository_default_config_has_all_seven_jurisdictions():
    cfg = load_config(Path(__file__).parents[1] / "fedstore.yaml")
    assert cfg.codes == ("MY", "SG", "ID", "TH", "VN", "PH", "HK")
    assert {r.law for r in cfg.regions} == {
        "PDPA-MY", "PDPA-SG", "UU PDP", "PDPA-TH", "Decree 13/2023", "DPA-PH", "PDPO"}
    assert all(r.online_store.type == "sqlite" for r in cfg.regions)
    assert len({r.data_dir for r in cfg.regions}) == 7


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text(yaml.safe_dump(_cfg(_region())))
    region = load_config(path).region("my")
    assert region.data_dir == (tmp_path / "data" / "MY").resolve()
    assert region.online_store.path == region.data_dir / "online_store.db"
    assert region.project == "fedstore_my"


def test_redis_url_is_parsed():
    cfg = parse_config(_cfg(_region(online_store={"type": "redis", "url": "redis://10.0.0.5:6380/3", "key_ttl_seconds": 60})), base_dir=Path("/tmp"))
    store = cfg.region("MY").online_store
    assert (store.redis_host, store.redis_port, store.redis_db, store.key_ttl_seconds) == ("10.0.0.5", 6380, 3, 60)


# (case, config mutation, expected message fragment)
BAD = [
    ("unknown top-level key", lambda c: c.update(extra=1), "config.extra: unknown key"),
    ("missing regions", lambda c: c.pop("regions"), "config.regions: missing"),
    ("unknown region key", lambda c: c["regions"][0].update(onlne_store={}), "regions[0].onlne_store: unknown key"),
    ("missing timezone", lambda c: c["regions"][0].pop("timezone"), "regions[0].timezone: missing"),
    ("unknown code", lambda c: c["regions"][0].update(code="XX"), "regions[0].code: unknown region 'XX'"),
    ("wrong law", lambda c: c["regions"][0].update(law="PDPO"), "regions[0].law: region MY is governed by 'PDPA-MY'"),
    ("bad time zone", lambda c: c["regions"][0].update(timezone="Mars/Olympus"), "regions[0].timezone: unknown time zone"),
    ("shared data dir", lambda c: c["regions"][1].update(data_dir="data/MY"), "regions[1].data_dir"),
    ("nested data dir", lambda c: c["regions"][1].update(data_dir="data/MY/sg"), "regions[1].data_dir"),
    ("shared redis db", lambda c: [r.update(online_store={"type": "redis", "url": "redis://h:6379/0"}) for r in c["regions"]], "regions[1].online_store.url"),
    ("bad redis url", lambda c: c["regions"][0].update(online_store={"type": "redis", "url": "http://x"}), "regions[0].online_store.url"),
    ("unknown store type", lambda c: c["regions"][0].update(online_store={"type": "dynamo"}), "regions[0].online_store.type"),
    ("bad address", lambda c: c["regions"][0].update(serving_address="nowhere"), "regions[0].serving_address"),
    # Feast's HTTP feature-server API on the serving node: a port of its own, or off
    ("http port zero", lambda c: c["regions"][0].update(serving={"http_port": 0}), "regions[0].serving.http_port: expected a positive integer"),
    ("http port a string", lambda c: c["regions"][0].update(serving={"http_port": "8080"}), "regions[0].serving.http_port: expected a positive integer"),
    ("http port out of range", lambda c: c["regions"][0].update(serving={"http_port": 70000}), "regions[0].serving.http_port: expected a port number"),
    ("http port is the metrics port", lambda c: c["regions"][0].update(serving={"http_port": 9100, "metrics_port": 9100}),
     "regions[0].serving.http_port: 9100 is already serving.metrics_port"),
    ("http port is the gRPC port", lambda c: c["regions"][0].update(serving_address="127.0.0.1:6566", serving={"http_port": 6566}),
     "regions[0].serving.http_port: 6566 is already the gRPC port"),
    ("duplicate region", lambda c: c["regions"][1].update(code="MY", jurisdiction="Malaysia", law="PDPA-MY", timezone="Asia/Kuala_Lumpur"), "regions[1].code: region MY is already defined"),
    ("negative ttl", lambda c: c["regions"][0].update(online_store={"type": "redis", "url": "redis://h:1/0", "key_ttl_seconds": -1}), "key_ttl_seconds"),
    # gRPC would silently listen on the port modulo 65536 (99999 → 34463)
    ("aggregator port out of range", lambda c: c.update(aggregator={"address": "127.0.0.1:99999"}), "aggregator.address"),
    # the border: the centre requires client certificates, and plaintext is a choice made out loud
    ("centre TLS without a client CA", lambda c: c.update(aggregator={"tls": {"cert": "c.pem", "key": "k.pem"}}),
     "aggregator.tls.client_ca: missing: the centre requires client certificates"),
    ("centre TLS with an unknown key", lambda c: c.update(aggregator={"tls": {"cert": "c", "key": "k", "client_ca": "a",
                                                                              "ca": "x"}}), "aggregator.tls.ca: unknown key"),
    ("plaintext not a boolean", lambda c: c.update(aggregator={"plaintext": "yes"}),
     "aggregator.plaintext: expected true or false, got 'yes'"),
    ("plaintext and TLS at once", lambda c: c.update(aggregator={"plaintext": True, "tls": {"cert": "c", "key": "k",
                                                                                            "client_ca": "a"}}),
     "aggregator.plaintext: true turns TLS off"),
    ("region TLS without its CA", lambda c: c["regions"][0].update(centre_tls={"cert": "c", "key": "k"}),
     "regions[0].centre_tls.ca: missing"),
    ("region TLS as a string", lambda c: c["regions"][0].update(centre_tls="certs/MY.pem"),
     "regions[0].centre_tls: expected a mapping"),
    ("plaintext and a region's TLS", lambda c: (c.update(aggregator={"plaintext": True}), c["regions"][1].update(
        centre_tls={"cert": "c", "key": "k", "ca": "a"})), "regions[1].centre_tls: aggregator.plaintext: true turns TLS off"),
    ("operator TLS with an empty path", lambda c: c.update(aggregator={"operator_tls": {"cert": "", "key": "k", "ca": "a"}}),
     "aggregator.operator_tls.cert: expected a non-empty string"),
    # how far back an incremental job reads again: hours, a number, bounded
    ("negative lateness", lambda c: c["regions"][0].update(materialization={"lateness_hours": -1}),
     "regions[0].materialization.lateness_hours: expected a number of hours from 0 to 8784"),
    ("lateness as text", lambda c: c["regions"][0].update(materialization={"lateness_hours": "6h"}),
     "regions[0].materialization.lateness_hours: expected a number of hours"),
    ("lateness as a boolean", lambda c: c["regions"][0].update(materialization={"lateness_hours": True}),
     "regions[0].materialization.lateness_hours"),
    ("lateness beyond a year", lambda c: c["regions"][0].update(materialization={"lateness_hours": 10**9}),
     "regions[0].materialization.lateness_hours"),
    ("lateness not finite", lambda c: c["regions"][0].update(materialization={"lateness_hours": float("inf")}),
     "regions[0].materialization.lateness_hours"),
    ("unknown contract violation mode", lambda c: c["regions"][0].update(materialization={"on_contract_violation": "skip"}),
     "regions[0].materialization.on_contract_violation: expected fail or quarantine, got 'skip'"),
    ("quarantine on the spark engine", lambda c: c["regions"][0].update(
        materialization={"engine": "spark", "on_contract_violation": "quarantine"}),
     "regions[0].materialization.on_contract_violation: quarantine needs engine: local"),
    ("unknown lookup path", lambda c: c["regions"][0].update(serving={"lookup_path": "fast"}),
     "regions[0].serving.lookup_path: expected one of auto, public, got 'fast'"),
    ("unknown materialization key", lambda c: c["regions"][0].update(materialization={"latenes_hours": 6}),
     "regions[0].materialization.latenes_hours: unknown key"),
    ("training floor above 1", lambda c: c.update(training={"minimum_expected_auc": 1.5}),
     "training.minimum_expected_auc: expected an AUC in [0, 1)"),
    ("unknown training key", lambda c: c.update(training={"floor": 0.6}), "training.floor: unknown key"),
]


def test_the_http_api_is_off_unless_a_port_is_given():
    assert parse_config(_cfg(_region()), base_dir=Path("/tmp")).region("MY").serving.http_port is None
    on = parse_config(_cfg(_region(serving={"http_port": 6566})), base_dir=Path("/tmp"))
    assert on.region("MY").serving.http_port == 6566


def test_the_training_floor_defaults_and_is_set_in_the_config():
    assert parse_config(_cfg(_region("MY")), base_dir=Path("/")).training.minimum_expected_auc == 0.55
    raw = _cfg(_region("MY"))
    raw["training"] = {"minimum_expected_auc": 0.6}
    assert parse_config(raw, base_dir=Path("/")).training.minimum_expected_auc == 0.6


def test_lateness_window_defaults_to_a_day_and_is_set_per_region():
    raw = _cfg(_region("MY"), _region("SG", materialization={"lateness_hours": 6}))
    cfg = parse_config(raw, base_dir=Path("/tmp/fed"))
    assert cfg.region("MY").materialization.lateness_hours == 24
    assert cfg.region("SG").materialization.lateness_hours == 6
    assert cfg.region("SG").materialization.engine == "local"  # the engine may be left out
    off = parse_config(_cfg(_region("MY", materialization={"engine": "spark", "lateness_hours": 0})), base_dir=Path("/"))
    assert off.region("MY").materialization.lateness_hours == 0


def test_border_tls_paths_resolve_against_the_config_file():
    raw = _cfg(_region("MY"))
    raw["aggregator"] = {"tls": {"cert": "certs/centre.pem", "key": "certs/centre-key.pem", "client_ca": "certs/ca.pem"},
                         "operator_tls": {"cert": "certs/operator.pem", "key": "/abs/op-key.pem", "ca": "certs/ca.pem"}}
    raw["regions"][0]["centre_tls"] = {"cert": "certs/region-MY.pem", "key": "certs/region-MY-key.pem", "ca": "certs/ca.pem"}
    cfg = parse_config(raw, base_dir=Path("/tmp/fed"))
    assert cfg.aggregator.tls_client_ca == Path("/tmp/fed/certs/ca.pem") and not cfg.aggregator.plaintext
    assert cfg.aggregator.operator_tls is not None and cfg.aggregator.operator_tls.key == Path("/abs/op-key.pem")
    tls = cfg.region("MY").centre_tls
    assert tls is not None and (tls.cert, tls.ca) == (Path("/tmp/fed/certs/region-MY.pem"), Path("/tmp/fed/certs/ca.pem"))


@pytest.mark.parametrize("case,mutate,fragment", BAD, ids=[b[0] for b in BAD])
def test_invalid_config_is_one_line_naming_the_field(case, mutate, fragment):
    raw = _cfg(_region("MY"), _region("SG"))
    mutate(raw)
    with pytest.raises(ConfigError) as err:
        parse_config(raw, base_dir=Path("/tmp/fed"))
    message = str(err.value)
    assert fragment in message
    assert "\n" not in message


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("regions: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_a_key_given_twice_is_a_one_line_error_naming_it(tmp_path, capsys):
    """PyYAML keeps the last of two equal keys silently: a second `serving:` block replaced the first."""
    from fedstore.cli import main

    good = yaml.safe_dump(_cfg(_region("MY", serving={"max_entities": 50})), sort_keys=False)
    twice = good.replace("  serving:\n", "  serving:\n    max_entities: 50\n  serving:\n", 1)
    path = tmp_path / "fed.yaml"
    path.write_text(twice)
    line = twice.splitlines().index("  serving:", twice.splitlines().index("  serving:") + 1) + 1
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value) == (f"{path}: line {line}: the key 'serving' appears twice in one mapping "
                              f"(lines {line - 2} and {line}); remove one of them")
    assert main(["--config", str(path), "region", "status", "--region", "MY"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"fedstore: error: {err.value}"]
    # a merge (<<) may still override what it merges: not a duplicate
    path.write_text("defaults: &d {name: a, x: 1}\nfederation:\n  <<: *d\n  name: t\n")
    with pytest.raises(ConfigError) as err:  # refused for what is missing, not for `name`
        load_config(path)
    assert "twice" not in str(err.value)
    path.write_text(good)
    assert load_config(path).region("MY").serving.max_entities == 50


def test_unreadable_config_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00federation")
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load_config(binary)


def test_unknown_region_lookup_lists_the_configured_ones():
    cfg = parse_config(_cfg(_region("MY")), base_dir=Path("/tmp"))
    with pytest.raises(ConfigError, match="unknown region 'TH'; this federation has MY"):
        cfg.region("TH")


def _token(**over):
    return {"name": "t", "secret_env": "T", "roles": ["lookup"], "regions": ["MY"], **over}


# (case, token, expected message fragment): a credential that could break the border is not configurable
BAD_TOKENS = [
    ("no roles key", {k: v for k, v in _token().items() if k != "roles"}, "auth.tokens[0].roles: missing"),
    ("empty roles", _token(roles=[]), "auth.tokens[0].roles: expected a non-empty list of roles"),
    ("unknown role", _token(roles=["lookup", "admin"]), "auth.tokens[0].roles: unknown role 'admin'; roles are audit, datasets"),
    ("rows for every region", _token(regions=["*"]), "auth.tokens[0].regions: role lookup returns a region's rows"),
    ("rows for two regions", _token(roles=["datasets"], regions=["MY", "SG"]), "names exactly one region (got MY, SG)"),
    ("centre's roles plus rows", _token(roles=["train", "lookup"], regions=["*"]), "role lookup returns a region's rows"),
    ("publish for every region", _token(roles=["publish"], regions=["*"]), "role publish acts for the regions it names, never for '*'"),
    ("promote for every region", _token(roles=["promote"], regions=["*"]), "role promote acts for the regions it names"),
    ("train for one region", _token(roles=["train"], regions=["MY"]), "role train spans every region's statistics"),
    ("every region and one more", _token(roles=["audit"], regions=["*", "MY"]), "'*' already means every region"),
]


@pytest.mark.parametrize("case,token,fragment", BAD_TOKENS, ids=[b[0] for b in BAD_TOKENS])
def test_a_credential_outside_its_roles_regions_is_one_line_naming_the_field(case, token, fragment):
    raw = {**_cfg(_region("MY"), _region("SG")), "auth": {"tokens": [token]}}
    with pytest.raises(ConfigError) as err:
        parse_config(raw, base_dir=Path("/tmp/fed"))
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_the_centre_and_the_regions_credentials_are_configurable():
    from fedstore.federation.roles import Role

    tokens = [_token(name="app-my"), _token(name="ops-my", roles=["datasets", "publish", "promote", "audit"]),
              _token(name="ops", roles=["publish", "promote", "registry-read"], regions=["MY", "SG"]),
              _token(name="centre", roles=["train", "statistics-read", "registry-read", "audit"], regions=["*"])]
    cfg = parse_config({**_cfg(_region("MY"), _region("SG")), "auth": {"tokens": tokens}}, base_dir=Path("/tmp"))
    centre = cfg.tokens[-1]
    assert centre.regions == ("*",) and Role.TRAIN in centre.roles and not centre.roles & {Role.LOOKUP, Role.DATASETS}
    assert cfg.tokens[0].bound_to("MY") and not cfg.tokens[2].bound_to("MY")
