"""Daily score profiles of the deployed models, read from the region's prediction log (it never
leaves the region; this module reads it by path and schema, ``regions/prediction_layout.py``).

Per local day (the region's time zone, as the festival calendars count days):

- per model version and stage (the served model at its stage, each shadow model at ``shadow``): the
  count, Σ and Σ² of its scores and their histogram on the agreed score edges
  (``federation.training.SCORE_EDGES``, open ends: the evidence histograms' bins);
- per pair (a shadow model, the model that answered the same entities): the number of entities
  both scored, Σ |shadow − served| and both histograms over those same entities.

One DuckDB pass over the part files, so a long log never needs its rows in Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from fedstore.federation.training import SCORE_EDGES
from fedstore.regions.errors import RegionError
from fedstore.regions.prediction_layout import part_files

SHADOW = "shadow"


@dataclass(frozen=True, order=True)
class ModelStage:
    """One model version at one stage: a series of daily score distributions."""

    model: str
    version: int
    stage: str

    @property
    def label(self) -> str:
        return f"{self.model} v{self.version} ({self.stage})"


@dataclass(frozen=True, order=True)
class ShadowPair:
    """A shadow model and the model that answered the entities it scored beside it."""

    shadow: ModelStage
    served: ModelStage

    @property
    def label(self) -> str:
        return f"{self.shadow.model} v{self.shadow.version} (shadow) vs {self.served.label}"


@dataclass(frozen=True)
class ScoreProfiles:
    """``scores``: one row per (day, model, version, stage): count, sum, sum_sq, histogram.
    ``pairs``: one row per (day, served model, version, stage, shadow model, version): pairs,
    abs_diff_sum, histogram (served), shadow_histogram — over the same entities."""

    scores: pd.DataFrame
    pairs: pd.DataFrame

    @property
    def days(self) -> list[date]:
        return sorted(set(self.scores["day"]))

    def series(self) -> list[ModelStage]:
        keys = self.scores[["model", "version", "stage"]].drop_duplicates().itertuples(index=False)
        return sorted(ModelStage(m, int(v), s) for m, v, s in keys)

    def of(self, key: ModelStage) -> pd.DataFrame:
        f = self.scores
        rows = f[(f["model"] == key.model) & (f["version"] == key.version) & (f["stage"] == key.stage)]
        return rows.set_index("day").sort_index()

    def shadow_pairs(self) -> list[ShadowPair]:
        cols = ["shadow_model", "shadow_version", "model", "version", "stage"]
        keys = self.pairs[cols].drop_duplicates().itertuples(index=False)
        return sorted(ShadowPair(ModelStage(sm, int(sv), SHADOW), ModelStage(m, int(v), s)) for sm, sv, m, v, s in keys)

    def pair_of(self, pair: ShadowPair) -> pd.DataFrame:
        f = self.pairs
        rows = f[(f["shadow_model"] == pair.shadow.model) & (f["shadow_version"] == pair.shadow.version)
                 & (f["model"] == pair.served.model) & (f["version"] == pair.served.version)
                 & (f["stage"] == pair.served.stage)]
        return rows.set_index("day").sort_index()


def compute_score_profiles(data_dir: Path, timezone: str) -> ScoreProfiles:
    """The daily score profiles of every model the log holds (empty frames when it holds none)."""
    files = [str(p) for p in part_files(data_dir)]
    bins = len(SCORE_EDGES) - 1
    if not files:
        return ScoreProfiles(_frame([], _SCORE_COLUMNS), _frame([], _PAIR_COLUMNS))
    edges = "[" + ", ".join(repr(float(e)) for e in SCORE_EDGES) + "]"

    def bin_of(x: str) -> str:  # how many edges lie at or below x, minus one; open ends
        return f"least(greatest(len(list_filter({edges}, lambda e: e <= {x})) - 1, 0), {bins - 1})"

    con = duckdb.connect()
    try:
        con.execute("CREATE TEMP TABLE p AS SELECT CAST(timezone(?, p0.\"at\") AS DATE) AS day, model, version, stage, "
                    "score, shadow FROM read_parquet(?, hive_partitioning = false) AS p0", [timezone, files])
        con.execute(f"""CREATE TEMP TABLE s AS
            SELECT day, model, version, stage, score, {bin_of('score')} AS b
            FROM p WHERE model <> '' AND score IS NOT NULL AND isfinite(score)
            UNION ALL
            SELECT day, sh.model, sh.version, '{SHADOW}', sh.score, {bin_of('sh.score')}
            FROM (SELECT day, UNNEST(shadow) AS sh FROM p) WHERE sh.score IS NOT NULL AND isfinite(sh.score)""")
        moments = con.execute("SELECT day, model, version, stage, count(*), sum(score), sum(score * score) "
                              "FROM s GROUP BY ALL ORDER BY ALL").fetchall()
        binned = con.execute("SELECT day, model, version, stage, b, count(*) FROM s GROUP BY ALL").fetchall()
        con.execute(f"""CREATE TEMP TABLE q AS
            SELECT day, model, version, stage, sh.model AS shadow_model, sh.version AS shadow_version,
                   score, sh.score AS shadow_score, {bin_of('score')} AS b, {bin_of('sh.score')} AS sb
            FROM (SELECT day, model, version, stage, score, UNNEST(shadow) AS sh FROM p
                  WHERE model <> '' AND score IS NOT NULL AND isfinite(score))
            WHERE sh.score IS NOT NULL AND isfinite(sh.score)""")
        keys = "day, model, version, stage, shadow_model, shadow_version"
        pair_moments = con.execute(f"SELECT {keys}, count(*), sum(abs(shadow_score - score)) FROM q "
                                   f"GROUP BY ALL ORDER BY ALL").fetchall()
        served_bins = con.execute(f"SELECT {keys}, b, count(*) FROM q GROUP BY ALL").fetchall()
        shadow_bins = con.execute(f"SELECT {keys}, sb, count(*) FROM q GROUP BY ALL").fetchall()
    except duckdb.Error as e:  # a damaged part file, or one that is not the log's
        raise RegionError(f"the prediction log under {data_dir} could not be read: {str(e).splitlines()[0]}") from None
    finally:
        con.close()
    hist = _histograms(binned, 4, bins)
    scores = [(*k, n, float(t), float(t2), hist[tuple(k)].tolist()) for *k, n, t, t2 in moments]
    served, shadow = _histograms(served_bins, 6, bins), _histograms(shadow_bins, 6, bins)
    pairs = [(*k, n, float(d), served[tuple(k)].tolist(), shadow[tuple(k)].tolist()) for *k, n, d in pair_moments]
    return ScoreProfiles(_frame(scores, _SCORE_COLUMNS), _frame(pairs, _PAIR_COLUMNS))


_SCORE_COLUMNS = ["day", "model", "version", "stage", "count", "sum", "sum_sq", "histogram"]
_PAIR_COLUMNS = ["day", "model", "version", "stage", "shadow_model", "shadow_version", "pairs", "abs_diff_sum",
                 "histogram", "shadow_histogram"]


def _histograms(rows: list[tuple], width: int, bins: int) -> dict[tuple, np.ndarray]:
    out: dict[tuple, np.ndarray] = {}
    for row in rows:
        key, b, n = tuple(row[:width]), row[width], row[width + 1]
        out.setdefault(key, np.zeros(bins, dtype=np.int64))[b] += n
    return out


def _frame(rows: list[tuple], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns)


__all__ = ["SHADOW", "ModelStage", "ScoreProfiles", "ShadowPair", "compute_score_profiles"]
