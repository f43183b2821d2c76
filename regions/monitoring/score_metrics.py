"""Score monitoring's metrics, for Prometheus: written after each run to a file the node exporter's
textfile collector serves (``--collector.textfile.directory``), as a batch job's metrics are.

A collector of plain families over one report, in its own registry: no global state, and none of
prometheus_client's multiprocess files (importing Feast sets ``PROMETHEUS_MULTIPROC_DIR``).
``write_to_textfile`` writes a temporary file and renames it, so a scrape never reads half of one.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, time
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from fedstore.regions.monitoring.drift import DRIFT

if TYPE_CHECKING:
    from fedstore.regions.monitoring.score_report import ScoreReport

_MODEL = ["region", "model", "version", "stage"]
_PAIR = ["region", "model", "version", "stage", "shadow_model", "shadow_version", "measure"]


class ScoreCollector(Collector):
    def __init__(self, report: ScoreReport) -> None:
        self.report = report

    def collect(self) -> Iterator[Metric]:
        from fedstore.regions.monitoring.score_report import DISAGREE, DISAGREEMENT, SCORE_DRIFT  # it imports us

        r = self.report
        day = GaugeMetricFamily("fedstore_score_monitoring_day_timestamp_seconds",
                                "the local day the score monitoring judged (its midnight, UTC seconds)", labels=["region"])
        day.add_metric([r.region], datetime.combine(r.day, time(), UTC).timestamp())
        yield day
        score_psi = GaugeMetricFamily("fedstore_score_psi", "PSI of the day's scores against the rule's baseline",
                                      labels=_MODEL)
        drifted = GaugeMetricFamily("fedstore_score_drift", "1 when the day's scores drifted, else 0 (judged days)",
                                    labels=_MODEL)
        for v in r.verdicts:
            labels = [r.region, v.series.model, str(v.series.version), v.series.stage]
            if v.verdict.psi is not None:
                score_psi.add_metric(labels, v.verdict.psi)
            if v.verdict.threshold is not None:
                drifted.add_metric(labels, float(v.verdict.verdict == DRIFT))
        yield score_psi
        yield drifted
        gap = GaugeMetricFamily("fedstore_shadow_disagreement",
                                "a shadow against the model that answered, on the same entities (mean_abs, psi)",
                                labels=_PAIR)
        over = GaugeMetricFamily("fedstore_shadow_disagrees", "1 when the shadow disagreed beyond a threshold, else 0",
                                 labels=_PAIR[:-1])
        for d in r.disagreements:
            base = [r.region, d.pair.served.model, str(d.pair.served.version), d.pair.served.stage,
                    d.pair.shadow.model, str(d.pair.shadow.version)]
            if d.mean_abs is not None and d.psi is not None:
                gap.add_metric([*base, "mean_abs"], d.mean_abs)
                gap.add_metric([*base, "psi"], d.psi)
                over.add_metric(base, float(d.verdict == DISAGREE))
        yield gap
        yield over
        alerts = GaugeMetricFamily("fedstore_score_alerts", "score alerts raised for the day, by kind",
                                   labels=["region", "kind"])
        for kind in (SCORE_DRIFT, DISAGREEMENT):
            alerts.add_metric([r.region, kind], float(sum(a.kind == kind for a in r.alerts)))
        yield alerts


def write_score_metrics(report: ScoreReport, path: Path) -> Path:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ScoreCollector(report))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
    return path


__all__ = ["ScoreCollector", "write_score_metrics"]
