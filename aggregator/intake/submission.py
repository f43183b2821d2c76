"""A region's submission as the centre's steps read it: a value object, parsed once at the edge.

The steps (``intake.steps``) read only the fields here. ``release`` is the released statistics
exactly as received: the contract's validators, the quarantine gate and the store read their
numbers from it, and its deterministic serialisation is what a replay is compared by.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from fedstore.aggregator.intake.validation import kind_of
from fedstore.aggregator.store import content_hash
from fedstore.proto.fedstore.aggregator.v1 import aggregator_pb2 as pb


@dataclass(frozen=True)
class Evaluation:
    """A region's noisy score histograms of a registered model."""

    model_name: str
    model_version: int
    counts: Mapping[int, tuple[int, ...]]  # label -> counts per score bin
    # outcome evidence (the loop): the stage the model served at, the declared noise scale, and
    # the same histograms per segment ("home_city=Penang" -> label -> counts); empty otherwise
    stage: str = ""
    noise_scale: float = 0.0
    segments: Mapping[str, Mapping[int, tuple[int, ...]]] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Submission:
    submission_id: str
    region: str
    period: str
    kind: str  # features | training | evaluation
    content_sha256: str
    evaluation: Evaluation | None
    release: pb.Submission


def parse_submission(message: pb.Submission) -> Submission:
    evaluation = None
    if message.HasField("evaluation"):
        e = message.evaluation
        evaluation = Evaluation(
            e.model_name, e.model_version, MappingProxyType({h.label: tuple(h.counts) for h in e.classes}),
            stage=e.stage, noise_scale=e.noise_scale,
            segments=MappingProxyType({f"{e.segment_dimension}={g.value}": MappingProxyType(
                {h.label: tuple(h.counts) for h in g.classes}) for g in e.segments}))
    return Submission(message.submission_id, message.region, message.period, kind_of(message),
                      content_hash(message), evaluation, message)
