"""The region dashboard: a real `fedstore region dashboard` process on loopback, driven by Debian's
headless Chromium (through its chromedriver) with JavaScript disabled.

The region's data is generated with a fixed end date and the page's clock is fixed (`--as-of`); its
ledger holds a job refused by the data contract whose error quotes entity ids, so a page that
leaked ledger text would fail the id scan. The serving node's model files (deployment, refusals, stage
changes) are written by its own DeploymentStore and the evidence by `publish_evidence`. Over TLS: the
region's and the centre's own certificates from the suite's CA. Screenshots of every page go to
build/dashboard-screenshots/ (or $FEDSTORE_SCREENSHOTS) for review.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from fedstore.federation import load_config
from fedstore.regions.errors import RegionError
from fedstore.regions.publishing.budget import BudgetLedger
from fedstore.regions.store.materialize import MaterializeRequest, materialize
from fedstore.regions.store.node import RegionNode
from fedstore.regions.synthetic import generate_region

pytestmark = pytest.mark.slow

LAST = date(2026, 4, 20)
AS_OF = datetime(2026, 4, 21, 6, tzinfo=timezone.utc)
TOKENS = {"T_MY_AUDIT": "my-audit-secret", "T_MY_LOOKUP": "my-lookup-secret", "T_SG_AUDIT": "sg-audit-secret"}
ROOT = Path(__file__).parents[1]


def _config(root: Path) -> Path:
    region = {"jurisdiction": "Malaysia", "law": "PDPA-MY", "timezone": "Asia/Kuala_Lumpur",
              "online_store": {"type": "sqlite"}}
    raw = {
        "federation": {"name": "dash"},
        "regions": [{"code": "MY", **region, "data_dir": "data/MY", "serving_address": "127.0.0.1:52410"},
                    {"code": "SG", "jurisdiction": "Singapore", "law": "PDPA-SG", "timezone": "Asia/Singapore",
                     "online_store": {"type": "sqlite"}, "data_dir": "data/SG", "serving_address": "127.0.0.1:52411"}],
        "auth": {"tokens": [
            {"name": "my-audit", "regions": ["MY"], "roles": ["audit"], "secret_env": "T_MY_AUDIT"},
            {"name": "my-lookup", "regions": ["MY"], "roles": ["lookup"], "secret_env": "T_MY_LOOKUP"},
            {"name": "sg-audit", "regions": ["SG"], "roles": ["audit"], "secret_env": "T_SG_AUDIT"},
        ]},
    }
    path = root / "fedstore.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def region(tmp_path_factory) -> tuple[Path, RegionNode]:
    root = tmp_path_factory.mktemp("dashboard")
    os.environ.update(TOKENS)
    config = load_config(_config(root))
    node = RegionNode(config.region("MY"))
    generate_region("MY", node.data_dir, customers=300, days=150, end=LAST, timezone="Asia/Kuala_Lumpur", seed=4)
    node.apply()
    # a job the data contract refuses: its ledger error quotes entity ids (customer_id=…)
    source = node.data_dir / "sources" / "customer_transactions.parquet"
    good = pq.read_table(source)
    rates = good["chargeback_rate_30d"].to_numpy().copy()
    rates[:5] = 7.0
    pq.write_table(good.set_column(good.schema.get_field_index("chargeback_rate_30d"), "chargeback_rate_30d",
                                   pa.array(rates)), source)
    with pytest.raises(RegionError):
        materialize(node, MaterializeRequest(end=datetime(2026, 4, 21, tzinfo=timezone.utc), show_progress=False))
    pq.write_table(good, source)
    materialize(node, MaterializeRequest(end=datetime(2026, 4, 21, tzinfo=timezone.utc), show_progress=False))
    budget = BudgetLedger(node.data_dir / "privacy_budget.db", "MY", epsilon_per_month=config.privacy.epsilon_per_month)
    budget.spend(f"my-stats-{uuid.uuid4().hex}", 1.0, AS_OF)
    budget.spend(f"my-training-{uuid.uuid4().hex}", 0.5, AS_OF, 1e-6)
    _models(node, config)
    _scores(node, config)
    return root, node


SCORED_DAYS, SHIFT_DAYS, DISAGREE_DAYS = 60, 4, 6  # the log's span; the served model's shift; shadow v3's


def _scores(node: RegionNode, config) -> None:  # type: ignore[no-untyped-def]
    """A prediction log of the region's own customers written by the serving node's writer (its ids are
    what the page's id scan looks for): 600 a day, v1 serving, shadows v2 (agreeing) and v3 (moving away
    DISAGREE_DAYS ago); v1's scores up by 0.8 for the last SHIFT_DAYS. Then the daily score-drift run
    (its alerts in triggers.db, its aggregates for the page) and one feature's retraining trigger."""
    import numpy as np

    from fedstore.regions.monitoring.drift import DRIFT, Verdict
    from fedstore.regions.monitoring.score_report import score_report, summarise
    from fedstore.regions.monitoring.score_summary import SUMMARY_FILE, write_summary
    from fedstore.regions.monitoring.triggers import TriggerLog
    from fedstore.serving.prediction_log import Prediction, PredictionLog, ShadowScore

    ids = pq.read_table(node.data_dir / "sources" / "customer_profile.parquet", columns=["customer_id"])
    customers = [str(c) for c in ids["customer_id"].to_pylist()]
    rng = np.random.default_rng(27)
    log = PredictionLog(node.data_dir, retention_days=10_000, max_batches=10_000)
    log.start()
    k = 0
    for back in range(SCORED_DAYS - 1, -1, -1):
        day = LAST - timedelta(days=back)
        served = rng.normal(-3.0, 0.8, 600) + (0.8 if back < SHIFT_DAYS else 0.0)
        agreeing = served + rng.normal(0.0, 0.15, 600)
        away = served + rng.normal(0.0, 0.15, 600) + (0.9 if back < DISAGREE_DAYS else 0.0)
        at = datetime.combine(day, datetime.min.time(), timezone.utc) + timedelta(hours=4)  # noon in MY
        rows = [Prediction(prediction_id=f"p{k + i}", at=at, entity=customers[int(rng.integers(len(customers)))],
                           feature_service="fraud_scoring", model="fraud_lda", version=1, stage="full",
                           score=float(served[i]), shadow=(ShadowScore("fraud_lda", 2, float(agreeing[i])),
                                                           ShadowScore("fraud_lda", 3, float(away[i]))),
                           features=(), values=(), imputed=(), job_ids=(), source="online_store") for i in range(600)]
        k += 600
        log.append(rows)
    log.close()
    report = score_report(node.region, config.monitoring, day=LAST)
    write_summary(summarise(report, judged_at=AS_OF), node.data_dir / "monitoring" / SUMMARY_FILE)
    drifted = Verdict("customer_transactions:avg_ticket", LAST, 0.5, 0.3, 0.2, "own trailing 14 clean days", DRIFT, None)
    TriggerLog(node.data_dir / "monitoring" / "triggers.db").record("MY", [drifted])


