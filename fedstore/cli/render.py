"""Plain-text tables for operators."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Sequence


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=False)).rstrip()  # noqa: E731
    out = [line(list(headers)), line(["-" * w for w in widths])]
    out += [line(r) for r in cells]
    return "\n".join(out)


def influence_table(influence: Sequence[Any]) -> str:
    """Each region's leave-one-out influence (an aggregator or registry ``RegionInfluence`` message)."""
    def auc(i: Any, name: str) -> str:
        return f"{getattr(i, name):.3f}" if i.HasField(name) else "-"
    return "influence (the model refitted without each region; AUC on the other regions' statistics):\n" + table(
        ["region", "share of n", "weight change", "cosine", "others' AUC with", "without", "flag"],
        [[i.region, f"{i.example_share:.1%}", f"{i.weight_change:.1%}", f"{i.weight_cosine:+.3f}",
          auc(i, "auc_others_with"), auc(i, "auc_others_without"),
          "FLAGGED: the others do better without it" if i.flagged else ""] for i in influence])


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 0:
        return "in the future"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%SZ")
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
