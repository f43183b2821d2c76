"""Roles and least privilege at every gRPC door: every RPC the product serves has a policy, and the
whole role × RPC × region matrix holds over real gRPC, against a real serving node (region MY) and
a real centre (aggregator and registry). Nothing issued for the centre reads a row."""

from __future__ import annotations


import importlib
import pkgutil
from concurrent import futures

import grpc
import pytest
import yaml
from feast.protos.feast.serving import GrpcServer_pb2, ServingService_pb2
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from fedstore.proto import fedstore as wire_packages
from fedstore.aggregator.intake.metrics import AggregatorMetrics
from fedstore.aggregator.intake.server import build_server
from border import with_mtls
from fedstore.federation.access import AccessGuard
from fedstore.federation.channels import centre_link
from fedstore.federation.roles import POLICIES, ROLE_REGIONS, RegionRule, Role, Scope
from fedstore.federation.tokens import TokenBook
from fedstore.federation import load_config
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2 as apb
from fedstore.proto.fedstore.datasets.v1 import datasets_pb2 as dpb
from fedstore.proto.fedstore.registry.v1 import registry_pb2 as rpb
from serving_fixtures import served_region

SERVING = "/fedstore.serving.v1.FeatureServing/"
FEAST = "/GrpcFeatureServer/"
FEAST_SERVING = "/feast.serving.ServingService/"
DATASETS = "/fedstore.datasets.v1.HistoricalFeatures/"
AGG = "/fedstore.aggregator.v1.Aggregator/"
REG = "/fedstore.registry.v1.Registry/"
SEC = "/fedstore.aggregator.v1.SecureAggregation/"
REFUSED = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED)


def _method_paths(module) -> set[str]:
    return {f"/{s.full_name}/{m.name}" for s in module.DESCRIPTOR.services_by_name.values() for m in s.methods}


def _fedstore_protos() -> list:
    """Every generated module under proto/fedstore: a new .proto is enumerated without editing this test."""
    found = []
    for info in pkgutil.walk_packages(wire_packages.__path__, prefix="fedstore.proto.fedstore."):
        if info.name.endswith("_pb2"):
            found.append(importlib.import_module(info.name))
    return found


def test_every_rpc_of_every_service_has_an_access_policy_and_every_policy_a_method():
    from fedstore.federation.reflection import V1_FILE, ServerReflection

    ServerReflection(())  # describes reflection v1 (v1alpha's messages under v1's name)
    v1 = descriptor_pool.Default().FindFileByName(V1_FILE)
    reflection_v1 = {f"/{s.full_name}/{m.name}" for s in v1.services_by_name.values() for m in s.methods}
    served = set().union(*(_method_paths(m) for m in _fedstore_protos()), _method_paths(GrpcServer_pb2),
                         _method_paths(ServingService_pb2),
                         _method_paths(health_pb2), _method_paths(reflection_pb2), reflection_v1)
    assert len(_fedstore_protos()) >= 4
    missing = sorted(served - set(POLICIES))
    assert not missing, f"RPCs without an access policy in federation/roles.py: {missing}"
    stale = sorted(set(POLICIES) - served)
    assert not stale, f"policies for methods no service declares: {stale}"
    open_ = {m for m, p in POLICIES.items() if p.scope is Scope.OPEN}
    assert open_ == _method_paths(health_pb2) | _method_paths(reflection_pb2) | reflection_v1  # nothing else is open


def test_docs_security_names_every_method_of_the_table():
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "security.md").read_text()
    unnamed = sorted(m for m in POLICIES if m.rsplit("/", 1)[1] not in text)
    assert not unnamed, f"docs/security.md's roles table does not name {unnamed}"
    assert all(f"`{role}`" in text for role in Role)


def _served_methods(channel: grpc.Channel) -> set[str]:
    """The methods of every service the server behind ``channel`` lists through reflection."""
    with channel as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        [answer] = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    pool = descriptor_pool.Default()
    return {f"/{s.name}/{m.name}" for s in answer.list_services_response.service
            for m in pool.FindServiceByName(s.name).methods}


# --- the matrix --------------------------------------------------------------------------------

