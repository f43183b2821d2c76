"""The federation config: one YAML file describing every region of the deployment.

Loaded once, validated strictly (an unknown key, a missing field, two regions sharing a data
directory or a Redis database are one-line errors naming the field) and then immutable.

```yaml
federation:
  name: sea-mobility
regions:
  - code: MY
    jurisdiction: Malaysia
    law: PDPA-MY
    timezone: Asia/Kuala_Lumpur
    data_dir: data/MY                # relative to this file
    online_store: {type: sqlite}     # or {type: redis, url: redis://127.0.0.1:6379/0}
    serving_address: 127.0.0.1:50051
    materialization: {lateness_hours: 24}  # optional: how far back an incremental job reads again
    serving:                         # optional; every key has a default (ServingConfig)
      models: {registry_token: my-models, poll_seconds: 5, prediction_retention_days: 90}  # scoring (Score)
    consent: {required: [global_statistics], default: deny}  # optional: federation/consent.py
auth:                                # credentials: roles and regions (federation/roles.py, docs/security.md)
  tokens:
    - {name: app-my, secret_env: APP_MY_TOKEN, roles: [lookup], regions: [MY], purposes: [serving]}
    - {name: my-models, secret_env: MY_MODELS_TOKEN, roles: [registry-read], regions: [MY]}
```
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from fedstore.federation.consent import ConsentPolicy, Purpose, parse_consent
from fedstore.federation.deployment_policy import DeploymentPolicy, parse_policies
from fedstore.federation.errors import ConfigError
from fedstore.federation.monitoring import MonitoringConfig, parse_monitoring
from fedstore.federation.statistics import CATALOG
from fedstore.federation.jurisdictions import JURISDICTIONS
from fedstore.federation.roles import Role, region_rule_violation, role_names
from fedstore.federation.unique_keys import DuplicateKey, safe_load_unique

ONLINE_STORE_TYPES = ("sqlite", "redis", "redis_cluster")
MAX_LATENESS_HOURS = 8784  # a (leap) year: later than that is a full job's work


@dataclass(frozen=True)
class OnlineStoreConfig:
    """Where a region's online features live. ``sqlite`` is the embedded default."""

    type: str
    url: str | None = None  # redis://host:port/db
    path: Path | None = None  # sqlite file; defaults to <data_dir>/online_store.db
    key_ttl_seconds: int | None = None
    nodes: tuple[tuple[str, int], ...] = ()  # redis_cluster: startup nodes
    password_env: str | None = None  # redis_cluster: the environment variable holding its password

    @property
    def redis_host(self) -> str:
        return urlsplit(self.url or "").hostname or "127.0.0.1"

    @property
    def redis_port(self) -> int:
        return urlsplit(self.url or "").port or 6379

    @property
    def redis_db(self) -> int:
        tail = urlsplit(self.url or "").path.strip("/")
        return int(tail) if tail else 0

    @property
    def redis_password(self) -> str | None:
        return urlsplit(self.url or "").password


@dataclass(frozen=True)
class ModelsConfig:
    """Scoring in the region (``serving.models``): which credential follows the region's deployment
    at the centre, how often, and how long the region keeps its prediction log."""

    registry_token: str  # the name of an auth.tokens entry with role registry-read for this region
    poll_seconds: float = 5.0  # how often the node asks the registry for the region's deployment
    prediction_retention_days: int = 90  # day partitions of the prediction log older than this are deleted
    log_queue_batches: int = 1024  # scored requests waiting for the log writer; beyond it Score is refused


@dataclass(frozen=True)
class ServingConfig:
    """How a region's serving node behaves. Every field has a safe default."""

    max_entities: int = 1000
    online_timeout_ms: int = 50  # past this, answer from the batch snapshot
    breaker_failures: int = 3  # consecutive online failures that open the circuit
    breaker_reset_seconds: float = 2.0  # how long an open circuit waits before probing again
    metrics_port: int | None = None  # Prometheus /metrics; None = off
    # Feast's feature-server HTTP API (POST /get-online-features, as `feast serve`); None = off
    http_port: int | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    workers: int = 8  # threads per process for training-set streams and health checks
    # threads per process answering lookups, each waiting on Redis with the GIL released: a process
    # answers at most lookup_threads ÷ Redis's round trip lookups per second (8 ÷ 0.5 ms = 16,000)
    lookup_threads: int = 8
    # per process: calls under way, and lookups waiting for a lookup thread; beyond it a call is
    # refused at once (RESOURCE_EXHAUSTED; a lookup grpc's queue turns away is CANCELLED)
    max_concurrent_calls: int = 1000
    models: ModelsConfig | None = None  # None: the node scores nothing (Score answers FAILED_PRECONDITION)
    # how lookups are answered: auto = on the lookup lane (grpc's private core), or, when this grpcio
    # does not have what the lane uses, through grpc's public API; public = always the public API
    # (slower; for a grpcio the lane is suspected of misreading)
    lookup_path: str = "auto"
    # the region's audit trail of data use (serving/use_audit.py): a record per lookup and score,
    # day partitions deleted after this many days; entity ids in it only when asked (data minimisation)
    audit_retention_days: int = 365
    audit_entity_ids: bool = False


