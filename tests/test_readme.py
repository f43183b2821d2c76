"""The README works as written: its ```bash and ```python blocks, run in order in one shell, in a
fresh copy of the checkout, right after `make demo`, as a newcomer pastes them.

Conventions in README.md (visible to its readers too):
- ``<!-- readme-test: skip (why) -->`` before a block: not run (``make test`` is this suite).
- ``<!-- readme-test: file NAME -->`` before a block: saved as NAME (a later block runs it).
- any other ```python block runs with the venv's Python, in the same shell (its environment).

What the test maps, and why: the copy's ``.venv`` is a link to the suite's own venv (no rebuild,
no network), so ``make demo`` runs as ``make -o .venv/bin/fedstore demo`` (the Makefile's demo
target, told not to rebuild that venv); ``PYTHONPATH`` names the copy, so its code is what runs;
the venv's ``bin`` is taken off ``PATH`` (the README must say ``.venv/bin/…``); and the two fixed
ports the README names (MY's node 50151 in ``fedstore.yaml``, the centre's default 50100) become free loopback
ports, in the copy's config and in the blocks alike, so parallel test runs do not collide. No block
needs Redis: the README runs on the embedded SQLite default.

The test owns its clock: every process the blocks start runs under libfaketime (preloaded from
the ``libfaketime`` package's own build, a dev dependency) at a fixed instant, NOW, mid-month in
UTC, and the clock runs on from there at its real rate, the same in every process (an offset from
the machine's clock, not ``@start``, which libfaketime restarts in each new process). So the demo's
"30 days ending yesterday", the tour's "two days ago" and "this month's budget" are the same days
whatever the date: the README's steps are checked as a user runs them on any day, without a clock
knob in the product or in the README. Only the wall clock is faked: the monotonic clock is the
machine's (``FAKETIME_DONT_FAKE_MONOTONIC``), because grpc, DuckDB and Python's own timeouts and
sleeps wait on it (faked, a timed wait never ends). Why not Debian's ``faketime`` 0.9.10: its
``clock_nanosleep`` sends Python 3.11's ``time.sleep`` a negative deadline when monotonic time is
left alone (EINVAL; libfaketime issue 426), and with monotonic time faked too, every timed wait on
a lock hangs (issue 390); the package's build has neither. Why not a ``FEDSTORE_NOW`` override
read by the CLI: the README's own Python (``datetime.now()`` in entities.py) and Feast's, DuckDB's
and OpenSSL's clocks would not follow it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import libfaketime
import pyarrow.parquet as pq
import pytest
from redis_servers import free_port

from fedstore.federation.config import AggregatorConfig

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FENCE = re.compile(
    r"(?:<!-- readme-test: (?P<marker>[^\n]*?) -->\n)?^```(?P<lang>[a-z]*)\n(?P<body>.*?)^```$", re.S | re.M)
PORTS = {"50151": "MY's serving node", "50100": "the centre"}
PYTHON_EOF = "README_PYTHON_BLOCK"
# mid-month, mid-day UTC: "yesterday", "two days ago" and the month's budget are fixed days
NOW = datetime(2026, 3, 15, 12, 0, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Block:
    lang: str
    body: str
    line: int  # where the block starts in README.md
    skip: str | None = None  # why it is not run
    file: str | None = None  # saved under this name instead of run


def readme_blocks(text: str) -> list[Block]:
    blocks = []
    for m in FENCE.finditer(text):
        marker, skip, file = m["marker"], None, None
        if marker is not None:
            kind, _, rest = marker.partition(" ")
            if kind == "skip":
                skip = rest.strip()
            elif kind == "file":
                file = rest.strip()
            else:
                raise AssertionError(f"README.md line {text.count(chr(10), 0, m.start()) + 1}: unknown marker {marker!r}")
        blocks.append(Block(m["lang"], m["body"], text.count("\n", 0, m.start("body")) + 1, skip, file))
    return blocks


def test_every_block_is_run_or_says_why_not():
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    runnable = [b for b in blocks if b.lang in ("bash", "python")]
    assert len(runnable) >= 6
    for b in blocks:
        assert b.lang in ("bash", "python", "yaml", "text", ""), f"line {b.line}: a ```{b.lang} block"
        if b.skip is not None:
            assert re.fullmatch(r"\(.{10,}\)", b.skip), f"line {b.line}: a skip marker says why, in brackets"
        if b.file is not None:
            assert re.fullmatch(r"[\w.-]+", b.file) and b.lang == "python", f"line {b.line}: file {b.file!r}"
            assert any(b.file in later.body for later in blocks if later.line > b.line and later.skip is None), \
                f"line {b.line}: no later block runs {b.file}"


def test_exactly_two_set_up_commands_and_ci_runs_the_readmes_test_command():
    text = README.read_text(encoding="utf-8")
    blocks = readme_blocks(text)
    make_lines = {line.split("#")[0].strip() for b in blocks for line in b.body.splitlines()
                  if line.strip().startswith("make ")}
    assert make_lines == {"make demo", "make test"}
    assert set(re.findall(r"`(make [a-z]+)", text)) <= {"make demo", "make test", "make bench", "make proto", "make buf"}
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.strip() and not line.lstrip().startswith("#")]
    assert ci[-1] == "make test"  # CI runs exactly the README's test command


def _copy_checkout(dest: Path) -> None:
    """The checkout's files as a clone has them (tracked and new, not ignored), links kept as links."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source, target = ROOT / name, dest / name
        if not source.exists() and not source.is_symlink():  # deleted in the work tree
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            target.write_bytes(source.read_bytes())
            target.chmod(source.stat().st_mode)


