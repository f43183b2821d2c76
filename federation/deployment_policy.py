"""Per-jurisdiction deployment policy: what a model serving in a region may have learnt from.

```yaml
deployment_policy:
  ID: {allowed_sources: [ID], shadow_first: true, min_metrics: {auc: 0.65}}
  MY: {allowed_sources: "*", gates: {min_outcomes: 500, margin: 0.02}, require_consent_basis: [global_statistics]}
```
A region without an entry gets the defaults below: any anonymised source, shadow first, no metric
minimum, no consent basis required. ``require_consent_basis`` lists purposes every region whose
statistics trained a model must have released them under consent for (its law required consent
for the purpose, and the release recorded that basis): promotion refuses a model without it. Both the registry (which enforces it) and operators (who read it) use this module.

Every region has the time gate: a version leaves a canary stage after 48 h there at the earliest
(``TIME_GATE``, the default of a policy without ``gates``). ``gates`` turns on, besides it, the gates
that follow outcome evidence (``EvidenceGates``; ``gates: {}`` takes every default): judged outcomes
in the current stage, no regression beyond ``margin`` against the version serving ``full`` (a
confidence bound, not a point estimate), the readiness checklist before ``full``, and automatic
rollback of a canary whose evidence is worse beyond the margin. ``gates: {evidence: false, ...}``
keeps the time gate alone, with its hours as given (``min_hours_in_stage: {canary_5: 0, canary_25:
0}`` for a demo that ramps in minutes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fedstore.federation.consent import ConsentBasis, Purpose
from fedstore.federation.errors import ConfigError

METRICS = ("auc", "accuracy")
# what a version needs recorded before it serves full (``registry readiness``)
READINESS_ITEMS = ("documentation", "monitoring", "rollback_procedure", "escalation_contact", "retraining_trigger")
CANARY_HOURS = 48.0


@dataclass(frozen=True)
class EvidenceGates:
    # hours a version serves a stage before it may leave it (the canaries: 48 h)
    min_hours_in_stage: Mapping[str, float] = field(
        default_factory=lambda: {"canary_5": CANARY_HOURS, "canary_25": CANARY_HOURS})
    min_outcomes: int = 200  # judged outcomes (the released, noisy count) of the version in its stage
    margin: float = 0.02  # AUC a candidate may lose against the incumbent, whole region or any segment
    confidence: float = 0.90  # of the bound on the difference (two-sided interval)
    readiness: bool = True  # full needs the production-readiness checklist
    auto_rollback: bool = True  # a canary worse beyond the margin (its upper bound) is rolled back
    evidence: bool = True  # False: the time gate alone (min_outcomes and regression not checked)


# a policy that names no gates: 48 h in each canary stage, nothing asked of the evidence
TIME_GATE = EvidenceGates(readiness=False, auto_rollback=False, evidence=False)


@dataclass(frozen=True)
class DeploymentPolicy:
    allowed_sources: tuple[str, ...] | None = None  # region codes; None = any region of the federation
    shadow_first: bool = True  # a version must have run in shadow here before it takes traffic
    min_metrics: Mapping[str, float] = field(default_factory=dict)  # this region's own evaluation must meet them
    gates: EvidenceGates = TIME_GATE  # the time gate alone unless the policy names its gates
    # purposes every contributing region's release must have rested on consent for (a basis the
    # registry recorded, with consent required there): e.g. ("global_statistics",) for cross-border training
    require_consent_basis: tuple[str, ...] = ()

    def allows_source(self, code: str) -> bool:
        return self.allowed_sources is None or code in self.allowed_sources

    def consent_basis_lacking(
        self, sources: Iterable[str], basis: Mapping[str, ConsentBasis]
    ) -> tuple[str, list[str]] | None:
        """The first required purpose a model learnt from ``sources`` (with the consent basis
        recorded per region) lacks, and from which regions and why; None when it meets
        ``require_consent_basis``. The registry checks it at promotion, the
        region's serving node again at load. A secure-aggregation sum ``A+B+C`` is judged per
        member region (each member's own basis; the sum's, for a member that recorded none)."""
        for purpose in self.require_consent_basis:
            lacking = []
            for source in sources:
                for member in source.split("+"):
                    b = basis.get(member) or basis.get(source)
                    if b is None:
                        lacking.append(f"{member} (its release recorded no consent basis)")
                    elif b.purpose != purpose:
                        lacking.append(f"{member} (its release rested on {b.purpose})")
                    elif not b.consent_required:
                        lacking.append(f"{member} (its law does not make {purpose} need consent: no one's consent "
                                       "was checked)")
            if lacking:
                return purpose, lacking
        return None


def parse_policies(raw: Any, codes: set[str]) -> dict[str, DeploymentPolicy]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError("deployment_policy: expected a mapping of region code to policy")
    out = {}
    for code, entry in raw.items():
        where = f"deployment_policy.{code}"
        if code not in codes:
            raise ConfigError(f"{where}: unknown region {code!r}")
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a mapping")
        unknown = set(entry) - {"allowed_sources", "shadow_first", "min_metrics", "gates", "require_consent_basis"}
        if unknown:
            raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        sources = entry.get("allowed_sources", "*")
        if sources == "*":
            allowed = None
        elif isinstance(sources, list) and all(isinstance(s, str) for s in sources):
            bad = [s for s in sources if s not in codes]
            if bad:
                raise ConfigError(f"{where}.allowed_sources: unknown region {bad[0]!r}")
            allowed = tuple(sources)
        else:
            raise ConfigError(f"{where}.allowed_sources: expected \"*\" or a list of region codes")
        shadow = entry.get("shadow_first", True)
        if not isinstance(shadow, bool):
            raise ConfigError(f"{where}.shadow_first: expected true or false")
        metrics = entry.get("min_metrics", {})
        if not isinstance(metrics, dict):
            raise ConfigError(f"{where}.min_metrics: expected a mapping of metric to minimum")
        for name, v in metrics.items():
            if name not in METRICS:
                raise ConfigError(f"{where}.min_metrics: unknown metric {name!r} (known: {', '.join(METRICS)})")
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 <= v <= 1:
                raise ConfigError(f"{where}.min_metrics.{name}: expected a number between 0 and 1")
        gates = _gates(entry["gates"], f"{where}.gates") if "gates" in entry else TIME_GATE
        basis = entry.get("require_consent_basis", [])
        if not isinstance(basis, list):
            raise ConfigError(f"{where}.require_consent_basis: expected a list of purposes, e.g. [global_statistics]")
        required = tuple(dict.fromkeys(Purpose.parse(p, f"{where}.require_consent_basis").value for p in basis))
        out[code] = DeploymentPolicy(allowed, shadow, {k: float(v) for k, v in metrics.items()}, gates, required)
    return out


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _gates(raw: Any, where: str) -> EvidenceGates:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping")
    known = {"min_hours_in_stage", "min_outcomes", "margin", "confidence", "readiness", "auto_rollback", "evidence"}
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r}")
    default = EvidenceGates()
    hours = raw.get("min_hours_in_stage", dict(default.min_hours_in_stage))
    if not isinstance(hours, dict):
        raise ConfigError(f"{where}.min_hours_in_stage: expected a mapping of stage to hours")
    for stage, h in hours.items():
        if stage not in ("shadow", "canary_5", "canary_25"):
            raise ConfigError(f"{where}.min_hours_in_stage: {stage!r} is not a stage a version leaves by promotion")
        if not _number(h) or not 0 <= h <= 24 * 366:
            raise ConfigError(f"{where}.min_hours_in_stage.{stage}: expected hours between 0 and 8784")
    outcomes = raw.get("min_outcomes", default.min_outcomes)
    if not isinstance(outcomes, int) or isinstance(outcomes, bool) or outcomes < 0:
        raise ConfigError(f"{where}.min_outcomes: expected a whole number ≥ 0")
    margin = raw.get("margin", default.margin)
    if not _number(margin) or not 0 <= margin < 1:
        raise ConfigError(f"{where}.margin: expected an AUC difference in [0, 1)")
    confidence = raw.get("confidence", default.confidence)
    if not _number(confidence) or not 0.5 <= confidence < 1:
        raise ConfigError(f"{where}.confidence: expected a probability in [0.5, 1)")
    flags = {}
    for key in ("readiness", "auto_rollback", "evidence"):
        flags[key] = raw.get(key, getattr(default, key))
        if not isinstance(flags[key], bool):
            raise ConfigError(f"{where}.{key}: expected true or false")
    if not flags["evidence"]:  # the time gate alone: nothing else may ask for evidence
        asked = sorted(k for k in ("min_outcomes", "margin", "confidence", "readiness", "auto_rollback") if raw.get(k))
        if asked:
            raise ConfigError(f"{where}.{asked[0]}: needs evidence: true (evidence: false keeps the time gate alone)")
        flags.update(readiness=False, auto_rollback=False)
    return EvidenceGates({k: float(v) for k, v in hours.items()}, outcomes, float(margin), float(confidence),
                         flags["readiness"], flags["auto_rollback"], flags["evidence"])