LOOKUP_PATHS = ("auto", "public")


@dataclass(frozen=True)
class MaterializationConfig:
    """Which engine materialises a region: the local fast path (default) or Feast's Spark engine."""

    engine: str = "local"  # local | spark
    spark_master: str = "local[2]"  # local[N] in tests and small regions; spark://… or yarn in production
    spark_conf: tuple[tuple[str, str], ...] = ()
    partitions: int = 0  # repartition before writing online; 0 = as read
    # an incremental job reads again this much before the previous job's window end, so rows that
    # arrive late (event time already behind the last job) are still loaded; 0 = from the end only
    lateness_hours: float = 24.0
    # what a job does with rows that break the views' declared schema: fail (strict) or quarantine
    # them beside the job and load the rest; a job's --quarantine / --strict overrides it
    on_contract_violation: str = "fail"


@dataclass(frozen=True)
class TokenConfig:
    """A caller's identity. The secret itself is never in the file: an env var or a file names it."""

    name: str
    regions: tuple[str, ...]  # region codes this caller acts for; ("*",) = all (centre roles only)
    secret_env: str | None = None
    secret_file: Path | None = None
    roles: frozenset[Role] = frozenset()  # what it may do in those regions (federation.roles); none: nothing
    # what a lookup role's calls may be for (federation.consent.Purpose); a call names one of them
    purposes: frozenset[Purpose] = frozenset()

    def allows(self, region: str) -> bool:
        return "*" in self.regions or region in self.regions

    def bound_to(self, region: str) -> bool:
        """A credential of ``region`` alone (the only kind that may read its rows)."""
        return self.regions == (region,)

    def secret(self) -> str:
        if self.secret_env:
            import os

            value = os.environ.get(self.secret_env, "")
            if not value:
                raise ConfigError(
                    f"auth token {self.name!r}: environment variable {self.secret_env} is not set"
                )
            return value
        assert self.secret_file is not None
        try:
            value = self.secret_file.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise ConfigError(f"auth token {self.name!r}: cannot read {self.secret_file}: {e.strerror}") from None
        if not value:
            raise ConfigError(f"auth token {self.name!r}: {self.secret_file} is empty")
        return value


@dataclass(frozen=True)
class ClientTLSConfig:
    """What a client presents to the centre and whom it trusts there (mutual TLS, see docs/security.md)."""

    cert: Path  # this client's certificate (PEM); a region's names it: URI SAN spiffe://fedstore/region/<CODE>
    key: Path  # its private key (PEM, unencrypted)
    ca: Path  # the CA certificate(s) the centre's server certificate must chain to


@dataclass(frozen=True)
class RegionConfig:
    code: str
    jurisdiction: str
    law: str
    timezone: str
    data_dir: Path
    online_store: OnlineStoreConfig
    serving_address: str
    serving: ServingConfig = field(default_factory=ServingConfig)
    materialization: MaterializationConfig = field(default_factory=lambda: MaterializationConfig())
    centre_tls: ClientTLSConfig | None = None  # this region's client certificate for the centre
    consent: ConsentPolicy = field(default_factory=ConsentPolicy)  # purposes that need consent here

    @property
    def project(self) -> str:
        """Feast project name: one per region, so registries and online keys never mix."""
        return f"fedstore_{self.code.lower()}"


@dataclass(frozen=True)
class PrivacyConfig:
    """The federation's privacy rules: both the regions and the centre enforce them."""

    epsilon_per_month: float = 4.0  # each region's budget per calendar month
    minimum_cohort: int = 10  # statistics of fewer entities (after noise) are never sent
    delta: float = 1e-6  # δ of one Gaussian release (training statistics)
    delta_per_month: float = 1e-5  # each region's δ budget per calendar month
    # No region has more entities than this (its population of customers, at most): a count or a
    # training n above it (beyond noise) is impossible, and the centre refuses it. 10⁹ is more
    # people than any member jurisdiction has; a federation sets its own, tighter cap.
    max_entities: int = 10**9


@dataclass(frozen=True)
class TrainingConfig:
    """What the centre requires of the statistics before it fits a global model."""

    # the AUC (Gaussian-class estimate from the released statistics, aggregator/training/signal.py)
    # below which the noise has left too little signal: training is refused, no model registered
    minimum_expected_auc: float = 0.55