def _credentials() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """name → (roles, regions): each role alone, in every kind of region list the config lets it
    name, and the whole sets a region's operator and the centre hold."""
    kinds = {
        RegionRule.EXACTLY_ONE: [("MY",), ("SG",)],
        RegionRule.NAMED: [("MY",), ("SG",), ("MY", "SG")],
        RegionRule.NAMED_OR_EVERY: [("MY",), ("SG",), ("MY", "SG"), ("*",)],
        RegionRule.EVERY: [("*",)],
    }
    creds = {f"{role}@{'+'.join(regions)}": ((role.value,), regions)
             for role in Role for regions in kinds[ROLE_REGIONS[role]]}
    everything_but_train = tuple(r.value for r in Role if r is not Role.TRAIN)
    creds["all-region-roles@MY"] = (everything_but_train, ("MY",))
    creds["centre@*"] = (("train", "statistics-read", "registry-read", "audit"), ("*",))
    return creds


CREDENTIALS = _credentials()


def _secret(name: str) -> str:
    return f"secret-{name}"


def _env(name: str) -> str:
    return "ROLE_TOKEN_" + "".join(c if c.isalnum() else "_" for c in name).upper()


# The oracle, written out here (not derived from federation/roles.py): per method, the role it needs
# and which credentials' regions may use it for region MY (the node's region, or the request's).
EXPECTED = {
    SERVING + "GetOnlineFeatures": ("lookup", lambda regions: regions == ("MY",)),
    SERVING + "Score": ("lookup", lambda regions: regions == ("MY",)),
    FEAST + "GetOnlineFeatures": ("lookup", lambda regions: regions == ("MY",)),
    FEAST + "Push": (None, lambda regions: False),
    FEAST_SERVING + "GetOnlineFeatures": ("lookup", lambda regions: regions == ("MY",)),
    FEAST_SERVING + "GetFeastServingInfo": ("lookup", lambda regions: regions == ("MY",)),
    FEAST + "WriteToOnlineStore": (None, lambda regions: False),
    DATASETS + "GetHistoricalFeatures": ("datasets", lambda regions: regions == ("MY",)),
    AGG + "Submit": ("publish", lambda regions: "MY" in regions),
    AGG + "GetGlobalStatistics": ("statistics-read", lambda regions: True),
    AGG + "Train": ("train", lambda regions: regions == ("*",)),
    AGG + "ListQuarantine": ("audit", lambda regions: regions == ("*",)),
    AGG + "DecideQuarantine": ("audit", lambda regions: regions == ("*",)),
    SEC + "OpenRound": ("train", lambda regions: regions == ("*",)),
    SEC + "GetRound": ("publish", lambda regions: "MY" in regions),
    SEC + "AdvertiseKeys": ("publish", lambda regions: "MY" in regions),
    SEC + "ShareKeys": ("publish", lambda regions: "MY" in regions),
    SEC + "SubmitMaskedInput": ("publish", lambda regions: "MY" in regions),
    SEC + "Unmask": ("publish", lambda regions: "MY" in regions),
    REG + "ListModels": ("registry-read", lambda regions: True),
    REG + "GetModel": ("registry-read", lambda regions: True),
    REG + "GetDeployment": ("registry-read", lambda regions: "MY" in regions or regions == ("*",)),
    REG + "Promote": ("promote", lambda regions: "MY" in regions),
    REG + "Rollback": ("promote", lambda regions: "MY" in regions),
    # a checklist belongs to the version, federation-wide: any promote credential (never "*")
    REG + "RecordReadiness": ("promote", lambda regions: True),
    REG + "GetAudit": ("audit", lambda regions: "MY" in regions or regions == ("*",)),
}

