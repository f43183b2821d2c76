"""The centre accepts only valid anonymised statistics, once, within budget, and merges them."""

from __future__ import annotations

import json
import math
import time
import uuid
from datetime import datetime, timedelta, timezone

import grpc
import pytest
import yaml

from fedstore.aggregator.intake.server import build_server
from border import two_region_federation, with_mtls
from fedstore.federation import load_config
from fedstore.federation.channels import centre_link
from fedstore.federation.statistics import CATALOG
from handmade import write_sources
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2 as pb
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2_grpc
from fedstore.regions.publishing.outbox import Backoff, send_outbox, to_proto
from fedstore.regions.publishing.publish import outbox_dir, publish_statistics
from fedstore.regions.store.node import RegionNode

T = datetime.now(timezone.utc) - timedelta(days=2)
TOKENS = {"MY": "region-my-secret", "SG": "region-sg-secret"}
SPEC = tuple(s for s in CATALOG if s.view == "customer_profile")


@pytest.fixture()
def fed(tmp_path, monkeypatch, pki):
    for code, secret in TOKENS.items():
        monkeypatch.setenv(f"AGG_TOKEN_{code}", secret)
    config = load_config(two_region_federation(tmp_path / "fed.yaml", pki, TOKENS,
                                               ["publish", "statistics-read", "registry-read"], serving_port_base=52000))
    server, port, store = build_server(config, tmp_path / "centre" / "aggregator.duckdb", "127.0.0.1:0")
    server.start()
    yield config, f"127.0.0.1:{port}", store
    server.stop(1).wait()
    store.close()


def _publish(config, code, epsilon=1.0, customers=60):
    node = RegionNode(config.region(code))
    write_sources(node.data_dir, customers=customers, drivers=3, days=2, start=T,
                  id_offset={"MY": 10**9, "SG": 2 * 10**9}[code])
    node.apply()
    return node, publish_statistics(node, config.privacy, epsilon=epsilon, end=T + timedelta(days=3), catalog=SPEC)


def _stub(config, address, region="MY"):
    """A stub over ``region``'s own mutual-TLS link to the centre."""
    return aggregator_pb2_grpc.AggregatorStub(centre_link(config, region, address).channel())


def _link(config, address, region="MY"):
    return centre_link(config, region, address)


def _md(code):
    return (("authorization", f"Bearer {TOKENS[code]}"),)


def test_outbox_to_receipt_and_replay_is_not_counted_twice(fed):
    config, address, store = fed
    node, (sid, released, path) = _publish(config, "MY")
    assert send_outbox(outbox_dir(node.data_dir), _link(config, address, "MY"), TOKENS["MY"]) == [(sid, "sent")]
    body = json.loads(path.read_text())
    assert body["status"] == "sent" and body["receipt_id"]
    # the region retries after a lost reply: the same receipt, marked as a replay, stored once
    again = _stub(config, address).Submit(to_proto(body), metadata=_md("MY"), timeout=5)
    assert again.replay and again.receipt_id == body["receipt_id"]
    assert store.epsilon_spent("MY", body["period"]) == pytest.approx(released.accounting.epsilon)
    assert len({r.submission_id for r in store.features(None)}) == 1


def test_the_same_submission_sent_at_once_is_stored_once_and_every_call_gets_its_receipt(fed):
    """A retry after a deadline while the first call is still at the centre (or two send-stats at
    once) reached the insert twice: the second call failed with UNKNOWN (a primary key error), which
    the region then marked as rejected for good although the centre had stored it."""
    import threading

    config, address, store = fed
    node = RegionNode(config.region("MY"))
    write_sources(node.data_dir, customers=300, drivers=3, days=2, start=T)  # never suppressed at ε 0.5
    node.apply()
    for _ in range(3):  # the race needs calls to meet between the lookup and the insert: try a few times
        _, released, path = publish_statistics(node, config.privacy, epsilon=0.5, end=T + timedelta(days=3),
                                               catalog=SPEC)
        sub = to_proto(json.loads(path.read_text()))
        start, answers = threading.Barrier(8), []

        def submit(sub=sub, start=start, answers=answers):
            with _link(config, address).channel() as channel:
                stub = aggregator_pb2_grpc.AggregatorStub(channel)
                start.wait()
                try:
                    answers.append(stub.Submit(sub, metadata=_md("MY"), timeout=10))
                except grpc.RpcError as e:
                    answers.append(f"{e.code().name}: {e.details()}")

        calls = [threading.Thread(target=submit) for _ in range(8)]
        for c in calls:
            c.start()
        for c in calls:
            c.join()
        assert all(isinstance(a, pb.Receipt) for a in answers), answers
        assert len({a.receipt_id for a in answers}) == 1 and sum(not a.replay for a in answers) == 1
    assert len({r.submission_id for r in store.features(None)}) == 3
    assert store.epsilon_spent("MY", sub.period) == pytest.approx(3 * released.accounting.epsilon)


