"""Consent and purpose limitation in a region: statistics, training statistics and training sets
leave out whoever had not consented for that purpose at the time that counts; bad config is one line."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from fedstore.cli import main
from fedstore.federation import ConfigError, PrivacyConfig, load_config
from fedstore.federation.consent import Purpose
from fedstore.federation.statistics import FeatureSpec
from fedstore.federation.training import training_spec
from fedstore.regions.consent import consent_gate
from fedstore.regions.datasets import TrainingSetRequest, build_training_set
from fedstore.regions.datasets.consent_filter import MARK_COLUMN, TrainingSetFilter
from fedstore.regions.errors import InvalidSource
from fedstore.regions.publishing.examples import labelled_examples
from fedstore.regions.publishing.publish import consent_basis_path, publish_statistics
from fedstore.regions.publishing.statistics import compute_statistics
from fedstore.regions.store.erasure_list import ErasedKeys
from fedstore.regions.store.node import RegionNode
from handmade import write_sources

T = datetime(2026, 6, 1, tzinfo=timezone.utc)
TS = pa.timestamp("us", tz="UTC")
KYC = (FeatureSpec("customer_profile:kyc_level", 0, 4, (0, 1, 2, 3, 4)),)
CUSTOMERS = 40
WITHDRAWS = 5  # withdraws global_statistics and local_training consent at T + 1.5 days
WITHDRAWN_AT = T + timedelta(days=1, hours=12)


def with_consent(cfg: Path, consent: dict | None) -> Path:
    raw = yaml.safe_load(cfg.read_text())
    for r in raw["regions"]:
        if consent is not None:
            r["consent"] = consent
    cfg.write_text(yaml.safe_dump(raw))
    return cfg


def write_consent(data_dir: Path, rows: list[tuple]) -> None:
    """rows: (customer_id, purpose, granted_at, withdrawn_at)"""
    pq.write_table(pa.table({
        "join_key": pa.array(["customer_id"] * len(rows)),
        "entity_id": pa.array([r[0] for r in rows], pa.int64()),
        "purpose": pa.array([r[1] for r in rows]),
        "granted_at": pa.array([r[2] for r in rows], TS),
        "withdrawn_at": pa.array([r[3] for r in rows], TS),
        "source": pa.array(["crm-consent-form"] * len(rows)),
    }), data_dir / "sources" / "consent.parquet")


def standard_consent(data_dir: Path) -> None:
    """Customers 0-29 granted statistics and training long before; 5 withdraws both mid-way; 30-39 have no record."""
    granted = T - timedelta(days=60)
    rows = []
    for c in range(30):
        for p in ("global_statistics", "local_training"):
            rows.append((c, p, granted, WITHDRAWN_AT if c == WITHDRAWS else None))
    write_consent(data_dir, rows)


@pytest.fixture()
def region(tmp_path, sqlite_federation):
    cfg = with_consent(Path(sqlite_federation.source),
                       {"required": ["global_statistics", "local_training"], "default": "deny"})
    node = RegionNode(load_config(cfg).region("MY"))
    write_sources(node.data_dir, customers=CUSTOMERS, drivers=3, days=3, start=T)
    standard_consent(node.data_dir)
    node.apply()
    return node


def test_an_entity_that_withdraws_between_two_publications_leaves_the_second(region):
    gate = consent_gate(region.region, Purpose.GLOBAL_STATISTICS)
    first = compute_statistics(region, KYC, T - timedelta(days=29), T + timedelta(days=1), gate)
    second = compute_statistics(region, KYC, T - timedelta(days=28), T + timedelta(days=2), gate)
    ungated = compute_statistics(region, KYC, T - timedelta(days=28), T + timedelta(days=2))
    assert ungated.features[0].count == CUSTOMERS
    assert first.features[0].count == 30  # 30-39 have no record and the default is deny
    assert second.features[0].count == 29  # 5 withdrew in between
    assert (first.consent_excluded, second.consent_excluded) == ({"customer_profile": 10}, {"customer_profile": 11})
    profile = pq.read_table(region.data_dir / "sources" / "customer_profile.parquet").to_pylist()
    kyc_of_5 = next(r["kyc_level"] for r in profile if r["customer_id"] == WITHDRAWS)
    assert first.features[0].sum - second.features[0].sum == pytest.approx(kyc_of_5)


def test_the_released_count_reflects_consent(region):
    """Through publish_statistics, at an ε so large the noise is far below one."""
    privacy = PrivacyConfig(epsilon_per_month=1e7, minimum_cohort=1)
    counts = []
    for end in (T + timedelta(days=1), T + timedelta(days=2)):
        _, released, path = publish_statistics(region, privacy, epsilon=1e6, end=end, days=30, catalog=KYC)
        counts.append(round(released.features[0].count))
        assert json.loads(path.read_text())["features"][0]["count"] == released.features[0].count
    assert counts == [30, 29]
    # the region's own record of what the release rested on, kept beside it, never in what is sent
    sid = json.loads(path.read_text())["submission_id"]
    basis = json.loads(consent_basis_path(region.data_dir, sid).read_text())
    assert basis["left_out"] == {"customer_profile": 11} and basis["as_of"] == end.isoformat()
    assert len(basis["records"]["sha256"]) == 64 and basis["records"]["sha256"] not in path.read_text()


def test_publish_cli_says_who_consent_left_out(region, capsys):
    cfg = str(region.region.data_dir.parents[1] / "fedstore.yaml")
    assert main(["--config", cfg, "region", "publish-stats", "--region", "MY", "--epsilon", "1",
                 "--end", (T + timedelta(days=2)).isoformat()]) == 0
    out = capsys.readouterr().out
    assert ("consent (global_statistics, default deny): left out 11 entities of customer_profile, "
            "11 entities of customer_transactions") in out
    standard = region.data_dir / "sources" / "consent.parquet"
    write_consent(region.data_dir, [(0, "serving", T - timedelta(days=1), None)])  # nobody consented to statistics
    assert standard.exists()
    assert main(["--config", cfg, "region", "publish-stats", "--region", "MY", "--epsilon", "1",
                 "--end", (T + timedelta(days=2)).isoformat()]) == 1
    err = capsys.readouterr().err
    assert "has no data with consent for global_statistics (40 left out)" in err and err.count("\n") == 1


def test_a_purpose_that_needs_no_consent_is_not_filtered_and_default_allow_keeps_the_unrecorded(tmp_path, sqlite_federation):
    cfg = with_consent(Path(sqlite_federation.source), {"required": ["global_statistics"], "default": "allow"})
    node = RegionNode(load_config(cfg).region("MY"))
    write_sources(node.data_dir, customers=CUSTOMERS, drivers=3, days=3, start=T)
    standard_consent(node.data_dir)
    node.apply()
    end = T + timedelta(days=2)
    stats = compute_statistics(node, KYC, end - timedelta(days=30), end, consent_gate(node.region, Purpose.GLOBAL_STATISTICS))
    assert stats.features[0].count == CUSTOMERS - 1  # only the withdrawal counts; 30-39 are allowed by default
    evaluation = consent_gate(node.region, Purpose.EVALUATION)
    assert not evaluation.active and evaluation.snapshot() == {"purpose": "evaluation", "requires_consent": False,
                                                               "default": "allow"}


def test_consent_again_after_a_withdrawal_counts_from_its_grant(region):
    write_consent(region.data_dir, [(1, "global_statistics", T - timedelta(days=9), T - timedelta(days=5)),
                                    (1, "global_statistics", T + timedelta(days=1), None)])
    gate = consent_gate(region.region, Purpose.GLOBAL_STATISTICS)
    table = pa.table({"customer_id": pa.array([1, 1, 1, 1], pa.int64())})
    times = pa.array([T - timedelta(days=7), T, T + timedelta(days=1), T + timedelta(days=3)], TS)
    assert gate.allowed(table, ["customer_id"], times).tolist() == [True, False, True, True]


def test_training_statistics_leave_out_the_withdrawn(region):
    spec = training_spec("fraud_scoring")
    gate = consent_gate(region.region, Purpose.GLOBAL_STATISTICS)
    before = labelled_examples(region, spec, T - timedelta(days=1), T + timedelta(days=1), gate)
    after = labelled_examples(region, spec, T - timedelta(days=1), T + timedelta(days=2, hours=1), gate)
    everyone = labelled_examples(region, spec, T - timedelta(days=1), T + timedelta(days=2, hours=1))
    assert (before.rows, after.rows, everyone.rows) == (30, 29, CUSTOMERS)
    assert after.consent_excluded == 11


def _entities(path: Path, ids: list[int], times: list[datetime]) -> Path:
    pq.write_table(pa.table({"customer_id": pa.array(ids, pa.int64()), "event_timestamp": pa.array(times, TS)}), path)
    return path


def test_training_sets_exclude_or_mark_per_row_at_its_own_time_and_the_manifest_says_so(region, tmp_path):
    times = [T + timedelta(days=1), T + timedelta(days=2), T + timedelta(days=2), T + timedelta(days=2)]
    ents = _entities(tmp_path / "e.parquet", [WITHDRAWS, WITHDRAWS, 6, 35], times)
    m = build_training_set(region, TrainingSetRequest(ents, "fraud_scoring", tmp_path / "x.parquet", label="is_fraud",
                                                      show_progress=False))
    got = sorted((r["customer_id"], r["event_timestamp"]) for r in pq.read_table(tmp_path / "x.parquet").to_pylist())
    assert got == [(WITHDRAWS, T + timedelta(days=1)), (6, T + timedelta(days=2))]  # 5 before withdrawing; not 35
    assert m.rows == 2 and m.consent["rows_excluded_without_consent"] == 2 and m.consent["mode"] == "exclude"
    assert m.consent["purpose"] == "local_training" and m.consent["records"]["present"]
    assert len(m.consent["records"]["sha256"]) == 64
    on_disk = json.loads((tmp_path / "x.manifest.json").read_text())
    assert on_disk["consent"] == m.consent

    m = build_training_set(region, TrainingSetRequest(ents, "fraud_scoring", tmp_path / "y.parquet", consent="mark",
                                                      show_progress=False))
    marked = {(r["customer_id"], r["event_timestamp"]): r["consent_local_training"]
              for r in pq.read_table(tmp_path / "y.parquet").to_pylist()}
    assert marked == {(WITHDRAWS, times[0]): True, (WITHDRAWS, times[1]): False, (6, times[2]): True,
                      (35, times[3]): False}
    assert m.consent["rows_marked_without_consent"] == 2


def test_training_set_cli_consent_mode(region, tmp_path, capsys):
    cfg = str(region.region.data_dir.parents[1] / "fedstore.yaml")
    ents = _entities(tmp_path / "e.parquet", [WITHDRAWS, 6], [T + timedelta(days=2)] * 2)
    args = ["--config", cfg, "region", "training-set", "--region", "MY", "--entities", str(ents),
            "--feature-service", "fraud_scoring", "--out", str(tmp_path / "o.parquet"), "--no-progress"]
    with pytest.raises(SystemExit) as e:
        main(args + ["--consent", "everyone"])
    assert e.value.code == 2 and "invalid choice: 'everyone'" in capsys.readouterr().err
    assert main(args + ["--consent", "exclude"]) == 0
    assert "1 rows left out" in capsys.readouterr().out
    only_withdrawn = _entities(tmp_path / "w.parquet", [WITHDRAWS], [T + timedelta(days=2)])
    assert main(args[:7] + [str(only_withdrawn)] + args[8:]) == 1
    err = capsys.readouterr().err
    assert "without consent for local training" in err and err.count("\n") == 1


@pytest.mark.parametrize("consent, fragment", [
    ({"required": ["marketing"]}, "regions[0].consent.required: unknown purpose 'marketing'"),
    ({"required": "serving"}, "regions[0].consent.required: expected a list of purposes"),
    ({"required": ["serving"], "default": "maybe"}, "regions[0].consent.default: expected deny or allow"),
    ({"required": ["serving"], "opt_out": True}, "regions[0].consent.opt_out: unknown key"),
    ({"required": ["serving", "serving"]}, "a purpose is listed twice"),
])
def test_bad_consent_config_is_one_line(tmp_path, sqlite_federation, consent, fragment):
    cfg = with_consent(Path(sqlite_federation.source), consent)
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert fragment in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("table, fragment", [
    (pa.table({"join_key": ["customer_id"], "entity_id": pa.array([1], pa.int64())}), "lack column purpose"),
    (pa.table({"join_key": ["customer_id"], "entity_id": ["1"], "purpose": ["serving"], "granted_at": pa.array([T], TS),
               "withdrawn_at": pa.array([None], TS), "source": ["x"]}), "column entity_id is string, expected integer"),
    (pa.table({"join_key": ["customer_id"], "entity_id": pa.array([1], pa.int64()), "purpose": ["ads"],
               "granted_at": pa.array([T], TS), "withdrawn_at": pa.array([None], TS), "source": ["x"]}),
     "unknown purpose 'ads'"),
    (pa.table({"join_key": ["customer_id"], "entity_id": pa.array([1], pa.int64()), "purpose": ["serving"],
               "granted_at": pa.array([T], TS), "withdrawn_at": pa.array([T - timedelta(days=1)], TS),
               "source": ["x"]}), "withdrawn before they were granted"),
])
def test_bad_consent_records_are_one_line(region, table, fragment):
    pq.write_table(table, region.data_dir / "sources" / "consent.parquet")
    with pytest.raises(InvalidSource) as e:
        consent_gate(region.region, Purpose.GLOBAL_STATISTICS)
    assert fragment in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("default", ["deny", "allow"])
def test_the_spans_filter_leaves_out_what_the_records_as_of_join_leaves_out(tmp_path, sqlite_federation, default):
    """Statistics filter consent at the window's end from the records' cached spans (a set lookup
    per row, benchmarks/consent.py); on varied records — withdrawn, granted again, granted after
    the time, another purpose, none — it keeps exactly the entities, and counts exactly those left
    out, that the records' own as-of join (a time per row) does."""
    import random

    from fedstore.regions.store.source_reader import read_latest

    cfg = with_consent(Path(sqlite_federation.source), {"required": ["global_statistics"], "default": default})
    node = RegionNode(load_config(cfg).region("MY"))
    write_sources(node.data_dir, customers=CUSTOMERS, drivers=3, days=3, start=T)
    r = random.Random(7)
    end = T + timedelta(days=2)
    rows = []
    for c in range(CUSTOMERS):
        kind = r.choice(["held", "withdrawn", "again", "later", "other", "none", "withdrawn later"])
        g = T - timedelta(days=r.randint(2, 30))
        rows += {"held": [(c, "global_statistics", g, None)],
                 "withdrawn": [(c, "global_statistics", g, end - timedelta(hours=1))],
                 "again": [(c, "global_statistics", g, g + timedelta(hours=1)), (c, "global_statistics", end, None)],
                 "later": [(c, "global_statistics", end + timedelta(seconds=1), None)],
                 "other": [(c, "serving", g, None)],
                 "none": [],
                 "withdrawn later": [(c, "global_statistics", g, end + timedelta(hours=1))]}[kind]
    write_consent(node.data_dir, rows)
    node.apply()
    gate = consent_gate(node.region, Purpose.GLOBAL_STATISTICS)
    fv = next(v for v in node.feature_views() if v.name == "customer_profile")
    everyone = pa.Table.from_batches(list(read_latest(fv, end - timedelta(days=90), end, config=node.store.config,
                                                      offline_store=None, batch_rows=1 << 20)))
    by_gate, left_out = gate.keep(everyone, ["customer_id"], end)
    at_each_row = pa.array([end] * everyone.num_rows, TS)
    by_as_of, as_of_left_out = gate.keep(everyone, ["customer_id"], at_each_row)
    assert sorted(by_gate.column("customer_id").to_pylist()) == sorted(by_as_of.column("customer_id").to_pylist())
    assert left_out == as_of_left_out and 0 < left_out < CUSTOMERS


