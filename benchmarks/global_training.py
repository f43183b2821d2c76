"""Honest accuracy: the DP federated model against a central model trained on pooled rows, one run.

    python benchmarks/global_training.py [--regions MY,SG,ID,TH] [--customers 20000] [--draws 10]
    python benchmarks/global_training.py --datasets fair,randhie,breast_cancer,digits,flights [--draws 20]

With ``--datasets``: real public data shipped inside PyPI packages (benchmarks/real_datasets.py),
split into 3–5 regions IID and non-IID (regions cut along the data's first principal axis blurred
by noise, so their covariates and base rates differ), ``--rows`` rows per region where the data allows; per ε
the mean ± sd test AUC over ``--draws`` noise draws of LDA fitted by the centre from the regions'
releases, beside central non-private LDA and logistic regression on the same rows, and beside
the same mechanism applied once to all rows (the limit for a single noisy release). The centre m
and C (the row-norm bound) come from a public reference sample (10% of rows, never trained or
tested on): m = its mean, C = 1.5·sqrt(mean ‖x − m‖²), as docs/privacy.md says to choose them
(``--no-centre``: m = 0 and C = 1.5·sqrt(mean ‖x‖²), the mechanism before the centre).

With ``--secure``: a column "secure agg." beside "federated": the regions run the real
secure-aggregation protocol in process (federation/secure_aggregation: keys, Shamir shares, masks),
each adding its share of the noise (OpenDP's discrete Gaussian, σ²/t with t = ``--threshold`` or
every region), and the centre fits LDA from the unmasked sum, as it does over gRPC.

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
    parser.add_argument("--datasets", default="", help="real datasets instead of the synthetic regions, e.g. "
                                                        "fair,randhie,breast_cancer,digits")
    parser.add_argument("--rows", default="250,1000,10000", help="rows per region (capped by the data)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--norm-factor", type=float, default=1.5,
                        help="C = this × the reference sample's RMS row norm (docs/privacy.md)")
    parser.add_argument("--splits", default="IID,non-IID")
    parser.add_argument("--no-centre", action="store_true",
                        help="rows measured from the origin (the mechanism before the public centre)")
    parser.add_argument("--secure", action="store_true",
                        help="also fit from a secure-aggregation sum (noise once for the sum)")
    parser.add_argument("--threshold", type=int, default=0,
                        help="secure aggregation's t (0: every region); each region adds σ²/t")
    args = parser.parse_args()
    if args.datasets:
        run_real(args)
        return
    codes = args.regions.split(",")

    from fedstore.aggregator.training.pooled import pool
    from fedstore.aggregator.training.strategies import make_strategy
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
    from fedstore.federation.training import training_spec

    bound = training_spec("fraud_scoring").norm_bound
    norms = np.linalg.norm(x_train, axis=1)
    print(f"row norms (benchmark only, never used to set C): RMS {np.sqrt(np.mean(norms**2)):.2f}, "
          f"{np.mean(norms > bound):.1%} of rows beyond C = {bound:g}")
    exact = {c: class_statistics(e, "fraud_scoring", "is_fraud", norm_bound=bound) for c, e in train.items()}
    central_lda = make_strategy("lda").fit(_pool(exact, features, TrainingRow, pool), "fraud_scoring")
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
                    r = release_training(s, epsilon=eps, delta=privacy.delta, minimum_cohort=privacy.minimum_cohort,
                                         norm_bound=bound)
                    if r.statistics is not None:
                        released[c] = r.statistics
            if not released:
                continue
            pooled = _pool(released, features, TrainingRow, pool)
            for strategy in (make_strategy("lda"), make_strategy("ridge")):  # as the centre fits
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
    return pool_fn(_training_rows(stats, features, row_type), tuple(features))


def _sum_exact(exact):  # type: ignore[no-untyped-def]
    """The regions' exact statistics added up (what a secure sum is without noise)."""
    from fedstore.regions.publishing.training_statistics import ClassStatistics, TrainingStatistics

    first = next(iter(exact.values()))
    classes = tuple(ClassStatistics(k.label, sum(s.classes[i].n for s in exact.values()),
                                    tuple(np.sum([s.classes[i].sum_x for s in exact.values()], axis=0)))
                    for i, k in enumerate(first.classes))
    return TrainingStatistics(first.feature_service, first.label, first.features, classes,
                              tuple(np.sum([s.xtx for s in exact.values()], axis=0)))


