"""The ASOF offline store gives Feast's DuckDB offline store's answer, cell for cell.

Random sources and entity sets (duplicate keys and times, ties on event time broken by created
time, rows exactly at the TTL edge, missing entities, null keys, values and created times, several
views, a projection alias and a join-key map, a label view, time zones) go through two real
``feast.FeatureStore`` objects on one applied repo: one with Feast's ``duckdb`` offline store, one
with ``AsofOfflineStore``. Times sit on a minute grid so ties and TTL edges are common.

No feature is named ``…y``: with ``full_feature_names`` Feast's own store drops a column whose
name ends in ``_y`` (its join drops the ``{name}_y`` duplicates by suffix); this store does not.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from feast import Entity, FeatureService, FeatureStore, FeatureView, Field, FileSource
from feast.repo_config import RepoConfig
from feast.types import Float64, Int64, String
from feast.value_type import ValueType
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fedstore.regions.store.offline_store import OFFLINE_STORE_TYPE, AsofRetrievalJob

BASE = datetime(2026, 3, 8, 6, 0, tzinfo=timezone.utc)  # a DST change in New York that morning
US = pa.timestamp("us", tz="UTC")

customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
driver = Entity(name="driver", join_keys=["driver_id"], value_type=ValueType.INT64)


def _views(root: Path) -> dict[str, FeatureView]:
    a = FeatureView(name="a", entities=[customer], ttl=timedelta(minutes=60),
                    schema=[Field(name="x", dtype=Int64), Field(name="amount", dtype=Float64), Field(name="s", dtype=String)],
                    source=FileSource(path=str(root / "a.parquet"), timestamp_field="event_timestamp",
                                      created_timestamp_column="created"))
    # no created column: its rows are unique per key and time; no TTL (0 is unlimited in Feast)
    b = FeatureView(name="b", entities=[customer, driver], ttl=timedelta(0), schema=[Field(name="w", dtype=Float64)],
                    source=FileSource(path=str(root / "b.parquet"), timestamp_field="ts"))
    c = FeatureView(name="c", entities=[driver], ttl=timedelta(minutes=30), schema=[Field(name="z", dtype=Int64)],
                    source=FileSource(path=str(root / "c.parquet"), timestamp_field="event_timestamp",
                                      created_timestamp_column="created", field_mapping={"raw_z": "z"}))
    label = FeatureView(name="label", entities=[customer], ttl=timedelta(minutes=15), tags={"role": "label"},
                        schema=[Field(name="is_fraud", dtype=Int64)],
                        source=FileSource(path=str(root / "label.parquet"), timestamp_field="event_timestamp"))
    return {"a": a, "b": b, "c": c, "label": label}


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> tuple[FeatureStore, FeatureStore, Path]:
    """Feast's own DuckDB store and this one (``join: auto``, which searches the views' sorted rows
    here); ``asof_store`` is this one joining by DuckDB's ASOF join."""
    root = tmp_path_factory.mktemp("asof-repo")
    views = _views(root)
    _write_sources(root, [], [], [], [])
    service = FeatureService(name="svc", features=[
        views["a"][["x", "s"]], views["b"], views["c"].with_name("c2").with_join_key_map({"driver_id": "other_driver"}),
    ])

    ours = _store(root, OFFLINE_STORE_TYPE)
    ours.apply([customer, driver, *views.values(), service])
    return _store(root, "duckdb"), ours, root


def _store(root: Path, offline: str, **settings: str) -> FeatureStore:
    return FeatureStore(config=RepoConfig(
        project="asof", provider="local", repo_path=root, registry=str(root / "registry.db"),
        offline_store={"type": offline, **settings}, online_store={"type": "sqlite", "path": str(root / "online.db")},
        entity_key_serialization_version=3))


@pytest.fixture(scope="module")
def asof_store(stores) -> FeatureStore:
    return _store(stores[2], OFFLINE_STORE_TYPE, join="asof")