@pytest.mark.parametrize("mode", ["exclude", "mark"])
def test_the_training_set_filter_inside_the_join_is_the_gates_own_answer_row_by_row(region, tmp_path, mode):
    """Consent and erasure applied inside the join's query agree, row by row, with the consent gate
    statistics use (its records read one row at a time) and the erasure list; the counts add up."""
    rows = [(c, "local_training", T - timedelta(days=60), WITHDRAWN_AT if c == WITHDRAWS else None) for c in range(30)]
    rows += [(7, "local_training", T + timedelta(days=1), None),  # 7 withdrew, then consented again
             (31, "local_training", T, T)]  # withdrawn the moment it was granted
    rows[7] = (7, "local_training", T - timedelta(days=60), T + timedelta(hours=12))
    write_consent(region.data_dir, rows)
    rng = random.Random(5)
    ids = [rng.choice([*range(CUSTOMERS), None]) for _ in range(400)]
    times = [T + timedelta(hours=rng.randrange(-24, 72)) for _ in ids] + [T, WITHDRAWN_AT, T + timedelta(days=1)]
    ids += [31, WITHDRAWS, 7]
    ents = tmp_path / "e.parquet"
    pq.write_table(pa.table({"customer_id": pa.array(ids, pa.int64()), "event_timestamp": pa.array(times, TS),
                             "request_id": pa.array(range(len(ids)), pa.int64())}), ents)
    gate = consent_gate(region.region, Purpose.LOCAL_TRAINING)
    erased = ErasedKeys({"customer_id": (3, 11, "not-an-id")})
    f = TrainingSetFilter(gate, erased, {"customer_id": pa.int64()}, mode)
    job = region.store.get_historical_features(entity_df=str(ents), features=["customer_profile:kyc_level"])
    written = job.filtered(f.entity_filter()).to_parquet(tmp_path / "out.parquet", ordered=False)
    f.count(ents, len(ids), tmp_path / "out.parquet", written)

    table = pq.read_table(ents)
    consented = gate.allowed(table, ["customer_id"], table.column("event_timestamp").combine_chunks())
    gone = [i in (3, 11) for i in ids]
    want = {r: bool(ok) for r, ok, g in zip(range(len(ids)), consented, gone) if not g and (ok or mode == "mark")}
    got = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert {r["request_id"]: r.get(MARK_COLUMN, True) for r in got} == want
    assert f.rows_erased == sum(gone) > 0 and f.kept == written == len(want)
    assert f.rows_without_consent == sum(1 for ok, g in zip(consented, gone) if not g and not ok) > 0
    assert not consented[-3] and not consented[-2] and consented[-1]  # the edges: withdrawn at, regranted at
