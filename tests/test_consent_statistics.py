"""Property: statistics with a consent gate equal a plain pandas computation over the entities whose
consent held at the window's end, on random consent records (several grants per entity,
withdrawals, grants at the same instant, other purposes and join keys, grants after the end) and
either default; and the records' span cache follows the file it was built from."""

from __future__ import annotations

import bisect
import math
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedstore.federation import RegionConfig
from fedstore.federation.consent import ConsentPolicy, Purpose
from fedstore.federation.statistics import CATALOG
from fedstore.regions.consent import consent_gate
from fedstore.regions.consent.spans import SPANS_DIR
from fedstore.regions.errors import InvalidSource
from fedstore.regions.publishing.statistics import compute_statistics
from fedstore.regions.store.node import RegionNode
from handmade import write_sources

T = datetime(2026, 6, 1, tzinfo=timezone.utc)
TS = pa.timestamp("us", tz="UTC")
CUSTOMERS = 30

# few distinct times, so grants at the same instant and withdrawals at the window's end are common
_hours = st.sampled_from([-48, -24, 0, 12, 24, 36, 48, 72])
_record = st.tuples(
    st.integers(0, CUSTOMERS + 3),  # ids past the sources' too
    st.sampled_from(["global_statistics", "global_statistics", "serving"]),
    st.sampled_from(["customer_id", "customer_id", "customer_id", "driver_id"]),
    _hours,  # granted, hours from T
    st.sampled_from([None, None, 0, 12, 24, 48]),  # withdrawn, hours after the grant
)


@pytest.fixture()
def node(sqlite_federation):
    node = RegionNode(sqlite_federation.region("MY"))
    write_sources(node.data_dir, customers=CUSTOMERS, drivers=3, days=3, start=T)
    node.apply()
    return node


def _region(node: RegionNode, default: str) -> RegionConfig:
    return replace(node.region, consent=ConsentPolicy(frozenset({Purpose.GLOBAL_STATISTICS}), default))


def _write(data_dir: Path, rows: list[tuple]) -> None:
    pq.write_table(pa.table({
        "join_key": pa.array([r[2] for r in rows], pa.string()),
        "entity_id": pa.array([r[0] for r in rows], pa.int64()),
        "purpose": pa.array([r[1] for r in rows], pa.string()),
        "granted_at": pa.array([T + timedelta(hours=r[3]) for r in rows], TS),
        "withdrawn_at": pa.array([None if r[4] is None else T + timedelta(hours=r[3] + r[4]) for r in rows], TS),
        "source": pa.array(["crm"] * len(rows), pa.string()),
    }), data_dir / "sources" / "consent.parquet")


def _consented(rows: list[tuple], end: datetime, default_allows: bool) -> set[int]:
    """The rule, written out: the latest grant by ``end`` governs (of grants at the same instant,
    consent holds only if it holds for all); it holds unless withdrawn by ``end``; no grant: the default."""
    out = set()
    for c in range(CUSTOMERS):
        grants = [(T + timedelta(hours=g), None if w is None else T + timedelta(hours=g + w))
                  for (e, p, k, g, w) in rows if e == c and p == "global_statistics" and k == "customer_id"]
        grants = [(g, w) for g, w in grants if g <= end]
        if not grants:
            if default_allows:
                out.add(c)
            continue
        latest = max(g for g, _ in grants)
        if all(w is None or w > end for g, w in grants if g == latest):
            out.add(c)
    return out


def _oracle(node: RegionNode, end: datetime, kept: set[int]) -> dict[str, tuple]:
    out = {}
    for view in ("customer_transactions", "customer_profile"):
        df = pd.read_parquet(node.data_dir / "sources" / f"{view}.parquet")
        df = df[df["event_timestamp"] <= pd.Timestamp(end)]
        df = df.sort_values(["event_timestamp", "created"]).groupby("customer_id").tail(1)
        df = df[df["customer_id"].isin(kept)]
        for spec in (s for s in CATALOG if s.view == view):
            values = [None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
                      for v in df[spec.feature].astype(object)]
            present = [min(max(v, spec.lower), spec.upper) for v in values if v is not None]
            hist = [0] * spec.bins
            for v in present:
                hist[min(max(bisect.bisect_right(spec.edges, v) - 1, 0), spec.bins - 1)] += 1
            out[spec.ref] = (len(present), len(values) - len(present), sum(present), sum(v * v for v in present),
                             tuple(hist))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(_record, max_size=60), end_hours=st.sampled_from([24, 36, 48, 72]), default=st.sampled_from(["deny", "allow"]))
