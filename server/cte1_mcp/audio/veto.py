"""Second opinion on long stretches of talk: music on hold is not talk.

WebRTC's detector (a GMM on band energies) calls almost any harmonic sound speech: measured on a
synthetic hold melody it flags 98% of it, Silero 0%. A hold with music would count as a minute
of the agent's talk. Running Silero on the whole call costs 6x WebRTC's time (docs/analytics.md), and merely
loading it quadruples the analysis's memory (+32 MiB on a 5-minute call), so it only re-hears a channel's **long stretches** (runs of its
turns with pauses under ``RUN_GAP_SECONDS`` spanning at least ``VETO_MIN_SECONDS``: a hold is
long) that either hold a turn of ``VETO_MIN_SECONDS`` or are **steady**: the median change of
level from one 10 ms frame of talk to the next is under ``STEADY_DB``. Notes are held and fade
slowly (a hold melody: 0.35-0.39 dB); speech rises and falls with every syllable (the corpus's
stretches of talk: 1.9-2.3 dB), so ordinary conversation never pays for the second detector.

Within a stretch, a turn of at least ``VETO_MIN_SECONDS`` is judged in ``VETO_STRETCH_SECONDS``
pieces (a hold may follow the agent's "please hold" without a pause): a piece in which Silero hears
speech in less than ``VETO_SPEECH_SHARE`` of its windows is removed. The stretch's shorter turns
are first judged together: a melody with rests breaks into turns too short for a verdict each,
but over the whole stretch music is plain. Only when Silero hears speech in less than
``VETO_SPEECH_SHARE`` of all their windows (the stretch is music) are they judged in pieces like
a long turn, so the "please hold" bridged onto the first notes stays; a stretch of ordinary
conversation is never cut into pieces (half a second at a turn's edge may hold little speech).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from cte1_mcp.audio.decode import AudioStream, Checkpoint, iter_blocks
from cte1_mcp.audio.frames import FRAME_SECONDS
from cte1_mcp.audio.metrics import Interval, bridge
from cte1_mcp.audio.vad import SileroDetector

VETO_MIN_SECONDS = 8.0
#: Turns of one channel this close together form one stretch (a melody's rests are shorter;
#: one party's turns on either side of the other's reply mostly are not).
RUN_GAP_SECONDS = 2.0
VETO_STRETCH_SECONDS = 0.5
VETO_SPEECH_SHARE = 0.2
VETO_PROBABILITY = 0.5
#: A stretch of short turns is re-heard when its talk's median level change per frame is under this.
STEADY_DB = 1.0


def describe() -> str:
    return (
        f"stretches of a channel's talk with pauses under {RUN_GAP_SECONDS:g} s spanning {VETO_MIN_SECONDS:g} s "
        f"or more that hold a turn as long or are steady (median level change between 10 ms frames of talk "
        f"under {STEADY_DB:g} dB) are re-heard by Silero VAD: in turns of {VETO_MIN_SECONDS:g} s or more, "
        f"{VETO_STRETCH_SECONDS:g} s pieces in which it hears speech in under {VETO_SPEECH_SHARE:.0%} of its "
        f"windows are not talk, and so are those of the stretch's shorter turns when it hears speech in under "
        f"{VETO_SPEECH_SHARE:.0%} of all their windows (music on hold)"
    )


def veto_non_speech(
    file: BinaryIO,
    stream: AudioStream,
    speech: list[tuple[Interval, ...]],
    levels: npt.NDArray[np.float32] | None = None,
    checkpoint: Checkpoint | None = None,
) -> tuple[list[tuple[Interval, ...]], list[tuple[int, Interval]]]:
    """Each channel's speech without what Silero does not hear as speech in its long stretches,
    and what was removed. ``levels`` (channels x 10 ms frames, dBFS) tells which stretches are
    steady; without it every long stretch is re-heard."""
    kept: list[tuple[Interval, ...]] = []
    vetoed: list[tuple[int, Interval]] = []
    detector: SileroDetector | None = None
    for channel, intervals in enumerate(speech):
        removed: list[Interval] = []
        turns = bridge(intervals)
        for run in bridge(turns, gap=RUN_GAP_SECONDS, minimum=0.0):
            if run[1] - run[0] < VETO_MIN_SECONDS:
                continue
            inside = [turn for turn in turns if run[0] <= turn[0] and turn[1] <= run[1]]
            has_long_turn = any(turn[1] - turn[0] >= VETO_MIN_SECONDS for turn in inside)
            if not has_long_turn and levels is not None and not steady(levels[channel], intervals, run):
                continue
            if detector is None:
                detector = SileroDetector(stream.sample_rate)  # loads its model only when needed
            heard = hear(file, stream, detector, channel, run, checkpoint)
            short = [turn for turn in inside if turn[1] - turn[0] < VETO_MIN_SECONDS]
            for turn in inside:
                if turn[1] - turn[0] >= VETO_MIN_SECONDS:
                    removed += heard.non_speech(turn)
            if short and heard.speech_share(short) < VETO_SPEECH_SHARE:  # the stretch is music
                for turn in short:
                    removed += heard.non_speech(turn)
        removed.sort()
        vetoed += [(channel, stretch) for stretch in removed]
        kept.append(subtract(intervals, removed))
    return kept, vetoed


def steady(levels: npt.NDArray[np.float32], speech: Sequence[Interval], stretch: Interval) -> bool:
    """Whether the level of ``speech`` within ``stretch`` changes little from frame to frame."""
    first, last = round(stretch[0] / FRAME_SECONDS), min(round(stretch[1] / FRAME_SECONDS), len(levels))
    talking = np.zeros(max(0, last - first), dtype=bool)
    for start, end in speech:
        if end > stretch[0] and start < stretch[1]:
            talking[
                max(0, round(start / FRAME_SECONDS) - first) : max(0, round(end / FRAME_SECONDS) - first)
            ] = True
    changes = np.abs(np.diff(levels[first:last]))[talking[1:] & talking[:-1]]
    return bool(changes.size) and float(np.median(changes)) < STEADY_DB


@dataclass(frozen=True, slots=True)
class Heard:
    """Silero's speech probabilities over one stretch of one channel, window by window."""

    start: float
    end: float
    window_seconds: float
    probabilities: npt.NDArray[np.float32]

    def _index(self, moment: float) -> int:
        return min(len(self.probabilities), max(0, round((moment - self.start) / self.window_seconds)))

    def speech_share(self, turns: Sequence[Interval]) -> float:
        """The share of the windows inside ``turns`` that Silero hears as speech."""
        votes = [self.probabilities[self._index(a) : self._index(b)] >= VETO_PROBABILITY for a, b in turns]
        windows = sum(len(v) for v in votes)
        return sum(int(np.count_nonzero(v)) for v in votes) / windows if windows else 1.0

    def non_speech(self, turn: Interval) -> list[Interval]:
        """The ``VETO_STRETCH_SECONDS`` pieces of ``turn`` in which Silero hears (almost) no speech, merged."""
        first, last = self._index(turn[0]), self._index(turn[1])
        per_piece = max(1, round(VETO_STRETCH_SECONDS / self.window_seconds))
        out: list[Interval] = []
        for index in range(first, last, per_piece):
            votes = self.probabilities[index : min(index + per_piece, last)] >= VETO_PROBABILITY
            if votes.mean() < VETO_SPEECH_SHARE:
                start = max(turn[0], self.start + index * self.window_seconds)
                end = min(turn[1], self.start + (index + len(votes)) * self.window_seconds)
                if out and abs(out[-1][1] - start) < 1e-6:
                    out[-1] = (out[-1][0], end)
                else:
                    out.append((start, end))
        return out


