"""Second opinion on long turns: music on hold is not talk.

WebRTC's detector (a GMM on band energies) calls almost any harmonic sound speech: measured on a
synthetic hold melody it flags 98% of it, Silero 0%. A hold with music would count as a minute
of the agent's talk. Running Silero on the whole call costs 6x WebRTC's time (README), so it only
re-hears turns of at least ``VETO_MIN_SECONDS`` (a hold is long; most turns are not) in stretches
of ``VETO_STRETCH_SECONDS``: a stretch in which it hears speech in less than ``VETO_SPEECH_SHARE`` of
its windows is removed from that party's talk.
"""

from __future__ import annotations

from typing import BinaryIO

import numpy as np

from cte1_mcp.audio.decode import AudioStream, Checkpoint, iter_blocks
from cte1_mcp.audio.metrics import Interval, bridge
from cte1_mcp.audio.vad import SileroDetector

VETO_MIN_SECONDS = 8.0
VETO_STRETCH_SECONDS = 0.5
VETO_SPEECH_SHARE = 0.2
VETO_PROBABILITY = 0.5


def describe() -> str:
    return (
        f"turns of {VETO_MIN_SECONDS:g} s or more are re-heard by Silero VAD in {VETO_STRETCH_SECONDS:g} s "
        f"stretches, and stretches in which it hears speech in under {VETO_SPEECH_SHARE:.0%} of its windows "
        "are not talk (music on hold)"
    )


def veto_non_speech(
    file: BinaryIO,
    stream: AudioStream,
    speech: list[tuple[Interval, ...]],
    checkpoint: Checkpoint | None = None,
) -> tuple[list[tuple[Interval, ...]], list[tuple[int, Interval]]]:
    """Each channel's speech without the stretches of long turns that are not speech, and those stretches."""
    kept: list[tuple[Interval, ...]] = []
    vetoed: list[tuple[int, Interval]] = []
    detector: SileroDetector | None = None
    for channel, intervals in enumerate(speech):
        removed: list[Interval] = []
        for turn in bridge(intervals):
            if turn[1] - turn[0] < VETO_MIN_SECONDS:
                continue
            if detector is None:
                detector = SileroDetector(stream.sample_rate)  # loads its model only when needed
            removed += non_speech(file, stream, detector, channel, turn, checkpoint)
        vetoed += [(channel, stretch) for stretch in removed]
        kept.append(subtract(intervals, removed))
    return kept, vetoed


def non_speech(
    file: BinaryIO,
    stream: AudioStream,
    detector: SileroDetector,
    channel: int,
    turn: Interval,
    checkpoint: Checkpoint | None = None,
) -> list[Interval]:
    """The ``VETO_STRETCH_SECONDS`` stretches of ``turn`` in which Silero hears (almost) no speech, merged."""
    detector.reset()
    rate = stream.sample_rate
    first, last = round(turn[0] * rate), round(turn[1] * rate)
    probabilities = np.concatenate(
        [
            detector.feed(np.ascontiguousarray(block[:, channel]))
            for block in iter_blocks(file, start=first, stop=last, checkpoint=checkpoint)
        ]
        or [np.zeros(0, dtype=np.float32)]
    )
    per_stretch = max(1, round(VETO_STRETCH_SECONDS * rate / detector.hop_samples))
    out: list[Interval] = []
    for index in range(0, len(probabilities), per_stretch):
        votes = probabilities[index : index + per_stretch] >= VETO_PROBABILITY
        if votes.mean() < VETO_SPEECH_SHARE:
            start = turn[0] + index * detector.hop_samples / rate
            end = min(turn[1], start + len(votes) * detector.hop_samples / rate)
            if out and abs(out[-1][1] - start) < 1e-6:
                out[-1] = (out[-1][0], end)
            else:
                out.append((start, end))
    return out


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
