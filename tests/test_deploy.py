"""The Kubernetes manifests: current with the federation config, valid against the Kubernetes
schema (offline, two releases), admitted by the restricted Pod Security profile, one namespace per
region whose pods see only that region and whose NetworkPolicies let it reach its Redis and the
centre's port alone, TLS files mounted where the config names them, and commands the CLI accepts."""

from __future__ import annotations

import copy
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pod_security import violations
from fedstore.federation import load_config
from fedstore.cli.entry import build_parser
from fedstore.cli.deploy_commands import TLS_ROOT, write_manifests

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "deploy" / "k8s"
KINDS = {"Namespace": "v1", "ConfigMap": "v1", "PersistentVolumeClaim": "v1", "Service": "v1",
         "Deployment": "apps/v1", "CronJob": "batch/v1", "NetworkPolicy": "networking.k8s.io/v1"}
# the oldest release still widely run, and the newest the package ships
SCHEMA_VERSIONS = ("1.29", kubernetes_validate.latest_version())


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _templates(doc: dict) -> list[dict]:
    if doc["kind"] == "Deployment":
        return [doc["spec"]["template"]]
    if doc["kind"] == "CronJob":
        return [doc["spec"]["jobTemplate"]["spec"]["template"]]
    return []


def _pod_specs(doc: dict) -> list[dict]:
    return [t["spec"] for t in _templates(doc)]


def test_committed_manifests_are_current(tmp_path):
    config = load_config(ROOT / "fedstore.yaml")
    fresh = {p.name: p.read_text() for p in write_manifests(config, tmp_path)}
    committed = {p.name: p.read_text() for p in COMMITTED.glob("*.yaml")}
    assert fresh == committed, "deploy/k8s is stale: run `fedstore deploy k8s`"


def test_a_manifest_that_cannot_be_written_is_one_line_and_others_stay_whole(tmp_path):
    from fedstore.regions.errors import RegionError

    config = load_config(ROOT / "fedstore.yaml")
    first = write_manifests(config, tmp_path)
    before = {p.name: p.read_text() for p in first}
    (tmp_path / "centre.yaml").unlink()
    (tmp_path / "centre.yaml").mkdir()  # in the way: the centre's manifest cannot replace it
    with pytest.raises(RegionError, match=r"cannot write .*centre\.yaml: Is a directory"):
        write_manifests(config, tmp_path)
    assert {p.name: p.read_text() for p in tmp_path.glob("*.yaml") if p.is_file()} == {
        k: v for k, v in before.items() if k != "centre.yaml"}
    assert not list(tmp_path.glob(".*.tmp"))  # nothing half-written left beside them


