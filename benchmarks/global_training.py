"""Honest accuracy: the DP federated model against a central model trained on pooled rows, one run.

    python benchmarks/global_training.py [--regions MY,SG,ID,TH] [--customers 20000] [--draws 10]

Each region gets synthetic data twice (a training population and, with another seed, a held-out
test population of other customers). Per region, one labelled example per customer (its latest
fraud label in the last 30 days, features as of that moment through Feast's historical retrieval).

  central     LDA and logistic regression fitted on the pooled training rows of every region
              (possible only here: in production the rows never leave their regions)
  federated   each region releases per-class sufficient statistics with OpenDP's Gaussian
              mechanism at ε per region (δ = 1e-6); the centre pools them and fits LDA / ridge

AUC and error (1 − accuracy at p > ½) on the pooled held-out rows; for the DP rows the mean and
standard deviation over ``--draws`` independent noise draws (OpenDP's CSPRNG is not seedable).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from datetime import date, timedelta, datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

END = date(2026, 11, 1)
ZONES = {"MY": "Asia/Kuala_Lumpur", "SG": "Asia/Singapore", "ID": "Asia/Jakarta", "TH": "Asia/Bangkok",
         "VN": "Asia/Ho_Chi_Minh", "PH": "Asia/Manila", "HK": "Asia/Hong_Kong"}


def region_examples(work: Path, codes: list[str], customers: int, seed: int):  # type: ignore[no-untyped-def]
    import yaml

    from fedstore.federation import JURISDICTIONS, load_config
    from fedstore.federation.training import training_spec
    from fedstore.regions.publishing.examples import labelled_examples
    from fedstore.regions.store.node import RegionNode
    from fedstore.regions.synthetic import generate_region

    work.mkdir(parents=True, exist_ok=True)
    cfg = work / "fedstore.yaml"
    cfg.write_text(yaml.safe_dump({
        "federation": {"name": "bench"},
        "regions": [{"code": c, "jurisdiction": JURISDICTIONS[c].name, "law": JURISDICTIONS[c].law, "timezone": ZONES[c],
                     "data_dir": c, "online_store": {"type": "sqlite"}, "serving_address": f"127.0.0.1:{59900 + i}"}
                    for i, c in enumerate(codes)],
    }))
    config = load_config(cfg)
    spec = training_spec("fraud_scoring")
    end = datetime.combine(END, datetime.min.time(), tzinfo=timezone.utc)
    out = {}
    for c in codes:
        node = RegionNode(config.region(c))
        generate_region(c, node.data_dir, customers=customers, days=35, end=END - timedelta(days=1),
                        timezone=ZONES[c], seed=seed)
        node.apply()
        out[c] = labelled_examples(node, spec, end - timedelta(days=30), end)
    return out


def logistic_regression(x: np.ndarray, y: np.ndarray, l2: float = 1e-4, steps: int = 50) -> np.ndarray:
    """Newton's method with a tiny ridge; returns [intercept, weights]."""
    a = np.hstack([np.ones((x.shape[0], 1)), x])
    beta = np.zeros(a.shape[1])
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(a @ beta)))
        grad = a.T @ (p - y) + l2 * len(y) * np.r_[0, beta[1:]]
        hess = (a * (p * (1 - p))[:, None]).T @ a + l2 * len(y) * np.diag(np.r_[0, np.ones(len(beta) - 1)])
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return beta


def rank_auc(score: np.ndarray, y: np.ndarray) -> float:
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    ranks[order] = np.arange(1, len(score) + 1)
    # average ranks over ties
    _, inv, counts = np.unique(score, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=ranks)
    ranks = (sums / counts)[inv]
    n1 = y.sum()
    n0 = len(y) - n1
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2) / (n0 * n1))


