"""Feast's feature-server HTTP API and Feast's ServingService gRPC on the serving node: Feast's own
clients (the ``remote`` online store, ServingService's stub), and plain HTTP as curl sends it, get
what a real ``feast serve`` on the same region directory gives, behind the node's roles."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
import yaml
from feast import FeatureStore
from feast.errors import FeastPermissionError
from feast.permissions.client.http_auth_requests_wrapper import HttpSessionManager
from feast.protos.feast.serving.GrpcServer_pb2_grpc import GrpcFeatureServerStub
from feast.protos.feast.serving.ServingService_pb2 import (
    FeatureList,
    GetFeastServingInfoRequest,
    GetOnlineFeaturesRequest,
)
from feast.protos.feast.serving.ServingService_pb2_grpc import ServingServiceStub
from feast.protos.feast.types.Value_pb2 import RepeatedValue, Value

from fedstore.serving.client import FeatureClient
from redis_servers import free_port
from serving_fixtures import TOKENS, served_region

pytestmark = [pytest.mark.redis, pytest.mark.slow]

AUTH = (("authorization", f"Bearer {TOKENS['fraud-app']}"),)
TOKEN_ENV = "FEDSTORE_HTTP_TEST_TOKEN"


def _wait_for_port(port: int, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert process.poll() is None, f"{what} exited"
        time.sleep(0.2)
    raise AssertionError(f"{what} did not listen on {port}")


@pytest.fixture(scope="module")
def both(tmp_path_factory, redis_per_region):
    """Region MY on real Redis, its node with the HTTP API on, and `feast serve` on the same directory."""
    for s in redis_per_region.values():
        s.client().flushall()
    tmp_path = tmp_path_factory.mktemp("feast-http")
    mp = pytest.MonkeyPatch()
    served = served_region(tmp_path, redis_per_region["MY"].url, mp, serving={"http_port": free_port()})
    port = free_port()
    serve = subprocess.Popen(
        [sys.executable, "-m", "feast.cli.cli", "-c", str(served.node.data_dir), "serve", "--host", "127.0.0.1",
         "--port", str(port), "--no-access-log"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_port(port, serve, "feast serve")
        yield served, f"http://127.0.0.1:{served.server.http.port}", f"http://127.0.0.1:{port}"
    finally:
        serve.terminate()
        serve.wait(timeout=30)
        served.server.stop(1)
        HttpSessionManager.close_session()
        mp.undo()


def _post(url: str, body: object, token: str | None = TOKENS["fraud-app"], raw: bytes | None = None):
    """POST as curl does: (status, parsed JSON body or None)."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}/get-online-features", data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        text = e.read()
        return e.code, json.loads(text) if text else None


def _columns(answer: dict) -> dict:
    """name -> (values, statuses, timestamps): the order of the columns aside (Feast's depends on set order)."""
    names = answer["metadata"]["feature_names"]
    return {n: (r["values"], r["statuses"], r.get("event_timestamps")) for n, r in zip(names, answer["results"], strict=True)}


CASES = [
    ("feature service", {"feature_service": "fraud_scoring"}, "customer_id", [0, 1, 7, 10**12]),
    ("feature refs", {"features": ["driver_performance:avg_rating_30d", "driver_performance:trips_last_hour"]},
     "driver_id", [3, 4, 10**12]),
    ("strings and nulls", {"features": ["customer_profile:home_city", "customer_transactions:spend_7d",
                                        "customer_transactions:chargeback_rate_30d"]}, "customer_id", list(range(60))),
    ("full feature names", {"feature_service": "driver_allocation", "full_feature_names": True}, "driver_id", [1, 2]),
    ("one entity", {"feature_service": "fraud_scoring"}, "customer_id", [7]),
]


@pytest.mark.parametrize("case,kw,key,ids", CASES, ids=[c[0] for c in CASES])
def test_raw_http_answers_what_feast_serve_answers(both, case, kw, key, ids):
    served, ours, feast_serve = both
    body = {**kw, "entities": {key: ids}}
    status, theirs = _post(feast_serve, body, token=None)
    assert status == 200, theirs
    status, mine = _post(ours, body)
    assert status == 200, mine
    assert _columns(mine) == _columns(theirs)
    assert mine["metadata"]["feature_names"][0] == key  # entity columns first, as Feast answers
    assert set(mine) == set(theirs)  # no field more or less (metadata, results, status)
    assert any(v is not None for n, (values, _, _) in _columns(mine).items() if n != key for v in values)


