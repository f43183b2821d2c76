"""What every `fedstore` command shares, applied once to the whole parser tree.

- ``--version``;
- options of a command group (``--config``; ``registry --address``, ``--token-env``) are accepted
  after the subcommand too, where people put them (``fedstore region status --region MY --config x``);
- each help shows its defaults and ends with examples (`tests/test_cli.py` checks every command has
  them, and that every option says what it is for).

Exit status, for scripts: 0 done; 1 the command could not be done (one line on stderr says why: a
config, data, network or storage problem); 2 the command line itself was wrong (argparse's usage
error, or a value of the wrong form); 130 interrupted; 141 stdout closed early.
"""

from __future__ import annotations

import argparse
from importlib import metadata
from typing import Iterator

EXAMPLES: dict[str, tuple[str, ...]] = {
    "region generate": ("fedstore region generate --region MY --customers 100000 --days 30",),
    "region apply": ("fedstore region apply --region MY",),
    "region materialize": (
        "fedstore region materialize --region MY",
        "fedstore region materialize --region MY --incremental",
        "fedstore region materialize --region MY --views customer_transactions --quarantine",
    ),
    "region status": ("fedstore region status --region MY --jobs 10",),
    "region training-set": (
        "fedstore region training-set --region MY --entities entities.parquet "
        "--feature-service fraud_scoring --label is_fraud --out train.parquet",
        "fedstore region training-set --region MY --entities entities.parquet "
        "--feature-service fraud_scoring --out audit.parquet --consent mark",
    ),
    "region erase": (
        "fedstore region erase --region MY --entity customer_id=123",
        "fedstore region erase --region MY --entity customer_id=123 --check",
    ),
    "region datasets": ("fedstore region datasets --region MY",),
    "region explain": (
        "fedstore region explain --region MY --prediction 3f2a9c0e5b1d4e7f8a6b2c4d9e0f1a3b",
        "FEDSTORE_TOKEN=... fedstore region explain --region MY --prediction 3f2a… --promotions",
    ),
    "region outcomes": (
        "fedstore region outcomes --region MY --file chargebacks.parquet",
        "fedstore region outcomes --region MY --file labels.parquet --window-days 30",
    ),
    "region publish-evidence": (
        "fedstore region publish-evidence --region MY --model fraud_lda --version 2 --stage canary_5 --epsilon 1 "
        "--segment home_city",
    ),
    "region publish-stats": (
        "fedstore region publish-stats --region MY --epsilon 0.5",
        "fedstore region publish-stats --region MY --epsilon 1 --segment home_city",
    ),
    "region send-stats": (
        "FEDSTORE_TOKEN=... fedstore region send-stats --region MY",
        "fedstore region send-stats --region MY --token-env FEDSTORE_AGGREGATOR_TOKEN_MY",
    ),
    "region publish-training-stats": ("fedstore region publish-training-stats --region MY --epsilon 1",),
    "region secure-round": (
        "fedstore region secure-round --region MY --round secagg-<id> --token-env FEDSTORE_AGGREGATOR_TOKEN_MY",
        "fedstore region secure-round --region MY --join-open --days 30",
    ),
    "region evaluate": ("fedstore region evaluate --region MY --model-file model.json --epsilon 0.5",),
    "region drift": (
        "fedstore region drift --region MY",
        "fedstore region drift --region MY --baseline global --token-env FEDSTORE_AGGREGATOR_TOKEN_MY",
    ),
    "region score-drift": (
        "fedstore region score-drift --region MY",
        "fedstore region score-drift --region MY --date 2026-03-05 --model fraud_lda --dry-run",
        "fedstore region score-drift --region MY --rollback-canary --token-env FEDSTORE_TOKEN",
        "fedstore region score-drift --region MY --allow-empty --chart score-drift.png",
    ),
    "region dashboard": (
        "fedstore region dashboard --region MY --port 8080",
        "fedstore region dashboard --region MY --port 8080 --host 0.0.0.0 --days 60 --refresh 600",
    ),
    "aggregator dashboard": ("fedstore aggregator dashboard --port 8090",),
    "serve": ("fedstore serve --region MY", "fedstore serve --region MY --workers 2 --pin-cpus"),
    "aggregator serve": ("fedstore aggregator serve", "fedstore aggregator serve --address 0.0.0.0:50100",
                         "fedstore aggregator serve --dashboard-port 8090"),
    "aggregator open-round": (
        "fedstore aggregator open-round --regions MY,SG,ID --threshold 2 --epsilon 1 --token-env FEDSTORE_CENTRE_TOKEN",
        "fedstore aggregator open-round --feature-service fraud_scoring --regions MY,SG,ID,TH --threshold 3 "
        "--epsilon 0.5 --phase-seconds 300",
    ),
    "aggregator quarantine list": ("fedstore aggregator quarantine list --all --token-env FEDSTORE_CENTRE_TOKEN",),
    "aggregator quarantine accept": (
        "fedstore aggregator quarantine accept MY-features-<uuid> --why 'festival week, checked with MY ops'",
    ),
    "aggregator quarantine reject": ("fedstore aggregator quarantine reject MY-features-<uuid> --why 'double-counted'",),
    "train": (
        "fedstore train --token-env FEDSTORE_CENTRE_TOKEN",
        "fedstore train --strategy ridge --period 2026-11 --out model.json --token-env FEDSTORE_CENTRE_TOKEN",
    ),
    "registry list": ("fedstore registry list --token-env FEDSTORE_CENTRE_TOKEN",),
    "registry show": ("fedstore registry show fraud_scoring_lda 1",),
    "registry readiness": (
        "fedstore registry readiness fraud_lda 3 --item documentation=https://wiki/fraud_lda "
        "--item escalation_contact=risk-oncall",
    ),
    "registry promote": (
        "fedstore registry promote fraud_scoring_lda 1 --region MY --stage shadow --why 'first run' "
        "--token-env FEDSTORE_AGGREGATOR_TOKEN_MY",
    ),
    "registry rollback": ("fedstore registry rollback --region MY --stage canary_5 --why 'AUC fell'",),
    "registry audit": ("fedstore registry audit --region MY",),
    "registry deployment": ("fedstore registry deployment --region MY",),
    "retrain run": ("fedstore retrain run --epsilon 0.5",
                    "fedstore retrain run --epsilon 0.5 --end 2026-11-30 --days 30 --regions MY,SG"),
    "retrain flow": ("fedstore retrain flow --epsilon 0.5",
                     "fedstore retrain flow --epsilon 0.5 --serve --cron '0 3 1 * *'",
                     "fedstore retrain flow --epsilon 0.5 --trigger < trigger.json"),
    "retrain publish": ("fedstore retrain publish --region MY --epsilon 0.5 --days 30",),
    "retrain send": ("fedstore retrain send --region MY --epsilon 0.5 --days 30",),
    "retrain train": ("fedstore retrain train --epsilon 0.5 --days 30",),
    "retrain shadow": ("fedstore retrain shadow --region MY --epsilon 0.5 --days 30",
                       "fedstore retrain shadow --region SG --epsilon 0.5 --version 4"),
    "deploy k8s": ("fedstore deploy k8s --out deploy/k8s",
                   "fedstore deploy k8s --image registry.example/fedstore:1.0 --storage-class efs-sc"),
    "certs init": ("fedstore certs init --out certs", "fedstore certs init --out certs --host centre.example.org"),
    "demo": ("fedstore demo", "fedstore demo --customers 1500 --days 14 --end 2026-11-20"),
}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults after each option's help; the examples' lines kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.required or action.default in (None, "", False, [], ()) or "default" in text:
            return text  # nothing to add, or the help already says it in words
        return super()._get_help_string(action)


