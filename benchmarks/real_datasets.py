"""Real public datasets shipped inside PyPI packages (nothing downloaded at run time), as binary
classification tables for the global-training benchmark.

    fair           statsmodels (extra `bench`): 6,366 women surveyed by Redbook (1974); y = any affair; 8 features
    randhie        statsmodels: 20,190 person-years of the RAND Health Insurance Experiment;
                   y = any outpatient visit; 9 features
    breast_cancer  scikit-learn: 569 Wisconsin diagnostic images; y = malignant; 30 features
    digits         scikit-learn: 1,797 8×8 handwritten digits; y = digit ≥ 5; 64 features

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
    raise ValueError(f"unknown dataset {name!r}; known: fair, randhie, breast_cancer, digits")
