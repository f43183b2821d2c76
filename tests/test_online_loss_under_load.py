"""Zero wrong answers after a loss: a Redis that lost its rows (FLUSHALL, or restarted empty) is
never answered "online". Each lookup reads the online marker in its own pipelined round trip, so
nothing waits for the node's refresher (which ticks every second) to notice; before, every lookup
in between was answered "online" with every value missing (800-960 per FLUSHALL under load)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import pytest

from redis_servers import RedisServer, start_cluster, start_redis
from fedstore.regions.store.materialize import MaterializeRequest, materialize
from fedstore.serving.breaker import PASS
from fedstore.serving.client import FeatureClient
from fedstore.serving.server import ServingNode
from serving_fixtures import TOKENS, Served, served_region, wait_until

pytestmark = [pytest.mark.redis, pytest.mark.slow]

IDS = list(range(12)) + [10**12]  # the last has no row anywhere
INCREMENTAL = MaterializeRequest(show_progress=False, incremental=True)


@dataclass
class Tally:
    online: int = 0
    fallback: int = 0
    failed: int = 0
    wrong: list[str] = field(default_factory=list)


class Lookers:
    """Client threads looking up the same entities continuously; every answer is checked against
    the truth (the values served online before any loss: the snapshot holds the same)."""

    def __init__(self, address: str, truth: tuple[dict, dict], threads: int = 4) -> None:
        self.address, self.truth = address, truth
        self.tallies = [Tally() for _ in range(threads)]
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(t,), daemon=True) for t in self.tallies]

    def _run(self, tally: Tally) -> None:
        with FeatureClient(self.address, token=TOKENS["fraud-app"]) as client:
            while not self.stop.is_set():
                try:
                    a = client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": IDS})
                except Exception as e:  # noqa: BLE001 -- counted: a failed lookup is not a wrong answer
                    tally.failed += 1
                    tally.wrong.append(f"failed: {e}")
                    self.stop.wait(0.01)
                    continue
                if a.source == "online_store":
                    tally.online += 1
                elif a.source == "batch_fallback":
                    tally.fallback += 1
                if (a.values, a.statuses) != self.truth:
                    tally.wrong.append(f"{a.source}: {a.statuses}"[:160])

    def answered(self) -> int:
        return sum(t.online + t.fallback + t.failed for t in self.tallies)

    def __enter__(self) -> "Lookers":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)

    def total(self) -> Tally:
        out = Tally()
        for t in self.tallies:
            out.online += t.online
            out.fallback += t.fallback
            out.failed += t.failed
            out.wrong += t.wrong
        return out


def _node(served: Served, refresh_seconds: float) -> ServingNode:
    """The served region's node again, with the refresher ticking as slowly as the test needs."""
    served.server.stop(1)
    return ServingNode(served.config, served.config.region("MY"), address="127.0.0.1:0",
                       refresh_seconds=refresh_seconds).start()


def _truth(address: str) -> tuple[dict, dict]:
    with FeatureClient(address, token=TOKENS["fraud-app"]) as client:
        a = client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": IDS})
    assert a.source == "online_store" and a.statuses["txn_count_7d"][0] == "present"
    return a.values, a.statuses


def _more(lookers: Lookers, count: int) -> None:
    mark = lookers.answered()
    assert wait_until(lambda: lookers.answered() >= mark + count, 60)


def test_a_flushall_under_load_is_never_answered_online_with_missing_values(tmp_path, monkeypatch):
    redis = start_redis()
    served = served_region(tmp_path, redis.url, monkeypatch)
    # a refresher that would not notice within the test: only the lookups' own marker read can
    node = _node(served, refresh_seconds=120)
    try:
        truth = _truth(str(node.address))
        with Lookers(str(node.address), truth) as lookers:
            _more(lookers, 40)
            redis.client().flushall()
            _more(lookers, 200)
        tally = lookers.total()
        assert tally.wrong == [], f"{len(tally.wrong)} wrong answers, first: {tally.wrong[:3]}"
        assert tally.online >= 40 and tally.fallback >= 190  # both paths were taken, every answer right
        assert {"customer_profile", "customer_transactions"} <= node.features.not_loaded  # the node knows
        sample = node.metrics.registry.get_sample_value
        assert sample("fedstore_fallback_answers_total", {"reason": "online_not_loaded"}) >= 190
    finally:
        node.stop(1)
        redis.stop()