def _models(node: RegionNode, config) -> None:  # type: ignore[no-untyped-def]
    """What the serving node's follower leaves on disk (its own DeploymentStore): full v1 and canary_5 v2
    loaded, v3 refused by the region's policy, canary_25 rolled back from v2 to nothing; and the
    outcome evidence the region released for both stages, per home city (``publish_evidence``)."""
    import numpy as np

    from fedstore.federation.statistics import segment_spec
    from fedstore.federation.training import LinearModel, schema_hash, training_spec
    from fedstore.regions.outcomes import write_judged
    from fedstore.regions.publishing.publish import publish_evidence
    from fedstore.serving.deployed import DeployedModel, Deployment, DeploymentStore, Refused

    spec = training_spec("fraud_scoring")
    linear = LinearModel("fraud_scoring", spec.features, tuple(0.1 for _ in spec.features), -3.0)

    def version(stage: str, v: int) -> DeployedModel:
        return DeployedModel(stage, "fraud_lda", v, linear, schema_hash(spec), ("MY", "SG"),
                             (f"my-training-{v}", f"sg-training-{v}"), {"auc": 0.8}, {"MY": 1.5, "SG": 1.0})

    store = DeploymentStore(node.data_dir)
    at = AS_OF - timedelta(days=3)
    first = Deployment("MY", (version("canary_25", 2), version("full", 1)), at)
    second = Deployment("MY", (version("canary_5", 2), version("full", 1)), at + timedelta(days=1))
    store.record_changes(None, first)
    store.record_changes(first, Deployment("MY", (version("full", 1),), at + timedelta(hours=12)))  # rolled back
    store.record_changes(Deployment("MY", (version("full", 1),), at + timedelta(hours=12)), second)
    store.save(second)
    store.record_refusal("MY", Refused("canary_5", "fraud_lda", 3, "rule sources: fraud_lda v3 learnt from TH, which "
                                       "region MY's deployment policy does not allow (MY, SG)"))
    # judged outcomes of every customer for both stages: v1 ranks nine in ten right, v2 six in ten
    profile = pq.read_table(node.data_dir / "sources" / "customer_profile.parquet", columns=["customer_id", "home_city"])
    city_of = dict(zip((str(c) for c in profile["customer_id"].to_pylist()), profile["home_city"].to_pylist()))
    entities = sorted(city_of)
    rng = np.random.default_rng(8)
    label = rng.random(len(entities)) < 0.5
    judged_at = AS_OF - timedelta(days=2)
    rows = []
    for stage, v in (("full", 1), ("canary_5", 2)):
        wrong = rng.random(len(entities)) < (0.1 if v == 1 else 0.4)  # ranked on the wrong side
        score = np.where(label ^ wrong, 1.0, -1.0) + rng.normal(0, 0.2, len(entities))
        rows += [{"entity": e, "outcome_at": judged_at, "label": int(y), "prediction_id": f"p-{stage}-{e}",
                  "predicted_at": judged_at - timedelta(hours=1), "model": "fraud_lda", "version": v, "stage": stage,
                  "score": float(x)} for e, y, x in zip(entities, label, score)]
    write_judged(node.data_dir, pa.Table.from_pylist(rows))
    for stage, v in (("full", 1), ("canary_5", 2)):
        publish_evidence(node.region, config.privacy, name="fraud_lda", version=v, stage=stage, epsilon=1.0,
                         segment=segment_spec("home_city"), segment_of=city_of, end=AS_OF, days=30, now=AS_OF)


