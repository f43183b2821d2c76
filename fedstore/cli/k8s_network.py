"""NetworkPolicies that enforce the border (docs/deployment.md, "Egress policy").

In a region's namespace: nothing in or out by default; DNS to kube-system; its Redis on the port(s)
its config names (only to that address when the config gives an IP); the centre's aggregator pods on
the aggregator's port from the border jobs alone (`send-stats`, which sends statistics across the border,
`retrain-shadow`, which asks the centre's registry, and `score-drift` only when the config has it roll
a drifting canary back); and ingress to the serving pods on the gRPC
(and metrics) port. In the centre: nothing by default, DNS out, ingress to the aggregator on its gRPC
port from region namespaces and the centre's own `retrain-train` job, which may reach that port alone.
A region's policies name no other region: its manifest stays its own.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from fedstore.federation import RegionConfig

CENTRE_NAMESPACE = "fedstore-centre"
# every region namespace carries these labels; the centre admits its border port to them alone
REGION_NAMESPACE_LABELS = {"app.kubernetes.io/name": "fedstore", "app.kubernetes.io/component": "region"}
AGGREGATOR_POD_LABELS = {"app.kubernetes.io/name": "fedstore", "app.kubernetes.io/component": "aggregator"}
_DNS = {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}


def _policy(name: str, ns: str, pods: dict[str, str], *, ingress: list[dict[str, Any]] | None = None,
            egress: list[dict[str, Any]] | None = None, selector: dict[str, Any] | None = None) -> dict[str, Any]:
    """A policy for the pods labelled ``pods`` (all of the namespace's when empty; or those ``selector``
    selects) that allows what ``ingress``/``egress`` list; a direction given as [] allows nothing that way."""
    rules = {k: v for k, v in (("ingress", ingress), ("egress", egress)) if v}
    types = [t for t, v in (("Ingress", ingress), ("Egress", egress)) if v is not None]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": name, "namespace": ns},
            "spec": {"podSelector": selector or ({"matchLabels": pods} if pods else {}), "policyTypes": types, **rules}}


def _deny_all(ns: str) -> dict[str, Any]:
    # every pod selected in both directions with no rule: what no other policy allows is refused
    return _policy("default-deny", ns, {}, ingress=[], egress=[])


def _tcp(*ports: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": p} for p in ports]


def redis_endpoints(r: RegionConfig) -> list[tuple[str, int]]:
    """The (host, port) pairs of the region's online store; none for the embedded SQLite store."""
    store = r.online_store
    if store.type == "redis":
        return [(store.redis_host, store.redis_port)]
    if store.type == "redis_cluster":
        return list(dict.fromkeys(store.nodes))
    return []


def _redis_rule(endpoints: list[tuple[str, int]]) -> dict[str, Any]:
    ports = sorted({p for _, p in endpoints})
    rule: dict[str, Any] = {"ports": _tcp(*ports)}
    try:  # an address the config gives as an IP narrows the rule to it; a DNS name cannot be selected
        blocks = sorted({str(ipaddress.ip_network(h)) for h, _ in endpoints})
    except ValueError:
        blocks = []
    if blocks:
        rule["to"] = [{"ipBlock": {"cidr": b}} for b in blocks]
    return rule


def region_policies(ns: str, r: RegionConfig, *, aggregator_port: int, serving_pods: dict[str, str],
                    border_jobs: tuple[str, ...]) -> list[dict[str, Any]]:
    serving_ports = [p for p in (int(r.serving_address.rpartition(":")[2]), r.serving.metrics_port,
                                 r.serving.http_port) if p]
    policies = [
        _deny_all(ns),
        _policy("allow-dns", ns, {}, egress=[_DNS]),
        # serving apps live in namespaces the config does not know: the port is the border here
        _policy("allow-serving-ingress", ns, serving_pods, ingress=[{"ports": _tcp(*serving_ports)}]),
        # one policy for every pod that crosses the border, selected by its job's component label
        _policy("allow-aggregator-egress", ns, {}, egress=[_to_aggregator(aggregator_port)], selector={
            "matchLabels": {"app.kubernetes.io/name": "fedstore", "fedstore.io/region": r.code},
            "matchExpressions": [{"key": "app.kubernetes.io/component", "operator": "In", "values": list(border_jobs)}]}),
    ]
    endpoints = redis_endpoints(r)
    if endpoints:
        policies.append(_policy("allow-redis-egress", ns, {}, egress=[_redis_rule(endpoints)]))
    return policies


def _to_aggregator(port: int) -> dict[str, Any]:
    return {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": CENTRE_NAMESPACE}},
                    "podSelector": {"matchLabels": AGGREGATOR_POD_LABELS}}],
            "ports": _tcp(port)}


def centre_policies(port: int, metrics_port: int | None, *, trainer_pods: dict[str, str]) -> list[dict[str, Any]]:
    ingress: list[dict[str, Any]] = [{"from": [{"namespaceSelector": {"matchLabels": REGION_NAMESPACE_LABELS}},
                                               {"podSelector": {"matchLabels": trainer_pods}}],
                                      "ports": _tcp(port)}]
    if metrics_port:  # scraped from wherever Prometheus runs: the port serves counters, nothing else
        ingress.append({"ports": _tcp(metrics_port)})
    return [
        _deny_all(CENTRE_NAMESPACE),
        _policy("allow-dns", CENTRE_NAMESPACE, {}, egress=[_DNS]),
        _policy("allow-region-ingress", CENTRE_NAMESPACE, AGGREGATOR_POD_LABELS, ingress=ingress),
        _policy("allow-train-egress", CENTRE_NAMESPACE, trainer_pods, egress=[_to_aggregator(port)]),
    ]
