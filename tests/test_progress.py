"""Progress of long work: a bar on a terminal, plain lines in a log, never carriage-return noise."""

from __future__ import annotations

import io

from tqdm import tqdm

from conftest import write_config
from fedstore.cli import main
from handmade import write_sources
from fedstore.regions.progress import LineProgress, progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_come_at_most_once_per_interval_with_rows_rate_and_share():
    out, clock = io.StringIO(), Clock()
    bar = LineProgress("MY training set", 1_000_000, out, interval=10, clock=clock)
    clock.now += 4
    bar.update(200_000)
    assert out.getvalue() == ""  # before the first interval: nothing said yet
    clock.now += 6
    bar.update(50_000)
    clock.now += 1
    bar.update(50_000)  # within the next interval: not said
    lines = out.getvalue().splitlines()
    assert lines == ["MY training set: 250,000 of 1,000,000 rows (25%, about 30s left) in 10s, 25,000 rows/s"]
    clock.now += 119
    bar.update(700_000)
    assert out.getvalue().splitlines()[-1].startswith("MY training set: 1,000,000 of 1,000,000 rows (100%, about 0s left) in 2m10s")


def test_lines_without_a_known_total_give_rows_and_rate():
    out, clock = io.StringIO(), Clock()
    bar = LineProgress("MY customer_transactions", None, out, interval=10, clock=clock)
    clock.now += 3600 * 2 + 61
    bar.update(7_261_000)
    assert out.getvalue() == "MY customer_transactions: 7,261,000 rows in 2h01m, 1,000 rows/s\n"


def test_a_terminal_gets_a_bar_a_log_gets_lines_and_off_means_silent():
    assert isinstance(progress("x", total=10, show=True, stream=Terminal()), tqdm)
    assert isinstance(progress("x", total=10, show=True, stream=io.StringIO()), LineProgress)
    quiet = io.StringIO()
    bar = progress("x", total=10, show=False, stream=quiet)
    bar.update(10)
    bar.close()
    assert quiet.getvalue() == ""


def test_materialising_into_a_log_writes_no_carriage_returns(capsys, tmp_path):
    """A job whose output goes to a file (a scheduler's log) reads as lines, not a redrawn bar."""
    cfg = str(write_config(tmp_path / "fed.yaml", {"MY": {"type": "sqlite"}, "SG": {"type": "sqlite"}}))
    write_sources(tmp_path / "data" / "MY", customers=30, drivers=4)
    assert main(["--config", cfg, "region", "apply", "--region", "MY"]) == 0
    assert main(["--config", cfg, "region", "materialize", "--region", "MY"]) == 0  # progress on (the default)
    out, err = capsys.readouterr()
    assert "\r" not in out + err
    assert "customer_transactions: read 30 rows, wrote 30 entities" in out
