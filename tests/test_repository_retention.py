"""The retention policy, as a pure function: no file system, no clock, just entries and limits."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from cte1_mcp.models import CallKey
from cte1_mcp.repository.local.retention import Entry, Limits, Removal, evict_to_fit, expiry, plan

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
LIMITS = Limits(max_age=24 * HOUR, max_bytes=3000)


def entry(
    session: int,
    *,
    size: int = 1000,
    fetched: timedelta = HOUR,
    used: timedelta = HOUR,
    until: datetime | None = None,
) -> Entry:
    """A recording fetched ``fetched`` ago and last used ``used`` ago."""
    return Entry(
        key=CallKey("0311112222", session, 1),
        size_bytes=size,
        fetched_at=NOW - fetched,
        last_used=(NOW - used).timestamp(),
        available_until=until,
    )


def reasons(removals: list[Removal]) -> list[tuple[int, str]]:
    return [(removal.entry.key.session_id, removal.reason) for removal in removals]


def test_nothing_to_remove_within_every_bound() -> None:
    assert plan([entry(1), entry(2)], NOW, LIMITS) == []


def test_max_age_counts_from_the_fetch_not_the_last_use() -> None:
    fresh_use = entry(1, fetched=24 * HOUR, used=timedelta(0))
    assert reasons(plan([fresh_use], NOW, LIMITS)) == [(1, "max_age")]
    assert plan([entry(1, fetched=24 * HOUR - timedelta(seconds=1))], NOW, LIMITS) == []


def test_the_platforms_31_days_win_over_max_age_and_leave_a_tombstone() -> None:
    until = NOW - timedelta(seconds=1)
    [removal] = plan([entry(1, fetched=30 * HOUR, until=until)], NOW, LIMITS)
    assert removal.reason == "platform"
    assert removal.tombstone == until
    [aged] = plan([entry(2, fetched=30 * HOUR)], NOW, LIMITS)
    assert aged.tombstone is None


def test_expiry_of_a_start_in_year_9999_does_not_overflow() -> None:
    far = Entry(CallKey("1", 1, 1), 1, datetime(9999, 12, 31, tzinfo=UTC), 0.0, None)
    assert expiry(far, NOW, timedelta(days=31)) is None


def test_over_size_the_least_recently_used_go_first_until_it_fits() -> None:
    entries = [entry(1, used=3 * HOUR), entry(2, used=HOUR), entry(3, used=2 * HOUR), entry(4, used=0 * HOUR)]
    assert reasons(plan(entries, NOW, LIMITS)) == [(1, "size")]


def test_a_recording_alone_larger_than_the_bound_goes_before_all_others() -> None:
    entries = [entry(1, used=5 * HOUR), entry(2, size=4000, used=timedelta(0))]
    assert reasons(plan(entries, NOW, LIMITS)) == [(2, "size")]


def test_a_protected_fresh_commit_is_kept_even_alone_over_the_bound() -> None:
    big = entry(2, size=4000, used=timedelta(0))
    assert reasons(plan([entry(1), big], NOW, LIMITS, protect=big.key)) == [(1, "size")]


def test_expired_entries_do_not_count_towards_the_size() -> None:
    entries = [entry(1, fetched=25 * HOUR), entry(2), entry(3), entry(4)]
    assert reasons(plan(entries, NOW, LIMITS)) == [(1, "max_age")]


def test_evict_to_fit_takes_only_what_it_needs_from_a_lazy_queue() -> None:
    taken: list[int] = []

    def queue() -> Iterator[Entry]:
        for session in range(1, 100):
            taken.append(session)
            yield entry(session)

    chosen = evict_to_fit(queue(), total_bytes=5500, max_bytes=3000)
    assert [e.key.session_id for e in chosen] == [1, 2, 3]
    assert taken == [1, 2, 3]


@pytest.mark.parametrize(("max_age", "max_bytes"), [(timedelta(0), 1), (HOUR, 0)])
def test_limits_are_checked(max_age: timedelta, max_bytes: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        Limits(max_age=max_age, max_bytes=max_bytes)
