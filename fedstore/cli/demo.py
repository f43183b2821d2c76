"""`fedstore demo`: the whole region-node story on the embedded default, in about a minute.

Generates region-local data, applies the shared Feast definitions, materialises into each
region's own online store (SQLite by default: nothing to install) and prints what happened.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import shutil
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from fedstore.federation import ClientTLSConfig, FederationConfig
from fedstore.federation.channels import centre_link
from fedstore.federation.roles import Role
from fedstore.cli.arguments import iso_date, positive_int
from fedstore.cli.render import age, table
from fedstore.regions.errors import RegionError
from fedstore.regions.store.materialize import MaterializeRequest, materialize
from fedstore.regions.store.node import RegionNode
from fedstore.regions.store.status import region_status
from fedstore.serving.client import FeatureClient
from fedstore.serving.server import ServingNode

if TYPE_CHECKING:
    from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2

DEFAULT_REGIONS = ("MY", "SG", "ID")
# in every directory the demo fills: only such a directory, or an empty one, is ever removed by it
DEMO_MARKER = ".fedstore-demo"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser("demo", help="generate, apply and materialise a few regions end to end")
    demo.add_argument("--regions", default=",".join(DEFAULT_REGIONS), help="comma-separated region codes")
    demo.add_argument("--customers", type=positive_int, default=3_000, help="customers generated per region")
    demo.add_argument("--days", type=positive_int, default=30, help="days of history generated")
    demo.add_argument("--seed", type=int, default=7, help="random seed of the generated data (the same seed, the same data)")
    demo.add_argument("--end", type=iso_date, default=None,
                      help="last day of the synthetic data, YYYY-MM-DD (default: yesterday, UTC); every window "
                           "of the demo ends with it, so a run is reproducible whatever today is")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars (logs and CI)")
    demo.set_defaults(handler=run_demo)


def run_demo(config: FederationConfig, args: argparse.Namespace) -> None:
    from fedstore.regions.synthetic import generate_region

    codes = [c.strip() for c in args.regions.split(",") if c.strip()]
    if not codes:
        raise RegionError(f"--regions names no region; this federation has {', '.join(config.codes)}")
    regions = [config.region(c) for c in codes]  # unknown codes fail before any work (and before any removal)
    yesterday = datetime.now(timezone.utc).date() - timedelta(days=1)  # the last complete day
    last_day = args.end or yesterday
    if last_day > yesterday:
        raise RegionError(f"--end {last_day.isoformat()} is not a complete day yet (the latest is {yesterday.isoformat()}, "
                          "UTC)")
    # every window (materialisation, statistics, training, evaluation) ends at the close of that day
    window_end = datetime.combine(last_day + timedelta(days=1), datetime.min.time(), timezone.utc)
    paths = [p for p in [r.data_dir for r in regions] + [config.aggregator.data_dir] if p is not None]
    for path in paths:  # all checked before anything is removed
        if path.is_dir() and any(path.iterdir()) and not (path / DEMO_MARKER).exists():
            raise RegionError(
                f"the demo starts from fresh synthetic data, but {path} holds data no demo made (it has no "
                f"{DEMO_MARKER} file); nothing was removed. Run the demo with a config of its own, in an empty "
                "directory, or remove that directory yourself"
            )
    for path in paths:  # the demo's own synthetic data: start clean
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        (path / DEMO_MARKER).write_text("made by `fedstore demo`, which replaces this directory when run again\n")
    print(f"demo: fresh synthetic data for {', '.join(codes)} (previous demo state removed)")
    began = time.perf_counter()
    summaries = []
    for region in regions:
        print(f"── {region.code} · {region.jurisdiction} · {region.law} · online store: {region.online_store.type}")
        report = generate_region(
            region.code,
            region.data_dir,
            customers=args.customers,
            days=args.days,
            end=last_day,
            timezone=region.timezone,
            seed=args.seed,
            progress=lambda m: print(f"   {m}"),
        )
        node = RegionNode(region)
        applied = node.apply()
        print(f"   applied {len(applied.feature_views)} feature views to project {applied.project}")
        job = materialize(
            node, MaterializeRequest(show_progress=not args.no_progress, end=window_end), say=lambda m: print(f"   {m}")
        )
        summaries.append((region, report, job, region_status(node)))
    print()
    for region, report, job, st in summaries:
        written = "an unreported number of" if job.rows_written is None else f"{job.rows_written:,}"
        print(f"{region.code} ({region.jurisdiction}, {region.law}) — {sum(report.rows.values()):,} source rows, "
              f"job {job.job_id}, {written} entities written in {job.duration_s:.1f}s")
        print(table(
            ["view", "entities online", "latest event", "freshness", "written by job"],
            [[v.view, v.entities, v.latest_event, age(v.age_seconds), v.snapshot_job] for v in st.views],
        ))
        print()
    if not config.tokens:
        print("(no auth tokens in the config: skipping the serving lookups and the centre)")
    else:
        _make_up_secrets(config)
        _lookups(config, regions, summaries)
        config = _border(config, regions)
        _aggregate(config, [config.region(r.code) for r in regions], window_end)
    print(f"demo finished in {time.perf_counter() - began:.0f}s; try `{_command()} region status --region {codes[0]}`")


def _make_up_secrets(config: FederationConfig) -> None:
    """The demo makes up the secrets not set; a deployment sets them outside the repo."""
    for t in config.tokens:
        if t.secret_env and not os.environ.get(t.secret_env):
            os.environ[t.secret_env] = secrets.token_urlsafe(24)


def _credential(config: FederationConfig, role: Role, region: str | None = None) -> str | None:
    """The secret of the config's first credential holding ``role`` (in ``region``, when named)."""
    for t in config.tokens:
        if role in t.roles and (region is None or t.allows(region)):
            return t.secret()
    return None