def test_manifests_are_structurally_valid_and_regions_are_isolated(tmp_path):
    config = load_config(ROOT / "fedstore.yaml")
    parser = build_parser()
    namespaces = set()
    for path in sorted(COMMITTED.glob("*.yaml")):
        docs = _docs(path)
        (ns_doc,) = [d for d in docs if d["kind"] == "Namespace"]
        ns = ns_doc["metadata"]["name"]
        assert ns not in namespaces
        namespaces.add(ns)
        claims = {d["metadata"]["name"] for d in docs if d["kind"] == "PersistentVolumeClaim"}
        maps = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
        for d in docs:
            assert d["apiVersion"] == KINDS[d["kind"]], (path.name, d["kind"])
            assert d["metadata"]["name"]
            if d["kind"] != "Namespace":
                assert d["metadata"]["namespace"] == ns  # nothing reaches into another namespace
            if d["kind"] == "Deployment":
                assert d["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
            for spec in _pod_specs(d):
                for vol in spec["volumes"]:
                    assert vol.get("persistentVolumeClaim", {}).get("claimName", "fedstore-data") in claims
                    assert vol.get("configMap", {}).get("name", "fedstore-config") in maps
                for c in spec["containers"]:
                    assert c["command"] == ["fedstore"]
                    try:
                        parser.parse_args(c["args"])  # a real sub-command with arguments it accepts
                    except SystemExit:
                        pytest.fail(f"{path.name}: `fedstore {shlex.join(c['args'])}` is not a valid command")
        if path.name == "centre.yaml":
            continue
        code = path.stem.split("-")[1].upper()
        region = config.region(code)
        embedded = tmp_path / f"{code}.yaml"
        embedded.write_text(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["fedstore.yaml"])
        seen = load_config(embedded)  # a valid federation config …
        assert seen.codes == (code,)  # … that names this region only
        port = int(region.serving_address.rpartition(":")[2])
        service = next(d for d in docs if d["kind"] == "Service")
        assert service["spec"]["ports"][0]["port"] == port
        assert service["spec"]["clusterIP"] == "None"  # headless: clients balance over every pod
        deployment = next(d for d in docs if d["kind"] == "Deployment")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["ports"][0]["containerPort"] == port
        assert container["readinessProbe"]["grpc"]["port"] == port  # the standard gRPC health check
        jobs = {d["metadata"]["name"] for d in docs if d["kind"] == "CronJob"}
        assert {"materialize", "publish-stats", "send-stats", "drift", "score-drift", "retrain-publish",
                "retrain-shadow"} <= jobs
        others = [c for c in config.codes if c != code]
        assert not any(f"fedstore-{o.lower()}" in path.read_text() for o in others)
    assert namespaces == {f"fedstore-{c.lower()}" for c in config.codes} | {"fedstore-centre"}
    assert {d["metadata"]["name"] for d in _docs(COMMITTED / "centre.yaml") if d["kind"] == "CronJob"} == {"retrain-train"}


def _cron_args(docs: list[dict], name: str) -> tuple[dict, list[str]]:
    (job,) = [d for d in docs if d["kind"] == "CronJob" and d["metadata"]["name"] == name]
    return job, _pod_specs(job)[0]["containers"][0]["args"]


def test_train_runs_in_the_centre_and_shadow_in_each_region_an_hour_later(production):
    for where, files in (("committed", _committed()), ("production", production)):
        train, args = _cron_args(files["centre"], "retrain-train")
        assert train["metadata"]["namespace"] == "fedstore-centre"
        assert args[2:5] == ["retrain", "train", "--address"] and args[5] == "aggregator.fedstore-centre.svc:50100"
        minute, hour, *rest = train["spec"]["schedule"].split()
        regions = [n for n in files if n != "centre"]
        for name in regions:
            shadow, sargs = _cron_args(files[name], "retrain-shadow")
            code = name.split("-")[1].upper()
            assert sargs[2:6] == ["retrain", "shadow", "--region", code], where
            assert shadow["metadata"]["namespace"] == f"fedstore-{code.lower()}"
            assert shadow["spec"]["timeZone"] == train["spec"]["timeZone"] == "Etc/UTC"  # one clock for both
            s_minute, s_hour, *s_rest = shadow["spec"]["schedule"].split()
            assert (s_minute, int(s_hour), s_rest) == (minute, int(hour) + 1, rest), where
            # the same run as the region's publish step names (ε and window length)
            _, pargs = _cron_args(files[name], "retrain-publish")
            assert sargs[sargs.index("--epsilon"):] == pargs[pargs.index("--epsilon"):] == args[args.index("--epsilon"):]
            # shadow needs none of the region's data: no data volume (so it asks the centre for its latest)
            assert "data" not in {v["name"] for v in _pod_specs(shadow)[0]["volumes"]}
            # and its credential is the region's own promote credential, from the Secret, never a literal
            c = _pod_specs(shadow)[0]["containers"][0]
            assert c["envFrom"] == [{"secretRef": {"name": "fedstore-secrets"}}]
            assert all("value" not in e or "TOKEN" not in e["name"] for e in c["env"])
        assert "data" not in {v["name"] for v in _pod_specs(train)[0]["volumes"]}
        assert _pod_specs(train)[0]["containers"][0]["envFrom"] == [{"secretRef": {"name": "fedstore-secrets"}}]


def test_the_jobs_configs_hold_the_credentials_their_steps_use(tmp_path):
    from fedstore.federation.roles import Role

    files = _committed()
    for name, docs in files.items():
        embedded = tmp_path / f"{name}.yaml"
        embedded.write_text(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["fedstore.yaml"])
        seen = load_config(embedded)
        if name == "centre":  # train as the centre: its train and registry-read credential, federation-wide
            (trainer,) = [t for t in seen.tokens if Role.TRAIN in t.roles]
            assert trainer.regions == ("*",) and Role.REGISTRY_READ in trainer.roles
            continue
        (code,) = seen.codes
        promoters = [t for t in seen.tokens if Role.PROMOTE in t.roles]
        assert promoters and all(t.regions == (code,) for t in promoters)  # the region's own, no other's
        assert any(Role.REGISTRY_READ in t.roles and t.regions == (code,) for t in seen.tokens)
        assert seen.aggregator.address == "aggregator.fedstore-centre.svc:50100"


def test_a_region_config_holds_its_own_promote_credential_for_its_shadow_job_and_no_other(production, tmp_path):
    held = {}
    for name, docs in production.items():
        embedded = tmp_path / f"{name}.yaml"
        embedded.write_text(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["fedstore.yaml"])
        held[name] = {t.name for t in load_config(embedded).tokens}
    assert "promote-sg" in held["region-sg"]
    assert not any("promote-sg" in held[n] for n in ("region-my", "region-hk"))


def _selects(selector: dict, labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector (matchLabels, matchExpressions with In) selects ``labels``."""
    if not selector:
        return True
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for e in selector.get("matchExpressions", []):
        assert e["operator"] == "In", e
        if labels.get(e["key"]) not in e["values"]:
            return False
    return True


def _pod_labels(docs: list[dict]) -> dict[str, dict[str, str]]:
    return {d["metadata"]["name"]: t["metadata"]["labels"] for d in docs for t in _templates(d)}


def test_exactly_the_border_jobs_may_reach_the_centre(production):
    for where, files in (("committed", _committed()), ("production", production)):
        for name, docs in files.items():
            pods = _pod_labels(docs)
            to_centre = [p["podSelector"] for p in _policies(docs).values() for rule in p.get("egress", [])
                         if any("podSelector" in t for t in rule.get("to", []))]
            reaching = {pod for pod, labels in pods.items() if any(_selects(s, labels) for s in to_centre)}
            expected = {"retrain-train"} if name == "centre" else {"send-stats", "retrain-shadow"}
            assert reaching == expected, (where, name)
            if name == "centre":  # and the aggregator admits the train job's pods on its port
                ingress = _policies(docs)["allow-region-ingress"]["ingress"][0]["from"]
                admitted = {pod for pod, labels in pods.items()
                            if any(_selects(f.get("podSelector", {}), labels) for f in ingress if "podSelector" in f)}
                assert admitted == {"retrain-train"}



def _reaching_centre(docs: list[dict]) -> set[str]:
    pods = _pod_labels(docs)
    to_centre = [p["podSelector"] for p in _policies(docs).values() for rule in p.get("egress", [])
                 if any("podSelector" in t for t in rule.get("to", []))]
    return {pod for pod, labels in pods.items() if any(_selects(s, labels) for s in to_centre)}


def test_score_drift_runs_daily_in_each_region_and_stays_inside_it_unless_it_rolls_canaries_back(production, tmp_path):
    parser = build_parser()
    for where, files in (("committed", _committed()), ("production", production)):
        for name, docs in files.items():
            if name == "centre":
                continue
            code = name.split("-")[1].upper()
            job, args = _cron_args(docs, "score-drift")
            drift, _ = _cron_args(docs, "drift")
            # no rollback, no token; a region that has logged no score yet is not a failed job
            assert args[2:] == ["region", "score-drift", "--region", code, "--allow-empty"], where
            assert parser.parse_args(args).handler.__name__ == "cmd_score_drift"
            # yesterday's whole local day, after the feature drift, on the region's clock
            assert job["spec"]["timeZone"] == drift["spec"]["timeZone"] != "Etc/UTC"
            assert job["spec"]["schedule"] == "30 6 * * *" and drift["spec"]["schedule"] == "0 6 * * *"
            spec = _pod_specs(job)[0]
            assert "data" in {v["name"] for v in spec["volumes"]}  # it reads the prediction log where it lies
            assert _tls_volume(spec) is None  # no client certificate: it cannot cross the border …
            assert "score-drift" not in _reaching_centre(docs), (where, name)  # … nor reach the centre
    # with the config's rollback switch on, score-drift crosses the border (to roll a canary back) over
    # the region's own certificate and promote credential, and no other job newly does
    source = tmp_path / "fedstore.yaml"
    source.write_text(PRODUCTION.replace(
        "    - {name: centre,",
        "    - {name: promote-my, secret_env: FEDSTORE_PROMOTE_MY, roles: [promote, registry-read], regions: [MY]}\n"
        "    - {name: promote-hk, secret_env: FEDSTORE_PROMOTE_HK, roles: [promote, registry-read], regions: [HK]}\n"
        "    - {name: centre,") + "monitoring: {scores: {rollback_canary: true}}\n")
    files = {p.stem: _docs(p) for p in write_manifests(load_config(source), tmp_path / "k8s")}
    for name, docs in files.items():
        if name == "centre":
            assert _reaching_centre(docs) == {"retrain-train"}
            continue
        code = name.split("-")[1].upper()
        assert _reaching_centre(docs) == {"send-stats", "retrain-shadow", "score-drift"}, name
        job, args = _cron_args(docs, "score-drift")
        assert args[2:] == ["region", "score-drift", "--region", code, "--allow-empty", "--token-env",
                            f"FEDSTORE_PROMOTE_{code}"]
        assert parser.parse_args(args).handler.__name__ == "cmd_score_drift"
        spec = _pod_specs(job)[0]
        assert {i["key"] for i in _tls_volume(spec)["items"]} == {"centre-client.crt", "centre-client.key",
                                                                  "centre-ca.crt"}
        assert violations(spec, None) == []
        embedded = tmp_path / f"{name}.yaml"
        embedded.write_text(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["fedstore.yaml"])
        seen = load_config(embedded)
        assert seen.monitoring.scores.rollback_canary  # the pod's config turns the rollback on …
        assert f"FEDSTORE_PROMOTE_{code}" in {t.secret_env for t in seen.tokens}  # … and carries its credential
        for d in docs:
            for version in SCHEMA_VERSIONS[:1]:
                kubernetes_validate.validate(d, version, strict=True)
    # a region that would have no credential to roll back with: refused in one line, nothing written
    from fedstore.regions.errors import RegionError

    source.write_text(PRODUCTION + "monitoring: {scores: {rollback_canary: true}}\n")
    with pytest.raises(RegionError, match=r"^monitoring.scores.rollback_canary is on, but region MY has no credential"):
        write_manifests(load_config(source), tmp_path / "refused")
    assert not list((tmp_path / "refused").glob("*.yaml"))

# A production-shaped federation: Redis by name, by IP and as a cluster; the border on mutual TLS; one
# region serving TLS; metrics on. The files need not exist: rendering only names them.
PRODUCTION = """
federation: {name: prod}
regions:
  - {code: MY, jurisdiction: Malaysia, law: PDPA-MY, timezone: Asia/Kuala_Lumpur, data_dir: data/MY,
     online_store: {type: redis, url: "redis://redis.my.internal:6380/0"}, serving_address: 10.0.0.1:50151,
     centre_tls: {cert: pki/my.crt, key: pki/my.key, ca: pki/ca.crt}}
  - {code: SG, jurisdiction: Singapore, law: PDPA-SG, timezone: Asia/Singapore, data_dir: data/SG,
     online_store: {type: redis, url: "redis://10.20.0.7:6379/1"}, serving_address: 10.0.0.2:50152,
     serving: {metrics_port: 9100, http_port: 6566, tls: {cert: pki/sg-serving.crt, key: pki/sg-serving.key}},
     centre_tls: {cert: pki/sg.crt, key: pki/sg.key, ca: pki/ca.crt}}
  - {code: HK, jurisdiction: Hong Kong, law: PDPO, timezone: Asia/Hong_Kong, data_dir: data/HK,
     online_store: {type: redis_cluster, nodes: ["hk-redis-0:7000", "hk-redis-1:7001"]},
     serving_address: 10.0.0.3:50157, centre_tls: {cert: pki/hk.crt, key: pki/hk.key, ca: pki/ca.crt}}
aggregator:
  address: centre.example:50100
  metrics_port: 9200
  tls: {cert: pki/centre.crt, key: pki/centre.key, client_ca: pki/ca.crt}
  operator_tls: {cert: pki/operator.crt, key: pki/operator.key, ca: pki/ca.crt}
auth:
  tokens:
    - {name: app-sg, secret_env: FEDSTORE_APP_TOKEN_SG, roles: [lookup], regions: [SG]}
    - {name: promote-sg, secret_env: FEDSTORE_PROMOTE_SG, roles: [promote, registry-read], regions: [SG]}
    - {name: centre, secret_env: FEDSTORE_CENTRE_TOKEN, regions: ["*"], roles: [train, audit]}
"""
REDIS = {"fedstore-my": ({6380}, None), "fedstore-sg": ({6379}, ["10.20.0.7/32"]), "fedstore-hk": ({7000, 7001}, None)}


@pytest.fixture(scope="module")
def production(tmp_path_factory) -> dict[str, list[dict]]:
    root = tmp_path_factory.mktemp("production")
    (root / "fedstore.yaml").write_text(PRODUCTION)
    paths = write_manifests(load_config(root / "fedstore.yaml"), root / "k8s", storage_class="cephfs")
    return {p.stem: _docs(p) for p in paths}


def _committed() -> dict[str, list[dict]]:
    return {p.stem: _docs(p) for p in sorted(COMMITTED.glob("*.yaml"))}


def _every(production: dict[str, list[dict]]) -> list[tuple[str, dict]]:
    return [(f"{where}/{name}", d) for where, files in (("committed", _committed()), ("production", production))
            for name, docs in files.items() for d in docs]


def test_every_document_is_valid_against_the_kubernetes_schema_of_two_releases(production):
    # strict: an unknown field (a typo the API server would drop or refuse) fails too
    checked = 0
    for where, d in _every(production):
        for version in SCHEMA_VERSIONS:
            try:
                kubernetes_validate.validate(d, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                pytest.fail(f"{where}: {d['kind']} {d['metadata']['name']} invalid in Kubernetes {version}: "
                            f"{e.message} at {'.'.join(map(str, e.path))}")
            checked += 1
    assert checked > 2 * 100  # every file, every kind, both releases
    with pytest.raises(kubernetes_validate.ValidationError):  # the validator does refuse a broken document
        broken = copy.deepcopy(next(d for _, d in _every(production) if d["kind"] == "Deployment"))
        broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsNonRoot"] = "yes"
        kubernetes_validate.validate(broken, SCHEMA_VERSIONS[0], strict=True)


def test_every_pod_passes_the_restricted_pod_security_profile(production):
    pods = 0
    for where, d in _every(production):
        for template in _templates(d):
            assert violations(template["spec"], template["metadata"].get("annotations")) == [], where
            pods += 1
    # committed: 7 regions × 8 pods + the centre's 2; production: 3 regions
    assert pods == (7 * 8 + 2) + (3 * 8 + 2)
    for where, d in _every(production):
        if d["kind"] == "Namespace":  # and the cluster enforces it there
            assert d["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted", where


def test_every_container_has_a_read_only_root_resources_and_its_writable_paths(production):
    for where, d in _every(production):
        for spec in _pod_specs(d):
            volumes = {v["name"]: v for v in spec["volumes"]}
            assert spec["automountServiceAccountToken"] is False
            assert spec["securityContext"]["runAsUser"] > 0 and spec["securityContext"]["fsGroup"] > 0
            for c in spec["containers"]:
                assert c["securityContext"]["readOnlyRootFilesystem"] is True, where
                # writable: the data volume and the emptyDir the libraries' temporary files go to (the
                # retraining jobs that touch no stored data: the emptyDir alone)
                writable = {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"] if not m.get("readOnly")}
                dataless = c["name"] in ("retrain-train", "retrain-shadow")
                assert set(writable) == ({"/tmp"} if dataless else {"/var/lib/fedstore", "/tmp"}), where
                assert "emptyDir" in writable["/tmp"]
                env = {e["name"]: e["value"] for e in c["env"]}
                assert env["HOME"] == env["TMPDIR"] == c["workingDir"] == "/tmp"
                assert env["FEAST_USAGE"] == "False"
                assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and "memory" in c["resources"]["limits"]
                if d["kind"] == "Deployment":
                    assert c["startupProbe"]["failureThreshold"] * c["startupProbe"]["periodSeconds"] >= 60


def test_no_yaml_anchors_or_aliases_in_the_output(tmp_path):
    config = load_config(ROOT / "fedstore.yaml")
    for path in write_manifests(config, tmp_path):
        events = list(yaml.parse(path.read_text()))
        assert not [e for e in events if isinstance(e, yaml.AliasEvent) or getattr(e, "anchor", None)], path.name


def test_the_region_claim_names_the_storage_class(production):
    for name, docs in production.items():
        (claim,) = [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
        if name == "centre":  # one writer: the default (ReadWriteOnce) class
            assert claim["spec"]["accessModes"] == ["ReadWriteOnce"] and "storageClassName" not in claim["spec"]
        else:
            assert claim["spec"] == {**claim["spec"], "accessModes": ["ReadWriteMany"], "storageClassName": "cephfs"}
    for docs in _committed().values():
        for d in docs:
            if d["kind"] == "PersistentVolumeClaim" and d["spec"]["accessModes"] == ["ReadWriteMany"]:
                assert d["spec"]["storageClassName"] == "fedstore-rwx"  # the documented default


def _policies(docs: list[dict]) -> dict[str, dict]:
    return {d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "NetworkPolicy"}


def _egress(policies: dict[str, dict]) -> list[tuple[str, Any, Any]]:
    """Every allowed egress as (which pods, to whom, which ports)."""
    return [(yaml.safe_dump(p["podSelector"]), yaml.safe_dump(rule.get("to")), yaml.safe_dump(rule.get("ports")))
            for p in policies.values() for rule in p.get("egress", [])]


def test_each_region_namespace_denies_by_default_and_allows_exactly_its_border(production):
    dns = {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
           "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}
    for name, docs in production.items():
        if name == "centre":
            continue
        (namespace,) = [d for d in docs if d["kind"] == "Namespace"]
        ns = namespace["metadata"]["name"]
        code = ns.rpartition("-")[2].upper()
        policies = _policies(docs)
        assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
        ports, blocks = REDIS[ns]
        sender = {"matchLabels": {"app.kubernetes.io/name": "fedstore", "fedstore.io/region": code},
                  "matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In",
                                        "values": ["send-stats", "retrain-shadow"]}]}
        centre = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "fedstore-centre"}},
                   "podSelector": {"matchLabels": {"app.kubernetes.io/name": "fedstore",
                                                   "app.kubernetes.io/component": "aggregator"}}}]
        redis = {"ports": [{"protocol": "TCP", "port": p} for p in sorted(ports)]}
        if blocks:
            redis["to"] = [{"ipBlock": {"cidr": b}} for b in blocks]
        expected = [({}, dns["to"], dns["ports"]), (sender, centre, [{"protocol": "TCP", "port": 50100}]),
                    ({}, redis.get("to"), redis["ports"])]
        assert sorted(_egress(policies)) == sorted(
            (yaml.safe_dump(pods), yaml.safe_dump(to), yaml.safe_dump(p)) for pods, to, p in expected), ns
        # in: the serving pods' gRPC port (and metrics where on), nothing else
        ingress = [(p["podSelector"], rule) for p in policies.values() for rule in p.get("ingress", [])]
        (serving_sel, rule), = ingress
        assert serving_sel["matchLabels"]["app.kubernetes.io/component"] == "serving"
        service = next(d for d in docs if d["kind"] == "Service")
        serving_ports = {service["spec"]["ports"][0]["port"]} | ({9100, 6566} if code == "SG" else set())
        assert {p["port"] for p in rule["ports"]} == serving_ports
        # the HTTP API (SG's config turns it on) is a container port and a port of the Service too
        assert ({p["port"] for p in service["spec"]["ports"]} == {service["spec"]["ports"][0]["port"], 6566}) == (code == "SG")
        # the region's namespace carries the labels the centre admits
        centre_policy = _policies(production["centre"])["allow-region-ingress"]
        selector = centre_policy["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]
        assert selector.items() <= namespace["metadata"]["labels"].items()
        text = yaml.safe_dump_all(docs)
        for other in REDIS.keys() - {ns}:
            assert other not in text  # nothing of another region, not even its name


def test_the_centre_accepts_its_grpc_port_from_regions_and_its_train_job_only_and_sends_only_dns(production):
    policies = _policies(production["centre"])
    assert policies["default-deny"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    trainer = {"matchLabels": {"app.kubernetes.io/name": "fedstore", "app.kubernetes.io/component": "retrain-train"}}
    aggregator = {"matchLabels": {"app.kubernetes.io/name": "fedstore", "app.kubernetes.io/component": "aggregator"}}
    assert sorted((yaml.safe_dump(p["podSelector"]), yaml.safe_dump(r)) for p in policies.values()
                  for r in p.get("egress", [])) == sorted([
        (yaml.safe_dump({}), yaml.safe_dump({"to": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "kube-system"}}}], "ports": [{"protocol": "UDP", "port": 53},
                                                                      {"protocol": "TCP", "port": 53}]})),
        # the train job: the centre's own aggregator pods, on its port alone
        (yaml.safe_dump(trainer), yaml.safe_dump({"to": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "fedstore-centre"}}, "podSelector": aggregator}],
            "ports": [{"protocol": "TCP", "port": 50100}]}))])
    ingress = [r for p in policies.values() for r in p.get("ingress", [])]
    grpc = [r for r in ingress if r.get("from")]
    assert [r["ports"] for r in grpc] == [[{"protocol": "TCP", "port": 50100}]]
    assert grpc[0]["from"] == [{"namespaceSelector": {"matchLabels": {"app.kubernetes.io/name": "fedstore",
                                                                       "app.kubernetes.io/component": "region"}}},
                               {"podSelector": trainer}]
    # the one other way in: the metrics port the config turned on, which serves counters only
    assert [r for r in ingress if not r.get("from")] == [{"ports": [{"protocol": "TCP", "port": 9200}]}]


def _tls_volume(spec: dict) -> dict | None:
    return next((v["secret"] for v in spec["volumes"] if "secret" in v), None)


def test_tls_files_are_mounted_from_a_secret_and_the_config_names_them_there(production, tmp_path):
    for name, docs in production.items():
        embedded = tmp_path / f"{name}.yaml"
        embedded.write_text(next(d for d in docs if d["kind"] == "ConfigMap")["data"]["fedstore.yaml"])
        seen = load_config(embedded)
        pods = {d["metadata"]["name"]: _pod_specs(d)[0] for d in docs if _pod_specs(d)}
        mounted = {pod: {i["path"] for i in (_tls_volume(spec) or {}).get("items", [])} for pod, spec in pods.items()}
        for pod, spec in pods.items():
            tls = _tls_volume(spec)
            mounts = [m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "tls"]
            assert bool(tls) == bool(mounts)
            if tls:
                assert tls["secretName"] == "fedstore-tls" and mounts == [
                    {"name": "tls", "mountPath": TLS_ROOT, "readOnly": True}]

        def under_mount(pod: str, *paths: Path | None) -> None:
            for p in paths:
                assert p is not None and p.parent == Path(TLS_ROOT) and p.name in mounted[pod], (name, pod, p)

        if name == "centre":
            agg = seen.aggregator
            under_mount("aggregator", agg.tls_cert, agg.tls_key, agg.tls_client_ca)
            # the operator's key is not on the cluster: the train job has a certificate of its own, mounted in it alone
            under_mount("retrain-train", agg.operator_tls.cert, agg.operator_tls.key, agg.operator_tls.ca)
            assert {p.name for p in (agg.operator_tls.cert, agg.operator_tls.key)} == {"trainer.crt", "trainer.key"}
            assert [pod for pod, files in mounted.items() if "trainer.key" in files] == ["retrain-train"]
            assert all(r.centre_tls is None and r.serving.tls_cert is None for r in seen.regions)
            assert {r.online_store.type for r in seen.regions} == {"sqlite"}  # no region's Redis address
            assert "redis" not in docs[[d["kind"] for d in docs].index("ConfigMap")]["data"]["fedstore.yaml"]
            assert "tcpSocket" in pods["aggregator"]["containers"][0]["startupProbe"]  # mutual TLS: no gRPC probe
            continue
        (region,) = seen.regions
        under_mount("send-stats", region.centre_tls.cert, region.centre_tls.key, region.centre_tls.ca)
        under_mount("retrain-shadow", region.centre_tls.cert, region.centre_tls.key, region.centre_tls.ca)
        # only the pods that cross the border hold the region's client key
        assert sorted(pod for pod, files in mounted.items() if "centre-client.key" in files) == [
            "retrain-shadow", "send-stats"]
        serving = pods["serving"]["containers"][0]
        if region.code == "SG":
            under_mount("serving", region.serving.tls_cert, region.serving.tls_key)
            assert "tcpSocket" in serving["startupProbe"] and "tcpSocket" in serving["readinessProbe"]
        else:
            assert mounted["serving"] == set() and serving["startupProbe"]["grpc"]["port"] == serving["ports"][0][
                "containerPort"]


def _compliant() -> dict:
    docs = _docs(COMMITTED / "region-my.yaml")
    return copy.deepcopy(next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"])


def _container_sc(spec: dict) -> dict:
    return spec["containers"][0]["securityContext"]


# (the control the page names, a change that breaks it)
BREAKS = [
    ("Host Namespaces", lambda s: s.update(hostNetwork=True)),
    ("Host Namespaces", lambda s: s.update(hostPID=True)),
    ("HostProcess", lambda s: _container_sc(s).update(windowsOptions={"hostProcess": True})),
    ("Privileged Containers", lambda s: _container_sc(s).update(privileged=True)),
    ("Capabilities", lambda s: _container_sc(s)["capabilities"].update(add=["SYS_ADMIN"])),
    ("Capabilities", lambda s: _container_sc(s)["capabilities"].update(drop=["NET_RAW"])),
    ("HostPath Volumes", lambda s: s["volumes"].append({"name": "host", "hostPath": {"path": "/"}})),
    ("Volume Types", lambda s: s["volumes"].append({"name": "nfs", "nfs": {"server": "n", "path": "/"}})),
    ("Host Ports", lambda s: s["containers"][0]["ports"][0].update(hostPort=50151)),
    ("AppArmor", lambda s: _container_sc(s).update(appArmorProfile={"type": "Unconfined"})),
    ("SELinux", lambda s: _container_sc(s).update(seLinuxOptions={"type": "spc_t"})),
    ("/proc Mount Type", lambda s: _container_sc(s).update(procMount="Unmasked")),
    ("Seccomp", lambda s: s["securityContext"].pop("seccompProfile")),
    ("Seccomp", lambda s: _container_sc(s).update(seccompProfile={"type": "Unconfined"})),
    ("Sysctls", lambda s: s["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}])),
    ("Privilege Escalation", lambda s: _container_sc(s).pop("allowPrivilegeEscalation")),
    ("Running as Non-root", lambda s: (s["securityContext"].pop("runAsNonRoot"), _container_sc(s).pop("runAsNonRoot"))),
    ("Running as Non-root", lambda s: _container_sc(s).update(runAsNonRoot=False)),
    ("Running as Non-root user", lambda s: s["securityContext"].update(runAsUser=0)),
    ("Running as Non-root user", lambda s: _container_sc(s).update(runAsUser=0)),
]


@pytest.mark.parametrize("control,breaking", BREAKS, ids=[f"{c}-{i}" for i, (c, _) in enumerate(BREAKS)])
def test_the_pod_security_checker_catches_each_violation(control, breaking):
    spec = _compliant()
    assert violations(spec) == []
    breaking(spec)
    found = violations(spec)
    assert any(v.startswith(f"{control}:") for v in found), found


def test_the_pod_security_checker_catches_an_apparmor_annotation():
    assert violations(_compliant(), {"container.apparmor.security.beta.kubernetes.io/serving": "unconfined"})


def test_the_storage_class_option_reaches_every_region_claim(tmp_path, capsys):
    from fedstore.cli import main

    code = main(["--config", str(ROOT / "fedstore.yaml"), "deploy", "k8s", "--out", str(tmp_path),
                 "--storage-class", "efs-sc"])
    assert code in (0, None) and "wrote" in capsys.readouterr().out
    claims = [d for p in sorted(tmp_path.glob("region-*.yaml")) for d in _docs(p) if d["kind"] == "PersistentVolumeClaim"]
    assert len(claims) == 7 and {c["spec"]["storageClassName"] for c in claims} == {"efs-sc"}


def _mount_namespaces() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


# Inside a private mount namespace: the root filesystem read-only, the data volume bound where the
# manifests mount it, a fresh /tmp as the emptyDir; then the pods' commands with the pods' environment.
READ_ONLY_POD = """
set -e
step() { echo "step $1 $(date +%s)"; }
mount --make-rprivate /
mount -t tmpfs tmpfs /var/lib && mkdir /var/lib/fedstore && mount --bind "$DATA" /var/lib/fedstore
# a checkout or venv under /tmp (a clone there) stays where it is when the emptyDir covers /tmp
for keep in $KEEP; do mkdir -p "/var/lib/keep$keep" && mount --bind "$keep" "/var/lib/keep$keep"; done
mount -o remount,ro /var/lib
mount -o remount,bind,ro /
mount -t tmpfs -o size=1g,mode=1777 tmpfs /tmp
for keep in $KEEP; do mkdir -p "$keep" && mount --bind "/var/lib/keep$keep" "$keep"; done
cd "$WORKDIR"
touch /probe 2>/dev/null && { echo "root filesystem is writable"; exit 3; }
R="$PYTHON -m fedstore.cli --config /var/lib/fedstore/region.yaml"
step 'region generate'; $R region generate --region MY --customers 400 --days 14 --end 2026-11-20 --seed 3
step 'region apply'; $R region apply --region MY
step 'region materialize'; $R region materialize --region MY --end 2026-11-21T00:00:00
$PYTHON -m fedstore.cli --config /var/lib/fedstore/centre.yaml aggregator serve & AGG=$!
step serve; $R serve --region MY --address 127.0.0.1:$SERVING_PORT & SERVE=$!
$PYTHON -c "
import sys, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
for address in sys.argv[1:]:
    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=240)
    print(address, 'health', health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=30).status)
