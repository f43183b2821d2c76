"""Dashboard benchmark: the issue's promise, first paint ≤ 1 s with 7 regions × 90 days, one run.

    python benchmarks/dashboard.py [--regions 7] [--days 90] [--customers 300] [--loads 10]

Builds the state: every region of the federation generated for ``--days`` days (synthetic customers
and drivers), its Feast node applied and materialised (SQLite online store), and a centre store with
one feature-statistics release per region and day (each charged to its own month) plus a registry with
a model in every region. Then, per page (each region's and the centre's):

- build: gathering the state and rendering the HTML (profiles, drift verdicts, matplotlib figures),
  which the server does in the background thread every ``--refresh`` seconds — never on a request;
- serve: a signed-in GET answered from memory by the real Starlette app on uvicorn over loopback
  (p50 of ``--loads``);
- Chromium (Debian's, headless, through chromedriver): the browser's own navigation timing of a
  signed-in load — time to first byte, first contentful paint, DOMContentLoaded and load (p50).

Printed as a table beside the target (the issue's 1,000 ms first paint) and the baseline the dashboard
replaces: the drift PNG report for the same region (`drift_chart`), rendered per feature. The machine
these numbers come from may be shared: run it on a quiet one before quoting them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

ZONES = {"MY": "Asia/Kuala_Lumpur", "SG": "Asia/Singapore", "ID": "Asia/Jakarta", "TH": "Asia/Bangkok",
         "VN": "Asia/Ho_Chi_Minh", "PH": "Asia/Manila", "HK": "Asia/Hong_Kong"}
TOKEN = "bench-audit-secret"


def _config(root: Path, codes: list[str]) -> Path:
    import yaml

    from fedstore.federation.jurisdictions import JURISDICTIONS

    regions = [{"code": c, "jurisdiction": JURISDICTIONS[c].name, "law": JURISDICTIONS[c].law, "timezone": ZONES[c],
                "online_store": {"type": "sqlite"}, "data_dir": f"data/{c}", "serving_address": f"127.0.0.1:{52500 + i}"}
               for i, c in enumerate(codes)]
    raw = {"federation": {"name": "bench"}, "regions": regions,
           "aggregator": {"plaintext": True, "address": "127.0.0.1:0", "data_dir": "centre"},
           "auth": {"tokens": [{"name": "audit", "regions": ["*"], "roles": ["audit"], "secret_env": "BENCH_AUDIT"}]}}
    (root / "fedstore.yaml").write_text(yaml.safe_dump(raw))
    return root / "fedstore.yaml"


def build_state(root: Path, codes: list[str], days: int, customers: int, end: date) -> None:
    import numpy as np

    from fedstore.aggregator.intake.submission_wire import parse_submission
    from fedstore.aggregator.registry.model import ModelCandidate
    from fedstore.aggregator.registry.store import ModelRegistry
    from fedstore.aggregator.store import SubmissionStore
    from fedstore.federation import load_config
    from fedstore.regions.store.materialize import MaterializeRequest, materialize
    from fedstore.regions.store.node import RegionNode
    from fedstore.regions.synthetic import generate_region
    from honest_releases import exact_region, features_submission

    config = load_config(_config(root, codes))
    the_end = datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1)
    for i, code in enumerate(codes):
        t = time.perf_counter()
        node = RegionNode(config.region(code))
        generate_region(code, node.data_dir, customers=customers, days=days, end=end, timezone=ZONES[code], seed=i)
        node.apply()
        materialize(node, MaterializeRequest(end=the_end, show_progress=False))
        print(f"  region {code}: {days} days generated and materialised in {time.perf_counter() - t:.1f} s", flush=True)
    t = time.perf_counter()
    assert config.aggregator.data_dir is not None
    store = SubmissionStore(config.aggregator.data_dir / "aggregator.duckdb")
    rng = np.random.default_rng(0)
    for day in range(days):
        at = the_end - timedelta(days=days - day)
        for code in codes:
            sub = features_submission(code, exact_region(rng, 2000), epsilon=0.05, now=at)
            assert sub is not None
            store.accept(parse_submission(sub), epsilon=sub.accounting.epsilon, delta=0.0, period=at.strftime("%Y-%m"), accepted_at=at,
                         epsilon_limit=config.privacy.epsilon_per_month)
    store.close()
    registry = ModelRegistry(config.aggregator.data_dir / "registry.db", config)
    registry.register(ModelCandidate(
        name="fraud_lda", strategy="lda", feature_service="fraud_scoring", features=("customer_profile:kyc_level",),
        schema_hash="ab" * 32, parameters={"weights": [0.5], "intercept": -3.0, "link": "logistic"},
        submissions=tuple(f"{c.lower()}-training-1" for c in codes), epsilon_by_region={c: 1.0 for c in codes}),
        who="bench")
    for code in codes:
        registry.promote("fraud_lda", 1, code, "shadow", who="bench", why="bench")
    print(f"  centre: {days * len(codes)} releases stored, a model in {len(codes)} regions, in "
          f"{time.perf_counter() - t:.1f} s", flush=True)


def _p50(values: list[float]) -> float:
    return statistics.median(values)


def served(build, title: str, region: str | None, loads: int, browser) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Build the page once (as the refresher does), serve it, and time what a reader waits for."""
    from fedstore.dashboard.access import DashboardAccess
    from fedstore.dashboard.app import PageCache, dashboard_app
    from fedstore.dashboard.serve import listen, serve_in_thread
    from fedstore.federation.config import TokenConfig
    from fedstore.federation.roles import Role
    from fedstore.federation.tokens import TokenBook

    t = time.perf_counter()
    cache = PageCache(build, refresh_seconds=3600)
    cache.rebuild()
    build_ms = 1000 * (time.perf_counter() - t)
    html, error = cache.current()
    assert html is not None, error
    book = TokenBook((TokenConfig("audit", ("*",), "BENCH_AUDIT", roles=frozenset({Role.AUDIT})),))
    sock = listen("127.0.0.1", 0)
    server = serve_in_thread(dashboard_app(DashboardAccess(book, region), cache, title), sock)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
        times = []
        for _ in range(loads):
            t = time.perf_counter()
            with urllib.request.urlopen(request, timeout=30) as answer:
                answer.read()
            times.append(1000 * (time.perf_counter() - t))
        out = {"build_ms": build_ms, "serve_ms": _p50(times), "kib": len(html.encode()) / 1024}
        out.update(_browser_timing(browser, url, loads))
        return out
    finally:
        server.should_exit = True
        cache.stop()