def _times(minutes: list[int | None], naive: bool) -> pa.Array:
    values = [None if m is None else BASE + timedelta(minutes=m) for m in minutes]
    if naive:
        return pa.array([None if v is None else v.replace(tzinfo=None) for v in values], pa.timestamp("us"))
    return pa.array(values, US)


def _write_sources(root: Path, a: list, b: list, c: list, label: list, naive: bool = False) -> None:
    def unique(rows: list, key) -> list:  # Feast's pick among full ties is arbitrary: none are made
        seen, kept = set(), []
        for r in rows:
            if key(r) not in seen:
                seen.add(key(r))
                kept.append(r)
        return kept

    # x, w, z and is_fraud are the row's position, so any other row picked shows as a wrong value
    a = [(*r[:3], i, *r[4:]) for i, r in enumerate(unique(a, lambda r: (r[0], r[1], r[2])))]
    c = [(*r[:3], i) for i, r in enumerate(unique(c, lambda r: (r[0], r[1], r[2])))]
    b = [(*r[:3], float(i) if r[3] is not None else None) for i, r in enumerate(unique(b, lambda r: (r[0], r[1], r[2])))]
    label = [(*r[:2], i) for i, r in enumerate(unique(label, lambda r: (r[0], r[1])))]
    created = lambda rows: _times([None if r[2] is None or r[1] is None else r[1] + r[2] for r in rows], naive)  # noqa: E731
    pq.write_table(pa.table({
        "customer_id": pa.array([r[0] for r in a], pa.int64()), "event_timestamp": _times([r[1] for r in a], naive),
        "created": created(a), "x": pa.array([r[3] for r in a], pa.int64()),
        "amount": pa.array([r[4] for r in a], pa.float64()), "s": pa.array([r[5] for r in a], pa.string())}),
        root / "a.parquet")
    pq.write_table(pa.table({
        "customer_id": pa.array([r[0] for r in b], pa.int64()), "driver_id": pa.array([r[1] for r in b], pa.int64()),
        "ts": _times([r[2] for r in b], naive), "w": pa.array([r[3] for r in b], pa.float64())}), root / "b.parquet")
    pq.write_table(pa.table({
        "driver_id": pa.array([r[0] for r in c], pa.int64()), "event_timestamp": _times([r[1] for r in c], naive),
        "created": created(c), "raw_z": pa.array([r[3] for r in c], pa.int64())}), root / "c.parquet")
    pq.write_table(pa.table({
        "customer_id": pa.array([r[0] for r in label], pa.int64()), "event_timestamp": _times([r[1] for r in label], naive),
        "is_fraud": pa.array([r[2] for r in label], pa.int64())}), root / "label.parquet")


maybe = lambda s: st.one_of(st.none(), s)  # noqa: E731
key = maybe(st.integers(0, 2))
minute = st.integers(0, 10).map(lambda m: m * 15)  # TTLs are 15', 30' and 60': edges and ties are common
rows_a = st.lists(st.tuples(key, maybe(minute), maybe(st.integers(0, 3)), st.none(),
                            maybe(st.floats(-1e3, 1e3, allow_nan=False)), maybe(st.text("abé€", max_size=2))),
                  min_size=4, max_size=30)
rows_b = st.lists(st.tuples(key, st.integers(0, 2), minute, maybe(st.just(0.0))), max_size=20)
rows_c = st.lists(st.tuples(st.integers(0, 3), minute, maybe(st.integers(0, 2)), st.none()),
                  min_size=2, max_size=20)
rows_label = st.lists(st.tuples(st.integers(0, 3), minute, st.none()), max_size=15)
entity_rows = st.lists(st.tuples(maybe(st.integers(0, 3)), st.integers(0, 2), st.integers(0, 3),
                                 st.integers(0, 13).map(lambda m: m * 15) | st.integers(0, 200)), min_size=1, max_size=25)
REQUESTS = ["service", "refs"]


