"""Every rule a submission must pass before anything of it is stored.

Rules (each rejection names its rule), in the order they are checked:

- who: ``region`` (a region of the federation), ``identity`` (the caller may act for it),
  ``submission_id`` (``<region>-<stats|train|eval>-<random UUID4>``, its kind the content's);
- when: ``period`` (the centre's own month of receipt, from its clock), ``window`` (whole UTC
  days, ending no later than the day after receipt, at most a year long);
- what: ``accounting`` (present), ``mechanism`` (a known value, the one the release kind allows),
  ``kind``, ``catalog``, ``segment``, ``finite``, ``range``, ``minimum_cohort``, ``non_negative``,
  ``edges``, ``histogram_bins`` (a count of at least ``ROWS_PER_BIN`` per bin), ``dimensions``, ``classes``,
  ``model``, ``personal_data`` (no identifier in a model name), ``stage`` (outcome evidence names a
  registry stage);
- the centre's own accounting (``accounting.py``): ε and δ recomputed with OpenDP from the declared
  noise scales; a claim that disagrees is ``accounting``;
- plausibility within the noise (``plausibility.py``): ``population``, ``sum_range``,
  ``sum_sq_range``, ``variance``, ``histogram_total``, ``view_count``, ``segment_total``,
  ``training_sums``, ``training_products``, ``training_psd``, each at a false-reject
  probability of at most 1e-9 on an honest release.

Wire-level rules (unknown fields, unknown enum values) are checked where requests are parsed
(``wire.py``); the budget needs the store and lives in the servicer.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

from fedstore.aggregator.errors import NotAllowed, Rejected
from fedstore.aggregator.intake import plausibility
from fedstore.aggregator.intake.accounting import Charge, recompute
from fedstore.aggregator.registry.text import personal_data_refusal
from fedstore.aggregator.submission import (
    GAUSSIAN,
    MECHANISMS,
    UNSPECIFIED,
    ConsentClaim,
    Evaluation,
    FeatureStatistics,
    ScoreHistogram,
    Submission,
    TrainingStatistics,
)
from fedstore.federation import PrivacyConfig
from fedstore.federation.border_rules import ID_KINDS, MODEL_NAME, PERIOD, SNAPSHOT_ID, SUBMISSION_ID
from fedstore.federation.consent import Purpose
from fedstore.federation.statistics import ROWS_PER_BIN, SEGMENTS, FeatureSpec
from fedstore.federation.tokens import Caller
from fedstore.federation.traffic import STAGES
from fedstore.federation.training import LABELS, SCORE_EDGES, TRAINING_SPECS, TrainingSpec, triangle_size

# the purpose a release's consent gate filtered its rows for, by kind
_CONSENT_PURPOSE = {"features": Purpose.GLOBAL_STATISTICS, "training": Purpose.GLOBAL_STATISTICS,
                    "evaluation": Purpose.EVALUATION}
_DAY = 86_400
# the longest window a release may describe (a year and a leap day)
MAX_WINDOW = timedelta(days=366)
# No region holds a trillion entities. Counts above it, and sums above what that many clipped
# values (plus noise) can add up to, are refused: what the centre merges from any number of
# submissions then stays inside int64 (counts) and far from float overflow (sums and their squares).
# (The federation's own, tighter cap is privacy.max_entities: rule population.)
MAX_COUNT = 10**12
# Below this ε per query the noise is a billion times a value's range, and the centre's noise
# accounting (1 - e^-ε, 0 in floating point below about 1e-16) can no longer be computed.
MIN_EPSILON_PER_QUERY = 1e-9


def check_identity(sub: Submission, *, caller: Caller, regions: set[str]) -> None:
    """Who may send this id: checked before the store is asked whether the id exists, so a caller
    gets the same answer about another region's id whether it was ever accepted or not."""
    if sub.region not in regions:
        raise Rejected(f"unknown region {sub.region!r}", rule="region")
    if not caller.allows(sub.region):
        raise NotAllowed(f"caller {caller.name!r} may not submit for region {sub.region}", rule="identity")
    m = SUBMISSION_ID.fullmatch(sub.submission_id)
    if m is None or not sub.submission_id.startswith(sub.region.lower() + "-"):
        raise Rejected(f"{sub.submission_id!r} is not '<region>-<stats|train|eval>-<random uuid4>'", rule="submission_id")


