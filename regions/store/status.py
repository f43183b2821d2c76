"""What an operator asks first: how fresh is each view, and what did the last jobs do."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow.compute as pc
import pyarrow.parquet as pq

from regions.store.definitions import batch_source
from regions.store.ledger import JobRecord
from regions.store.node import RegionNode
from regions.store.snapshot import read_snapshot_info


@dataclass(frozen=True)
class ViewFreshness:
    view: str
    materialized_until: datetime | None  # end of the latest succeeded window
    latest_event: datetime | None  # newest event time held in the snapshot
    entities: int
    snapshot_job: str | None
    age_seconds: float | None  # now - latest_event


@dataclass(frozen=True)
class RegionStatus:
    region: str
    applied: bool
    views: tuple[ViewFreshness, ...]
    jobs: tuple[JobRecord, ...]


def region_status(node: RegionNode, *, jobs: int = 5, now: datetime | None = None) -> RegionStatus:
    now = now or datetime.now(timezone.utc)
    node.ledger.recover_abandoned()
    if not node.is_applied:
        return RegionStatus(node.code, False, (), tuple(node.ledger.jobs(limit=jobs)))
    views = []
    for fv in node.feature_views():
        info = read_snapshot_info(node.data_dir, fv.name)
        latest = None
        if info is not None and info.rows:
            col = pq.read_table(info.path, columns=[batch_source(fv).timestamp_field]).column(0)
            latest = pc.max(col).as_py()
        views.append(
            ViewFreshness(
                view=fv.name,
                materialized_until=node.ledger.watermark(fv.name),
                latest_event=latest,
                entities=info.rows if info else 0,
                snapshot_job=info.job_id if info else None,
                age_seconds=(now - latest).total_seconds() if latest else None,
            )
        )
    return RegionStatus(node.code, True, tuple(views), tuple(node.ledger.jobs(limit=jobs)))