@pytest.fixture(scope="module")
def serving_metrics() -> str:
    """The serving node's own metrics (serving/metrics.py) on a real Prometheus endpoint: 1,000 lookups,
    30 answered from the snapshot while the breaker was open, 2 refused."""
    import grpc
    from prometheus_client import start_http_server

    from fedstore.serving.metrics import ServingMetrics

    metrics = ServingMetrics("MY")
    for _ in range(998):
        metrics.answered("GetOnlineFeatures", grpc.StatusCode.OK, 0.001)
    for _ in range(2):
        metrics.answered("GetOnlineFeatures", grpc.StatusCode.INVALID_ARGUMENT, 0.001)
    for _ in range(30):
        metrics.fallback_answer("breaker_open")
    httpd, _ = start_http_server(0, addr="127.0.0.1", registry=metrics.registry)
    yield f"http://127.0.0.1:{httpd.server_port}/metrics"
    httpd.shutdown()


@pytest.fixture(scope="module")
def server(region, serving_metrics) -> str:
    root, _ = region
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedstore.cli", "--config", str(root / "fedstore.yaml"), "region", "dashboard",
         "--region", "MY", "--port", "0", "--as-of", AS_OF.isoformat(), "--serving-metrics", serving_metrics,
         "--serving-metrics", "http://127.0.0.1:9/metrics"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=root,
        env={**os.environ, **TOKENS, "PYTHONPATH": str(ROOT)})
    try:
        url = _announced_url(proc, deadline=time.monotonic() + 240)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _announced_url(proc: subprocess.Popen, deadline: float, scheme: str = "http") -> str:
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            line = proc.stdout.readline()
            found = re.search(scheme + r"://[\d.]+:\d+/", line)
            if found:
                return found.group(0)
        if proc.poll() is not None:
            raise AssertionError(f"the dashboard exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
    raise AssertionError("the dashboard did not announce its address")


@pytest.fixture(scope="module")
def browser():
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.fail("chromium and chromedriver are needed: `make chromium` installs Debian's packages")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or ""
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900",
                "--disable-extensions", "--no-first-run"):
        options.add_argument(arg)
    # the essentials must work without script: the browser runs with JavaScript off
    options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or ""))
    try:
        yield driver
    finally:
        driver.quit()


def _sign_in(driver, url: str, token: str) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    driver.delete_all_cookies()
    driver.get(url)
    assert driver.title.endswith("sign in")
    driver.get_log("browser")  # drained: the sign-in page comes with its 401, as it should
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(driver, 60).until(lambda d: d.find_elements(By.TAG_NAME, "h1") and not d.find_elements(By.ID, "token")
                                    or "not allowed" in d.title)


# outside pytest's temporary directories, which keep only the last few sessions of this machine's user
SCREENSHOTS = Path(os.environ.get("FEDSTORE_SCREENSHOTS", ROOT / "build" / "dashboard-screenshots"))


