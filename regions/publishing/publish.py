"""`fedstore region publish-stats`: compute, spend budget, anonymise, queue in the outbox.

    exact statistics (stay here) ─▶ budget ledger: spend ε or refuse ─▶ OpenDP noise + suppression
                                                                     ─▶ outbox/<id>.json (queued)

The budget is spent before any noisy number exists, so a failure after it errs on the side of
privacy. Sending the outbox to the aggregator (with retries) is the aggregator issue's other half.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

from federation import PrivacyConfig
from federation.statistics import CATALOG, FeatureSpec
from regions.errors import RegionError
from regions.publishing.anonymise import AnonymisedStatistics, anonymise
from regions.publishing.budget import BudgetLedger
from regions.publishing.statistics import compute_statistics
from regions.store.node import RegionNode


def outbox_dir(data_dir: Path) -> Path:
    return data_dir / "outbox"


def publish_statistics(
    node: RegionNode,
    privacy: PrivacyConfig,
    *,
    epsilon: float,
    end: datetime | None = None,
    days: int = 30,
    catalog: tuple[FeatureSpec, ...] = CATALOG,
) -> tuple[str, AnonymisedStatistics, Path]:
    if not epsilon > 0:
        raise RegionError(f"epsilon must be positive, got {epsilon}")
    now = datetime.now(timezone.utc)
    end = end or now
    stats = compute_statistics(node, catalog, end - timedelta(days=days), end)
    ledger = BudgetLedger(node.data_dir / "privacy_budget.db", node.code, epsilon_per_month=privacy.epsilon_per_month)
    submission_id = f"{node.code.lower()}-stats-{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"
    ledger.spend(submission_id, epsilon, now)  # refuses (nothing released) when over budget
    released = anonymise(stats, catalog, epsilon=epsilon, minimum_cohort=privacy.minimum_cohort)
    assert released.accounting.epsilon <= epsilon * (1 + 1e-9), "OpenDP accounting exceeds the spend"
    body = {
        "submission_id": submission_id,
        "region": node.code,
        "period": ledger.period(now),
        "created_at": now.isoformat(),
        "status": "queued",
        **asdict(released),
    }
    box = outbox_dir(node.data_dir)
    box.mkdir(parents=True, exist_ok=True)
    path = box / f"{submission_id}.json"
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(body, indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(path)
    return submission_id, released, path