@dataclass(frozen=True)
class QuarantineConfig:
    """When the centre holds a region's statistics back from merging and training.

    A statistic (a feature's mean; for training statistics each class's feature means and the
    class balance) is out of line when it differs from the median of the other regions by more
    than ``k`` × sqrt(noise variance + sampling variance + heterogeneity²). Heterogeneity is how far
    honest regions may really differ: per feature in its own units (``heterogeneity``), else
    ``relative_tolerance`` × the catalog range; ``class_balance_tolerance`` for the share of class 1.
    """

    enabled: bool = True
    k: float = 4.0
    relative_tolerance: float = 0.1  # of the feature's catalog range (upper − lower)
    heterogeneity: Mapping[str, float] = field(default_factory=dict)  # catalog ref -> in the feature's units
    class_balance_tolerance: float = 0.05  # absolute, on n₁ / (n₀ + n₁)
    minimum_other_regions: int = 3  # the test runs once this many other regions have statistics


@dataclass(frozen=True)
class AggregatorConfig:
    """Where the centre listens and keeps its store."""

    address: str = "127.0.0.1:50100"
    data_dir: Path | None = None  # default: <config dir>/centre
    metrics_port: int | None = None  # Prometheus /metrics; None = off
    tls_cert: Path | None = None  # mutual TLS: all three are given together
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # the CA every client certificate must chain to
    # no TLS at all, for local development only: the server listens in plaintext and clients
    # connect without certificates; without it, a centre or a client without TLS files is refused
    plaintext: bool = False
    operator_tls: ClientTLSConfig | None = None  # the centre's own tools (train, registry) as clients


