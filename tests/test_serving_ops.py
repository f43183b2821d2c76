"""Operations of the serving node: SQLite (embedded) path, TLS, graceful drain, `fedstore serve`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from fedstore.cli.serve_commands import worker_cpus
from fedstore.serving import snapshot_pack
from fedstore.serving.client import FeatureClient
from fedstore.serving.server import ServingNode
from serving_fixtures import TOKENS, served_region, wait_until


def test_embedded_sqlite_region_is_served_through_feast(tmp_path, monkeypatch):
    s = served_region(tmp_path, None, monkeypatch, customers=40)
    try:
        with FeatureClient(s.address, token=TOKENS["fraud-app"]) as client:
            got = client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": [0, 1, 10**12]})
        want = s.node.store.get_online_features(
            features=s.node.store.get_feature_service("fraud_scoring"),
            entity_rows=[{"customer_id": i} for i in (0, 1)]).to_dict()
        assert got.source == "online_store"
        assert got.values["kyc_level"][:2] == want["kyc_level"]
        assert got.statuses["kyc_level"][2] == "not_found"
    finally:
        s.server.stop(1)


def _self_signed(key: Path, cert: Path) -> None:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)


@pytest.mark.slow
def test_tls_when_the_config_names_a_certificate(tmp_path, monkeypatch):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    _self_signed(key, cert)
    s = served_region(tmp_path, None, monkeypatch, customers=10, serving={"tls": {"cert": str(cert), "key": str(key)}})
    try:
        with FeatureClient(s.address, token=TOKENS["fraud-app"], root_certificates=cert.read_bytes()) as client:
            assert client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": [0]}).region == "MY"
        with FeatureClient(s.address, token=TOKENS["fraud-app"], timeout=2) as plain:  # no TLS: refused
            with pytest.raises(grpc.RpcError):
                plain.get_online_features(feature_service="fraud_scoring", entities={"customer_id": [0]})
    finally:
        s.server.stop(1)


def test_graceful_stop_drains_in_flight_calls(tmp_path, monkeypatch):
    s = served_region(tmp_path, None, monkeypatch, customers=10)
    slow_read = s.server.features.reader.read
    in_flight = threading.Event()

    def slow(*a, **kw):
        in_flight.set()
        time.sleep(0.8)
        return slow_read(*a, **kw)

    s.server.features.reader.read = slow  # an in-flight call that takes a while
    results: list[object] = []

    def call() -> None:
        with FeatureClient(s.address, token=TOKENS["fraud-app"], timeout=10) as client:
            results.append(client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": [0]}))

    t = threading.Thread(target=call)
    t.start()
    assert in_flight.wait(10)  # the call is being answered (not a guess: a loaded machine may take a while)
    s.server.stop(grace=5)  # returns once the call above has finished
    t.join()
    assert len(results) == 1 and results[0].region == "MY"
    with pytest.raises(grpc.RpcError):  # and nothing new is accepted
        with FeatureClient(s.address, token=TOKENS["fraud-app"], timeout=1) as client:
            client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": [0]})


@pytest.mark.slow
def test_a_rotated_certificate_is_used_by_new_connections_without_a_restart(tmp_path, monkeypatch):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    _self_signed(key, cert)
    old_cert = cert.read_bytes()
    s = served_region(tmp_path, None, monkeypatch, customers=10, serving={"tls": {"cert": str(cert), "key": str(key)}})
    ask = dict(feature_service="fraud_scoring", entities={"customer_id": [0]})

    def answers(root: bytes) -> bool:
        with FeatureClient(s.address, token=TOKENS["fraud-app"], root_certificates=root, timeout=10, retries=0) as c:
            try:
                return c.get_online_features(**ask).region == "MY"
            except grpc.RpcError:
                return False

    try:
        assert answers(old_cert)
        new_key, new_cert = tmp_path / "new-key.pem", tmp_path / "new-cert.pem"
        _self_signed(new_key, new_cert)
        cert.write_bytes(new_cert.read_bytes())  # half a rotation: the old key does not match it
        assert answers(old_cert) and not answers(new_cert.read_bytes())  # the old pair is kept
        key.write_bytes(new_key.read_bytes())  # the rotation completes
        assert answers(new_cert.read_bytes())
        assert not answers(old_cert)  # clients trusting only the old certificate no longer connect
    finally:
        s.server.stop(1)


@pytest.mark.slow
@pytest.mark.redis
@pytest.mark.parametrize("pin", [False, True], ids=["floating", "pinned"])
def test_fedstore_serve_with_two_workers_on_one_port(tmp_path, clean_redis, monkeypatch, pin):
    from redis_servers import free_port

    s = served_region(tmp_path, clean_redis["MY"].url, monkeypatch, customers=20)
    s.server.stop(1)
    cache = s.node.data_dir / snapshot_pack.CACHE_DIR
    shutil.rmtree(cache)  # compiled by the in-process node above: let the workers compile it
    port = free_port()
    env = {**os.environ}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedstore.cli", "--config", str(s.config.source), "serve", "--region", "MY",
         "--address", f"127.0.0.1:{port}", "--workers", "2"] + (["--pin-cpus"] if pin else []),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        seen = []
        # each worker compiles the snapshots' packs before it serves: on a loaded 2-core machine, with
        # each pinned to one busy CPU, that took more than the two minutes once given
        deadline = time.monotonic() + 300
        ready = lambda: {x.split()[2] for x in seen if x.startswith("MY: worker") and f"serving on 127.0.0.1:{port}" in x}  # noqa: E731
        while len(ready()) < 2 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "fedstore serve exited"
            seen.append(line)
        assert len(ready()) == 2, seen
        with FeatureClient(f"127.0.0.1:{port}", token=TOKENS["fraud-app"]) as client:
            for _ in range(10):
                assert client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": [1]}).region == "MY"
        # a second `fedstore serve` on the port would share it with these workers (SO_REUSEPORT): refused
        second = subprocess.run(
            [sys.executable, "-m", "fedstore.cli", "--config", str(s.config.source), "serve", "--region", "MY",
             "--address", f"127.0.0.1:{port}", "--workers", "2"], capture_output=True, text=True, timeout=120, env=env)
        assert second.returncode == 1
        assert second.stderr.splitlines() == [f"fedstore: error: MY: cannot listen on 127.0.0.1:{port}: another "
                                              f"`fedstore serve` on this host already serves port {port}"], second.stderr
        # one pack per view's snapshot, mapped by both workers: the host holds each snapshot once
        packs = sorted(str(p) for p in cache.glob("*.pack"))
        assert packs and len(packs) == len(list((s.node.data_dir / "snapshots").glob("*.parquet")))
        mapping = [pid for pid in _children(proc.pid) if all(p in _maps(pid) for p in packs)]
        assert len(mapping) == 2, (packs, _children(proc.pid))
        # pinned: every thread of a worker (grpc's included) on its one CPU, the workers on the
        # CPUs this process may use in turn; floating: on any of them
        allowed = os.sched_getaffinity(0)
        per_worker = [{frozenset(os.sched_getaffinity(int(t))) for t in os.listdir(f"/proc/{pid}/task")} for pid in mapping]
        if pin:
            assert all(len(cpus) == 1 and len(next(iter(cpus))) == 1 for cpus in per_worker), per_worker
            assert sorted(next(iter(next(iter(c)))) for c in per_worker) == sorted(worker_cpus(2))
            assert sum(" on CPU " in line for line in seen) == 2, seen
        else:
            assert all(cpus == {frozenset(allowed)} for cpus in per_worker), per_worker
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    out = "".join(seen) + out
    assert proc.returncode == 0, out
    # Both workers share the pipe with each other's log lines, so look for the words, not whole lines.
    assert "MY: worker 0 stopped" in out and "MY: worker 1 stopped" in out, out
    assert "Traceback" not in out


def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:  # the field after the state is the parent
                kids.append(int(d.name))
    return kids


def _maps(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return ""


def test_unknown_region_for_serve_is_a_one_line_error(tmp_path, capsys):
    from conftest import write_config
    from fedstore.cli import main

    from redis_servers import free_port

    cfg = write_config(tmp_path / "f.yaml", {"MY": {"type": "sqlite"}, "SG": {"type": "sqlite"}})
    # a port nothing on this host serves: the fixed ones of write_config may be in use by anything
    cfg.write_text(cfg.read_text().replace("127.0.0.1:51000", f"127.0.0.1:{free_port()}"))
    assert main(["--config", str(cfg), "serve", "--region", "TH"]) == 1
    assert "unknown region 'TH'" in capsys.readouterr().err
    assert main(["--config", str(cfg), "serve", "--region", "MY"]) == 1  # not applied yet
    assert "fedstore region apply --region MY" in capsys.readouterr().err


def test_serve_without_a_token_secret_refuses_before_compiling_snapshots(tmp_path, monkeypatch, capsys):
    from fedstore.cli import main

    s = served_region(tmp_path, None, monkeypatch, customers=10)
    s.server.stop(1)
    cache = s.node.data_dir / snapshot_pack.CACHE_DIR
    shutil.rmtree(cache)
    monkeypatch.delenv("TOKEN_FRAUD")
    assert main(["--config", str(s.config.source), "serve", "--region", "MY", "--address", "127.0.0.1:0"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "fedstore: error: auth token 'fraud-app': environment variable TOKEN_FRAUD is not set"]
    assert not cache.exists()  # refused before the snapshots were compiled


def test_a_taken_port_is_a_clear_error_and_stop_is_idempotent(tmp_path, monkeypatch):
    from fedstore.serving.server import ServingNode

    s = served_region(tmp_path, None, monkeypatch, customers=10)
    threads_before = threading.active_count()
    try:
        with pytest.raises(OSError, match="cannot listen on"):
            ServingNode(s.config, s.config.region("MY"), address=s.address)  # the running node holds it
        # the refused node left no loop thread behind (waited for: it may take a loaded machine a while to end)
        assert wait_until(lambda: threading.active_count() <= threads_before, 10), threading.enumerate()
        cli = subprocess.run(
            [sys.executable, "-m", "fedstore.cli", "--config", str(s.config.source), "serve", "--region", "MY",
             "--address", s.address], capture_output=True, text=True, timeout=120, env={**os.environ})
        assert cli.returncode == 1  # one line, without grpc's own error line about the port
        assert cli.stderr.splitlines() == [f"fedstore: error: MY: cannot listen on {s.address}: Address already in use "
                                           "(another process may be listening there)"], cli.stderr
    finally:
        s.server.stop(1)
    s.server.stop(1)  # a second stop is harmless


def test_calls_beyond_the_concurrency_limit_are_refused_at_once(tmp_path, monkeypatch):
    """Two calls are held in the node (their reads wait for the test); a third is refused while they
    still are: at once, without waiting for a place. Judged by that order and against the caller's
    own deadline, not by a small absolute number (a loaded machine may answer anything slowly)."""
    s = served_region(tmp_path, None, monkeypatch, customers=10, serving={"max_concurrent_calls": 2})
    slow_read = s.server.features.reader.read
    entered = threading.Semaphore(0)
    let_go = threading.Event()

    def slow(*a, **kw):
        entered.release()
        let_go.wait(30)
        return slow_read(*a, **kw)

    s.server.features.reader.read = slow
    codes: list[object] = []

    def call() -> None:
        with FeatureClient(s.address, token=TOKENS["fraud-app"], timeout=10, retries=0) as client:
            try:
                client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": [0]})
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as e:
                codes.append(e.code())

    try:
        held = [threading.Thread(target=call) for _ in range(2)]
        for t in held:
            t.start()
        assert entered.acquire(timeout=20) and entered.acquire(timeout=20)  # both are in flight, held
        began = time.monotonic()
        call()  # the two are held until after it returns: had it waited for a place, DEADLINE_EXCEEDED
        refused_in = time.monotonic() - began
        assert codes == [grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert refused_in < 10 / 2  # well within its 10 s deadline, however loaded the machine
        let_go.set()
        for t in held:
            t.join(30)
        assert codes[1:] == [grpc.StatusCode.OK, grpc.StatusCode.OK]
    finally:
        let_go.set()
        s.server.stop(1)


def test_idle_watch_and_reflection_streams_cannot_take_every_call(tmp_path, monkeypatch):
    """Anyone may open health Watch and reflection streams, without a token, and keep them open.
    They counted against max_concurrent_calls with the lookups: four idle ones, and every lookup
    was refused RESOURCE_EXHAUSTED. Now they hold at most half the calls; the next is refused."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    s = served_region(tmp_path, None, monkeypatch, customers=10, serving={"max_concurrent_calls": 4})
    channel = grpc.insecure_channel(s.address)
    idle = threading.Event()

    def reflection_requests():
        yield reflection_pb2.ServerReflectionRequest(list_services="")
        idle.wait(30)  # open, sending nothing

    try:
        health = health_pb2_grpc.HealthStub(channel)
        watches = [health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30) for _ in range(2)]
        assert [next(w).status for w in watches] == [health_pb2.HealthCheckResponse.SERVING] * 2
        extra = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
        with pytest.raises(grpc.RpcError) as err:
            next(extra)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "2 health-watch" in err.value.details()
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(reflection_requests(), timeout=30)
        with pytest.raises(grpc.RpcError) as err:
            next(reflect)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        # unary health checks and lookups still get calls
        assert health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING
        with FeatureClient(s.address, token=TOKENS["fraud-app"], retries=0) as client:
            for _ in range(3):
                assert client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": [0]}).region == "MY"
        watches[0].cancel()  # a stream that ends gives its place back
        deadline = time.monotonic() + 10
        while True:
            again = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=30)
            try:
                assert next(again).status == health_pb2.HealthCheckResponse.SERVING
                break
            except grpc.RpcError:
                assert time.monotonic() < deadline, "the cancelled stream's place was never given back"
                time.sleep(0.1)
        again.cancel()
        watches[1].cancel()
    finally:
        idle.set()
        channel.close()
        s.server.stop(1)