def version() -> str:
    try:
        return metadata.version("fedstore")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[
        tuple[tuple[str, ...], argparse.ArgumentParser, argparse.ArgumentParser | None]]:
    """Every (sub)command: its words, its parser, and the group parser it belongs to."""
    for action in parser._actions:  # argparse has no public walk of its tree
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield path + (name,), child, parser
                yield from commands(child, path + (name,))


def is_leaf(parser: argparse.ArgumentParser) -> bool:
    return not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)


def apply_conventions(root: argparse.ArgumentParser) -> argparse.ArgumentParser:
    root.add_argument("--version", action="version", version=f"fedstore {version()}")
    root.formatter_class = HelpFormatter
    tree = list(commands(root))
    inherited: dict[int, list[argparse.Action]] = {id(root): _group_options(root)}
    for path, parser, group in tree:
        parser.formatter_class = HelpFormatter
        assert group is not None
        # a group's options (and its own group's) are accepted after each of its subcommands
        own = _group_options(parser)
        inherited[id(parser)] = inherited.get(id(group), []) + own
        taken = {s for a in parser._actions for s in a.option_strings}
        for action in inherited[id(group)]:
            if not set(action.option_strings) & taken:
                text = action.help or ""
                if action.default not in (None, "", False) and "default" not in text:
                    text += f" (default: {action.default})"  # this copy's own default is SUPPRESS
                copy = parser.add_argument(*action.option_strings, dest=action.dest, choices=action.choices,
                                           metavar=action.metavar, help=text,
                                           default=argparse.SUPPRESS)  # absent here: the group's value stands
                copy.type = action.type
        if is_leaf(parser):
            lines = EXAMPLES.get(" ".join(path), ())
            if lines:
                parser.epilog = "examples:\n" + "\n".join(f"  {line}" for line in lines)
    return root


def _group_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Options with a value that a group parser defines for all of its subcommands."""
    if is_leaf(parser):
        return []
    return [a for a in parser._actions
            if a.option_strings and not isinstance(a, (argparse._HelpAction, argparse._VersionAction))
            and a.nargs is None and not isinstance(a, argparse._StoreConstAction)]