def receipt_period(now: datetime) -> str:
    """The month the centre charges a submission received at ``now`` to."""
    return now.astimezone(timezone.utc).strftime("%Y-%m")


def validate(
    sub: Submission,
    *,
    caller: Caller,
    catalog: dict[str, FeatureSpec],
    privacy: PrivacyConfig,
    regions: set[str],
    now: datetime,
) -> Charge:
    """Every rule, in order; the charge the centre computed when all pass."""
    check_identity(sub, caller=caller, regions=regions)
    month = receipt_period(now)
    if not PERIOD.fullmatch(sub.period):
        raise Rejected(f"{sub.period!r} is not YYYY-MM", rule="period")
    if sub.period != month:
        raise Rejected(f"claimed {sub.period}, but the centre received it in {month}; a submission is "
                       "charged to the month it is received in", rule="period")
    _window(sub, now)
    acc = sub.accounting
    if acc is None or acc.mechanism == UNSPECIFIED:
        raise Rejected("privacy accounting (mechanism, ε, δ) is missing", rule="accounting")
    if acc.mechanism not in MECHANISMS:
        raise Rejected(f"{acc.mechanism} is not a mechanism of the contract "
                       f"({', '.join(MECHANISMS)})", rule="mechanism")
    if not (_finite(acc.epsilon) and acc.epsilon > 0 and _finite(acc.delta) and 0 <= acc.delta < 1
            and _finite(acc.epsilon_per_query) and MIN_EPSILON_PER_QUERY <= acc.epsilon_per_query <= acc.epsilon):
        raise Rejected(f"ε must be finite and positive, δ in [0, 1), ε per query in "
                       f"[{MIN_EPSILON_PER_QUERY:g}, ε]", rule="accounting")
    if acc.minimum_cohort < privacy.minimum_cohort:
        raise Rejected(
            f"applied {acc.minimum_cohort}, the federation requires {privacy.minimum_cohort}", rule="minimum_cohort"
        )
    if acc.mechanism == GAUSSIAN and not acc.delta > 0:
        raise Rejected("a Gaussian release must declare its δ > 0", rule="accounting")
    kinds = [k for k, present in (("features", bool(sub.features) or bool(sub.suppressed)),
                                  ("training", sub.training is not None),
                                  ("evaluation", sub.evaluation is not None)) if present]
    if len(kinds) != 1:
        raise Rejected("a submission carries exactly one of features, training or evaluation", rule="kind")
    if (sub.segments or sub.suppressed_segments) and (sub.training is not None or sub.evaluation is not None):
        raise Rejected("segments belong to a features submission", rule="kind")
    kind = kinds[0]
    id_kind = ID_KINDS[sub.submission_id.split("-")[1]]
    if id_kind != kind:
        raise Rejected(f"{sub.submission_id!r} names a {id_kind} submission, but it carries {kind}", rule="submission_id")
    if sub.consent is not None:
        check_consent(sub.consent, kind)
    if sub.training is not None:
        spec = _training(sub.training, privacy)
        charge = recompute(sub, kind, catalog)
        plausibility.training(sub.training, spec, max_entities=privacy.max_entities)
        return charge
    if sub.evaluation is not None:
        _evaluation(sub.evaluation, privacy, sub.region)
        charge = recompute(sub, kind, catalog)
        plausibility.evaluation(sub.evaluation, max_entities=privacy.max_entities)
        return charge
    if not sub.features:
        raise Rejected("a submission must carry at least one feature", rule="features")
    _features(sub.features, catalog, privacy, where="")
    released = {f.ref for f in sub.features}
    if len(set(sub.suppressed)) != len(sub.suppressed) or released & set(sub.suppressed):
        raise Rejected("a feature is suppressed twice, or both suppressed and released", rule="catalog")
    for ref in sub.suppressed:
        if ref not in catalog:
            raise Rejected(f"suppressed {ref!r} is not in the federation's statistics catalog", rule="catalog")
    seen_segments: set[tuple[str, str]] = set()
    for g in sub.segments:
        allowed = _segment_values(g.dimension, sub.region)
        if g.value not in allowed:
            raise Rejected(f"{g.value!r} is not a {g.dimension} of region {sub.region} in the catalog", rule="segment")
        if (g.dimension, g.value) in seen_segments:
            raise Rejected(f"{g.dimension}={g.value} appears twice", rule="segment")
        seen_segments.add((g.dimension, g.value))
        if not g.features:
            raise Rejected(f"{g.dimension}={g.value} carries no feature", rule="segment")
        _features(g.features, catalog, privacy, where=f" in {g.dimension}={g.value}")
    if len({d for d, _ in seen_segments}) > 1:
        raise Rejected("one submission breaks the region down along one segment dimension", rule="segment")
    if len(set(sub.suppressed_segments)) != len(sub.suppressed_segments):
        raise Rejected("a segment is suppressed twice", rule="segment")
    for value in sub.suppressed_segments:
        if not any(value in s.values.get(sub.region, ()) for s in SEGMENTS):
            raise Rejected(f"suppressed {value!r} is not a segment of region {sub.region} in the catalog", rule="segment")
        if any(v == value for _, v in seen_segments):
            raise Rejected(f"{value!r} is both released and suppressed", rule="segment")
    charge = recompute(sub, kind, catalog)
    for where, fs in [("", sub.features)] + [(f" in {g.dimension}={g.value}", g.features) for g in sub.segments]:
        for f in fs:
            plausibility.feature(f, catalog[f.ref], max_entities=privacy.max_entities, where=where)
        plausibility.view_counts(fs, catalog, where=where)
    plausibility.segment_totals(sub)
    return charge