def _browser_timing(driver, url: str, loads: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    driver.delete_all_cookies()
    driver.get(url)
    driver.find_element(By.ID, "token").send_keys(TOKEN)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.TAG_NAME, "h1") and not d.find_elements(By.ID, "token"))
    rows: dict[str, list[float]] = {"ttfb_ms": [], "fcp_ms": [], "dcl_ms": [], "load_ms": []}
    for _ in range(loads):
        driver.get(url)  # the signed-in page: the session cookie, as a reviewer's browser
        WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.readyState") == "complete")
        # webdriver's script runs outside the page's CSP: the page itself has none. The paint entry is
        # reported a frame after the load completes: asked again until it is there (at most 5 s)
        deadline = time.monotonic() + 5
        while True:
            nav, fcp = driver.execute_script(
                "const n = performance.getEntriesByType('navigation')[0];"
                "const p = performance.getEntriesByName('first-contentful-paint')[0];"
                "return [[n.responseStart, n.domContentLoadedEventEnd, n.loadEventEnd], p ? p.startTime : null];")
            if fcp is not None or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        rows["ttfb_ms"].append(nav[0])
        rows["dcl_ms"].append(nav[1])
        rows["load_ms"].append(nav[2])
        if fcp is not None:
            rows["fcp_ms"].append(fcp)
    return {k: _p50(v) if v else float("nan") for k, v in rows.items()}


