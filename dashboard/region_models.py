"""What a region serves and what its outcomes say of it: the models per stage (the serving node's saved
deployment), the outcome evidence the region released for each (noisy histograms per segment from its
outbox, turned into AUC with bounds exactly as the centre does), the follower's refusals and the
changes of each stage it loaded, rollbacks among them.

The files are the serving node's (``serving/deployed.py`` writes ``models/deployment.json``,
``refusals.jsonl`` and ``changes.jsonl``); the dashboard may not import ``serving`` (import
contract), so their JSON is read here, read-only. Everything read is an aggregate: coefficients'
lineage, noisy released counts, rule texts — never a prediction or an entity.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from fedstore.aggregator.training.metrics import auc_with_uncertainty
from fedstore.federation.traffic import STAGES

MODELS_DIR = "models"


@dataclass(frozen=True)
class PartEvidence:
    part: str  # "whole region" or "<dimension>=<value>"
    auc: float
    lower: float
    upper: float
    outcomes: float  # the released (noisy) count of judged outcomes
    positives: float


@dataclass(frozen=True)
class StageModel:
    stage: str
    name: str
    version: int
    source_regions: tuple[str, ...]
    epsilon_by_region: dict[str, float]
    submissions: int  # lineage: how many anonymised submissions it was trained from
    metrics: dict[str, float]  # this region's own evaluation, as the registry sent it
    evidence: tuple[PartEvidence, ...]  # the latest release for this version at this stage
    suppressed: tuple[str, ...]  # segments below the minimum cohort after noise: not released
    evidence_at: str  # when that release was made ("" when none)
    evidence_epsilon: float


@dataclass(frozen=True)
class StageChange:
    when: str
    stage: str
    before: str  # "fraud_lda v2" or "" (the stage was empty)
    after: str
    rollback: bool  # the version left the region for an older one or none: what a rollback does


@dataclass(frozen=True)
class ModelRefusal:
    when: str
    stage: str
    model: str
    reason: str  # the region's rule and its words: "rule sources: …"


@dataclass(frozen=True)
class RegionModels:
    fetched_at: str  # when the serving node last loaded its deployment ("" when it never did)
    stages: tuple[StageModel, ...]  # in stage order
    changes: tuple[StageChange, ...]  # most recent first
    refusals: tuple[ModelRefusal, ...]  # most recent first


def region_models(data_dir: Path, region: str, *, recent: int = 20) -> RegionModels:
    directory = data_dir / MODELS_DIR
    deployment = _json(directory / "deployment.json") or {}
    releases = _evidence_releases(data_dir / "outbox")
    order = {s: i for i, s in enumerate(STAGES)}
    stages = tuple(sorted((_stage_model(m, releases) for m in deployment.get("models", [])),
                          key=lambda m: order.get(m.stage, len(order))))
    return RegionModels(_minute(deployment.get("fetched_at", "")), stages,
                        tuple(reversed(_changes(directory / "changes.jsonl")[-recent:])),
                        tuple(reversed(_refusals(directory / "refusals.jsonl", region)[-recent:])))


def _stage_model(m: dict[str, Any], releases: dict[tuple[str, int, str], dict[str, Any]]) -> StageModel:
    name, version, stage = str(m["name"]), int(m["version"]), str(m["stage"])
    release = releases.get((name, version, stage))
    evidence: tuple[PartEvidence, ...] = ()
    suppressed: tuple[str, ...] = ()
    if release is not None:
        e = release["evaluation"]
        dimension = e.get("segment_dimension", "")
        parts = {"whole region": e["counts"], **{f"{dimension}={g['value']}": g["counts"] for g in e.get("segments", [])}}
        # the centre's seed (intake/steps.py): the page's bounds are the registry's for the same release
        seed = int.from_bytes(hashlib.sha256(release["submission_id"].encode()).digest()[:8], "big")
        evidence = tuple(_part(part, counts, float(e["noise_scale"]), seed) for part, counts in parts.items())
        suppressed = tuple(f"{dimension}={v}" for v in e.get("suppressed_segments", []))
    return StageModel(stage, name, version, tuple(m.get("source_regions", ())),
                      {k: float(v) for k, v in m.get("epsilon_by_region", {}).items()}, len(m.get("submissions", ())),
                      {k: float(v) for k, v in m.get("metrics", {}).items()}, evidence, suppressed,
                      _minute(release["created_at"]) if release else "",
                      float(release["accounting"]["epsilon"]) if release else 0.0)


def _part(part: str, counts: dict[str, list[int]], scale: float, seed: int) -> PartEvidence:
    est = auc_with_uncertainty(list(counts.get("0", [])), list(counts.get("1", [])), scale, seed=seed)
    return PartEvidence(part, est.auc, est.lower, est.upper, est.examples, est.positives)


def _evidence_releases(outbox: Path) -> dict[tuple[str, int, str], dict[str, Any]]:
    """The latest evidence release per (model, version, stage) that was not suppressed or rejected."""
    latest: dict[tuple[str, int, str], dict[str, Any]] = {}
    for path in sorted(outbox.glob("*.json")) if outbox.is_dir() else []:
        body = _json(path)
        if not body or body.get("kind") != "evaluation" or body.get("status") not in ("queued", "sent"):
            continue
        e = body.get("evaluation") or {}
        if not e.get("stage"):
            continue  # a candidate's evaluation on examples, not outcome evidence of a deployed stage
        key = (str(e["model_name"]), int(e["model_version"]), str(e["stage"]))
        if key not in latest or str(body["created_at"]) > str(latest[key]["created_at"]):
            latest[key] = body
    return latest


def _changes(path: Path) -> list[StageChange]:
    lines = _lines(path)
    # the lines of one loaded deployment share its time: where each version went in it
    arrived: dict[str, set[tuple[str, int]]] = {}
    for line in lines:
        if line.get("after"):
            arrived.setdefault(line["at"], set()).add((line["after"][0], int(line["after"][1])))
    return [StageChange(_minute(line["at"]), str(line["stage"]), _label(line.get("before")), _label(line.get("after")),
                        _rolled_back(line.get("before"), line.get("after"), arrived.get(line["at"], set())))
            for line in lines]


def _rolled_back(before: list[Any] | None, after: list[Any] | None, arrived: set[tuple[str, int]]) -> bool:
    """A rollback takes a version out of the region (it moved to no other stage) and leaves its stage
    empty or to an earlier version of the model; a promotion moves it, or replaces it by a later one."""
    if not before or (before[0], int(before[1])) in arrived:
        return False
    return not after or (after[0] == before[0] and int(after[1]) < int(before[1]))


def _refusals(path: Path, region: str) -> list[ModelRefusal]:
    return [ModelRefusal(_minute(r["at"]), str(r["stage"]), f"{r['name']} v{r['version']}", str(r["reason"]))
            for r in _lines(path) if r.get("region", region) == region]


def _label(model: list[Any] | None) -> str:
    return f"{model[0]} v{model[1]}" if model else ""


def _minute(iso: str) -> str:
    if not iso:
        return ""
    return f"{datetime.fromisoformat(iso):%Y-%m-%d %H:%M} UTC"


def _json(path: Path) -> dict[str, Any] | None:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for text in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(text))
        except ValueError:
            continue  # a line cut by a crash mid-append
    return out