def hear(
    file: BinaryIO,
    stream: AudioStream,
    detector: SileroDetector,
    channel: int,
    stretch: Interval,
    checkpoint: Checkpoint | None = None,
) -> Heard:
    """Silero over ``stretch`` of ``channel``, from a fresh state."""
    detector.reset()
    rate = stream.sample_rate
    first, last = round(stretch[0] * rate), round(stretch[1] * rate)
    probabilities = np.concatenate(
        [
            detector.feed(np.ascontiguousarray(block[:, channel]))
            for block in iter_blocks(file, start=first, stop=last, checkpoint=checkpoint)
        ]
        or [np.zeros(0, dtype=np.float32)]
    )
    return Heard(first / rate, last / rate, detector.hop_samples / rate, probabilities)


def subtract(intervals: tuple[Interval, ...], removed: list[Interval]) -> tuple[Interval, ...]:
    """``intervals`` minus ``removed`` (both sorted)."""
    out: list[Interval] = []
    for start, end in intervals:
        pieces = [(start, end)]
        for cut_start, cut_end in removed:
            pieces = [
                part
                for a, b in pieces
                for part in ((a, min(b, cut_start)), (max(a, cut_end), b))
                if part[1] - part[0] > 1e-9
            ]
        out += pieces
    return tuple(out)
