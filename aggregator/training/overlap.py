"""Each region's entities counted once, when a secure-aggregation sum and a member's own release
both reached the centre (docs/privacy.md, "Secure aggregation": "A region in a sum and alone").

That happens without anyone's fault: a centre that restarts right after storing a sum forgets the
round, its regions cannot learn that their inputs are in it and fall back to releases alone. Adding
both would count the member's entities twice (and break the sensitivity the noise was scaled for),
so the centre keeps one, by a fixed order, and says which it set aside:

1. the newest receipt period first (``latest_training`` already keeps each region's newest);
2. then the release that speaks for more regions: a sum "A+B+C" before A's own. The sum holds A's
   entities as A's own release does, and B's and C's too, with the noise added once for all;
3. then the submission id, so the choice is the same on every run.

Never less privacy: both were released and charged to the region's budget when they were made;
choosing among released statistics is post-processing and spends nothing. Never double counting:
no region is in two kept releases.
"""

from __future__ import annotations

from fedstore.aggregator.store import TrainingRow


def members(region: str) -> tuple[str, ...]:
    """The regions a release speaks for: "A+B+C" is a secure-aggregation sum of three."""
    return tuple(region.split("+"))


def one_release_per_region(rows: list[TrainingRow]) -> tuple[list[TrainingRow], list[str]]:
    """``rows`` (one submission per stored region string) without the releases whose regions another
    kept release already counts, and one plain sentence per release set aside."""
    by_submission: dict[str, list[TrainingRow]] = {}
    for r in rows:
        by_submission.setdefault(r.submission_id, []).append(r)
    order = sorted(by_submission.values(),
                   key=lambda rs: (_desc(rs[0].period), -len(members(rs[0].region)), rs[0].submission_id))
    kept: list[TrainingRow] = []
    counted: dict[str, TrainingRow] = {}  # region → the kept release that counts it
    notes: list[str] = []
    for rs in order:
        first = rs[0]
        already = [counted[m] for m in members(first.region) if m in counted]
        if already:
            other = already[0]
            notes.append(_note(first, other))
            continue
        kept.extend(rs)
        for m in members(first.region):
            counted[m] = first
    kept_ids = {r.submission_id for r in kept}
    return [r for r in rows if r.submission_id in kept_ids], notes


def _desc(period: str) -> tuple[int, ...]:
    """A receipt period (YYYY-MM) as a key that sorts the newest first; "" last."""
    digits = [int(p) for p in period.split("-") if p.isdigit()]
    return tuple(-p for p in digits) if digits else (1,)


def _note(dropped: TrainingRow, kept: TrainingRow) -> str:
    both = sorted(set(members(dropped.region)) & set(members(kept.region)))
    who = ", ".join(both)
    if len(members(kept.region)) > 1 and len(members(dropped.region)) == 1:
        why = (f"{who}'s own release {dropped.submission_id} was set aside: {who} is already in the "
               f"secure-aggregation sum {kept.submission_id} ({kept.region}), which counts its entities once, "
               "with the noise added once for every member")
    elif kept.period != dropped.period:
        why = (f"release {dropped.submission_id} ({dropped.region}, {dropped.period or 'no period'}) was set aside: "
               f"{who} is already counted by the newer {kept.submission_id} ({kept.region}, {kept.period})")
    else:
        why = (f"release {dropped.submission_id} ({dropped.region}) was set aside: {who} is already counted by "
               f"{kept.submission_id} ({kept.region})")
    return why + "; both were released and charged when they were made, so this choice spends no privacy"
