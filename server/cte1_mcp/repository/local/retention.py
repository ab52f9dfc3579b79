"""The retention policy as a pure function: what is stored, the time, the limits → what must go.

Three bounds, in this order: the platform's 31 days (past them the call leaves a tombstone),
this server's own maximum age (counted from the fetch, not the last use), and the total size
(least recently used first; a recording that alone exceeds the bound goes before all others).
No file system here: the store feeds in its index and carries out the answer.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from cte1_mcp.models import CallKey

Expiry = Literal["platform", "max_age"]
Reason = Literal["platform", "max_age", "size"]


@dataclass(frozen=True, slots=True)
class Entry:
    """What the policy needs to know of one stored recording."""

    key: CallKey
    size_bytes: int  # the audio and its artefacts
    fetched_at: datetime
    last_used: float  # POSIX timestamp of the last use (or the commit)
    available_until: datetime | None  # the platform's 31 days, if the call's start is known


@dataclass(frozen=True, slots=True)
class Limits:
    max_age: timedelta
    max_bytes: int

    def __post_init__(self) -> None:
        if self.max_age <= timedelta(0):
            raise ValueError("max_age must be positive")
        if self.max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")


@dataclass(frozen=True, slots=True)
class Removal:
    entry: Entry
    reason: Reason

    @property
    def tombstone(self) -> datetime | None:
        """Past the platform's limit, the date to remember (so no request is spent on it again)."""
        return self.entry.available_until if self.reason == "platform" else None


def expiry(entry: Entry, now: datetime, max_age: timedelta) -> Expiry | None:
    """Why ``entry`` may no longer be kept at ``now``, or None. Overflow-free for any stored date."""
    if entry.available_until is not None and now >= entry.available_until:
        return "platform"
    if now - max_age >= entry.fetched_at:
        return "max_age"
    return None


def eviction_order(entries: Iterable[Entry], max_bytes: int) -> list[Entry]:
    """Who goes first when over size: anything alone larger than the bound, then least recently used."""
    return sorted(entries, key=lambda e: (e.size_bytes <= max_bytes, e.last_used))


def evict_to_fit(
    ordered: Iterable[Entry], total_bytes: int, max_bytes: int, protect: CallKey | None = None
) -> list[Entry]:
    """Take from ``ordered`` (eviction order) until ``total_bytes`` fits; lazily, so a caller with
    a long queue pays only for what it evicts. ``protect`` (a fresh commit, about to be read) is
    kept even when it alone exceeds the bound; it is then first to go at the next call."""
    chosen: list[Entry] = []
    queue = iter(ordered)
    while total_bytes > max_bytes:
        entry = next(queue, None)
        if entry is None:
            break
        if entry.key == protect:
            continue
        chosen.append(entry)
        total_bytes -= entry.size_bytes
    return chosen


def plan(
    entries: Iterable[Entry], now: datetime, limits: Limits, protect: CallKey | None = None
) -> list[Removal]:
    """Everything that must be removed at ``now``: expired ones first, then what exceeds the size."""
    removals: list[Removal] = []
    live: list[Entry] = []
    for entry in entries:
        reason = expiry(entry, now, limits.max_age)
        if reason is None:
            live.append(entry)
        else:
            removals.append(Removal(entry, reason))
    total = sum(entry.size_bytes for entry in live)
    for entry in evict_to_fit(eviction_order(live, limits.max_bytes), total, limits.max_bytes, protect):
        removals.append(Removal(entry, "size"))
    return removals