@dataclass(frozen=True)
class FederationConfig:
    name: str
    regions: tuple[RegionConfig, ...]
    tokens: tuple[TokenConfig, ...] = ()
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    aggregator: AggregatorConfig = field(default_factory=AggregatorConfig)
    deployment_policies: Mapping[str, DeploymentPolicy] = field(default_factory=dict)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    quarantine: QuarantineConfig = field(default_factory=QuarantineConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    source: Path | None = field(default=None, compare=False)

    def policy(self, code: str) -> DeploymentPolicy:
        """The deployment policy of a region (the defaults when the config names none)."""
        return self.deployment_policies.get(self.region(code).code, DeploymentPolicy())

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(r.code for r in self.regions)

    def region(self, code: str) -> RegionConfig:
        wanted = code.upper()
        for r in self.regions:
            if r.code == wanted:
                return r
        raise ConfigError(
            f"unknown region {code!r}; this federation has {', '.join(self.codes) or 'none'}"
        )


def load_config(path: str | Path) -> FederationConfig:
    """Read and validate a federation YAML file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory, not a YAML file") from None
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text (not a YAML file?)") from None
    try:
        raw = safe_load_unique(text)
    except DuplicateKey as e:
        raise ConfigError(f"{path}: line {e.line}: {e.problem}; remove one of them") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}") from None
    if raw is None:
        raise ConfigError(f"config file {path} is empty: it needs a federation and its regions")
    return parse_config(raw, base_dir=path.resolve().parent, source=path)


def parse_config(
    raw: Any, *, base_dir: Path, source: Path | None = None
) -> FederationConfig:
    """Validate an already-parsed mapping. Relative data dirs resolve against ``base_dir``."""
    top = _mapping(raw, "config")
    _keys(
        top, "config", required={"federation", "regions"},
        optional={"auth", "privacy", "aggregator", "deployment_policy", "monitoring", "quarantine", "training"},
    )
    fed = _mapping(top["federation"], "federation")
    _keys(fed, "federation", required={"name"}, optional=set())
    name = _string(fed["name"], "federation.name")

    raw_regions = top["regions"]
    if not isinstance(raw_regions, list) or not raw_regions:
        raise ConfigError("regions: expected a non-empty list of regions")
    regions = tuple(
        _region(r, f"regions[{i}]", base_dir) for i, r in enumerate(raw_regions)
    )
    _check_unique(regions)
    tokens = _auth(top.get("auth"), base_dir, {r.code for r in regions})
    _check_model_tokens(regions, tokens)
    aggregator = _aggregator(top.get("aggregator"), base_dir)
    for i, r in enumerate(regions):
        if aggregator.plaintext and r.centre_tls is not None:
            raise ConfigError(f"regions[{i}].centre_tls: aggregator.plaintext: true turns TLS off; remove one of them")
    return FederationConfig(
        name=name,
        regions=regions,
        tokens=tokens,
        privacy=_privacy(top.get("privacy")),
        aggregator=aggregator,
        deployment_policies=parse_policies(top.get("deployment_policy"), {r.code for r in regions}),
        monitoring=parse_monitoring(top.get("monitoring")),
        quarantine=_quarantine(top.get("quarantine")),
        training=_training(top.get("training")),
        source=source,
    )


def _check_model_tokens(regions: tuple[RegionConfig, ...], tokens: tuple[TokenConfig, ...]) -> None:
    """A region that follows its deployment names a credential that may read it there."""
    by_name = {t.name: t for t in tokens}
    for i, r in enumerate(regions):
        models = r.serving.models
        if models is None:
            continue
        where = f"regions[{i}].serving.models.registry_token"
        token = by_name.get(models.registry_token)
        if token is None:
            raise ConfigError(f"{where}: no auth.tokens entry is named {models.registry_token!r}")
        if Role.REGISTRY_READ not in token.roles or not token.allows(r.code):
            raise ConfigError(f"{where}: token {token.name!r} must hold role registry-read for region {r.code}")


def _training(raw: Any) -> TrainingConfig:
    if raw is None:
        return TrainingConfig()
    m = _mapping(raw, "training")
    _keys(m, "training", required=set(), optional={"minimum_expected_auc"})
    floor = _number(m.get("minimum_expected_auc", TrainingConfig.minimum_expected_auc), "training.minimum_expected_auc")
    if not 0 <= floor < 1:
        raise ConfigError(f"training.minimum_expected_auc: expected an AUC in [0, 1), got {floor!r}")
    return TrainingConfig(minimum_expected_auc=floor)


def _quarantine(raw: Any) -> QuarantineConfig:
    if raw is None:
        return QuarantineConfig()
    m = _mapping(raw, "quarantine")
    _keys(m, "quarantine", required=set(), optional={"enabled", "k", "relative_tolerance", "heterogeneity",
                                                     "class_balance_tolerance", "minimum_other_regions"})
    enabled = m.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ConfigError(f"quarantine.enabled: expected true or false, got {enabled!r}")
    k = _number(m.get("k", QuarantineConfig.k), "quarantine.k")
    if not k >= 1:
        raise ConfigError(f"quarantine.k: expected a number of standard deviations ≥ 1, got {k!r}")
    relative = _number(m.get("relative_tolerance", QuarantineConfig.relative_tolerance), "quarantine.relative_tolerance")
    balance = _number(m.get("class_balance_tolerance", QuarantineConfig.class_balance_tolerance),
                      "quarantine.class_balance_tolerance")
    for name, v in (("relative_tolerance", relative), ("class_balance_tolerance", balance)):
        if not 0 <= v <= 1:
            raise ConfigError(f"quarantine.{name}: expected a share between 0 and 1, got {v!r}")
    others = m.get("minimum_other_regions", QuarantineConfig.minimum_other_regions)
    if not isinstance(others, int) or isinstance(others, bool) or others < 2:
        # with one other region the centre cannot tell which of two disagreeing regions is wrong
        raise ConfigError(f"quarantine.minimum_other_regions: expected an integer ≥ 2, got {others!r}")
    raw_h = m.get("heterogeneity", {})
    if not isinstance(raw_h, dict):
        raise ConfigError("quarantine.heterogeneity: expected a mapping of catalog feature (view:feature) to a number")
    known = {s.ref: s for s in CATALOG}
    heterogeneity = {}
    for ref, v in raw_h.items():
        if ref not in known:
            raise ConfigError(f"quarantine.heterogeneity.{ref}: not a feature of the statistics catalog")
        h = _number(v, f"quarantine.heterogeneity.{ref}")
        if h < 0:
            raise ConfigError(f"quarantine.heterogeneity.{ref}: expected a number ≥ 0, got {v!r}")
        heterogeneity[ref] = h
    return QuarantineConfig(enabled=enabled, k=k, relative_tolerance=relative, heterogeneity=heterogeneity,
                            class_balance_tolerance=balance, minimum_other_regions=others)


def _number(raw: Any, where: str) -> float:
    if not isinstance(raw, (int, float)) or isinstance(raw, bool) or raw != raw or raw in (float("inf"), float("-inf")):
        raise ConfigError(f"{where}: expected a finite number, got {raw!r}")
    return float(raw)


def _aggregator(raw: Any, base_dir: Path) -> AggregatorConfig:
    m = _mapping(raw, "aggregator") if raw is not None else {}
    _keys(m, "aggregator", required=set(),
          optional={"address", "data_dir", "metrics_port", "tls", "plaintext", "operator_tls"})
    address = _string(m.get("address", AggregatorConfig.address), "aggregator.address")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"aggregator.address: expected host:port, got {address!r}")
    data_dir = Path(_string(m["data_dir"], "aggregator.data_dir")) if "data_dir" in m else Path("centre")
    metrics_port = m.get("metrics_port")
    if metrics_port is not None and (not isinstance(metrics_port, int) or isinstance(metrics_port, bool)
                                     or not 0 < metrics_port < 65536):
        raise ConfigError(f"aggregator.metrics_port: expected a port number, got {metrics_port!r}")
    plaintext = m.get("plaintext", False)
    if not isinstance(plaintext, bool):
        raise ConfigError(f"aggregator.plaintext: expected true or false, got {plaintext!r}")
    if plaintext and ("tls" in m or "operator_tls" in m):
        raise ConfigError("aggregator.plaintext: true turns TLS off; remove it or remove aggregator.tls/operator_tls")
    return AggregatorConfig(
        address=address, data_dir=(data_dir if data_dir.is_absolute() else base_dir / data_dir).resolve(),
        metrics_port=metrics_port, plaintext=plaintext,
        operator_tls=_client_tls(m["operator_tls"], "aggregator.operator_tls", base_dir) if "operator_tls" in m else None,
        **(_server_tls(m["tls"], "aggregator.tls", base_dir) if "tls" in m else {}),
    )


def _server_tls(raw: Any, where: str, base_dir: Path) -> dict[str, Path]:
    """The centre's TLS: its certificate and key, and the CA its clients' certificates chain to."""
    tls = _mapping(raw, where)
    if isinstance(tls, dict) and "client_ca" not in tls and {"cert", "key"} <= set(tls):
        raise ConfigError(f"{where}.client_ca: missing: the centre requires client certificates (mutual TLS); "
                          "name the CA that signs the regions' certificates")
    _keys(tls, where, required={"cert", "key", "client_ca"}, optional=set())
    return {f"tls_{k}": _path(tls[k], f"{where}.{k}", base_dir) for k in ("cert", "key", "client_ca")}


def _client_tls(raw: Any, where: str, base_dir: Path) -> ClientTLSConfig:
    tls = _mapping(raw, where)
    _keys(tls, where, required={"cert", "key", "ca"}, optional=set())
    return ClientTLSConfig(*(_path(tls[k], f"{where}.{k}", base_dir) for k in ("cert", "key", "ca")))


def _path(raw: Any, where: str, base_dir: Path) -> Path:
    p = Path(_string(raw, where))
    return p if p.is_absolute() else base_dir / p


def _privacy(raw: Any) -> PrivacyConfig:
    if raw is None:
        return PrivacyConfig()
    m = _mapping(raw, "privacy")
    _keys(m, "privacy", required=set(), optional={"epsilon_per_month", "minimum_cohort", "delta", "delta_per_month",
                                                             "max_entities"})
    eps = m.get("epsilon_per_month", PrivacyConfig.epsilon_per_month)
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps > 0:
        raise ConfigError(f"privacy.epsilon_per_month: expected a positive number, got {eps!r}")
    cohort = m.get("minimum_cohort", PrivacyConfig.minimum_cohort)
    if not isinstance(cohort, int) or isinstance(cohort, bool) or cohort < 1:
        raise ConfigError(f"privacy.minimum_cohort: expected a positive integer, got {cohort!r}")
    deltas = {}
    for name in ("delta", "delta_per_month"):
        v = m.get(name, getattr(PrivacyConfig, name))
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v < 1:
            raise ConfigError(f"privacy.{name}: expected a number between 0 and 1, got {v!r}")
        deltas[name] = float(v)
    if deltas["delta"] > deltas["delta_per_month"]:
        raise ConfigError("privacy.delta: one release's δ exceeds privacy.delta_per_month")
    cap = m.get("max_entities", PrivacyConfig.max_entities)
    if not isinstance(cap, int) or isinstance(cap, bool) or not cohort <= cap <= 10**12:
        raise ConfigError(f"privacy.max_entities: expected an integer between minimum_cohort and 10¹², got {cap!r}")
    return PrivacyConfig(epsilon_per_month=float(eps), minimum_cohort=cohort, max_entities=cap, **deltas)


def _auth(raw: Any, base_dir: Path, codes: set[str]) -> tuple[TokenConfig, ...]:
    if raw is None:
        return ()
    m = _mapping(raw, "auth")
    _keys(m, "auth", required={"tokens"}, optional=set())
    if not isinstance(m["tokens"], list):
        raise ConfigError("auth.tokens: expected a list of tokens")
    tokens = []
    names: set[str] = set()
    for i, t in enumerate(m["tokens"]):
        where = f"auth.tokens[{i}]"
        tm = _mapping(t, where)
        _keys(tm, where, required={"name", "regions", "roles"}, optional={"secret_env", "secret_file", "purposes"})
        name = _string(tm["name"], f"{where}.name")
        if name in names:
            raise ConfigError(f"{where}.name: token {name!r} is defined twice")
        names.add(name)
        if ("secret_env" in tm) == ("secret_file" in tm):
            raise ConfigError(f"{where}: give exactly one of secret_env or secret_file (never the secret itself)")
        regions = tm["regions"]
        if not isinstance(regions, list) or not regions:
            raise ConfigError(f"{where}.regions: expected a non-empty list of region codes or ['*']")
        allowed = tuple(_string(r, f"{where}.regions").upper() for r in regions)
        for r in allowed:
            if r != "*" and r not in codes:
                raise ConfigError(f"{where}.regions: unknown region {r!r}")
        roles = _roles(tm["roles"], f"{where}.roles")
        violation = region_rule_violation(roles, allowed)
        if violation:
            raise ConfigError(f"{where}.regions: {violation}")
        purposes = _purposes(tm.get("purposes"), roles, f"{where}.purposes")
        secret_file = None
        if "secret_file" in tm:
            secret_file = Path(_string(tm["secret_file"], f"{where}.secret_file"))
            secret_file = secret_file if secret_file.is_absolute() else base_dir / secret_file
        tokens.append(
            TokenConfig(
                name=name,
                regions=allowed,
                secret_env=_string(tm["secret_env"], f"{where}.secret_env") if "secret_env" in tm else None,
                secret_file=secret_file,
                roles=roles,
                purposes=purposes,
            )
        )
    return tuple(tokens)


def _purposes(raw: Any, roles: frozenset[Role], where: str) -> frozenset[Purpose]:
    """What a lookup credential's calls may be for; not given: serving alone (lookups for an app)."""
    if raw is None:
        return frozenset({Purpose.SERVING}) if Role.LOOKUP in roles else frozenset()
    if Role.LOOKUP not in roles:
        raise ConfigError(f"{where}: only a credential with role lookup names purposes (lookups and scores do)")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: expected a non-empty list of purposes ({', '.join(p.value for p in Purpose)})")
    return frozenset(Purpose.parse(p, where) for p in raw)


def _roles(raw: Any, where: str) -> frozenset[Role]:
    """A credential's roles: a non-empty list of known role names (deny by default: no role, no call)."""
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: expected a non-empty list of roles ({role_names()})")
    roles = set()
    for r in raw:
        name = _string(r, where)
        try:
            roles.add(Role(name))
        except ValueError:
            raise ConfigError(f"{where}: unknown role {name!r}; roles are {role_names()}") from None
    return frozenset(roles)


def _serving(raw: Any, where: str, base_dir: Path) -> ServingConfig:
    if raw is None:
        return ServingConfig()
    m = _mapping(raw, where)
    ints = {"max_entities", "online_timeout_ms", "breaker_failures", "metrics_port", "http_port", "workers",
            "lookup_threads", "max_concurrent_calls", "audit_retention_days"}
    _keys(m, where, required=set(),
          optional=ints | {"breaker_reset_seconds", "tls", "models", "lookup_path", "audit_entity_ids"})
    values: dict[str, Any] = {}
    for k in ints & set(m):
        v = m[k]
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ConfigError(f"{where}.{k}: expected a positive integer, got {v!r}")
        values[k] = v
    for k in ("metrics_port", "http_port"):
        if values.get(k, 0) > 65535:
            raise ConfigError(f"{where}.{k}: expected a port number (1-65535), got {values[k]}")
    if "http_port" in values and values["http_port"] == values.get("metrics_port"):
        raise ConfigError(f"{where}.http_port: {values['http_port']} is already serving.metrics_port")
    if "breaker_reset_seconds" in m:
        v = m["breaker_reset_seconds"]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
            raise ConfigError(f"{where}.breaker_reset_seconds: expected a positive number, got {v!r}")
        values["breaker_reset_seconds"] = float(v)
    if "lookup_path" in m:
        v = m["lookup_path"]
        if v not in LOOKUP_PATHS:
            raise ConfigError(f"{where}.lookup_path: expected one of {', '.join(LOOKUP_PATHS)}, got {v!r}")
        values["lookup_path"] = v
    if "audit_entity_ids" in m:
        if not isinstance(m["audit_entity_ids"], bool):
            raise ConfigError(f"{where}.audit_entity_ids: expected true or false, got {m['audit_entity_ids']!r}")
        values["audit_entity_ids"] = m["audit_entity_ids"]
    if "tls" in m:
        values.update(_tls(m["tls"], f"{where}.tls", base_dir))
    if "models" in m:
        values["models"] = _models(m["models"], f"{where}.models")
    return ServingConfig(**values)


def _models(raw: Any, where: str) -> ModelsConfig:
    m = _mapping(raw, where)
    _keys(m, where, required={"registry_token"},
          optional={"poll_seconds", "prediction_retention_days", "log_queue_batches"})
    values: dict[str, Any] = {"registry_token": _string(m["registry_token"], f"{where}.registry_token")}
    if "poll_seconds" in m:
        v = m["poll_seconds"]
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v < float("inf"):
            raise ConfigError(f"{where}.poll_seconds: expected a positive number, got {v!r}")
        values["poll_seconds"] = float(v)
    for k in ("prediction_retention_days", "log_queue_batches"):
        if k in m:
            v = m[k]
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"{where}.{k}: expected a positive integer, got {v!r}")
            values[k] = v
    return ModelsConfig(**values)


