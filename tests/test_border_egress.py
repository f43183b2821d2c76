"""The region's own border (``regions/publishing/egress.py``): what the centre would refuse on arrival
and the region can judge by itself never leaves it.

Two ways in: the attacker's corpus of ``test_border_corpus`` run through the region's check (a unit:
no centre needed), and tampered outbox files sent by the real outbox to a real centre over mutual
TLS, one per category, where the centre must not even be called.
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import datetime, timezone

import numpy as np
import pytest
import yaml
from honest_releases import exact_region, features_body
from test_border_corpus import BASES, CASES, Case, honest

from border import IDENTIFIERS, with_mtls

from fedstore.aggregator.intake.metrics import AggregatorMetrics
from fedstore.aggregator.intake.server import build_server
from fedstore.federation import load_config
from fedstore.federation.border_rules import MODEL_NAME, PERIOD
from fedstore.federation.channels import centre_link
from fedstore.federation.personal_data import identifier_in
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2 as pb
from fedstore.regions.publishing.egress import EgressRefused, check_egress
from fedstore.regions.publishing.outbox import Backoff, send_outbox

NOW = datetime(2026, 11, 15, 12, tzinfo=timezone.utc)
TOKEN = "egress-my-secret"

# the rules whose every case the region judges alone (names, identifiers, finiteness, cohorts,
# histograms, consent, who it is); the others need the centre's clock, store, registry or noise model
REGION_RULES = {"catalog", "segment", "personal_data", "finite", "minimum_cohort", "histogram_bins", "edges",
                "consent", "stage", "identity", "submission_id", "kind"}


def _judged_at_region(case: Case, request: pb.Submission) -> bool:
    if case.rule == "period":  # its shape only: which month the centre is in is the centre's to say
        return PERIOD.fullmatch(request.period) is None
    if case.rule == "model":  # its shape only: whether the model is registered is the centre's to say
        return MODEL_NAME.fullmatch(request.evaluation.model_name) is None
    return case.rule in REGION_RULES


_AT_REGION = [(c, r) for c in CASES if c.cert != "operator"
              for r in [c.make()] if isinstance(r, pb.Submission) and _judged_at_region(c, r)]


def test_the_region_judges_most_of_the_corpus():
    assert len(_AT_REGION) >= 100


@pytest.mark.parametrize("attack,request_", _AT_REGION, ids=[c.name for c, _ in _AT_REGION])
def test_what_the_region_can_judge_never_leaves_it(attack, request_):
    region = attack.cert or attack.token  # the outbox it would leave from
    with pytest.raises(EgressRefused) as refused:
        check_egress(request_, region=region, minimum_cohort=10)
    assert refused.value.rule and str(refused.value).startswith(f"rule {refused.value.rule}:")


def test_honest_releases_of_every_kind_leave():
    """No false refusal: the corpus's honest starting points, each with a consent basis of a fresh
    random id (an id's hex digits are random, never screened as an identifier), pass."""
    for kind in BASES:
        region = BASES[kind].region
        for _ in range(50):
            sub = honest(kind, region)
            purpose = "evaluation" if sub.HasField("evaluation") else "global_statistics"
            sub.consent.CopyFrom(pb.ConsentBasis(purpose=purpose, consent_required=True, snapshot_id=uuid.uuid4().hex))
            check_egress(sub, region=region, minimum_cohort=10)


@pytest.mark.parametrize("what,value", IDENTIFIERS, ids=[w for w, _ in IDENTIFIERS])
def test_every_identifier_is_named_by_its_kind_never_quoted(what, value):
    found = identifier_in(f"see {value} please")
    assert found and value not in found


@pytest.mark.parametrize("text", [
    "AUC 0.71 vs 0.69 after the 2026-11-15 incident", "promote fraud_scoring_lda v3 to canary_25",
    "replaces my-stats-0123456789ab4def8123456789abcdef", "48 h in stage; 1,234,567 rows", "risk-oncall",
    "fedstore registry rollback --stage full", "drift on customer_transactions:txn_count_7d at 10:30 UTC",
    "version 1.2.3, ε = 0.5, δ = 1e-6", "https://wiki.example/runbooks/fraud-rollback", "Kuala Lumpur", "Ｐｅｎａｎｇ",
    "fraud_lda_20261115",
])
def test_what_operators_honestly_write_is_no_identifier(text):
    assert identifier_in(text) == ""


# ------------------------------------------------------------------ through the real outbox and wire


@pytest.fixture(scope="module")
def centre(tmp_path_factory, pki):
    tmp = tmp_path_factory.mktemp("egress")
    mp = pytest.MonkeyPatch()
    mp.setenv("EGRESS_TOKEN_MY", TOKEN)
    raw = {
        "federation": {"name": "egress"},
        "regions": [{"code": "MY", "jurisdiction": "Malaysia", "law": "PDPA-MY", "timezone": "Asia/Kuala_Lumpur",
                     "data_dir": "data/MY", "online_store": {"type": "sqlite"}, "serving_address": "127.0.0.1:53100"}],
        "auth": {"tokens": [{"name": "region-my", "secret_env": "EGRESS_TOKEN_MY", "regions": ["MY"],
                             "roles": ["publish"]}]},
        "privacy": {"epsilon_per_month": 100.0, "minimum_cohort": 10},
    }
    (tmp / "fed.yaml").write_text(yaml.safe_dump(with_mtls(raw, pki)))
    config = load_config(tmp / "fed.yaml")
    metrics = AggregatorMetrics()
    # the centre's clock is the real one: the outbox dates its files by it
    server, port, store = build_server(config, tmp / "centre.duckdb", "127.0.0.1:0", metrics=metrics)
    server.start()
    yield config, f"127.0.0.1:{port}", store, metrics
    server.stop(1).wait()
    store.close()
    mp.undo()


def _calls(metrics: AggregatorMetrics) -> float:
    """Calls the centre admitted from region MY's credential (the access guard counts each one)."""
    for name in ("fedstore_centre_calls_by_caller_total", "fedstore_centre_calls_by_caller"):
        value = metrics.registry.get_sample_value(name, {"caller": "region-my"})
        if value is not None:
            return value
    return 0.0


_rng = np.random.default_rng(7)


def _honest_body() -> dict:
    now = datetime.now(timezone.utc)
    exact = exact_region(_rng, 5_000)
    body = features_body("MY", exact, epsilon=1.0, now=now, segments={"Penang": exact_region(_rng, 2_000)})
    assert body is not None
    return json.loads(json.dumps(body))  # as read back from the outbox file


def _feature(body: dict, ref: str) -> dict:
    return next(f for f in body["features"] if f["ref"] == ref)


def _single_rows(body: dict) -> None:
    f = _feature(body, "customer_profile:account_age_days")
    f["histogram"] = [1] * len(f["histogram"])
    f["count"] = len(f["histogram"])


def _other_region(body: dict) -> None:
    body["region"] = "SG"
    body["submission_id"] = "sg-stats-" + uuid.uuid4().hex


TAMPERED = [
    # (category, change to an honest outbox file, the rule the region names)
    ("personal data in a name", lambda b: b["segments"][0].update(value=f"Penang {IDENTIFIERS[0][1]}"), "personal_data"),
    ("a disguised name", lambda b: b["segments"][0].update(value="Ｐｅｎａｎｇ"), "segment"),
    ("a count below the minimum cohort", lambda b: b["features"][0].update(count=3), "minimum_cohort"),
    ("a histogram of single rows", _single_rows, "histogram_bins"),
    ("a NaN", lambda b: b["features"][0].update(sum=math.nan), "finite"),
    ("an identifier as the consent snapshot id",
     lambda b: b.update(consent={"purpose": "global_statistics", "consent_required": True,
                                 "snapshot_id": "880101145566" + "0" * 20}), "consent"),
    ("an id that tells the time", lambda b: b.update(submission_id="my-stats-20261115T120000Z"), "submission_id"),
    ("an oversized payload", lambda b: b["suppressed"].extend(["customer_profile:kyc_level"] * 20_000), "size"),
]


@pytest.mark.parametrize("category,change,rule", TAMPERED, ids=[t[0] for t in TAMPERED])
def test_a_tampered_outbox_file_is_refused_at_the_region_and_never_sent(centre, tmp_path, category, change, rule):
    config, address, store, metrics = centre
    body = _honest_body()
    change(body)
    (tmp_path / f"{body['submission_id']}.json").write_text(json.dumps(body))
    before = (store.stored_counts(), _calls(metrics))
    [(sid, outcome)] = send_outbox(tmp_path, centre_link(config, "MY", address), TOKEN, backoff=Backoff(attempts=1))
    assert outcome.startswith(f"rejected: rule {rule}:") and outcome.endswith("(refused at the region's border: not sent)"), outcome
    assert (store.stored_counts(), _calls(metrics)) == before  # the centre was not even called
    kept = json.loads((tmp_path / f"{body['submission_id']}.json").read_text())
    assert kept["status"] == "rejected" and kept["rejection"].startswith(f"rule {rule}:")


@pytest.mark.parametrize("case", ["another region's release in this region's outbox",
                                  "the centre's own certificate sending a region's outbox"])
def test_a_release_for_another_sender_stays_queued_and_unsent(centre, tmp_path, case):
    """Who would send it, not what it holds: kept (queued), never sent over the wrong link."""
    config, address, store, metrics = centre
    body = _honest_body()
    if case.startswith("another region"):
        _other_region(body)
    (tmp_path / f"{body['submission_id']}.json").write_text(json.dumps(body))
    link = centre_link(config, None if "centre" in case else "MY", address)
    before = (store.stored_counts(), _calls(metrics))
    [(_, outcome)] = send_outbox(tmp_path, link, TOKEN, backoff=Backoff(attempts=1))
    assert outcome.startswith("queued: rule identity:") and (store.stored_counts(), _calls(metrics)) == before
    assert json.loads((tmp_path / f"{body['submission_id']}.json").read_text())["status"] == "queued"


def test_an_honest_file_is_sent_through_the_same_border(centre, tmp_path):
    config, address, store, metrics = centre
    body = _honest_body()
    (tmp_path / f"{body['submission_id']}.json").write_text(json.dumps(body))
    before = _calls(metrics)
    assert send_outbox(tmp_path, centre_link(config, "MY", address), TOKEN) == [(body["submission_id"], "sent")]
    assert _calls(metrics) == before + 1 and store.receipt(body["submission_id"]) is not None


@pytest.mark.parametrize("argv", [
    ["registry", "promote", "fraud_scoring_lda", "1", "--region", "MY", "--stage", "shadow", "--why"],
    ["registry", "rollback", "--region", "MY", "--stage", "shadow", "--why"],
    ["registry", "readiness", "fraud_scoring_lda", "1", "--item"],
    ["aggregator", "quarantine", "accept", "my-stats-" + "0" * 32, "--why"],
], ids=["promote", "rollback", "readiness", "quarantine"])
def test_the_cli_refuses_an_identifier_before_it_reaches_for_the_centre(capsys, tmp_path, argv):
    """The free text an operator types is screened where it is typed: a one-line usage error naming the
    rule, before the config is read or a link made (no centre exists here)."""
    from fedstore.cli import main

    text = f"complaint from {IDENTIFIERS[0][1]}"
    with pytest.raises(SystemExit) as exit_:
        main(["--config", str(tmp_path / "absent.yaml"), *argv, f"escalation_contact={text}"
              if argv[-1] == "--item" else text])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "rule personal_data:" in err and IDENTIFIERS[0][1] not in err.split("rule")[-1]