def test_a_centre_that_fails_keeps_the_submission_queued_and_a_restarted_one_takes_it(fed, tmp_path, capsys):
    """An error inside the centre (here its store gone from under it) is no verdict on the
    submission: it was marked rejected for good and never sent again."""
    from fedstore.cli import main

    config, address, store = fed
    node, (sid, released, path) = _publish(config, "MY")
    store.close()  # the running centre's DuckDB store fails every call from now on
    code = main(["--config", str(config.source), "region", "send-stats", "--region", "MY", "--token-env", "AGG_TOKEN_MY",
                 "--address", address])
    out, err = capsys.readouterr()
    assert code == 1 and f"{sid}  queued: aggregator failed (UNKNOWN" in out, out
    assert err == (f"fedstore: error: MY: 1 of 1 submissions stay queued: the aggregator at {address} failed while "
                   "handling them (see above); send-stats sends them when run again\n")
    assert json.loads(path.read_text())["status"] == "queued"
    # the centre restarted on its store: the next run delivers it, counted once
    server, port, again = build_server(config, tmp_path / "centre" / "aggregator.duckdb", "127.0.0.1:0")
    server.start()
    try:
        assert send_outbox(outbox_dir(node.data_dir), _link(config, f"127.0.0.1:{port}", "MY"), TOKENS["MY"]) == [(sid, "sent")]
        assert again.epsilon_spent("MY", json.loads(path.read_text())["period"]) == pytest.approx(
            released.accounting.epsilon)
    finally:
        server.stop(0).wait()
        again.close()


def _handmade(submission_id=None, *, epsilon=0.01, count=100):
    """A valid features submission of MY, built by hand: no noise, so no draw can make it invalid.
    Its period is the month the fixture's centre (on the wall clock) receives it in."""
    from fedstore.federation.privacy_maps import feature_queries

    spec = SPEC[0]
    eps_q = epsilon / 5
    noise = {name: sensitivity / eps_q for name, (_, sensitivity) in feature_queries(spec).items()}
    now = datetime.now(timezone.utc)
    sub = pb.Submission(
        submission_id=submission_id or f"my-stats-{uuid.uuid4().hex}", region="MY", period=now.strftime("%Y-%m"),
        features=[pb.FeatureStatistics(ref=spec.ref, count=count, null_count=0, sum=0.0, sum_sq=0.0,
                                       histogram=[count] + [0] * (spec.bins - 1), edges=list(spec.edges),
                                       noise=pb.NoiseScales(**noise))],
        accounting=pb.PrivacyAccounting(mechanism=pb.LAPLACE, epsilon=epsilon, delta=0.0, epsilon_per_query=eps_q,
                                        minimum_cohort=10))
    end = now.replace(hour=0, minute=0, second=0, microsecond=0)
    sub.window_start.FromDatetime(end - timedelta(days=31))
    sub.window_end.FromDatetime(end)
    return sub


def test_unreachable_aggregator_keeps_the_submission_queued(fed, tmp_path):
    config, _, _ = fed
    node, (sid, _, path) = _publish(config, "MY")
    waits = []
    out = send_outbox(outbox_dir(node.data_dir), _link(config, "127.0.0.1:1", "MY"), TOKENS["MY"],
                      backoff=Backoff(base=0.1, cap=1, attempts=3), sleep=waits.append)
    assert out == [(sid, "queued: aggregator unreachable (UNAVAILABLE)")]
    assert waits == [0.1, 0.2]
    assert json.loads(path.read_text())["status"] == "queued"


def test_once_the_aggregator_is_unreachable_the_rest_of_the_outbox_waits_for_the_next_run(fed):
    """Every queued submission went through the whole backoff against a centre that was down: 7.5 s
    each by default (a minute each when calls time out), so a week of queued releases held a
    scheduler's run for many minutes."""
    from redis_servers import free_port

    config, _, _ = fed
    node, _ = _publish(config, "MY", epsilon=0.5, customers=300)  # never suppressed
    for _ in range(2):
        publish_statistics(node, config.privacy, epsilon=0.5, end=T + timedelta(days=3), catalog=SPEC)
    waits = []
    out = send_outbox(outbox_dir(node.data_dir), _link(config, f"127.0.0.1:{free_port()}", "MY"), TOKENS["MY"],
                      backoff=Backoff(base=0.1, cap=1, attempts=3), sleep=waits.append)
    assert [outcome for _, outcome in out] == ["queued: aggregator unreachable (UNAVAILABLE)"] + \
        ["queued: not tried, aggregator unreachable (UNAVAILABLE)"] * 2
    assert waits == [0.1, 0.2]  # one backoff, not one per submission
    assert [json.loads(p.read_text())["status"] for p in outbox_dir(node.data_dir).glob("*.json")] == ["queued"] * 3


