"""Region MY with a generated prediction log written by the real writer, for the score-monitoring
tests (test_score_monitoring, test_score_rollback): each test says what is scored each day."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Callable, Sequence
from zoneinfo import ZoneInfo

import numpy as np

from fedstore.serving.prediction_log import Prediction, PredictionLog, ShadowScore

TZ = "Asia/Kuala_Lumpur"


def region_my(serving_port: int) -> dict[str, Any]:
    """Region MY's section of a config (embedded online store; nothing serves on the port)."""
    return {"code": "MY", "jurisdiction": "Malaysia", "law": "PDPA-MY", "timezone": TZ, "data_dir": "data/MY",
            "online_store": {"type": "sqlite"}, "serving_address": f"127.0.0.1:{serving_port}"}


@dataclass(frozen=True)
class Scored:
    """One model's scores of one day: entity i scored ``scores[i]`` at local hour ``hours[i]`` (and
    each shadow, as (model, version, scores), beside it)."""

    model: str
    version: int
    stage: str
    scores: np.ndarray
    hours: np.ndarray
    shadows: tuple[tuple[str, int, np.ndarray], ...] = ()


def write_prediction_log(data_dir: Path, first: date, last: date, *, seed: int,
                         day: Callable[[date, np.random.Generator], Sequence[Scored]]) -> None:
    """The log of every day from ``first`` to ``last``: what ``day`` scores on it (drawn from the one
    generator seeded ``seed``), one prediction per entity and model, at half past its hour."""
    rng = np.random.default_rng(seed)
    log = PredictionLog(data_dir, retention_days=10_000, max_batches=10_000)
    log.start()
    local, on, k = ZoneInfo(TZ), first, 0
    while on <= last:
        rows = []
        for s in day(on, rng):
            for i in range(len(s.scores)):
                rows.append(Prediction(
                    prediction_id=f"p{k}", at=datetime.combine(on, time(int(s.hours[i]), 30), local).astimezone(UTC),
                    entity=str(i), feature_service="fraud_scoring", model=s.model, version=s.version, stage=s.stage,
                    score=float(s.scores[i]), shadow=tuple(ShadowScore(m, v, float(x[i])) for m, v, x in s.shadows),
                    features=(), values=(), imputed=(), job_ids=(), source="online_store"))
                k += 1
        log.append(rows)
        on += timedelta(days=1)
    log.close()
