"""Training sets over gRPC inside the region: Arrow chunks, same result as direct, region guard."""

from __future__ import annotations

import grpc
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedstore.regions.datasets import TrainingSetRequest, build_training_set
from fedstore.serving.datasets_client import DatasetClient
from serving_fixtures import TOKENS, served_region


@pytest.fixture()
def served(tmp_path, monkeypatch):
    s = served_region(tmp_path, None, monkeypatch, customers=150)
    yield s
    s.server.stop(1)


def _entities(served, n=300):
    labels = served.tables["fraud_labels"]
    return labels.select(["customer_id", "event_timestamp"]).slice(0, n)


def _sorted(table: pa.Table) -> list[dict]:
    nan_free = [{k: (None if v != v else v) for k, v in r.items()} for r in table.to_pylist()]  # NaN != NaN
    return sorted(nan_free, key=lambda r: (r["customer_id"], r["event_timestamp"]))


def test_stream_round_trip_equals_the_direct_result(served, tmp_path):
    ents = _entities(served)
    pq.write_table(ents, tmp_path / "e.parquet")
    build_training_set(served.node, TrainingSetRequest(tmp_path / "e.parquet", "fraud_scoring", tmp_path / "direct.parquet",
                                                       label="is_fraud", show_progress=False))
    direct = pq.read_table(tmp_path / "direct.parquet")
    with DatasetClient(served.address, token=TOKENS["fraud-app"]) as client:
        streamed = client.get_historical_features(region="MY", entities=ents, feature_service="fraud_scoring",
                                                  label="is_fraud", chunk_rows=64)
        assert client.last_dataset_id and client.last_dataset_id.startswith("my-ds-")
        rows = client.write_parquet(tmp_path / "via-grpc.parquet", region="MY", entities=ents.to_pandas(),
                                    feature_service="fraud_scoring", label="is_fraud")
    assert streamed.num_rows == direct.num_rows == rows == 300
    assert _sorted(streamed) == _sorted(direct)
    assert _sorted(pq.read_table(tmp_path / "via-grpc.parquet")) == _sorted(direct)
    # the dataset built for the stream is in the region's index, like a CLI-built one
    assert (served.node.data_dir / "datasets" / "index.jsonl").read_text().count("my-ds-") == 3


def _named(names: list[str]) -> pa.Table:
    """Two entity rows under these column names (the last is the timestamp, the others integers)."""
    ts = pa.array([0, 0], pa.timestamp("us", tz="UTC"))
    return pa.Table.from_arrays([pa.array([1, 2], pa.int64()) for _ in names[:-1]] + [ts], names=names)


# (case, request kwargs, code, fragment)
BAD = [
    ("another region's data", dict(region="SG"), grpc.StatusCode.PERMISSION_DENIED, "serves region MY only"),
    ("no region", dict(region=""), grpc.StatusCode.INVALID_ARGUMENT, "region is required"),
    ("unknown feature service", dict(feature_service="nope"), grpc.StatusCode.NOT_FOUND, "unknown feature service"),
    ("unknown label", dict(label="churned"), grpc.StatusCode.NOT_FOUND, "unknown label"),
    ("missing join key", dict(entities=pa.table({"event_timestamp": pa.array([0], pa.timestamp("us", tz="UTC"))})),
     grpc.StatusCode.INVALID_ARGUMENT, "join key 'customer_id'"),
    ("empty entities", dict(entities=pa.table({"customer_id": pa.array([], pa.int64()),
                                               "event_timestamp": pa.array([], pa.timestamp("us", tz="UTC"))})),
     grpc.StatusCode.INVALID_ARGUMENT, "has no rows"),
    # Arrow allows these names; Feast's join in DuckDB failed on them (UNKNOWN)
    ("two columns of one name", dict(entities=_named(["customer_id", "customer_id", "event_timestamp"])),
     grpc.StatusCode.INVALID_ARGUMENT, "has more than one column named 'customer_id'"),
    ("names differing in case", dict(entities=_named(["customer_id", "Customer_ID", "event_timestamp"])),
     grpc.StatusCode.INVALID_ARGUMENT, "columns 'customer_id' and 'Customer_ID', whose names differ only in case"),
    ("a column without a name", dict(entities=_named(["customer_id", "", "event_timestamp"])),
     grpc.StatusCode.INVALID_ARGUMENT, "has a column without a name"),
    ("a NUL in a column name", dict(entities=_named(["customer_id", "request\x00id", "event_timestamp"])),
     grpc.StatusCode.INVALID_ARGUMENT, "a name may not hold a NUL character"),
    # echoed whole, the name would overflow the client's trailer limit (RESOURCE_EXHAUSTED instead)
    ("a very long region name", dict(region="x" * 100_000), grpc.StatusCode.PERMISSION_DENIED, "serves region MY only"),
    ("a very long feature service name", dict(feature_service="x" * 100_000), grpc.StatusCode.NOT_FOUND,
     "unknown feature service 'xxx"),
]


