"""The Kubernetes manifests: current with the federation config, structurally sound, one
namespace per region whose pods see only that region, and commands the CLI really accepts."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from fedstore.federation import load_config
from fedstore.cli.entry import build_parser
from fedstore.cli.deploy_commands import write_manifests

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "deploy" / "k8s"
KINDS = {"Namespace": "v1", "ConfigMap": "v1", "PersistentVolumeClaim": "v1", "Service": "v1",
         "Deployment": "apps/v1", "CronJob": "batch/v1"}


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _pod_specs(doc: dict) -> list[dict]:
    if doc["kind"] == "Deployment":
        return [doc["spec"]["template"]["spec"]]
    if doc["kind"] == "CronJob":
        return [doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]]
    return []


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
        assert {"materialize", "publish-stats", "send-stats", "drift"} <= jobs
        others = [c for c in config.codes if c != code]
        assert not any(f"fedstore-{o.lower()}" in path.read_text() for o in others)
    assert namespaces == {f"fedstore-{c.lower()}" for c in config.codes} | {"fedstore-centre"}


def _cluster_reachable(kubectl: str) -> bool:
    done = subprocess.run([kubectl, "version", "--request-timeout=3s", "-o", "yaml"], capture_output=True, text=True)
    return done.returncode == 0 and "serverVersion" in done.stdout


def test_kubectl_accepts_the_manifests_where_a_cluster_is_reachable():
    kubectl = shutil.which("kubectl")
    if kubectl is None or not _cluster_reachable(kubectl):
        pytest.skip("kubectl needs an API server even for --dry-run=client; structure is checked above")
    for path in sorted(COMMITTED.glob("*.yaml")):
        done = subprocess.run([kubectl, "apply", "--dry-run=client", "-f", str(path)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
