"""`fedstore demo`, end to end in a fresh directory on a small size, as a user runs it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from exit_codes import expected_exit

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    raw = yaml.safe_load((ROOT / "fedstore.yaml").read_text())  # the repository's embedded default
    cfg = tmp_path / "fedstore.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    env = {k: v for k, v in os.environ.items() if not (k.startswith("FEDSTORE_") and "TOKEN" in k)}  # made up
    for _ in range(2):  # a second run starts clean: no leftover budget spend or centre state
        out = subprocess.run(
            # the test owns the calendar: the synthetic data (festivals and all) ends on a fixed day
            # 3,000 customers, the demo's default: at 1,500 (10 days, ε=2) the training statistics' noise
            # sometimes buried the class separation and the centre rightly refused to train
            [sys.executable, "-m", "fedstore.cli", "--config", str(cfg), "demo", "--customers", "3000",
             "--days", "10", "--end", "2026-11-20", "--no-progress"],
            capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
        )
        assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout
    for code, law in (("MY", "PDPA-MY"), ("SG", "PDPA-SG"), ("ID", "UU PDP")):
        assert f"{code} ({'Malaysia' if code == 'MY' else 'Singapore' if code == 'SG' else 'Indonesia'}, {law})" in text
        assert (tmp_path / "data" / code / "registry.db").exists()
        assert (tmp_path / "data" / code / "snapshots" / "customer_transactions.parquet").exists()
        assert f"{code} serving on 127.0.0.1:" in text
    assert "source: online_store" in text
    assert "centre: federation-wide statistics from 3 anonymised submissions" in text
    # the border runs on mutual TLS (a development CA the demo made), and a certificate binds a region
    assert "demo: mutual TLS at the border: a development CA in" in text
    assert "SG's certificate submitting for MY: refused PERMISSION_DENIED (rule identity: " in text
    assert len(re.findall(r"^\w\w: published \S+ .*: sent$", text, re.M)) == 3
    # training: each region's statistics are sent or (small regions: few fraud cases) suppressed, never lost
    assert len(re.findall(r"^\w\w: training statistics \S+ .*: (sent|suppressed)$", text, re.M)) == 3
    assert "centre: trained fraud_scoring_lda v1" in text and "lineage: " in text
    assert "registry: fraud_scoring_lda v1 → shadow in MY" in text
    assert "registry: fraud_scoring_lda v1 → shadow in ID refused: rule sources" in text  # ID's policy
    assert text.count("succeeded") >= 3
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("argv,fragment", [
    (["--customers", "0"], "expected a positive whole number"),
    (["--days", "-5"], "expected a positive whole number"),
    (["--regions", ","], "--regions names no region"),
    (["--end", "2999-01-01"], "is not a complete day yet"),
    (["--end", "yesterday"], "expected"),
])
def test_bad_demo_arguments_are_refused_before_previous_state_is_removed(tmp_path, capsys, argv, fragment):
    from conftest import write_config
    from fedstore.cli import main

    cfg = write_config(tmp_path / "f.yaml", {"MY": {"type": "sqlite"}, "SG": {"type": "sqlite"}})
    kept = [tmp_path / "data" / "MY" / "keep.txt", tmp_path / "centre" / "keep.txt"]
    for path in kept:
        path.parent.mkdir(parents=True)
        path.write_text("x")
    try:
        code = main(["--config", str(cfg), "demo", "--regions", "MY", *argv])
    except SystemExit as e:  # argparse's own usage errors
        code = int(e.code or 0)
    err = capsys.readouterr().err
    assert code == expected_exit(err) and fragment in err and "Traceback" not in err
    assert all(p.exists() for p in kept)  # these used to be removed, then the demo crashed


@pytest.mark.parametrize("holder", ["data/MY", "centre"])
def test_the_demo_never_removes_data_it_did_not_make(tmp_path, capsys, holder):
    """A config naming real data directories: the demo refuses before removing anything; a
    directory a demo made (its marker inside) is replaced as before."""
    from conftest import write_config
    from fedstore.cli import main
    from fedstore.cli.demo import DEMO_MARKER

    cfg = write_config(tmp_path / "f.yaml", {"MY": {"type": "sqlite"}, "SG": {"type": "sqlite"}})
    real = tmp_path / holder / "registry.db"
    real.parent.mkdir(parents=True)
    real.write_text("real data")
    earlier_demo = tmp_path / ("centre" if holder != "centre" else "data/MY")
    earlier_demo.mkdir(parents=True)
    (earlier_demo / DEMO_MARKER).write_text("")
    (earlier_demo / "old.txt").write_text("x")
    code = main(["--config", str(cfg), "demo", "--regions", "MY", "--customers", "1"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "holds data no demo made" in err and str(real.parent) in err
    assert real.read_text() == "real data" and (earlier_demo / "old.txt").exists()  # nothing removed


def test_generate_through_the_cli(tmp_path, capsys):
    from conftest import write_config
    from fedstore.cli import main

    cfg = write_config(tmp_path / "f.yaml", {"MY": {"type": "sqlite"}, "SG": {"type": "sqlite"}})
    assert main(["--config", str(cfg), "region", "generate", "--region", "MY", "--customers", "50",
                 "--days", "5", "--end", "2026-03-01"]) == 0
    out = capsys.readouterr().out
    assert "MY: wrote" in out and "sources/customer_transactions.parquet" in out
    assert (tmp_path / "data" / "MY" / "sources" / "fraud_labels.parquet").exists()
