"""`fedstore retrain run | flow | publish | send | train | shadow`: retraining from fresh statistics,
every step idempotent (`retraining.py`). `run` runs the steps here, in order; `flow` runs them as the
Prefect flow (the optional `orchestration` extra); the others run one step, for CronJobs and for an
operator resuming by hand. The same window and ε name the same run: rerunning skips what is done."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, date, datetime, time

from fedstore.federation import FederationConfig
from fedstore.federation.training import TRAINING_SPECS
from fedstore.cli.arguments import host_port, iso_date, positive_int
from fedstore.cli.retraining import (
    REFUSED,
    RetrainError,
    RetrainRun,
    StepOutcome,
    publish,
    run_all,
    send,
    shadow,
    train,
    trained_version,
    window_end,
)
from fedstore.regions.errors import RegionError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    retrain = sub.add_parser("retrain", help="retrain from fresh statistics: publish → send → train → shadow "
                                             "(each step idempotent: a rerun resumes)")
    cmds = retrain.add_subparsers(dest="retrain_command", required=True, metavar="COMMAND")
    texts = {
        "run": "every step, here, in order (no orchestrator)",
        "flow": "every step as a Prefect flow (pip install 'fedstore[orchestration]')",
        "publish": "one region's training statistics for the run's window (skipped when queued already or "
                   "without budget)",
        "send": "one region's outbox to the centre",
        "train": "train and register at the centre (the version already trained on this run, if any)",
        "shadow": "the run's version in shadow in one region (refusals by its policy are reported, not retried)",
    }
    for name, text in texts.items():
        p = cmds.add_parser(name, help=text)
        if name in ("run", "flow", "train"):
            p.add_argument("--regions", default="", help="comma-separated region codes (default: every region)")
        elif name == "shadow":
            p.add_argument("--region", required=True, help="region code to shadow the version in")
            p.add_argument("--regions", default="",
                           help="regions whose statistics of the run find the version (default: every region)")
            p.add_argument("--version", type=positive_int, default=None,
                           help="the version to shadow (default: the one trained on this run's statistics, or "
                                "where the regions' outboxes are out of sight, the latest of the name)")
        else:
            p.add_argument("--region", required=True, help="region code")
        p.add_argument("--epsilon", type=float, required=True, help="privacy budget each region's statistics spend")
        p.add_argument("--end", type=iso_date, default=None,
                       help="last day of the statistics' window (YYYY-MM-DD; default yesterday, UTC)")
        p.add_argument("--days", type=positive_int, default=30, help="window length in days, ending --end")
        p.add_argument("--feature-service", default=TRAINING_SPECS[0].feature_service, help="training spec")
        p.add_argument("--strategy", default="lda", help="lda (default) or ridge")
        p.add_argument("--name", default="", help="registry name (default: <feature service>_<strategy>)")
        p.add_argument("--address", type=host_port, default=None, help="aggregator host:port (default: from the config)")
        if name in ("run", "flow"):
            p.add_argument("--trigger", action="store_true",
                           help="read a retraining trigger (JSON, as monitoring.trigger_command gets it) from "
                                "standard input: the window ends on its last day")
        if name == "flow":
            p.add_argument("--serve", action="store_true",
                           help="stay running and start the flow on --cron (Prefect's scheduler); each run's "
                                "window ends the day before it starts")
            p.add_argument("--cron", default="0 3 * * 1", help="schedule for --serve (default Mondays 03:00)")
        p.set_defaults(handler=_HANDLERS[name])


def _run(config: FederationConfig, args: argparse.Namespace) -> RetrainRun:
    if not args.epsilon > 0:
        raise RegionError(f"--epsilon must be positive, got {args.epsilon}")
    last: date | None = args.end
    if getattr(args, "trigger", False):
        last = _trigger_day()
    end = window_end(datetime.combine(last, time(12), UTC) if last else None)
    if end > window_end():
        raise RegionError(f"the window would end {end:%Y-%m-%d}, after yesterday's close: not a complete day yet")
    return RetrainRun(end=end, epsilon=args.epsilon, days=args.days, feature_service=args.feature_service,
                      strategy=args.strategy, name=args.name, address=args.address)


def _trigger_day() -> date:
    text = sys.stdin.read()
    try:
        return date.fromisoformat(json.loads(text)["last_day"])
    except (ValueError, KeyError, TypeError) as e:
        raise RegionError(f"--trigger: standard input is not a retraining trigger ({e})") from None


def _regions(config: FederationConfig, text: str) -> list[str]:
    codes = [c.strip() for c in text.split(",") if c.strip()] or list(config.codes)
    return [config.region(c).code for c in codes]  # an unknown code: one line, before any step


def _print(outcomes: list[StepOutcome]) -> None:
    for o in outcomes:
        print(o.line())


def cmd_run(config: FederationConfig, args: argparse.Namespace) -> None:
    run = _run(config, args)
    print(f"retrain: statistics {run.start:%Y-%m-%d} … {run.end:%Y-%m-%d} (exclusive), ε={run.epsilon:g} per region")
    _summary(run_all(config, _regions(config, args.regions), run))


def _summary(outcomes: list[StepOutcome]) -> None:
    _print(outcomes)
    refused = [o.region for o in outcomes if o.status == REFUSED]
    version = next((o.version for o in outcomes if o.step == "train"), 0)
    print(f"retrain: v{version} registered; shadow refused by the policy of {', '.join(refused)}" if refused
          else f"retrain: v{version} registered and in shadow wherever it was asked")


def cmd_flow(config: FederationConfig, args: argparse.Namespace) -> None:
    try:
        from fedstore.cli import retraining_flow
    except ImportError as e:
        raise RetrainError(f"Prefect is not installed ({e}): pip install 'fedstore[orchestration]', or run the same "
                           "steps with `fedstore retrain run`") from None
    run = _run(config, args)
    regions = _regions(config, args.regions)
    if config.source is None:
        raise RetrainError("the flow needs the config as a file (--config)")
    if args.serve:
        print(f"retrain: flow {retraining_flow.FLOW_NAME} on {args.cron!r}; Ctrl-C stops", flush=True)
        retraining_flow.serve_on_schedule(str(config.source), regions, run, args.cron)
        return
    outcomes = retraining_flow.retrain_flow(str(config.source), regions, run.to_dict())
    _summary([StepOutcome(**o) for o in outcomes])


def cmd_publish(config: FederationConfig, args: argparse.Namespace) -> None:
    _print([publish(config, args.region, _run(config, args))])


def cmd_send(config: FederationConfig, args: argparse.Namespace) -> None:
    _print([send(config, args.region, _run(config, args))])


def cmd_train(config: FederationConfig, args: argparse.Namespace) -> None:
    _print([train(config, _regions(config, args.regions), _run(config, args))])


def cmd_shadow(config: FederationConfig, args: argparse.Namespace) -> None:
    run = _run(config, args)
    version = args.version or trained_version(config, _regions(config, args.regions), run, args.region)
    _print([shadow(config, args.region, run, version)])


_HANDLERS = {"run": cmd_run, "flow": cmd_flow, "publish": cmd_publish, "send": cmd_send, "train": cmd_train,
             "shadow": cmd_shadow}
