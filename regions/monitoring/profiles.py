"""Daily profiles: per local day and catalog feature, the same mergeable statistics the aggregator
uses (rows, count, nulls, Σ and Σ² of clipped values, histogram on the agreed edges).

Computed by DuckDB straight over the region's Parquet sources (one grouped query per view, so a
large region never needs its rows in Python) and stored in ``<data_dir>/monitoring/profiles.parquet``.
A day is the region's local calendar day of the row's event time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fedstore.federation.statistics import FeatureSpec
from fedstore.regions.errors import InvalidSource
from fedstore.regions.store.source_files import source_files


@dataclass(frozen=True)
class DailyProfiles:
    """One row per (day, ref): rows (of the view that day), count, null_count, sum, sum_sq, histogram."""

    frame: pd.DataFrame

    @property
    def days(self) -> list[date]:
        return sorted(set(self.frame["day"]))

    def of(self, ref: str) -> pd.DataFrame:
        return self.frame[self.frame["ref"] == ref].set_index("day").sort_index()


def profiles_path(data_dir: Path) -> Path:
    return data_dir / "monitoring" / "profiles.parquet"


def compute_profiles(sources: dict[str, Path], catalog: tuple[FeatureSpec, ...], timezone: str) -> DailyProfiles:
    """``sources``: view name → its Parquet file. Views without a catalog feature are skipped."""
    parts = []
    con = duckdb.connect()
    try:
        for view, path in sources.items():
            specs = [s for s in catalog if s.view == view]
            if not specs or not source_files(path):  # a file, or a glob of partition files
                continue
            day = f"CAST(timezone('{timezone}', event_timestamp) AS DATE)"
            rows = con.execute(f"SELECT {day} AS day, count(*) FROM read_parquet(?) GROUP BY 1", [str(path)]).fetchall()
            per_day = {d: n for d, n in rows}
            for spec in specs:
                value = f"CAST({_ident(spec.feature)} AS DOUBLE)"
                clean = f"CASE WHEN isnan({value}) THEN NULL ELSE {value} END"
                clipped = f"least(greatest({clean}, {spec.lower}), {spec.upper})"
                edges = "[" + ", ".join(repr(float(e)) for e in spec.edges) + "]"
                bins = spec.bins
                source = f"SELECT {day} AS day, {clipped} AS x FROM read_parquet(?)"
                moments = con.execute(
                    f"SELECT day, count(x), count(*) - count(x), coalesce(sum(x), 0), coalesce(sum(x * x), 0) "
                    f"FROM ({source}) GROUP BY day ORDER BY day", [str(path)]).fetchall()
                # bin of x: how many edges lie at or below it, minus one; the top edge closes the last bin
                binned = con.execute(
                    f"SELECT day, least(len(list_filter({edges}, lambda e: e <= x)) - 1, {bins - 1}) AS b, count(*) "
                    f"FROM ({source}) WHERE x IS NOT NULL GROUP BY 1, 2", [str(path)]).fetchall()
                hists: dict[date, np.ndarray] = {}
                for d, b, n in binned:
                    hists.setdefault(d, np.zeros(bins, dtype=np.int64))[b] = n
                for d, count, nulls, total, total_sq in moments:
                    hist = hists.get(d, np.zeros(bins, dtype=np.int64))
                    parts.append((d, spec.ref, view, per_day.get(d, 0), count, nulls, float(total), float(total_sq),
                                  hist.tolist()))
    except duckdb.Error as e:  # the footers were checked; a damaged page shows only now
        raise InvalidSource(f"source {path} could not be read: {str(e).splitlines()[0]}") from None
    finally:
        con.close()
    frame = pd.DataFrame(parts, columns=["day", "ref", "view", "rows", "count", "null_count", "sum", "sum_sq",
                                         "histogram"])
    return DailyProfiles(frame)


def store_profiles(profiles: DailyProfiles, data_dir: Path) -> Path:
    path = profiles_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    pq.write_table(pa.Table.from_pandas(profiles.frame, preserve_index=False), tmp)
    tmp.replace(path)  # readers see the old profiles or the new, never half of them
    return path


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
