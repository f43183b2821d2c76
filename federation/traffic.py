"""The deterministic traffic split both the registry and serving apps agree on.

An entity's bucket is a hash of the region and its key, so it sees the same model on every call
and in every process; canary stages take the lowest buckets, the full stage the rest.
"""

from __future__ import annotations

import hashlib

BUCKETS = 10_000
STAGES = ("shadow", "canary_5", "canary_25", "full")
CANARY_SHARE = {"canary_5": 500, "canary_25": 2_500}  # in buckets (basis points)


def bucket(region: str, entity_key: str | int) -> int:
    digest = hashlib.sha256(f"{region}:{entity_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def shares(occupied: set[str]) -> dict[str, int]:
    """Basis points of traffic per occupied stage: canaries their share, full the rest, shadow none."""
    out: dict[str, int] = {s: CANARY_SHARE[s] for s in ("canary_5", "canary_25") if s in occupied}
    if "full" in occupied:
        out["full"] = BUCKETS - sum(out.values())
    if "shadow" in occupied:
        out["shadow"] = 0
    return out


def route(region: str, entity_key: str | int, occupied: set[str]) -> str | None:
    """The stage whose model answers for this entity, or None when no stage covers its bucket."""
    b = bucket(region, entity_key)
    low = 0
    for stage in ("canary_5", "canary_25"):
        if stage in occupied:
            if b < low + CANARY_SHARE[stage]:
                return stage
            low += CANARY_SHARE[stage]
    return "full" if "full" in occupied else None