def _browser():  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        sys.exit("chromium and chromedriver are needed: `make chromium` installs Debian's packages")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or ""
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or ""))


def png_baseline(config, code: str, days: int, out: Path) -> float:  # type: ignore[no-untyped-def]
    """The drift PNG report of the same region (what an operator read before): ms to judge and draw it."""
    from fedstore.regions.monitoring.chart import drift_chart
    from fedstore.regions.monitoring.report import drift_report
    from fedstore.regions.store.node import RegionNode

    t = time.perf_counter()
    report = drift_report(RegionNode(config.region(code)), config)
    drift_chart(report, out / f"drift-{code}.png", days=days)
    return 1000 * (time.perf_counter() - t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regions", type=int, default=7)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--customers", type=int, default=300)
    parser.add_argument("--loads", type=int, default=10)
    args = parser.parse_args()
    codes = list(ZONES)[: args.regions]
    end = date(2026, 4, 20)
    now = datetime(2026, 4, 21, 6, tzinfo=UTC)
    os.environ["BENCH_AUDIT"] = TOKEN
    from fedstore.aggregator.registry.store import ModelRegistry
    from fedstore.aggregator.store import SubmissionStore
    from fedstore.dashboard.centre_state import centre_state
    from fedstore.dashboard.pages import centre_page, region_page
    from fedstore.dashboard.region_state import region_state
    from fedstore.federation import load_config

    with tempfile.TemporaryDirectory(prefix="bench-dashboard-") as tmp:
        root = Path(tmp)
        print(f"building {len(codes)} regions × {args.days} days ({args.customers} customers each) …", flush=True)
        os.chdir(root)
        build_state(root, codes, args.days, args.customers, end)
        config = load_config(root / "fedstore.yaml")
        browser = _browser()
        results: dict[str, dict[str, float]] = {}
        try:
            for code in codes:
                results[f"region {code}"] = served(
                    lambda c=code: region_page(region_state(config, c, now=now, days=args.days)),
                    f"Region {code}", code, args.loads, browser)
                results[f"region {code}"]["png_ms"] = png_baseline(config, code, args.days, root)
            assert config.aggregator.data_dir is not None
            store = SubmissionStore(config.aggregator.data_dir / "aggregator.duckdb")
            registry = ModelRegistry(config.aggregator.data_dir / "registry.db", config)
            try:
                results["centre"] = served(lambda: centre_page(centre_state(config, store, registry, None, now=now)),
                                           "Centre", None, args.loads, browser)
            finally:
                store.close()
        finally:
            browser.quit()
    print(f"\n{len(codes)} regions × {args.days} days; p50 of {args.loads} signed-in loads; ms unless said "
          f"(a shared, noisy machine: {os.cpu_count()} cores)")
    head = ("page", "build", "HTML KiB", "serve", "Chromium TTFB", "first paint", "DOMContentLoaded", "load",
            "target paint", "baseline: PNG report")
    print(" | ".join(head))
    print(" | ".join("---" for _ in head))
    for page, r in results.items():
        print(" | ".join([page, f"{r['build_ms']:.0f}", f"{r['kib']:.0f}", f"{r['serve_ms']:.1f}", f"{r['ttfb_ms']:.1f}",
                          f"{r['fcp_ms']:.0f}", f"{r['dcl_ms']:.0f}", f"{r['load_ms']:.0f}", "≤ 1000",
                          f"{r['png_ms']:.0f}" if "png_ms" in r else "–"]))
    painted = [r["fcp_ms"] for r in results.values() if r["fcp_ms"] == r["fcp_ms"]]
    missing = sum(1 for r in results.values() if r["fcp_ms"] != r["fcp_ms"])
    worst = max(painted, default=float("nan"))
    print(f"\nslowest first paint: {worst:.0f} ms ({'within' if worst <= 1000 else 'beyond'} the 1,000 ms promise); "
          "build is off the request path (a background thread), so a reader never waits for it."
          + (f" {missing} page(s) reported no paint entry." if missing else ""))


if __name__ == "__main__":
    main()