@pytest.mark.slow
def test_send_stats_to_an_unreachable_aggregator_fails_for_a_scheduler(fed, capsys, monkeypatch):
    """The table says what happened; the exit code (2) and one line say it was not a success."""
    from fedstore.cli import main

    config, _, _ = fed
    node, (sid, _, path) = _publish(config, "MY")
    from redis_servers import free_port

    nowhere = f"127.0.0.1:{free_port()}"
    code = main(["--config", str(config.source), "region", "send-stats", "--region", "MY", "--token-env", "AGG_TOKEN_MY",
                 "--address", nowhere])
    captured = capsys.readouterr()
    assert code == 1
    assert sid in captured.out and "queued: aggregator unreachable" in captured.out
    assert captured.err == (f"fedstore: error: MY: 1 of 1 submissions stay queued: the aggregator at {nowhere} "
                            "did not answer; send-stats sends them when run again\n")
    assert json.loads(path.read_text())["status"] == "queued"


@pytest.mark.slow
def test_send_stats_run_twice_at_once_leaves_every_file_whole_and_counts_each_once(fed, tmp_path):
    """Two send-stats at once (a scheduler's run overlapping the next) wrote each sent submission
    through the same '<id>.tmp': one renamed the other's half-written bytes into place, leaving a
    file no later run could read (every send-stats then ended in a JSONDecodeError traceback), and
    the other failed with FileNotFoundError."""
    import subprocess
    import sys

    raw = yaml.safe_load(fed[0].source.read_text())
    raw["privacy"]["epsilon_per_month"] = 1000.0  # room for every copy below, at the region and the centre
    (tmp_path / "roomy.yaml").write_text(yaml.safe_dump(raw))
    config = load_config(tmp_path / "roomy.yaml")
    server, port, store = build_server(config, tmp_path / "roomy" / "aggregator.duckdb", "127.0.0.1:0")
    server.start()
    try:
        node, (sid, _, path) = _publish(config, "MY")
        body = json.loads(path.read_text())
        assert body["status"] == "queued"
        for _ in range(150):  # the same release under other ids: the centre takes each
            copy = {**body, "submission_id": f"my-stats-{uuid.uuid4().hex}"}
            (path.parent / f"{copy['submission_id']}.json").write_text(json.dumps(copy))
        argv = [sys.executable, "-m", "fedstore.cli", "--config", str(config.source), "region", "send-stats",
                "--region", "MY", "--token-env", "AGG_TOKEN_MY", "--address", f"127.0.0.1:{port}"]
        runs = [subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(3)]
        for run in runs:
            _, err = run.communicate(timeout=300)
            assert run.returncode == 0 and not err, err
        bodies = [json.loads(p.read_text()) for p in outbox_dir(node.data_dir).glob("*.json")]
        assert len(bodies) == 151 and {b["status"] for b in bodies} == {"sent"}
        assert not [p.name for p in outbox_dir(node.data_dir).iterdir() if not p.name.endswith(".json")]
        assert len({r.submission_id for r in store.features(None)}) == 151
        assert store.epsilon_spent("MY", body["period"]) == pytest.approx(151 * body["accounting"]["epsilon"])
    finally:
        server.stop(0).wait()
        store.close()


def test_a_damaged_outbox_file_is_named_and_the_others_are_still_sent(fed, capsys):
    """One unreadable file (as the race above left) stopped every later send-stats with a traceback."""
    from fedstore.cli import main

    config, address, _ = fed
    node, (sid, _, path) = _publish(config, "MY")
    damaged = path.with_name("my-stats-damaged.json")
    damaged.write_text(path.read_text() + "}\n")
    code = main(["--config", str(config.source), "region", "send-stats", "--region", "MY", "--token-env", "AGG_TOKEN_MY",
                 "--address", address])
    out, err = capsys.readouterr()
    assert code == 1 and f"{sid}" in out and f"unreadable: {damaged} is not a submission" in out
    assert err == "fedstore: error: MY: 1 file in the outbox could not be read (see above)\n"
    assert json.loads(path.read_text())["status"] == "sent"


def test_an_outbox_file_that_parses_but_lacks_a_field_is_named_not_a_traceback(fed, capsys):
    from fedstore.cli import main

    config, address, _ = fed
    node, (sid, _, path) = _publish(config, "MY")
    lacking = path.with_name("my-stats-lacking.json")
    body = json.loads(path.read_text())
    del body["features"]
    lacking.write_text(json.dumps(body))
    code = main(["--config", str(config.source), "region", "send-stats", "--region", "MY", "--token-env", "AGG_TOKEN_MY",
                 "--address", address])
    out, err = capsys.readouterr()
    assert code == 1 and f"unreadable: {lacking} is not a submission (it lacks 'features')" in out, out + err
    assert json.loads(path.read_text())["status"] == "sent"  # the others are still sent


def _good(config):
    node, (sid, _, path) = _publish(config, "MY")
    return to_proto(json.loads(path.read_text()))