def _screenshot(driver, name: str) -> Path:  # type: ignore[no-untyped-def]
    """A full-page screenshot for review, under ``SCREENSHOTS`` (``$FEDSTORE_SCREENSHOTS``, else build/)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / name
    height = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["contentSize"]["height"]
    driver.set_window_size(1200, int(height) + 100)
    driver.save_screenshot(str(path))
    driver.set_window_size(1200, 900)
    print(f"screenshot: {path}")
    return path


def _status(url: str, token: str | None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_every_chart_has_a_title_labelled_axes_and_a_verdict_in_a_browser_without_script(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    _sign_in(browser, server, TOKENS["T_MY_AUDIT"])
    assert browser.title == "Region MY dashboard"
    figures = browser.find_elements(By.CSS_SELECTOR, "figure.chart")
    # freshness, lookups, budget, the models' evidence, one per catalog feature, one per scored model
    # version and stage (v1 full, shadows v2 and v3) and the shadows'
    from fedstore.federation.statistics import CATALOG
    assert len(figures) == 4 + len(CATALOG) + 3 + 1
    for fig in figures:
        title = fig.find_element(By.CSS_SELECTOR, "h3.chart-title").text
        verdict = fig.find_element(By.CSS_SELECTOR, "p.verdict").text
        assert title and verdict.endswith("."), (title, verdict)
        svg_text = "".join(fig.find_element(By.TAG_NAME, "svg").get_attribute("textContent").split())
        for label in [fig.get_attribute("data-x-label"), *fig.get_attribute("data-y-label").split("; ")]:
            assert "".join(label.split()) in svg_text, (title, label)  # the axis label is drawn in the chart
        assert "normalband" in svg_text, title  # every chart shows what is normal
    page = browser.page_source
    assert "<script" not in page  # nothing needs script
    freshness = browser.find_element(By.ID, "freshness").find_element(By.CSS_SELECTOR, "p.verdict").text
    assert freshness.startswith("All 3 views fresh")  # the job ended its window 6 h before the page's clock
    budget = browser.find_element(By.ID, "budget").find_element(By.CSS_SELECTOR, "p.verdict").text
    assert budget.startswith("ε 3.50 of 4 spent in 2026-04 (88%)")
    spent = browser.find_element(By.ID, "budget").get_attribute("textContent")
    assert "stats: ε 1.00 in 1 release" in spent and "eval: ε 2.00 in 2 releases" in spent  # on what
    _the_models_and_their_evidence(browser)
    _the_models_scores_and_their_alerts(browser)
    refusals = browser.find_element(By.XPATH, "//h2[text()='Recent refusals']/following-sibling::table[1]").text
    assert "failed (customer_profile, customer_transactions, driver_performance)" in refusals
    assert "example" not in refusals and "customer_id=" not in refusals  # the error's words stay on the host
    assert "Eid al-Fitr" in browser.find_element(By.ID, "drift-txn_count_7d").get_attribute("textContent")
    # every shown day's rule, in runs: the runs cover the 90 days shown, with every rule of the last 14 days
    runs = browser.find_elements(By.XPATH, "//figure[@id='drift-txn_count_7d']/following-sibling::details[2]//tbody/tr")
    cells = [r.find_elements(By.TAG_NAME, "td") for r in runs]
    assert sum(int(c[3].get_attribute("textContent")) for c in cells) == 90
    recent = browser.find_elements(By.XPATH, "//figure[@id='drift-txn_count_7d']/following-sibling::details[1]//tbody/tr")
    assert len(recent) == 14
    assert {r.find_elements(By.TAG_NAME, "td")[4].get_attribute("textContent") for r in recent} <= \
        {c[2].get_attribute("textContent") for c in cells}
    lookups = browser.find_element(By.ID, "lookups").find_element(By.CSS_SELECTOR, "p.verdict")
    assert lookups.text.startswith("1,000 lookups: 96.8% answered online, 3.0% from the snapshot, 0.2% refused")
    assert "alarm" in lookups.get_attribute("class")  # 3% from the snapshot: beyond the normal 1%
    assert "Serving metrics not read from http://127.0.0.1:9/metrics" in browser.page_source  # said, not hidden
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    _screenshot(browser, "region-MY.png")


def _the_models_and_their_evidence(browser) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    evidence = browser.find_element(By.ID, "evidence")
    drawn = evidence.find_element(By.TAG_NAME, "svg").get_attribute("textContent")
    for part in ("full · fraud_lda v1 · whole region", "canary_5 · fraud_lda v2 · whole region"):
        assert part in drawn, part
    assert "home_city=" in drawn  # per segment
    verdict = evidence.find_element(By.CSS_SELECTOR, "p.verdict")
    # v2 ranks six in ten right, v1 nine in ten: the canary is worse than full beyond both bounds (by ~3 SE)
    assert "below the full version's lower bound (canary_5 · fraud_lda v2 · whole region" in verdict.text, verdict.text
    assert "alarm" in verdict.get_attribute("class")
    models_text = browser.find_element(By.XPATH, "//h2[starts-with(text(), 'Models deployed here')]"
                                                 "/following-sibling::table[1]").text
    whole = [float(x) for x in re.findall(r"whole region AUC (\d\.\d+)", models_text)]
    assert len(whole) == 2 and whole[0] < whole[1] <= 1.0, models_text  # canary_5's row first, then full's
    models = browser.find_element(By.XPATH, "//h2[starts-with(text(), 'Models deployed here')]"
                                            "/following-sibling::table[1]").text
    assert "canary_5 fraud_lda v2 MY (1.50), SG (1.00) 2 auc 0.800 released 2026-04-21 06:00 UTC (ε 1.00)" in models
    changes = browser.find_element(By.XPATH, "//h3[text()='Stage changes and rollbacks']/following-sibling::table[1]")
    rows = [r.text for r in changes.find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert rows[0].endswith("canary_5 empty fraud_lda v2 loaded")
    assert any(r.endswith("canary_25 fraud_lda v2 empty rolled back") for r in rows), rows
    refused = browser.find_element(By.XPATH, "//h3[text()='Models this region refused to run']"
                                             "/following-sibling::table[1]").text
    assert "fraud_lda v3" in refused and "rule sources: fraud_lda v3 learnt from TH" in refused


def _the_models_scores_and_their_alerts(browser) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    served = browser.find_element(By.ID, "scores-0")
    assert served.find_element(By.CSS_SELECTOR, "h3.chart-title").text.startswith("fraud_lda v1 (full): daily mean score")
    verdict = served.find_element(By.CSS_SELECTOR, "p.verdict")
    assert verdict.text.startswith(f"Drifting on {LAST}: PSI"), verdict.text
    assert "alarm" in verdict.get_attribute("class")
    assert "Eid al-Fitr" in served.get_attribute("textContent")  # the festivals shaded as on the features' charts
    shadows = browser.find_element(By.ID, "scores-shadows")
    words = shadows.find_element(By.CSS_SELECTOR, "p.verdict")
    assert words.text.startswith(f"1 of 2 shadows disagree on {LAST}: fraud_lda v3 (shadow) vs fraud_lda v1 (full)")
    assert f"fraud_lda v3 (shadow) vs fraud_lda v1 (full): {DISAGREE_DAYS} of {SCORED_DAYS} judged days" in words.text
    assert "alarm" in words.get_attribute("class")
    drawn = shadows.find_element(By.TAG_NAME, "svg").get_attribute("textContent")
    assert "fraud_lda v2 (shadow) vs fraud_lda v1 (full)" in drawn and "fraud_lda v3 (shadow) vs" in drawn
    # score alerts listed as score alerts, the features' retraining triggers apart from them
    alerts = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
              for tr in browser.find_elements(By.CSS_SELECTOR, "#score-alerts tbody tr")]
    assert ["shadow disagrees", "fraud_lda v3 (shadow) vs fraud_lda v1 (full)"] in [a[:2] for a in alerts], alerts
    assert ["score drift", "fraud_lda v1 (full)"] in [a[:2] for a in alerts], alerts
    assert {a[0] for a in alerts} == {"score drift", "shadow disagrees"}
    triggers = browser.find_element(By.ID, "retraining-triggers").text
    assert "avg_ticket" in triggers and "fraud_lda" not in triggers and "shadow" not in triggers


def test_a_credential_without_the_audit_role_for_the_region_is_refused(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    assert _status(server, None)[0] == 401
    assert _status(server, "not-a-token")[0] == 401
    code, body = _status(server, TOKENS["T_MY_LOOKUP"])
    assert code == 403 and "lacks role audit" in body and "<svg" not in body
    code, body = _status(server, TOKENS["T_SG_AUDIT"])
    assert code == 403 and "not region MY" in body and "<svg" not in body
    assert _status(server, TOKENS["T_MY_AUDIT"])[0] == 200
    _sign_in(browser, server, TOKENS["T_MY_LOOKUP"])  # the browser's way in refuses the same
    assert browser.title.endswith("not allowed")
    assert not browser.find_elements(By.CSS_SELECTOR, "figure.chart")
    browser.get(server)  # no session was granted
    assert browser.title.endswith("sign in")
    _screenshot(browser, "refused.png")


def test_the_page_holds_no_entity_id_of_the_region(server, region):
    _, node = region
    code, html = _status(server, TOKENS["T_MY_AUDIT"])
    assert code == 200
    ids: set[str] = set()
    for fv in node.feature_views():
        keys = [c.name for c in fv.entity_columns]
        path = node.data_dir / "sources" / f"{fv.name}.parquet"
        for key in keys:
            ids.update(str(v) for v in pq.read_table(path, columns=[key])[key].to_pylist())
    assert len(ids) >= 300  # customers (drivers share their id range)
    from fedstore.serving.prediction_log import read_predictions

    logged = set(read_predictions(node.data_dir).column("entity").to_pylist())
    assert len(logged & ids) >= 250  # the prediction log the score panel summarises holds them too
    # the ledger does hold some (the refused job's error quotes example rows): the page must not
    ledger_error = next(j.error for j in node.ledger.jobs() if j.status == "failed")
    assert ledger_error and any(i in ledger_error for i in ids)
    numbers = set(re.findall(r"\d+", html))
    assert not numbers & ids, sorted(numbers & ids)[:5]


# --- over TLS --------------------------------------------------------------------------------

def _spki_pin(cert: Path) -> str:
    """Chromium's pin of a certificate: base64 of the SHA-256 of its public key (SPKI)."""
    import base64
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = x509.load_pem_x509_certificate(cert.read_bytes()).public_key()
    return base64.b64encode(hashlib.sha256(key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).digest()
                            ).decode()