# a request per method, aimed at region MY; an admitted one may still fail (INVALID_ARGUMENT, NOT_FOUND)
REQUESTS: dict[str, bytes] = {
    SERVING + "GetOnlineFeatures": b"",
    SERVING + "Score": b"",
    FEAST + "GetOnlineFeatures": b"",
    FEAST + "Push": b"",
    FEAST_SERVING + "GetOnlineFeatures": b"",
    FEAST_SERVING + "GetFeastServingInfo": b"",
    FEAST + "WriteToOnlineStore": b"",
    DATASETS + "GetHistoricalFeatures": dpb.GetHistoricalFeaturesRequest(region="MY").SerializeToString(),
    AGG + "Submit": apb.Submission(region="MY", submission_id="my-stats-x").SerializeToString(),
    AGG + "GetGlobalStatistics": apb.GetGlobalStatisticsRequest().SerializeToString(),
    AGG + "Train": apb.TrainRequest(strategy="no-such-strategy").SerializeToString(),
    AGG + "ListQuarantine": apb.ListQuarantineRequest().SerializeToString(),
    AGG + "DecideQuarantine": apb.QuarantineDecision(submission_id="my-stats-x", action=apb.ACCEPT,
                                                     why="t").SerializeToString(),
    SEC + "OpenRound": apb.OpenRoundRequest(feature_service="none").SerializeToString(),
    SEC + "GetRound": apb.GetRoundRequest(round_id="none", region="MY").SerializeToString(),
    SEC + "AdvertiseKeys": apb.AdvertiseKeysRequest(round_id="none", region="MY").SerializeToString(),
    SEC + "ShareKeys": apb.ShareKeysRequest(round_id="none", region="MY").SerializeToString(),
    SEC + "SubmitMaskedInput": apb.MaskedInputRequest(round_id="none", region="MY").SerializeToString(),
    SEC + "Unmask": apb.UnmaskRequest(round_id="none", region="MY").SerializeToString(),
    REG + "ListModels": rpb.ListModelsRequest().SerializeToString(),
    REG + "GetModel": rpb.GetModelRequest(name="none", version=1).SerializeToString(),
    REG + "GetDeployment": rpb.GetDeploymentRequest(region="MY").SerializeToString(),
    REG + "Promote": rpb.PromoteRequest(name="none", version=1, region="MY", stage="shadow", why="t").SerializeToString(),
    REG + "Rollback": rpb.RollbackRequest(region="MY", stage="full", why="t").SerializeToString(),
    REG + "GetAudit": rpb.GetAuditRequest(region="MY").SerializeToString(),
    REG + "RecordReadiness": rpb.RecordReadinessRequest(name="none", version=1,
                                                        items={"documentation": "t"}).SerializeToString(),
}
STREAMING = {DATASETS + "GetHistoricalFeatures"}


@pytest.fixture(scope="module", params=["auto", "public"], ids=["lane", "public-api"])
def doors(request, tmp_path_factory, pki):
    """A served region MY (embedded online store) and the centre, one config, every credential.
    Twice: the node's lookups on the lane, and through grpc's public API (its fallback)."""
    tmp_path = tmp_path_factory.mktemp("roles")
    mp = pytest.MonkeyPatch()
    for name in CREDENTIALS:
        mp.setenv(_env(name), _secret(name))
    tokens = [{"name": name, "secret_env": _env(name), "roles": list(roles), "regions": list(regions)}
              for name, (roles, regions) in CREDENTIALS.items()]
    served = served_region(tmp_path, None, mp, customers=30, tokens=tokens, serving={"lookup_path": request.param})
    metrics = AggregatorMetrics()
    # the centre on mutual TLS, as everywhere; every call to it goes over region MY's certificate, the
    # region these requests name, so the only refusals are the roles' (the certificate's own checks
    # are test_border_tls's)
    raw = yaml.safe_load(served.config.source.read_text())
    config_path = tmp_path / "fed-mtls.yaml"
    config_path.write_text(yaml.safe_dump(with_mtls(raw, pki)))
    config = load_config(config_path)
    server, port, store = build_server(config, tmp_path / "centre" / "aggregator.duckdb", "127.0.0.1:0",
                                       metrics=metrics)
    server.start()
    try:
        yield (served.address, f"127.0.0.1:{port}", served.server.metrics, metrics,
               lambda options=(): centre_link(config, "MY", f"127.0.0.1:{port}").channel(options))
    finally:
        server.stop(1).wait()
        store.close()
        served.server.stop(1)
        mp.undo()


def _call(channel: grpc.Channel, method: str, metadata: tuple) -> grpc.StatusCode:
    try:
        if method in STREAMING:
            for _ in channel.unary_stream(method)(REQUESTS[method], metadata=metadata, timeout=60):
                pass
        else:
            channel.unary_unary(method)(REQUESTS[method], metadata=metadata, timeout=60)
    except grpc.RpcError as e:
        return e.code()
    return grpc.StatusCode.OK


def test_every_policy_has_a_row_in_the_matrix():
    guarded = {m for m, p in POLICIES.items() if p.scope is not Scope.OPEN}
    assert set(EXPECTED) == guarded == set(REQUESTS)


