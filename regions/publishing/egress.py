"""The region's own border: every submission the outbox is about to send is checked here first, and
one that breaks a rule never leaves (the centre checks it again on arrival, and more: the accounting,
plausibility, the budget by its own records).

Whatever produced the outbox file (this region's release functions, an older version of them, a hand
that edited it), what crosses is only what these rules let through, each refusal naming its rule as
the centre does ("rule <name>: …"):

- ``size``: the request is at most ``MAX_REQUEST_BYTES``, the centre's own limit;
- ``identity``, ``submission_id``, ``period``: the region's own code, a random id of the content's kind, a month;
- every string is a name the federation agreed, deny by default (a string field with no rule here is
  refused): ``catalog`` (feature refs, training specs), ``segment`` (a segment value of this region),
  ``model`` (a registry name), ``stage``, ``consent`` (a purpose and a random snapshot id); each name
  once (a repeated one would count something of its own); ``personal_data``: no name holds an
  identifier however disguised (``federation.personal_data``);
- ``finite``: every number is finite;
- ``minimum_cohort``: every count a cohort stands behind (a feature's, a segment's, a class's) at
  least the federation's minimum; ``histogram_bins``: a histogram over at least ``ROWS_PER_BIN``
  entities per bin (else its bins would be single rows);
- ``edges``: histograms on the agreed edges, one count per bin.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from fedstore.federation.border_rules import (
    ID_KINDS,
    MAX_REQUEST_BYTES,
    MODEL_NAME,
    PERIOD,
    SNAPSHOT_ID,
    SUBMISSION_ID,
)
from fedstore.federation.consent import Purpose
from fedstore.federation.personal_data import identifier_in
from fedstore.federation.statistics import CATALOG, ROWS_PER_BIN, SEGMENTS
from fedstore.federation.traffic import STAGES
from fedstore.federation.training import SCORE_EDGES, TRAINING_SPECS
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2 as pb
from fedstore.regions.errors import RegionError

class EgressRefused(RegionError):
    """A submission broke a rule of the region's border: it is not sent."""


def check_egress(request: pb.Submission, *, region: str, minimum_cohort: int) -> None:
    """Raise ``EgressRefused`` (naming the rule) unless ``request`` may leave ``region``."""
    size = request.ByteSize()
    if size > MAX_REQUEST_BYTES:
        raise EgressRefused(f"{size:,} bytes; the centre reads at most {MAX_REQUEST_BYTES:,}", rule="size")
    if request.region != region:
        raise EgressRefused(f"names region {request.region[:8]!r}, but it is region {region}'s outbox", rule="identity")
    m = SUBMISSION_ID.fullmatch(request.submission_id)
    if m is None or not request.submission_id.startswith(region.lower() + "-"):
        raise EgressRefused("the id is not '<region>-<stats|train|eval>-<random uuid4>'", rule="submission_id")
    content = _content_kind(request)
    named = ID_KINDS[m.group(1)]
    if named != content:
        raise EgressRefused(f"the id names a {named} release, but it carries {content}", rule="submission_id")
    if not PERIOD.fullmatch(request.period):
        raise EgressRefused("the period is not YYYY-MM", rule="period")
    rules = _rules(region)
    for path, text in _strings(request):
        _check_string(path, text, rules)
    for path, number in _doubles(request):
        if not math.isfinite(number):
            raise EgressRefused(f"{path} is not a finite number", rule="finite")
    _once(request)
    _check_cohorts(request, minimum_cohort)


def _content_kind(request: pb.Submission) -> str:
    kinds = [k for k, present in (("features", bool(request.features) or bool(request.suppressed)),
                                  ("training", request.HasField("training")),
                                  ("evaluation", request.HasField("evaluation"))) if present]
    if len(kinds) != 1:
        raise EgressRefused("a submission carries exactly one of features, training or evaluation", rule="kind")
    return kinds[0]


_REFS = {s.ref for s in CATALOG}
_SPECS = {s.feature_service: s for s in TRAINING_SPECS}


def _segment_value(region: str) -> Callable[[str], bool]:
    return lambda v: any(v in s.values.get(region, ()) for s in SEGMENTS)


# every string field of the contract a region sends: the rule it answers to, what it may hold, and
# whether it is a name to screen for identifiers (an id is random: its shape is its whole rule)
def _rules(region: str) -> dict[str, tuple[str, Callable[[str], bool], bool]]:
    city = _segment_value(region)
    dimension = {s.dimension for s in SEGMENTS}.__contains__
    return {
        "Submission.submission_id": ("submission_id", lambda v: True, False),  # each checked above
        "Submission.region": ("identity", lambda v: True, False),
        "Submission.period": ("period", lambda v: True, False),
        "FeatureStatistics.ref": ("catalog", _REFS.__contains__, True),
        "Submission.suppressed": ("catalog", _REFS.__contains__, True),
        "SegmentStatistics.dimension": ("segment", dimension, True),
        "SegmentStatistics.value": ("segment", city, True),
        "Submission.suppressed_segments": ("segment", city, True),
        "TrainingStatistics.feature_service": ("catalog", _SPECS.__contains__, True),
        "TrainingStatistics.label": ("catalog", {s.label for s in TRAINING_SPECS}.__contains__, True),
        "TrainingStatistics.features": ("catalog", {f for s in TRAINING_SPECS for f in s.features}.__contains__, True),
        "Evaluation.model_name": ("model", lambda v: MODEL_NAME.fullmatch(v) is not None, True),
        "Evaluation.stage": ("stage", lambda v: v == "" or v in STAGES, True),
        "Evaluation.segment_dimension": ("segment", lambda v: v == "" or dimension(v), True),
        "EvaluationSegment.value": ("segment", city, True),
        "Evaluation.suppressed_segments": ("segment", city, True),
        "ConsentBasis.purpose": ("consent", {p.value for p in Purpose}.__contains__, True),
        "ConsentBasis.snapshot_id": ("consent", lambda v: SNAPSHOT_ID.fullmatch(v) is not None, False),
    }


