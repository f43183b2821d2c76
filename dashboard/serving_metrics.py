"""Lookups and fallback answers, scraped from the region's serving processes' Prometheus endpoints.

The counters live in the serving processes (``serving/metrics.py``): one endpoint per worker, summed
here. They count since each process started; rates over time are Prometheus' job. An endpoint that
does not answer is named on the page, never silently left out of the sums.
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class ServingCounts:
    lookups_by_code: dict[str, int]  # gRPC status code name → lookups answered with it
    fallback_by_reason: dict[str, int]  # why an answer came from the snapshot
    endpoints: int  # how many answered
    unreachable: tuple[str, ...]  # "<url>: <why>"

    @property
    def lookups(self) -> int:
        return sum(self.lookups_by_code.values())

    @property
    def fallback(self) -> int:
        return sum(self.fallback_by_reason.values())


def scrape(urls: tuple[str, ...], timeout: float = 5.0) -> ServingCounts:
    codes: dict[str, int] = {}
    reasons: dict[str, int] = {}
    answered, unreachable = 0, []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as reply:  # noqa: S310 — the operator's URL
                text = reply.read().decode()
        except (OSError, ValueError) as e:
            unreachable.append(f"{url}: {getattr(e, 'reason', e)}")
            continue
        answered += 1
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == "fedstore_requests_total" and "OnlineFeatures" in s.labels.get("method", ""):
                    codes[s.labels["code"]] = codes.get(s.labels["code"], 0) + int(s.value)
                elif s.name == "fedstore_fallback_answers_total":
                    reasons[s.labels["reason"]] = reasons.get(s.labels["reason"], 0) + int(s.value)
    return ServingCounts(codes, reasons, answered, tuple(unreachable))
