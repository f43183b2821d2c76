"""Training sets: point-in-time correct, TTL honoured, labelled, with a manifest; bad input refused."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedstore.cli import main
from fedstore.regions.datasets import TrainingSetRequest, build_training_set, list_manifests
from fedstore.regions.errors import InvalidEntities, InvalidOutput, UnknownName
from fedstore.regions.store.node import RegionNode
from exit_codes import expected_exit

T = datetime(2026, 6, 1, tzinfo=timezone.utc)
TS = pa.timestamp("us", tz="UTC")


def _write(path, **cols):
    pq.write_table(pa.table(cols), path)


@pytest.fixture()
def region(sqlite_federation):
    """Hand-built history for customer 1: known values at known times."""
    node = RegionNode(sqlite_federation.region("MY"))
    src = node.data_dir / "sources"
    src.mkdir(parents=True)
    times = [T, T + timedelta(days=1), T + timedelta(days=3)]
    _write(src / "customer_transactions.parquet",
           customer_id=pa.array([1, 1, 1], pa.int64()), event_timestamp=pa.array(times, TS), created=pa.array(times, TS),
           txn_count_7d=pa.array([10, 20, 30], pa.int64()), txn_count_30d=pa.array([1, 2, 3], pa.int64()),
           spend_7d=[1.0, 2.0, 3.0], spend_30d=[1.0, 2.0, 3.0], avg_ticket=[1.0, 2.0, 3.0],
           chargeback_rate_30d=[0.0, 0.0, 0.0], distinct_merchants_30d=pa.array([1, 1, 1], pa.int64()),
           night_txn_ratio_7d=[0.1, 0.2, 0.3])
    _write(src / "customer_profile.parquet",
           customer_id=pa.array([1], pa.int64()), event_timestamp=pa.array([T - timedelta(days=30)], TS),
           created=pa.array([T - timedelta(days=30)], TS), account_age_days=pa.array([100], pa.int64()),
           kyc_level=pa.array([2], pa.int64()), home_city=["Penang"])
    _write(src / "driver_performance.parquet",
           driver_id=pa.array([7], pa.int64()), event_timestamp=pa.array([T], TS), created=pa.array([T], TS),
           acceptance_rate_7d=[0.9], avg_rating_30d=[4.8], trips_last_hour=pa.array([2], pa.int64()),
           cancellations_7d=pa.array([0], pa.int64()), online_hours_7d=[30.0], completed_trips_30d=pa.array([90], pa.int64()))
    _write(src / "fraud_labels.parquet",
           customer_id=pa.array([1, 1], pa.int64()), event_timestamp=pa.array([T + timedelta(days=1), T + timedelta(days=3)], TS),
           is_fraud=pa.array([0, 1], pa.int64()))
    node.apply()
    return node


def _entities(path, times, ids=None):
    ids = ids or [1] * len(times)
    _write(path, customer_id=pa.array(ids, pa.int64()), event_timestamp=pa.array(times, TS))
    return path


def test_point_in_time_no_future_values_and_ttl_expiry(region, tmp_path):
    ents = _entities(tmp_path / "e.parquet", [
        T - timedelta(hours=1),                   # before any value: null
        T + timedelta(hours=12),                  # sees day 0 only
        T + timedelta(days=1),                    # exactly at day 1's event time: sees day 1
        T + timedelta(days=2, hours=23),          # day 3 has not arrived: day 1 (within the 2-day TTL)
        T + timedelta(days=3, seconds=1),         # day 3
        T + timedelta(days=6),                    # day 3 is older than the 2-day TTL: null
    ])
    m = build_training_set(region, TrainingSetRequest(ents, "fraud_scoring", tmp_path / "train.parquet",
                                                      label="is_fraud", show_progress=False))
    rows = sorted(pq.read_table(tmp_path / "train.parquet").to_pylist(), key=lambda r: r["event_timestamp"])
    assert [r["txn_count_7d"] for r in rows] == [None, 10, 20, 20, 30, None]
    # profile (TTL 90 days) is known from 30 days before: present on every row
    assert [r["kyc_level"] for r in rows] == [2] * 6
    # the label joins point-in-time too, with its 1-day TTL (day 1's label has expired by day 2 23:00)
    assert [r["is_fraud"] for r in rows] == [None, None, 0, None, 1, None]
    assert m.rows == 6 and m.nulls["txn_count_7d"] == 2 and m.nulls["is_fraud"] == 4


def test_manifest_beside_the_dataset_and_in_the_region_index(region, tmp_path, capsys):
    ents = _entities(tmp_path / "e.parquet", [T + timedelta(days=1)])
    out = tmp_path / "out" / "train.parquet"
    m = build_training_set(region, TrainingSetRequest(ents, "fraud_scoring", out, label="is_fraud", show_progress=False))
    on_disk = json.loads((tmp_path / "out" / "train.manifest.json").read_text())
    assert on_disk["dataset_id"] == m.dataset_id
    assert on_disk["region"] == "MY" and on_disk["law"] == "PDPA-MY"
    assert on_disk["feature_service"] == "fraud_scoring" and on_disk["label"] == "is_fraud"
    assert len(on_disk["schema_hash"]) == 64 and ["is_fraud", "int64"] in on_disk["schema"]
    assert on_disk["entity_file"]["rows"] == 1 and len(on_disk["entity_file"]["sha256"]) == 64
    assert {s["path"] for s in on_disk["sources"]} == {
        "sources/customer_transactions.parquet", "sources/customer_profile.parquet", "sources/fraud_labels.parquet"}
    assert on_disk["time_range"][0].startswith("2026-06-02")
    assert on_disk["tool_version"].startswith("fedstore")
    listed = list_manifests(region.data_dir)
    assert [(x.dataset_id, x.manifest.dataset_id, x.replaced_by) for x in listed] == [(m.dataset_id, m.dataset_id, None)]
    # the same schema gives the same hash: a model can pin the features it was trained on
    m2 = build_training_set(region, TrainingSetRequest(ents, "fraud_scoring", tmp_path / "t2.parquet",
                                                       label="is_fraud", show_progress=False))
    assert m2.schema_hash == m.schema_hash and m2.dataset_id != m.dataset_id
    # built again over the first one: said so, and the index lists the first as replaced, not twice as the new
    said: list[str] = []
    m3 = build_training_set(region, TrainingSetRequest(ents, "fraud_scoring", Path(m.output), label="is_fraud",
                                                       show_progress=False), say=said.append)
    assert said[-1].endswith(f"replacing dataset {m.dataset_id})")
    listed = list_manifests(region.data_dir)
    assert [(x.dataset_id, x.replaced_by) for x in listed] == [
        (m3.dataset_id, None), (m2.dataset_id, None), (m.dataset_id, m3.dataset_id)]
    assert main(["--config", str(region.region.data_dir.parents[1] / "fedstore.yaml"), "region", "datasets",
                 "--region", "MY"]) == 0
    out = capsys.readouterr().out
    assert f"{m.dataset_id}  (replaced by {m3.dataset_id})" in out and out.count(m3.dataset_id) == 2


def test_chunks_give_the_same_dataset(region, tmp_path):
    times = [T + timedelta(hours=h) for h in range(0, 96, 3)]
    ents = _entities(tmp_path / "e.parquet", times)
    build_training_set(region, TrainingSetRequest(ents, "fraud_scoring", tmp_path / "a.parquet", show_progress=False))
    build_training_set(region, TrainingSetRequest(ents, "fraud_scoring", tmp_path / "b.parquet", chunk_rows=5,
                                                  show_progress=False))
    key = lambda r: r["event_timestamp"]  # noqa: E731
    a = sorted(pq.read_table(tmp_path / "a.parquet").to_pylist(), key=key)
    b = sorted(pq.read_table(tmp_path / "b.parquet").to_pylist(), key=key)
    assert a == b and len(a) == len(times)


def test_the_codec_asked_for_changes_the_file_not_the_rows(region, tmp_path, capsys):
    times = [T + timedelta(hours=h) for h in range(0, 96, 3)]
    ents = _entities(tmp_path / "e.parquet", times)
    build_training_set(region, TrainingSetRequest(ents, "fraud_scoring", tmp_path / "auto.parquet", label="is_fraud",
                                                  show_progress=False))
    assert main(["--config", str(region.region.data_dir.parents[1] / "fedstore.yaml"), "region", "training-set",
                 "--region", "MY", "--entities", str(ents),
                 "--feature-service", "fraud_scoring", "--label", "is_fraud", "--out", str(tmp_path / "zstd.parquet"),
                 "--compression", "zstd", "--no-progress"]) == 0
    meta = pq.read_metadata(tmp_path / "zstd.parquet")
    assert {meta.row_group(0).column(i).compression for i in range(meta.num_columns)} == {"ZSTD"}
    key = lambda r: r["event_timestamp"]  # noqa: E731
    assert sorted(pq.read_table(tmp_path / "zstd.parquet").to_pylist(), key=key) == \
        sorted(pq.read_table(tmp_path / "auto.parquet").to_pylist(), key=key)
    with pytest.raises(InvalidOutput, match="compression must be one of auto, none"):
        build_training_set(region, TrainingSetRequest(ents, "fraud_scoring", tmp_path / "bad.parquet",
                                                      compression="rar", show_progress=False))
    assert not (tmp_path / "bad.parquet").exists()


def test_a_glob_of_entity_files_gives_the_one_files_dataset(region, tmp_path, capsys):
    """An entity set split over files (``--entities 'parts/*.parquet'``): the same rows as one file,
    every part fingerprinted; parts of different schemas, a glob naming nothing, or an output the
    glob would read back are one line each."""
    times = [T + timedelta(hours=h) for h in range(0, 96, 3)]
    one = _entities(tmp_path / "e.parquet", times)
    (tmp_path / "parts").mkdir()
    for i in range(0, len(times), 10):
        _entities(tmp_path / "parts" / f"p{i:02}.parquet", times[i:i + 10])
    a = build_training_set(region, TrainingSetRequest(one, "fraud_scoring", tmp_path / "a.parquet", show_progress=False))
    cfg = str(region.region.data_dir.parents[1] / "fedstore.yaml")
    args = ["--config", cfg, "region", "training-set", "--region", "MY", "--feature-service", "fraud_scoring",
            "--no-progress", "--entities", str(tmp_path / "parts" / "*.parquet")]
    assert main([*args, "--out", str(tmp_path / "b.parquet")]) == 0
    key = lambda r: r["event_timestamp"]  # noqa: E731
    assert sorted(pq.read_table(tmp_path / "b.parquet").to_pylist(), key=key) == \
        sorted(pq.read_table(tmp_path / "a.parquet").to_pylist(), key=key)
    b = json.loads((tmp_path / "b.manifest.json").read_text())
    assert b["rows"] == a.rows == len(times) and b["entity_file"]["rows"] == len(times)
    assert [f["path"] for f in b["entity_file"]["files"]] == [f"p{i:02}.parquet" for i in range(0, 32, 10)]
    assert len(b["entity_file"]["sha256"]) == 64 and b["entity_file"]["sha256"] != a.entity_file["sha256"]
    capsys.readouterr()

    assert main([*args, "--out", str(tmp_path / "parts" / "out.parquet")]) == 1
    assert "is one of the entity files" in capsys.readouterr().err
    _write(tmp_path / "parts" / "p99.parquet", customer_id=pa.array([1], pa.int32()), event_timestamp=pa.array([T], TS))
    assert main([*args, "--out", str(tmp_path / "c.parquet")]) == 1
    assert "differ in their columns or types" in capsys.readouterr().err
    args[-1] = str(tmp_path / "none" / "*.parquet")
    assert main([*args, "--out", str(tmp_path / "c.parquet")]) == 1
    assert "no entity file matches" in capsys.readouterr().err
    assert not (tmp_path / "c.parquet").exists()


# (case, how to write the bad entity file, error type, fragment)
BAD = [
    ("missing file", None, InvalidEntities, "does not exist"),
    ("empty file", lambda p: _write(p, customer_id=pa.array([], pa.int64()), event_timestamp=pa.array([], TS)),
     InvalidEntities, "has no rows"),
    ("no join key", lambda p: _write(p, driver_id=pa.array([1], pa.int64()), event_timestamp=pa.array([T], TS)),
     InvalidEntities, "lacks the join key 'customer_id'"),
    ("no timestamp", lambda p: _write(p, customer_id=pa.array([1], pa.int64())), InvalidEntities, "no 'event_timestamp'"),
    ("wrong key type", lambda p: _write(p, customer_id=["a"], event_timestamp=pa.array([T], TS)),
     InvalidEntities, "must be int64"),
    ("timestamp as text", lambda p: _write(p, customer_id=pa.array([1], pa.int64()), event_timestamp=["2026-06-01"]),
     InvalidEntities, "must be a timestamp"),
    ("not parquet", lambda p: p.write_text("customer_id,event_timestamp\n1,2026\n"), InvalidEntities, "not readable Parquet"),
    ("column named like a feature",
     lambda p: _write(p, customer_id=pa.array([1], pa.int64()), event_timestamp=pa.array([T], TS), spend_7d=[1.0]),
     InvalidEntities, "column 'spend_7d' named like a feature"),
]


@pytest.mark.parametrize("case,make,err,fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_entities_are_refused_with_no_output_left(region, tmp_path, capsys, case, make, err, fragment):
    ents = tmp_path / "e.parquet"
    if make:
        make(ents)
    out = tmp_path / "train.parquet"
    with pytest.raises(err, match=fragment):
        build_training_set(region, TrainingSetRequest(ents, "fraud_scoring", out, show_progress=False))
    assert list(tmp_path.glob("*train*")) == []
    # the CLI: one line, exit 2
    code = main(["--config", str(region.region.data_dir.parents[1] / "fedstore.yaml"), "region", "training-set",
                 "--region", "MY", "--entities", str(ents), "--feature-service", "fraud_scoring", "--out", str(out)])
    err_text = capsys.readouterr().err
    assert code == expected_exit(err_text) and fragment in err_text and "Traceback" not in err_text
    assert not out.exists()


def test_output_that_is_the_input_a_directory_or_under_a_file_is_refused(region, tmp_path, capsys):
    ents = _entities(tmp_path / "e.parquet", [T])
    before = ents.read_bytes()
    (tmp_path / "afile").write_text("x")
    cases = [(ents, "is the entity file itself"), (tmp_path, "is a directory"),
             (tmp_path / "afile" / "train.parquet", "cannot create the output directory")]
    config = str(region.region.data_dir.parents[1] / "fedstore.yaml")
    for out, fragment in cases:
        with pytest.raises(InvalidOutput, match=fragment):
            build_training_set(region, TrainingSetRequest(ents, "fraud_scoring", out, show_progress=False))
        code = main(["--config", config, "region", "training-set", "--region", "MY", "--entities", str(ents),
                     "--feature-service", "fraud_scoring", "--out", str(out), "--no-progress"])
        err_text = capsys.readouterr().err
        assert code == 1 and fragment in err_text and "Traceback" not in err_text
    assert ents.read_bytes() == before  # the input is untouched
    assert list(tmp_path.glob(".*partial")) == [] and not (region.data_dir / "datasets").exists()


def test_datasets_listing_survives_an_edited_manifest_and_names_a_broken_index_line(region, tmp_path, capsys):
    ents = _entities(tmp_path / "e.parquet", [T])
    build_training_set(region, TrainingSetRequest(ents, "fraud_scoring", tmp_path / "a.parquet", show_progress=False))
    m = build_training_set(region, TrainingSetRequest(ents, "fraud_scoring", tmp_path / "b.parquet",
                                                      show_progress=False))
    (tmp_path / "a.manifest.json").write_text("{edited by hand")
    argv = ["--config", str(region.region.data_dir.parents[1] / "fedstore.yaml"), "region", "datasets", "--region", "MY"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert m.dataset_id in out and "(manifest missing or unreadable)" in out
    index = region.data_dir / "datasets" / "index.jsonl"
    with index.open("a") as f:
        f.write('{"dataset_id": "my-ds-trunc')  # e.g. a disk that filled up mid-append
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert f"{index}, line 3: not a dataset record" in err and err.count("\n") == 1


def test_unknown_feature_service_or_label(region, tmp_path):
    ents = _entities(tmp_path / "e.parquet", [T])
    with pytest.raises(UnknownName, match="unknown feature service 'nope'; region MY has driver_allocation, fraud_scoring"):
        build_training_set(region, TrainingSetRequest(ents, "nope", tmp_path / "o.parquet", show_progress=False))
    with pytest.raises(UnknownName, match="unknown label 'churned'; region MY has labels is_fraud"):
        build_training_set(region, TrainingSetRequest(ents, "fraud_scoring", tmp_path / "o.parquet", label="churned",
                                                      show_progress=False))
    assert not (tmp_path / "o.parquet").exists()


@pytest.mark.slow
def test_a_build_killed_as_it_lands_never_leaves_the_dataset_beside_another_datasets_manifest(
        sqlite_federation, tmp_path):
    """The manifest was computed (sources fingerprinted) after the dataset took its name: a build
    killed then left the new dataset beside the manifest of the one it replaced."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from handmade import write_sources
    from fedstore.regions.datasets.manifest import manifest_path, read_manifest

    node = RegionNode(sqlite_federation.region("MY"))
    # small sources: the build stops itself where it lands, so no window has to be made wide to hit it
    tables = write_sources(node.data_dir, customers=2_000, drivers=2, days=3)
    node.apply()
    keys = tables["customer_transactions"].select(["customer_id", "event_timestamp"])
    pq.write_table(keys.slice(0, 200), tmp_path / "first.parquet")
    pq.write_table(keys.slice(0, 100), tmp_path / "second.parquet")
    out = tmp_path / "train.parquet"
    build = ["--config", str(sqlite_federation.source), "region", "training-set", "--region", "MY",
             "--feature-service", "fraud_scoring", "--out", str(out), "--no-progress", "--entities"]
    assert main([*build, str(tmp_path / "first.parquet")]) == 0
    first = out.stat().st_ino
    # The build stops itself the moment the new dataset has its name, and is killed there. Racing it
    # from here (polling for the rename) lost on a loaded machine: the build had ended by then.
    stops_on_landing = (
        "import os, pathlib, signal, sys\n"
        "real = pathlib.Path.replace\n"
        "def replace(self, target):\n"
        "    moved = real(self, target)\n"
        "    if str(target) == os.environ['LANDS_AT']:\n"
        "        os.kill(os.getpid(), signal.SIGSTOP)\n"
        "    return moved\n"
        "pathlib.Path.replace = replace\n"
        "from fedstore.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n")
    proc = subprocess.Popen([sys.executable, "-c", stops_on_landing, *build, str(tmp_path / "second.parquet")],
                            env={**os.environ, "LANDS_AT": str(out)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stat = Path(f"/proc/{proc.pid}/stat")
    deadline = time.monotonic() + 120
    while proc.poll() is None and stat.read_text().rsplit(")", 1)[1].split()[0] != "T" and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)  # the moment the new dataset has its name
    assert proc.wait() == -signal.SIGKILL, "the build ended before it could be killed"
    assert out.stat().st_ino != first and pq.read_metadata(out).num_rows == 100
    manifest = read_manifest(manifest_path(out))
    assert manifest is None or (manifest.rows == 100 and manifest.entity_file["path"].endswith("second.parquet"))
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("train") and p != out and
                p != manifest_path(out)]  # nothing partial under a visible name
    assert main([*build, str(tmp_path / "second.parquet")]) == 0  # and the next run works
    assert read_manifest(manifest_path(out)).rows == 100


