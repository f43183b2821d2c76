"""The day-partitioned log writer both of the region's logs are (``serving/day_log.py``): the
prediction log and the audit trail of use, each through its own class, with its own words and
exception, on real files."""

from __future__ import annotations

import itertools
import logging
from datetime import UTC, date, datetime, timedelta

import pytest

from fedstore.regions import prediction_layout
from fedstore.serving import day_log
from fedstore.serving.errors import Overloaded
from fedstore.serving.metrics import ServingMetrics
from fedstore.serving.prediction_log import LogFull, Prediction, PredictionLog, read_predictions
from fedstore.serving.use_audit import Use, UseAudit, read_uses
from serving_fixtures import wait_until

DAY = datetime(2026, 12, 6, 10, tzinfo=UTC)


def _prediction_log(data_dir, **kw):
    return PredictionLog(data_dir, max_batches=kw.pop("max_rows"), **kw)


def _audit(data_dir, **kw):
    return UseAudit(data_dir, max_records=kw.pop("max_rows"), **kw)


def _prediction(i: int, at: datetime = DAY) -> Prediction:
    return Prediction(f"p{i}", at, str(i), "fraud_scoring", "m", 1, "full", 0.5, (), ("f",), (1.0,), (), (),
                      "online_store")


def _use(i: int, at: datetime = DAY) -> Use:
    return Use(at.timestamp() + i, f"app{i}", "Score", "serving", "fraud_scoring", 1, 0, "answered", None)


# (the log, one row, how a call queues it, how the region reads them back, the refusal, its logger, its folder)
LOGS = {
    "predictions": (_prediction_log, _prediction, lambda log, row: log.append([row]),
                    lambda d: read_predictions(d).column("prediction_id").to_pylist(), LogFull,
                    "fedstore.serving.prediction_log", "predictions"),
    "audit": (_audit, _use, lambda log, row: log.record(row), lambda d: read_uses(d).column("caller").to_pylist(),
              Overloaded, "fedstore.serving.use_audit", "audit/uses"),
}


def test_the_prediction_logs_partitions_are_the_ones_score_monitoring_reads():
    assert day_log.PARTITION == prediction_layout.PARTITION


@pytest.mark.parametrize("which", LOGS)
def test_a_directory_that_cannot_be_created_is_one_line_and_calls_are_refused_once_the_queue_is_full(tmp_path, caplog,
                                                                                                     which):
    make, row, queue, read, refusal, logger, _ = LOGS[which]
    blocker = tmp_path / "data"
    blocker.write_text("not a directory")  # the log's folder cannot be made below it
    log = make(blocker, retention_days=30, max_rows=2, clock=lambda: DAY, flush_seconds=0.05)
    with caplog.at_level(logging.INFO, logger=logger):
        log.start()  # no exception: the node still starts
        started = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(started) == 1 and "cannot create" in started[0].getMessage(), caplog.text
        assert "\n" not in started[0].getMessage() and started[0].exc_info is None
        accepted = []
        with pytest.raises(refusal, match="writer is behind"):
            for i in itertools.count():  # the writer cannot write what it took and takes nothing more: the queue fills
                queue(log, row(i))
                accepted.append(i)
        blocker.unlink()
        assert wait_until(lambda: len(read(tmp_path / "data")) == len(accepted), 10)
        log.close()
    assert len(read(tmp_path / "data")) == len(accepted) and log.written == len(accepted)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == started and "is written again" in caplog.text  # the one line, then that it works again
    with pytest.raises(refusal, match="closed"):
        queue(log, row(0))


@pytest.mark.parametrize("which", LOGS)
def test_retention_deletes_each_logs_old_days_and_leaves_what_is_not_a_day(tmp_path, caplog, which):
    make, row, queue, read, _, logger, folder = LOGS[which]
    root = tmp_path / folder
    for day in ("2026-08-01", "2026-09-06", "2026-09-07"):
        (root / f"day={day}").mkdir(parents=True)
        (root / f"day={day}" / "part-1.parquet").write_bytes(b"")
    (root / "notes").mkdir()
    (root / day_log.CLOCK_FILE).write_text("2026-12-05\n")  # its retention last ran yesterday
    log = make(tmp_path, retention_days=90, max_rows=4, clock=lambda: DAY, flush_seconds=0.05)
    with caplog.at_level(logging.INFO, logger=logger):
        log.start()
        queue(log, row(1))
        log.close()
    assert sorted(p.name for p in root.iterdir()) == [".clock", "day=2026-09-07", "day=2026-12-06", "notes"]
    assert (root / ".clock").read_text() == "2026-12-06\n" and log.retention_held is None
    assert [p.name.startswith("part-") for p in (root / "day=2026-12-06").iterdir()] == [True]
    assert caplog.text.count("(retention: 90 days)") == 2 and "of 2026-08-01 (retention" in caplog.text