def _training_rows(stats, features, row_type, epsilon=1.0, delta=1e-6):  # type: ignore[no-untyped-def]
    return [row_type(f"{c.lower()}-train-bench", c, tuple(features), k.label, k.n, k.sum_x, s.xtx, epsilon, delta)
            for c, s in stats.items() for k in s.classes]


def _secure_sum(exact, *, epsilon, delta, norm_bound, threshold, features, name, centre=None):  # type: ignore[no-untyped-def]
    """One secure-aggregation round in process: every region's masked input, the centre's unmasked sum,
    decoded into one training row pair (region "SUM"), as the centre stores it."""
    from fedstore.federation.secure_aggregation import FixedPoint, Participant, RoundParameters, RoundState
    from fedstore.federation.training import release_size, unweighted_release
    from fedstore.regions.publishing.secure_training import secure_contribution
    from fedstore.regions.publishing.training_statistics import ClassStatistics, TrainingStatistics

    regions = tuple(sorted(exact))
    d = len(features)
    params = RoundParameters(f"bench-{name}", threshold, regions, release_size(d), FixedPoint())
    people = {r: Participant(r, params) for r in regions}
    state = RoundState(params)
    for p in people.values():
        state.add_keys(p.advertise())
    keys = state.close_advertising()
    for r, p in people.items():
        state.add_shares(r, p.share_keys(keys))
    state.close_sharing()
    for r, p in people.items():
        c = secure_contribution(exact[r], epsilon=epsilon, delta=delta, norm_bound=norm_bound, threshold=threshold,
                                encoding=params.encoding, centre=centre)
        state.add_masked(p.masked_input(c.encoded, state.shares_for(r)))
    survivors, dropped = state.close_masking()
    for r in survivors:
        state.add_answer(people[r].unmask(survivors, dropped))
    ns, sums, xtx = unweighted_release(state.finish(), d, norm_bound,
                                       None if centre is None else np.asarray(centre, dtype=float))
    classes = tuple(ClassStatistics(label, n, x) for label, (n, x) in enumerate(zip(ns, sums, strict=True)))
    return TrainingStatistics(name, "y", tuple(features), classes, xtx)