def _remote_store(tmp_path: Path, data_dir: Path, url: str, *, token_env: str | None) -> FeatureStore:
    """A Feast repo whose online store is `remote` at ``url``; the registry is the region's."""
    config = yaml.safe_load((data_dir / "feature_store.yaml").read_text())
    config["online_store"] = {"type": "remote", "path": url, "connection_retries": 0}
    config["registry"] = str(data_dir / "registry.db")
    if token_env:  # Feast's remote store sends `Authorization: Bearer <token>` for an OIDC client config
        config["auth"] = {"type": "oidc", "token_env_var": token_env}
    repo = tmp_path / ("with-token" if token_env else "no-token")
    repo.mkdir()
    (repo / "feature_store.yaml").write_text(yaml.safe_dump(config))
    return FeatureStore(repo_path=str(repo))


def test_feasts_remote_online_store_gets_what_feast_serve_and_our_grpc_give(both, tmp_path, monkeypatch):
    served, ours, feast_serve = both
    monkeypatch.setenv(TOKEN_ENV, TOKENS["fraud-app"])
    data_dir = served.node.data_dir
    ids = [0, 1, 7, 42, 10**12]
    rows = [{"customer_id": i} for i in ids]
    remote_ours = _remote_store(tmp_path, data_dir, ours, token_env=TOKEN_ENV)
    service = remote_ours.get_feature_service("fraud_scoring")
    mine = remote_ours.get_online_features(features=service, entity_rows=rows).to_dict()
    HttpSessionManager.close_session()  # Feast caches one session per process: the next store has no token
    remote_theirs = _remote_store(tmp_path, data_dir, feast_serve, token_env=None)
    theirs = remote_theirs.get_online_features(features=service, entity_rows=rows).to_dict()
    HttpSessionManager.close_session()
    assert mine == theirs
    assert mine["customer_id"] == ids
    # the node's own gRPC API, same values for the entities it holds (Feast answers a missing one with nulls)
    with FeatureClient(served.address, TOKENS["fraud-app"], timeout=30) as client:
        grpc_answer = client.get_online_features(entities={"customer_id": ids}, feature_service="fraud_scoring").to_dict()
    for name, values in grpc_answer.items():
        if name == "customer_id":
            continue
        for got, want in zip(mine[name][:-1], values[:-1], strict=True):
            assert got == want or (isinstance(got, float) and math.isclose(got, want)), name
        assert mine[name][-1] is None  # 10**12: no such customer
    assert any(v is not None for v in mine["spend_7d"][:-1])


def test_feasts_remote_store_without_the_token_or_with_another_regions_is_refused(both, tmp_path, monkeypatch):
    served, ours, _ = both
    data_dir = served.node.data_dir
    anonymous = _remote_store(tmp_path, data_dir, ours, token_env=None)
    with pytest.raises(RuntimeError, match="401"):
        anonymous.get_online_features(features=["customer_transactions:spend_7d"], entity_rows=[{"customer_id": 1}])
    HttpSessionManager.close_session()
    monkeypatch.setenv(TOKEN_ENV, TOKENS["sg-only"])  # a lookup credential of region SG
    (tmp_path / "sg").mkdir()
    other = _remote_store(tmp_path / "sg", data_dir, ours, token_env=TOKEN_ENV)
    with pytest.raises(FeastPermissionError, match="only a credential of region MY"):
        other.get_online_features(features=["customer_transactions:spend_7d"], entity_rows=[{"customer_id": 1}])
    HttpSessionManager.close_session()