def _tls(raw: Any, where: str, base_dir: Path) -> dict[str, Path]:
    tls = _mapping(raw, where)
    _keys(tls, where, required={"cert", "key"}, optional=set())
    out = {}
    for k in ("cert", "key"):
        p = Path(_string(tls[k], f"{where}.{k}"))
        out[f"tls_{k}"] = p if p.is_absolute() else base_dir / p
    return out


def _region(raw: Any, where: str, base_dir: Path) -> RegionConfig:
    m = _mapping(raw, where)
    _keys(
        m,
        where,
        required={"code", "jurisdiction", "law", "timezone", "data_dir", "online_store", "serving_address"},
        optional={"serving", "materialization", "centre_tls", "consent"},
    )
    code = _string(m["code"], f"{where}.code").upper()
    known = JURISDICTIONS.get(code)
    if known is None:
        raise ConfigError(
            f"{where}.code: unknown region {code!r}; expected one of {', '.join(JURISDICTIONS)}"
        )
    jurisdiction = _string(m["jurisdiction"], f"{where}.jurisdiction")
    if jurisdiction != known.name:
        raise ConfigError(
            f"{where}.jurisdiction: region {code} is {known.name!r}, not {jurisdiction!r}"
        )
    law = _string(m["law"], f"{where}.law")
    if law != known.law:
        raise ConfigError(f"{where}.law: region {code} is governed by {known.law!r}, not {law!r}")
    tz = _string(m["timezone"], f"{where}.timezone")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{where}.timezone: unknown time zone {tz!r}") from None
    data_dir = Path(_string(m["data_dir"], f"{where}.data_dir"))
    if not data_dir.is_absolute():
        data_dir = base_dir / data_dir
    data_dir = data_dir.resolve()
    online = _online_store(m["online_store"], f"{where}.online_store", data_dir)
    address = _string(m["serving_address"], f"{where}.serving_address")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{where}.serving_address: expected host:port, got {address!r}")
    serving = _serving(m.get("serving"), f"{where}.serving", base_dir)
    if serving.http_port is not None and serving.http_port == int(port):
        raise ConfigError(f"{where}.serving.http_port: {port} is already the gRPC port of serving_address")
    return RegionConfig(
        code=code,
        jurisdiction=jurisdiction,
        law=law,
        timezone=tz,
        data_dir=data_dir,
        online_store=online,
        serving_address=address,
        serving=serving,
        materialization=_materialization(m.get("materialization"), f"{where}.materialization"),
        centre_tls=_client_tls(m["centre_tls"], f"{where}.centre_tls", base_dir) if "centre_tls" in m else None,
        consent=parse_consent(m.get("consent"), f"{where}.consent"),
    )


