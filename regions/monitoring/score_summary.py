"""What a score monitoring run judged, as aggregates a page may show: per model version and stage
its daily mean score and each shown day's verdict; per shadow pair each day's mean |shadow − served|,
PSI and verdict; the festival windows. No entity, no prediction, no score of a person.

``region score-drift`` writes it beside the metrics (``<data_dir>/monitoring/score-drift.json``,
replaced whole); the chart (``score_chart.py``) and the dashboard draw from it. So the dashboard
shows score drift without reading the prediction log (an import contract keeps the log from it).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from fedstore.regions.errors import RegionError
from fedstore.regions.monitoring.calendar import SeasonalWindow
from fedstore.regions.monitoring.drift import Verdict

SUMMARY_FILE = "score-drift.json"
DISAGREE = "disagree"  # a shadow pair's day beyond a threshold (else drift's OK or THIN)
_VERSION = 1


@dataclass(frozen=True)
class SeriesHistory:
    """One model version at one stage over the shown days."""

    label: str  # "fraud_lda v1 (full)"
    stage: str
    threshold: float  # the plain rule's PSI threshold (a calibrated festival day carries its own)
    means: tuple[tuple[date, float], ...]  # the days it scored, with their mean score
    verdicts: tuple[Verdict, ...]  # one per shown day, oldest first


@dataclass(frozen=True)
class PairDay:
    day: date
    pairs: int  # entities both scored (0: none)
    mean_abs: float | None  # None: too few to judge
    psi: float | None
    verdict: str  # disagree | ok | thin
    rule: str


@dataclass(frozen=True)
class PairHistory:
    """A shadow and the model that answered the same entities, judged on each shown day."""

    label: str
    days: tuple[PairDay, ...]  # oldest first
    mean_abs_threshold: float
    psi_threshold: float


@dataclass(frozen=True)
class ScoreSummary:
    region: str
    day: date  # the day judged
    judged_at: datetime  # when the run judged it (UTC)
    series: tuple[SeriesHistory, ...]
    pairs: tuple[PairHistory, ...]
    windows: tuple[SeasonalWindow, ...]


def write_summary(summary: ScoreSummary, path: Path) -> Path:
    """Replaced whole (a temporary file renamed): a page never reads half of one."""
    body = {
        "version": _VERSION, "region": summary.region, "day": summary.day.isoformat(),
        "judged_at": summary.judged_at.isoformat(),
        "series": [{"label": s.label, "stage": s.stage, "threshold": s.threshold,
                    "means": [[d.isoformat(), m] for d, m in s.means],
                    "verdicts": [_verdict(v) for v in s.verdicts]} for s in summary.series],
        "pairs": [{"label": p.label, "mean_abs_threshold": p.mean_abs_threshold, "psi_threshold": p.psi_threshold,
                   "days": [{"day": d.day.isoformat(), "pairs": d.pairs, "mean_abs": d.mean_abs, "psi": d.psi,
                             "verdict": d.verdict, "rule": d.rule} for d in p.days]} for p in summary.pairs],
        "windows": [{"name": w.name, "start": w.start.isoformat(), "end": w.end.isoformat()} for w in summary.windows],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(body), encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_summary(path: Path) -> ScoreSummary | None:
    """The last run's summary, or None when no run has written one."""
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise RegionError(f"{path} could not be read: {e}") from None
    if body.get("version") != _VERSION:
        raise RegionError(f"{path} is of version {body.get('version')!r}, not {_VERSION}: run region score-drift again")
    return ScoreSummary(
        region=body["region"], day=date.fromisoformat(body["day"]), judged_at=datetime.fromisoformat(body["judged_at"]),
        series=tuple(SeriesHistory(s["label"], s["stage"], float(s["threshold"]),
                                   tuple((date.fromisoformat(d), float(m)) for d, m in s["means"]),
                                   tuple(_from_verdict(v) for v in s["verdicts"])) for s in body["series"]),
        pairs=tuple(PairHistory(p["label"], tuple(PairDay(date.fromisoformat(d["day"]), int(d["pairs"]), d["mean_abs"],
                                                          d["psi"], d["verdict"], d["rule"]) for d in p["days"]),
                                float(p["mean_abs_threshold"]), float(p["psi_threshold"])) for p in body["pairs"]),
        windows=tuple(SeasonalWindow(w["name"], date.fromisoformat(w["start"]), date.fromisoformat(w["end"]))
                      for w in body["windows"]),
    )


def _verdict(v: Verdict) -> dict[str, object]:
    return {"ref": v.ref, "day": v.day.isoformat(), "psi": v.psi, "js": v.js, "threshold": v.threshold,
            "rule": v.rule, "verdict": v.verdict, "seasonal": v.seasonal}


def _from_verdict(v: dict) -> Verdict:
    return Verdict(v["ref"], date.fromisoformat(v["day"]), v["psi"], v["js"], v["threshold"], v["rule"], v["verdict"],
                   v["seasonal"])


__all__ = ["DISAGREE", "SUMMARY_FILE", "PairDay", "PairHistory", "ScoreSummary", "SeriesHistory", "read_summary", "write_summary"]