def _lookups(config: FederationConfig, regions: list, summaries: list) -> None:
    """Start each region's serving node and look a few customers up through the client library,
    with that region's own lookup credential (no other may read its rows)."""
    for region, report, _job, _st in summaries:
        token = _credential(config, Role.LOOKUP, region.code)
        if token is None:
            print(f"(no credential with role lookup for {region.code}: skipping its lookups)")
            continue
        node = ServingNode(config, region, address="127.0.0.1:0").start()
        try:
            ids = _some_customers(report)
            with FeatureClient(str(node.address), token=token) as client:
                got = client.get_online_features(feature_service="fraud_scoring", entities={"customer_id": ids})
            shown = ["txn_count_7d", "spend_7d", "chargeback_rate_30d", "kyc_level"]
            print(f"{region.code} serving on {node.address}: fraud_scoring for {len(ids)} customers "
                  f"(source: {got.source}, written by {', '.join(got.job_ids) or '-'})")
            print(table(["customer_id", *shown],
                        [[str(cid), *[got.values[f][i] for f in shown]] for i, cid in enumerate(ids)]))
            print()
        finally:
            node.stop(1)


def _border(config: FederationConfig, regions: list) -> FederationConfig:
    """The config the demo's centre and its clients use: mutual TLS as configured, or, where the
    config names no certificates, with a development CA made for this run in the centre's directory."""
    from fedstore.cli.dev_certificates import make_dev_pki

    agg = config.aggregator
    if agg.plaintext:
        print("demo: aggregator.plaintext is set: the border runs WITHOUT TLS (local development only)")
        return config
    if agg.tls_cert and agg.operator_tls and all(r.centre_tls for r in regions):
        print("demo: mutual TLS at the border with the configured certificates")
        return config
    assert agg.data_dir is not None
    pki = make_dev_pki(agg.data_dir / "dev-certs", [r.code for r in regions])
    print(f"demo: mutual TLS at the border: a development CA in {pki.ca.parent} issued the centre's certificate "
          f"and one client certificate per region (`fedstore certs init` makes such files for a config)")
    client = {code: ClientTLSConfig(p.cert, p.key, pki.ca) for code, p in pki.regions.items()}
    return dataclasses.replace(
        config,
        aggregator=dataclasses.replace(agg, tls_cert=pki.centre.cert, tls_key=pki.centre.key, tls_client_ca=pki.ca,
                                       operator_tls=ClientTLSConfig(pki.operator.cert, pki.operator.key, pki.ca)),
        regions=tuple(dataclasses.replace(r, centre_tls=client.get(r.code, r.centre_tls)) for r in config.regions),
    )