def test_consent_filtered_statistics_equal_a_pandas_oracle(node, rows, end_hours, default):
    _write(node.data_dir, rows)
    end = T + timedelta(hours=end_hours)
    gate = consent_gate(_region(node, default), Purpose.GLOBAL_STATISTICS)
    stats = compute_statistics(node, CATALOG, end - timedelta(days=30), end, gate)
    kept = _consented(rows, end, default == "allow")
    want = _oracle(node, end, kept)
    for f in stats.features:
        count, nulls, total, squares, hist = want[f.ref]
        assert (f.count, f.null_count, f.histogram) == (count, nulls, hist), f.ref
        assert f.sum == pytest.approx(total, rel=1e-9, abs=1e-9) and f.sum_sq == pytest.approx(squares, rel=1e-9,
                                                                                              abs=1e-9)
    assert stats.consent_excluded == {"customer_transactions": CUSTOMERS - len(kept),
                                      "customer_profile": CUSTOMERS - len(kept)}


def test_the_span_cache_follows_the_records_file(node):
    """A span file is written per version of the records; a new version gets its own (the old one
    goes), and a broken file is refused even after a good one was cached."""
    end = T + timedelta(days=2)
    _write(node.data_dir, [(c, "global_statistics", "customer_id", -24, None) for c in range(10)])
    first = compute_statistics(node, CATALOG, end - timedelta(days=30), end,
                               consent_gate(_region(node, "deny"), Purpose.GLOBAL_STATISTICS))
    cached = list((node.data_dir / SPANS_DIR).glob("global_statistics-*.arrow"))
    assert first.features[-1].count == 10 and len(cached) == 1
    _write(node.data_dir, [(c, "global_statistics", "customer_id", -24, None) for c in range(4)])
    second = compute_statistics(node, CATALOG, end - timedelta(days=30), end,
                                consent_gate(_region(node, "deny"), Purpose.GLOBAL_STATISTICS))
    now = list((node.data_dir / SPANS_DIR).glob("global_statistics-*.arrow"))
    assert second.features[-1].count == 4 and len(now) == 1 and now != cached
    (node.data_dir / "sources" / "consent.parquet").write_bytes(b"not parquet")
    with pytest.raises(InvalidSource, match="not readable Parquet"):
        consent_gate(_region(node, "deny"), Purpose.GLOBAL_STATISTICS)


@settings(max_examples=200, deadline=None)
@given(ids=st.sets(st.integers(-60, 60), max_size=40), keys=st.lists(
    st.one_of(st.none(), st.integers(-90, 90), st.sampled_from([-2**63, 2**63 - 1, -2**62, 2**62])), max_size=60))
def test_an_id_set_answers_as_python_sets_do_whichever_lookup_it_uses(ids, keys):
    from fedstore.regions.consent.idset import IdSet

    ordered = np.array(sorted(ids), dtype=np.int64)
    want = [k is not None and k in ids for k in keys]
    dense, sparse = IdSet.of(ordered), IdSet(ordered)  # a bitmap (these ids are dense), a binary search
    assert dense._bitmap is not None or not ids
    for found in (dense, sparse):
        assert found.contains(pa.array(keys, pa.int64())).tolist() == want
        assert found.contains(pa.chunked_array([pa.array(keys, pa.int64())])).tolist() == want
    text = pa.array([None if k is None else str(k) for k in keys], pa.string())
    assert dense.contains(text).tolist() == want  # text keys: matched as the records' ids in their type