def test_a_region_with_tls_serves_its_page_over_https_to_a_browser_that_pins_its_certificate(region, pki, tmp_path):
    """The region's serving certificate (here the suite's CA-signed one for 127.0.0.1) also guards its page."""
    import ssl

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    root, node = region
    raw = yaml.safe_load((root / "fedstore.yaml").read_text())
    raw["regions"][0]["data_dir"] = str(node.data_dir)
    raw["regions"][0]["serving"] = {"tls": {"cert": str(pki.centre.cert), "key": str(pki.centre.key)}}
    (tmp_path / "tls.yaml").write_text(yaml.safe_dump(raw))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedstore.cli", "--config", str(tmp_path / "tls.yaml"), "region", "dashboard",
         "--region", "MY", "--port", "0", "--as-of", AS_OF.isoformat()],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=root,
        env={**os.environ, **TOKENS, "PYTHONPATH": str(ROOT)})
    try:
        url = _announced_url(proc, deadline=time.monotonic() + 240, scheme="https")
        trusted = ssl.create_default_context(cafile=str(pki.ca))
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKENS['T_MY_AUDIT']}"})
        with urllib.request.urlopen(request, timeout=30, context=trusted) as answer:
            assert answer.status == 200 and "Region MY" in answer.read().decode()
        with pytest.raises(urllib.error.URLError) as untrusted:  # a client without the suite's CA: no page
            urllib.request.urlopen(url, timeout=30)
        assert isinstance(untrusted.value.reason, ssl.SSLCertVerificationError)
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP on the port: nothing served
            urllib.request.urlopen(url.replace("https://", "http://"), timeout=30)

        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or ""
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900",
                    f"--ignore-certificate-errors-spki-list={_spki_pin(pki.centre.cert)}"):
            options.add_argument(arg)
        options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or ""))
        try:
            _sign_in(driver, url, TOKENS["T_MY_AUDIT"])
            assert driver.title == "Region MY dashboard" and driver.current_url.startswith("https://")
            assert driver.find_elements(By.CSS_SELECTOR, "figure.chart")
            assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            _screenshot(driver, "region-MY-https.png")
        finally:
            driver.quit()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_centre_on_mutual_tls_serves_its_page_over_https_with_its_own_certificate(pki, tmp_path):
    """The browser has no client certificate: the page asks for none, and the token is the check."""
    import ssl

    from border import with_mtls

    os.environ.update(CENTRE_TOKENS)
    raw = yaml.safe_load(_config(tmp_path).read_text())
    raw["aggregator"] = {"address": "127.0.0.1:0", "data_dir": str(tmp_path / "centre")}
    raw["auth"]["tokens"].append({"name": "centre-audit", "regions": ["*"], "roles": ["audit"],
                                  "secret_env": "T_CENTRE_AUDIT"})
    (tmp_path / "fedstore.yaml").write_text(yaml.safe_dump(with_mtls(raw, pki)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedstore.cli", "--config", str(tmp_path / "fedstore.yaml"), "aggregator", "serve",
         "--dashboard-port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
        env={**os.environ, **TOKENS, **CENTRE_TOKENS, "PYTHONPATH": str(ROOT)})
    try:
        url = _announced_url(proc, deadline=time.monotonic() + 120, scheme="https")
        trusted = ssl.create_default_context(cafile=str(pki.ca))
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {CENTRE_TOKENS['T_CENTRE_AUDIT']}"})
        with urllib.request.urlopen(request, timeout=30, context=trusted) as answer:
            assert answer.status == 200 and "<h1>Centre</h1>" in answer.read().decode()
        with pytest.raises(urllib.error.HTTPError) as refused:  # TLS is no credential: the role still decides
            urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": "Bearer " + TOKENS["T_MY_LOOKUP"]}),
                                   timeout=30, context=trusted)
        assert refused.value.code == 403
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# --- the centre ------------------------------------------------------------------------------