def _aggregate(config: FederationConfig, regions: list, window_end: datetime) -> None:
    """Each region publishes anonymised statistics with its own credential and certificate; the centre
    validates and merges them, and trains with its credential (which reads no row)."""
    from fedstore.aggregator.intake.server import build_server
    from fedstore.regions.publishing.outbox import send_outbox
    from fedstore.regions.publishing.publish import outbox_dir, publish_statistics

    assert config.aggregator.data_dir is not None
    publishers = {r.code: _credential(config, Role.PUBLISH, r.code) for r in regions}
    centre = _credential(config, Role.TRAIN)
    if centre is None or None in publishers.values():
        print("(the config lacks a publish credential for every demo region, or the centre's train credential: "
              "skipping the centre)")
        return
    reader = _credential(config, Role.STATISTICS_READ) or centre
    evaluations: list[tuple] = []
    server, port, store = build_server(config, config.aggregator.data_dir / "aggregator.duckdb", "127.0.0.1:0",
                                       on_evaluation=lambda *e: evaluations.append(e))
    server.start()
    try:
        for region in regions:
            node = RegionNode(region)
            sid, released, _ = publish_statistics(node, config.privacy, epsilon=1.0, end=window_end)
            outcome = send_outbox(outbox_dir(region.data_dir), centre_link(config, region.code, f"127.0.0.1:{port}"),
                                  publishers[region.code] or "")
            print(f"{region.code}: published {sid} (ε={released.accounting.epsilon:.2f}, "
                  f"{len(released.features)} features, {len(released.suppressed)} suppressed): "
                  f"{', '.join(o for _, o in outcome)}")
        import grpc

        from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2, aggregator_pb2_grpc

        if len(regions) > 1 and not config.aggregator.plaintext:
            # with the victim's own publish token: the certificate alone decides
            _impersonation(config, regions[1].code, regions[0].code, f"127.0.0.1:{port}", publishers[regions[0].code] or "")
        with centre_link(config, None, f"127.0.0.1:{port}").channel() as channel:
            merged = aggregator_pb2_grpc.AggregatorStub(channel).GetGlobalStatistics(
                aggregator_pb2.GetGlobalStatisticsRequest(), metadata=(("authorization", f"Bearer {reader}"),), timeout=10)
        print(f"\ncentre: federation-wide statistics from {len(merged.submissions)} anonymised submissions "
              "(no row, no key crossed a border)")
        print(table(
            ["feature", "entities (noisy)", "mean", "std", "by region"],
            [[f.ref, f.count, *_mean_and_std(f), ", ".join(f"{r.region} {r.count:,}" for r in f.regions)]
             for f in merged.features],
        ))
        print("± is the privacy noise's standard deviation (not sampling error); std is '-' where the noise "
              "swamps the variance at this ε")
        print()
        _train(config, regions, f"127.0.0.1:{port}", centre, evaluations, window_end)
    finally:
        server.stop(1).wait()
        store.close()


def _impersonation(config: FederationConfig, holder: str, victim: str, address: str, token: str) -> None:
    """One region's certificate cannot submit for another, whatever the token allows."""
    import grpc

    from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2, aggregator_pb2_grpc

    with centre_link(config, holder, address).channel() as channel:
        try:
            aggregator_pb2_grpc.AggregatorStub(channel).Submit(
                aggregator_pb2.Submission(region=victim), metadata=(("authorization", f"Bearer {token}"),), timeout=10)
            print(f"{holder}'s certificate submitting for {victim}: accepted (unexpected)")
        except grpc.RpcError as e:
            print(f"{holder}'s certificate submitting for {victim}: refused {e.code().name} ({e.details()})")


def _mean_and_std(f: aggregator_pb2.GlobalFeature) -> tuple[str, str]:
    """Mean and std with their noise, as the centre reports them (std: first order, from the variance's)."""
    if not f.HasField("mean_noise_sd"):
        return f"{f.mean:,.2f}", f"{f.variance ** 0.5:,.2f}"
    mean = f"{f.mean:,.2f} ± {f.mean_noise_sd:,.2f}"
    if f.variance <= 3 * f.variance_noise_sd:  # too close to 0 for a first-order ± on its root
        return mean, "-"
    std = f.variance**0.5
    return mean, f"{std:,.2f} ± {f.variance_noise_sd / (2 * std):,.2f}"


