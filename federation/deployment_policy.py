"""Per-jurisdiction deployment policy: what a model serving in a region may have learnt from.

```yaml
deployment_policy:
  ID: {allowed_sources: [ID], shadow_first: true, min_metrics: {auc: 0.65}}
  MY: {allowed_sources: "*"}
```
A region without an entry gets the defaults below: any anonymised source, shadow first, no metric
minimum. Both the registry (which enforces it) and operators (who read it) use this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fedstore.federation.errors import ConfigError

METRICS = ("auc", "accuracy")


@dataclass(frozen=True)
class DeploymentPolicy:
    allowed_sources: tuple[str, ...] | None = None  # region codes; None = any region of the federation
    shadow_first: bool = True  # a version must have run in shadow here before it takes traffic
    min_metrics: Mapping[str, float] = field(default_factory=dict)  # this region's own evaluation must meet them

    def allows_source(self, code: str) -> bool:
        return self.allowed_sources is None or code in self.allowed_sources


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
        unknown = set(entry) - {"allowed_sources", "shadow_first", "min_metrics"}
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
        out[code] = DeploymentPolicy(allowed, shadow, {k: float(v) for k, v in metrics.items()})
    return out