CENTRE_TOKENS = {"T_CENTRE_AUDIT": "centre-audit-secret", "T_MY_AUDIT": "my-audit-secret",
                 "T_MY_PUBLISH": "my-publish-secret"}


@pytest.fixture(scope="module")
def centre(tmp_path_factory) -> Path:
    """A centre's store and registry with submissions of MY and SG (one held) and a model in MY's shadow
    stage, then its `aggregator serve --dashboard-port 0` process."""
    import numpy as np

    from fedstore.aggregator.registry.model import ModelCandidate
    from fedstore.aggregator.registry.store import ModelRegistry
    from fedstore.aggregator.intake.submission_wire import parse_submission
    from fedstore.aggregator.store import SubmissionStore
    from fedstore.federation.statistics import CATALOG
    from honest_releases import exact_region, features_submission

    root = tmp_path_factory.mktemp("centre")
    os.environ.update(CENTRE_TOKENS)
    raw = yaml.safe_load(_config(root).read_text())
    raw["aggregator"] = {"plaintext": True, "address": "127.0.0.1:0"}
    raw["auth"]["tokens"].append({"name": "centre-audit", "regions": ["*"], "roles": ["audit"],
                                  "secret_env": "T_CENTRE_AUDIT"})
    raw["auth"]["tokens"].append({"name": "my-publish", "regions": ["MY"], "roles": ["publish"],
                                  "secret_env": "T_MY_PUBLISH"})
    (root / "fedstore.yaml").write_text(yaml.safe_dump(raw))
    config = load_config(root / "fedstore.yaml")
    store = SubmissionStore(root / "centre" / "aggregator.duckdb")
    # the running centre's page is of its own month, as its intake charges: these are received now
    now = datetime.now(timezone.utc)
    rng = np.random.default_rng(3)
    for region, held in (("MY", None), ("MY", None), ("SG", "rule quarantine: txn_count_7d mean out of line")):
        sub = features_submission(region, exact_region(rng, 2000), epsilon=1.0, now=now)
        assert sub is not None
        store.accept(parse_submission(sub), epsilon=sub.accounting.epsilon, delta=0.0, period=now.strftime("%Y-%m"), accepted_at=now,
                     epsilon_limit=config.privacy.epsilon_per_month, quarantine_why=held)
    store.close()
    registry = ModelRegistry(root / "centre" / "registry.db", config)
    registry.register(ModelCandidate(
        name="fraud_lda", strategy="lda", feature_service="fraud_scoring", features=("customer_profile:kyc_level",),
        schema_hash="ab" * 32, parameters={"weights": [0.5], "intercept": -3.0, "link": "logistic"},
        submissions=("my-training-1",), epsilon_by_region={"MY": 1.0}), who="trainer")
    registry.promote("fraud_lda", 1, "MY", "shadow", who="ops-my", why="first look")
    registry.record_readiness("fraud_lda", 1, {"documentation": "https://wiki.example/fraud_lda",
                                               "escalation_contact": "fraud-oncall"}, who="ops")
    from fedstore.aggregator.registry.policy import PolicyRefused
    with pytest.raises(PolicyRefused):  # SG never ran it in shadow: the policy refuses, on the audit trail
        registry.promote("fraud_lda", 1, "SG", "full", who="ops-sg", why="skip the ramp")
    assert len(CATALOG) > 0
    return root


