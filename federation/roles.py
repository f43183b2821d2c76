"""Who may call what: the roles a credential carries and the one table of every RPC's policy.

Every RPC of every service the product serves is a row of ``POLICIES``, keyed by its full gRPC
method name: the role a caller needs and the regions that role acts in (its ``Scope``). A method
without a row is refused by every server (deny by default), and a test enumerates the services'
descriptors so that a new RPC without a row fails the suite. ``ROLE_REGIONS`` says which regions a
credential holding each role may name; the config loader enforces it, so a credential that could
break the border's promise cannot even be configured.

The one promise this table exists for: nothing issued for the centre reads a row. Row-returning
RPCs (lookups, training sets) are ``Scope.ROWS``: only a credential bound to exactly the serving
node's region is admitted, and the row roles may not be held for "*" at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Mapping


class Role(StrEnum):
    LOOKUP = "lookup"  # online features of a few entities, from the region's serving node
    DATASETS = "datasets"  # point-in-time training sets, streamed from the region's serving node
    PUBLISH = "publish"  # a region's anonymised statistics, submitted to the centre
    STATISTICS_READ = "statistics-read"  # the centre's merged, anonymised statistics (drift baselines)
    TRAIN = "train"  # federation-wide models, trained at the centre from pooled statistics
    REGISTRY_READ = "registry-read"  # model versions, and a region's deployment
    PROMOTE = "promote"  # move a model version between a region's stages, or roll one back
    AUDIT = "audit"  # a region's trail of promotions, rollbacks and refusals


class Scope(StrEnum):
    """Which region an admitted call acts in."""

    ROWS = "rows"  # the serving node's own region's rows: a credential bound to exactly that region
    REQUEST_REGION = "request-region"  # the region the request names: one of the credential's (or "*")
    FEDERATION = "federation"  # every region at once: a credential for "*" only
    ANY = "any"  # federation-wide, anonymised values: any credential holding the role
    OPEN = "open"  # no credential at all: health checks and reflection (they reveal no data)
    NOT_SERVED = "not-served"  # refused to every caller: a method of a served service we do not serve


class RegionRule(StrEnum):
    """Which ``regions`` a credential holding a role may list (``ROLE_REGIONS``)."""

    EXACTLY_ONE = "exactly one region"  # a row role: the credential is of one jurisdiction
    NAMED = "named regions"  # acts for regions, never for all of them ("*")
    NAMED_OR_EVERY = "named regions or '*'"  # a region reads its own; the centre, with "*", all
    EVERY = "'*' only"  # spans every region by nature


@dataclass(frozen=True)
class Policy:
    role: Role | None  # None: OPEN or NOT_SERVED
    scope: Scope
    note: str = ""  # why, for docs/security.md and refusals


ROLE_REGIONS: Mapping[Role, RegionRule] = MappingProxyType({
    Role.LOOKUP: RegionRule.EXACTLY_ONE,
    Role.DATASETS: RegionRule.EXACTLY_ONE,
    Role.PUBLISH: RegionRule.NAMED,
    # a model serves in a jurisdiction only when that jurisdiction's own credential moves it
    Role.PROMOTE: RegionRule.NAMED,
    Role.STATISTICS_READ: RegionRule.NAMED_OR_EVERY,
    Role.REGISTRY_READ: RegionRule.NAMED_OR_EVERY,
    Role.AUDIT: RegionRule.NAMED_OR_EVERY,
    Role.TRAIN: RegionRule.EVERY,
})

_SERVING = "/fedstore.serving.v1.FeatureServing/"
_FEAST = "/GrpcFeatureServer/"  # Feast declares it without a package
_FEAST_SERVING = "/feast.serving.ServingService/"  # Feast's Java client and Go server; HTTP /get-online-features
_DATASETS = "/fedstore.datasets.v1.HistoricalFeatures/"
_AGGREGATOR = "/fedstore.aggregator.v1.Aggregator/"
_REGISTRY = "/fedstore.registry.v1.Registry/"
_SECURE = "/fedstore.aggregator.v1.SecureAggregation/"

POLICIES: Mapping[str, Policy] = MappingProxyType({
    # --- a region's serving node: rows, so its own region's credentials only
    _SERVING + "GetOnlineFeatures": Policy(Role.LOOKUP, Scope.ROWS, "online feature rows"),
    # each contribution is a weight times a feature's value: a score's explanation reveals the row
    _SERVING + "Score": Policy(Role.LOOKUP, Scope.ROWS, "model scores with their per-feature contributions"),
    _FEAST + "GetOnlineFeatures": Policy(Role.LOOKUP, Scope.ROWS, "online feature rows, Feast's contract"),
    _FEAST_SERVING + "GetOnlineFeatures": Policy(Role.LOOKUP, Scope.ROWS,
                                                 "online feature rows, Feast's contract (gRPC, and HTTP POST /get-online-features)"),
    # only Feast's version, but no stranger learns what answers here: the lookups' own guard
    _FEAST_SERVING + "GetFeastServingInfo": Policy(Role.LOOKUP, Scope.ROWS, "the Feast version; asked by Feast's clients before lookups"),
    _FEAST + "Push": Policy(None, Scope.NOT_SERVED, "rows reach the online store by materialisation only"),
    _FEAST + "WriteToOnlineStore": Policy(None, Scope.NOT_SERVED, "rows reach the online store by materialisation only"),
    _DATASETS + "GetHistoricalFeatures": Policy(Role.DATASETS, Scope.ROWS, "point-in-time training rows"),
    # --- the centre: anonymised statistics in, models and the registry out
    _AGGREGATOR + "Submit": Policy(Role.PUBLISH, Scope.REQUEST_REGION, "the submission's region"),
    _AGGREGATOR + "GetGlobalStatistics": Policy(Role.STATISTICS_READ, Scope.ANY, "merged, noisy statistics"),
    _AGGREGATOR + "Train": Policy(Role.TRAIN, Scope.FEDERATION, "pools every region's statistics"),
    _AGGREGATOR + "ListQuarantine": Policy(Role.AUDIT, Scope.FEDERATION,
                                           "held statistics of every region: the centre's operator"),
    _AGGREGATOR + "DecideQuarantine": Policy(Role.AUDIT, Scope.FEDERATION,
                                             "release or reject held statistics: the centre's operator"),
    # secure aggregation: the centre's operator opens a round; each message of a round is its region's
    # own (a publish credential for that region, and its certificate), like a submission
    _SECURE + "OpenRound": Policy(Role.TRAIN, Scope.FEDERATION, "a secure-aggregation round over regions' statistics"),
    _SECURE + "GetRound": Policy(Role.PUBLISH, Scope.REQUEST_REGION, "the round as the request's region may see it"),
    _SECURE + "AdvertiseKeys": Policy(Role.PUBLISH, Scope.REQUEST_REGION, "the request's region's public keys"),
    _SECURE + "ShareKeys": Policy(Role.PUBLISH, Scope.REQUEST_REGION, "the request's region's sealed key shares"),
    _SECURE + "SubmitMaskedInput": Policy(Role.PUBLISH, Scope.REQUEST_REGION,
                                          "the request's region's masked statistics, charged to its budget"),
    _SECURE + "Unmask": Policy(Role.PUBLISH, Scope.REQUEST_REGION, "the request's region's unmasking shares"),
    _REGISTRY + "ListModels": Policy(Role.REGISTRY_READ, Scope.ANY, "federation-wide models"),
    _REGISTRY + "GetModel": Policy(Role.REGISTRY_READ, Scope.ANY, "federation-wide models"),
    _REGISTRY + "GetDeployment": Policy(Role.REGISTRY_READ, Scope.REQUEST_REGION, "the region's stages"),
    _REGISTRY + "Promote": Policy(Role.PROMOTE, Scope.REQUEST_REGION, "the region's stages"),
    _REGISTRY + "Rollback": Policy(Role.PROMOTE, Scope.REQUEST_REGION, "the region's stages"),
    _REGISTRY + "RecordReadiness": Policy(Role.PROMOTE, Scope.ANY,
                                          "a version's production-readiness checklist (federation-wide)"),
    _REGISTRY + "GetAudit": Policy(Role.AUDIT, Scope.REQUEST_REGION,
                                   "the region's trail; no region named: the caller's regions' trails"),
    # --- every server: open, so load balancers and `grpcurl list` need no credential
    "/grpc.health.v1.Health/Check": Policy(None, Scope.OPEN, "serving or not, per service"),
    "/grpc.health.v1.Health/Watch": Policy(None, Scope.OPEN, "serving or not, per service"),
    "/grpc.health.v1.Health/List": Policy(None, Scope.OPEN, "every service's health"),
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": Policy(None, Scope.OPEN, "the services' schemas"),
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo": Policy(None, Scope.OPEN, "the services' schemas"),
})

ROW_ROLES = frozenset(r for r, rule in ROLE_REGIONS.items() if rule is RegionRule.EXACTLY_ONE)
# the roles a centre credential (regions ["*"]) may hold; none of them returns a row
CENTRE_ROLES = frozenset(r for r, rule in ROLE_REGIONS.items() if rule in (RegionRule.EVERY, RegionRule.NAMED_OR_EVERY))


def role_names() -> str:
    return ", ".join(sorted(r.value for r in Role))


def region_rule_violation(roles: frozenset[Role], regions: tuple[str, ...]) -> str | None:
    """Why a credential with ``roles`` may not name ``regions`` (a sentence), None when it may."""
    every = "*" in regions
    if every and len(regions) > 1:
        return "'*' already means every region: list it alone"
    for role in sorted(roles):
        rule = ROLE_REGIONS[role]
        if rule is RegionRule.EXACTLY_ONE and (every or len(regions) != 1):
            return (f"role {role} returns a region's rows, so its credential names exactly one region "
                    f"(got {', '.join(regions)}); nothing issued for the centre or for several regions reads a row")
        if rule is RegionRule.NAMED and every:
            return (f"role {role} acts for the regions it names, never for '*' (only "
                    f"{', '.join(sorted(CENTRE_ROLES))} may be held for every region)")
        if rule is RegionRule.EVERY and not every:
            return f"role {role} spans every region's statistics: its credential's regions are ['*']"
    return None


__all__ = ["CENTRE_ROLES", "POLICIES", "ROLE_REGIONS", "ROW_ROLES", "Policy", "RegionRule", "Role", "Scope",
           "region_rule_violation", "role_names"]
