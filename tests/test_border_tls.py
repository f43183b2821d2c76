"""The border runs on mutual TLS: the centre takes only certificates its client CA signed, binds a
submission's region to the certificate it came over, and the outbox keeps every release that
credentials or the transport refused. Real gRPC over loopback, real certificates made here."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import grpc
import pytest
import yaml

from fedstore.aggregator.intake.server import build_server
from border import with_mtls
from fedstore.federation import ConfigError, load_config
from fedstore.federation.channels import centre_link
from fedstore.federation.statistics import CATALOG
from fedstore.cli import main
from fedstore.cli.dev_certificates import make_dev_pki
from handmade import write_sources
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2 as pb
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2_grpc
from fedstore.regions.publishing.outbox import Backoff, send_outbox, to_proto
from fedstore.regions.publishing.publish import outbox_dir, publish_statistics
from fedstore.regions.store.node import RegionNode

T = datetime.now(timezone.utc) - timedelta(days=2)
TOKENS = {"MY": "border-my-secret", "SG": "border-sg-secret"}
SPEC = tuple(s for s in CATALOG if s.view == "customer_profile")
REGIONS = [("MY", "Malaysia", "PDPA-MY", "Asia/Kuala_Lumpur"), ("SG", "Singapore", "PDPA-SG", "Asia/Singapore")]


def _raw():
    return {
        "federation": {"name": "border"},
        "regions": [{"code": c, "jurisdiction": j, "law": law, "timezone": tz, "data_dir": f"data/{c}",
                     "online_store": {"type": "sqlite"}, "serving_address": f"127.0.0.1:{52700 + i}"}
                    for i, (c, j, law, tz) in enumerate(REGIONS)],
        "auth": {"tokens": [{"name": f"region-{c.lower()}", "secret_env": f"BORDER_TOKEN_{c}", "regions": [c],
                             "roles": ["publish", "statistics-read", "registry-read", "promote", "audit"]}
                            for c in TOKENS]},
        "privacy": {"epsilon_per_month": 3.0, "minimum_cohort": 10},
    }


def _load(tmp_path, raw):
    (tmp_path / "fed.yaml").write_text(yaml.safe_dump(raw))
    return load_config(tmp_path / "fed.yaml")


@pytest.fixture()
def centre(tmp_path, monkeypatch, pki):
    """A centre on mutual TLS (the session's CA) and the federation config both sides read."""
    for code, secret in TOKENS.items():
        monkeypatch.setenv(f"BORDER_TOKEN_{code}", secret)
    config = _load(tmp_path, with_mtls(_raw(), pki))
    server, port, store = build_server(config, tmp_path / "centre" / "aggregator.duckdb", "127.0.0.1:0")
    server.start()
    yield config, f"127.0.0.1:{port}", store
    server.stop(0).wait()
    store.close()


def _publish(config, code="MY", epsilon=1.0):
    node = RegionNode(config.region(code))
    write_sources(node.data_dir, customers=300, drivers=3, days=2, start=T,  # never suppressed at ε 1
                  id_offset={"MY": 10**9, "SG": 2 * 10**9}[code])
    node.apply()
    sid, released, path = publish_statistics(node, config.privacy, epsilon=epsilon, end=T + timedelta(days=3),
                                             catalog=SPEC)
    return node, sid, path


def _md(code):
    return (("authorization", f"Bearer {TOKENS[code]}"),)


def _send(argv_config, *extra):
    return main(["--config", str(argv_config.source), "region", "send-stats", "--region", "MY",
                 "--token-env", "BORDER_TOKEN_MY", *extra])


FAST = Backoff(base=0.01, cap=0.01, attempts=2)


# --- who may connect, and for whom it may submit ------------------------------------------------

def test_a_region_submits_over_its_own_certificate_and_the_receipt_counts_it(centre):
    config, address, store = centre
    node, sid, path = _publish(config)
    assert send_outbox(outbox_dir(node.data_dir), centre_link(config, "MY", address), TOKENS["MY"]) == [(sid, "sent")]
    body = json.loads(path.read_text())
    assert body["centre_epsilon_spent_in_period"] == pytest.approx(body["accounting"]["epsilon"])
    assert store.receipt(sid) is not None


def test_another_regions_certificate_cannot_submit_for_a_region_even_with_its_token(centre):
    """SG's certificate with MY's token (a leaked token): refused by rule identity, nothing stored,
    and the refusal comes before the store is asked (no hint whether the id exists)."""
    config, address, store = centre
    _, sid, path = _publish(config)
    sub = to_proto(json.loads(path.read_text()))
    for holder in ("SG", None):  # another region's certificate; the centre's operator certificate
        with centre_link(config, holder, address).channel() as ch:
            with pytest.raises(grpc.RpcError) as err:
                aggregator_pb2_grpc.AggregatorStub(ch).Submit(sub, metadata=_md("MY"), timeout=10)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert err.value.details().startswith("rule identity: ") and "'MY'" in err.value.details()
    assert store.receipt(sid) is None and store.features(None) == []


def test_a_region_certificate_cannot_submit_under_another_regions_name(centre):
    """MY's own token and certificate, a submission that says SG: refused for the certificate."""
    config, address, store = centre
    _, sid, path = _publish(config)
    sub = to_proto(json.loads(path.read_text()))
    sub.region = "SG"
    with centre_link(config, "MY", address).channel() as ch:
        with pytest.raises(grpc.RpcError) as err:
            aggregator_pb2_grpc.AggregatorStub(ch).Submit(sub, metadata=_md("MY"), timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "certificate is region MY's" in err.value.details() and err.value.details().startswith("rule identity")
    assert store.features(None) == []


def _health(channel, timeout=5):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)


def test_no_certificate_an_untrusted_ca_and_plaintext_are_refused_at_the_handshake(centre, pki, tmp_path):
    config, address, store = centre
    rogue = make_dev_pki(tmp_path / "rogue", ["MY"])  # a CA the centre never heard of, issuing "MY"
    ca = pki.ca.read_bytes()
    attempts = {
        "no client certificate": grpc.secure_channel(address, grpc.ssl_channel_credentials(ca)),
        "a certificate of an untrusted CA": grpc.secure_channel(address, grpc.ssl_channel_credentials(
            ca, rogue.regions["MY"].key.read_bytes(), rogue.regions["MY"].cert.read_bytes())),
        "plaintext": grpc.insecure_channel(address),
    }
    for what, channel in attempts.items():
        with channel, pytest.raises(grpc.RpcError) as err:
            aggregator_pb2_grpc.AggregatorStub(channel).Submit(pb.Submission(region="MY"), metadata=_md("MY"),
                                                               timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE, what
    with centre_link(config, "MY", address).channel() as ch:  # the region's own certificate gets through
        assert _health(ch).status == 1
    assert store.features(None) == []


def test_a_client_trusts_the_centre_only_through_its_configured_ca(centre, tmp_path):
    """A region whose CA did not sign the centre's certificate (a man in the middle, say) does not
    talk to it: the outbox says so in plain words, keeps the release and waits no backoff."""
    config, address, store = centre
    node, sid, path = _publish(config)
    other = make_dev_pki(tmp_path / "other", ["MY"])
    raw = yaml.safe_load(config.source.read_text())
    raw["regions"][0]["centre_tls"]["ca"] = str(other.ca)
    (tmp_path / "w").mkdir()
    wrong = _load(tmp_path / "w", raw)
    waits: list[float] = []
    out = send_outbox(outbox_dir(node.data_dir), centre_link(wrong, "MY", address), TOKENS["MY"], backoff=FAST,
                      sleep=waits.append)
    assert out == [(sid, out[0][1])] and out[0][1].startswith("queued: TLS handshake failed: the TLS handshake with "
                                                              "the centre failed (CERTIFICATE_VERIFY_FAILED")
    assert "region MY's TLS files" in out[0][1] and waits == []
    assert json.loads(path.read_text())["status"] == "queued" and store.receipt(sid) is None


# --- the outbox never loses a release -----------------------------------------------------------

def test_refused_credentials_keep_the_release_queued_and_say_why(centre, tmp_path):
    config, address, store = centre
    node, sid, path = _publish(config)
    box = outbox_dir(node.data_dir)
    # a token the centre does not know
    out = send_outbox(box, centre_link(config, "MY", address), "not-a-token", backoff=FAST)
    assert out == [(sid, "queued: the centre did not accept this region's token (UNAUTHENTICATED: unknown "
                         "token); kept, and sent when run again once the token or certificate is fixed")]
    # the right token over another region's certificate (a misconfigured centre_tls): the region's own
    # border sees the link is not MY's and keeps it, unsent (the centre would refuse it: rule identity)
    out = send_outbox(box, centre_link(config, "SG", address), TOKENS["MY"], backoff=FAST)
    assert out[0][1].startswith("queued: rule identity: names region 'MY', but it is region SG's outbox")
    # a centre this region's certificate is not signed for: the handshake fails, the release stays
    rogue = make_dev_pki(tmp_path / "rogue", ["MY"])
    raw = yaml.safe_load(config.source.read_text())
    raw["regions"][0]["centre_tls"].update(cert=str(rogue.regions["MY"].cert), key=str(rogue.regions["MY"].key))
    (tmp_path / "r").mkdir()
    out = send_outbox(box, centre_link(_load(tmp_path / "r", raw), "MY", address), TOKENS["MY"], backoff=FAST,
                      sleep=lambda s: None)
    assert out[0][1].startswith("queued: aggregator unreachable (UNAVAILABLE): the connection closed during set-up, "
                                "as when the centre refuses this side's client certificate")
    assert json.loads(path.read_text())["status"] == "queued" and store.receipt(sid) is None
    # fixed: the same release goes through, once
    assert send_outbox(box, centre_link(config, "MY", address), TOKENS["MY"]) == [(sid, "sent")]
    assert store.epsilon_spent("MY", json.loads(path.read_text())["period"]) == pytest.approx(1.0)


def test_send_stats_with_refused_credentials_is_one_line_and_keeps_everything(centre, capsys, monkeypatch):
    config, address, _ = centre
    node, sid, path = _publish(config)
    monkeypatch.setenv("BORDER_TOKEN_MY", "stolen-or-stale")
    code = _send(config, "--address", address)
    out, err = capsys.readouterr()
    assert code == 1 and f"{sid}  queued: the centre did not accept this region's token" in out
    assert err == (f"fedstore: error: MY: 1 of 1 submissions stay queued: the aggregator at {address} refused this "
                   "region's connection or credentials (see above); fix them and run send-stats again\n")
    assert json.loads(path.read_text())["status"] == "queued"


def test_only_a_validation_rejection_is_final_and_requeue_puts_it_back(centre, capsys):
    config, address, store = centre
    node, sid, path = _publish(config)
    body = json.loads(path.read_text())
    good_epsilon = body["accounting"]["epsilon"]
    # ε claimed at half what its noise costs: the centre's verdict on the statistics (the region's own
    # border cannot judge the noise, so it reaches the centre)
    body["accounting"]["epsilon"] = good_epsilon / 2
    path.write_text(json.dumps(body))
    assert _send(config, "--address", address) == 1
    out, err = capsys.readouterr()
    assert f"{sid}  rejected: rule accounting" in out and "the centre rejected 1 of 1" in err
    rejected = json.loads(path.read_text())
    assert rejected["status"] == "rejected" and rejected["rejection"].startswith("INVALID_ARGUMENT: rule accounting")
    assert _send(config, "--address", address) == 0  # final: not sent again by itself
    assert "nothing queued in the outbox" in capsys.readouterr().out
    # mistakes with --requeue are one line, and change nothing
    for ident, words in [("my-stats-nope", "--requeue my-stats-nope: no submission with that id in"),
                         ("../../etc/passwd", "--requeue ../../etc/passwd: no submission with that id")]:
        assert _send(config, "--address", address, "--requeue", ident) == 1
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err
    assert json.loads(path.read_text())["status"] == "rejected"
    # the operator repairs the cause and puts it back: sent, with the ε spent shown
    rejected["accounting"]["epsilon"] = good_epsilon
    path.write_text(json.dumps(rejected))
    assert _send(config, "--address", address, "--requeue", sid) == 0
    out = capsys.readouterr().out
    assert f"MY: {sid} requeued" in out and f"{sid}  sent" in out
    period = rejected["period"]
    assert f"MY: privacy budget spent in {period}: ε=1.000 of 3.000, δ=0.0e+00 of 1.0e-05 by the region's ledger; " \
           "the centre counts ε=1.000" in out
    sent = json.loads(path.read_text())
    assert sent["status"] == "sent" and sent["earlier_rejections"][0].startswith("INVALID_ARGUMENT")
    assert _send(config, "--address", address, "--requeue", sid) == 1  # sent: nothing to requeue
    assert "the submission is sent, not rejected" in capsys.readouterr().err
    assert store.receipt(sid) is not None


# --- configuration ------------------------------------------------------------------------------

def test_plaintext_to_the_centre_is_refused_unless_configured_for_local_development(tmp_path, monkeypatch, caplog,
                                                                                   capsys):
    for code, secret in TOKENS.items():
        monkeypatch.setenv(f"BORDER_TOKEN_{code}", secret)
    config = _load(tmp_path, _raw())
    with pytest.raises(ConfigError, match=r"^aggregator.tls: missing: the centre accepts mutual TLS only"):
        build_server(config, tmp_path / "a.duckdb", "127.0.0.1:0")
    assert not (tmp_path / "a.duckdb").exists()  # refused before the store was made
    with pytest.raises(ConfigError, match=r"^regions\[MY\].centre_tls: missing: the centre accepts mutual TLS only"):
        centre_link(config, "MY")
    with pytest.raises(ConfigError, match=r"^aggregator.operator_tls: missing"):
        centre_link(config, None)
    assert main(["--config", str(config.source), "aggregator", "serve", "--address", "127.0.0.1:0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("fedstore: error: aggregator.tls: missing: the centre accepts mutual TLS only") and \
        err.count("\n") == 1, err
    # said out loud, for local development: both sides plaintext, each with a warning
    raw = _raw()
    raw["aggregator"] = {"plaintext": True}
    dev = _load(tmp_path, raw)
    server, port, store = build_server(dev, tmp_path / "d.duckdb", "127.0.0.1:0")
    server.start()
    try:
        node, sid, _ = _publish(dev)
        with caplog.at_level("WARNING"):
            link = centre_link(dev, "MY", f"127.0.0.1:{port}")
        assert link.credentials is None and "for local development only" in caplog.text
        assert send_outbox(outbox_dir(node.data_dir), link, TOKENS["MY"]) == [(sid, "sent")]
    finally:
        server.stop(0).wait()
        store.close()


def test_tls_files_that_are_wrong_are_one_line_before_any_call(centre, tmp_path, pki):
    config, address, _ = centre
    raw = yaml.safe_load(config.source.read_text())
    cases = [
        ({"cert": str(tmp_path / "missing.pem")}, "regions[MY].centre_tls.cert: cannot read"),
        ({"key": str(pki.regions["SG"].key)}, "are not a certificate and its private key"),
        ({"ca": str(pki.regions["MY"].key)}, "regions[MY].centre_tls.ca:"),
    ]
    for i, (change, words) in enumerate(cases):
        bad = json.loads(json.dumps(raw))
        bad["regions"][0]["centre_tls"].update(change)
        (tmp_path / str(i)).mkdir()
        with pytest.raises(ConfigError) as err:
            centre_link(_load(tmp_path / str(i), bad), "MY", address)
        assert words in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_the_centre_follows_rotated_certificate_files_and_a_rotated_ca(tmp_path, monkeypatch):
    """The centre's certificate, key and client CA replaced in place (a CA rollover): new connections
    use the new files without a restart; the old CA's clients are refused from then on."""
    for code, secret in TOKENS.items():
        monkeypatch.setenv(f"BORDER_TOKEN_{code}", secret)
    old, new = make_dev_pki(tmp_path / "old", ["MY", "SG"]), make_dev_pki(tmp_path / "new", ["MY", "SG"])
    live = tmp_path / "live"
    shutil.copytree(tmp_path / "old", live)
    raw = _raw()
    raw["aggregator"] = {"tls": {"cert": str(live / "centre.pem"), "key": str(live / "centre-key.pem"),
                                 "client_ca": str(live / "ca.pem")}}
    config = _load(tmp_path, raw)

    def link(pki, code="MY"):
        r = pki.regions[code]
        cfg = json.loads(json.dumps(raw))
        cfg["regions"][0]["centre_tls"] = {"cert": str(r.cert), "key": str(r.key), "ca": str(pki.ca)}
        (tmp_path / "c").mkdir(exist_ok=True)
        return centre_link(_load(tmp_path / "c", cfg), "MY", address)

    server, port, store = build_server(config, tmp_path / "a.duckdb", "127.0.0.1:0")
    address = f"127.0.0.1:{port}"
    server.start()
    try:
        with link(old).channel() as ch:
            assert _health(ch).status == 1
        for name in ("centre.pem", "centre-key.pem", "ca.pem"):  # the rotation: each file replaced whole
            tmp = live / f".{name}.new"
            tmp.write_bytes((tmp_path / "new" / name).read_bytes())
            tmp.replace(live / name)
        with link(new).channel() as ch:
            assert _health(ch).status == 1
        with link(old).channel() as ch, pytest.raises(grpc.RpcError) as err:
            _health(ch, timeout=3)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop(0).wait()
        store.close()


# --- fedstore certs init ------------------------------------------------------------------------

def test_certs_init_makes_a_ca_a_centre_and_a_certificate_naming_each_region(tmp_path, capsys):
    from cryptography import x509

    from conftest import write_config

    cfg = write_config(tmp_path / "f.yaml", {"MY": {"type": "sqlite"}, "SG": {"type": "sqlite"}})
    out = tmp_path / "certs"
    assert main(["--config", str(cfg), "certs", "init", "--out", str(out), "--host", "centre.example",
                 "--host", "10.0.0.5"]) == 0
    printed = capsys.readouterr().out
    assert f"client_ca: {out / 'ca.pem'}" in printed and f"centre_tls: {{cert: {out / 'region-SG.pem'}" in printed
    my = x509.load_pem_x509_certificate((out / "region-MY.pem").read_bytes())
    uris = my.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier)
    assert uris == ["spiffe://fedstore/region/MY"]
    centre_cert = x509.load_pem_x509_certificate((out / "centre.pem").read_bytes())
    sans = centre_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["centre.example"]
    assert [str(a) for a in sans.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert {p.stat().st_mode & 0o777 for p in out.glob("*-key.pem")} == {0o600}
    before = (out / "ca.pem").read_bytes()
    assert main(["--config", str(cfg), "certs", "init", "--out", str(out)]) == 1  # never replaces a CA silently
    err = capsys.readouterr().err
    assert "holds a CA already" in err and err.count("\n") == 1 and (out / "ca.pem").read_bytes() == before
    assert main(["--config", str(cfg), "certs", "init", "--out", str(out), "--regions", "XX"]) == 1
    assert "unknown region 'XX'" in capsys.readouterr().err


def test_certs_init_config_out_writes_the_config_naming_the_certificates(tmp_path, capsys, monkeypatch):
    from conftest import write_config

    cfg = write_config(tmp_path / "f.yaml", {"MY": {"type": "sqlite"}, "SG": {"type": "sqlite"}})
    monkeypatch.chdir(tmp_path)  # relative --out and --config-out, as the README gives them
    elsewhere = tmp_path / "other"
    elsewhere.mkdir()
    assert main(["--config", str(cfg), "certs", "init", "--out", "certs", "--config-out", str(elsewhere / "t.yaml")]) == 1
    assert "write it in the config's directory" in capsys.readouterr().err and not (tmp_path / "certs").exists()
    assert main(["--config", str(cfg), "certs", "init", "--out", "certs", "--config-out", "f.yaml"]) == 1
    assert "is the config itself" in capsys.readouterr().err

    assert main(["--config", str(cfg), "certs", "init", "--out", "certs", "--config-out", "f-tls.yaml"]) == 0
    assert "written: f-tls.yaml" in capsys.readouterr().out
    original, written = load_config(cfg), load_config(tmp_path / "f-tls.yaml")
    certs = (tmp_path / "certs").resolve()
    assert written.aggregator.tls_cert == certs / "centre.pem" and written.aggregator.tls_client_ca == certs / "ca.pem"
    assert written.aggregator.operator_tls is not None and written.aggregator.operator_tls.cert == certs / "operator.pem"
    assert {r.code: r.centre_tls.cert for r in written.regions if r.centre_tls} == {
        "MY": certs / "region-MY.pem", "SG": certs / "region-SG.pem"}
    # everything else as it was: the same data directories, tokens and aggregator store
    assert [r.data_dir for r in written.regions] == [r.data_dir for r in original.regions]
    assert written.tokens == original.tokens and written.aggregator.data_dir == original.aggregator.data_dir
    shutil.rmtree(tmp_path / "certs")
    assert main(["--config", str(cfg), "certs", "init", "--out", "certs", "--config-out", "f-tls.yaml"]) == 1
    assert "f-tls.yaml exists" in capsys.readouterr().err  # not replaced without --force
