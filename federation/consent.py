"""Purposes of use and a region's consent policy: which purposes need a person's consent there.

The purposes are a closed list, the same in every region, so a consent record, a policy and a
use of data name a purpose the same way everywhere. Which of them need consent, and what holds for
a person of whom no record exists, is the region's law's to say (its ``consent:`` section):

```yaml
consent: {required: [global_statistics, local_training], default: deny}
```

A purpose not listed rests on another lawful basis (a contract, a legitimate interest) and is not
filtered. ``default: deny`` leaves out everyone without a record granting it; ``allow`` only those
whose record says they withdrew (an opt-out regime).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from fedstore.federation.errors import ConfigError


class Purpose(str, Enum):
    SERVING = "serving"  # online lookups and scoring (personalisation)
    GLOBAL_STATISTICS = "global_statistics"  # statistics released to the centre: features and training statistics
    LOCAL_TRAINING = "local_training"  # training sets built inside the region
    EVALUATION = "evaluation"  # a candidate model's score histograms released to the centre

    @classmethod
    def parse(cls, raw: object, where: str) -> "Purpose":
        try:
            return cls(raw)
        except ValueError:
            raise ConfigError(f"{where}: unknown purpose {raw!r}; expected one of "
                              f"{', '.join(p.value for p in cls)}") from None


DEFAULTS = ("deny", "allow")

# the gRPC metadata key (HTTP header) a lookup or a score names its purpose in (federation.access)
PURPOSE_METADATA = "fedstore-purpose"


@dataclass(frozen=True)
class ConsentBasis:
    """What one region's release rested on: the purpose its consent gate filtered for, whether its
    law makes that purpose need consent, and the opaque id of the consent snapshot (the region maps
    it to its records' fingerprint). Carried release → centre → registry, checked at promotion."""

    purpose: str
    consent_required: bool
    snapshot_id: str

    def as_dict(self) -> dict[str, Any]:
        return {"purpose": self.purpose, "consent_required": self.consent_required, "snapshot_id": self.snapshot_id}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "ConsentBasis":
        return cls(str(raw["purpose"]), bool(raw["consent_required"]), str(raw["snapshot_id"]))


@dataclass(frozen=True)
class ConsentPolicy:
    required: frozenset[Purpose] = frozenset()  # purposes that need a person's consent in this region
    default: str = "deny"  # what holds for a person without a record: deny | allow

    def requires(self, purpose: Purpose) -> bool:
        return purpose in self.required

    @property
    def default_allows(self) -> bool:
        return self.default == "allow"


def parse_consent(raw: Any, where: str) -> ConsentPolicy:
    """A region's ``consent:`` section; absent: no purpose needs consent (nothing is filtered)."""
    if raw is None:
        return ConsentPolicy()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping like {{required: [global_statistics], default: deny}}, "
                          f"got {type(raw).__name__}")
    unknown = sorted(set(raw) - {"required", "default"})
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (allowed: default, required)")
    listed = raw.get("required", [])
    if not isinstance(listed, list):
        raise ConfigError(f"{where}.required: expected a list of purposes "
                          f"({', '.join(p.value for p in Purpose)}), got {listed!r}")
    required = [Purpose.parse(p, f"{where}.required") for p in listed]
    if len(set(required)) != len(required):
        raise ConfigError(f"{where}.required: a purpose is listed twice")
    default = raw.get("default", "deny")
    if default not in DEFAULTS:
        raise ConfigError(f"{where}.default: expected deny or allow (what holds for a person without a consent "
                          f"record), got {default!r}")
    return ConsentPolicy(frozenset(required), default)