def _materialization(raw: Any, where: str) -> MaterializationConfig:
    if raw is None:
        return MaterializationConfig()
    m = _mapping(raw, where)
    spark_only = {"spark_master", "spark_conf", "partitions"}
    _keys(m, where, required=set(), optional={"engine", "lateness_hours", "on_contract_violation"} | spark_only)
    engine = _string(m.get("engine", MaterializationConfig.engine), f"{where}.engine")
    if engine not in ("local", "spark"):
        raise ConfigError(f"{where}.engine: expected local or spark, got {engine!r}")
    if engine == "local" and spark_only & set(m):
        raise ConfigError(f"{where}: spark_master, spark_conf and partitions apply to engine: spark only")
    lateness = m.get("lateness_hours", MaterializationConfig.lateness_hours)
    if (not isinstance(lateness, (int, float)) or isinstance(lateness, bool) or not math.isfinite(lateness)
            or not 0 <= lateness <= MAX_LATENESS_HOURS):
        raise ConfigError(f"{where}.lateness_hours: expected a number of hours from 0 to {MAX_LATENESS_HOURS} "
                          f"(how far before the last job's end an incremental job reads again), got {lateness!r}")
    violation = m.get("on_contract_violation", MaterializationConfig.on_contract_violation)
    if violation not in ("fail", "quarantine"):
        raise ConfigError(f"{where}.on_contract_violation: expected fail or quarantine, got {violation!r}")
    if violation == "quarantine" and engine == "spark":
        raise ConfigError(f"{where}.on_contract_violation: quarantine needs engine: local (Feast's Spark engine "
                          "reads the sources itself)")
    master = _string(m.get("spark_master", MaterializationConfig.spark_master), f"{where}.spark_master")
    conf = m.get("spark_conf", {})
    if not isinstance(conf, dict) or not all(isinstance(k, str) and isinstance(v, (str, int, float, bool))
                                             for k, v in conf.items()):
        raise ConfigError(f"{where}.spark_conf: expected a mapping of Spark settings to values")
    partitions = m.get("partitions", 0)
    if not isinstance(partitions, int) or isinstance(partitions, bool) or partitions < 0:
        raise ConfigError(f"{where}.partitions: expected a non-negative integer, got {partitions!r}")
    return MaterializationConfig(engine, master, tuple(sorted((k, str(v)) for k, v in conf.items())), partitions,
                                 float(lateness), violation)