@pytest.mark.slow
def test_a_source_removed_during_a_build_is_one_line_and_leaves_nothing(sqlite_federation, tmp_path):
    """The sources are checked before a build; a part removed since (an upstream job's compaction)
    failed the build with DuckDB's traceback. Removed as the build begins its join, the build either
    fails in one line leaving nothing, or (DuckDB had opened the file already) completes whole."""
    import subprocess
    import sys
    import time

    from handmade import write_sources

    node = RegionNode(sqlite_federation.region("MY"))
    tables = write_sources(node.data_dir, customers=2000, drivers=2, days=2)
    node.apply()
    pq.write_table(tables["customer_transactions"].select(["customer_id", "event_timestamp"]), tmp_path / "e.parquet")
    out = tmp_path / "train.parquet"
    build = ["--config", str(sqlite_federation.source), "region", "training-set", "--region", "MY", "--entities",
             str(tmp_path / "e.parquet"), "--feature-service", "fraud_scoring", "--out", str(out), "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "fedstore.cli", *build], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    source = node.data_dir / "sources" / "customer_profile.parquet"
    kept = source.read_bytes()
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if any(tmp_path.glob(".train.parquet.*.partial")):  # the checks are done; the join is next
            source.unlink()
            break
        time.sleep(0.001)
    _, err = proc.communicate(timeout=120)
    if not source.exists():
        if proc.returncode == 1:
            assert len(err.strip().splitlines()) == 1, err
            assert f'No files found that match the pattern "{source}"' in err and "no training set was written" in err
            assert not [p.name for p in tmp_path.iterdir() if p.name.startswith((".train", "train"))]
        else:
            assert proc.returncode == 0, err
            assert pq.read_metadata(out).num_rows == 4000 and not list(tmp_path.glob(".train*"))
        source.write_bytes(kept)
    out.unlink(missing_ok=True)
    assert main(build) == 0 and pq.read_metadata(out).num_rows == 4000


def test_a_killed_builds_leftovers_are_removed_by_the_next_build_to_that_path(region, tmp_path):
    """A build killed mid-way left its hidden .partial (as large as a training set) for good. The
    next build to the same path removes what dead builds on this host left, and nothing else."""
    import os
    import socket
    import subprocess

    ents = _entities(tmp_path / "e.parquet", [T + timedelta(hours=1)])
    out = tmp_path / "train.parquet"
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid no process has any more: a killed build's
    host = socket.gethostname()
    dead = [tmp_path / f".train.parquet.{host}.{gone.pid}.0badf00d.partial",
            tmp_path / f".train.parquet.{host}.{gone.pid}.0badf00d.partial.manifest"]
    kept = [tmp_path / f".train.parquet.{host}.{os.getpid()}.1234abcd.partial",  # a running build's
            tmp_path / f".train.parquet.elsewhere.{gone.pid}.feedf00d.partial",  # another host's: cannot tell
            tmp_path / f".other.parquet.{host}.{gone.pid}.0badf00d.partial"]  # another dataset's
    for p in dead + kept:
        p.write_bytes(b"leftover")
    build_training_set(region, TrainingSetRequest(ents, "fraud_scoring", out, show_progress=False))
    assert not any(p.exists() for p in dead)
    assert all(p.exists() for p in kept)
    assert pq.read_table(out).num_rows == 1
