"""Plausible within the noise: each rule here rejects only what no honest release could produce
unless its noise went beyond a bound that holds with probability 1 − 1e-9 (``noise_bounds``).
The noise model of each rule is written beside it. The scales are those the submission declares,
which the centre has already charged for (``accounting``): a region that declares more noise to
loosen a check pays for it in ε.

Notation: a feature's true entity count n, null count N, sum S and sum of squares Q of values
clipped to [lo, hi]; the released ones C = n + L_c, N' = max(N + L_n, 0), S' = S + L_s,
Q' = max(Q + L_q, 0), histogram bins h'_i = max(h_i + L_h, 0), every L an independent Laplace
draw (discrete for counts) of the declared scale b. Clamping at 0 is the region's post-processing:
it moves a number by at most its noise's magnitude. A "bound at p" below is a t with
P(noise ≥ t) ≤ p; the p of one rule's bounds add up to at most 1e-9.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fedstore.aggregator.errors import Rejected
from fedstore.aggregator.intake.noise_bounds import FALSE_REJECT, abs_laplace_sum, chi2, gaussian
from fedstore.aggregator.submission import Evaluation, FeatureStatistics, Submission, TrainingStatistics
from fedstore.federation.statistics import FeatureSpec
from fedstore.federation.training import TrainingSpec, centred, from_triangle, noise_sds

P = FALSE_REJECT


def _slack(*values: float) -> float:
    """Room for floating-point rounding in sums of large numbers."""
    return 1e-9 * sum(abs(v) for v in values) + 1e-9


def _abs(b: float, p: float) -> float:
    """|L| of one Laplace draw of scale b, bound at p."""
    return abs_laplace_sum(1, b, p)


def feature(f: FeatureStatistics, spec: FeatureSpec, *, max_entities: int, where: str) -> None:
    """The rules of one released feature (the scales already checked finite and positive)."""
    b = f.scales
    lo, hi = spec.lower, spec.upper
    c, s, q = float(f.count), f.sum, f.sum_sq

    # rule population: n ≤ max_entities (the federation's cap), and C = n + L_c, so
    # C > max_entities + |L_c| (bound at p) is impossible
    if c - _abs(b.count, P) > max_entities:
        raise Rejected(f"{f.ref}{where} counts {f.count:,} entities, beyond the federation's cap of "
                       f"{max_entities:,} (privacy.max_entities) and its noise", rule="population")

    # rule sum_range: n·lo ≤ S ≤ n·hi with n = C − L_c, so S' − C·hi ≤ |hi|·|L_c| + |L_s| and
    # S' − C·lo ≥ −(|lo|·|L_c| + |L_s|); each of the four magnitudes bound at p/4
    up = abs(hi) * _abs(b.count, P / 4) + _abs(b.sum, P / 4)
    down = abs(lo) * _abs(b.count, P / 4) + _abs(b.sum, P / 4)
    if s > c * hi + up + _slack(s, c * hi) or s < c * lo - down - _slack(s, c * lo):
        raise Rejected(f"{f.ref}{where} sum {s:.6g} is impossible for {f.count:,} values in "
                       f"[{lo:g}, {hi:g}], noise included", rule="sum_range")

    # rule sum_sq_range: n·m ≤ Q ≤ n·M with m, M the least and greatest square in [lo, hi];
    # Q' ≤ C·M + M·|L_c| + |L_q| and Q' ≥ C·m − m·|L_c| − |L_q| (clamping only raises a negative Q')
    big = max(lo * lo, hi * hi)
    small = 0.0 if lo <= 0 <= hi else min(lo * lo, hi * hi)
    up = big * _abs(b.count, P / 4) + _abs(b.sum_sq, P / 4)
    down = small * _abs(b.count, P / 4) + _abs(b.sum_sq, P / 4)
    if q > c * big + up + _slack(q, c * big) or q < c * small - down - _slack(q, c * small):
        raise Rejected(f"{f.ref}{where} sum of squares {q:.6g} is impossible for {f.count:,} "
                       f"values in [{lo:g}, {hi:g}], noise included", rule="sum_sq_range")

    # rule variance: the values' variance lies in [0, (hi − lo)²/4] (Cauchy–Schwarz, Popoviciu):
    # S² ≤ n·Q and n·Q − S² ≤ n²·(hi − lo)²/4. With n, S, Q each within its noise of the released
    # one (bounds at p/3), some point of that box must satisfy both.
    tc, ts, tq = _abs(b.count, P / 3), _abs(b.sum, P / 3), _abs(b.sum_sq, P / 3)
    n_lo, n_hi = max(c - tc, 0.0), max(c + tc, 0.0)
    s_lo, s_hi = s - ts, s + ts
    q_lo, q_hi = max(q - tq, 0.0), max(q + tq, 0.0)
    s2_min = 0.0 if s_lo <= 0 <= s_hi else min(s_lo * s_lo, s_hi * s_hi)
    s2_max = max(s_lo * s_lo, s_hi * s_hi)
    w2 = (hi - lo) ** 2 / 4
    too_spread = all(n * q_lo - s2_max - n * n * w2 > _slack(n * q_lo, s2_max, n * n * w2) for n in (n_lo, n_hi))
    if s2_min > n_hi * q_hi + _slack(s2_min, n_hi * q_hi) or too_spread:
        raise Rejected(f"{f.ref}{where} sum {s:.6g} and sum of squares {q:.6g} of {f.count:,} values "
                       f"give a variance no values in [{lo:g}, {hi:g}] have, noise included", rule="variance")

    # rule histogram_total: Σh = n, so Σh' − C lies within Σ|L_h| + |L_c| (clamping moves a bin
    # by at most its noise): bins + 1 Laplace magnitudes of scale at most max(b_h, b_c), bound at p
    total = sum(f.histogram)
    room = abs_laplace_sum(spec.bins + 1, max(b.histogram, b.count), P)
    if abs(total - f.count) > room:
        raise Rejected(f"{f.ref}{where} histogram total {total:,} does not match count "
                       f"{f.count:,} within its noise (±{room:.0f})", rule="histogram_total")


def view_counts(features: Sequence[FeatureStatistics], catalog: dict[str, FeatureSpec], *, where: str) -> None:
    """rule view_count: every feature of a view is summarised over the view's same entities, so
    n + N (entities with a row, with or without the value) is one number per view. Two features'
    released C + N' differ by at most |L_c1| + |L_n1| + |L_c2| + |L_n2|: four Laplace magnitudes,
    bound at p (each feature against the view's first one, each comparison a check of its own)."""
    first: dict[str, FeatureStatistics] = {}
    for f in features:
        view = catalog[f.ref].view
        a = first.setdefault(view, f)
        if a is f:
            continue
        room = abs_laplace_sum(4, max(a.scales.count, a.scales.null_count, f.scales.count, f.scales.null_count), P)
        gap = (a.count + a.null_count) - (f.count + f.null_count)
        if abs(gap) > room:
            raise Rejected(f"{a.ref} and {f.ref}{where} describe {a.count + a.null_count:,} and "
                           f"{f.count + f.null_count:,} entities of view {view}, which is one set of entities "
                           f"(noise allows ±{room:.0f})", rule="view_count")


def segment_totals(sub: Submission) -> None:
    """rule segment_total: segments hold disjoint entities of the region, so for each feature
    Σ_s n_s ≤ n, and Σ_s C_s − C ≤ Σ_s |L_s| + |L_c|: k + 1 Laplace magnitudes for k segments,
    bound at p. (Fewer is fine: suppressed segments, entities of no listed segment.)"""
    whole = {f.ref: f for f in sub.features}
    parts: dict[str, list[FeatureStatistics]] = {}
    for g in sub.segments:
        for f in g.features:
            parts.setdefault(f.ref, []).append(f)
    for ref, fs in parts.items():
        w = whole.get(ref)
        if w is None:
            continue  # suppressed for the whole region: a noisy count below the cohort, nothing to compare
        room = abs_laplace_sum(len(fs) + 1, max([w.scales.count] + [f.scales.count for f in fs]), P)
        total = sum(f.count for f in fs)
        if total - w.count > room:
            raise Rejected(f"the segments' counts of {ref} add up to {total:,}, more than the "
                           f"region's {w.count:,} (noise allows +{room:.0f})", rule="segment_total")


def training(t: TrainingStatistics, spec: TrainingSpec, *, max_entities: int) -> None:
    """The rules of a training release. Features are rescaled to [0, 1] and each row shrunk to L2
    norm at most C (the spec's ``norm_bound``), so per class 0 ≤ Σx_j ≤ n; over both classes
    0 ≤ (XᵀX)_jk ≤ min(Σx_j, Σx_k), trace(XᵀX) = Σ‖x‖² ≤ C²·n, and the second-moment matrix
    [[n, Σxᵀ], [Σx, XᵀX]] = Σ_i (1, x_i)(1, x_i)ᵀ is positive semi-definite. Noise: Gaussian,
    N(0, σ_p²) on each number of part p, σ_p = noise_scale / weight_p (``part_weights``), independent.

    With a spec's centre m the noise was added to the statistics of x − m and m added back with the
    noisy counts (``federation.training.uncentred``): the range rules below then allow the noise the
    counts carry into Σx and XᵀX (m_j ≤ 1), and the norm and PSD rules run on the statistics of
    x − m recovered exactly (``centred``, the same counts), whose noise is independent as above."""
    d, c2 = spec.dimension, spec.norm_bound**2
    sds = noise_sds(t.noise_scale, spec.norm_bound)
    sig_n, sig_x, sig_t = sds["n"], sds["sum_x"], sds["xtx"]
    classes = list(t.classes)
    k = len(classes)
    centre = spec.centre is not None

    # rule population: n₀ + n₁ ≤ max_entities; the released sum carries N(0, k·σ_n²), bound at p
    n_total = sum(c.n for c in classes)
    if n_total - gaussian(sig_n * math.sqrt(k), P) > max_entities:
        raise Rejected(f"training statistics of {n_total:,.0f} examples, beyond the federation's cap "
                       f"of {max_entities:,} (privacy.max_entities) and the noise", rule="population")

    # rule training_sums: −zσ_x ≤ Σx'_j and Σx'_j − n' ≤ z·√(σ_x² + σ_n²); 2·d·k one-sided-in-two
    # comparisons, each bound at p/(2dk)
    q = P / (2 * d * k)
    low, high = gaussian(math.hypot(sig_x, sig_n) if centre else sig_x, q), gaussian(math.hypot(sig_x, sig_n), q)
    for c in classes:
        for j, v in enumerate(c.sum_x):
            if v < -low - _slack(v) or v - c.n > high + _slack(v, c.n):
                raise Rejected(f"class {c.label} has Σx[{j}] = {v:.6g} with n = {c.n:.6g}; "
                               "features in [0, 1] give 0 ≤ Σx ≤ n, noise included", rule="training_sums")

    # the classes added up: Σx over both carries N(0, k·σ_x²) per number, n N(0, k·σ_n²)
    total_x = [sum(c.sum_x[j] for c in classes) for j in range(d)]
    sig_tx, sig_tn = sig_x * math.sqrt(k), sig_n * math.sqrt(k)

    # rule training_products: −zσ_t ≤ (XᵀX)'_jk and (XᵀX)'_jk − Σx'_j ≤ z·√(σ_t² + k·σ_x²), the same
    # for Σx'_k (x_j·x_k ≤ min(x_j, x_k) on [0, 1]; on the diagonal x_j² ≤ x_j); 3 comparisons per
    # entry of the triangle, each bound at p over their number
    rows, cols = np.triu_indices(d)
    q = P / (3 * len(rows))
    # with a centre, XᵀX also carries m_j·Σx_k's, m_k·Σx_j's and m_j·m_k·n's noise (each m ≤ 1)
    spread = math.sqrt(sig_t**2 + 4 * (sig_tx**2 + sig_tn**2)) if centre else sig_t
    low, high = gaussian(spread, q), gaussian(math.hypot(spread, sig_tx), q)
    for v, j, i in zip(t.xtx, rows.tolist(), cols.tolist(), strict=True):
        if v < -low - _slack(v) or v - min(total_x[j], total_x[i]) > high + _slack(v, total_x[j], total_x[i]):
            raise Rejected(f"XᵀX[{j},{i}] = {v:.6g} with Σx = {total_x[j]:.6g}, "
                           f"{total_x[i]:.6g}; features in [0, 1] give 0 ≤ XᵀX[j,k] ≤ min(Σx_j, Σx_k), noise included", rule="training_products")

    # rule training_norms: trace(XᵀX) = Σ‖x_i‖² ≤ C²·n, and trace(XᵀX)' − C²·n' carries
    # N(0, d·σ_t² + C⁴·k·σ_n²): the rows were shrunk to the bound the noise was scaled for
    if centre:  # the statistics of x − m, as the noise was added to them: ‖x − m‖ ≤ C
        _, moved, moved_xtx = centred(tuple(c.n for c in classes), tuple(tuple(c.sum_x) for c in classes),
                                      tuple(t.xtx), spec.origin)
        total_x = [sum(x[j] for x in moved) for j in range(d)]
    else:
        moved_xtx = tuple(t.xtx)
    diag = from_triangle(list(moved_xtx), d).diagonal()
    trace = float(diag.sum())
    room = gaussian(math.sqrt(d * sig_t**2 + c2**2 * sig_tn**2), P)
    if trace - c2 * n_total > room + _slack(trace, c2 * n_total):
        raise Rejected(f"trace(XᵀX) = {trace:.6g} exceeds C²·n = {c2 * n_total:.6g} "
                       f"(C = {spec.norm_bound:g}, the spec's row-norm bound) beyond the noise (+{room:.3g})", rule="training_norms")

    # rule training_psd: the released second-moment matrix is the true one (PSD) plus a symmetric
    # noise matrix E, so its least eigenvalue is at least −‖E‖₂ ≥ −‖E‖_F. ‖E‖_F² ≤ 2·σ_max²·χ² with
    # (d+1)(d+2)/2 degrees of freedom (each upper-triangle entry counted twice at most), bound at p
    dof = (d + 1) * (d + 2) // 2
    room = math.sqrt(2 * chi2(dof, P)) * max(sig_tn, sig_tx, sig_t)
    m = np.empty((d + 1, d + 1))
    m[0, 0] = n_total
    m[0, 1:] = m[1:, 0] = total_x
    m[1:, 1:] = from_triangle(list(moved_xtx), d)
    least = float(np.linalg.eigvalsh(m)[0])
    if least < -room - _slack(*np.diag(m)):
        raise Rejected(f"the second moments have an eigenvalue of {least:.6g}; "
                       f"a sum of (1, x)(1, x)ᵀ has none below 0, and the noise none below −{room:.3g}", rule="training_psd")


def evaluation(e: Evaluation, *, max_entities: int) -> None:
    """rule population: a class's score histogram counts its entities, each bin within |L| of the
    truth (clamping included): the bins' total beyond max_entities + Σ|L| (bound at p) is impossible."""
    for where, classes in [("", e.classes)] + [(f" in {e.segment_dimension}={g.value}", g.classes) for g in e.segment_classes]:
        for h in classes:
            room = abs_laplace_sum(len(h.counts), e.noise_scale, P)
            if sum(h.counts) - room > max_entities:
                raise Rejected(f"class {h.label}'s evaluation{where} counts {sum(h.counts):,} "
                               f"entities, beyond the federation's cap of {max_entities:,} (privacy.max_entities) "
                               "and the noise", rule="population")