def _tamper(fn):
    def apply(sub):
        fn(sub)
        return sub
    return apply


# (rule, tampering, code, fragment)
BAD = [
    ("region of another token", _tamper(lambda s: setattr(s, "region", "SG")), grpc.StatusCode.PERMISSION_DENIED, "identity"),
    ("not in the catalog", _tamper(lambda s: setattr(s.features[0], "ref", "customer_profile:home_city")),
     grpc.StatusCode.INVALID_ARGUMENT, "rule catalog"),
    ("below minimum cohort", _tamper(lambda s: setattr(s.features[0], "count", 3)), grpc.StatusCode.INVALID_ARGUMENT, "rule minimum_cohort"),
    ("non-finite", _tamper(lambda s: setattr(s.features[0], "sum", math.inf)), grpc.StatusCode.INVALID_ARGUMENT, "rule finite"),
    # stored, these broke GetGlobalStatistics for every caller (UNKNOWN): a merged count beyond int64,
    # an overflowing square of the sum, a noise variance dividing by 1 - e^-ε = 0
    ("count no region has", _tamper(lambda s: (setattr(s.features[0], "count", 2**62),
                                               s.features[0].histogram.__setitem__(0, 2**62))),
     grpc.StatusCode.INVALID_ARGUMENT, "rule range"),
    ("sum no clipped values give", _tamper(lambda s: setattr(s.features[0], "sum", -1e300)),
     grpc.StatusCode.INVALID_ARGUMENT, "rule range"),
    ("ε per query too small to account for", _tamper(lambda s: setattr(s.accounting, "epsilon_per_query", 1e-17)),
     grpc.StatusCode.INVALID_ARGUMENT, "rule accounting"),
    ("other edges", _tamper(lambda s: s.features[0].edges.__setitem__(1, 0.5)), grpc.StatusCode.INVALID_ARGUMENT, "rule edges"),
    ("histogram far from count", _tamper(lambda s: s.features[0].histogram.__setitem__(0, 10**9)),
     grpc.StatusCode.INVALID_ARGUMENT, "rule histogram_total"),
    ("no accounting", _tamper(lambda s: s.ClearField("accounting")), grpc.StatusCode.INVALID_ARGUMENT, "rule accounting"),
    # the centre derives every noise scale from ε per query: zero or more than ε is refused, not stored
    ("ε per query zero", _tamper(lambda s: setattr(s.accounting, "epsilon_per_query", 0.0)),
     grpc.StatusCode.INVALID_ARGUMENT, "rule accounting"),
    ("ε per query above ε", _tamper(lambda s: setattr(s.accounting, "epsilon_per_query", s.accounting.epsilon * 2)),
     grpc.StatusCode.INVALID_ARGUMENT, "rule accounting"),
    ("weaker cohort", _tamper(lambda s: setattr(s.accounting, "minimum_cohort", 2)), grpc.StatusCode.INVALID_ARGUMENT,
     "rule minimum_cohort"),
    ("bad id", _tamper(lambda s: setattr(s, "submission_id", "select * from rows")), grpc.StatusCode.INVALID_ARGUMENT,
     "rule submission_id"),
    # "$" matched before a final newline: "2026-11\n" passed as a month, with a budget of its own
    ("a period with a newline after it", _tamper(lambda s: setattr(s, "period", s.period + "\n")),
     grpc.StatusCode.INVALID_ARGUMENT, "rule period"),
    ("an id with a newline after it", _tamper(lambda s: setattr(s, "submission_id", s.submission_id + "\n")),
     grpc.StatusCode.INVALID_ARGUMENT, "rule submission_id"),
    # echoed whole, the id would overflow the client's trailer limit: RESOURCE_EXHAUSTED, not the rule
    ("very long id", _tamper(lambda s: setattr(s, "submission_id", "my-stats-" + "a" * 100_000)),
     grpc.StatusCode.INVALID_ARGUMENT, "rule submission_id: 'my-stats-aaa"),
]


@pytest.mark.parametrize("rule,tamper,code,fragment", BAD, ids=[b[0] for b in BAD])
def test_rejections_name_the_rule_and_store_nothing(fed, rule, tamper, code, fragment):
    config, address, store = fed
    sub = tamper(_good(config))
    with pytest.raises(grpc.RpcError) as err:
        _stub(config, address).Submit(sub, metadata=_md("MY"), timeout=5)
    assert err.value.code() == code and fragment in err.value.details()
    assert store.features(None) == []