" 127.0.0.1:$SERVING_PORT 127.0.0.1:$AGGREGATOR_PORT
echo "tmp while serving: $(ls -A /tmp | tr '\\n' ' ')"
step 'region publish-stats'; $R region publish-stats --region MY --epsilon 0.1
step 'retrain publish'; $R retrain publish --region MY --epsilon 0.5 --days 14 --end 2026-11-20
step 'region send-stats'; $R region send-stats --region MY --address 127.0.0.1:$AGGREGATOR_PORT --token-env FEDSTORE_AGGREGATOR_TOKEN_MY
step 'region drift'; $R region drift --region MY
step stop; kill -TERM $SERVE $AGG
wait $SERVE
wait $AGG
echo "tmp at the end: $(ls -A /tmp | tr '\\n' ' ')"
"""


@pytest.mark.slow
@pytest.mark.skipif(not _mount_namespaces(), reason="needs root and mount namespaces to make a read-only root")
def test_the_pods_commands_run_on_a_read_only_root_with_only_the_mounted_paths_writable(tmp_path):
    """Whatever the libraries write at run time (Feast's metrics directory, matplotlib's and
    fontconfig's caches; DuckDB would spill there) lands in the emptyDir: the manifests' environment
    is enough, and nothing writes anywhere else."""
    from redis_servers import free_port

    serving_port, aggregator_port = free_port(), free_port()
    source = tmp_path / "fedstore.yaml"
    source.write_text(f"""
federation: {{name: readonly}}
regions:
  - {{code: MY, jurisdiction: Malaysia, law: PDPA-MY, timezone: Asia/Kuala_Lumpur, data_dir: data/MY,
     online_store: {{type: sqlite}}, serving_address: 127.0.0.1:{serving_port}}}
aggregator: {{address: 127.0.0.1:{aggregator_port}, plaintext: true}}
auth:
  tokens:
    - {{name: ops-my, secret_env: FEDSTORE_AGGREGATOR_TOKEN_MY, regions: [MY], roles: [publish, statistics-read]}}
""")
    rendered = {p.stem: _docs(p) for p in write_manifests(load_config(source), tmp_path / "k8s")}
    data = tmp_path / "volume"
    data.mkdir()
    for name, config in (("region", rendered["region-my"]), ("centre", rendered["centre"])):
        (data / f"{name}.yaml").write_text(next(d for d in config if d["kind"] == "ConfigMap")["data"]["fedstore.yaml"])
    serving = next(d for d in rendered["region-my"] if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    container = serving["containers"][0]
    # the checkout and the venv, where they lie under /tmp: kept visible under the pod's emptyDir
    keep = sorted({str(Path("/tmp") / p.relative_to("/tmp").parts[0]) for p in (ROOT, Path(sys.prefix))
                   if p.is_relative_to("/tmp") and p != Path("/tmp")})
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "PYTHON": sys.executable, "DATA": str(data),
           "KEEP": " ".join(keep),
           "WORKDIR": container["workingDir"], "SERVING_PORT": str(serving_port),
           "AGGREGATOR_PORT": str(aggregator_port), "FEDSTORE_AGGREGATOR_TOKEN_MY": "read-only-root-ops-token-0123",
           **{e["name"]: e["value"] for e in container["env"]}}  # HOME, TMPDIR, FEAST_USAGE … as the pods have them
    done = subprocess.run(["unshare", "-m", "sh", "-c", READ_ONLY_POD], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "wrote" in done.stdout and "sent" in done.stdout and done.stdout.count("health 1") == 2, done.stdout[-3000:]
    # the libraries did write: Feast's import its metrics directory (without a writable TMPDIR no
    # command starts), the drift chart matplotlib's and fontconfig's caches under HOME
    tmp = {line.split(": ", 1)[0]: line.split(": ", 1)[1] for line in done.stdout.splitlines() if line.startswith("tmp ")}
    assert "feast_metrics_" in tmp["tmp while serving"] and ".cache" in tmp["tmp at the end"], tmp
    assert (data / "MY" / "outbox").is_dir() and (data / "centre").is_dir()  # the volume took the data