def test_what_the_servers_list_is_what_the_table_names(doors):
    node, centre, *_, centre_channel = doors
    for address, channel in ((node, grpc.insecure_channel(node)), (centre, centre_channel())):
        unlisted = _served_methods(channel) - set(POLICIES)
        assert not unlisted, f"{address} serves RPCs without an access policy: {sorted(unlisted)}"


def test_the_role_rpc_region_matrix_over_real_grpc(doors):
    node, *_, centre_channel = doors
    wrong = []
    with grpc.insecure_channel(node) as at_node, centre_channel() as at_centre:
        for method, (role, regions_ok) in EXPECTED.items():
            channel = at_centre if method.startswith((AGG, REG, SEC)) else at_node
            for name, (roles, regions) in CREDENTIALS.items():
                admitted = role is not None and role in roles and regions_ok(regions)
                code = _call(channel, method, (("authorization", f"Bearer {_secret(name)}"),))
                refused = code in REFUSED or (role is None and code == grpc.StatusCode.UNIMPLEMENTED)
                if admitted == refused or (refused and code == grpc.StatusCode.UNAUTHENTICATED):
                    wrong.append((method, name, code.name))
            for metadata in ((), (("authorization", "Bearer not-a-token"),), (("authorization", "Basic x"),)):
                code = _call(channel, method, metadata)
                if code != grpc.StatusCode.UNAUTHENTICATED and not (role is None and code == grpc.StatusCode.UNIMPLEMENTED):
                    wrong.append((method, metadata, code.name))
    assert not wrong, f"cells where admission differs from the policy: {wrong}"
    # who tried, counted on both sides of the border
    node_metrics, centre_metrics = doors[2], doors[3]
    assert node_metrics.stats.refusals[("PERMISSION_DENIED", "centre@*")] >= 3  # its row reads
    assert centre_metrics.registry.get_sample_value(
        "fedstore_centre_auth_refusals_total", {"code": "PERMISSION_DENIED", "caller": "lookup@MY"}) >= 9
    assert centre_metrics.registry.get_sample_value("fedstore_centre_calls_by_caller_total", {"caller": "centre@*"}) >= 1


def test_the_centre_reads_no_row_and_is_told_why(doors):
    node, *_ = doors
    with grpc.insecure_channel(node) as ch:
        for method in (SERVING + "GetOnlineFeatures", SERVING + "Score", FEAST + "GetOnlineFeatures",
                       DATASETS + "GetHistoricalFeatures"):
            call = ch.unary_stream(method) if method in STREAMING else ch.unary_unary(method)
            with pytest.raises(grpc.RpcError) as e:
                result = call(REQUESTS[method], metadata=(("authorization", f"Bearer {_secret('centre@*')}"),), timeout=30)
                list(result) if method in STREAMING else None
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
            # the centre holds no row role at all; a row role is never issued for '*' (config refuses it)
            assert "lacks role" in e.value.details() and "never holds a row role" in e.value.details()
            with pytest.raises(grpc.RpcError) as e:  # the region's own credential is admitted (then INVALID_ARGUMENT)
                result = call(REQUESTS[method], metadata=(("authorization", f"Bearer {_secret('all-region-roles@MY')}"),),
                              timeout=30)
                list(result) if method in STREAMING else None
            assert e.value.code() not in REFUSED


def test_a_credential_for_every_region_is_refused_rows_with_the_reason():
    """The config never issues a row role for '*'; were one made anyway, the node refuses it and says why."""
    from fedstore.federation.access import decide
    from fedstore.federation.errors import PermissionDenied
    from fedstore.federation.tokens import Caller

    smuggled = Caller("centre", ("*",), frozenset({Role.LOOKUP}))
    refusal = decide(smuggled, SERVING + "GetOnlineFeatures", region="MY")
    assert isinstance(refusal, PermissionDenied) and refusal.rule == "rows"
    assert str(refusal).startswith("rule rows: ") and "every region ('*')" in str(refusal)
    two = Caller("app", ("MY", "SG"), frozenset({Role.LOOKUP}))
    assert "bound to MY, SG" in str(decide(two, FEAST + "GetOnlineFeatures", region="MY"))
    assert decide(Caller("app", ("MY",), frozenset({Role.LOOKUP})), FEAST + "GetOnlineFeatures", region="MY") is None