def test_raw_http_refusals_and_bad_input_are_clear_json(both):
    served, ours, _ = both
    good = {"features": ["customer_transactions:spend_7d"], "entities": {"customer_id": [1]}}
    status, body = _post(ours, good, token=None)
    assert status == 401 and "Authorization: Bearer <token>" in body["detail"]
    status, body = _post(ours, good, token="not-a-token")
    assert status == 401 and body["detail"] == "unknown token"
    status, body = _post(ours, good, token=TOKENS["sg-only"])
    assert status == 403
    detail = json.loads(body)  # Feast's error detail, which Feast's client turns back into its error
    assert detail["class"] == "FeastPermissionError" and "region MY" in detail["message"]

    def refused(body=None, raw=None) -> tuple[int, str]:
        status, answer = _post(ours, body, raw=raw)
        return status, json.loads(answer)["message"]

    status, message = refused(raw=b"{not json")
    assert status == 400 and "not JSON" in message
    status, message = refused(raw=b"[" * 200_000)
    assert status == 400 and "nests too deeply" in message
    status, message = refused(raw=b'{"entities": "\xff"}')
    assert status == 400 and "not JSON" in message
    status, message = refused({"entities": {"customer_id": [1]}})
    assert status == 400 and "'features'" in message
    status, message = refused({"features": ["customer_transactions:spend_7d"], "entities": {"customer_id": ["x"]}})
    assert status == 400 and "join key 'customer_id' must be int64" in message
    for wide in (2**63, -(2**63) - 1):  # JSON can say it, no int64 holds it (feast serve: a 500)
        status, message = refused({"features": ["customer_transactions:spend_7d"], "entities": {"customer_id": [wide]}})
        assert status == 400 and "outside int64" in message
    status, answer = _post(ours, {"features": ["customer_transactions:spend_7d"],
                                  "entities": {"customer_id": [2**63 - 1, -(2**63)]}})  # the ends fit: no such customers
    assert status == 200 and answer["results"][1]["values"] == [None, None]
    status, message = refused({"features": ["customer_transactions:spend_7d"], "entities": {"customer_id": 1}})
    assert status == 400 and "'entities'" in message
    status, message = refused({"features": ["no_such_view:x"], "entities": {"customer_id": [1]}})
    assert status == 404 and "no_such_view" in message
    status, message = refused({"feature_service": "nope", "entities": {"customer_id": [1]}})
    assert status == 404 and "nope" in message
    status, message = refused({"features": ["customer_transactions:spend_7d"],
                               "entities": {"customer_id": list(range(501))}})
    assert status == 400 and "at most 500" in message
    # a path or a verb Feast's server has not: JSON, as FastAPI answers
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{ours}/push", data=b"{}", timeout=30)
    assert e.value.code == 404 and json.loads(e.value.read()) == {"detail": "Not Found"}
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{ours}/get-online-features", timeout=30)
    assert e.value.code == 405


def test_health_is_open_and_every_call_is_on_the_nodes_metrics(both):
    served, ours, _ = both
    with urllib.request.urlopen(f"{ours}/health", timeout=30) as r:
        assert r.status == 200 and r.read() == b""  # as feast serve: no body
    before = _metrics(served)
    _post(ours, {"features": ["customer_transactions:spend_7d"], "entities": {"customer_id": [1]}}, token="wrong")
    _post(ours, {"features": ["customer_transactions:spend_7d"], "entities": {"customer_id": [1]}})
    _post(ours, {"features": ["no_such_view:x"], "entities": {"customer_id": [1]}})
    after = _metrics(served)
    for sample, more in ((('fedstore_requests_total', (('code', 'OK'), ('method', 'http.get-online-features'))), 1),
                         (('fedstore_requests_total', (('code', 'NOT_FOUND'), ('method', 'http.get-online-features'))), 1),
                         (('fedstore_calls_by_caller_total', (('caller', 'fraud-app'),)), 2)):
        assert after.get(sample, 0) - before.get(sample, 0) == more, sample
    refusals = [k for k in after if k[0] == "fedstore_auth_refusals_total" and ("code", "UNAUTHENTICATED") in k[1]]
    assert refusals and sum(after[k] - before.get(k, 0) for k in refusals) == 1