def _check_string(path: str, value: str, rules: dict[str, tuple[str, Callable[[str], bool], bool]]) -> None:
    rule = rules.get(path)
    if rule is None:
        raise EgressRefused(f"{path} is a string field the region's border has no rule for", rule="free_text")
    name, allowed, screened = rule
    found = identifier_in(value) if screened else ""
    if found:
        raise EgressRefused(f"{path} holds what looks like {found}; personal data never leaves the region",
                            rule="personal_data")
    if not allowed(value):
        raise EgressRefused(f"{path} is not a name the federation agreed ({value[:40]!r})", rule=name)


def _once(request: pb.Submission) -> None:
    """Each name once: a repeated name (or one both released and withheld) counts something of its own."""
    released = [f.ref for f in request.features]
    for what, names, rule in [
        ("a feature", released + list(request.suppressed), "catalog"),
        ("a segment", [g.value for g in request.segments] + list(request.suppressed_segments), "segment"),
        ("an evaluation segment", [g.value for g in request.evaluation.segments]
         + list(request.evaluation.suppressed_segments), "segment"),
        *[(f"a feature in {g.value}", [f.ref for f in g.features], "catalog") for g in request.segments],
    ]:
        if len(set(names)) != len(names):
            raise EgressRefused(f"{what} is named twice (released or withheld)", rule=rule)
    if any(not g.features for g in request.segments):
        raise EgressRefused("a segment carries no feature", rule="segment")
    e = request.evaluation
    if (e.segment_dimension or e.segments or e.suppressed_segments) and not e.stage:
        raise EgressRefused("segments of an evaluation belong to outcome evidence (a stage)", rule="segment")


def _fields(message: Message) -> Iterator[tuple[str, FieldDescriptor, object]]:
    """Every ("Message.field", field, value) set in ``message``, nested messages walked, repeated
    ones flattened (timestamps hold only numbers)."""
    for field, value in message.ListFields():
        for v in (list(value) if field.is_repeated else [value]):
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                yield from _fields(v)
            else:
                yield f"{message.DESCRIPTOR.name}.{field.name}", field, v


def _strings(request: pb.Submission) -> Iterator[tuple[str, str]]:
    for path, field, value in _fields(request):
        if field.type == FieldDescriptor.TYPE_STRING:
            yield path, str(value)


def _doubles(request: pb.Submission) -> Iterator[tuple[str, float]]:
    for path, field, value in _fields(request):
        if field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            yield path, float(value)  # type: ignore[arg-type]


def _check_cohorts(request: pb.Submission, minimum: int) -> None:
    if request.accounting.minimum_cohort < minimum:
        raise EgressRefused(f"it claims a minimum cohort of {request.accounting.minimum_cohort}; the federation's is "
                            f"{minimum}", rule="minimum_cohort")
    bins = {s.ref: s for s in CATALOG}
    groups = [("", request.features)] + [(f" in {g.dimension}={g.value}", g.features) for g in request.segments]
    for where, features in groups:
        for f in features:
            spec = bins[f.ref]
            if f.count < minimum:
                raise EgressRefused(f"{f.ref}{where} has count {f.count} < {minimum}", rule="minimum_cohort")
            if tuple(f.edges) != spec.edges or len(f.histogram) != spec.bins:
                raise EgressRefused(f"{f.ref}{where}'s histogram is not on the agreed edges", rule="edges")
            if f.count < spec.least_count:
                raise EgressRefused(f"{f.ref}{where} has {spec.bins} bins for a count of {f.count}; at least "
                                    f"{ROWS_PER_BIN} entities per bin (else its bins are single rows)", rule="histogram_bins")
    if request.HasField("training"):
        for c in request.training.classes:
            if c.n < minimum:
                raise EgressRefused(f"class {c.label} has n {c.n:.1f} < {minimum}", rule="minimum_cohort")
    if request.HasField("evaluation"):
        e = request.evaluation
        if tuple(e.score_edges) != SCORE_EDGES:
            raise EgressRefused("the evaluation's score edges are not the agreed edges", rule="edges")
        for where, classes in [("", e.classes)] + [(f" in {g.value}", g.classes) for g in e.segments]:
            for h in classes:
                if len(h.counts) != len(SCORE_EDGES) - 1:
                    raise EgressRefused(f"class {h.label}{where} is not on the agreed edges", rule="edges")
                if sum(h.counts) < minimum:
                    raise EgressRefused(f"class {h.label}{where} has {sum(h.counts)} < {minimum}", rule="minimum_cohort")


__all__ = ["EgressRefused", "check_egress"]
