"""Every refusal carries a machine-readable reason: ``google.rpc.ErrorInfo{reason, domain="fedstore"}``
in its rich status, the rule it broke or, when it broke none, an UPPER_SNAKE reason from the table
in docs/clients.md.

Over real gRPC with the generated stubs: a served region (lookups on the lane and through grpc's
public API) and a real centre on mutual TLS, one parametrised case per kind of refusal. And, read
from the source: every refusal the servers' packages raise names its rule or reason (at the raise,
or once for its class), and the docs' table names exactly the reasons the code gives.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import grpc
import pytest
import yaml
from feast.protos.feast.serving import ServingService_pb2, ServingService_pb2_grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from border import with_mtls
from fedstore.aggregator.intake.server import build_server
from fedstore.federation import load_config
from fedstore.federation.channels import centre_link
from fedstore.federation.error_boundary import DOMAIN
from fedstore.federation.errors import FedstoreError
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2 as apb
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2_grpc
from fedstore.proto.fedstore.datasets.v1 import datasets_pb2 as dpb
from fedstore.proto.fedstore.datasets.v1 import datasets_pb2_grpc
from fedstore.proto.fedstore.registry.v1 import registry_pb2 as rpb
from fedstore.proto.fedstore.registry.v1 import registry_pb2_grpc
from fedstore.proto.fedstore.serving.v1 import serving_pb2 as spb
from fedstore.proto.fedstore.serving.v1 import serving_pb2_grpc
from serving_fixtures import TOKENS, served_region

ROOT = Path(__file__).parents[1]
SERVER_PACKAGES = ("serving", "aggregator", "federation", "regions")
CENTRE_TOKEN = "s3cret-centre"


@dataclass(frozen=True)
class Doors:
    node: grpc.Channel  # region MY's serving node
    centre: grpc.Channel  # the centre, over region MY's certificate


@pytest.fixture(scope="module", params=["auto", "public"], ids=["lane", "public-api"])
def doors(request, tmp_path_factory, pki) -> Iterator[Doors]:
    tmp_path = tmp_path_factory.mktemp("reasons")
    mp = pytest.MonkeyPatch()
    mp.setenv("TOKEN_CENTRE", CENTRE_TOKEN)
    tokens = [
        {"name": "fraud-app", "secret_env": "TOKEN_FRAUD", "roles": ["lookup", "datasets"], "regions": ["MY"]},
        {"name": "sg-only", "secret_env": "TOKEN_SG", "roles": ["lookup", "datasets"], "regions": ["SG"]},
        {"name": "centre", "secret_env": "TOKEN_CENTRE", "roles": ["train", "statistics-read", "registry-read"],
         "regions": ["*"]},
    ]
    served = served_region(tmp_path, None, mp, customers=20, tokens=tokens, serving={"lookup_path": request.param})
    config_path = tmp_path / "fed-mtls.yaml"
    config_path.write_text(yaml.safe_dump(with_mtls(yaml.safe_load(served.config.source.read_text()), pki)))
    config = load_config(config_path)
    server, port, store = build_server(config, tmp_path / "centre" / "aggregator.duckdb", "127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(served.address) as node, \
                centre_link(config, "MY", f"127.0.0.1:{port}").channel() as centre:
            yield Doors(node, centre)
    finally:
        server.stop(1).wait()
        store.close()
        served.server.stop(1)
        mp.undo()


def _bearer(secret: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {secret}"),)


APP, SG_APP, CENTRE = _bearer(TOKENS["fraud-app"]), _bearer(TOKENS["sg-only"]), _bearer(CENTRE_TOKEN)


def _customers(*ids: int) -> dict[str, spb.EntityColumn]:
    return {"customer_id": spb.EntityColumn(int64_values=spb.Int64List(values=list(ids)))}


def _lookup(metadata: tuple = APP, **request) -> Callable[[Doors], object]:
    return lambda d: serving_pb2_grpc.FeatureServingStub(d.node).GetOnlineFeatures(
        spb.GetOnlineFeaturesRequest(**request), metadata=metadata, timeout=30)


def _refs(*refs: str) -> dict:
    return {"feature_refs": spb.FeatureList(refs=list(refs)), "entities": _customers(1)}


def _training_set(**request) -> Callable[[Doors], object]:
    return lambda d: list(datasets_pb2_grpc.HistoricalFeaturesStub(d.node).GetHistoricalFeatures(
        dpb.GetHistoricalFeaturesRequest(**request), metadata=APP, timeout=30))


# (what the caller does, the status it gets, the reason its ErrorInfo carries)
CASES: dict[str, tuple[Callable[[Doors], object], grpc.StatusCode, str]] = {
    # the token guard, before any message is read
    "no token": (_lookup(metadata=()), grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING"),
    "unknown token": (_lookup(metadata=_bearer("nobody's")), grpc.StatusCode.UNAUTHENTICATED, "TOKEN_UNKNOWN"),
    "another scheme": (_lookup(metadata=(("authorization", "Basic Zm9vOmJhcg=="),)),
                       grpc.StatusCode.UNAUTHENTICATED, "UNSUPPORTED_AUTH_SCHEME"),
    "another region's credential (a rule)": (_lookup(metadata=SG_APP), grpc.StatusCode.PERMISSION_DENIED, "rows"),
    # the lookup's request
    "bytes that are no request": (lambda d: d.node.unary_unary("/fedstore.serving.v1.FeatureServing/GetOnlineFeatures")(
        b"\xff\xff\xff", metadata=APP, timeout=30), grpc.StatusCode.INVALID_ARGUMENT, "MALFORMED_REQUEST"),
    "unknown feature service": (_lookup(feature_service="no_such_service", entities=_customers(1)),
                                grpc.StatusCode.NOT_FOUND, "UNKNOWN_FEATURE_SERVICE"),
    "unknown feature view": (_lookup(**_refs("no_such_view:spend_7d")), grpc.StatusCode.NOT_FOUND,
                             "UNKNOWN_FEATURE_VIEW"),
    "unknown feature": (_lookup(**_refs("customer_transactions:no_such_feature")), grpc.StatusCode.NOT_FOUND,
                        "UNKNOWN_FEATURE"),
    "a ref without a view": (_lookup(**_refs("spend_7d")), grpc.StatusCode.INVALID_ARGUMENT, "INVALID_FEATURE_REF"),
    "no features": (_lookup(entities=_customers(1)), grpc.StatusCode.INVALID_ARGUMENT, "NO_FEATURES"),
    "no entities": (_lookup(feature_service="fraud_scoring"), grpc.StatusCode.INVALID_ARGUMENT, "NO_ENTITIES"),
    "missing join key": (_lookup(feature_service="fraud_scoring",
                                 entities={"driver_id": spb.EntityColumn(int64_values=spb.Int64List(values=[1]))}),
                         grpc.StatusCode.INVALID_ARGUMENT, "MISSING_JOIN_KEY"),
    "too many entities": (_lookup(feature_service="fraud_scoring", entities=_customers(*range(501))),  # limit 500
                          grpc.StatusCode.INVALID_ARGUMENT, "TOO_MANY_ENTITIES"),
    "Feast's API, unknown feature service": (
        lambda d: ServingService_pb2_grpc.ServingServiceStub(d.node).GetOnlineFeatures(
            ServingService_pb2.GetOnlineFeaturesRequest(feature_service="no_such_service"), metadata=APP, timeout=30),
        grpc.StatusCode.NOT_FOUND, "UNKNOWN_FEATURE_SERVICE"),
    "Score without models": (lambda d: serving_pb2_grpc.FeatureServingStub(d.node).Score(
        spb.ScoreRequest(feature_service="fraud_scoring", entities=_customers(1)), metadata=APP, timeout=30),
        grpc.StatusCode.FAILED_PRECONDITION, "MODELS_NOT_CONFIGURED"),
    # the node's other services
    "training set of no region": (_training_set(feature_service="fraud_scoring"),
                                  grpc.StatusCode.INVALID_ARGUMENT, "REGION_REQUIRED"),
    "training set of another region": (_training_set(region="SG", feature_service="fraud_scoring"),
                                       grpc.StatusCode.PERMISSION_DENIED, "OTHER_REGION"),
    "training set in huge chunks": (_training_set(region="MY", feature_service="fraud_scoring",
                                                  max_chunk_rows=4_000_000_000),
                                    grpc.StatusCode.INVALID_ARGUMENT, "CHUNK_ROWS_TOO_LARGE"),
    "health of an unknown service": (lambda d: health_pb2_grpc.HealthStub(d.node).Check(
        health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=30),
        grpc.StatusCode.NOT_FOUND, "UNKNOWN_HEALTH_SERVICE"),
    # the centre
    "centre, no token": (lambda d: aggregator_pb2_grpc.AggregatorStub(d.centre).GetGlobalStatistics(
        apb.GetGlobalStatisticsRequest(), timeout=30), grpc.StatusCode.UNAUTHENTICATED, "TOKEN_MISSING"),
    "centre, a month that is none": (lambda d: aggregator_pb2_grpc.AggregatorStub(d.centre).GetGlobalStatistics(
        apb.GetGlobalStatisticsRequest(period="2026-13"), metadata=CENTRE, timeout=30),
        grpc.StatusCode.INVALID_ARGUMENT, "INVALID_PERIOD"),
    "centre, unknown strategy": (lambda d: aggregator_pb2_grpc.AggregatorStub(d.centre).Train(
        apb.TrainRequest(feature_service="fraud_scoring", strategy="no_such_strategy"), metadata=CENTRE, timeout=30),
        grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_STRATEGY"),
    "centre, nothing to train from": (lambda d: aggregator_pb2_grpc.AggregatorStub(d.centre).Train(
        apb.TrainRequest(feature_service="fraud_scoring", strategy="lda"), metadata=CENTRE, timeout=30),
        grpc.StatusCode.FAILED_PRECONDITION, "NO_TRAINING_STATISTICS"),
    "registry, unknown model": (lambda d: registry_pb2_grpc.RegistryStub(d.centre).GetModel(
        rpb.GetModelRequest(name="no_such_model", version=1), metadata=CENTRE, timeout=30),
        grpc.StatusCode.NOT_FOUND, "UNKNOWN_MODEL_VERSION"),
}


def _error_info(error: grpc.RpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(error)  # raises if it disagrees with the call's own code and message
    assert status is not None, f"no google.rpc.Status in the trailers of {error.code()}: {error.details()}"
    infos = []
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            infos.append((info.reason, info.domain))
    return infos


@pytest.mark.parametrize("case", list(CASES))
def test_every_kind_of_refusal_carries_its_reason_as_error_info(doors, case):
    call, code, reason = CASES[case]
    with pytest.raises(grpc.RpcError) as e:
        call(doors)
    assert (e.value.code(), e.value.details() != "") == (code, True), e.value.details()
    assert _error_info(e.value) == [(reason, DOMAIN)]


# --- read from the source -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Raise:
    where: str  # path:line
    cls: type[FedstoreError]
    names: tuple[str, ...]  # the string constants of its rule= and reason= arguments
    named: bool  # it passes rule= or reason=


def _module_name(path: Path) -> str:
    return "fedstore." + ".".join(path.relative_to(ROOT).with_suffix("").parts)


def _refusals() -> Iterator[Raise]:
    """Every call in the servers' packages that builds a FedstoreError (its class resolved by
    importing the module that calls it)."""
    import importlib

    for package in SERVER_PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name.endswith("_pb2.py") or path.name.endswith("_pb2_grpc.py"):
                continue
            tree = ast.parse(path.read_text())
            module = None
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call) or not isinstance(node.func, (ast.Name, ast.Attribute)):
                    continue
                name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
                if not name[:1].isupper():
                    continue
                module = module or importlib.import_module(_module_name(path))
                try:
                    cls = eval(ast.unparse(node.func), vars(module))  # noqa: S307 - a dotted name in our own module
                except (NameError, AttributeError):
                    continue  # a local name (a class defined in a function): not an error class here
                if not (isinstance(cls, type) and issubclass(cls, FedstoreError)):
                    continue
                given = [k.value for k in node.keywords if k.arg in ("rule", "reason")]
                names = tuple(c.value for v in given for c in ast.walk(v)
                              if isinstance(c, ast.Constant) and isinstance(c.value, str))
                yield Raise(f"{path.relative_to(ROOT)}:{node.lineno}", cls, names, bool(given))


def _class_reasons() -> set[str]:
    """The REASON of every FedstoreError class the servers' packages define."""
    seen: set[str] = set()
    todo = [FedstoreError]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__dict__.get("REASON") and cls.__module__.startswith(tuple(f"fedstore.{p}." for p in SERVER_PACKAGES)):
            seen.add(cls.REASON)
    return seen


REASON_ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]+)` \|", re.M)


def test_every_refusal_the_servers_raise_names_its_rule_or_reason_and_the_docs_name_each_reason():
    raises = list(_refusals())
    assert len(raises) > 250  # the scan finds the refusals (about 320 when written)
    unnamed = [r.where for r in raises if not r.named and r.cls.REASON is None]
    assert not unnamed, (f"refusals that name no reason (pass reason=\"UPPER_SNAKE\", or give the class a REASON, "
                         f"and add it to docs/clients.md): {unnamed}")
    reasons = {n for r in raises if r.named for n in r.names if n.isupper()} | _class_reasons()
    bad = sorted(n for n in reasons if not re.fullmatch(r"[A-Z][A-Z0-9_]{0,61}[A-Z0-9]", n))
    assert not bad
    documented = set(REASON_ROW.findall((ROOT / "docs" / "clients.md").read_text()))
    assert sorted(reasons - documented) == [], "reasons missing from docs/clients.md's table"
    assert sorted(documented - reasons) == [], "docs/clients.md names reasons no refusal gives"