def test_a_refused_call_at_the_centre_is_refused_before_its_message_is_read(doors):
    """A message over the centre's 4 MiB receive limit: a refused caller is told PERMISSION_DENIED,
    not RESOURCE_EXHAUSTED (which would mean the centre read it)."""
    *_, centre_channel = doors
    with centre_channel([("grpc.max_send_message_length", 16 << 20)]) as ch:
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary(AGG + "Submit")(b"\x0a" + b"\xff\xff\xff\x03" + b"x" * (8 << 20),
                                           metadata=(("authorization", f"Bearer {_secret('lookup@MY')}"),), timeout=30)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and "lacks role publish" in e.value.details()


def _rule(error: grpc.RpcError) -> str | None:
    """The rule (or, breaking none, the reason) a refusal names in its rich status (google.rpc.ErrorInfo
    of domain fedstore), read as any gRPC client reads it; None when it names none."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(error)  # None without one; raises if it disagrees with the call's status
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.domain == "fedstore":
            return info.reason
    return None


def test_a_refusal_carries_its_rule_to_the_caller_as_error_info(doors):
    """The rule a refusal broke travels as google.rpc.ErrorInfo.reason over real gRPC, from the node's
    lane (or its public-API path), its thread-pool services, and the centre; the centre's metrics
    count the same rule, taken from the exception."""
    node, _, _, centre_metrics, centre_channel = doors

    def md(name: str) -> tuple:
        return (("authorization", f"Bearer {_secret(name)}"),)

    with grpc.insecure_channel(node) as ch:
        with pytest.raises(grpc.RpcError) as e:  # a lookup: the lane's answer path (or the public one)
            ch.unary_unary(SERVING + "GetOnlineFeatures")(b"", metadata=md("lookup@SG"), timeout=30)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and e.value.details().startswith("rule rows: ")
        assert _rule(e.value) == "rows"
        with pytest.raises(grpc.RpcError) as e:  # a training-set stream, on grpc's own server
            list(ch.unary_stream(DATASETS + "GetHistoricalFeatures")(REQUESTS[DATASETS + "GetHistoricalFeatures"],
                                                                      metadata=md("datasets@SG"), timeout=30))
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and _rule(e.value) == "rows"
        with pytest.raises(grpc.RpcError) as e:  # no token: a refusal without a rule, with its reason
            ch.unary_unary(SERVING + "GetOnlineFeatures")(b"", timeout=30)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and _rule(e.value) == "TOKEN_MISSING"

    labels = {"region": "SG", "rule": "identity", "code": "PERMISSION_DENIED"}
    before = centre_metrics.registry.get_sample_value("fedstore_submissions_rejected_total", labels) or 0
    with centre_channel() as ch:  # region SG's statistics over region MY's certificate
        with pytest.raises(grpc.RpcError) as e:
            ch.unary_unary(AGG + "Submit")(apb.Submission(region="SG", submission_id="sg-stats-x").SerializeToString(),
                                           metadata=md("publish@MY+SG"), timeout=30)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and e.value.details().startswith("rule identity: ")
        assert _rule(e.value) == "identity"
        assert centre_metrics.registry.get_sample_value("fedstore_submissions_rejected_total", labels) == before + 1
        with pytest.raises(grpc.RpcError) as e:  # refused as it is parsed (wire.py), before Submit runs
            unknown_field = b"\xb8\x3e\x01"  # field 999 = 1: no field of the contract
            ch.unary_unary(AGG + "Submit")(REQUESTS[AGG + "Submit"] + unknown_field, metadata=md("publish@MY"),
                                           timeout=30)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and _rule(e.value) == "unknown_fields"


def test_registry_reads_are_scoped_to_the_callers_regions(doors):
    *_, centre_channel = doors
    from fedstore.proto.fedstore.registry.v1 import registry_pb2_grpc

    def md(name: str) -> tuple:
        return (("authorization", f"Bearer {_secret(name)}"),)

    with centre_channel() as ch:
        stub = registry_pb2_grpc.RegistryStub(ch)
        for region, who in (("MY", "promote@MY"), ("SG", "promote@SG")):  # a refused rollback: one event each
            with pytest.raises(grpc.RpcError):
                stub.Rollback(rpb.RollbackRequest(region=region, stage="canary_25", why=f"scoped-{region}"),
                              metadata=md(who), timeout=10)
        mine = stub.GetAudit(rpb.GetAuditRequest(), metadata=md("audit@MY"), timeout=10).events
        assert {e.region for e in mine} == {"MY"} and "scoped-MY" in {e.why for e in mine}
        everyone = stub.GetAudit(rpb.GetAuditRequest(), metadata=md("audit@*"), timeout=10).events
        assert {"scoped-MY", "scoped-SG"} <= {e.why for e in everyone}
        for method, request in (("GetAudit", rpb.GetAuditRequest(region="SG")),
                                ("GetDeployment", rpb.GetDeploymentRequest(region="SG"))):
            who = "audit@MY" if method == "GetAudit" else "registry-read@MY"
            with pytest.raises(grpc.RpcError) as e:
                getattr(stub, method)(request, metadata=md(who), timeout=10)
            assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and "may not act on region 'SG'" in e.value.details()
        assert stub.GetDeployment(rpb.GetDeploymentRequest(region="SG"), metadata=md("registry-read@*"), timeout=10).region == "SG"


def test_a_served_method_missing_from_the_table_is_refused_to_every_caller(tmp_path, monkeypatch):
    """Deny by default: a service wired behind the guard whose method has no policy row is refused
    even to a caller holding every role it may hold."""
    monkeypatch.setenv("ALL_MY", "all-my-secret")
    config_path = tmp_path / "fed.yaml"
    config_path.write_text(
        "federation: {name: t}\n"
        "regions:\n"
        "  - {code: MY, jurisdiction: Malaysia, law: PDPA-MY, timezone: Asia/Kuala_Lumpur, data_dir: data/MY,\n"
        "     online_store: {type: sqlite}, serving_address: 127.0.0.1:50998}\n"
        "auth: {tokens: [{name: all-my, secret_env: ALL_MY, regions: [MY],\n"
        "                 roles: [lookup, datasets, publish, statistics-read, registry-read, promote, audit]}]}\n")
    book = TokenBook(load_config(config_path).tokens)
    echo = grpc.method_handlers_generic_handler("test.Unlisted", {"Echo": grpc.unary_unary_rpc_method_handler(
        lambda request, context: request)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((AccessGuard((echo,), book, "MY"),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as ch, pytest.raises(grpc.RpcError) as e:
            ch.unary_unary("/test.Unlisted/Echo")(b"hi", metadata=(("authorization", "Bearer all-my-secret"),), timeout=10)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "rule policy" in e.value.details() and "deny by default" in e.value.details()
    finally:
        server.stop(None)


def test_the_centre_counts_every_call_by_method_and_code_and_reports_its_process(doors):
    """Request counts and latency per method and status (the guard's refusals included), process
    metrics, and per-region series at zero before their first event."""
    *_, centre_metrics, centre_channel = doors
    reg = centre_metrics.registry
    method = REG + "ListModels"
    assert method in REQUESTS

    def count(code: str) -> float:
        return reg.get_sample_value("fedstore_centre_requests_total", {"method": method, "code": code}) or 0.0

    ok, denied = count("OK"), count("PERMISSION_DENIED")
    seen = reg.get_sample_value("fedstore_centre_request_seconds_count", {"method": method}) or 0.0
    with centre_channel() as channel:
        assert _call(channel, method, (("authorization", f"Bearer {_secret('centre@*')}"),)) == grpc.StatusCode.OK
        refused = _call(channel, method, (("authorization", f"Bearer {_secret('lookup@MY')}"),))
    assert refused in REFUSED
    assert refused == grpc.StatusCode.PERMISSION_DENIED  # a known token without the role
    assert count("OK") == ok + 1 and count("PERMISSION_DENIED") == denied + 1
    assert reg.get_sample_value("fedstore_centre_request_seconds_count", {"method": method}) == seen + 2
    # a method nobody serves gets no series: made-up names cannot grow the metrics
    with centre_channel() as channel:
        with pytest.raises(grpc.RpcError) as err:
            channel.unary_unary("/fedstore.registry.v1.Registry/NoSuchMethod")(b"", timeout=30)
        assert err.value.code() in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.UNAUTHENTICATED)
    assert not any(s.labels.get("method", "").endswith("NoSuchMethod")
                   for m in reg.collect() for s in m.samples)
    assert reg.get_sample_value("process_cpu_seconds_total") is not None  # the process itself
    assert reg.get_sample_value("fedstore_submissions_accepted_total", {"region": "SG", "kind": "evaluation"}) == 0
