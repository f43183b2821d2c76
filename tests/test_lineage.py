"""Lineage reaches a server the OpenLineage client's standard way (OPENLINEAGE_URL here), as well as
the region's own file; datasets are named by OpenLineage's naming spec and carry the standard
facets. The receiver is a real HTTP server on loopback; the events are checked against the spec's
required structure and re-read by the OpenLineage client's own typed classes."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fedstore.regions.store.materialize import MaterializeRequest, materialize
from fedstore.regions.store.node import RegionNode
from handmade import write_sources

QUIET = MaterializeRequest(show_progress=False)


class _Receiver(BaseHTTPRequestHandler):
    events: list[tuple[str, dict]] = []
    status = 200

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).events.append((self.path, json.loads(body)))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def receiver(monkeypatch):
    import os

    before = {k for k in os.environ if k.startswith("OPENLINEAGE")}
    _Receiver.events, _Receiver.status = [], 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("OPENLINEAGE_URL", f"http://127.0.0.1:{server.server_address[1]}")
    yield _Receiver
    server.shutdown()
    server.server_close()
    # the OpenLineage client copies OPENLINEAGE_URL into OPENLINEAGE__TRANSPORT__… variables of the
    # process: gone with this receiver, or every later job in the session would post to a closed port
    for key in {k for k in os.environ if k.startswith("OPENLINEAGE")} - before:
        del os.environ[key]


def _check_run_event(e: dict) -> None:
    """The spec's RunEvent: required fields, their formats, and every facet's _producer/_schemaURL."""
    assert {"eventTime", "producer", "schemaURL", "run", "job"} <= e.keys()
    assert e["eventType"] in {"START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"}
    uuid.UUID(e["run"]["runId"])
    assert e["job"]["namespace"] and e["job"]["name"] and e["producer"].startswith("https://")
    assert e["schemaURL"].startswith("https://openlineage.io/spec/")
    facets = [*e["run"].get("facets", {}).values(), *e["job"].get("facets", {}).values()]
    for d in e.get("inputs", []) + e.get("outputs", []):
        assert d["namespace"] and d["name"]
        facets += [*d.get("facets", {}).values(), *d.get("outputFacets", {}).values()]
    for facet in facets:
        assert facet["_producer"] and facet["_schemaURL"].startswith("http"), facet


def test_events_reach_a_lineage_server_named_by_the_spec_with_the_standard_facets(sqlite_federation, receiver):
    node = RegionNode(sqlite_federation.region("MY"))
    write_sources(node.data_dir, customers=20, drivers=4)
    node.apply()
    record = materialize(node, QUIET)
    sent = [e for path, e in receiver.events if path == "/api/v1/lineage"]
    assert [e["eventType"] for e in sent] == ["START", "COMPLETE"]
    in_file = [json.loads(line) for line in (node.data_dir / "lineage" / "events.jsonl").read_text().splitlines()]
    assert in_file == sent  # the region's own record holds the same events
    for e in sent:
        _check_run_event(e)
    complete = sent[1]
    # sources and snapshots: namespace "file", name the absolute path (what an upstream producer names them)
    source = str((node.data_dir / "sources" / "customer_transactions.parquet").resolve())
    assert {"namespace": "file", "name": source}.items() <= complete["inputs"][0].items() or any(
        d["namespace"] == "file" and d["name"] == source for d in complete["inputs"])
    outputs = {(d["namespace"], d["name"]): d for d in complete["outputs"]}
    store = f"sqlite://{sqlite_federation.region('MY').online_store.path.resolve()}"
    online = outputs[(store, f"{node.store.project}_customer_transactions")]
    assert [f["name"] for f in online["facets"]["schema"]["fields"]][:1] == ["customer_id"]
    assert "spend_7d" in {f["name"] for f in online["facets"]["schema"]["fields"]}
    assert online["facets"]["dataSource"]["uri"] == store
    rows = record.per_view["customer_transactions"]["rows_written"]
    assert online["outputFacets"]["outputStatistics"]["rowCount"] == rows > 0
    snapshot = str((node.data_dir / "snapshots" / "customer_transactions.parquet").resolve())
    assert ("file", snapshot) in outputs
    run = complete["run"]["facets"]
    assert run["nominalTime"]["nominalEndTime"] and run["processing_engine"]["name"] == "fedstore"
    assert complete["job"]["facets"]["jobType"]["processingType"] == "BATCH"


def test_a_lineage_server_that_refuses_costs_a_warning_not_the_job(sqlite_federation, receiver, caplog):
    receiver.status = 503
    node = RegionNode(sqlite_federation.region("MY"))
    write_sources(node.data_dir, customers=10, drivers=2)
    node.apply()
    record = materialize(node, QUIET)
    assert record.status == "succeeded"
    assert len(receiver.events) >= 2  # it was asked
    assert "lineage server did not take" in caplog.text
    events = (node.data_dir / "lineage" / "events.jsonl").read_text().splitlines()
    assert [json.loads(e)["eventType"] for e in events] == ["START", "COMPLETE"]  # the file has them all


def test_without_configuration_events_go_to_the_regions_file_only(sqlite_federation, monkeypatch):
    from fedstore.regions.store.lineage import configured_elsewhere

    import os

    for key in [k for k in os.environ if k.startswith("OPENLINEAGE")]:
        monkeypatch.delenv(key)
    assert not configured_elsewhere({})
    assert configured_elsewhere({"OPENLINEAGE__TRANSPORT__TYPE": "http"})
    node = RegionNode(sqlite_federation.region("MY"))
    assert len(node.lineage._clients) == 1