def error(logit: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((logit > 0).astype(int) != y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regions", default="MY,SG,ID,TH")
    parser.add_argument("--customers", type=int, default=20_000, help="customers per region (each population)")
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--epsilons", default="0.5,1,4,inf")
    args = parser.parse_args()
    codes = args.regions.split(",")

    from fedstore.aggregator.training.lda import LinearDiscriminant
    from fedstore.aggregator.training.pooled import pool
    from fedstore.aggregator.training.ridge import Ridge
    from fedstore.aggregator.store import TrainingRow
    from fedstore.federation import PrivacyConfig
    from fedstore.regions.publishing.evaluation import release_evaluation, score_histograms
    from fedstore.aggregator.training.metrics import auc as histogram_auc
    from fedstore.regions.publishing.training_statistics import class_statistics, release_training

    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        train = region_examples(Path(tmp) / "train", codes, args.customers, seed=11)
        test = region_examples(Path(tmp) / "test", codes, args.customers, seed=12_345)
    print(f"data: {len(codes)} regions × {args.customers:,} customers, train and held-out test populations "
          f"({time.perf_counter() - began:.0f} s)")
    features = next(iter(train.values())).features
    x_test = np.vstack([e.x for e in test.values()])
    y_test = np.concatenate([e.y for e in test.values()])
    x_train = np.vstack([e.x for e in train.values()])
    y_train = np.concatenate([e.y for e in train.values()])
    print(f"examples: train {len(y_train):,} ({y_train.sum():,} fraud), test {len(y_test):,} ({y_test.sum():,} fraud)")

    rows: list[tuple[str, str, str, str, str]] = []

    def measure(logit: np.ndarray) -> tuple[float, float]:
        return rank_auc(logit, y_test), error(logit, y_test)

    beta = logistic_regression(x_train, y_train)
    auc_lr, err_lr = measure(beta[0] + x_test @ beta[1:])
    rows.append(("central, pooled rows", "logistic regression", "—", f"{auc_lr:.4f}", f"{err_lr:.4f}"))
    exact = {c: class_statistics(e, "fraud_scoring", "is_fraud") for c, e in train.items()}
    central_lda = LinearDiscriminant().fit(_pool(exact, features, TrainingRow, pool), "fraud_scoring")
    auc_lda, err_lda = measure(central_lda.logit(x_test))
    rows.append(("central, pooled rows", "LDA", "—", f"{auc_lda:.4f}", f"{err_lda:.4f}"))

    privacy = PrivacyConfig()
    results: dict[tuple[str, float], list[tuple[float, float]]] = {}
    for eps in [float(e) for e in args.epsilons.split(",")]:
        draws = 1 if math.isinf(eps) else args.draws
        for _ in range(draws):
            if math.isinf(eps):
                released = exact
            else:
                released = {}
                for c, s in exact.items():
                    r = release_training(s, epsilon=eps, delta=privacy.delta, minimum_cohort=privacy.minimum_cohort)
                    if r.statistics is not None:
                        released[c] = r.statistics
            if not released:
                continue
            pooled = _pool(released, features, TrainingRow, pool)
            for strategy in (LinearDiscriminant(), Ridge()):
                model = strategy.fit(pooled, "fraud_scoring")
                results.setdefault((strategy.name, eps), []).append(measure(model.logit(x_test)))
    for (name, eps), values in sorted(results.items(), key=lambda kv: (kv[0][0], kv[0][1])):
        a = np.array(values)
        label = "∞ (no noise)" if math.isinf(eps) else f"{eps:g}"
        spread = "" if len(a) == 1 else f" ± {a[:, 0].std():.4f}"
        rows.append(("federated, DP statistics", "LDA" if name == "lda" else "ridge", label,
                     f"{a[:, 0].mean():.4f}{spread}", f"{a[:, 1].mean():.4f}"))

    # what the centre learns from regions' own evaluations (noisy score histograms, ε = 0.5 each)
    reported = []
    for c, e in test.items():
        hist = score_histograms(central_lda, "bench:1", e)
        r = release_evaluation(hist, epsilon=0.5, minimum_cohort=privacy.minimum_cohort)
        if r.histograms:
            reported.append((c, rank_auc(central_lda.logit(e.x), e.y), histogram_auc(r.histograms.counts[0], r.histograms.counts[1])))

    from fedstore.cli.render import table

    print()
    print(table(["model", "fitted by", "ε per region", "AUC (test)", "error (test)"], rows))
    gap = auc_lda - np.mean([v[0] for v in results.get(("lda", 1.0), [(float("nan"), 0)])])
    print(f"\nAUC gap, central LDA − federated LDA at ε = 1: {gap:+.4f} (goal: within 0.02)")
    print()
    print(table(["region", "exact AUC (rows, benchmark only)", "AUC the centre computes from the noisy report (ε=0.5)"],
                [(c, f"{a:.4f}", f"{b:.4f}") for c, a, b in reported]))


def _pool(stats, features, row_type, pool_fn):  # type: ignore[no-untyped-def]
    rows = [row_type(f"{c.lower()}-train-bench", c, tuple(features), k.label, k.n, k.sum_x, k.xtx, 1.0)
            for c, s in stats.items() for k in s.classes]
    return pool_fn(rows, tuple(features))


if __name__ == "__main__":
    main()
