"""What an operator asks first: how fresh is each view, and what did the last jobs do."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import pyarrow.compute as pc
import pyarrow.parquet as pq

from fedstore.regions.store.definitions import batch_source
from fedstore.regions.store.engine import redis_target
from fedstore.regions.store.ledger import JobRecord
from fedstore.regions.store.node import RegionNode
from fedstore.online import OnlineMarker, RespError
from fedstore.regions.store.snapshot import read_snapshot_info


@dataclass(frozen=True)
class ViewFreshness:
    view: str
    materialized_until: datetime | None  # end of the latest succeeded window
    latest_event: datetime | None  # newest event time held in the snapshot
    entities: int
    snapshot_job: str | None
    age_seconds: float | None  # now - latest_event
    # does the online store still hold the view's last load? present | lost | behind | unreachable,
    # None when there is nothing to check (not Redis, or no job has marked it yet)
    online: str | None = None


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
    online = _online_states(node)
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
                online=online.get(fv.name),
            )
        )
    return RegionStatus(node.code, True, tuple(views), tuple(node.ledger.jobs(limit=jobs)))


UNREACHABLE = "unreachable"


def _online_states(node: RegionNode) -> dict[str, str]:
    """Per view the ledger says was loaded online, what the online store's marker says of it."""
    target = redis_target(node.store.config)
    expected = node.ledger.online_loads() if target is not None else {}
    if target is None or not expected:
        return {}
    try:
        with OnlineMarker(target, node.store.project, timeout_seconds=2.0) as marker:
            found = marker.read()
    except RespError:
        return dict.fromkeys(expected, UNREACHABLE)
    return node.ledger.online_states(expected, found)