def test_ten_empty_restarts_under_load_give_no_wrong_answer(tmp_path, monkeypatch):
    redis: RedisServer = start_redis()  # no persistence: a restart comes back empty
    served = served_region(tmp_path, redis.url, monkeypatch)
    node = _node(served, refresh_seconds=1.0)  # the production default
    restarts = 0
    try:
        truth = _truth(str(node.address))
        with Lookers(str(node.address), truth) as lookers:
            for _ in range(10):
                _more(lookers, 20)
                redis.kill()
                redis = start_redis(port=redis.port)  # up again at once, and empty
                restarts += 1
                _more(lookers, 40)
                materialize(served.node, INCREMENTAL)  # loads the lost views in full
                online = lookers.total().online
                assert wait_until(lambda: lookers.total().online > online + 10, 60)  # back online
        tally = lookers.total()
        assert restarts == 10
        wrong = [w for w in tally.wrong if not w.startswith("failed")]
        assert wrong == [], f"{len(wrong)} wrong answers, first: {wrong[:3]}"
        assert tally.failed == 0, tally.wrong[:3]
    finally:
        node.stop(1)
        redis.stop()


def test_the_breaker_closing_on_an_empty_redis_after_an_outage_does_not_answer_online(tmp_path, monkeypatch):
    """Redis down long enough to open the breaker, back empty: the half-open probe's own read finds
    the marker gone, so its answer (and every later one) comes from the snapshot, even though the
    refresher has not looked since."""
    redis = start_redis()
    served = served_region(tmp_path, redis.url, monkeypatch)
    node = _node(served, refresh_seconds=120)
    restarted = None
    try:
        truth = _truth(str(node.address))
        with FeatureClient(str(node.address), token=TOKENS["fraud-app"]) as client:
            ask = lambda: client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": IDS})  # noqa: E731
            redis.kill()
            # lookups fail over to the snapshot until the breaker opens
            assert wait_until(lambda: ask().source == "batch_fallback" and node.features.breaker.state != "closed", 30)
            restarted = start_redis(port=redis.port)  # empty
            assert wait_until(lambda: node.features.breaker.state == "half-open", 30)
            probe = ask()
            assert probe.source == "batch_fallback", probe.statuses
            assert (probe.values, probe.statuses) == truth
            assert node.features.breaker.state == "closed"  # the store answers; its rows are what it lacks
            answers = [ask() for _ in range(5)]
            assert all(a.source == "batch_fallback" and (a.values, a.statuses) == truth for a in answers)
    finally:
        node.stop(1)
        redis.stop()
        if restarted is not None:
            restarted.stop()


def test_a_later_jobs_marker_is_accepted_before_the_node_reads_the_ledger_again(tmp_path, monkeypatch):
    """A job finishing between two refresher ticks leaves a marker naming a newer load than the
    one the node expects: still online (the marker names a later load), no detour via the snapshot."""
    redis = start_redis()
    served = served_region(tmp_path, redis.url, monkeypatch)
    node = _node(served, refresh_seconds=120)
    try:
        materialize(served.node, MaterializeRequest(show_progress=False))
        with FeatureClient(str(node.address), token=TOKENS["fraud-app"]) as client:
            a = client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": IDS})
        assert a.source == "online_store"
        assert node.features.not_loaded == frozenset()
    finally:
        node.stop(1)
        redis.stop()


def test_a_half_open_probe_on_a_cluster_checks_the_marker_before_the_breaker_closes(tmp_path, monkeypatch):
    """A Redis Cluster's lookups do not read the marker (its copies are spread over the slots), so
    the half-open probe runs the node's marker check before its answer counts as online: a cluster
    back empty after an outage is answered from the snapshot, though the refresher has not looked."""
    cluster = start_cluster(masters=3, replicas=1)
    try:
        served = served_region(tmp_path, None, monkeypatch, customers=50,
                               online_store={"type": "redis_cluster", "nodes": cluster.nodes[:2]},
                               serving={"online_timeout_ms": 300, "breaker_reset_seconds": 0.3})
        node = _node(served, refresh_seconds=120)
        try:
            truth = _truth(str(node.address))
            breaker = node.features.breaker
            for _ in range(2):  # the outage, as the lookups' failures record it (breaker_failures: 2)
                breaker.failure(PASS)
            assert breaker.state == "open"
            cluster.flush()  # back, and empty
            assert wait_until(lambda: breaker.state == "half-open", 30)
            with FeatureClient(str(node.address), token=TOKENS["fraud-app"]) as client:
                probe = client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": IDS})
                assert probe.source == "batch_fallback" and (probe.values, probe.statuses) == truth
                again = client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": IDS})
                assert again.source == "batch_fallback" and (again.values, again.statuses) == truth
            assert breaker.state == "closed"
        finally:
            node.stop(1)
    finally:
        cluster.stop()