def _online_store(raw: Any, where: str, data_dir: Path) -> OnlineStoreConfig:
    m = _mapping(raw, where)
    kind = _string(m.get("type"), f"{where}.type") if "type" in m else None
    if kind is None:
        raise ConfigError(f"{where}.type: missing (one of {', '.join(ONLINE_STORE_TYPES)})")
    if kind == "sqlite":
        _keys(m, where, required={"type"}, optional={"path"})
        path = Path(_string(m["path"], f"{where}.path")) if "path" in m else data_dir / "online_store.db"
        if not path.is_absolute():
            path = data_dir / path
        return OnlineStoreConfig(type="sqlite", path=path.resolve())
    if kind == "redis":
        _keys(m, where, required={"type", "url"}, optional={"key_ttl_seconds"})
        url = _string(m["url"], f"{where}.url")
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss") or not parts.hostname:
            raise ConfigError(f"{where}.url: expected redis://host:port/db, got {url!r}")
        try:
            _ = parts.port  # raises on a non-numeric port
        except ValueError:
            raise ConfigError(f"{where}.url: port is not a number in {url!r}") from None
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise ConfigError(f"{where}.url: database must be a number, got {db!r}")
        ttl = m.get("key_ttl_seconds")
        if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0):
            raise ConfigError(f"{where}.key_ttl_seconds: expected a positive integer, got {ttl!r}")
        return OnlineStoreConfig(type="redis", url=url, key_ttl_seconds=ttl)
    if kind == "redis_cluster":
        _keys(m, where, required={"type", "nodes"}, optional={"key_ttl_seconds", "password_env"})
        raw_nodes = m["nodes"]
        if not isinstance(raw_nodes, list) or not raw_nodes:
            raise ConfigError(f"{where}.nodes: expected a list of host:port startup nodes")
        nodes = []
        for n in raw_nodes:
            host, sep, port = str(n).rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ConfigError(f"{where}.nodes: expected host:port, got {n!r}")
            nodes.append((host, int(port)))
        ttl = m.get("key_ttl_seconds")
        if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool) or ttl <= 0):
            raise ConfigError(f"{where}.key_ttl_seconds: expected a positive integer, got {ttl!r}")
        password_env = _string(m["password_env"], f"{where}.password_env") if "password_env" in m else None
        return OnlineStoreConfig(type="redis_cluster", nodes=tuple(nodes), key_ttl_seconds=ttl,
                                 password_env=password_env)
    raise ConfigError(
        f"{where}.type: unknown online store {kind!r}; expected one of {', '.join(ONLINE_STORE_TYPES)}"
    )