def _faked_clock(now: datetime) -> dict[str, str]:
    """The environment that runs a process, and every process it starts, with its wall clock at
    ``now`` (from this moment on, at the real rate) and the machine's monotonic clock."""
    _, preload = libfaketime.get_reload_information()  # LD_PRELOAD and LD_LIBRARY_PATH of its build
    offset = round(now.timestamp() - datetime.now(timezone.utc).timestamp())
    return {**preload, "FAKETIME": f"{offset:+d}", "FAKETIME_DONT_FAKE_MONOTONIC": "1", "TZ": "UTC"}


def _script(blocks: list[Block], ports: dict[str, str]) -> str:
    lines = ["set -eo pipefail", 'trap \'echo "readme-test: failed in the block at README.md line $README_LINE" >&2\' ERR',
             # a failed block leaves its servers running, holding the output open: end them with the script
             'trap \'kill $(jobs -p) 2>/dev/null || true\' EXIT',
             'echo "readme-test clock: $(date -u +%FT%T)"']
    for b in blocks:
        if b.skip is not None or b.lang not in ("bash", "python"):
            continue
        body = b.body
        for fixed, free in ports.items():
            body = body.replace(fixed, free)
        lines.append(f"README_LINE={b.line}; echo \"### README.md line {b.line} (at $(date -u +%T))\"")
        if b.file is not None:
            lines += [f"cat > {b.file} <<'{PYTHON_EOF}'", body.rstrip("\n"), PYTHON_EOF]
        elif b.lang == "python":
            lines += [f".venv/bin/python - <<'{PYTHON_EOF}'", body.rstrip("\n"), PYTHON_EOF]
        else:
            lines.append(re.sub(r"^make demo\b", "make -o .venv/bin/fedstore demo", body, flags=re.M))
    return "\n".join(lines) + "\n"


@pytest.mark.slow
@pytest.mark.timeout(1800)  # the whole README in one test: 8-10 minutes on this shared 2-core machine
def test_the_readme_runs_as_written_after_make_demo(tmp_path):
    clone = tmp_path / "fedstore"
    _copy_checkout(clone)
    (clone / ".venv").symlink_to(Path(sys.prefix))  # the suite's venv, not rebuilt
    ports = {fixed: str(free_port()) for fixed in PORTS}
    config = clone / "fedstore.yaml"
    text = config.read_text(encoding="utf-8")
    assert AggregatorConfig.address == "127.0.0.1:50100" and "\naggregator:" not in text  # the centre's default
    text += f"aggregator: {{address: '127.0.0.1:50100'}}\n"
    for fixed, free in ports.items():
        assert f"127.0.0.1:{fixed}" in text, f"fedstore.yaml no longer has {PORTS[fixed]} on {fixed}"
        text = text.replace(f"127.0.0.1:{fixed}", f"127.0.0.1:{free}")
    config.write_text(text, encoding="utf-8")
    (clone / "readme.sh").write_text(_script(readme_blocks(README.read_text(encoding="utf-8")), ports))

    venv_bin = str(Path(sys.prefix) / "bin")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDSTORE_")}  # no config, no secrets
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    env["PYTHONPATH"] = str(clone)  # the copy's code, not whatever the venv's editable install names
    env.update(_faked_clock(NOW))
    process = subprocess.Popen(["bash", "readme.sh"], cwd=clone, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=1700)
    finally:
        try:  # servers a failed block left running in the background
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    print("\n".join(line for line in out.splitlines() if line.startswith("### README.md")))  # where the time goes (-rP)
    assert process.returncode == 0, f"{err[-4000:]}\n--- stdout ---\n{out[-4000:]}"
    assert "Traceback" not in err, err[-4000:]

    # every process ran on the test's clock: the demo's last day, the tour's entities, the budget's month
    assert f"readme-test clock: {NOW:%Y-%m-%d}" in out
    entities = pq.read_table(clone / "entities.parquet").column("event_timestamp").to_pylist()
    assert [e.date() for e in entities] == [(NOW - timedelta(days=d)).date() for d in (2, 9, 16)]
    # the quick start: the demo, your own node, your own lookup, another region's token refused
    assert "demo finished in" in out
    assert re.search(r"\{'customer_id': \[1000000001\], 'spend_7d': \[[\d.]+\], 'kyc_level': \[\d\]\}", out), out
    assert re.search(r"^online_store \['my-\S+'\]$", out, re.M)
    assert "SG's token in MY: PERMISSION_DENIED" in out
    # the tour: a point-in-time training set, Feast's CLI on a region, a fourth region, an erasure
    train = pq.read_table(clone / "train.parquet")
    assert train.num_rows == 3 and "is_fraud" in train.column_names and (clone / "train.manifest.json").exists()
    assert train.column("spend_7d").null_count == 0  # the demo's data ends the day before the test's NOW
    assert "customer_transactions  {'customer'}" in out
    assert len(re.findall(r"^TH: job \S+ succeeded", out, re.M)) == 2
    # across the border: on the certificates certs init wrote into a config, within the month's budget
    assert "written: fedstore-tls.yaml" in out and "(mutual TLS)" in out
    assert "trained fraud_scoring_ridge v1" in out
    assert "ε=4.000 of 4.000" in out  # the demo's 3.5 and the README's 0.25 + 0.25: all of it, no more
    assert "MY: fraud_scoring_ridge v1 now serves shadow" in out