# the cases the property is about, always tried: a tie on event time where only one row has a created
# time; entity rows exactly at each view's TTL edge (a: 60', c: 30', label: 15') and just past it;
# entity rows at a feature row's very event time; duplicate entity rows; a null key
TIE_AND_EDGES = dict(
    a=[(1, 0, None, None, 1.0, "n"), (1, 0, 0, None, None, "c"), (2, 15, 1, None, 2.0, None), (2, 15, 3, None, 3.0, "l")],
    b=[(1, 0, 0, 0.0)], c=[(0, 30, None, None), (0, 30, 2, None)], label=[(1, 45, None), (2, 45, None)],
    ents=[(1, 0, 0, 60), (1, 0, 0, 60), (1, 0, 0, 61), (2, 0, 1, 75), (2, 0, 0, 76), (None, 0, 0, 60), (1, 0, 0, 0),
          (2, 0, 0, 30)],
)

# a large group before a small last one: a row of the last group tries the largest stride first,
# past the last row by more than log₂ of the group's size (the guards once were only that many)
SMALL_LAST_GROUP = dict(
    a=[(1, 15 * m, None, None, 1.0, "n") for m in range(20)] + [(2, 0, None, None, 2.0, "l")],
    b=[], c=[(0, 30, None, None)], label=[], ents=[(2, 0, 0, 30), (1, 0, 0, 300), (2, 0, 0, 0)],
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=rows_a, b=rows_b, c=rows_c, label=rows_label, ents=entity_rows,
       tz=st.sampled_from([None, "UTC", "Asia/Kuala_Lumpur", "America/New_York"]), naive_sources=st.booleans(),
       request_form=st.sampled_from(REQUESTS), full_names=st.booleans())
@example(**TIE_AND_EDGES, tz="America/New_York", naive_sources=False, request_form="refs", full_names=False)
@example(**TIE_AND_EDGES, tz=None, naive_sources=True, request_form="service", full_names=True)
@example(**SMALL_LAST_GROUP, tz="UTC", naive_sources=False, request_form="refs", full_names=False)
@pytest.mark.slow
def test_every_cell_is_feasts(stores, asof_store, a, b, c, label, ents, tz, naive_sources, request_form, full_names):
    """Both joins of this store (the search over sorted rows and DuckDB's ASOF join) give Feast's answer."""
    feast_store, ours, root = stores
    _write_sources(root, a, b, c, label, naive_sources)
    times = pd.Series([pd.Timestamp(BASE) + pd.Timedelta(minutes=e[3]) for e in ents])
    times = times.dt.tz_convert(tz) if tz else times.dt.tz_localize(None)  # naive: UTC wall time
    entity_df = pd.DataFrame({
        "customer_id": pd.array([e[0] for e in ents], dtype="Int64"),
        "driver_id": [e[1] for e in ents], "other_driver": [e[2] for e in ents],
        "event_timestamp": times, "request_id": range(len(ents)),  # passed through untouched
    })
    if request_form == "service":
        features = ours.get_feature_service("svc")
    else:
        features = ["a:x", "a:amount", "b:w", "c:z", "label:is_fraud"]
    want = feast_store.get_historical_features(entity_df=entity_df.copy(), features=features,
                                               full_feature_names=full_names).to_arrow()
    for store in (ours, asof_store):
        _same_as_feasts(store, entity_df, features, full_names, want)


def _same_as_feasts(ours: FeatureStore, entity_df: pd.DataFrame, features, full_names: bool, want: pa.Table) -> None:
    got_job = ours.get_historical_features(entity_df=entity_df.copy(), features=features, full_feature_names=full_names)
    assert isinstance(got_job, AsofRetrievalJob)
    got = got_job.to_arrow()
    assert got.column_names == want.column_names
    assert got.column("request_id").to_pylist() == list(range(len(entity_df)))  # every row, in the entity set's order
    want = want.sort_by("request_id")
    for name in got.column_names:
        g, w = got.column(name), want.column(name)
        if pa.types.is_timestamp(w.type):  # the same instants; Feast may label them with the entity's zone
            g, w = g.cast(US), w.cast(US)
        assert g.type == w.type, name
        assert g.to_pylist() == w.to_pylist(), name
    pd.testing.assert_frame_equal(got_job.to_df().drop(columns="event_timestamp"),
                                  want.to_pandas().drop(columns="event_timestamp"), check_dtype=False)


