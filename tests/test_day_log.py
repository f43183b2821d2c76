"""The day-partitioned log writer both of the region's logs are (``serving/day_log.py``): the
prediction log and the audit trail of use, each through its own class, with its own words and
exception, on real files."""

from __future__ import annotations

import itertools
import logging
from datetime import UTC, datetime

import pytest

from fedstore.regions import prediction_layout
from fedstore.serving import day_log
from fedstore.serving.errors import Overloaded
from fedstore.serving.prediction_log import LogFull, Prediction, PredictionLog, read_predictions
from fedstore.serving.use_audit import Use, UseAudit, read_uses
from serving_fixtures import wait_until

DAY = datetime(2026, 12, 6, 10, tzinfo=UTC)


def _prediction_log(data_dir, **kw):
    return PredictionLog(data_dir, max_batches=kw.pop("max_rows"), **kw)


def _audit(data_dir, **kw):
    return UseAudit(data_dir, max_records=kw.pop("max_rows"), **kw)


def _prediction(i: int) -> Prediction:
    return Prediction(f"p{i}", DAY, str(i), "fraud_scoring", "m", 1, "full", 0.5, (), ("f",), (1.0,), (), (),
                      "online_store")


def _use(i: int) -> Use:
    return Use(DAY.timestamp() + i, f"app{i}", "Score", "serving", "fraud_scoring", 1, 0, "answered", None)


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
    log = make(tmp_path, retention_days=90, max_rows=4, clock=lambda: DAY, flush_seconds=0.05)
    with caplog.at_level(logging.INFO, logger=logger):
        log.start()
        queue(log, row(1))
        log.close()
    assert sorted(p.name for p in root.iterdir()) == ["day=2026-09-07", "day=2026-12-06", "notes"]
    assert [p.name.startswith("part-") for p in (root / "day=2026-12-06").iterdir()] == [True]
    assert caplog.text.count("(retention: 90 days)") == 2 and "of 2026-08-01 (retention" in caplog.text
