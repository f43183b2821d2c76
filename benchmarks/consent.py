"""Consent filter benchmark: one statistics run over N entities with and without the consent gate;
with ``--lookups``, 1-entity lookups on a serving node with and without the consent check.

    python benchmarks/consent.py [--entities 1000000] [--repeat 5]
    python benchmarks/consent.py --lookups [--entities 100000] [--records 1000000] [--requests 3000]

One region, N customers with one transactions row and one profile row each, and consent records
for every customer (global_statistics; 5% withdrawn inside the window, 10% without a record and
the default deny). Times ``compute_statistics`` over the whole catalog (8 features, two views)
with the gate and without, in ``--repeat`` interleaved rounds (without, with, with, without),
and reports the medians of CPU time (the process's, DuckDB's threads included) and of wall time,
the filter's share of each, and the first gate's cost (checking the records, caching their spans:
once per version of the records file).

``--lookups``: one region with N entities × 10 float features materialised into a fresh
redis-server, consent required for ``serving`` (default deny) and consent records for ``--records``
entities (5% withdrawn), one serving node in this process. Three figures, each with and without
the check, taken in alternating rounds in one run (medians): the check alone on a 1-entity request
(``ConsentCheck.withheld``), the node's lookup path for 1 entity (``OnlineFeatures.get``: the Redis
round trip included), and a 1-entity gRPC lookup end to end (client in this process). Plus the time
the refresher takes to rebuild the in-memory sets from the records. The machine is shared: the
check alone is the figure the target (≤ 0.05 ms) is about; the other two show it against the noise.
The same for the region's audit trail of use (``serving/use_audit.py``): the record alone, and the
two paths with consent and the audit record against consent alone.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

END = datetime(2026, 11, 1, tzinfo=timezone.utc)


def setup(work: Path, n: int) -> Path:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml

    cfg = work / "fedstore.yaml"
    cfg.write_text(yaml.safe_dump({
        "federation": {"name": "bench"},
        "regions": [{"code": "MY", "jurisdiction": "Malaysia", "law": "PDPA-MY", "timezone": "Asia/Kuala_Lumpur",
                     "data_dir": "MY", "online_store": {"type": "sqlite"}, "serving_address": "127.0.0.1:59999",
                     "consent": {"required": ["global_statistics"], "default": "deny"}}],
    }))
    src = work / "MY" / "sources"
    src.mkdir(parents=True)
    rng = np.random.default_rng(1)
    ts = pa.timestamp("us", tz="UTC")
    ids = np.arange(n, dtype=np.int64)
    when = pa.array(np.full(n, np.datetime64((END - timedelta(days=1)).replace(tzinfo=None), "us")), ts)
    pq.write_table(pa.table({
        "customer_id": ids, "event_timestamp": when, "created": when,
        "txn_count_7d": rng.integers(0, 50, n), "txn_count_30d": rng.integers(0, 200, n),
        "spend_7d": rng.gamma(2, 50, n), "spend_30d": rng.gamma(2, 200, n), "avg_ticket": rng.gamma(2, 20, n),
        "chargeback_rate_30d": rng.random(n), "distinct_merchants_30d": rng.integers(0, 40, n),
        "night_txn_ratio_7d": rng.random(n),
    }), src / "customer_transactions.parquet")
    pq.write_table(pa.table({
        "customer_id": ids, "event_timestamp": when, "created": when,
        "account_age_days": rng.integers(0, 3000, n), "kyc_level": rng.integers(1, 4, n),
        "home_city": pa.array(["Kuala Lumpur"] * n),
    }), src / "customer_profile.parquet")
    one = pa.array([END - timedelta(days=2)], ts)
    pq.write_table(pa.table({"driver_id": pa.array([1], pa.int64()), "event_timestamp": one, "created": one,
                             "acceptance_rate_7d": [0.9], "avg_rating_30d": [4.5], "trips_last_hour": pa.array([1]),
                             "cancellations_7d": pa.array([0]), "online_hours_7d": [10.0],
                             "completed_trips_30d": pa.array([5])}), src / "driver_performance.parquet")
    pq.write_table(pa.table({"customer_id": pa.array([1], pa.int64()), "event_timestamp": one,
                             "is_fraud": pa.array([0])}), src / "fraud_labels.parquet")
    recorded = ids[n // 10:]  # the first 10% have no record
    withdrawn = np.where(rng.random(recorded.size) < 0.05, np.datetime64((END - timedelta(days=3)).replace(tzinfo=None), "us"),
                         np.datetime64("NaT", "us"))
    pq.write_table(pa.table({
        "join_key": pa.array(["customer_id"] * recorded.size), "entity_id": recorded,
        "purpose": pa.array(["global_statistics"] * recorded.size),
        "granted_at": pa.array(np.full(recorded.size, np.datetime64("2026-01-01T00:00:00", "us")), ts),
        "withdrawn_at": pa.array(withdrawn, ts), "source": pa.array(["crm"] * recorded.size),
    }), src / "consent.parquet")
    return cfg


def lookups(entities: int, records: int, requests: int, rounds: int = 5) -> None:
    import statistics
    import timeit

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml

    sys.path.insert(0, str(ROOT / "benchmarks"))
    sys.path.insert(0, str(ROOT / "tests"))
    from online import FEATURES, TOKEN, free_port, setup_region
    from redis_servers import start_redis

    from fedstore.federation import load_config
    from fedstore.federation.consent import Purpose
    from fedstore.serving.client import FeatureClient
    from fedstore.serving.entities import Entities
    from fedstore.serving.server import ServingNode

    os.environ["FEDSTORE_BENCH_TOKEN"] = TOKEN
    redis = start_redis()
    try:
        with tempfile.TemporaryDirectory(prefix="fedstore-consent-bench-") as tmp:
            cfg = setup_region(Path(tmp), redis.port, entities)
            raw = yaml.safe_load(cfg.read_text())
            raw["regions"][0]["consent"] = {"required": ["serving"], "default": "deny"}
            cfg.write_text(yaml.safe_dump(raw))
            region = load_config(cfg).region("MY")
            rng = np.random.default_rng(2)
            ids = np.arange(records, dtype=np.int64)
            ts = pa.timestamp("us", tz="UTC")
            granted = np.datetime64("2026-01-01T00:00:00", "us")
            withdrawn = np.where(rng.random(records) < 0.05, np.datetime64("2026-02-01T00:00:00", "us"),
                                 np.datetime64("NaT", "us"))
            pq.write_table(pa.table({
                "join_key": pa.array(["entity_id"] * records), "entity_id": ids,
                "purpose": pa.array(["serving"] * records), "granted_at": pa.array(np.full(records, granted), ts),
                "withdrawn_at": pa.array(withdrawn, ts), "source": pa.array(["crm"] * records),
            }), region.data_dir / "sources" / "consent.parquet")
            node = ServingNode(load_config(cfg), region, address=f"127.0.0.1:{free_port()}", refresh_seconds=3600)
            check = node.consent
            assert check is not None
            began = time.perf_counter()
            check._read = None  # rebuild once more, timed (the node built it at start)
            check.refresh()
            rebuild = time.perf_counter() - began
            features = node.features
            resolved = features.resolve(feature_service=None, refs=tuple(FEATURES))
            held = [int(i) for i in ids[np.isnat(withdrawn)][:requests] if i < entities]
            one = Entities({"entity_id": [held[0]]}, 1)
            alone = min(timeit.repeat(lambda: check.withheld(Purpose.SERVING, one, ("entity_id",)),
                                      number=100_000, repeat=5)) / 100_000
            audit = node.audit

            def get_once(i: int) -> None:
                features.get(resolved, {"entity_id": [held[i % len(held)]]}, purpose=Purpose.SERVING)

            node.start()
            # the audit record alone (the call's tuple queued; the writer thread drains it meanwhile)
            record = min(timeit.repeat(lambda: features._record(audit, resolved, Purpose.SERVING, 1, 0, "answered",
                                                                None), number=10_000, repeat=5)) / 10_000
            client = FeatureClient(str(node.address), token=TOKEN, timeout=10)

            def grpc_once(i: int) -> None:
                got = client.get_online_features(features=FEATURES, entities={"entity_id": [held[i % len(held)]]})
                assert got.statuses["f0"] == ["present"]

            medians: dict[tuple[str, str], list[float]] = {}
            for _ in range(rounds):
                for label, on, audited in (("without", None, None), ("with", check, None), ("audited", check, audit),
                                           ("audited", check, audit), ("with", check, None), ("without", None, None)):
                    features.consent, features.audit = on, audited
                    for what, call in (("get", get_once), ("grpc", grpc_once)):
                        took = []
                        for i in range(requests // rounds):
                            t0 = time.perf_counter()
                            call(i)
                            took.append(time.perf_counter() - t0)
                        medians.setdefault((what, label), []).append(statistics.median(took))
            features.consent, features.audit = check, audit
            client.close()
            node.stop(1)
    finally:
        redis.stop()

    def ms(what: str, label: str) -> float:
        return statistics.median(medians[(what, label)]) * 1000

    print(f"1-entity lookups, {entities:,} entities in Redis, consent records for {records:,} "
          f"(5% withdrawn), {requests:,} requests per figure, medians of alternating rounds; shared, noisy machine")
    print(f"{'':44} {'without consent':>16} {'with consent':>14} {'added':>10} {'+ audit':>11} {'added':>10}")
    print(f"{'the check alone (ConsentCheck.withheld)':44} {'-':>16} {alone * 1000:>11.5f} ms {alone * 1000:>7.5f} ms")
    print(f"{'the audit record alone (queued)':44} {'-':>16} {'-':>14} {'-':>10} {record * 1000:>8.5f} ms "
          f"{record * 1000:>7.5f} ms")
    for what, name in (("get", "node's lookup path (OnlineFeatures.get)"), ("grpc", "gRPC lookup end to end")):
        a, b, c = ms(what, "without"), ms(what, "with"), ms(what, "audited")
        print(f"{name:44} {a:>13.4f} ms {b:>11.4f} ms {b - a:>+7.4f} ms {c:>8.4f} ms {c - b:>+7.4f} ms")
    print(f"rebuilding the sets from the records (refresher, on change): {rebuild:.2f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entities", type=int, default=None,
                   help="statistics: customers (default 1,000,000); --lookups: entities in Redis (default 100,000)")
    p.add_argument("--repeat", type=int, default=5, help="statistics: interleaved rounds")
    p.add_argument("--lookups", action="store_true", help="1-entity lookups with and without the consent check")
    p.add_argument("--records", type=int, default=1_000_000, help="--lookups: entities with a consent record")
    p.add_argument("--requests", type=int, default=3000, help="--lookups: requests per figure")
    args = p.parse_args()
    if args.lookups:
        lookups(args.entities or 100_000, args.records, args.requests)
        return
    args.entities = args.entities or 1_000_000

    from fedstore.federation import load_config
    from fedstore.federation.consent import Purpose
    from fedstore.federation.statistics import CATALOG
    from fedstore.regions.consent import consent_gate
    from fedstore.regions.publishing.statistics import compute_statistics
    from fedstore.regions.store.node import RegionNode

    import statistics

    with tempfile.TemporaryDirectory() as tmp:
        node = RegionNode(load_config(setup(Path(tmp), args.entities)).region("MY"))
        node.apply()
        start = END - timedelta(days=30)
        began = time.perf_counter()
        consent_gate(node.region, Purpose.GLOBAL_STATISTICS)  # the first use checks the records, caches spans
        first = time.perf_counter() - began
        cpu: dict[str, list[float]] = {"without": [], "with": []}
        wall: dict[str, list[float]] = {"without": [], "with": []}
        counts: dict[str, int] = {}
        for _ in range(args.repeat):
            for name in ("without", "with", "with", "without"):  # interleaved: each round the same load
                began, used = time.perf_counter(), time.process_time()
                # a new gate per run, as each publication makes one (the records' spans read from their cache)
                gate = consent_gate(node.region, Purpose.GLOBAL_STATISTICS) if name == "with" else None
                stats = compute_statistics(node, CATALOG, start, END, gate)
                cpu[name].append(time.process_time() - used)
                wall[name].append(time.perf_counter() - began)
                counts[name] = stats.features[-1].count
        med = {k: (statistics.median(cpu[k]), statistics.median(wall[k])) for k in cpu}
        # each round's own ratio (its two runs with over its two without): the load drifts between rounds
        by_round = [sum(cpu["with"][2 * i:2 * i + 2]) / sum(cpu["without"][2 * i:2 * i + 2]) - 1
                    for i in range(args.repeat)]
        result = {"entities": args.entities, "rounds": args.repeat,
                  "cpu_seconds_without": round(med["without"][0], 3), "cpu_seconds_with": round(med["with"][0], 3),
                  "cpu_overhead": round(med["with"][0] / med["without"][0] - 1, 3),
                  "cpu_overhead_round_median": round(statistics.median(by_round), 3),
                  "wall_seconds_without": round(med["without"][1], 3), "wall_seconds_with": round(med["with"][1], 3),
                  "wall_overhead": round(med["with"][1] / med["without"][1] - 1, 3),
                  "first_gate_seconds": round(first, 3), "load_average": round(os.getloadavg()[0], 2),
                  "kyc_count_without": counts["without"], "kyc_count_with": counts["with"]}
        print(json.dumps(result))

if __name__ == "__main__":
    main()
