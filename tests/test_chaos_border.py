"""The centre killed (SIGKILL, a process of its own) while regions send statistics, then restarted on
its store: every submission is stored once, each region's ε is charged once per release at both
ends, and a reply lost with the centre is settled as a replay, not a second charge."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from border import two_region_federation
from fedstore.aggregator.store import SubmissionStore
from fedstore.federation import load_config
from fedstore.federation.channels import centre_link
from fedstore.federation.statistics import CATALOG
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2_grpc
from fedstore.regions.publishing.budget import BudgetLedger
from fedstore.regions.publishing.outbox import Backoff, send_outbox, to_proto
from fedstore.regions.publishing.publish import outbox_dir, publish_statistics
from fedstore.regions.store.node import RegionNode
from handmade import write_sources

pytestmark = pytest.mark.slow

NOW = datetime.now(UTC).replace(microsecond=0)
T = NOW - timedelta(days=2)
TOKENS = {"MY": "region-my-secret", "SG": "region-sg-secret"}
SPEC = tuple(s for s in CATALOG if s.view == "customer_profile")
QUICK = Backoff(base=0.05, cap=0.1, attempts=2)  # a dead centre is told within a second


def _config(tmp_path: Path, pki, monkeypatch):
    for code, secret in TOKENS.items():
        monkeypatch.setenv(f"AGG_TOKEN_{code}", secret)
    return load_config(two_region_federation(tmp_path / "fed.yaml", pki, TOKENS, ["publish", "statistics-read"],
                                             serving_port_base=52100))


class Centre:
    """``centre_process.py`` on the test's fixed clock, on the store at ``store``."""

    def __init__(self, config_path: Path, store: Path) -> None:
        here = Path(__file__).parent
        env = {**os.environ,
               "PYTHONPATH": os.pathsep.join([str(here.parent), str(here), os.environ.get("PYTHONPATH", "")])}
        self.process = subprocess.Popen([sys.executable, str(here / "centre_process.py"), str(config_path),
                                         str(store), NOW.isoformat()],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
        self.address = f"127.0.0.1:{int(self.process.stdout.readline())}"  # type: ignore[union-attr]

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()  # type: ignore[union-attr]
            self.process.wait(timeout=60)


def _queue(config, code: str, count: int, epsilon: float) -> tuple[RegionNode, list[tuple[str, float, Path]]]:
    node = RegionNode(config.region(code))
    write_sources(node.data_dir, customers=300, drivers=3, days=2, start=T,
                  id_offset={"MY": 10**9, "SG": 2 * 10**9}[code])
    node.apply()
    queued = []
    for _ in range(count):
        sid, released, path = publish_statistics(node, config.privacy, epsilon=epsilon, end=T + timedelta(days=3),
                                                 catalog=SPEC)
        queued.append((sid, released.accounting.epsilon, path))
    return node, queued


def _status(path: Path) -> str:
    return json.loads(path.read_text())["status"]


def test_a_centre_killed_while_regions_send_stores_each_release_once_after_its_restart(tmp_path, pki, monkeypatch):
    config = _config(tmp_path, pki, monkeypatch)
    store_path = tmp_path / "centre" / "aggregator.duckdb"
    my, my_queue = _queue(config, "MY", 3, 0.5)
    sg, sg_queue = _queue(config, "SG", 6, 0.4)
    centre = Centre(tmp_path / "fed.yaml", store_path)
    try:
        # a reply lost with the centre: MY's first release reached the centre and was stored, but the
        # region never learnt it (its file still says queued)
        lost_sid, _, lost_path = my_queue[0]
        with centre_link(config, "MY", centre.address).channel() as channel:
            receipt = aggregator_pb2_grpc.AggregatorStub(channel).Submit(
                to_proto(json.loads(lost_path.read_text())), timeout=10,
                metadata=(("authorization", f"Bearer {TOKENS['MY']}"),))
        assert receipt.receipt_id and not receipt.replay and _status(lost_path) == "queued"

        # SG sends its six while the centre is killed under it, after the first is acknowledged
        outcomes: list[tuple[str, str]] = []
        sending = threading.Thread(target=lambda: outcomes.extend(send_outbox(
            outbox_dir(sg.data_dir), centre_link(config, "SG", centre.address), TOKENS["SG"], backoff=QUICK)))
        sending.start()
        # polled closely, so the kill lands with some of the six still queued
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(_status(p) == "sent" for _, _, p in sg_queue):
            time.sleep(0.001)
        centre.kill()
        sending.join(60)
        assert not sending.is_alive()
        assert all(o == "sent" or o.startswith("queued") for _, o in outcomes), outcomes
        assert any(o.startswith("queued") for _, o in outcomes), "every release was sent before the kill"
        # MY tries while the centre is down: everything stays queued, nothing is marked rejected
        down = send_outbox(outbox_dir(my.data_dir), centre_link(config, "MY", centre.address), TOKENS["MY"],
                           backoff=QUICK)
        assert [o.split(":")[0] for _, o in down] == ["queued"] * 3, down
        assert all(_status(p) == "queued" for _, _, p in my_queue)

        centre = Centre(tmp_path / "fed.yaml", store_path)  # restarted on its store
        for node, code in ((my, "MY"), (sg, "SG")):
            again = send_outbox(outbox_dir(node.data_dir), centre_link(config, code, centre.address), TOKENS[code],
                                backoff=QUICK)
            assert again and all(o == "sent" for _, o in again), again
        assert json.loads(lost_path.read_text())["replay"] is True  # the lost reply was settled as a replay
        assert json.loads(lost_path.read_text())["receipt_id"] == receipt.receipt_id
    finally:
        centre.stop()

    store = SubmissionStore(store_path)
    try:
        period = BudgetLedger.period(NOW)
        stored = {r.submission_id for r in store.features(None)}
        for code, node, queue in (("MY", my, my_queue), ("SG", sg, sg_queue)):
            assert {sid for sid, _, _ in queue} <= stored  # each one there
            spent = sum(eps for _, eps, _ in queue)
            assert store.epsilon_spent(code, period) == pytest.approx(spent)  # and charged once at the centre
            ledger = BudgetLedger(node.data_dir / "privacy_budget.db", code,
                                  epsilon_per_month=config.privacy.epsilon_per_month)
            assert ledger.spent(period) == pytest.approx(spent)  # and once in the region
        assert len(stored) == len(my_queue) + len(sg_queue)
    finally:
        store.close()


def test_a_reply_lost_before_the_month_turns_is_settled_as_a_replay_not_redated_and_refused(
        tmp_path, pki, monkeypatch):
    """The centre stored a release and its reply was lost; the region's next run is in the next
    month (the month turned, or its clock jumped). It used to re-date the file first — new content
    under the same id — so the centre refused it ("accepted with other content") and the region
    marked it rejected for good, its spend moved to a month the centre never charged. A release
    that never reached the centre is still re-dated and charged in the sending month."""
    from fedstore.aggregator.intake.server import build_server

    config = _config(tmp_path, pki, monkeypatch)
    node, queue = _queue(config, "MY", 2, 0.5)
    (lost_sid, eps, lost_path), (later_sid, later_eps, later_path) = queue
    month, next_month = BudgetLedger.period(NOW), BudgetLedger.period(NOW.replace(day=1) + timedelta(days=32))
    turned = datetime.fromisoformat(f"{next_month}-01T00:30:00+00:00")
    clock = [NOW]  # the centre's clock and the region's, both the test's
    server, port, store = build_server(config, tmp_path / "centre" / "aggregator.duckdb", "127.0.0.1:0",
                                       clock=lambda: clock[0])
    server.start()
    try:
        link = centre_link(config, "MY", f"127.0.0.1:{port}")
        with link.channel() as channel:  # stored at the centre, the reply lost on the way back
            receipt = aggregator_pb2_grpc.AggregatorStub(channel).Submit(
                to_proto(json.loads(lost_path.read_text())), timeout=10,
                metadata=(("authorization", f"Bearer {TOKENS['MY']}"),))
        clock[0] = turned
        ledger = BudgetLedger(node.data_dir / "privacy_budget.db", "MY",
                              epsilon_per_month=config.privacy.epsilon_per_month)
        out = dict(send_outbox(outbox_dir(node.data_dir), link, TOKENS["MY"], backoff=QUICK, ledger=ledger,
                               clock=lambda: clock[0]))
        assert out == {lost_sid: "sent", later_sid: "sent"}, out
        lost = json.loads(lost_path.read_text())
        assert lost["replay"] is True and lost["receipt_id"] == receipt.receipt_id and lost["period"] == month
        assert json.loads(later_path.read_text())["period"] == next_month  # re-dated: it had never left
        # each charged once, in the same month at both ends
        assert ledger.spent(month) == pytest.approx(eps) == store.epsilon_spent("MY", month)
        assert ledger.spent(next_month) == pytest.approx(later_eps) == store.epsilon_spent("MY", next_month)
    finally:
        server.stop(0).wait()
        store.close()


def _fill(volume: Path) -> None:
    """Write a file until the volume is full (ENOSPC)."""
    with open(volume / ".filler", "wb", buffering=0) as out:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    out.write(b"\0" * size)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e


def test_a_full_outbox_volume_while_sending_keeps_every_release_queued_and_whole(tmp_path, pki, monkeypatch):
    """The region's outbox volume is full when the centre's receipt comes back: the receipt cannot
    be written. The file stays queued and whole (no half-written copy left beside it), and once
    there is room the next run settles it as a replay: stored and charged once.

    A small tmpfs over the outbox where one can be mounted (root), else the directory made
    unwritable (which a non-root test honours)."""
    from fedstore.aggregator.intake.server import build_server

    config = _config(tmp_path, pki, monkeypatch)
    node, [(sid, eps, path)] = _queue(config, "MY", 1, 0.5)
    outbox = outbox_dir(node.data_dir)
    queued = path.read_bytes()
    aside = tmp_path / "aside"
    outbox.rename(aside)
    outbox.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(outbox)],
                             capture_output=True).returncode == 0
    for f in aside.iterdir():
        (outbox / f.name).write_bytes(f.read_bytes())
    if mounted:
        _fill(outbox)
    else:
        outbox.chmod(0o500)
    server, port, store = build_server(config, tmp_path / "centre" / "aggregator.duckdb", "127.0.0.1:0",
                                       clock=lambda: NOW)
    server.start()
    try:
        link = centre_link(config, "MY", f"127.0.0.1:{port}")
        with pytest.raises(OSError):  # the CLI says it in one line (cli.errors.storage_problem)
            send_outbox(outbox, link, TOKENS["MY"], backoff=QUICK)
        assert path.read_bytes() == queued  # still queued, whole
        assert sorted(p.name for p in outbox.iterdir()) == sorted([path.name] + ([".filler"] if mounted else []))
        if mounted:
            (outbox / ".filler").unlink()
        else:
            outbox.chmod(0o700)
        assert send_outbox(outbox, link, TOKENS["MY"], backoff=QUICK) == [(sid, "sent")]
        assert json.loads(path.read_text())["replay"] is True  # the first attempt was stored
        assert store.epsilon_spent("MY", BudgetLedger.period(NOW)) == pytest.approx(eps)
    finally:
        server.stop(0).wait()
        store.close()
        if mounted:
            subprocess.run(["umount", "-l", str(outbox)], capture_output=True)
