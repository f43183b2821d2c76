"""A secure-aggregation sum and a member's own release at the centre together: each region's
entities counted once, by a fixed order (newest period, then the release speaking for more
regions, then the id), and every release set aside named in a sentence."""

from __future__ import annotations

from fedstore.aggregator.store import TrainingRow
from fedstore.aggregator.training.overlap import one_release_per_region
from fedstore.aggregator.training.pooled import pool

FEATURES = ("v:a", "v:b")


def _release(sid: str, region: str, period: str = "2026-10") -> list[TrainingRow]:
    return [TrainingRow(sid, region, FEATURES, label, 100.0, (10.0, 20.0), (5.0, 1.0, 9.0), 1.0, 1e-6, period)
            for label in (0, 1)]


def test_the_sum_is_kept_and_a_members_own_release_is_set_aside_in_plain_words():
    rows = _release("my-own", "MY") + _release("sum", "ID+MY+SG") + _release("th-own", "TH")
    kept, notes = one_release_per_region(rows)
    assert {r.submission_id for r in kept} == {"sum", "th-own"}
    assert len(notes) == 1 and notes[0].startswith("MY's own release my-own was set aside: MY is already in the "
                                                   "secure-aggregation sum sum (ID+MY+SG)")
    assert "spends no privacy" in notes[0]
    pooled = pool(kept, FEATURES)  # no region twice: the pool's overlap rule is not hit
    assert pooled.n == 400.0 and set(pooled.submissions) == {"sum", "th-own"}


def test_every_member_that_fell_back_is_set_aside_and_the_order_does_not_matter():
    rows = _release("sg-own", "SG") + _release("my-own", "MY") + _release("sum", "MY+SG")
    for shuffled in (rows, rows[::-1]):
        kept, notes = one_release_per_region(shuffled)
        assert {r.submission_id for r in kept} == {"sum"} and len(notes) == 2


def test_a_newer_period_wins_over_an_older_sum():
    rows = _release("sum", "MY+SG", "2026-09") + _release("my-own", "MY", "2026-10") + _release("sg-own", "SG", "2026-10")
    kept, notes = one_release_per_region(rows)
    assert {r.submission_id for r in kept} == {"my-own", "sg-own"}
    assert notes == [notes[0]] and "newer" in notes[0] and "sum" in notes[0]


def test_releases_that_do_not_overlap_are_all_kept_untouched():
    rows = _release("a", "MY") + _release("b", "SG+TH")
    kept, notes = one_release_per_region(rows)
    assert kept == rows and notes == []
