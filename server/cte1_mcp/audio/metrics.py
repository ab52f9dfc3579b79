"""The per-call conversation metrics, as interval arithmetic on each party's talk.

Written once and applied both to what the analyser detected and to a call's ground truth (the
intervals its script placed), so the definitions cannot drift apart. Definitions (docs/tools.md,
"get_call_analytics"):

- talk: a party's speech with pauses shorter than ``BRIDGE_SECONDS`` closed; a **turn** is a
  maximal run of it, **longestMonologue** the longest turn;
- **non-talk**: neither party talking (holds included), **longestSilence** its longest interval,
  **longSilences** those of at least ``LONG_SILENCE_SECONDS``;
- **overtalk**: both talking at once; **overtalkCount**: overlaps of at least ``OVERLAP_SECONDS``;
- **interruptions** of a party: turns it started while the other was already talking whose
  overlap with that talk lasts at least ``OVERLAP_SECONDS`` (shorter ones are backchannels).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass

Interval = tuple[float, float]

BRIDGE_SECONDS = 0.5
#: A run of speech shorter than this (after bridging) is a click or a breath, not a turn.
MIN_TURN_SECONDS = 0.1
LONG_SILENCE_SECONDS = 5.0
OVERLAP_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class PartyMetrics:
    talk_seconds: float
    turns: int
    longest_monologue_seconds: float
    #: None on a mono recording (one channel cannot show who started while the other talked).
    interruptions: int | None


@dataclass(frozen=True, slots=True)
class CallMetrics:
    duration_seconds: float
    parties: tuple[PartyMetrics, ...]
    talk: tuple[tuple[Interval, ...], ...]
    non_talk_seconds: float
    longest_silence: Interval | None
    long_silences: tuple[Interval, ...]
    overtalk_seconds: float | None
    overtalk_count: int | None
    overtalk: tuple[Interval, ...]


def bridge(
    intervals: Sequence[Interval], gap: float = BRIDGE_SECONDS, minimum: float = MIN_TURN_SECONDS
) -> tuple[Interval, ...]:
    """Sorted runs with pauses shorter than ``gap`` closed and runs shorter than ``minimum`` dropped."""
    merged: list[list[float]] = []
    for start, end in sorted(intervals):
        if merged and start - merged[-1][1] < gap:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return tuple((a, b) for a, b in merged if b - a >= minimum)


def union(*channels: Sequence[Interval]) -> tuple[Interval, ...]:
    return bridge([interval for channel in channels for interval in channel], gap=0.0, minimum=0.0)


def intersection(first: Sequence[Interval], second: Sequence[Interval]) -> tuple[Interval, ...]:
    """Where both sorted, non-overlapping interval lists cover (a two-pointer sweep)."""
    out: list[Interval] = []
    i = j = 0
    while i < len(first) and j < len(second):
        start = max(first[i][0], second[j][0])
        end = min(first[i][1], second[j][1])
        if end > start:
            out.append((start, end))
        if first[i][1] < second[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def gaps(intervals: Sequence[Interval], duration: float) -> tuple[Interval, ...]:
    """The complement within [0, duration], the call's start and end included."""
    out: list[Interval] = []
    position = 0.0
    for start, end in intervals:
        if start > position:
            out.append((position, start))
        position = max(position, end)
    if duration > position:
        out.append((position, duration))
    return tuple(out)


def interruptions(party: Sequence[Interval], other: Sequence[Interval]) -> int:
    """Turns of ``party`` begun inside a turn of ``other`` that overlap it for OVERLAP_SECONDS or more."""
    starts = [other_start for other_start, _ in other]
    count = 0
    for start, end in party:
        index = bisect_left(starts, start) - 1  # the one turn of ``other`` (sorted, disjoint) begun before
        if index >= 0 and start < other[index][1] and min(end, other[index][1]) - start >= OVERLAP_SECONDS:
            count += 1
    return count


def compute(speech: Sequence[Sequence[Interval]], duration: float) -> CallMetrics:
    """Every metric from each channel's raw speech intervals (seconds) on a call of ``duration``."""
    talk = tuple(bridge([(max(0.0, a), min(duration, b)) for a, b in channel]) for channel in speech)
    everyone = union(*talk)
    silences = gaps(everyone, duration)
    longest = max(silences, key=lambda s: s[1] - s[0], default=None)
    two = len(talk) == 2
    overtalk = intersection(talk[0], talk[1]) if two else ()
    parties = tuple(
        PartyMetrics(
            talk_seconds=sum(b - a for a, b in turns),
            turns=len(turns),
            longest_monologue_seconds=max((b - a for a, b in turns), default=0.0),
            interruptions=interruptions(turns, talk[1 - index]) if two else None,
        )
        for index, turns in enumerate(talk)
    )
    return CallMetrics(
        duration_seconds=duration,
        parties=parties,
        talk=talk,
        non_talk_seconds=sum(b - a for a, b in silences),
        longest_silence=longest,
        long_silences=tuple(s for s in silences if s[1] - s[0] >= LONG_SILENCE_SECONDS),
        overtalk_seconds=sum(b - a for a, b in overtalk) if two else None,
        overtalk_count=sum(1 for a, b in overtalk if b - a >= OVERLAP_SECONDS) if two else None,
        overtalk=overtalk,
    )
