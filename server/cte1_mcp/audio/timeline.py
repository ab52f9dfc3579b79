"""The timeline picture: one lane per channel, long silences and overtalk marked, an m:ss axis.

Drawn with Pillow (imported on first use, so start-up does not pay for it) in a 16-colour palette,
so a 30-minute call stays a few tens of KB while remaining legible at 1200 px wide. Everything is
derived from a complete :class:`CallAnalytics` (all segments), so the picture and the JSON agree.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from cte1_mcp.audio import metrics
from cte1_mcp.audio.analytics import CallAnalytics, clock, counted, times

if TYPE_CHECKING:
    from PIL import ImageDraw, ImageFont

WIDTH = 1200
_LEFT, _RIGHT = 170, 30
_LANE, _GAP = 46, 14
_COLOURS = ("#1f77b4", "#2ca02c")  # channel 0, channel 1
_OVERTALK = "#d62728"
_SILENCE = "#e6e6e6"
_INK = "#222222"
_GRID = "#bbbbbb"


def render_png(analytics: CallAnalytics, title: str = "Call timeline") -> bytes:
    """The PNG (bytes) of a complete analysis."""
    from PIL import Image, ImageDraw, ImageFont

    lanes = len(analytics.parties)
    two = lanes == 2
    top = 58
    lanes_bottom = top + lanes * _LANE + (lanes - 1) * _GAP
    overtalk_y = lanes_bottom + 10
    axis_y = overtalk_y + (22 if two else 0) + 8
    height = axis_y + 40 + 48
    image = Image.new("RGB", (WIDTH, height), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=15)
    small = ImageFont.load_default(size=13)
    bold = ImageFont.load_default(size=18)
    duration = max(analytics.durationSeconds, 0.01)
    span = WIDTH - _LEFT - _RIGHT

    def x(seconds: float) -> float:
        return _LEFT + span * min(max(seconds, 0.0), duration) / duration

    draw.text((12, 10), f"{title}: {_length(duration)}", fill=_INK, font=bold)
    talk = [
        tuple((s.startSeconds, s.endSeconds) for s in analytics.segments if s.channel == party.channel)
        for party in analytics.parties
    ]
    everyone = metrics.union(*talk)
    long_silences = [
        g for g in metrics.gaps(everyone, duration) if g[1] - g[0] >= analytics.longSilences.thresholdSeconds
    ]
    for start, end in long_silences:  # behind the lanes, across all of them
        draw.rectangle((x(start), top - 6, x(end), lanes_bottom + 6), fill=_SILENCE)
        label = f"silence {end - start:.0f} s"
        if x(end) - x(start) > draw.textlength(label, font=small) + 6:
            draw.text(((x(start) + x(end)) / 2, lanes_bottom + 2), label, fill=_INK, font=small, anchor="ma")
    for minute in _ticks(duration):
        draw.line((x(minute), top - 6, x(minute), axis_y), fill=_GRID, width=1)
    for index, party in enumerate(analytics.parties):
        y = top + index * (_LANE + _GAP)
        name = (
            party.label
            if party.label == "mixed" or party.label.startswith("channel")
            else f"{party.label} (ch {party.channel})"
        )
        draw.text((12, y + 6), name, fill=_INK, font=font)
        draw.text((12, y + 26), f"talk {party.talkPercent:.0f}%", fill=_INK, font=small)
        draw.rectangle((_LEFT, y, WIDTH - _RIGHT, y + _LANE), outline=_GRID)
        colour = _COLOURS[index % 2]
        for start, end in talk[index]:
            draw.rectangle((x(start), y + 4, max(x(end), x(start) + 1), y + _LANE - 4), fill=colour)
    if two:
        draw.text((12, overtalk_y + 2), "overtalk", fill=_OVERTALK, font=font)
        for start, end in metrics.intersection(talk[0], talk[1]):
            marked = end - start >= metrics.OVERLAP_SECONDS
            x0, x1 = x(start), max(x(end), x(start) + (3 if marked else 1))
            draw.rectangle(
                (x0, overtalk_y + 3 if marked else overtalk_y + 9, x1, overtalk_y + 19), fill=_OVERTALK
            )
            if marked:  # the counted overlaps also show across the lanes
                draw.line((x0, top, x0, lanes_bottom), fill=_OVERTALK, width=1)
    _axis(draw, small, duration, x, axis_y)
    caption_lines = caption(analytics)
    draw.text((12, axis_y + 36), caption_lines[0], fill=_INK, font=font)
    draw.text((12, axis_y + 58), caption_lines[1], fill=_INK, font=font)
    palette = image.quantize(colors=16, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = io.BytesIO()
    palette.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _ticks(duration: float) -> list[float]:
    """Marks every 15 s, 30 s, 1, 2, 5, 10 … minutes: at most about 15 labels."""
    minutes = duration / 60
    step = next((s for s in (0.25, 0.5, 1, 2, 5, 10, 15, 30, 60) if minutes / s <= 15), 120)
    return [k * step * 60 for k in range(math.floor(minutes / step) + 1)]


def tick_labels(duration: float) -> list[tuple[float, str]]:
    """The axis marks (seconds) with their labels in m:ss, as the caption and summary name moments."""
    return [(seconds, clock(seconds)) for seconds in _ticks(duration)]


def _axis(
    draw: ImageDraw.ImageDraw,
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont,
    duration: float,
    x: Callable[[float], float],
    y: int,
) -> None:
    draw.line((_LEFT, y, WIDTH - _RIGHT, y), fill=_INK, width=1)
    for seconds, label in tick_labels(duration):
        draw.line((x(seconds), y, x(seconds), y + 5), fill=_INK, width=1)
        draw.text((x(seconds), y + 8), label, fill=_INK, font=font, anchor="ma")
    draw.text((WIDTH - _RIGHT, y + 22), "time (m:ss)", fill=_INK, font=font, anchor="ra")


def caption(a: CallAnalytics) -> tuple[str, str]:
    shares = " · ".join(f"{p.label} {p.talkPercent:.0f}%" for p in a.parties)
    first = f"Talk: {shares} · non-talk {a.nonTalkPercent:.0f}% ({a.nonTalkSeconds:.0f} s)"
    silence = a.longestSilence
    longest = (
        f"longest silence {silence.durationSeconds:.1f} s at {clock(silence.startSeconds)}"
        if silence
        else "no silence"
    )
    second = f"{longest} · {counted(a.longSilences.count, 'silence')} of {a.longSilences.thresholdSeconds:g} s or more"
    if a.overtalkCount is None:
        second += f" · overtalk not measurable ({'dual mono' if a.dualMono else 'mono'})"
    else:
        second += (
            f" · overtalk {times(a.overtalkCount)} for {metrics.OVERLAP_SECONDS:g} s or more "
            f"({a.overtalkSeconds:.1f} s in all)"
        )
    return first, second


def _length(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s" if seconds >= 60 else f"{seconds:.1f} s"