def check_consent(basis: ConsentClaim, kind: str) -> None:
    """Rule consent: the purpose fits the release's kind and the snapshot id is a random UUID's hex
    (a plain release's basis, and each member's of a secure-aggregation round)."""
    want = _CONSENT_PURPOSE[kind]
    if basis.purpose != want.value:
        raise Rejected(f"a {kind} release rests on consent for {want.value}, not {basis.purpose[:40]!r}", rule="consent")
    if not SNAPSHOT_ID.fullmatch(basis.snapshot_id):
        raise Rejected("the consent snapshot id is a random UUID4's 32 lower-case hex digits", rule="consent")


def _window(sub: Submission, now: datetime) -> None:
    if sub.window_start is None or sub.window_end is None:
        raise Rejected("window_start and window_end are required", rule="window")
    for ts in (sub.window_start, sub.window_end):
        # a time of day or a fraction of a second would be a channel of its own: whole days only
        if ts.nanos != 0 or ts.seconds % _DAY != 0:
            raise Rejected("a window is whole UTC days (its ends at midnight, no fraction of a second)", rule="window")
    try:
        start, end = sub.window_start.to_datetime(), sub.window_end.to_datetime()
    except (ValueError, OverflowError):
        raise Rejected("a window timestamp is out of range", rule="window") from None
    if end <= start:
        raise Rejected("window_start must be before window_end", rule="window")
    if end - start > MAX_WINDOW:
        raise Rejected(f"a window is at most {MAX_WINDOW.days} days", rule="window")
    received = now.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    if end > received + timedelta(days=1):
        raise Rejected(f"it ends {end:%Y-%m-%d}, after the day it was received ({received:%Y-%m-%d}): "
                       "statistics of days that have not happened", rule="window")


