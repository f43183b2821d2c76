"""A PNG people can read: flagged features' daily mean over time, festivals shaded, gaps marked."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers

import matplotlib.pyplot as plt  # noqa: E402

from fedstore.regions.monitoring.report import DriftReport  # noqa: E402

DAYS_SHOWN = 120


def drift_chart(report: DriftReport, path: Path) -> Path:
    scored = sorted((v for v in report.verdicts if v.psi is not None), key=lambda v: -(v.psi or 0))
    refs = report.flagged or [v.ref for v in scored[:3]] or [report.verdicts[0].ref]
    fig, axes = plt.subplots(len(refs), 1, figsize=(10, 2.6 * len(refs)), sharex=True, squeeze=False)
    start = report.day - timedelta(days=DAYS_SHOWN)
    for ax, ref in zip(axes[:, 0], refs, strict=True):
        frame = report.profiles.of(ref)
        frame = frame[(frame.index >= start) & (frame.index <= report.day) & (frame["count"] > 0)]
        ax.plot(list(frame.index), frame["sum"] / frame["count"], color="#1f4e79", linewidth=1.2)
        shown = [w for w in report.windows if w.end >= start and w.start <= report.day]
        top, span = ax.get_ylim()[1], ax.get_ylim()[1] - ax.get_ylim()[0]
        for i, w in enumerate(shown):
            ax.axvspan(w.start, w.end + timedelta(days=1), color="#f4b183", alpha=0.35, linewidth=0)
            # overlapping windows (12.12, year-end sale, Christmas) stack their labels instead of overprinting
            level = sum(1 for o in shown[:i] if o.start <= w.end + timedelta(days=10) and w.start <= o.end)
            ax.text(max(w.start, start), top - 0.09 * span * level, w.name, fontsize=7, va="top", color="#843c0c")
        for g in report.gaps:
            if g.view == ref.split(":")[0] and start <= g.day <= report.day:
                ax.axvline(g.day, color="#7f7f7f", linestyle=":", linewidth=1)
        ax.axvline(report.day, color="#c00000", linewidth=1)
        verdict = next(v for v in report.verdicts if v.ref == ref)
        score = f"PSI {verdict.psi:.2f}" if verdict.psi is not None else "not scored"
        ax.set_title(f"{ref} — daily mean; {verdict.verdict} ({score}; {verdict.rule})", fontsize=9, loc="left")
    fig.suptitle(f"{report.region} drift report for {report.day}: festivals shaded, gaps dotted, judged day red",
                 fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