@pytest.fixture(scope="module")
def centre_url(centre) -> str:
    """The page of a running centre that has just refused a submission whose accounting lies."""
    import grpc

    from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2_grpc
    from honest_releases import exact_region, features_submission

    proc = subprocess.Popen(
        [sys.executable, "-m", "fedstore.cli", "--config", str(centre / "fedstore.yaml"), "aggregator", "serve",
         "--dashboard-port", "0", "--dashboard-refresh", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=centre,
        env={**os.environ, **TOKENS, **CENTRE_TOKENS, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        centre_address = re.search(r"127\.0\.0\.1:\d+", proc.stdout.readline()).group(0)  # type: ignore[union-attr]
        url = _announced_url(proc, deadline=time.monotonic() + 120)
        import numpy as np

        lie = features_submission("MY", exact_region(np.random.default_rng(5), 2000), epsilon=1.0,
                                  now=datetime.now(timezone.utc))
        assert lie is not None
        lie.accounting.epsilon = 0.01  # claims less than its noise costs
        with grpc.insecure_channel(centre_address) as channel, pytest.raises(grpc.RpcError) as refused:
            aggregator_pb2_grpc.AggregatorStub(channel).Submit(
                lie, metadata=(("authorization", f"Bearer {CENTRE_TOKENS['T_MY_PUBLISH']}"),), timeout=30)
        assert "rule accounting" in refused.value.details()
        time.sleep(2.5)  # the page is rebuilt every second
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_the_centre_page_beside_a_running_centre(centre, centre_url, browser, tmp_path):
    from selenium.webdriver.common.by import By

    from fedstore.federation.statistics import CATALOG

    assert _status(centre_url, CENTRE_TOKENS["T_MY_AUDIT"])[0] == 403  # a region's auditor: not every region's
    assert _status(centre_url, TOKENS["T_MY_LOOKUP"])[0] == 403
    _sign_in(browser, centre_url, CENTRE_TOKENS["T_CENTRE_AUDIT"])
    assert browser.title == "Centre dashboard"
    figures = browser.find_elements(By.CSS_SELECTOR, "figure.chart")
    assert len(figures) == 2
    for fig in figures:
        assert fig.find_element(By.CSS_SELECTOR, "h3.chart-title").text
        assert fig.find_element(By.CSS_SELECTOR, "p.verdict").text.endswith(".")
        svg_text = "".join(fig.find_element(By.TAG_NAME, "svg").get_attribute("textContent").split())
        for label in (fig.get_attribute("data-x-label"), fig.get_attribute("data-y-label")):
            assert "".join(label.split()) in svg_text
        assert "normalband" in svg_text
    text = browser.find_element(By.TAG_NAME, "body").text
    assert "quarantine holds some from SG" in text and "nothing yet from" not in text.split("SG.")[0]
    assert "rule quarantine: txn_count_7d mean out of line" in text
    assert "fraud_lda" in text and "MY: shadow" in text
    assert "MY accounting 1" in text  # the live intake's counter of the region and the rule the lie broke
    registry = browser.find_element(By.XPATH, "//h2[text()='Model registry']/following-sibling::table[1]")
    row = registry.find_element(By.CSS_SELECTOR, "tbody tr").text
    assert "MY (1.00); 1 submission" in row  # lineage
    assert "2 of 5: missing monitoring, rollback_procedure, retraining_trigger" in row  # the checklist
    assert row.endswith(" 1")  # one policy refusal
    assert "refused: rule" in text  # on the audit trail
    stats = browser.find_element(By.XPATH, "//h2[starts-with(text(), 'Global statistics')]"
                                           "/following-sibling::table[1]")
    rows = stats.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(rows) == len(CATALOG)  # MY's two releases merged; SG's held one left out
    assert all(" ± " in r.text and r.text.endswith(" MY") for r in rows), rows[0].text
    assert not [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    _screenshot(browser, "centre.png")


def test_the_standalone_centre_page_refuses_in_one_line_while_the_centre_runs(centre, centre_url):
    done = subprocess.run(
        [sys.executable, "-m", "fedstore.cli", "--config", str(centre / "fedstore.yaml"), "aggregator", "dashboard",
         "--port", "0"], capture_output=True, text=True, timeout=120, cwd=centre,
        env={**os.environ, **TOKENS, **CENTRE_TOKENS, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "aggregator serve --dashboard-port" in done.stderr


def test_bad_input_is_one_line(region, capsys, tmp_path):
    import socket

    from fedstore.cli import main

    root, _ = region
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["--config", str(root / "fedstore.yaml"), "region", "dashboard", "--region", "MY",
                     "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in err, err
    bare = yaml.safe_load((root / "fedstore.yaml").read_text())
    del bare["auth"]
    bare["regions"][0]["data_dir"] = str(root / "data" / "MY")
    (tmp_path / "bare.yaml").write_text(yaml.safe_dump(bare))
    code = main(["--config", str(tmp_path / "bare.yaml"), "region", "dashboard", "--region", "MY", "--port", "0"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "no auth.tokens" in err, err
    with pytest.raises(SystemExit) as usage:  # argparse's own one-line usage error
        main(["--config", str(root / "fedstore.yaml"), "region", "dashboard", "--region", "MY", "--port", "70000"])
    assert usage.value.code == 2 and "expected a port 0–65535" in capsys.readouterr().err


def test_a_failed_rebuild_keeps_the_last_page_and_says_it_is_old():
    """The page is served from memory: a rebuild that fails leaves the last good one, marked as old."""
    from fedstore.dashboard.access import DashboardAccess
    from fedstore.dashboard.app import PageCache, dashboard_app
    from fedstore.dashboard.serve import listen, serve_in_thread
    from fedstore.federation.config import TokenConfig
    from fedstore.federation.roles import Role
    from fedstore.federation.tokens import TokenBook

    os.environ.update(TOKENS)
    builds = iter(["<html><body>\n<h1>first</h1></body></html>"])

    def build() -> str:
        return next(builds)  # the second build raises StopIteration: a page that cannot be built

    cache = PageCache(build, refresh_seconds=3600)
    book = TokenBook((TokenConfig("my-audit", ("MY",), "T_MY_AUDIT", roles=frozenset({Role.AUDIT})),))
    sock = listen("127.0.0.1", 0)
    cache.start()
    server = serve_in_thread(dashboard_app(DashboardAccess(book, "MY"), cache, "Region MY"), sock)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
    try:
        code, html = _status(url, TOKENS["T_MY_AUDIT"])
        assert code == 200 and "first" in html and "earlier build" not in html
        cache.rebuild()
        code, html = _status(url, TOKENS["T_MY_AUDIT"])
        assert code == 200 and "first" in html and "This page is from an earlier build: the latest failed" in html
    finally:
        server.should_exit = True
        cache.stop()


def test_a_festival_day_that_is_not_judged_still_says_what_its_score_would_mean():
    """The issue's case: a PSI of 2.78 on a festival day without an earlier year is not passed off quietly."""
    import pandas as pd

    from fedstore.federation.statistics import CATALOG
    from fedstore.regions.monitoring.chart import FeatureSeries, plain_verdict
    from fedstore.regions.monitoring.drift import OK, SEASONAL, Verdict

    ref = CATALOG[0].ref
    days = [date(2026, 3, d) for d in (18, 19, 20)]
    verdicts = (Verdict(ref, days[0], 0.05, 0.1, 0.2, "own trailing 14 clean days", OK, None),
                Verdict(ref, days[1], 0.04, 0.1, 0.2, "own trailing 14 clean days", OK, None),
                Verdict(ref, days[2], 2.78, None, None, "Eid al-Fitr 2026: no earlier festival days to compare with",
                        SEASONAL, "Eid al-Fitr 2026"))
    line = plain_verdict(FeatureSeries(CATALOG[0], pd.Series(dtype=float), verdicts, 0.2))
    assert line.startswith("Not judged on 2026-03-20: Eid al-Fitr 2026 with no earlier festival to compare; PSI 2.78 "
                           "(that would be drift outside a festival)")
    assert line.endswith("0 of 3 judged days drifted in the last 3.")


def test_a_stage_change_is_a_rollback_only_when_its_version_leaves_the_region(tmp_path):
    """The follower's changes.jsonl as the region page reads it: moving up the ramp or replacing a version
    by a later one is not a rollback; going back to an earlier version, or to nothing, is."""
    from fedstore.dashboard.region_models import region_models
    from fedstore.federation.training import LinearModel, schema_hash, training_spec
    from fedstore.serving.deployed import DeployedModel, Deployment, DeploymentStore

    spec = training_spec("fraud_scoring")
    linear = LinearModel("fraud_scoring", spec.features, tuple(0.1 for _ in spec.features), -3.0)

    def deployment(hour: int, **stages: int) -> Deployment:
        return Deployment("MY", tuple(DeployedModel(stage, "fraud_lda", v, linear, schema_hash(spec), ("MY",), (), {})
                                      for stage, v in stages.items()), AS_OF + timedelta(hours=hour))

    store = DeploymentStore(tmp_path)
    steps = [deployment(0, full=1), deployment(1, canary_5=2, full=1), deployment(2, canary_25=2, full=1),
             deployment(3, full=2), deployment(4, canary_5=3, full=2), deployment(5, full=2),
             deployment(6, full=1)]
    for before, after in zip([None, *steps], steps):
        store.record_changes(before, after)
    seen = [(c.stage, c.before, c.after, c.rollback) for c in reversed(region_models(tmp_path, "MY").changes)]
    assert seen == [
        ("full", "", "fraud_lda v1", False),
        ("canary_5", "", "fraud_lda v2", False),
        ("canary_5", "fraud_lda v2", "", False), ("canary_25", "", "fraud_lda v2", False),  # moved up
        ("canary_25", "fraud_lda v2", "", False), ("full", "fraud_lda v1", "fraud_lda v2", False),  # promoted
        ("canary_5", "", "fraud_lda v3", False),
        ("canary_5", "fraud_lda v3", "", True),  # the canary rolled back: its stage emptied
        ("full", "fraud_lda v2", "fraud_lda v1", True),  # full back to the version before
    ]


def test_the_https_door_follows_a_rotated_certificate_without_a_restart(tmp_path):
    """As the gRPC doors do: a certificate replaced in place is served from the next handshake on."""
    import socket
    import ssl

    from cryptography import x509

    from fedstore.cli.dev_certificates import make_dev_pki
    from fedstore.dashboard.access import DashboardAccess
    from fedstore.dashboard.app import PageCache, dashboard_app
    from fedstore.dashboard.serve import listen, serve_in_thread
    from fedstore.federation.config import TokenConfig
    from fedstore.federation.roles import Role
    from fedstore.federation.tls import https_context
    from fedstore.federation.tokens import TokenBook

    old, new = (make_dev_pki(tmp_path / name, ["MY"], ca_name=f"{name} CA") for name in ("old", "new"))
    cert, key = tmp_path / "dashboard.pem", tmp_path / "dashboard-key.pem"
    cert.write_bytes(old.centre.cert.read_bytes())
    key.write_bytes(old.centre.key.read_bytes())
    os.environ.update(TOKENS)
    cache = PageCache(lambda: "<html><body><h1>page</h1></body></html>", refresh_seconds=3600)
    book = TokenBook((TokenConfig("my-audit", ("MY",), "T_MY_AUDIT", roles=frozenset({Role.AUDIT})),))
    sock = listen("127.0.0.1", 0)
    cache.start()
    server = serve_in_thread(dashboard_app(DashboardAccess(book, "MY"), cache, "Region MY"), sock,
                             https_context(cert, key))
    port = sock.getsockname()[1]

    def served_by() -> str:
        client = ssl.create_default_context()
        client.check_hostname, client.verify_mode = False, ssl.CERT_NONE  # which certificate, not whose
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                client.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).issuer.rfc4514_string()

    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert served_by() == "CN=old CA"
        key.write_bytes(new.centre.key.read_bytes())  # half a rotation: the old pair keeps serving
        assert served_by() == "CN=old CA"
        cert.write_bytes(new.centre.cert.read_bytes())
        assert served_by() == "CN=new CA"
        assert served_by() == "CN=new CA"
    finally:
        server.should_exit = True
        cache.stop()