class Clock:
    """The test's wall clock: the log's writer reads it, the test steps it (forward, back)."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def _days(root) -> list[str]:
    return sorted(p.name.removeprefix("day=") for p in root.glob("day=*"))


def _write_at(log, queue, row, i: int, at: datetime, clock: Clock) -> None:
    """Step the clock to ``at`` and have one row stamped then written. Once a row queued after the
    step is written, the writer has also run its retention pass at ``at`` (it runs first in every
    turn of the writer, and the turn that takes that row began after the step)."""
    clock.at = at
    before = log.written
    queue(log, row(i, at))
    assert wait_until(lambda: log.written == before + 1, 10)


@pytest.mark.parametrize("which", LOGS)
def test_a_clock_stepped_forward_past_retention_deletes_nothing_says_so_once_and_is_trusted_again_once_right(
        tmp_path, caplog, which):
    make, row, queue, read, _, logger, folder = LOGS[which]
    root = tmp_path / folder
    clock = Clock(DAY - timedelta(days=2))
    log = make(tmp_path, retention_days=30, max_rows=100, clock=clock, flush_seconds=0.05)
    with caplog.at_level(logging.INFO, logger=logger):
        log.start()
        for i, back in enumerate((2, 1, 0)):  # three days of records, as the days pass
            _write_at(log, queue, row, i, DAY - timedelta(days=back), clock)
        jumped = DAY + timedelta(days=400)  # an NTP step, a wrong RTC: far past the 30 days kept
        _write_at(log, queue, row, 3, jumped, clock)  # records of the stepped clock, seconds later
        _write_at(log, queue, row, 4, jumped + timedelta(seconds=1), clock)
        assert _days(root) == ["2026-12-04", "2026-12-05", "2026-12-06", "2028-01-10"]  # nothing deleted
        assert len(read(tmp_path)) == 5
        assert log.retention_held is not None and "2028-01-10" in log.retention_held
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "deletes nothing" in warnings[0].getMessage()
        assert f"write 2028-01-10 into {root / '.clock'}" in warnings[0].getMessage()  # what to do if it is right
        _write_at(log, queue, row, 5, jumped + timedelta(days=1), clock)  # a day later: said once, still held
        assert log.retention_held is not None and len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
        _write_at(log, queue, row, 6, DAY + timedelta(days=1), clock)  # the clock corrected (stepped back)
        assert log.retention_held is None and "trusted again" in caplog.text
        log.close()
    assert _days(root) == ["2026-12-04", "2026-12-05", "2026-12-06", "2026-12-07", "2028-01-10", "2028-01-11"]
    assert len(read(tmp_path)) == 7 and "deleted" not in caplog.text
    assert (root / ".clock").read_text() == "2026-12-07\n"


@pytest.mark.parametrize("which", LOGS)
def test_a_node_restarted_on_a_stepped_clock_still_deletes_nothing(tmp_path, caplog, which):
    make, row, queue, read, _, logger, folder = LOGS[which]
    root = tmp_path / folder
    clock = Clock(DAY)
    log = make(tmp_path, retention_days=30, max_rows=100, clock=clock, flush_seconds=0.05)
    log.start()
    _write_at(log, queue, row, 0, DAY, clock)
    jumped = DAY + timedelta(days=400)
    _write_at(log, queue, row, 1, jumped, clock)  # held, and a record filed under the stepped day
    log.close()
    # restarted with the clock still wrong: the newest day on disk is the stepped one, .clock is not
    log = make(tmp_path, retention_days=30, max_rows=100, clock=Clock(jumped + timedelta(days=1)), flush_seconds=0.05)
    with caplog.at_level(logging.INFO, logger=logger):
        log.start()
        queue(log, row(2, jumped + timedelta(days=1)))
        log.close()
    assert _days(root) == ["2026-12-06", "2028-01-10", "2028-01-11"] and len(read(tmp_path)) == 3
    assert log.retention_held is not None and "deleted" not in caplog.text
    assert (root / ".clock").read_text() == "2026-12-06\n"


@pytest.mark.parametrize("which", LOGS)
def test_retention_deletes_old_days_as_the_days_pass(tmp_path, caplog, which):
    make, row, queue, read, _, logger, folder = LOGS[which]
    root = tmp_path / folder
    clock = Clock(DAY)
    log = make(tmp_path, retention_days=30, max_rows=100, clock=clock, flush_seconds=0.05)
    with caplog.at_level(logging.INFO, logger=logger):
        log.start()
        for i, ahead in enumerate(range(0, 45, 5)):  # a record every five days for forty days
            _write_at(log, queue, row, i, DAY + timedelta(days=ahead), clock)
        log.close()
    # kept: the days not older than 30 days before the last (2027-01-15); deleted as their 31st day came
    assert _days(root) == ["2026-12-16", "2026-12-21", "2026-12-26", "2026-12-31", "2027-01-05", "2027-01-10",
                           "2027-01-15"]
    assert "of 2026-12-06 (retention: 30 days)" in caplog.text and "of 2026-12-11 (retention" in caplog.text
    assert log.retention_held is None and not [r for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("which", LOGS)
def test_a_clock_stepping_back_deletes_nothing_more_and_retention_goes_on_after(tmp_path, caplog, which):
    make, row, queue, read, _, logger, folder = LOGS[which]
    root = tmp_path / folder
    clock = Clock(DAY)
    log = make(tmp_path, retention_days=30, max_rows=100, clock=clock, flush_seconds=0.05)
    with caplog.at_level(logging.INFO, logger=logger):
        log.start()
        _write_at(log, queue, row, 0, DAY, clock)
        _write_at(log, queue, row, 1, DAY - timedelta(days=20), clock)  # stepped back twenty days
        assert _days(root) == ["2026-11-16", "2026-12-06"] and log.retention_held is None
        assert (root / ".clock").read_text() == "2026-12-06\n"  # moved nowhere
        for i, ahead in enumerate((1, 8, 11), start=2):  # forward again, a few days at a time
            _write_at(log, queue, row, i, DAY + timedelta(days=ahead), clock)
        log.close()
    # 2026-11-16 is past 30 days on 2026-12-17: deleted then, and nothing else
    assert _days(root) == ["2026-12-06", "2026-12-07", "2026-12-14", "2026-12-17"] and len(read(tmp_path)) == 4
    assert log.retention_held is None and not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_log_without_a_clock_file_trusts_the_clock_only_near_its_newest_day_and_the_operator_can_vouch(tmp_path,
                                                                                                      caplog):
    from fedstore.serving.prediction_log import KIND
    root = tmp_path / "predictions"
    for day in ("2026-08-01", "2026-09-07"):
        (root / f"day={day}").mkdir(parents=True)
    today = date(2026, 12, 6)
    # a log from before .clock, its newest record 90 days old: stopped that long, or a stepped clock
    held = day_log.apply_retention(KIND, root, today, 60)
    assert held.deleted == [] and held.held is not None and _days(root) == ["2026-08-01", "2026-09-07"]
    assert not (root / ".clock").exists()
    (root / ".clock").write_text("2026-12-06\n")  # the operator: the clock is right
    done = day_log.apply_retention(KIND, root, today, 60)
    assert (done.deleted, done.held, _days(root)) == (["2026-08-01", "2026-09-07"], None, [])
    (root / ".clock").write_text("yesterday")  # unreadable: said, and as if absent (no day left: trusted)
    with caplog.at_level(logging.INFO, logger=KIND.log.name):
        assert day_log.apply_retention(KIND, root, today, 60) == day_log.Retention([])
    assert "cannot read" in caplog.text and (root / ".clock").read_text() == "2026-12-06\n"


def test_the_bound_is_never_more_than_the_retention(tmp_path):
    from fedstore.serving.prediction_log import KIND
    root = tmp_path / "predictions"
    (root / "day=2026-12-05").mkdir(parents=True)
    (root / ".clock").write_text("2026-12-05\n")
    # kept 3 days: a step of 4 would delete the day written just now; held, though under the 7-day bound
    assert day_log.apply_retention(KIND, root, date(2026, 12, 9), 3).held is not None
    assert day_log.apply_retention(KIND, root, date(2026, 12, 8), 3) == day_log.Retention([])
    assert _days(root) == ["2026-12-05"]


def test_the_node_exports_whether_each_logs_retention_is_held():
    metrics = ServingMetrics("MY")
    metrics.retention_held({"audit": True, "predictions": False})
    sample = metrics.registry.get_sample_value
    assert sample("fedstore_log_retention_held", {"log": "audit"}) == 1
    assert sample("fedstore_log_retention_held", {"log": "predictions"}) == 0