def test_the_entity_set_may_be_parquet_files_streamed_to_parquet(stores, tmp_path):
    """A glob of entity files (larger than memory, in use) gives the DataFrame's answer, rows in
    file then row order, written by COPY with the entity time in UTC."""
    _, ours, root = stores
    _write_sources(root, [(1, 0, 0, 5, 1.5, "é"), (1, 30, None, 6, None, None)], [(1, 2, 10, 0.5)],
                   [(3, 20, 1, 7)], [(1, 25, 1)])
    (tmp_path / "ents").mkdir()
    parts = [pd.DataFrame({"customer_id": [1, 1], "driver_id": [2, 2], "other_driver": [3, 3],
                           "event_timestamp": pd.to_datetime([BASE + timedelta(minutes=m) for m in minutes]),
                           "request_id": ids})
             for minutes, ids in (([35, 95], [0, 1]), ([10, 40], [2, 3]))]
    for i, part in enumerate(parts):
        part.to_parquet(tmp_path / "ents" / f"part-{i}.parquet", index=False)
    features = ours.get_feature_service("svc")
    job = ours.get_historical_features(entity_df=str(tmp_path / "ents" / "*.parquet"), features=features)
    assert isinstance(job, AsofRetrievalJob)
    assert job.to_parquet(tmp_path / "out.parquet") == 4
    written = pq.read_table(tmp_path / "out.parquet")
    frame = ours.get_historical_features(entity_df=pd.concat(parts, ignore_index=True), features=features).to_arrow()
    assert written.schema.field("event_timestamp").type == US
    assert written.drop_columns("event_timestamp").to_pylist() == frame.drop_columns("event_timestamp").to_pylist()
    rows = {r["request_id"]: r for r in written.to_pylist()}
    # a at 35': its row of 30', within the TTL of 60'; at 95' that row has expired (30' + 60' < 95').
    # b has no TTL. c2 joins on other_driver; its TTL is 30'.
    # (x, w, z are the source row's position)
    assert (rows[0]["x"], rows[0]["s"], rows[0]["w"], rows[0]["z"]) == (1, None, 0.0, 0)
    assert (rows[1]["x"], rows[1]["w"], rows[1]["z"]) == (None, 0.0, None)
    assert (rows[2]["x"], rows[2]["s"], rows[2]["w"], rows[2]["z"]) == (0, "é", 0.0, None)
    assert job.metadata is not None and job.metadata.min_event_timestamp == BASE + timedelta(minutes=10)


def test_unreadable_entity_files_are_one_clear_error(stores, tmp_path):
    _, ours, _ = stores
    (tmp_path / "text.parquet").write_text("customer_id,event_timestamp\n1,2026\n")
    for entities in (tmp_path / "none-*.parquet", tmp_path / "text.parquet", tmp_path / "missing.parquet"):
        with pytest.raises(ValueError, match="neither a DataFrame nor readable Parquet files"):
            ours.get_historical_features(entity_df=str(entities), features=["a:x"])


def test_what_the_asof_join_does_not_cover_is_feasts_own_join(stores):
    """A per-row cut on created time is no ASOF join: Feast's own store answers it, unchanged."""
    feast_store, ours, root = stores
    _write_sources(root, [(1, 0, 0, None, 1.0, "a"), (1, 10, 50, None, 2.0, "b")], [], [], [])
    entity_df = pd.DataFrame({"customer_id": [1], "event_timestamp": [pd.Timestamp(BASE) + pd.Timedelta(minutes=20)]})
    job = ours.get_historical_features(entity_df=entity_df, features=["a:x"], filter_by_created_timestamp=True)
    assert not isinstance(job, AsofRetrievalJob)
    want = feast_store.get_historical_features(entity_df=entity_df, features=["a:x"], filter_by_created_timestamp=True)
    # the row of 10' was created at 60', after the entity time: the row of 0' is the answer
    assert job.to_arrow().column("x").to_pylist() == want.to_arrow().column("x").to_pylist() == [0]


