"""Monitoring settings, federation-wide: drift thresholds, seasonal calendars, gaps, triggers.

```yaml
monitoring:
  psi_threshold: 0.2           # PSI above this is drift
  trailing_days: 14            # the region's own baseline: this many clean days before the date
  persist_days: 3              # drift on this many consecutive judged days raises a retraining trigger
  min_rows: 50                 # a day with fewer values for a feature is not judged
  drop_ratio: 0.5              # a day with fewer rows than this share of the trailing median is a gap
  freshness_hours: 26          # a view materialised longer ago than this is stale
  festival_padding_days: [3, 7]  # days before / after a festival that belong to its window
  festivals: [eid al-fitr, chinese new year, lunar new year, songkran, diwali, christmas]
  commercial_events:
    - {name: "11.11", month: 11, day: 11, before: 1, after: 7}
    - {name: "year-end sale", month: 12, day: 20, days: 12}
  trigger_command: ["/usr/local/bin/open-retraining-ticket"]   # gets the trigger as JSON on stdin
  scores:                      # the deployed models' scores, from the region's prediction log
    min_predictions: 500       # a model's day with fewer scores is not judged
    persist_days: 1            # score drift on this many consecutive judged days raises an alert
    disagreement_psi: 0.2      # shadow vs. the model that answered, on the same entities: PSI above this …
    disagreement_mean_abs: 0.5 # … or a mean |shadow − served| score (log-odds) above this is an alert
    rollback_canary: false     # `region score-drift` rolls a canary whose scores drift back (as --rollback-canary)
```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedstore.federation.errors import ConfigError


@dataclass(frozen=True)
class CommercialEvent:
    name: str
    month: int
    day: int
    before: int = 1  # days of the window before the event day
    after: int = 7  # … and after the last event day (7-day rolling features carry it a week)
    days: int = 1  # length of the event itself


@dataclass(frozen=True)
class ScoreMonitoringConfig:
    # PSI over the agreed score edges has a noise floor of about (bins used) / n: at 500 scores a day
    # and some 20 bins used, ~0.04, well under the 0.2 threshold
    min_predictions: int = 500
    # a model's scores answer people: one day of drift is worth an alert (features wait for 3)
    persist_days: int = 1
    disagreement_psi: float = 0.2
    disagreement_mean_abs: float = 0.5  # log-odds: the shadow's odds differ by a factor e^0.5 ≈ 1.65 on average
    rollback_canary: bool = False


@dataclass(frozen=True)
class MonitoringConfig:
    psi_threshold: float = 0.2
    trailing_days: int = 14
    persist_days: int = 3
    min_rows: int = 50
    drop_ratio: float = 0.5
    freshness_hours: float = 26.0
    # days before / after a festival in its window; after is long because 7-day rolling features
    # carry a holiday for a week after it
    festival_padding_days: tuple[int, int] = (3, 7)
    # matched case-insensitively inside the `holidays` package's English names, per jurisdiction
    festivals: tuple[str, ...] = ("eid al-fitr", "chinese new year", "lunar new year", "songkran", "diwali",
                                  "deepavali", "christmas")
    commercial_events: tuple[CommercialEvent, ...] = (
        CommercialEvent("11.11 sale", 11, 11), CommercialEvent("12.12 sale", 12, 12),
        CommercialEvent("year-end sale", 12, 20, before=0, days=12),
    )
    trigger_command: tuple[str, ...] = ()
    scores: ScoreMonitoringConfig = ScoreMonitoringConfig()


_NUMBERS = {"psi_threshold": float, "trailing_days": int, "persist_days": int, "min_rows": int,
            "drop_ratio": float, "freshness_hours": float}


def parse_monitoring(raw: Any) -> MonitoringConfig:
    if raw is None:
        return MonitoringConfig()
    if not isinstance(raw, dict):
        raise ConfigError("monitoring: expected a mapping")
    known = set(_NUMBERS) | {"festival_padding_days", "festivals", "commercial_events", "trigger_command", "scores"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"monitoring: unknown key {unknown[0]!r}")
    values: dict[str, Any] = {}
    for key, kind in _NUMBERS.items():
        if key in raw:
            v = raw[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not isinstance(v, int)) or v <= 0:
                raise ConfigError(f"monitoring.{key}: expected a positive {'integer' if kind is int else 'number'}, got {v!r}")
            values[key] = kind(v)
    if values.get("drop_ratio", 0.5) >= 1:
        raise ConfigError("monitoring.drop_ratio: expected a share below 1")
    if "festival_padding_days" in raw:
        pad = raw["festival_padding_days"]
        if not (isinstance(pad, list) and len(pad) == 2 and all(isinstance(p, int) and p >= 0 for p in pad)):
            raise ConfigError("monitoring.festival_padding_days: expected [days before, days after]")
        values["festival_padding_days"] = tuple(pad)
    if "festivals" in raw:
        f = raw["festivals"]
        if not (isinstance(f, list) and all(isinstance(x, str) and x.strip() for x in f)):
            raise ConfigError("monitoring.festivals: expected a list of holiday names")
        values["festivals"] = tuple(x.casefold() for x in f)
    if "commercial_events" in raw:
        values["commercial_events"] = tuple(_event(e, i) for i, e in enumerate(raw["commercial_events"] or []))
    if "trigger_command" in raw:
        cmd = raw["trigger_command"]
        if not (isinstance(cmd, list) and cmd and all(isinstance(x, str) for x in cmd)):
            raise ConfigError("monitoring.trigger_command: expected a command as a list of strings")
        values["trigger_command"] = tuple(cmd)
    if "scores" in raw:
        values["scores"] = _scores(raw["scores"])
    return MonitoringConfig(**values)


_SCORE_NUMBERS = {"min_predictions": int, "persist_days": int, "disagreement_psi": float, "disagreement_mean_abs": float}


def _scores(raw: Any) -> ScoreMonitoringConfig:
    if raw is None:
        return ScoreMonitoringConfig()
    if not isinstance(raw, dict):
        raise ConfigError("monitoring.scores: expected a mapping")
    unknown = sorted(set(raw) - set(_SCORE_NUMBERS) - {"rollback_canary"})
    if unknown:
        raise ConfigError(f"monitoring.scores: unknown key {unknown[0]!r}")
    values: dict[str, Any] = {}
    if "rollback_canary" in raw:
        if not isinstance(raw["rollback_canary"], bool):
            raise ConfigError(f"monitoring.scores.rollback_canary: expected true or false, got {raw['rollback_canary']!r}")
        values["rollback_canary"] = raw["rollback_canary"]
    for key, kind in _SCORE_NUMBERS.items():
        if key in raw:
            v = raw[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not isinstance(v, int)) or v <= 0:
                raise ConfigError(f"monitoring.scores.{key}: expected a positive "
                                  f"{'integer' if kind is int else 'number'}, got {v!r}")
            values[key] = kind(v)
    return ScoreMonitoringConfig(**values)


def _event(raw: Any, i: int) -> CommercialEvent:
    where = f"monitoring.commercial_events[{i}]"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping")
    unknown = sorted(set(raw) - {"name", "month", "day", "before", "after", "days"})
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}")
    for key in ("name", "month", "day"):
        if key not in raw:
            raise ConfigError(f"{where}.{key}: missing")
    defaults = CommercialEvent("", 0, 0)  # an omitted window edge is the dataclass's (after: a week), not 1
    ints = {k: raw.get(k, d) for k, d in (("month", 0), ("day", 0), ("before", defaults.before),
                                          ("after", defaults.after), ("days", defaults.days))}
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in ints.values()) or \
            not 1 <= ints["month"] <= 12 or not 1 <= ints["day"] <= 31 or ints["days"] < 1:
        raise ConfigError(f"{where}: month 1-12, day 1-31, before/after ≥ 0 and days ≥ 1 are needed")
    return CommercialEvent(str(raw["name"]), **ints)
