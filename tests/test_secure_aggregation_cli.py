"""The secure-aggregation commands end to end: `fedstore aggregator open-round`, `fedstore region
secure-round` (three regions, each with its own generated Feast data) and `fedstore train`, in
process, against a real centre over gRPC and mutual TLS on loopback. A round completes and the
centre trains on the stored sum; a region that never joins leaves the round below its threshold and
the others fall back to releases alone, which the centre accepts; a centre restart forgets its
rounds, and a region waiting on one falls back at once instead of waiting out its deadline; a
region never gives a window twice, and a sum beside a member's fall-back is trained on once."""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import pytest
import yaml

from border import with_mtls
from fedstore.aggregator.intake.validation import receipt_period
from fedstore.federation import load_config
from fedstore.federation.training import training_spec
from secure_federation import CODES, END, WINDOW, Centre, cli, forget_releases, generate, raw_federation, set_tokens
from secure_federation import open_round, take_part

SPEC = training_spec("fraud_scoring")
NAME = "secround"  # the tokens are SECROUND_TOKEN_<region> and SECROUND_TOKEN_CENTRE


@pytest.fixture(scope="module")
def federation(tmp_path_factory, pki):
    """Three regions' generated data, once for the module; each test has its own centre and budgets."""
    tmp = tmp_path_factory.mktemp("secround")
    mp = pytest.MonkeyPatch()
    set_tokens(mp, NAME)
    (tmp / "fed.yaml").write_text(yaml.safe_dump(with_mtls(raw_federation(NAME, first_port=55400,
                                                                         region_roles=["publish"]), pki)))
    config = load_config(tmp / "fed.yaml")
    generate(config)
    yield config
    mp.undo()


@pytest.fixture()
def centre(federation, tmp_path):
    forget_releases(federation, "privacy_budget.db", "outbox", "secure_rounds.db")  # each test's start empty
    c = Centre(federation, tmp_path / "centre" / "aggregator.duckdb")
    try:
        yield c
    finally:
        c.close()


@pytest.mark.slow
def test_three_regions_sum_through_the_cli_and_train_registers_a_model_from_the_sum(centre, capsys):
    config = centre.config
    round_id = open_round(config, centre.address, capsys, name=NAME, threshold=3, phase=60)
    # ID is told the id; MY and SG join the open round that invites them
    codes, threads = take_part(config, centre.address, ("ID",), ["--round", round_id], name=NAME)
    more, more_threads = take_part(config, centre.address, ("MY", "SG"), ["--join-open"], name=NAME)
    for t in threads + more_threads:
        t.join(120)
    assert {**codes, **more} == {"ID": 0, "MY": 0, "SG": 0}
    out = capsys.readouterr().out
    assert out.count(f"round {round_id} done") == 3 and "falling back" not in out
    rows = centre.store.latest_training(SPEC.feature_service, None)
    assert {r.region for r in rows} == {"ID+MY+SG"}  # the sum alone: no region's own release
    period = receipt_period(datetime.now(timezone.utc))
    for code in CODES:  # each region charged once, at the round's ε
        assert centre.store.epsilon_spent(code, period) == pytest.approx(4.0, rel=1e-6)
    assert cli(config, "train", "--token-env", "SECROUND_TOKEN_CENTRE", "--address", centre.address) == 0
    out = capsys.readouterr().out
    assert "trained fraud_scoring_lda" in out and "id+my+sg-train-" in out  # the sum in the model's lineage


@pytest.mark.slow
def test_a_region_that_never_joins_leaves_the_round_below_threshold_and_the_others_fall_back(centre, capsys):
    config = centre.config
    round_id = open_round(config, centre.address, capsys, name=NAME, threshold=3, phase=3)
    # ID never joins
    codes, threads = take_part(config, centre.address, ("MY", "SG"), ["--round", round_id], name=NAME)
    for t in threads:
        t.join(120)
    assert codes == {"MY": 0, "SG": 0}
    out = capsys.readouterr().out
    assert out.count("falling back to a release alone at full noise (ε=4)") == 2 and "below the threshold" in out
    rows = centre.store.latest_training(SPEC.feature_service, None)
    assert {r.region for r in rows} == {"MY", "SG"}  # each release alone, accepted; no sum
    period = receipt_period(datetime.now(timezone.utc))
    for code in ("MY", "SG"):  # abandoned before any masked input: only the release alone is charged
        assert centre.store.epsilon_spent(code, period) == pytest.approx(4.0, rel=1e-6)
    assert centre.store.epsilon_spent("ID", period) == 0.0