def _splits(x_ref: np.ndarray, x: np.ndarray, k: int, rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    """Row indices of k regions: IID (random) and non-IID (cut along the reference sample's first
    principal axis blurred by noise of its own sd: each region holds a different slice of the
    covariates, and so of the base rate, yet both classes, as real jurisdictions do)."""
    centred = x_ref - x_ref.mean(axis=0)
    axis = np.linalg.svd(centred, full_matrices=False)[2][0]
    score = x @ axis
    along = np.argsort(score + rng.normal(0, score.std(), len(score)), kind="stable")
    return {"IID": np.array_split(rng.permutation(len(x)), k), "non-IID": np.array_split(along, k)}


def run_real(args: argparse.Namespace) -> None:
    from fedstore.aggregator.errors import AggregatorError
    from fedstore.aggregator.store import TrainingRow
    from fedstore.aggregator.training.pooled import pool
    from fedstore.aggregator.training.strategies import make_strategy
    from fedstore.aggregator.training.signal import signals
    from benchmarks.real_datasets import load
    from fedstore.federation import PrivacyConfig, TrainingConfig
    from fedstore.federation.training import TrainingSpec
    from fedstore.cli.render import table
    from fedstore.regions.publishing.examples import LabelledExamples
    from fedstore.regions.publishing.training_statistics import class_statistics, release_training

    privacy, floor = PrivacyConfig(), TrainingConfig().minimum_expected_auc
    epsilons = [float(e) for e in args.epsilons.split(",")]
    sizes = [int(r) for r in args.rows.split(",")]
    lda = make_strategy("lda")  # with its noise floor, as the centre fits
    out: list[tuple[str, ...]] = []
    summary: list[tuple[str, ...]] = []
    began = time.perf_counter()
    for name in args.datasets.split(","):
        data = load(name)
        rng = np.random.default_rng(args.seed)
        order = rng.permutation(len(data.y))
        n_ref, n_test = len(order) // 10, (3 * len(order)) // 10
        ref, test, train = order[:n_ref], order[n_ref:n_ref + n_test], order[n_ref + n_test:]
        x_ref, x_test, y_test = data.rescaled(data.x[ref]), data.rescaled(data.x[test]), data.y[test]
        x_train, y_train = data.rescaled(data.x[train]), data.y[train]
        d = x_train.shape[1]
        centre = None if args.no_centre else tuple(map(float, x_ref.mean(axis=0)))
        m = np.zeros(d) if centre is None else np.asarray(centre)
        bound = min(args.norm_factor * float(np.sqrt(np.mean(np.sum((x_ref - m)**2, axis=1)))), float(np.sqrt(d)))
        features = tuple(f"{name}:{f}" for f in data.features)
        spec = TrainingSpec(name, "y", features, row_norm=bound, centre=centre)
        k = 3 if len(data.y) < 2000 else 4
        print(f"{name}: {len(data.y):,} rows, d={d}, base rate {data.y.mean():.2f}; {k} regions; C={bound:.2f} "
              f"({'from the origin' if centre is None else 'from the reference mean'}) "
              f"(√d={np.sqrt(d):.2f}); test {len(y_test):,} rows", flush=True)
        seen: set[int] = set()
        for size in sizes:
            per = min(size, len(y_train) // k)
            if per in seen:
                continue
            seen.add(per)
            for split, parts in _splits(x_ref, x_train, k, rng).items():
                if split not in args.splits.split(","):
                    continue
                regions = {f"R{i}": p[:per] for i, p in enumerate(parts)}
                examples = {r: LabelledExamples(features, x_train[idx], y_train[idx]) for r, idx in regions.items()}
                x_all = np.vstack([e.x for e in examples.values()])
                y_all = np.concatenate([e.y for e in examples.values()])
                everything = LabelledExamples(features, x_all, y_all)
                # central, non-private: LDA on the unclipped rows (C = √d shrinks nothing), and LR
                central = lda.fit(_pool({"ALL": class_statistics(everything, name, "y", norm_bound=np.sqrt(d))},
                                        features, TrainingRow, pool), name)
                auc_central = rank_auc(central.logit(x_test), y_test)
                beta = logistic_regression(x_all, y_all)
                auc_lr = rank_auc(beta[0] + x_test @ beta[1:], y_test)
                exact = {r: class_statistics(e, name, "y", norm_bound=bound, centre=centre)
                         for r, e in examples.items()}
                exact_all = {"ALL": class_statistics(everything, name, "y", norm_bound=bound, centre=centre)}
                for eps in epsilons:
                    draws = 1 if math.isinf(eps) else args.draws
                    single, federated, refused, lost = [], [], 0, 0
                    for _ in range(draws):
                        for target, stats in ((single, exact_all), (federated, exact)):
                            released = {}
                            for r, st in stats.items():
                                if math.isinf(eps):
                                    released[r] = st
                                    continue
                                rel = release_training(st, epsilon=eps, delta=privacy.delta,
                                                       minimum_cohort=privacy.minimum_cohort, norm_bound=bound,
                                                       centre=centre)
                                if rel.statistics is not None:
                                    released[r] = rel.statistics
                            rows = _training_rows(released, features, TrainingRow, eps, privacy.delta)
                            try:
                                model = lda.fit(pool(rows, features), name)
                                target.append(rank_auc(model.logit(x_test), y_test))
                            except (AggregatorError, np.linalg.LinAlgError):
                                target.append(0.5)  # nothing to fit from: no better than chance
                                lost += target is federated
                                continue
                            if target is federated and not math.isinf(eps):
                                try:
                                    signals(rows, spec, floor=floor)
                                except (AggregatorError, np.linalg.LinAlgError, ValueError):
                                    refused += 1  # what Train would answer: no model registered
                    secure: list[float] = []
                    for _ in range(draws if args.secure else 0):
                        if math.isinf(eps):
                            released = {"SUM": _sum_exact(exact)}
                        else:
                            t = args.threshold or len(exact)
                            released = {"SUM": _secure_sum(exact, epsilon=eps, delta=privacy.delta, norm_bound=bound,
                                                           threshold=t, features=features, name=name,
                                                           centre=centre)}
                        if min(c.n for c in released["SUM"].classes) < privacy.minimum_cohort:
                            secure.append(0.5)  # the centre refuses the sum: nothing to fit from
                            continue
                        try:
                            model = lda.fit(pool(_training_rows(released, features, TrainingRow, eps, privacy.delta),
                                                 features), name)
                            secure.append(rank_auc(model.logit(x_test), y_test))
                        except (AggregatorError, np.linalg.LinAlgError):
                            secure.append(0.5)
                    fed, one = np.array(federated), np.array(single)
                    sec = np.array(secure) if secure else np.array([np.nan])
                    label = "∞" if math.isinf(eps) else f"{eps:g}"
                    sd = (lambda a: "" if len(a) == 1 else f" ± {a.std():.3f}")
                    secure_cols = ((f"{sec.mean():.3f}{sd(sec)}", f"{sec.mean() - one.mean():+.3f}")
                                   if args.secure else ())
                    out.append((name, split, f"{per:,}", label, f"{auc_central:.3f}", f"{auc_lr:.3f}",
                                f"{one.mean():.3f}{sd(one)}", f"{fed.mean():.3f}{sd(fed)}",
                                f"{fed.mean() - one.mean():+.3f}", *secure_cols, f"{fed.mean() - auc_central:+.3f}",
                                f"{refused}/{draws}" + (f" ({lost} unfit)" if lost else "")))
                    if eps == 1.0:
                        best = sec if args.secure else fed  # the goal is judged on what the federation would run
                        summary.append((name, split, f"{per:,}", f"{d}", f"{fed.mean() - one.mean():+.3f}",
                                        *((f"{sec.mean() - one.mean():+.3f}",) if args.secure else ()),
                                        "yes" if best.mean() - one.mean() >= -0.01 else "no",
                                        f"{best.mean() - auc_central:+.3f}",
                                        ("yes" if best.mean() - auc_central >= -0.02 else "no")
                                        if per >= 1000 and d <= 25 else "(n/a)"))
        print(f"  done ({time.perf_counter() - began:.0f} s)", flush=True)
    print()
    secure_head = ["secure agg. LDA", "sec − one"] if args.secure else []
    print(table(["dataset", "split", "rows/region", "ε/region", "central LDA", "central LR", "one release, all rows",
                 "federated LDA", "fed − one", *secure_head, "fed − central", "refused (signal)"], out))
    judged = "secure agg." if args.secure else "federated"
    print(f"\nGoals at ε = 1 ({judged}): within 0.01 of one release at every size; within 0.02 of central LDA "
          "with ≥ 1,000 rows per region and ≤ 25 features")
    print(table(["dataset", "split", "rows/region", "d", "fed − one", *(["sec − one"] if args.secure else []),
                 "≤ 0.01", f"{'sec' if args.secure else 'fed'} − central", "≤ 0.02"], summary))


if __name__ == "__main__":
    main()