def test_client_spreads_calls_and_retries_a_refusal_on_another_node(tmp_path, monkeypatch):
    """Two nodes of one region (two pods); one is at its concurrency limit. The client's calls go
    round robin over both, and the one refused (RESOURCE_EXHAUSTED, before any work) is retried on
    the other: every call answers. Without retries, the calls that land on the busy node fail."""
    s = served_region(tmp_path, None, monkeypatch, customers=10, serving={"max_concurrent_calls": 1})
    other = ServingNode(s.config, s.config.region("MY"), address="127.0.0.1:0").start()
    slow_read = s.server.features.reader.read
    hold = threading.Event()

    holding = threading.Event()

    def slow(*a, **kw):
        holding.set()
        hold.wait(10)
        return slow_read(*a, **kw)

    both = f"ipv4:127.0.0.1:{s.server.address.port},127.0.0.1:{other.address.port}"
    ask = dict(feature_service="fraud_scoring", entities={"customer_id": [0]})
    plain = FeatureClient(both, token=TOKENS["fraud-app"], retries=0)

    def admitted(node: ServingNode) -> int:
        return sum(node.metrics.stats.callers.values())

    def reaches_both(c: FeatureClient) -> bool:
        """Calls until this client's channel has been answered by both nodes (on a busy machine a
        subchannel may connect late, and round robin uses only the connected ones)."""
        before = admitted(s.server), admitted(other)

        def answered() -> bool:
            try:
                return c.get_online_features(**ask).region == "MY"
            except grpc.RpcError as e:
                # a node counts a call as under way until its answer is sent; the caller may ask
                # again before that (a loaded machine widens the gap), and the one place is taken
                if e.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                    raise
                return False

        return wait_until(lambda: answered() and admitted(s.server) > before[0] and admitted(other) > before[1], 20)

    try:
        with FeatureClient(both, token=TOKENS["fraud-app"]) as client:
            assert reaches_both(client) and reaches_both(plain)
            s.server.features.reader.read = slow
            busy = FeatureClient(s.address, token=TOKENS["fraud-app"], timeout=10, retries=0)
            held = threading.Thread(target=lambda: busy.get_online_features(**ask))
            held.start()
            assert holding.wait(10)  # the first node now holds its one call
            answers = [client.get_online_features(**ask) for _ in range(8)]
            assert all(a.region == "MY" and a.source == "online_store" for a in answers)
            codes = []
            for _ in range(8):
                try:
                    plain.get_online_features(**ask)
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as e:
                    codes.append(e.code())
            assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes and grpc.StatusCode.OK in codes
            hold.set()
            held.join()
            busy.close()
    finally:
        hold.set()
        plain.close()
        other.stop(1)
        s.server.stop(1)


