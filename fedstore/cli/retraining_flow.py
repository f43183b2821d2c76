"""The retraining steps (`retraining.py`) as a Prefect flow: publish in each region → send → train →
shadow in every region whose policy allows it. Prefect is optional (`pip install fedstore[orchestration]`);
without it the same steps run as `fedstore retrain run` or one step at a time.

Each task calls the step function and nothing else, so the flow, the CLI and the CronJobs cannot
drift. Prefect's cache is off (``NO_CACHE``): a rerun after a crash skips done steps because the
steps read the outbox, the budget ledger and the registry, which a crash cannot roll back.

Triggers: a drift episode's hook (``monitoring.trigger_command``) runs `fedstore retrain flow
--trigger`, whose window ends on the trigger's last day; a schedule is `fedstore retrain flow --serve
--cron "…"` (Prefect's own scheduler, in that process).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from fedstore.cli import retraining as steps
from fedstore.federation import load_config
from fedstore.federation.config import FederationConfig

FLOW_NAME = "fedstore-retrain"


def _config(config_path: str) -> FederationConfig:
    return load_config(config_path)


# network steps retry once (a centre restarting); publish does not: it spends budget, and a rerun of
# the flow finds what it queued
@task(cache_policy=NO_CACHE, task_run_name="publish-{region}")
def publish_task(config_path: str, region: str, run: dict[str, Any]) -> dict[str, Any]:
    return asdict(steps.publish(_config(config_path), region, steps.RetrainRun.from_dict(run)))


@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2, task_run_name="send-{region}")
def send_task(config_path: str, region: str, run: dict[str, Any]) -> dict[str, Any]:
    return asdict(steps.send(_config(config_path), region, steps.RetrainRun.from_dict(run)))


@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2, task_run_name="train")
def train_task(config_path: str, regions: list[str], run: dict[str, Any]) -> dict[str, Any]:
    return asdict(steps.train(_config(config_path), regions, steps.RetrainRun.from_dict(run)))


@task(cache_policy=NO_CACHE, retries=1, retry_delay_seconds=2, task_run_name="shadow-{region}")
def shadow_task(config_path: str, region: str, run: dict[str, Any], version: int) -> dict[str, Any]:
    return asdict(steps.shadow(_config(config_path), region, steps.RetrainRun.from_dict(run), version))


@flow(name=FLOW_NAME, retries=0, validate_parameters=False)
def retrain_flow(config_path: str, regions: list[str], run: dict[str, Any]) -> list[dict[str, Any]]:
    """One retraining run; returns every step's outcome (``StepOutcome`` as a dict), in order."""
    run = steps.RetrainRun.from_dict(run).to_dict()  # a scheduled run's window fixed once, at its start
    # one region after another: two cores, and each region's node is a process of its own in production
    out = [publish_task(config_path, r, run) for r in regions]
    out += [send_task(config_path, r, run) for r in regions]
    trained = train_task(config_path, regions, run)
    out.append(trained)
    out += [shadow_task(config_path, r, run, trained["version"]) for r in regions]
    return out


def serve_on_schedule(config_path: str, regions: list[str], run: steps.RetrainRun, cron: str) -> None:
    """Run the flow on ``cron`` from this process until stopped (Prefect's scheduler)."""
    retrain_flow.serve(name="scheduled", cron=cron,
                       parameters={"config_path": config_path, "regions": regions, "run": {**run.to_dict(), "end": None}})
