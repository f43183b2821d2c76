"""The centre's own privacy accounting: from the mechanism a release kind allows, the noise scales a
submission declares and the catalog's public sensitivities, OpenDP computes the ε and δ the centre
charges (``federation.privacy_maps``, the very maps the regions spend with). A claim that disagrees
is rejected; the budget is charged the recomputation, never the claim.

    features ..... Laplace only. Every query of one submission has the same ε per query (a region
                   splits its ε evenly: scale = sensitivity / ε_q); the charge is the composition
                   of 5 queries per feature computed, released or suppressed (a suppressed
                   feature's noise was drawn too; its suppression is decided on it), doubled
                   when the submission carries a segment breakdown (the whole region at ε/2,
                   the disjoint segments together at ε/2: parallel composition). δ = 0.
    training ..... Gaussian only: (ε, δ) of OpenDP's Gaussian at the declared scale on the weighted
                   release (L2 sensitivity 1: the spec's C and budget shares set the weights), its
                   zCDP ρ = 1/(2σ²) converted by OpenDP at the declared δ.
    evaluation ... Laplace only: discrete Laplace on the score histograms, L1 sensitivity 1; outcome
                   evidence with a segment breakdown has sensitivity 2 (an entity is in the whole
                   and in one segment, every segment's noise drawn, suppressed or not). δ = 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from fedstore.aggregator.errors import Rejected
from fedstore.federation.privacy_maps import QUERY_NAMES, evaluation_epsilon, feature_queries, gaussian_epsilon, laplace_epsilon
from fedstore.federation.statistics import FeatureSpec
from fedstore.aggregator.submission import GAUSSIAN, LAPLACE, FeatureStatistics, Submission

# the mechanism each kind of release must use (a training release declared Laplace is refused: it
# would not be charged the δ its Gaussian noise costs)
ALLOWED_MECHANISM = {"features": LAPLACE, "training": GAUSSIAN, "evaluation": LAPLACE}
# how far a claim may differ from the recomputation: floating-point rounding, nothing more
RELATIVE = 1e-6


@dataclass(frozen=True)
class Charge:
    """What the centre charges a submission, by its own computation."""

    epsilon: float
    delta: float
    epsilon_per_query: float


def recompute(sub: Submission, kind: str, catalog: dict[str, FeatureSpec]) -> Charge:
    """The charge of a submission whose shape has been validated; Rejected ("rule mechanism",
    "rule accounting") when its mechanism or its claim disagrees with what its noise costs."""
    acc = sub.claims
    allowed = ALLOWED_MECHANISM[kind]
    if acc.mechanism != allowed:
        raise Rejected(f"a {kind} release must use {allowed} noise, "
                       f"not {acc.mechanism}", rule="mechanism")
    if kind == "features":
        charge = _features(sub, catalog)
    elif kind == "training":
        charge = _training(sub)
    else:
        charge = _evaluation(sub)
    _agrees("ε", acc.epsilon, charge.epsilon)
    _agrees("ε per query", acc.epsilon_per_query, charge.epsilon_per_query)
    if not math.isclose(acc.delta, charge.delta, rel_tol=RELATIVE, abs_tol=0.0):
        raise Rejected(f"claimed δ={acc.delta:.3g}, but a {kind} release with this noise costs "
                       f"δ={charge.delta:.3g} by the centre's recomputation", rule="accounting")
    return charge


def _agrees(what: str, claimed: float, computed: float) -> None:
    if not math.isclose(claimed, computed, rel_tol=RELATIVE, abs_tol=0.0):
        raise Rejected(f"claimed {what}={claimed:.6g}, but the declared noise scales cost "
                       f"{what}={computed:.6g} by the centre's recomputation (OpenDP, the catalog's sensitivities)", rule="accounting")


def _scale(value: float, what: str) -> float:
    if not (math.isfinite(value) and value > 0):
        raise Rejected(f"{what} declares no usable noise scale ({value!r}); "
                       "every released number needs its scale", rule="accounting")
    return value


def _feature_epsilons(features: Iterable[FeatureStatistics], catalog: dict[str, FeatureSpec],
                      where: str) -> list[float]:
    out = []
    for f in features:
        if f.noise is None:
            raise Rejected(f"{f.ref}{where} declares no noise scales", rule="accounting")
        for name, (space, sensitivity) in feature_queries(catalog[f.ref]).items():
            scale = _scale(getattr(f.noise, name), f"{f.ref}{where} {name}")
            try:
                out.append(laplace_epsilon(space, sensitivity, scale))
            except ValueError as e:
                raise Rejected(f"{f.ref}{where} {name}: {e}", rule="accounting") from None
    return out


def _features(sub: Submission, catalog: dict[str, FeatureSpec]) -> Charge:
    if sub.claims.delta != 0:
        raise Rejected("a Laplace release costs no δ; declare δ = 0", rule="accounting")
    released = _feature_epsilons(sub.features, catalog, "")
    in_segments = [eps for g in sub.segments
                   for eps in _feature_epsilons(g.features, catalog, f" in {g.dimension}={g.value}")]
    everything = released + in_segments
    eps_q = max(everything)
    if min(everything) < eps_q * (1 - RELATIVE):
        raise Rejected(f"the noise scales give ε per query from {min(everything):.6g} to {eps_q:.6g}; "
                       "a release spends one ε per query (scale = the catalog's sensitivity / ε per query)", rule="accounting")
    # the queries of every feature computed, released or suppressed: basic composition of pure-DP
    # measurements adds their ε (what OpenDP's composition map does)
    queries = len(QUERY_NAMES)
    whole = sum(released) + eps_q * queries * len(sub.suppressed)
    segmented = bool(sub.segments) or bool(sub.suppressed_segments)
    # segments hold disjoint entities: together they cost what one segment's computed features cost
    # (each segment computes the same features as the whole region)
    segments = eps_q * queries * (len(sub.features) + len(sub.suppressed)) if segmented else 0.0
    return Charge(epsilon=whole + segments, delta=0.0, epsilon_per_query=eps_q)


def _training(sub: Submission) -> Charge:
    t = sub.training
    assert t is not None, "called for training releases only"
    scale = _scale(t.noise_scale, "the training release")
    try:
        eps, delta = gaussian_epsilon(scale, sub.claims.delta)
    except ValueError as e:
        raise Rejected(f"{e}", rule="accounting") from None
    return Charge(epsilon=eps, delta=delta, epsilon_per_query=eps)


def _evaluation(sub: Submission) -> Charge:
    e = sub.evaluation
    assert e is not None, "called for evaluations only"
    if sub.claims.delta != 0:
        raise Rejected("a Laplace release costs no δ; declare δ = 0", rule="accounting")
    scale = _scale(e.noise_scale, "the evaluation")
    try:
        # outcome evidence with segments: an entity counts in the whole and in one segment
        eps = evaluation_epsilon(scale, 2 if e.segment_dimension else 1)
    except ValueError as e:
        raise Rejected(f"{e}", rule="accounting") from None
    return Charge(epsilon=eps, delta=0.0, epsilon_per_query=eps)