def _metrics(served) -> dict:
    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client import generate_latest

    text = generate_latest(served.server.metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


@pytest.mark.parametrize("full", [False, True])
def test_feasts_serving_service_stub_answers_as_grpc_feature_server(both, full):
    served, _, _ = both
    request = GetOnlineFeaturesRequest(features=FeatureList(val=["customer_transactions:spend_7d",
                                                                 "customer_profile:home_city"]),
                                       full_feature_names=full)
    request.entities["customer_id"].CopyFrom(RepeatedValue(val=[Value(int64_val=i) for i in (0, 7, 10**12)]))
    with grpc.insecure_channel(served.address) as ch:
        theirs = GrpcFeatureServerStub(ch).GetOnlineFeatures(request, timeout=30, metadata=AUTH)
        mine = ServingServiceStub(ch).GetOnlineFeatures(request, timeout=30, metadata=AUTH)
        info = ServingServiceStub(ch).GetFeastServingInfo(GetFeastServingInfoRequest(), timeout=30, metadata=AUTH)
        with pytest.raises(grpc.RpcError) as refused:
            ServingServiceStub(ch).GetOnlineFeatures(request, timeout=30)
    assert mine == theirs  # and GrpcFeatureServer's answers are `feast listen`'s (test_feast_listen_compat)
    from importlib.metadata import version

    assert info.version == version("feast")
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_busy_http_port_is_one_clear_error_before_the_node_serves(both):
    from fedstore.serving.ports import CannotListen
    from fedstore.serving.server import ServingNode

    served, _, _ = both
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        busy = holder.getsockname()[1]
        with pytest.raises(CannotListen, match=f"cannot listen on 127.0.0.1:{busy} for the HTTP API"):
            ServingNode(served.config, served.config.region("MY"), address="127.0.0.1:0", http_port=busy)


def test_with_serving_tls_the_http_api_speaks_tls_with_the_same_certificate(tmp_path, monkeypatch, pki):
    import ssl

    tls = {"cert": str(pki.centre.cert), "key": str(pki.centre.key)}  # a certificate for 127.0.0.1
    # the embedded online store: the module's Redis holds the other tests' region
    served = served_region(tmp_path, None, monkeypatch, customers=20,
                           serving={"http_port": free_port(), "tls": tls})
    try:
        url = f"https://127.0.0.1:{served.server.http.port}"
        context = ssl.create_default_context(cafile=str(pki.ca))
        request = urllib.request.Request(
            f"{url}/get-online-features", method="POST",
            data=json.dumps({"features": ["customer_transactions:spend_7d"], "entities": {"customer_id": [1]}}).encode(),
            headers={"Authorization": f"Bearer {TOKENS['fraud-app']}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30, context=context) as r:
            answer = json.loads(r.read())
        assert answer["metadata"]["feature_names"] == ["customer_id", "spend_7d"]
        assert answer["results"][1]["statuses"] == ["PRESENT"] and answer["results"][1]["values"][0] is not None
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # plaintext to the TLS port: no answer
            urllib.request.urlopen(f"http://127.0.0.1:{served.server.http.port}/health", timeout=10).read()
    finally:
        served.server.stop(1)


def test_with_redis_gone_the_http_api_answers_from_the_snapshot_as_the_grpc_api_does(tmp_path, monkeypatch):
    from redis_servers import start_redis

    redis = start_redis()
    served = served_region(tmp_path, redis.url, monkeypatch, customers=30, serving={"http_port": free_port()})
    url = f"http://127.0.0.1:{served.server.http.port}"
    body = {"feature_service": "fraud_scoring", "entities": {"customer_id": [0, 1, 2, 10**12]}}
    try:
        status, online = _post(url, body)
        assert status == 200
        redis.kill()
        answers = [_post(url, body) for _ in range(5)]  # nothing fails because Redis is down
        with FeatureClient(served.address, TOKENS["fraud-app"], timeout=30) as client:
            source = client.get_online_features(entities={"customer_id": [0]}, feature_service="fraud_scoring").source
        assert source == "batch_fallback"  # the one answer path: the gRPC API is on the snapshot too
        for status, fallback in answers:
            assert status == 200
            assert {n: v[:2] for n, v in _columns(fallback).items()} == {n: v[:2] for n, v in _columns(online).items()}
    finally:
        served.server.stop(1)
        redis.stop()


def _raw_request(body: bytes, extra: str = "") -> bytes:
    return (f"POST /get-online-features HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {TOKENS['fraud-app']}\r\nContent-Length: {len(body)}\r\n{extra}\r\n").encode() + body


def _read_responses(sock: socket.socket, count: int) -> list[tuple[int, bytes]]:
    """``count`` HTTP/1.1 responses (Content-Length framed) off a raw socket: (status, body)."""
    data, out = b"", []
    while len(out) < count:
        head_end = data.find(b"\r\n\r\n")
        if head_end >= 0:
            head = data[:head_end].decode("latin-1").split("\r\n")
            length = int(next(h.split(":", 1)[1] for h in head if h.lower().startswith("content-length:")))
            if len(data) >= head_end + 4 + length:
                out.append((int(head[0].split()[1]), data[head_end + 4:head_end + 4 + length]))
                data = data[head_end + 4 + length:]
                continue
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection early"
        data += chunk
    return out


def test_concurrent_and_pipelined_lookups_each_get_their_own_answer(both):
    """Lookups arriving together share a Redis round trip on the node's event loop: each must still
    get its own entities' values, in the order its connection asked."""
    import threading

    served, ours, _ = both
    features = ["customer_transactions:spend_7d", "customer_profile:home_city"]
    alone = {i: _post(ours, {"features": features, "entities": {"customer_id": [i]}})[1]["results"] for i in range(40)}
    port = int(ours.rsplit(":", 1)[1])
    failures: list[str] = []

    def client(first: int) -> None:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            for round_ in range(5):  # 4 requests in one write, then their 4 answers
                ids = [(first + round_ * 4 + k) % 40 for k in range(4)]
                sock.sendall(b"".join(_raw_request(json.dumps({"features": features, "entities": {"customer_id": [i]}}).encode())
                                      for i in ids))
                for i, (status, body) in zip(ids, _read_responses(sock, 4), strict=True):
                    if status != 200 or json.loads(body)["results"] != alone[i]:
                        failures.append(f"customer {i}: {status} {body[:120]!r}")

    threads = [threading.Thread(target=client, args=(t * 5,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures[:3]


def test_http_details_curl_and_clients_rely_on(both):
    served, ours, _ = both
    port = int(ours.rsplit(":", 1)[1])
    body = json.dumps({"features": ["customer_transactions:spend_7d"], "entities": {"customer_id": [1]}}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        # curl's Expect: 100-continue (bodies over 1 kB): the interim answer comes before the body is sent
        sock.sendall(_raw_request(b"", "Expect: 100-continue\r\n").replace(b"Content-Length: 0", b"Content-Length: %d" % len(body)))
        assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        [(status, answer)] = _read_responses(sock, 1)
        assert status == 200 and json.loads(answer)["metadata"]["feature_names"] == ["customer_id", "spend_7d"]
        # a chunked body (no Content-Length), in two chunks
        half = len(body) // 2
        sock.sendall(_raw_request(b"", "Transfer-Encoding: chunked\r\n").replace(b"Content-Length: 0\r\n", b"")
                     + b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, body[:half], len(body) - half, body[half:]))
        [(status, answer)] = _read_responses(sock, 1)
        assert status == 200 and json.loads(answer)["results"][1]["statuses"] == ["PRESENT"]
        # Connection: close is honoured after the answer
        sock.sendall(_raw_request(body, "Connection: close\r\n"))
        [(status, _)] = _read_responses(sock, 1)
        assert status == 200 and sock.recv(64) == b""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:  # a body over the limit: 413, closed
        sock.sendall(_raw_request(b"").replace(b"Content-Length: 0", b"Content-Length: 100000000"))
        [(status, answer)] = _read_responses(sock, 1)
        assert status == 413 and "larger than this node reads" in json.loads(json.loads(answer))["message"]
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:  # HEAD: headers only, the connection goes on
        sock.sendall(b"HEAD /nope HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while data.count(b"\r\n\r\n") < 2:
            data += sock.recv(4096)
        assert data.startswith(b"HTTP/1.1 404 ") and data.split(b"\r\n\r\n")[1].startswith(b"HTTP/1.1 200 OK")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:  # curl --http2's h2c upgrade: HTTP/1.1
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                     b"HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n")
        [(status, _)] = _read_responses(sock, 1)
        assert status == 200 and sock.recv(64) == b""  # answered, then closed (what follows would be HTTP/2)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:  # not HTTP: 400, closed
        sock.sendall(b"\x16\x03\x01 hello\r\n\r\n")
        [(status, _)] = _read_responses(sock, 1)
        assert status == 400
