"""Federation-wide statistics merged from accepted submissions. Post-processing of released
numbers only: it costs no privacy budget and never needs a row."""

from __future__ import annotations

from collections import defaultdict

from federation.statistics import FeatureSpec
from proto.fedstore.aggregator.v1 import aggregator_pb2 as pb


def merge(
    rows: list[tuple[str, str, str, int, float, float, list[int]]], catalog: dict[str, FeatureSpec]
) -> pb.GlobalStatistics:
    by_ref: dict[str, dict] = {}
    submissions: list[str] = []
    for submission_id, region, ref, count, total, total_sq, histogram in rows:
        if submission_id not in submissions:
            submissions.append(submission_id)
        acc = by_ref.setdefault(ref, {"count": 0, "sum": 0.0, "sum_sq": 0.0, "hist": None, "regions": defaultdict(int)})
        acc["count"] += count
        acc["sum"] += total
        acc["sum_sq"] += total_sq
        acc["hist"] = list(histogram) if acc["hist"] is None else [a + b for a, b in zip(acc["hist"], histogram, strict=True)]
        acc["regions"][region] += count
    features = []
    for ref in sorted(by_ref):
        acc = by_ref[ref]
        n = max(acc["count"], 1)
        mean = acc["sum"] / n
        variance = max(acc["sum_sq"] / n - mean * mean, 0.0)  # noise can push it below zero
        features.append(pb.GlobalFeature(
            ref=ref, count=acc["count"], mean=mean, variance=variance, edges=list(catalog[ref].edges),
            histogram=acc["hist"],
            regions=[pb.RegionContribution(region=r, count=c) for r, c in sorted(acc["regions"].items())],
        ))
    return pb.GlobalStatistics(features=features, submissions=submissions)
