"""One prediction's whole chain, from what the region holds (nothing is asked of the centre):

    prediction (the prediction log) ─▶ model version and stage ─▶ its lineage as the node loaded it
    (``<data_dir>/models/versions/``: the submissions it was trained from, their regions and ε)
    feature values ─▶ the materialisation jobs that wrote them (the ledger) ─▶ their source files'
    fingerprints (SHA-256, as the job recorded them)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedstore.regions.store.ledger import JobLedger, JobRecord
from fedstore.serving.deployed import DeployedModel, DeploymentStore
from fedstore.serving.prediction_log import read_predictions


class UnknownPrediction(LookupError):
    pass


@dataclass(frozen=True)
class Explanation:
    prediction: dict[str, Any]  # the log's row
    model: DeployedModel | None  # None: unscored, or a version this node has no copy of
    jobs: tuple[JobRecord | str, ...]  # a job id the ledger no longer has stays as its id


def explain(data_dir: Path, region: str, prediction_id: str) -> Explanation:
    rows = read_predictions(data_dir, prediction_id).to_pylist()
    if not rows:
        raise UnknownPrediction(f"no prediction {prediction_id!r} in region {region}'s prediction log "
                                "(a wrong id, another region's, or deleted by the log's retention)")
    row = rows[0]
    model = DeploymentStore(data_dir).load_version(row["model"], row["version"]) if row["model"] else None
    ledger_path = data_dir / "ledger.db"
    jobs: list[JobRecord | str] = []
    ledger = JobLedger(ledger_path, region) if ledger_path.exists() else None
    for job_id in row["job_ids"]:
        try:
            jobs.append(ledger.get(job_id) if ledger is not None else job_id)
        except KeyError:
            jobs.append(job_id)
    return Explanation(row, model, tuple(jobs))


__all__ = ["Explanation", "UnknownPrediction", "explain"]
