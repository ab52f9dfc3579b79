"""The stretches of a call an engine hears: each party's own talk as this server's analyser found it.

An engine given a whole channel hears the other party's echo, holds and music too, and invents text
there (measured: 151% character error on an echo channel, sentences timed across a 12-s hold). The
analyser already separates a party's own speech from crosstalk, silence and music, so pieces are
built from its talk segments only: a pause of ``SENTENCE_GAP_SECONDS`` or more always ends a piece,
and a piece longer than the engine's window is cut at its longest pauses (a hard cut only when one
stretch of talk has none).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from cte1_mcp.transcribe.base import MAX_PIECE_SECONDS

#: No sentence spans a silence this long: the pause ends the piece.
SENTENCE_GAP_SECONDS = 1.0
#: Talk detection works in 10-ms frames and trims soft onsets and endings; a little audio either
#: side keeps first and last syllables whole (never more than half the pause to the next piece).
PAD_SECONDS = 0.2


@dataclass(frozen=True, slots=True)
class Piece:
    """``start`` to ``end`` seconds of one channel (0 for a mono recording)."""

    channel: int
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


def plan_pieces(
    talk: Iterable[tuple[int, float, float]],
    duration: float,
    *,
    max_seconds: float = MAX_PIECE_SECONDS,
    gap_seconds: float = SENTENCE_GAP_SECONDS,
    pad_seconds: float = PAD_SECONDS,
) -> list[Piece]:
    """Pieces in start order from ``(channel, start, end)`` talk segments (the analyser's)."""
    by_channel: dict[int, list[tuple[float, float]]] = {}
    for channel, start, end in talk:
        if end > start:
            by_channel.setdefault(channel, []).append((max(start, 0.0), min(end, duration)))
    pieces: list[Piece] = []
    for channel, segments in by_channel.items():
        segments.sort()
        groups = _group(segments, gap_seconds)
        spans = [span for group in groups for span in _split(group, max_seconds - 2 * pad_seconds)]
        pieces.extend(_padded(channel, spans, duration, pad_seconds))
    pieces.sort(key=lambda piece: (piece.start, piece.channel))
    return pieces


def _group(segments: list[tuple[float, float]], gap: float) -> list[list[tuple[float, float]]]:
    """Runs of segments whose pauses are all shorter than ``gap`` (overlapping ones merged)."""
    groups: list[list[tuple[float, float]]] = []
    for start, end in segments:
        if groups and start - groups[-1][-1][1] < gap:
            last = groups[-1][-1]
            if start <= last[1]:
                groups[-1][-1] = (last[0], max(last[1], end))
            else:
                groups[-1].append((start, end))
        else:
            groups.append([(start, end)])
    return groups


def _split(group: list[tuple[float, float]], limit: float) -> list[tuple[float, float]]:
    """A group as spans of at most ``limit`` seconds: cut at the longest pause first, so the cuts
    fall where the speaker paused; a single stretch with no pause is cut into equal parts."""
    start, end = group[0][0], group[-1][1]
    if end - start <= limit:
        return [(start, end)]
    if len(group) == 1:
        parts = math.ceil((end - start) / limit)
        step = (end - start) / parts
        return [(start + i * step, start + (i + 1) * step) for i in range(parts)]
    cut = max(range(1, len(group)), key=lambda i: (group[i][0] - group[i - 1][1], -abs(i - len(group) / 2)))
    return _split(group[:cut], limit) + _split(group[cut:], limit)


def _padded(channel: int, spans: list[tuple[float, float]], duration: float, pad: float) -> list[Piece]:
    """Spans widened by ``pad`` on each side, never past the recording or half-way into a pause."""
    pieces = []
    for index, (start, end) in enumerate(spans):
        before = spans[index - 1][1] if index else -math.inf
        after = spans[index + 1][0] if index + 1 < len(spans) else math.inf
        pieces.append(
            Piece(
                channel,
                round(max(0.0, start - pad, (before + start) / 2), 3),
                round(min(duration, end + pad, (end + after) / 2), 3),
            )
        )
    return pieces