@pytest.mark.slow
def test_a_region_waiting_on_a_round_a_restarted_centre_forgot_falls_back_at_once(centre, capsys, monkeypatch):
    from fedstore.aggregator.intake.secure_rounds import SecureRounds

    advertised, waiting = threading.Event(), threading.Event()
    real_advertise, real_view = SecureRounds.advertise, SecureRounds.view

    def advertise(self, *args):  # the real steps; the test only learns that they happened
        answer = real_advertise(self, *args)
        advertised.set()
        return answer

    def view(self, *args):
        answer = real_view(self, *args)
        if advertised.is_set():
            waiting.set()  # a poll after its keys went in: the region waits on the round
        return answer

    monkeypatch.setattr(SecureRounds, "advertise", advertise)
    monkeypatch.setattr(SecureRounds, "view", view)
    config = centre.config
    # a long phase: without the fix the region waits out the centre's 600 s deadline or its own 120 s
    round_id = open_round(config, centre.address, capsys, name=NAME, threshold=2, phase=600)
    codes, threads = take_part(config, centre.address, ("MY",), ["--round", round_id], name=NAME)
    assert waiting.wait(60)  # MY has sent its keys and waits for the others (SG and ID never come)
    centre.restart()  # the rounds lived in the old process's memory
    threads[0].join(60)
    assert not threads[0].is_alive(), "the region still waits on a round the centre no longer knows"
    assert codes == {"MY": 0}
    out = capsys.readouterr().out
    assert "no longer knows" in out and "falling back" in out
    rows = centre.store.latest_training(SPEC.feature_service, None)
    assert {r.region for r in rows} == {"MY"}  # the fall-back release, accepted by the restarted centre


def _run(config, capsys, *argv: str) -> tuple[int, str]:
    try:
        code = cli(config, *argv)
    except SystemExit as e:  # argparse's own usage errors
        code = int(e.code or 0)
    return code, capsys.readouterr().err


def test_mistakes_are_one_line_with_their_exit_status_and_charge_nothing(centre, capsys, monkeypatch):
    config, address = centre.config, centre.address
    centre_token = ["--token-env", "SECROUND_TOKEN_CENTRE", "--address", address]
    my = ["--region", "MY", "--token-env", "SECROUND_TOKEN_MY", "--address", address, *WINDOW]
    monkeypatch.delenv("SECROUND_UNSET", raising=False)
    for argv, status, words in [
        (["aggregator", "open-round", "--regions", "MY,SG", "--threshold", "0", "--epsilon", "1", *centre_token], 2,
         "--threshold"),
        (["aggregator", "open-round", "--regions", "MY,SG", "--threshold", "2", "--epsilon", "-1", *centre_token], 2,
         "ε must be a positive number"),
        (["aggregator", "open-round", "--regions", "MY,SG", "--threshold", "2", "--epsilon", "1",
          "--phase-seconds", "nan", *centre_token], 2, "--phase-seconds"),
        (["aggregator", "open-round", "--regions", "MY,XX", "--threshold", "2", "--epsilon", "1", *centre_token], 1,
         "rule regions"),
        (["aggregator", "open-round", "--regions", "MY,SG", "--threshold", "3", "--epsilon", "1", *centre_token], 1,
         "threshold"),
        # a region's token may not open a round (the train role's)
        (["aggregator", "open-round", "--regions", "MY,SG", "--threshold", "2", "--epsilon", "1",
          "--token-env", "SECROUND_TOKEN_MY", "--address", address], 1, "PERMISSION_DENIED"),
        (["aggregator", "open-round", "--regions", "MY,SG", "--threshold", "2", "--epsilon", "1",
          "--token-env", "SECROUND_UNSET", "--address", address], 1, "SECROUND_UNSET is not set"),
        (["region", "secure-round", *my], 2, "one of the arguments --round --join-open is required"),
        (["region", "secure-round", *my, "--round", "secagg-x", "--join-open"], 2, "not allowed with"),
        (["region", "secure-round", *my, "--join-open"], 1, "no round open for keys invites region 'MY'"),
        (["region", "secure-round", *my, "--round", "secagg-nope"], 1, "no round 'secagg-nope' invites region 'MY'"),
    ]:
        code, err = _run(config, capsys, *argv)
        assert code == status, (argv, err)
        assert status == 2 or err.count("\n") == 1, (argv, err)  # exit 1: one line (2: argparse's usage too)
        assert words in err and "Traceback" not in err, (argv, err)
    # nothing was opened, charged or queued
    code, err = _run(config, capsys, "region", "secure-round", *my, "--join-open")
    assert code == 1
    assert not (config.region("MY").data_dir / "outbox").exists()
    assert centre.store.epsilon_spent("MY", receipt_period(datetime.now(timezone.utc))) == 0.0