def test_a_bad_certificate_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    from fedstore.cli import main

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    _self_signed(key, cert)
    s = served_region(tmp_path, None, monkeypatch, customers=10, serving={"tls": {"cert": str(cert), "key": str(key)}})
    s.server.stop(1)
    _self_signed(key, tmp_path / "other-cert.pem")  # now the key of another certificate
    code = main(["--config", str(tmp_path / "fed.yaml"), "serve", "--region", "MY", "--workers", "2",
                 "--address", "127.0.0.1:0"])
    err = capsys.readouterr().err
    assert code == 1 and "cannot be read as a certificate and its private key" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_client_retries_stop_when_most_attempts_are_refused():
    """Every node refuses (RESOURCE_EXHAUSTED): the first calls are retried, but the client's retry
    throttling soon stops retrying, so an overloaded region does not get three attempts per call."""
    from concurrent import futures

    from fedstore.proto.fedstore.serving.v1 import serving_pb2_grpc

    attempts = []

    class Refusing(serving_pb2_grpc.FeatureServingServicer):
        def GetOnlineFeatures(self, request, context):  # noqa: N802 (gRPC's method name)
            attempts.append(time.monotonic())
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "too many calls in flight")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    serving_pb2_grpc.add_FeatureServingServicer_to_server(Refusing(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    calls = 100
    try:
        with FeatureClient(f"127.0.0.1:{port}", token="t", timeout=5, retries=2) as client:
            for i in range(calls):
                with pytest.raises(grpc.RpcError) as refused:
                    client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": [1]})
                assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                if i == 0:
                    assert len(attempts) == 3  # retried while the client had tokens
    finally:
        server.stop(None)
    # without throttling every call would make 3 attempts (300); with it, retries stop once half the
    # tokens are spent (about 50 refusals), then each call is tried once
    assert calls <= len(attempts) < calls + 70, len(attempts)


def test_pinned_workers_take_the_allowed_cpus_in_turn(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {3, 0})
    assert worker_cpus(3) == [0, 3, 0]



@pytest.mark.slow
def test_a_busy_port_is_one_line_from_several_workers(tmp_path, monkeypatch, capfd):
    """Another process listens on the port: `fedstore serve --workers 2` says so in one line (exit
    2), not once per worker, with no traceback and no error line of grpc's own."""
    import socket

    from fedstore.cli import main

    s = served_region(tmp_path, None, monkeypatch, customers=10)
    s.server.stop(1)
    with socket.socket() as other:  # a plain listener: no SO_REUSEPORT, so no one may share it
        other.bind(("127.0.0.1", 0))
        other.listen()
        address = "127.0.0.1:%d" % other.getsockname()[1]
        capfd.readouterr()
        code = main(["--config", str(tmp_path / "fed.yaml"), "serve", "--region", "MY", "--workers", "2",
                     "--address", address])
    err = capfd.readouterr().err  # file descriptor 2: the workers' and grpc's output too
    assert code == 1
    assert err.strip().splitlines() == [f"fedstore: error: MY: cannot listen on {address}: Address already in use "
                                        "(another process may be listening there)"], err


def test_a_port_is_claimed_by_one_fedstore_serve_per_host():
    from fedstore.serving.ports import CannotListen, claim_port

    from redis_servers import free_port

    address = f"127.0.0.1:{free_port()}"
    first = claim_port(address)
    assert first is not None
    try:
        with pytest.raises(CannotListen, match="already serves port"):
            claim_port(address.replace("127.0.0.1", "0.0.0.0"))  # the port, whatever the host part
    finally:
        first.close()
    again = claim_port(address)  # released with its holder
    assert again is not None
    again.close()
    assert claim_port("127.0.0.1:0") is None  # any free port: nothing to share


def test_port_check_passes_free_and_shared_ports_and_names_bad_ones():
    import socket

    from fedstore.serving.ports import CannotListen, check_bindable

    check_bindable("127.0.0.1:0", reuse_port=False)
    with socket.socket() as shared:  # a worker of this node, listening with SO_REUSEPORT
        shared.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        shared.bind(("127.0.0.1", 0))
        shared.listen()
        address = "127.0.0.1:%d" % shared.getsockname()[1]
        check_bindable(address, reuse_port=True)  # its sibling workers may share the port
        with pytest.raises(CannotListen, match="Address already in use"):
            check_bindable(address, reuse_port=False)  # a lone server must not
    check_bindable(address, reuse_port=False)  # free again once closed
    for bad in ("http", "99999", "-1", ""):
        with pytest.raises(CannotListen, match=f"'{bad}' is not a port number"):
            check_bindable(f"127.0.0.1:{bad}", reuse_port=False)
    with pytest.raises(CannotListen, match=r"cannot listen on 192.0.2.1:50051: Cannot assign requested address$"):
        check_bindable("192.0.2.1:50051", reuse_port=False)  # TEST-NET: not an address of this host


def test_stop_listening_refuses_new_connections_while_open_ones_are_answered(capfd):
    """What a stopping worker does before grpc's GOAWAY: its listening socket closes at once (new
    connections go to its siblings on the port), its open connections are still answered, and
    grpc's own stop afterwards says nothing (no failed accept logged)."""
    import socket
    from concurrent import futures

    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    from fedstore.serving.ports import stop_listening

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=[("grpc.so_reuseport", 1)])
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    capfd.readouterr()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        check = health_pb2_grpc.HealthStub(channel).Check
        assert check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
        assert stop_listening(port) >= 1
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0  # nobody listens here any more
        assert check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
        assert stop_listening(port) == 0  # nothing left to close
        server.stop(5).wait(30)
    assert capfd.readouterr().err == ""


@pytest.mark.slow
def test_workers_stop_when_fedstore_serve_is_killed(tmp_path, monkeypatch):
    """SIGKILL gives `fedstore serve` no chance to stop its workers: they notice it is gone, drain
    and exit, and the port is free again (no orphan keeps serving the region unclaimed)."""
    import socket

    from redis_servers import free_port

    s = served_region(tmp_path, None, monkeypatch, customers=10)
    s.server.stop(1)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedstore.cli", "--config", str(s.config.source), "serve", "--region", "MY",
         "--address", f"127.0.0.1:{port}", "--workers", "2"],
        env={**os.environ}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    workers: list[int] = []
    try:
        seen: list[str] = []
        deadline = time.monotonic() + 300  # two minutes were not always enough on a loaded machine
        while sum("serving on" in line for line in seen) < 2 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, "fedstore serve exited: " + "".join(seen)
            seen.append(line)
        workers = [w for w in _children(proc.pid) if b"resource_tracker" not in Path(f"/proc/{w}/cmdline").read_bytes()]
        assert len(workers) == 2, workers
        proc.kill()
        proc.wait(timeout=10)
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{w}").exists() and "Z" not in _state(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [w for w in workers if Path(f"/proc/{w}").exists() and "Z" not in _state(w)], "orphaned workers still run"
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0  # nobody listens any more
    finally:
        if proc.poll() is None:
            proc.kill()
        for w in workers:  # orphans now: only their pids find them
            try:
                os.kill(w, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


# --- a node that heals: workers that die are replaced, workers that stop drain --------------------


def test_restart_budget_waits_longer_after_each_death_and_forgets_old_ones():
    from fedstore.cli.serve_workers import DeathRecord, RestartBudget, death_of

    budget = RestartBudget(deaths=5, window_seconds=60)
    record = DeathRecord(budget)
    # (time of a death, deaths within the last 60 s, seconds before the restart)
    for now, recent, delay in [(0, 1, 0), (5, 2, 1), (6, 3, 2), (7, 4, 4), (61, 4, 4), (200, 1, 0)]:
        assert record.died(now) == recent
        assert budget.delay(recent) == delay
    assert budget.delay(20) == budget.max_delay
    assert [death_of(c) for c in (-9, -15, 0, 2)] == [
        "was killed by SIGKILL", "was killed by SIGTERM", "exited", "exited with code 2"]
    with pytest.raises(ValueError, match="at least 1 death"):
        RestartBudget(deaths=0)


class _Serve:
    """`fedstore serve --workers 2` in a process of its own, its output read line by line."""

    def __init__(self, config: Path, port: int, *extra: str) -> None:
        self.port = port
        self.stderr = config.with_name(f"serve-{port}.err")  # a file: the workers' logs never fill a pipe
        with self.stderr.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fedstore.cli", "--config", str(config), "serve", "--region", "MY",
                 "--address", f"127.0.0.1:{port}", "--workers", "2", *extra],
                env={**os.environ}, stdout=subprocess.PIPE, stderr=err, text=True)
        self.lines: list[str] = []

    def wait_for(self, predicate, seconds: float = 180) -> str:
        """Read output until a line satisfies ``predicate``; that line."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            assert line, "fedstore serve exited: " + "".join(self.lines) + self.stderr.read_text()
            self.lines.append(line)
            if predicate(line):
                return line
        raise AssertionError("not seen in time: " + "".join(self.lines))

    def serving_pids(self, count: int) -> dict[int, int]:
        """Wait until ``count`` more workers serve; worker number -> pid."""
        pids = {}
        while len(pids) < count:
            line = self.wait_for(lambda x: x.startswith("MY: worker") and " serving on " in x)
            pids[int(line.split()[2])] = int(line.split(" as pid ")[1].split()[0])
        return pids

    def busiest(self, pids: dict[int, int]) -> int:
        """The worker holding the most connections (every one comes from the test's callers)."""
        held = {w: len(_socket_inodes(pid) & _connections_on(self.port)) for w, pid in pids.items()}
        assert sum(held.values()) > 0, held
        return max(held, key=held.__getitem__)

    def close(self, *, signal_it: bool = True, seconds: float = 120) -> tuple[int, str, str]:
        """SIGTERM unless it ended (or ``signal_it`` is False), then wait: its exit code, all its
        output and its stderr."""
        if signal_it and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, _ = self.proc.communicate(timeout=seconds)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        return self.proc.returncode, "".join(self.lines) + out, self.stderr.read_text()


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _connections_on(port: int) -> set[str]:
    """Inodes of the server ends of established TCP connections to ``port`` (grpc listens on IPv6
    sockets with IPv4-mapped addresses: both tables)."""
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            f = line.split()
            local_port = int(f[1].rsplit(":", 1)[1], 16)
            if f[3] == "01" and local_port == port:
                found.add(f[9])
    return found


# a serving app: lookups through the retrying FeatureClient until the stop file appears; what it
# answered and what failed, written to its out file every 20 answers and at the end
_CALLER = """
import json, os, sys
import grpc
from fedstore.serving.client import FeatureClient
port, stop, out, token = sys.argv[1:5]
answered, failed = 0, []
def report():
    with open(out + ".tmp", "w") as f:
        json.dump({"answered": answered, "failed": failed}, f)
    os.replace(out + ".tmp", out)
with FeatureClient(f"127.0.0.1:{port}", token=token, timeout=5) as client:
    while not os.path.exists(stop):
        try:
            got = client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": [1]})
            answered += got.region == "MY"
            if answered % 20 == 0:
                report()
        except grpc.RpcError as e:
            failed.append(f"{e.code().name}: {e.details()}")
report()
"""


class _Callers:
    """Serving apps in processes of their own, each with its own connection to the port."""

    def __init__(self, port: int, workdir: Path, count: int) -> None:
        self.stop_file = workdir / "callers.stop"
        self.outs = [workdir / f"caller-{i}.json" for i in range(count)]
        self.procs = [subprocess.Popen([sys.executable, "-c", _CALLER, str(port), str(self.stop_file), str(out),
                                        TOKENS["fraud-app"]], env={**os.environ}) for out in self.outs]

    def reports(self) -> list[dict]:
        import json

        return [json.loads(out.read_text()) if out.exists() else {"answered": 0, "failed": []} for out in self.outs]

    def each_answers(self, calls: int, seconds: float = 120) -> bool:
        """Wait until every caller has ``calls`` more answers than now."""
        targets = [r["answered"] + calls for r in self.reports()]
        return wait_until(lambda: all(r["answered"] >= t for r, t in zip(self.reports(), targets)), seconds)

    def stop(self) -> list[dict]:
        self.stop_file.touch()
        for p in self.procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        return self.reports()


def _served_for_workers(tmp_path, monkeypatch):
    s = served_region(tmp_path, None, monkeypatch, customers=10)
    s.server.stop(1)
    return s


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_worker_that_dies_is_replaced_on_the_port_and_no_call_fails(tmp_path, monkeypatch, sig):
    """One of two workers dies (SIGKILL: killed outright; SIGTERM: it drains and exits) under a
    stream of lookups. The parent says which worker died, how, and the pid of its replacement,
    which then serves on the same port; the retrying FeatureClient sees no failed call: a stopping
    worker closes its listener before grpc tells its clients to go (GOAWAY), so they reconnect to
    its sibling instead of being reset (before: ~1 s of UNAVAILABLE, 2,220 failed calls of 4 clients)."""
    from redis_servers import free_port

    s = _served_for_workers(tmp_path, monkeypatch)
    serve = _Serve(s.config.source, free_port())
    callers = None
    try:
        pids = serve.serving_pids(2)
        callers = _Callers(serve.port, tmp_path, 4)
        assert callers.each_answers(20), callers.reports()
        victim = serve.busiest(pids)
        os.kill(pids[victim], sig)
        how = "was killed by SIGKILL" if sig == signal.SIGKILL else "exited"
        said = serve.wait_for(lambda x: "restarted as pid" in x)
        assert said.startswith(f"MY: worker {victim} (pid {pids[victim]}) {how}; restarted as pid "), said
        new_pid = int(said.rsplit(" ", 1)[1])
        assert new_pid != pids[victim] and new_pid in _children(serve.proc.pid)
        assert serve.serving_pids(1) == {victim: new_pid}  # the replacement serves on the same port
        assert callers.each_answers(20), callers.reports()
        reports = callers.stop()
        assert [r["failed"] for r in reports] == [[]] * 4
        assert all(r["answered"] >= 40 for r in reports), reports
        # and the replacement answers: each fresh connection lands on either worker
        assert wait_until(lambda: _answered_by(serve.port, new_pid), 60), "the replacement never answered"
    finally:
        if callers is not None:
            callers.stop()
        code, out, err = serve.close()
    assert code == 0, out + err
    assert f"MY: worker {victim} stopped" in out and "Traceback" not in out + err, out + err


def _answered_by(port: int, pid: int) -> bool:
    """A health check on a connection of its own (a local subchannel pool: not the one grpc shares
    between this process's channels); True when it was answered SERVING by process ``pid``."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
        return status == health_pb2.HealthCheckResponse.SERVING and bool(_socket_inodes(pid) & _connections_on(port))


@pytest.mark.slow
def test_a_worker_that_dies_at_once_on_every_start_makes_serve_give_up_in_one_line(tmp_path, monkeypatch):
    """The region's registry is removed under a running node and a worker is killed: each
    replacement dies at once (the region is no longer applied). The parent waits longer before
    each restart, and the third death within the window stops the node with one line (exit 2)."""
    from redis_servers import free_port

    s = _served_for_workers(tmp_path, monkeypatch)
    serve = _Serve(s.config.source, free_port(), "--restarts", "3", "--restart-window", "600")
    killed = False
    try:
        pids = serve.serving_pids(2)
        registry = s.node.data_dir / "registry.db"
        registry.rename(registry.with_name("registry.db.away"))
        os.kill(pids[0], signal.SIGKILL)
        killed = True
    finally:
        code, out, err = serve.close(signal_it=not killed, seconds=300)  # it gives up on its own
    assert code == 1, out + err
    errors = [line for line in err.splitlines() if line.startswith("fedstore: error")]
    assert errors == [
        "fedstore: error: MY: worker 0 died 3 times within 600 s (the last time it exited with code 1: region MY "
        "has no registry yet: run `fedstore region apply --region MY` first); fedstore serve gives up"], err
    assert "Traceback" not in err
    assert f"MY: worker 0 (pid {pids[0]}) was killed by SIGKILL; restarted as pid " in out
    assert "MY: worker 0 (pid " in out and "exited with code 2: region MY has no registry yet" in out
    assert "3 deaths" not in out and "2 deaths within 600 s: restarting it in 1 s" in out, out
    assert "MY: worker 1 stopped" in out  # the sibling drained and stopped
