"""The prediction log never leaves the region: no code path that talks to the centre can reach it.

The import contracts in pyproject.toml (checked by test_architecture) keep the log out of the
aggregator, the federation contract, the statistics publisher and the deployment follower, and keep
the network out of the log. This test reads the import graph for what those contracts rest on: the
only serving module that calls the centre is the follower, what it sends cannot hold a prediction,
and every module that can read the log holds no stub of the centre's services.
"""

from __future__ import annotations

import grimp
from google.protobuf.descriptor import FieldDescriptor as F

from fedstore.proto.fedstore.registry.v1 import registry_pb2

LOG = "fedstore.serving.prediction_log"
LAYOUT = "fedstore.regions.prediction_layout"  # the log's folder and schema: score monitoring reads it by them
CENTRE_STUBS = ("fedstore.proto.fedstore.registry.v1.registry_pb2_grpc",
                "fedstore.proto.fedstore.aggregator.v1.aggregator_pb2_grpc")


def test_no_module_that_calls_the_centre_can_reach_the_prediction_log():
    graph = grimp.build_graph("fedstore", include_external_packages=False)
    callers = {m for stub in CENTRE_STUBS for m in graph.find_modules_that_directly_import(stub)}
    serving_callers = {m for m in callers if m.startswith("fedstore.serving.")}
    assert serving_callers == {"fedstore.serving.model_follower"}
    reaching = {c for c in callers if graph.find_shortest_chain(importer=c, imported=LOG) is not None}
    # one command both reads the log and calls the centre: explain, whose --promotions asks the
    # registry's audit trail by region and model name (checked below), sending nothing of the log;
    # and the demo, which runs a whole federation in one process (serving nodes included)
    assert reaching == {"fedstore.cli.explain_command", "fedstore.cli.demo"}
    # the canary rollback calls the centre and reaches neither the log nor score monitoring's reader
    assert graph.find_shortest_chain(importer="fedstore.cli.canary_rollback",
                                     imported="fedstore.regions.monitoring.score_profiles") is None
    # score monitoring reads the log's files by their layout, and nothing on its path calls the centre
    assert {c for c in callers if graph.find_shortest_chain(importer=c, imported=LAYOUT) is not None} == reaching
    readers = graph.find_modules_that_directly_import(LOG) | graph.find_modules_that_directly_import(LAYOUT)
    assert readers  # the scorer, the node, the explain command; the log, score monitoring
    for reader in readers:
        assert not set(graph.find_modules_directly_imported_by(reader)) & set(CENTRE_STUBS), reader


def test_what_the_follower_explain_and_the_canary_rollback_send_the_centre_cannot_hold_a_prediction():
    # a region code, a model name and a version: no entity, no score, no free-form bytes
    assert [(f.name, f.type) for f in registry_pb2.GetDeploymentRequest.DESCRIPTOR.fields] == [
        ("region", F.TYPE_STRING)]
    assert [(f.name, f.type) for f in registry_pb2.GetModelRequest.DESCRIPTOR.fields] == [
        ("name", F.TYPE_STRING), ("version", F.TYPE_INT64)]
    assert [(f.name, f.type) for f in registry_pb2.GetAuditRequest.DESCRIPTOR.fields] == [
        ("region", F.TYPE_STRING), ("name", F.TYPE_STRING)]
    # a canary's score-drift rollback: the region, the stage, and the alarm's why (a PSI, a day, a rule;
    # built from aggregates by score_commands, the only field it sends that is text)
    assert [(f.name, f.type) for f in registry_pb2.RollbackRequest.DESCRIPTOR.fields] == [
        ("region", F.TYPE_STRING), ("stage", F.TYPE_STRING), ("why", F.TYPE_STRING)]
    for module, methods in (("fedstore.serving.model_follower", {"GetDeployment", "GetModel"}),
                            ("fedstore.cli.explain_command", {"GetAudit"}),
                            ("fedstore.cli.canary_rollback", {"GetDeployment", "Rollback"})):
        text = open(__import__(module, fromlist=["x"]).__file__, encoding="utf-8").read()
        sent = {part.split("(")[0] for line in text.splitlines() for part in line.split("Stub(channel).")[1:]}
        sent |= {line.split("stub.")[1].split("(")[0] for line in text.splitlines() if "stub." in line}
        assert sent == methods, module
