"""A secure-aggregation round carries each member's consent basis (issue 30): three regions' masked
inputs each send the basis their plain training release would carry, the centre checks it (rule
consent) and records it per member on the stored sum, training carries it into the registered
version, and promote in a region whose policy requires the basis judges it per member. All in
process over real gRPC and mutual TLS on loopback, with the CLI a region and an operator run."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pytest
import yaml

from border import with_mtls
from secure_federation import CODES, END, Centre, cli, forget_releases, generate, open_round, raw_federation
from secure_federation import set_tokens, take_part, token_env
from test_consent import write_consent

from fedstore.aggregator.errors import Rejected
from fedstore.aggregator.intake.secure_rounds import OpenRequest, SecureRounds
from fedstore.aggregator.store import SubmissionStore
from fedstore.aggregator.submission import ConsentClaim
from fedstore.federation import load_config
from fedstore.federation.secure_aggregation import MaskedInput
from fedstore.federation.tokens import Caller

NAME = "secbasis"  # the tokens are SECBASIS_TOKEN_<region> and SECBASIS_TOKEN_CENTRE
GATED = {"required": ["global_statistics"], "default": "allow"}  # opt-out: those who withdrew are left out


def _raw(pki, ungated: tuple[str, ...]) -> dict:
    return with_mtls(raw_federation(NAME, first_port=55440, region_roles=["publish", "promote", "registry-read"],
                                    region=lambda c: {} if c in ungated else {"consent": GATED},
                                    deployment_policy={"MY": {"require_consent_basis": ["global_statistics"]}}), pki)


@pytest.fixture(scope="module")
def federation(tmp_path_factory, pki):
    """Three regions' generated data (each with a consent file: one customer withdrew statistics),
    once for the module, under two configs: every region's law requires consent for statistics, or
    SG's does not."""
    tmp = tmp_path_factory.mktemp("secbasis")
    mp = pytest.MonkeyPatch()
    set_tokens(mp, NAME)
    (tmp / "gated.yaml").write_text(yaml.safe_dump(_raw(pki, ())))
    (tmp / "sg_ungated.yaml").write_text(yaml.safe_dump(_raw(pki, ("SG",))))
    config = load_config(tmp / "gated.yaml")
    generate(config, lambda node: write_consent(
        node.data_dir, [(1, "global_statistics", END - timedelta(days=60), END - timedelta(days=30))]))
    yield {"gated": config, "sg_ungated": load_config(tmp / "sg_ungated.yaml")}
    mp.undo()


def _round_train_promote(config, tmp_path, capsys) -> tuple[Centre, int, str]:
    """A round of the three regions over the CLI, training on its sum, then promote in MY to shadow:
    the centre (still running, for the caller's checks), promote's exit status and its stderr."""
    forget_releases(config, "privacy_budget.db", "secure_rounds.db")  # each test's budgets and journals start empty
    centre = Centre(config, tmp_path / "centre" / "aggregator.duckdb")
    try:
        round_id = open_round(config, centre.address, capsys, name=NAME, threshold=3, phase=60)
        codes, threads = take_part(config, centre.address, CODES, ["--round", round_id], name=NAME)
        for t in threads:
            t.join(120)
        assert codes == {"ID": 0, "MY": 0, "SG": 0}
        assert capsys.readouterr().out.count(f"round {round_id} done") == 3
        assert cli(config, "train", "--token-env", token_env(NAME, "centre"), "--address", centre.address) == 0
        assert "id+my+sg-train-" in capsys.readouterr().out
        code = cli(config, "registry", "promote", "fraud_scoring_lda", "1", "--region", "MY", "--stage", "shadow",
                   "--why", "first run", "--token-env", token_env(NAME, "MY"), "--address", centre.address)
        return centre, code, capsys.readouterr().err
    except BaseException:
        centre.close()
        raise


@pytest.mark.slow
def test_a_sum_of_members_with_consent_is_promoted_where_the_policy_requires_the_basis(federation, tmp_path,
                                                                                         capsys):
    config = federation["gated"]
    centre, code, err = _round_train_promote(config, tmp_path, capsys)
    try:
        assert code == 0, err
        (row,) = {r.submission_id: r for r in centre.store.latest_training("fraud_scoring", None)}.values()
        assert row.region == "ID+MY+SG" and row.consent is None  # no basis for the sum as a whole: per member
        assert set(row.member_consent) == set(CODES)
        model = _registered(centre)
        assert model.source_regions == ("ID+MY+SG",)
        for c in CODES:
            b = model.candidate.consent_basis[c]
            assert (b.purpose, b.consent_required) == ("global_statistics", True)
            assert b == row.member_consent[c]
            # the region keeps what the id points to (the records' fingerprint) and the round's id
            kept = [json.loads(p.read_text()) for p in
                    (config.region(c).data_dir / "consent" / "releases").glob(f"{c.lower()}-secagg-*.json")]
            assert [k["snapshot_id"] for k in kept] == [b.snapshot_id] and kept[0]["records"]["present"]
            assert kept[0]["round_id"].startswith("secagg-")
    finally:
        centre.close()


@pytest.mark.slow
def test_promote_refuses_a_sum_whose_member_released_without_consent_for_the_purpose(federation, tmp_path,
                                                                                      capsys):
    centre, code, err = _round_train_promote(federation["sg_ungated"], tmp_path, capsys)
    try:
        assert code == 1
        assert "rule consent_basis" in err and "SG (its law does not make global_statistics need consent" in err
        assert "ID (" not in err and "MY (" not in err  # only the member that lacks it is named
        assert len(err.strip().splitlines()) == 1
        assert not _registered(centre).candidate.consent_basis["SG"].consent_required
    finally:
        centre.close()


def _registered(centre: Centre):
    from fedstore.aggregator.registry.store import ModelRegistry

    return ModelRegistry(centre.path.parent / "registry.db", centre.config).get("fraud_scoring_lda", 1)


def test_a_masked_inputs_basis_is_checked_as_a_plain_releases_before_any_charge(tmp_path, pki):
    """Rule consent on a masked input: a basis for another purpose, or a snapshot id that is not a
    random UUID's hex, is refused before the region's budget is charged or its input kept."""
    (tmp_path / "fed.yaml").write_text(yaml.safe_dump(_raw(pki, ())))
    config = load_config(tmp_path / "fed.yaml")
    store = SubmissionStore(tmp_path / "aggregator.duckdb")
    try:
        rounds = SecureRounds(config, store, lambda: END)
        caller = Caller("centre", ("*",))
        r = rounds.open(OpenRequest("fraud_scoring", CODES, 3, 4.0, 60.0), caller)
        for bad, why in [(ConsentClaim("evaluation", True, "a" * 32), "rests on consent for global_statistics"),
                         (ConsentClaim("global_statistics", True, "../../x"), "32 lower-case hex digits")]:
            with pytest.raises(Rejected) as e:
                rounds.masked(r.state.params.round_id, MaskedInput("ID", np.zeros(r.state.params.length, np.uint64)),
                              1.0, 1.0, 4.0, Caller("region-id", ("ID",)), bad)
            assert e.value.rule == "consent" and why in str(e.value)
        assert store.stored_counts()["submissions"] == 0
    finally:
        store.close()