@pytest.mark.parametrize("case,kw,code,fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_the_right_status(served, case, kw, code, fragment):
    args = dict(region="MY", entities=_entities(served, 5), feature_service="fraud_scoring", label=None) | kw
    with DatasetClient(served.address, token=TOKENS["fraud-app"]) as client:
        with pytest.raises(grpc.RpcError) as err:
            client.get_historical_features(**args)
    assert err.value.code() == code
    assert fragment in err.value.details()
    assert str(served.node.data_dir) not in err.value.details()  # the node's scratch files are not the caller's
    scratch = served.node.data_dir / "datasets" / "requests"
    assert not scratch.exists() or list(scratch.iterdir()) == []  # nothing left behind


def test_same_auth_as_serving(served):
    for token, code in ((None, grpc.StatusCode.UNAUTHENTICATED), (TOKENS["sg-only"], grpc.StatusCode.PERMISSION_DENIED)):
        with DatasetClient(served.address, token=token) as client:
            with pytest.raises(grpc.RpcError) as err:
                client.get_historical_features(region="MY", entities=_entities(served, 5), feature_service="fraud_scoring")
        assert err.value.code() == code


def test_bytes_that_are_no_request_are_invalid_argument(served):
    with grpc.insecure_channel(served.address) as ch:
        call = ch.unary_stream("/fedstore.datasets.v1.HistoricalFeatures/GetHistoricalFeatures",
                               request_serializer=None, response_deserializer=None)
        with pytest.raises(grpc.RpcError) as err:
            list(call(b"\xff\xff\xff", metadata=(("authorization", f"Bearer {TOKENS['fraud-app']}"),), timeout=30))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == ("malformed request: the bytes sent are not a valid "
                                   "fedstore.datasets.v1.GetHistoricalFeaturesRequest")


def test_streams_their_callers_cancel_leave_no_thread_nor_file_behind(tmp_path, monkeypatch):
    """Callers that cancel a training-set stream after its first chunk (or whose deadline passes):
    more of them than the node has threads for training sets, and the next caller still gets its
    training set; the cancelled streams' scratch files are gone. (Each such stream used to keep
    one of those threads, waiting for good, and its scratch directory.)"""
    import time

    import pyarrow.ipc as ipc

    from fedstore.proto.fedstore.datasets.v1 import datasets_pb2 as pb
    from fedstore.proto.fedstore.datasets.v1 import datasets_pb2_grpc

    s = served_region(tmp_path, None, monkeypatch, customers=150, serving={"workers": 2})
    entities = _entities(s, 300)
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, entities.schema) as writer:
        writer.write_table(entities)
    request = pb.GetHistoricalFeaturesRequest(region="MY", feature_service="fraud_scoring", max_chunk_rows=10,
                                              entities_arrow=sink.getvalue().to_pybytes())  # 30 chunks
    try:
        with grpc.insecure_channel(s.address) as ch:
            stub = datasets_pb2_grpc.HistoricalFeaturesStub(ch)
            for _ in range(3):
                stream = stub.GetHistoricalFeatures(
                    request, metadata=(("authorization", f"Bearer {TOKENS['fraud-app']}"),), timeout=60)
                assert next(stream).rows == 10
                stream.cancel()
        with DatasetClient(s.address, token=TOKENS["fraud-app"], timeout=30) as client:
            got = client.get_historical_features(region="MY", entities=entities.slice(0, 5), feature_service="fraud_scoring")
        assert got.num_rows == 5
        scratch = s.node.data_dir / "datasets" / "requests"
        deadline = time.monotonic() + 10
        while list(scratch.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list(scratch.iterdir()) == []
    finally:
        s.server.stop(1)


def test_concurrent_training_set_streams_are_built_one_at_a_time_and_all_answered(tmp_path, monkeypatch):
    """The streams run on grpc's thread pool, sized for hundreds of idle open streams. Builds share
    the node's Feast store, whose DuckDB connection refuses a second query under way: built at once,
    all but one failed (FAILED_PRECONDITION "connection is busy"); and each can take a GiB."""
    import threading

    from fedstore.serving.datasets_servicer import HistoricalFeaturesServicer

    building, most = [0], [0]
    lock = threading.Lock()
    real = HistoricalFeaturesServicer._build

    def counted(self, request, work):
        with lock:
            building[0] += 1
            most[0] = max(most[0], building[0])
        try:
            import time

            time.sleep(0.3)
            return real(self, request, work)
        finally:
            with lock:
                building[0] -= 1

    monkeypatch.setattr(HistoricalFeaturesServicer, "_build", counted)
    s = served_region(tmp_path, None, monkeypatch, customers=150)
    rows: list[int] = []
    try:
        entities = _entities(s, 5)

        def ask() -> None:
            with DatasetClient(s.address, token=TOKENS["fraud-app"], timeout=60) as client:
                got = client.get_historical_features(region="MY", entities=entities, feature_service="fraud_scoring")
            with lock:
                rows.append(got.num_rows)

        callers = [threading.Thread(target=ask) for _ in range(3)]
        for t in callers:
            t.start()
        for t in callers:
            t.join(60)
    finally:
        s.server.stop(1)
    assert rows == [5, 5, 5]
    assert most[0] == 1