def test_created_time_orders_the_join_only_where_a_source_has_ties(stores):
    """Without two rows of one key at one event time the join compares event times alone (the
    128-bit (event, created) key costs about a quarter of its CPU); with one, the later created row wins."""
    import duckdb

    feast_store, ours, root = stores
    entity_df = pd.DataFrame({"customer_id": [1, 1], "driver_id": [0, 0], "other_driver": [0, 0],
                              "event_timestamp": [pd.Timestamp(BASE) + pd.Timedelta(minutes=m) for m in (5, 20)]})
    for a, ties, want in (
        ([(1, 0, 9, None, 1.0, "a"), (1, 10, 0, None, 2.0, "b")], False, [0, 1]),
        ([(1, 0, 9, None, 1.0, "a"), (1, 0, 1, None, 2.0, "b"), (1, 0, None, None, 3.0, "c")], True, [0, 0]),
    ):
        _write_sources(root, a, [], [(0, 0, 0, None)], [], naive=False)
        job = ours.get_historical_features(entity_df=entity_df, features=["a:x", "c:z"])
        assert isinstance(job, AsofRetrievalJob)
        with duckdb.connect() as conn:
            views = {v.source: v for v in job.views_on(conn)}
        assert views[f"read_parquet('{root / 'a.parquet'}')"].tie_break is ties
        assert not views[f"read_parquet('{root / 'c.parquet'}')"].tie_break  # c's one row: no tie
        got = job.to_arrow()
        assert got.column("x").to_pylist() == want  # x is the row's position: 0 is the row created at 9'
        assert got.column("x").to_pylist() == feast_store.get_historical_features(
            entity_df=entity_df, features=["a:x", "c:z"]).to_arrow().column("x").to_pylist()


def test_keys_of_another_integer_type_match_by_value(stores, asof_store):
    """A source whose join key is int32 joins int64 entity keys by value, in both joins, as Feast's."""
    feast_store, ours, root = stores
    _write_sources(root, [(1, 0, 0, None, 1.0, "a"), (2, 0, 0, None, 2.0, "b")], [], [], [])
    a = pq.read_table(root / "a.parquet")
    pq.write_table(a.set_column(0, "customer_id", a.column("customer_id").cast(pa.int32())), root / "a.parquet")
    entity_df = pd.DataFrame({"customer_id": [2, 1, 3], "request_id": range(3),
                              "event_timestamp": [pd.Timestamp(BASE) + pd.Timedelta(minutes=5)] * 3})
    want = feast_store.get_historical_features(entity_df=entity_df.copy(), features=["a:x"]).to_arrow()
    assert want.sort_by("request_id").column("x").to_pylist() == [1, 0, None]  # x: the source row's position
    for store in (ours, asof_store):
        _same_as_feasts(store, entity_df, ["a:x"], False, want)


def test_views_fit_in_memory_by_the_sources_footers(stores):
    """``join: auto`` holds the views' rows in memory only where they fit ``memory_limit`` (the
    sources' rows × columns read × 16 bytes); past it DuckDB's ASOF join (which spills) answers."""
    import duckdb

    _, ours, root = stores
    # 40 rows × 4 columns read (key, event, created, x) × 16 bytes: 2,560 bytes
    _write_sources(root, [(1, 0, 0, None, 1.0, "a")] + [(2, m, 0, None, 0.0, "") for m in range(39)], [], [], [])
    entity_df = pd.DataFrame({"customer_id": [1], "event_timestamp": [pd.Timestamp(BASE)]})
    fits = []
    for limit in ("512MB", "2.6kB", "2.5kB", "2KiB"):
        job = _store(root, OFFLINE_STORE_TYPE, memory_limit=limit).get_historical_features(entity_df=entity_df, features=["a:x"])
        assert isinstance(job, AsofRetrievalJob)
        with duckdb.connect() as conn:
            fits.append(job._views_fit(conn))
    assert fits == [True, True, False, False]