@pytest.mark.slow
def test_a_window_is_given_once_and_a_sum_beside_a_members_fall_back_trains_counting_it_once(centre, capsys):
    from fedstore.regions.publishing.round_journal import SENT, RoundJournal

    config = centre.config
    period = receipt_period(datetime.now(timezone.utc))
    # ID never joins: out after 4 s
    round_id = open_round(config, centre.address, capsys, name=NAME, threshold=2, phase=4)
    codes, threads = take_part(config, centre.address, ("MY", "SG"), ["--round", round_id], name=NAME)
    for t in threads:
        t.join(120)
    assert codes == {"MY": 0, "SG": 0}
    out = capsys.readouterr().out
    assert out.count(f"round {round_id} done") == 2
    [summed] = centre.store.latest_training(SPEC.feature_service, None)[:1]
    assert summed.region == "MY+SG"

    # MY runs again for the same window, into a new round: nothing given, nothing charged
    second = open_round(config, centre.address, capsys, name=NAME, threshold=2, phase=60)
    codes, threads = take_part(config, centre.address, ("MY",), ["--join-open"], name=NAME)
    threads[0].join(60)
    assert codes == {"MY": 0}
    out = capsys.readouterr().out
    assert f"is already in the centre's sum {summed.submission_id} (round {round_id}); nothing sent or charged again" \
        in out and second not in out
    assert centre.store.epsilon_spent("MY", period) == pytest.approx(4.0, rel=1e-6)

    # the centre restarts right after storing a sum whose end MY never learnt (as if it had stopped
    # before the DONE arrived): the restarted centre has forgotten the round, so MY falls back
    journal = RoundJournal(config.region("MY").data_dir / "secure_rounds.db")
    mine = journal.find(SPEC.feature_service, summed_window_start(), summed_window_end())
    assert mine is not None and mine.round_id == round_id
    journal.record(mine.feature_service, summed_window_start(), summed_window_end(), round_id=round_id,
                   epsilon=mine.epsilon, state=SENT, submission_id="", at=datetime.now(timezone.utc))
    journal.close()
    centre.restart()
    codes, threads = take_part(config, centre.address, ("MY",), ["--round", round_id], name=NAME)
    threads[0].join(60)
    assert codes == {"MY": 0}
    out = capsys.readouterr().out
    assert "the centre no longer knows it" in out and "falling back" in out
    regions = {r.region for r in centre.store.latest_training(SPEC.feature_service, None)}
    assert regions == {"MY+SG", "MY"}  # the sum and MY's own release, both stored
    assert centre.store.epsilon_spent("MY", period) == pytest.approx(8.0, rel=1e-6)  # both charged, honestly
    # and once more: the fall-back is in the journal, nothing is released a third time
    codes, threads = take_part(config, centre.address, ("MY",), ["--round", round_id], name=NAME)
    threads[0].join(60)
    assert codes == {"MY": 0} and "was already released alone as my-train-" in capsys.readouterr().out
    assert centre.store.epsilon_spent("MY", period) == pytest.approx(8.0, rel=1e-6)

    # training counts MY once: from the sum (it also holds SG), and says so in plain words
    assert cli(config, "train", "--token-env", "SECROUND_TOKEN_CENTRE", "--address", centre.address) == 0
    out = capsys.readouterr().out
    assert "trained fraud_scoring_lda" in out and f"lineage: {summed.submission_id}" in out
    assert "not trained on: MY's own release my-train-" in out and \
        f"MY is already in the secure-aggregation sum {summed.submission_id} (MY+SG)" in out


def summed_window_end() -> datetime:
    return END  # WINDOW's end: a whole day already


def summed_window_start() -> datetime:
    from datetime import timedelta

    return END - timedelta(days=14)