def test_missing_token_is_unauthenticated(fed):
    config, address, _ = fed
    with pytest.raises(grpc.RpcError) as err:
        _stub(config, address).Submit(_good(config), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_the_centre_recounts_the_budget_itself(fed):
    config, address, store = fed
    # the region's own ledger is bypassed (say, reset): the centre still refuses the overspend
    subs = []
    for _ in range(4):
        node, (sid, _, path) = _publish(config, "MY", epsilon=1.0)
        (node.data_dir / "privacy_budget.db").unlink()
        subs.append(to_proto(json.loads(path.read_text())))
    for sub in subs[:3]:
        _stub(config, address).Submit(sub, metadata=_md("MY"), timeout=5)
    with pytest.raises(grpc.RpcError) as err:
        _stub(config, address).Submit(subs[3], metadata=_md("MY"), timeout=5)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "rule budget" in err.value.details()
    assert store.epsilon_spent("MY", subs[0].period) == pytest.approx(3.0)


def test_global_statistics_merge_regions(fed):
    config, address, _ = fed
    sent = {}
    for code in ("MY", "SG"):
        # ε = 2.5 (count noise scale 4): at 1, a region's kyc count fell below the cohort ~1 run in 2,000
        node, (sid, released, path) = _publish(config, code, epsilon=2.5, customers=80)
        send_outbox(outbox_dir(node.data_dir), _link(config, address, code), TOKENS[code])
        sent[code] = {f.ref: f for f in released.features}
    glob = _stub(config, address).GetGlobalStatistics(pb.GetGlobalStatisticsRequest(), metadata=_md("SG"), timeout=5)
    assert len(glob.submissions) == 2
    kyc = next(f for f in glob.features if f.ref == "customer_profile:kyc_level")
    my, sg = sent["MY"]["customer_profile:kyc_level"], sent["SG"]["customer_profile:kyc_level"]
    assert kyc.count == my.count + sg.count
    assert list(kyc.histogram) == [a + b for a, b in zip(my.histogram, sg.histogram, strict=True)]
    assert kyc.mean == pytest.approx((my.sum + sg.sum) / (my.count + sg.count))
    assert {r.region: r.count for r in kyc.regions} == {"MY": my.count, "SG": sg.count}


def test_global_statistics_of_a_period_that_is_no_month_is_invalid_argument(fed):
    """A malformed period matched no submission: the caller got empty statistics, as if nothing
    had been released, instead of being told its mistake."""
    config, address, _ = fed
    for period in ("2026-13", "November", "2026-11-01"):
        with pytest.raises(grpc.RpcError) as err:
            _stub(config, address).GetGlobalStatistics(pb.GetGlobalStatisticsRequest(period=period), metadata=_md("MY"), timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == f"period {period!r} is not YYYY-MM"


def _reachable(message, seen=None):  # every message type a Submission can hold
    seen = seen if seen is not None else {}
    if message.full_name not in seen:
        seen[message.full_name] = message
        for field in message.fields:
            if field.message_type is not None and field.message_type.file is pb.DESCRIPTOR:
                _reachable(field.message_type, seen)
    return seen.values()


def test_the_contract_has_no_field_for_rows_keys_or_free_text():
    # each string a region can send is a name the validator checks against the shared catalog
    allowed_strings = {"submission_id", "region", "period", "ref", "suppressed", "feature_service", "label",
                       "features", "model_name", "dimension", "value", "suppressed_segments",
                       # outcome evidence: a registry stage (rule stage) and a catalog segment (rule segment)
                       "stage", "segment_dimension",
                       # the consent basis: the purpose the kind of release rests on (rule consent) and a
                       # random id of 32 hex digits (rule consent), never the records' fingerprint
                       "purpose", "snapshot_id"}
    for message in _reachable(pb.Submission.DESCRIPTOR):
        for field in message.fields:
            assert field.type != field.TYPE_BYTES, f"{message.name}.{field.name} could carry anything"
            if field.type == field.TYPE_STRING:
                assert field.name in allowed_strings, f"{message.name}.{field.name} is free text"


def test_aggregator_on_a_busy_port_is_one_line(fed, capfd):
    import socket

    from fedstore.cli import main

    config, _, _ = fed
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        address = "127.0.0.1:%d" % other.getsockname()[1]
        capfd.readouterr()
        code = main(["--config", str(config.source), "aggregator", "serve", "--address", address])
    err = capfd.readouterr().err
    assert code == 1
    assert err.splitlines() == [f"fedstore: error: aggregator: cannot listen on {address}: Address already in use "
                                "(another process may be listening there)"], err


def test_a_second_aggregator_on_the_same_store_is_one_line(fed):
    """The fixture's centre holds the store (DuckDB: one writing process); another process's
    `fedstore aggregator serve` on it is refused in one line, and the running centre still accepts."""
    import os
    import subprocess
    import sys

    config, address, _ = fed
    second = subprocess.run(
        [sys.executable, "-m", "fedstore.cli", "--config", str(config.source), "aggregator", "serve",
         "--address", "127.0.0.1:0"], capture_output=True, text=True, timeout=120, env={**os.environ})
    assert second.returncode == 1
    lines = second.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedstore: error: aggregator: the submission store "), second.stderr
    assert "is open in another process" in lines[0]
    node, (sid, _, _) = _publish(config, "MY")
    assert send_outbox(outbox_dir(node.data_dir), _link(config, address, "MY"), TOKENS["MY"]) == [(sid, "sent")]


@pytest.mark.parametrize("path,message", [
    ("/fedstore.aggregator.v1.Aggregator/Submit", "fedstore.aggregator.v1.Submission"),
    ("/fedstore.registry.v1.Registry/ListModels", "fedstore.registry.v1.ListModelsRequest"),
], ids=["aggregator", "registry"])
def test_bytes_that_are_no_request_are_invalid_argument(fed, path, message):
    """grpc's thread-pool server would answer INTERNAL: garbage is the caller's mistake; nothing is stored."""
    config, address, store = fed
    with _link(config, address).channel() as ch:
        call = ch.unary_unary(path, request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as err:
            call(b"\xff\xff\xff", metadata=_md("MY"), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == f"malformed request: the bytes sent are not a valid {message}"
    assert store.features(None) == []


def test_aggregator_health_reflection_and_metrics_by_rule(tmp_path, monkeypatch, pki):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
    from prometheus_client import generate_latest

    from fedstore.aggregator.intake.metrics import AggregatorMetrics

    for code, secret in TOKENS.items():
        monkeypatch.setenv(f"AGG_TOKEN_{code}", secret)
    raw = {"federation": {"name": "t"},
           "regions": [{"code": "MY", "jurisdiction": "Malaysia", "law": "PDPA-MY", "timezone": "Asia/Kuala_Lumpur",
                        "data_dir": "data/MY", "online_store": {"type": "sqlite"}, "serving_address": "127.0.0.1:52990"}],
           "auth": {"tokens": [{"name": "region-my", "secret_env": "AGG_TOKEN_MY", "regions": ["MY"], "roles": ["publish"]}]}}
    (tmp_path / "fed.yaml").write_text(yaml.safe_dump(with_mtls(raw, pki)))
    config = load_config(tmp_path / "fed.yaml")
    metrics = AggregatorMetrics()
    server, port, store = build_server(config, tmp_path / "a.duckdb", "127.0.0.1:0", metrics=metrics)
    server.start()
    try:
        with _link(config, f"127.0.0.1:{port}").channel() as ch:
            status = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service="fedstore.aggregator.v1.Aggregator"), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING
            replies = list(reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
            names = {s.name for s in replies[0].list_services_response.service}
            assert {"fedstore.aggregator.v1.Aggregator", "grpc.health.v1.Health"} <= names
            # reflection v1 as well (grpcurl --reflect-protocol grpc-v1, buf curl): the same messages
            v1 = ch.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                                  request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                                  response_deserializer=reflection_pb2.ServerReflectionResponse.FromString)
            (listed,) = list(v1(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
            assert {s.name for s in listed.list_services_response.service} == names >= {
                "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}
            (found,) = list(v1(iter([reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="fedstore.registry.v1.Registry")]), timeout=5))
            assert found.file_descriptor_response.file_descriptor_proto  # the .proto, for a client to build calls
            labels = {"region": "MY", "rule": "submission_id", "code": "INVALID_ARGUMENT"}
            before = metrics.registry.get_sample_value("fedstore_submissions_rejected_total", labels) or 0
            with pytest.raises(grpc.RpcError):
                aggregator_pb2_grpc.AggregatorStub(ch).Submit(pb.Submission(region="MY"), metadata=_md("MY"), timeout=5)
        assert metrics.registry.get_sample_value("fedstore_submissions_rejected_total", labels) == before + 1
        assert "fedstore_submissions_rejected" in generate_latest(metrics.registry).decode()
    finally:
        server.stop(1).wait()
        store.close()


def test_idle_reflection_streams_do_not_take_the_centres_threads(fed):
    """Reflection is open to anyone, and a reflection stream whose client sends nothing holds a
    thread of the centre's pool. As many such streams as the pool has threads stopped every other
    call (Submit, the registry, even health checks waited out their deadlines); now a few are
    served at once, more are refused RESOURCE_EXHAUSTED, and the centre keeps answering."""
    import queue

    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    from fedstore.aggregator.intake.server import REFLECTION_STREAMS, WORKERS

    config, address, store = fed
    channels = [_link(config, address).channel() for _ in range(WORKERS + 2)]
    silent: list[queue.Queue] = [queue.Queue() for _ in channels]  # each stream's requests: none until None
    streams = [reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(iter(q.get, None), timeout=20)
               for ch, q in zip(channels, silent, strict=True)]
    try:
        # every stream reached the centre: the ones beyond its limit are refused (waited for, not slept
        # for: on a loaded machine a second was not always enough)
        deadline = time.monotonic() + 30
        while sum(s.done() for s in streams) < len(streams) - REFLECTION_STREAMS and time.monotonic() < deadline:
            time.sleep(0.05)
        with _link(config, address).channel() as ch:  # the open streams wait; every other call is answered
            assert health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=3).status == \
                health_pb2.HealthCheckResponse.SERVING
        assert not _stub(config, address).Submit(_handmade(), metadata=_md("MY"), timeout=3).replay
        refused = [s for s in streams if s.done()]
        assert len(refused) == len(streams) - REFLECTION_STREAMS
        assert {s.code() for s in refused} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert "calls are open already" in refused[0].details()
    finally:
        for q in silent:
            q.put(None)
        for ch in channels:
            ch.close()
    with _link(config, address).channel() as ch:  # the slots are free again
        again = reflection_pb2_grpc.ServerReflectionStub(ch).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        assert "fedstore.aggregator.v1.Aggregator" in {s.name for s in next(again).list_services_response.service}


def test_segment_breakdowns_cross_only_with_catalog_values_and_enough_entities(fed):
    from fedstore.federation.statistics import CITIES, segment_spec

    config, address, store = fed
    node = RegionNode(config.region("MY"))
    write_sources(node.data_dir, customers=400, drivers=3, days=2, start=T, id_offset=10**9)
    node.apply()
    sid, released, path = publish_statistics(node, config.privacy, epsilon=2.0, end=T + timedelta(days=3),
                                             catalog=SPEC, segment=segment_spec("home_city"))
    body = json.loads(path.read_text())
    # the sources hold "Kuala Lumpur", "Kota Kinabalu", a Vietnamese city, "" and nulls: only MY's catalog
    # cities can cross; each is released or suppressed on its noisy count (an empty city may pass on noise)
    released_values = {g["value"] for g in body["segments"]}
    assert {"Kuala Lumpur", "Kota Kinabalu"} <= released_values
    assert released_values | set(body["suppressed_segments"]) == set(CITIES["MY"])
    assert not released_values & set(body["suppressed_segments"]) and "Minh" not in path.read_text()
    assert body["accounting"]["epsilon"] == pytest.approx(2.0)  # whole region ε/2 + segments ε/2 (disjoint)
    assert send_outbox(outbox_dir(node.data_dir), _link(config, address, "MY"), TOKENS["MY"]) == [(sid, "sent")]
    stored = store.segments(sid)
    assert {v for _, v, _, _ in stored} == released_values and all(c >= 10 for *_, c in stored)
    # a segment value outside the catalog, or an unknown dimension, is refused and nothing is stored
    for mutate, words in [(lambda s: setattr(s.segments[0], "value", "Atlantis"), "rule segment"),
                          (lambda s: setattr(s.segments[0], "dimension", "religion"), "rule segment")]:
        bad = to_proto({**body, "submission_id": body["submission_id"][:-8] + "0000abcd"})
        mutate(bad)
        with pytest.raises(grpc.RpcError) as e:
            _stub(config, address).Submit(bad, metadata=_md("MY"), timeout=5)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and e.value.details().startswith(words)
        assert store.receipt(bad.submission_id) is None


def _queued_last_month(node, path):
    """Make a queued release look as if it had been published last month (body and ledger)."""
    import sqlite3

    body = json.loads(path.read_text())
    this = datetime.strptime(body["period"] + "-01", "%Y-%m-%d")
    last = (this - timedelta(days=1)).strftime("%Y-%m")
    path.write_text(json.dumps({**body, "period": last}))
    with sqlite3.connect(node.data_dir / "privacy_budget.db") as db:
        db.execute("UPDATE spends SET period=? WHERE submission_id=?", (last, body["submission_id"]))
    return body["period"], last


def test_a_release_queued_last_month_is_charged_to_the_month_it_is_sent_in(fed):
    """The centre charges the month it receives a release in and refuses another period: the outbox
    re-dates a release that waited across a month boundary, moving its spend in the region's ledger."""
    from fedstore.regions.publishing.budget import BudgetLedger

    config, address, store = fed
    node, (sid, released, path) = _publish(config, "MY")
    this, last = _queued_last_month(node, path)
    ledger = BudgetLedger(node.data_dir / "privacy_budget.db", "MY", epsilon_per_month=config.privacy.epsilon_per_month)
    assert ledger.spent(last) == pytest.approx(1.0) and ledger.spent(this) == 0
    assert send_outbox(outbox_dir(node.data_dir), _link(config, address), TOKENS["MY"], ledger=ledger) == [(sid, "sent")]
    body = json.loads(path.read_text())
    assert (body["period"], body["queued_in"]) == (this, last)
    assert ledger.spent(this) == pytest.approx(1.0) and ledger.spent(last) == 0
    assert store.epsilon_spent("MY", this) == pytest.approx(released.accounting.epsilon)


def test_a_release_the_sending_months_budget_cannot_hold_stays_queued(fed):
    from fedstore.regions.publishing.budget import BudgetLedger

    config, address, store = fed
    node, (sid, _, path) = _publish(config, "MY", epsilon=1.0)
    this, last = _queued_last_month(node, path)
    ledger = BudgetLedger(node.data_dir / "privacy_budget.db", "MY", epsilon_per_month=config.privacy.epsilon_per_month)
    ledger.spend("my-stats-elsewhere", 2.5, datetime.now(timezone.utc))  # this month: 0.5 of 3 left
    [(got, outcome)] = send_outbox(outbox_dir(node.data_dir), _link(config, address), TOKENS["MY"], ledger=ledger)
    assert got == sid and outcome.startswith("queued: held for budget:") and "whose budget has ε=0.500 left" in outcome
    assert json.loads(path.read_text())["period"] == last and ledger.spent(last) == pytest.approx(1.0)
    assert store.receipt(sid) is None


def test_a_period_other_than_the_month_of_receipt_is_refused_and_nothing_is_stored(fed):
    config, address, store = fed
    node, (sid, _, path) = _publish(config, "MY")
    this, last = _queued_last_month(node, path)
    with pytest.raises(grpc.RpcError) as err:
        _stub(config, address).Submit(to_proto(json.loads(path.read_text())), metadata=_md("MY"), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == (f"rule period: claimed {last}, but the centre received it in {this}; a submission "
                                   "is charged to the month it is received in")
    assert store.receipt(sid) is None


def test_a_period_refused_by_a_centre_whose_clock_is_a_month_on_stays_queued(fed, tmp_path):
    """The two clocks disagree across midnight of the 1st: no verdict on the release, which stays
    queued (every other rejection is final) and is re-dated by the next run."""
    config, _, _ = fed
    later = datetime.now(timezone.utc) + timedelta(days=40)
    server, port, store = build_server(config, tmp_path / "later" / "aggregator.duckdb", "127.0.0.1:0",
                                       clock=lambda: later)
    server.start()
    try:
        node, (sid, _, path) = _publish(config, "MY")
        [(got, outcome)] = send_outbox(outbox_dir(node.data_dir), _link(config, f"127.0.0.1:{port}"), TOKENS["MY"])
        assert got == sid and outcome.startswith("queued: period: the centre's month differs from this one's (rule period:")
        assert json.loads(path.read_text())["status"] == "queued" and store.receipt(sid) is None
    finally:
        server.stop(0).wait()
        store.close()


def test_the_training_series_at_zero_name_every_strategy_there_is():
    from fedstore.aggregator.errors import Rejected
    from fedstore.aggregator.intake.metrics import STRATEGIES
    from fedstore.aggregator.training.strategies import make_strategy

    assert [make_strategy(name).name for name in STRATEGIES] == list(STRATEGIES)
    with pytest.raises(Rejected) as err:
        make_strategy("no-such")
    assert str(err.value).endswith("known: " + ", ".join(sorted(STRATEGIES)))


def test_the_centres_steps_take_value_objects_and_raise_the_rule_they_apply(fed, tmp_path):
    """The steps under the servicer, called without gRPC: accept, replay, a replay with other
    content, another region's caller, the recounted budget."""
    from fedstore.aggregator.errors import NotAllowed, OverBudget, Rejected
    from fedstore.aggregator.intake.metrics import AggregatorMetrics
    from fedstore.aggregator.intake.steps import Centre
    from fedstore.aggregator.intake.submission_wire import parse_submission
    from fedstore.aggregator.store import SubmissionStore
    from fedstore.federation.tokens import TokenBook

    config, _, _ = fed
    first = _handmade(epsilon=2.0)
    now = first.window_end.ToDatetime(timezone.utc) + timedelta(hours=1)  # the test's own clock
    store = SubmissionStore(tmp_path / "steps.duckdb")
    try:
        centre = Centre(config, store, metrics=AggregatorMetrics(), registry=None, on_evaluation=None,
                        clock=lambda: now)
        book = TokenBook(config.tokens)
        my, sg = book.caller(TOKENS["MY"]), book.caller(TOKENS["SG"])
        sub = parse_submission(first)
        assert (sub.region, sub.kind, sub.evaluation) == ("MY", "features", None)
        receipt = centre.submit(sub, my)
        assert not receipt.replay and receipt.quarantine_rule is None and receipt.accepted_at == now
        assert receipt.epsilon_spent_in_period == pytest.approx(2.0)
        again = centre.submit(parse_submission(first), my)
        assert again.replay and again.receipt_id == receipt.receipt_id
        with pytest.raises(Rejected, match="^rule replay: "):
            centre.submit(parse_submission(_handmade(first.submission_id, epsilon=2.0, count=101)), my)
        with pytest.raises(NotAllowed, match="^rule identity: caller 'region-sg' may not submit for region MY$"):
            centre.submit(sub, sg)
        with pytest.raises(OverBudget, match="^rule budget: region MY has spent ε=2.000 of 3.000 "):
            centre.submit(parse_submission(_handmade(epsilon=2.0)), my)
        assert store.epsilon_spent("MY", sub.period) == pytest.approx(2.0)
    finally:
        store.close()