def valid_period(period: str) -> bool:
    """Is ``period`` a month, YYYY-MM (as every submission's period is)?"""
    return PERIOD.fullmatch(period) is not None


def _segment_values(dimension: str, region: str) -> tuple[str, ...]:
    spec = next((s for s in SEGMENTS if s.dimension == dimension), None)
    if spec is None:
        raise Rejected(f"{dimension!r} is not a segment of the federation's catalog", rule="segment")
    return spec.values.get(region, ())


def _features(features: Iterable[FeatureStatistics], catalog: dict[str, FeatureSpec], privacy: PrivacyConfig,
              *, where: str) -> None:
    seen: set[str] = set()
    for f in features:
        spec = catalog.get(f.ref)
        if spec is None:
            raise Rejected(f"{f.ref!r}{where} is not in the federation's statistics catalog", rule="catalog")
        if f.ref in seen:
            raise Rejected(f"{f.ref} appears twice{where}", rule="catalog")
        seen.add(f.ref)
        if not all(_finite(x) for x in (f.sum, f.sum_sq)):
            raise Rejected(f"{f.ref}{where} has a non-finite sum", rule="finite")
        if (max(f.count, f.null_count, *f.histogram) > MAX_COUNT or abs(f.sum) > MAX_COUNT * spec.sum_sensitivity
                or f.sum_sq > MAX_COUNT * spec.sum_sq_sensitivity):
            raise Rejected(f"{f.ref}{where} has a count, histogram bin or sum beyond what "
                           f"{MAX_COUNT:,} entities can give", rule="range")
        if f.count < privacy.minimum_cohort:
            raise Rejected(f"{f.ref}{where} has count {f.count} < {privacy.minimum_cohort}", rule="minimum_cohort")
        if f.null_count < 0 or f.sum_sq < 0 or any(h < 0 for h in f.histogram):
            raise Rejected(f"{f.ref}{where} has a negative count, histogram bin or sum of squares", rule="non_negative")
        if tuple(f.edges) != spec.edges:
            raise Rejected(f"{f.ref}{where} histogram edges differ from the agreed edges", rule="edges")
        if len(f.histogram) != spec.bins:
            raise Rejected(f"{f.ref}{where} has {len(f.histogram)} bins, the catalog {spec.bins}", rule="edges")
        if f.count < spec.least_count:
            raise Rejected(f"{f.ref}{where} has {spec.bins} bins for a count of {f.count}; at least {ROWS_PER_BIN} "
                           "entities per bin (else its bins are single rows)", rule="histogram_bins")


def _training(t: TrainingStatistics, privacy: PrivacyConfig) -> TrainingSpec:
    spec = next((s for s in TRAINING_SPECS if s.feature_service == t.feature_service), None)
    if spec is None:
        raise Rejected(f"{t.feature_service!r} is not a training spec of the federation", rule="catalog")
    if t.label != spec.label or tuple(t.features) != spec.features:
        raise Rejected(f"training statistics for {spec.feature_service} must use label {spec.label} "
                       "and the spec's features in order", rule="catalog")
    if sorted(c.label for c in t.classes) != list(LABELS):
        raise Rejected(f"training statistics need exactly one block per class {LABELS}", rule="classes")
    d = spec.dimension
    if len(t.xtx) != triangle_size(d):
        raise Rejected(f"XᵀX has {len(t.xtx)} numbers; {d} features need {triangle_size(d)} "
                       "(released once for both classes)", rule="dimensions")
    if not all(_finite(v) for v in t.xtx):
        raise Rejected("XᵀX has a non-finite number", rule="finite")
    if max(abs(v) for v in t.xtx) > MAX_COUNT:
        raise Rejected(f"XᵀX has a number beyond what {MAX_COUNT:,} examples can give", rule="range")
    for c in t.classes:
        if c.xtx:
            raise Rejected(f"class {c.label} carries its own XᵀX; XᵀX is released once for both "
                           "classes (TrainingStatistics.xtx)", rule="dimensions")
        if len(c.sum_x) != d:
            raise Rejected(f"class {c.label} has Σx of {len(c.sum_x)} numbers; {d} features need {d}", rule="dimensions")
        if not all(_finite(v) for v in (c.n, *c.sum_x)):
            raise Rejected(f"class {c.label} has a non-finite number", rule="finite")
        # features are rescaled to [0, 1]: no sum of n examples' values exceeds n
        if max(abs(v) for v in (c.n, *c.sum_x)) > MAX_COUNT:
            raise Rejected(f"class {c.label} has a number beyond what {MAX_COUNT:,} examples can give", rule="range")
        if c.n < privacy.minimum_cohort:
            raise Rejected(f"class {c.label} has n {c.n:.1f} < {privacy.minimum_cohort}", rule="minimum_cohort")
    return spec