def _check_unique(regions: tuple[RegionConfig, ...]) -> None:
    seen_codes: dict[str, int] = {}
    seen_dirs: dict[Path, int] = {}
    seen_stores: dict[tuple[str, int, int], int] = {}
    seen_sqlite: dict[Path, int] = {}
    seen_addresses: dict[str, int] = {}
    for i, r in enumerate(regions):
        if r.code in seen_codes:
            raise ConfigError(f"regions[{i}].code: region {r.code} is already defined at regions[{seen_codes[r.code]}]")
        seen_codes[r.code] = i
        for j, other in seen_dirs.items():
            if r.data_dir == j or r.data_dir in j.parents or j in r.data_dir.parents:
                raise ConfigError(
                    f"regions[{i}].data_dir: {r.data_dir} overlaps the data directory of regions[{other}]"
                )
        seen_dirs[r.data_dir] = i
        store = r.online_store
        if store.type == "redis":
            key = (store.redis_host, store.redis_port, store.redis_db)
            if key in seen_stores:
                raise ConfigError(
                    f"regions[{i}].online_store.url: Redis database {store.url} is already used by regions[{seen_stores[key]}]"
                )
            seen_stores[key] = i
        elif store.type == "redis_cluster":
            for node in store.nodes:  # a cluster has one database: two regions cannot share it
                key = (node[0], node[1], 0)
                if key in seen_stores:
                    raise ConfigError(
                        f"regions[{i}].online_store.nodes: {node[0]}:{node[1]} is already used by regions[{seen_stores[key]}]"
                    )
                seen_stores[key] = i
        elif store.path is not None:
            if store.path in seen_sqlite:
                raise ConfigError(
                    f"regions[{i}].online_store.path: {store.path} is already used by regions[{seen_sqlite[store.path]}]"
                )
            seen_sqlite[store.path] = i
        if r.serving_address in seen_addresses:
            raise ConfigError(
                f"regions[{i}].serving_address: {r.serving_address} is already used by regions[{seen_addresses[r.serving_address]}]"
            )
        seen_addresses[r.serving_address] = i


def _mapping(raw: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    return raw


def _keys(m: Mapping[str, Any], where: str, *, required: set[str], optional: set[str]) -> None:
    for k in m:
        if k not in required and k not in optional:
            allowed = ", ".join(sorted(required | optional))
            raise ConfigError(f"{where}.{k}: unknown key (allowed: {allowed})")
    for k in sorted(required):
        if k not in m:
            raise ConfigError(f"{where}.{k}: missing")


def _string(raw: Any, where: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(f"{where}: expected a non-empty string, got {raw!r}")
    return raw.strip()