def _train(config: FederationConfig, regions: list, address: str, centre: str, evaluations: list[tuple],
           window_end: datetime) -> None:
    """Regions release per-class statistics; the centre trains; one region evaluates the model."""
    import grpc

    from fedstore.federation.training import LinearModel, training_spec
    from fedstore.cli.training_commands import describe
    from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2, aggregator_pb2_grpc
    from fedstore.regions.publishing.outbox import send_outbox
    from fedstore.regions.publishing.publish import outbox_dir, publish_evaluation, publish_training_statistics

    spec = training_spec("fraud_scoring")
    for region in regions:
        node = RegionNode(region)
        sid, released, _ = publish_training_statistics(node, config.privacy, spec, epsilon=2.0, end=window_end)
        link = centre_link(config, region.code, address)
        outcome = (send_outbox(outbox_dir(region.data_dir), link, _credential(config, Role.PUBLISH, region.code) or "")
                   if released.statistics else [("", "suppressed")])
        print(f"{region.code}: training statistics {sid} (ε={released.epsilon:.2f}, δ={released.delta:.0e}, "
              f"OpenDP Gaussian): {', '.join(o for _, o in outcome)}")
    md = (("authorization", f"Bearer {centre}"),)
    with centre_link(config, None, address).channel() as channel:
        try:
            result = aggregator_pb2_grpc.AggregatorStub(channel).Train(
                aggregator_pb2.TrainRequest(strategy="lda", feature_service=spec.feature_service), metadata=md, timeout=30)
        except grpc.RpcError as e:
            print(f"centre: no model trained ({e.details()})")
            return
    print(f"\ncentre: {describe(result)}\n")
    model = LinearModel(result.feature_service, tuple(result.features), tuple(result.weights), result.intercept,
                        link=result.link)
    judge = RegionNode(regions[0])
    sid, evaluation, _ = publish_evaluation(judge, config.privacy, spec, model, name=result.model_name,
                                            version=result.model_version or 1, epsilon=0.5, end=window_end)
    if evaluation.histograms:
        send_outbox(outbox_dir(judge.data_dir), centre_link(config, judge.code, address),
                    _credential(config, Role.PUBLISH, judge.code) or "")
    for name, version, region, metrics, _ in evaluations:
        print(f"{region}: evaluated {name} v{version} locally; the centre sees only noisy score histograms: "
              f"AUC {metrics['auc']:.3f}, accuracy {metrics['accuracy']:.3f} on ~{metrics['examples']:,.0f} customers")
    print()
    _deploy(config, address, result.model_name, result.model_version, [r.code for r in regions])


def _deploy(config: FederationConfig, address: str, name: str, version: int, codes: list[str]) -> None:
    """Promote the new model in the first region (shadow, then canary 5%); try a region whose policy
    refuses it. Each region's own credential moves its stages: the centre's promotes nowhere."""
    import grpc

    from fedstore.cli.registry_commands import deployment_table
    from fedstore.proto.fedstore.registry.v1 import registry_pb2 as rpb
    from fedstore.proto.fedstore.registry.v1 import registry_pb2_grpc

    def md(role: Role, region: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {_credential(config, role, region) or ''}"),)

    with centre_link(config, None, address).channel() as channel:
        stub = registry_pb2_grpc.RegistryStub(channel)
        steps = [(codes[0], "shadow", "demo: shadow run first"), (codes[0], "canary_5", "demo: evaluation passed")]
        steps += [(c, "shadow", "demo: try another jurisdiction") for c in codes[1:]]
        moved: set[tuple[str, str]] = set()
        for region, stage, why in steps:
            try:
                stub.Promote(rpb.PromoteRequest(name=name, version=version, region=region, stage=stage, why=why),
                             metadata=md(Role.PROMOTE, region), timeout=10)
                print(f"registry: {name} v{version} → {stage} in {region}")
                moved.add((region, stage))
            except grpc.RpcError as e:
                print(f"registry: {name} v{version} → {stage} in {region} refused: {e.details()}")
        if (codes[0], "shadow") in moved and (codes[0], "canary_5") not in moved:
            # the evidence (a noisy evaluation) kept it from the canary: the demo ends with the first
            # region's shadow free whatever the noise drew, so what an operator shadows next finds room
            stub.Rollback(rpb.RollbackRequest(region=codes[0], stage="shadow",
                                              why="demo: the canary step was refused; shadow freed"),
                          metadata=md(Role.PROMOTE, codes[0]), timeout=10)
            print(f"registry: {name} v{version} rolled back from shadow in {codes[0]} (its canary step was refused)")
        print(deployment_table(stub.GetDeployment(rpb.GetDeploymentRequest(region=codes[0]),
                                                  metadata=md(Role.REGISTRY_READ, codes[0]), timeout=10)))
    print()


def _some_customers(report) -> list[int]:
    import pyarrow.parquet as pq

    ids = pq.read_table(report.files["customer_transactions"], columns=["customer_id"]).column(0)
    return sorted({int(i) for i in ids.slice(0, 200).to_pylist()})[:3]


def _command() -> str:
    """How this run was started, so the hint works as written: `.venv/bin/fedstore` after `make
    demo` (not on PATH), `fedstore` when installed, `python -m fedstore.cli` from a checkout."""
    started = sys.argv[0] if sys.argv else "fedstore"
    if Path(started).name == "fedstore":
        return os.path.relpath(started) if os.path.sep in started else started
    return "python -m fedstore.cli"
