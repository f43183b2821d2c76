"""Exact per-feature statistics of a region's window, one entity = one row (the privacy unit).

Each view contributes each entity's latest row up to the window's end (in the window, or older
but still within the view's TTL; Feast's 'latest' semantics, ``source_reader.read_latest``); values are clipped to the catalog's bounds before summing, so one
entity can move a sum by at most the clipping width. Nothing here leaves the region: the
anonymiser decides what may.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa

from federation.statistics import FeatureSpec
from regions.errors import UnknownName
from regions.store.node import RegionNode
from regions.store.source_reader import read_latest


@dataclass(frozen=True)
class FeatureStatistics:
    ref: str
    count: int  # entities with a value
    null_count: int  # entities with a row but no value
    sum: float  # of clipped values
    sum_sq: float  # of squared clipped values
    histogram: tuple[int, ...]  # counts per catalog bin


@dataclass(frozen=True)
class RegionStatistics:
    region: str
    start: datetime
    end: datetime
    features: tuple[FeatureStatistics, ...]


def compute_statistics(
    node: RegionNode, catalog: tuple[FeatureSpec, ...], start: datetime, end: datetime
) -> RegionStatistics:
    views = {fv.name: fv for fv in node.feature_views()}
    missing = [s.ref for s in catalog if s.view not in views]
    if missing:
        raise UnknownName(f"region {node.code} has no feature view for {missing[0]}")
    node.require_sources([views[v] for v in dict.fromkeys(s.view for s in catalog)])
    out = []
    for view in dict.fromkeys(s.view for s in catalog):
        specs = [s for s in catalog if s.view == view]
        fv = views[view]
        # an entity's value at the window's end, as serving would see it: its latest row in the
        # window, or older while still within the view's TTL (profiles change rarely)
        since = min(start, end - fv.ttl) if fv.ttl else start
        batches = list(read_latest(fv, since, end, config=node.store.config, offline_store=None, batch_rows=1 << 20))
        table = pa.Table.from_batches(batches) if batches else None
        for spec in specs:
            out.append(_feature(spec, table))
    return RegionStatistics(region=node.code, start=start, end=end, features=tuple(out))


def _feature(spec: FeatureSpec, table: pa.Table | None) -> FeatureStatistics:
    if table is None or table.num_rows == 0:
        return FeatureStatistics(spec.ref, 0, 0, 0.0, 0.0, (0,) * spec.bins)
    col = table.column(spec.feature).to_numpy(zero_copy_only=False).astype(float)
    present = ~np.isnan(col)
    values = np.clip(col[present], spec.lower, spec.upper)
    # bins are [e_i, e_i+1); the top edge belongs to the last bin
    idx = np.clip(np.searchsorted(spec.edges, values, side="right") - 1, 0, spec.bins - 1)
    hist = np.bincount(idx, minlength=spec.bins)
    return FeatureStatistics(
        ref=spec.ref,
        count=int(present.sum()),
        null_count=int((~present).sum()),
        sum=float(values.sum()),
        sum_sq=float((values**2).sum()),
        histogram=tuple(int(h) for h in hist),
    )
