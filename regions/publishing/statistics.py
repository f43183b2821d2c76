"""Exact per-feature statistics of a region's window, one entity = one row (the privacy unit).

Each view contributes each entity's latest row up to the window's end (in the window, or older
but still within the view's TTL; Feast's 'latest' semantics, ``source_reader.read_latest``); values are clipped to the catalog's bounds before summing, so one
entity can move a sum by at most the clipping width. Nothing here leaves the region: the
anonymiser decides what may. With a consent gate (``regions/consent``), an entity without consent
for the purpose at the window's end is left out of every view, so every count says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from feast import FeatureView

from fedstore.federation.statistics import FeatureSpec, SegmentSpec
from fedstore.regions.consent import ConsentGate
from fedstore.regions.errors import UnknownName
from fedstore.regions.publishing.cleansers import BoundedValues
from fedstore.regions.store.node import RegionNode
from fedstore.regions.store.source_reader import read_latest


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
    consent_excluded: dict[str, int] = field(default_factory=dict)  # per view: entities left out for want of consent


def compute_statistics(
    node: RegionNode, catalog: tuple[FeatureSpec, ...], start: datetime, end: datetime,
    consent: ConsentGate | None = None,
) -> RegionStatistics:
    excluded: dict[str, int] = {}
    tables = _latest_tables(node, catalog, start, end, consent, excluded)
    out = [_feature(spec, tables[spec.view]) for spec in catalog]
    return RegionStatistics(region=node.code, start=start, end=end, features=tuple(out), consent_excluded=excluded)


def compute_segment_statistics(
    node: RegionNode, catalog: tuple[FeatureSpec, ...], segment: SegmentSpec, start: datetime, end: datetime,
    consent: ConsentGate | None = None,
) -> dict[str, RegionStatistics]:
    """The same statistics per segment value (e.g. per home city), for the catalog's values only.

    Each entity falls in the segment its segment view holds for it at the window's end; entities
    whose value is not in the federation's list for this region are left out, never sent.
    """
    allowed = segment.values.get(node.code, ())
    tables = {view: rows.kept() if rows is not None else None
              for view, rows in _latest_tables(node, catalog, start, end, consent, {}).items()}
    seg_view = {fv.name: fv for fv in node.feature_views()}[segment.view]
    seg_rows = _latest(node, seg_view, start, end, consent, {})
    seg_table = seg_rows.kept() if seg_rows is not None else None
    out: dict[str, RegionStatistics] = {}
    for value in allowed:
        members = None
        if seg_table is not None:
            keys = [e.name for e in seg_view.entity_columns]
            members = seg_table.filter(pc.equal(seg_table.column(segment.feature), value)).select(keys)
        features = []
        for spec in catalog:
            table = tables[spec.view]
            if table is not None and members is not None:
                table = table.join(members, keys=[k for k in members.column_names], join_type="inner")
            else:
                table = None
            features.append(_feature(spec, _Rows(table) if table is not None else None))
        out[value] = RegionStatistics(region=node.code, start=start, end=end, features=tuple(features))
    return out


def entity_segments(node: RegionNode, segment: SegmentSpec, end: datetime, days: int = 30) -> dict[str, str]:
    """Each entity's segment value at ``end`` (its segment view's latest row, as serving sees it),
    keyed as the prediction log writes entities (the join key's value as text); values outside the
    federation's list for this region are left out."""
    allowed = set(segment.values.get(node.code, ()))
    seg_view = {fv.name: fv for fv in node.feature_views()}[segment.view]
    rows = _latest(node, seg_view, end - timedelta(days=days), end, None, {})
    if rows is None:
        return {}
    table = rows.table
    [key] = [e.name for e in seg_view.entity_columns]
    return {str(k): v for k, v in zip(table.column(key).to_pylist(), table.column(segment.feature).to_pylist())
            if v in allowed}


@dataclass(frozen=True)
class _Rows:
    """A view's latest rows, and which of them consent keeps (None: every one). Statistics fold the
    mask into each feature's pass rather than copy the table without the rows left out (a copy of
    1M rows × 12 columns cost more than the consent lookup itself)."""

    table: pa.Table
    keep: np.ndarray | None = None

    def kept(self) -> pa.Table:
        return self.table if self.keep is None else self.table.filter(pa.array(self.keep))


def _latest(node: RegionNode, fv: FeatureView, start: datetime, end: datetime, consent: ConsentGate | None,
            excluded: dict[str, int]) -> _Rows | None:
    # an entity's value at the window's end, as serving would see it: its latest row in the
    # window, or older while still within the view's TTL (profiles change rarely)
    since = min(start, end - fv.ttl) if fv.ttl else start
    join_keys = [e.name for e in fv.entity_columns]
    batches = list(read_latest(fv, since, end, config=node.store.config, offline_store=None, batch_rows=1 << 20))
    if consent is not None and consent.active:
        excluded[fv.name] = 0
    if not batches:
        return None
    table = pa.Table.from_batches(batches)
    if consent is None or not consent.active:
        return _Rows(table)
    # consent as it held at the window's end (the time the released numbers describe), per entity
    # before anything is counted: a lookup per row in the ids the records keep or drop then
    keep, excluded[fv.name] = consent.mask(table, join_keys, end)
    return _Rows(table, keep)


def _latest_tables(
    node: RegionNode, catalog: tuple[FeatureSpec, ...], start: datetime, end: datetime,
    consent: ConsentGate | None, excluded: dict[str, int],
) -> dict[str, _Rows | None]:
    views = {fv.name: fv for fv in node.feature_views()}
    missing = [s.ref for s in catalog if s.view not in views]
    if missing:
        raise UnknownName(f"region {node.code} has no feature view for {missing[0]}")
    wanted = list(dict.fromkeys(s.view for s in catalog))
    node.require_sources([views[v] for v in wanted])
    return {view: _latest(node, views[view], start, end, consent, excluded) for view in wanted}


def _feature(spec: FeatureSpec, rows: _Rows | None) -> FeatureStatistics:
    if rows is None or rows.table.num_rows == 0:
        return FeatureStatistics(spec.ref, 0, 0, 0.0, 0.0, (0,) * spec.bins)
    col = rows.table.column(spec.feature).to_numpy(zero_copy_only=False).astype(float)
    missing = np.isnan(col)
    if rows.keep is not None:  # rows without consent are neither values nor nulls
        present, missing = rows.keep & ~missing, rows.keep & missing
    else:
        present = ~missing
    values = BoundedValues.of(spec)(col[present])
    # bins are [e_i, e_i+1); the top edge belongs to the last bin
    idx = np.clip(np.searchsorted(spec.edges, values, side="right") - 1, 0, spec.bins - 1)
    hist = np.bincount(idx, minlength=spec.bins)
    return FeatureStatistics(
        ref=spec.ref,
        count=int(present.sum()),
        null_count=int(missing.sum()),
        sum=float(values.sum()),
        sum_sq=float((values**2).sum()),
        histogram=tuple(int(h) for h in hist),
    )