def _evaluation(e: Evaluation, privacy: PrivacyConfig, region: str) -> None:
    if not MODEL_NAME.fullmatch(e.model_name) or e.model_version < 1:
        raise Rejected(f"{e.model_name[:80]!r} v{e.model_version} is not a registry name and version", rule="model")
    refusal = personal_data_refusal(e.model_name, "the model name")
    if refusal is not None:
        raise refusal
    if tuple(e.score_edges) != SCORE_EDGES:
        raise Rejected("evaluation score edges differ from the agreed edges", rule="edges")
    if e.stage and e.stage not in STAGES:
        raise Rejected(f"{e.stage[:40]!r} is not a registry stage ({', '.join(STAGES)})", rule="stage")
    if (e.segment_dimension or e.segment_classes or e.suppressed_segments) and not e.stage:
        raise Rejected("segments of an evaluation belong to outcome evidence (a stage)", rule="segment")
    if (e.segment_classes or e.suppressed_segments) and not e.segment_dimension:
        raise Rejected("evaluation segments need their segment_dimension", rule="segment")
    _score_classes(e.classes, privacy, where="")
    if e.segment_dimension:
        allowed = _segment_values(e.segment_dimension, region)
        values = [g.value for g in e.segment_classes] + list(e.suppressed_segments)
        if len(set(values)) != len(values):
            raise Rejected("a segment appears twice (released or suppressed)", rule="segment")
        for v in values:
            if v not in allowed:
                raise Rejected(f"{v[:40]!r} is not a {e.segment_dimension} of region {region} in the catalog", rule="segment")
        for g in e.segment_classes:
            _score_classes(g.classes, privacy, where=f" in {e.segment_dimension}={g.value}")


def _score_classes(classes: Iterable[ScoreHistogram], privacy: PrivacyConfig, *, where: str) -> None:
    classes = list(classes)
    if sorted(h.label for h in classes) != list(LABELS):
        raise Rejected(f"an evaluation needs exactly one histogram per class {LABELS}{where}", rule="classes")
    for h in classes:
        if len(h.counts) != len(SCORE_EDGES) - 1:
            raise Rejected(f"class {h.label}{where} has {len(h.counts)} bins, the agreed edges "
                           f"{len(SCORE_EDGES) - 1}", rule="edges")
        if any(v < 0 for v in h.counts):
            raise Rejected(f"class {h.label}{where} has a negative bin", rule="non_negative")
        if any(v > MAX_COUNT for v in h.counts):
            raise Rejected(f"class {h.label}{where} has a bin beyond what {MAX_COUNT:,} entities can give", rule="range")
        if sum(h.counts) < privacy.minimum_cohort:
            raise Rejected(f"class {h.label}{where} has {sum(h.counts)} < {privacy.minimum_cohort}", rule="minimum_cohort")


def _finite(x: float) -> bool:
    return math.isfinite(x)
