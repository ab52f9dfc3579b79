"""Call analytics: who talked how much, silences, overtalk, as the issue-8 JSON (camelCase).

``analyse`` is the whole pipeline on one stored recording (blocking, for a worker thread):
frame features → each party's own speech (detector + noise gate + crosstalk rule) → the metric
definitions of ``metrics.py`` → a :class:`CallAnalytics` with a quotable ``summary`` and a
``method`` that says exactly what measured it.
"""

from __future__ import annotations

from typing import BinaryIO

from pydantic import BaseModel, ConfigDict

from cte1_mcp.audio import metrics
from cte1_mcp.audio.decode import Checkpoint
from cte1_mcp.audio.frames import FRAME_SECONDS, BlockCallback, CallFrames, measure
from cte1_mcp.audio.talk import DEFAULT_RULE, Rule, dual_mono, intervals, speech_frames
from cte1_mcp.audio.vad import DEFAULT_ENGINE, WEBRTC_MODE, EngineName
from cte1_mcp.audio.veto import describe as describe_veto
from cte1_mcp.audio.veto import veto_non_speech

#: Segments in a tool result; the analytics resource has them all.
SEGMENTS_CAP = 500
#: Bumped whenever a change would alter stored analyses (it names the artefact).
ANALYSER_VERSION = 3


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Party(_Model):
    channel: int
    label: str
    talkSeconds: float
    talkPercent: float
    turns: int
    longestMonologueSeconds: float
    interruptions: int | None
    activeLevelDbfs: float | None
    clippedPercent: float


class Silence(_Model):
    startSeconds: float
    endSeconds: float
    durationSeconds: float


class LongSilences(_Model):
    thresholdSeconds: float
    count: int
    totalSeconds: float


class Segment(_Model):
    channel: int
    startSeconds: float
    endSeconds: float


class CallAnalytics(_Model):
    """The ``analytics`` object of get_call_analytics (and, with every segment, the analytics resource)."""

    summary: str
    method: str
    durationSeconds: float
    channels: int
    #: Both channels carry the same mixed call: one party, ``mixed``, on channel 0, as for mono.
    dualMono: bool = False
    parties: list[Party]
    nonTalkSeconds: float
    nonTalkPercent: float
    longestSilence: Silence | None
    longSilences: LongSilences
    overtalkSeconds: float | None
    overtalkPercent: float | None
    overtalkCount: int | None
    segments: list[Segment]
    segmentsTruncated: bool
    #: NaN or infinite samples (a broken floating-point file), analysed as silence.
    nonFiniteSamples: int = 0
    #: What the analyser had to mend or could not trust, in words (also in ``summary``).
    warnings: list[str] = []
    timelineUri: str | None = None

    def capped(self, limit: int = SEGMENTS_CAP) -> CallAnalytics:
        """The tool result's form: at most ``limit`` segments (the resource keeps them all)."""
        if len(self.segments) <= limit:
            return self
        return self.model_copy(update={"segments": self.segments[:limit], "segmentsTruncated": True})

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


def labels(parties: int, roles: tuple[str, ...]) -> list[str]:
    """``CTE1_CHANNEL_ROLES`` when set (two parties only), else ``channel N``; one party (mono, dual
    mono) is ``mixed``."""
    if parties == 1:
        return ["mixed"]
    if len(roles) == 2:
        return list(roles)
    return [f"channel {index}" for index in range(parties)]


def analyse(
    file: BinaryIO,
    roles: tuple[str, ...] = (),
    engine: EngineName = DEFAULT_ENGINE,
    rule: Rule = DEFAULT_RULE,
    on_block: BlockCallback | None = None,
    *,
    music_veto: bool = True,
    checkpoint: Checkpoint | None = None,
) -> CallAnalytics:
    """Analyse one recording (blocking: call it from a worker thread; ``checkpoint`` may stop it
    between blocks)."""
    frames, speech = detect(file, engine, rule, on_block, music_veto=music_veto, checkpoint=checkpoint)
    duration = frames.stream.duration_seconds
    result = metrics.compute(speech, duration)
    return build(frames, result, labels(len(speech), roles), rule, music_veto)


def detect(
    file: BinaryIO,
    engine: EngineName = DEFAULT_ENGINE,
    rule: Rule = DEFAULT_RULE,
    on_block: BlockCallback | None = None,
    *,
    music_veto: bool = True,
    checkpoint: Checkpoint | None = None,
) -> tuple[CallFrames, list[tuple[metrics.Interval, ...]]]:
    """The frame features and each party's own speech (seconds), before the metric definitions: one
    party per channel, except dual mono, whose one party (where either channel talks) is on
    channel 0."""
    frames = measure(file, engine, on_block, checkpoint)
    speech = [intervals(channel) for channel in speech_frames(frames, rule)]
    if music_veto:
        speech, _ = veto_non_speech(file, frames.stream, speech, frames.level_db, checkpoint)
    if dual_mono(frames, speech):
        speech = [metrics.union(*speech)]
    return frames, speech


def build(
    frames: CallFrames, result: metrics.CallMetrics, names: list[str], rule: Rule, music_veto: bool = True
) -> CallAnalytics:
    duration = result.duration_seconds
    stream = frames.stream

    def percent(seconds: float) -> float:
        return round(100 * seconds / duration, 1) if duration else 0.0

    parties = [
        Party(
            channel=index,
            label=names[index],
            talkSeconds=round(party.talk_seconds, 2),
            talkPercent=percent(party.talk_seconds),
            turns=party.turns,
            longestMonologueSeconds=round(party.longest_monologue_seconds, 2),
            interruptions=party.interruptions,
            activeLevelDbfs=_active_level(frames, index, result.talk[index]),
            clippedPercent=round(100 * frames.clipped_samples[index] / stream.frames, 3)
            if stream.frames
            else 0.0,
        )
        for index, party in enumerate(result.parties)
    ]
    longest = result.longest_silence
    segments = sorted(
        (
            Segment(channel=index, startSeconds=round(a, 2), endSeconds=round(b, 2))
            for index, turns in enumerate(result.talk)
            for a, b in turns
        ),
        key=lambda s: (s.startSeconds, s.channel),
    )
    analytics = CallAnalytics(
        summary="",
        method=describe_method(frames, rule, music_veto),
        durationSeconds=round(duration, 2),
        channels=stream.channels,
        dualMono=stream.channels == 2 and len(parties) == 1,
        parties=parties,
        nonTalkSeconds=round(result.non_talk_seconds, 2),
        nonTalkPercent=percent(result.non_talk_seconds),
        longestSilence=None
        if longest is None
        else Silence(
            startSeconds=round(longest[0], 2),
            endSeconds=round(longest[1], 2),
            durationSeconds=round(longest[1] - longest[0], 2),
        ),
        longSilences=LongSilences(
            thresholdSeconds=metrics.LONG_SILENCE_SECONDS,
            count=len(result.long_silences),
            totalSeconds=round(sum(b - a for a, b in result.long_silences), 2),
        ),
        overtalkSeconds=None if result.overtalk_seconds is None else round(result.overtalk_seconds, 2),
        overtalkPercent=None if result.overtalk_seconds is None else percent(result.overtalk_seconds),
        overtalkCount=result.overtalk_count,
        segments=segments,
        segmentsTruncated=False,
        nonFiniteSamples=frames.non_finite_samples,
        warnings=_warnings(frames, dual_mono=stream.channels == 2 and len(parties) == 1),
    )
    return analytics.model_copy(update={"summary": summarise(analytics)})


def _warnings(frames: CallFrames, *, dual_mono: bool) -> list[str]:
    warnings = []
    if dual_mono:
        warnings.append(
            "Both channels carry the same sound (a mixed call recorded twice, dual mono): it was analysed "
            "as one mixed party, like a mono recording; who said what cannot be told apart."
        )
    if bad := frames.non_finite_samples:
        warnings.append(
            f"{bad:,} sample(s) of the recording are not numbers (NaN or infinite, a broken "
            "floating-point file); they were analysed as silence."
        )
    return warnings


def _active_level(frames: CallFrames, channel: int, talk: tuple[metrics.Interval, ...]) -> float | None:
    """Mean power over the party's talk (its pauses inside turns included), in dBFS."""
    import numpy as np

    if not talk:
        return None
    selected = np.zeros(frames.frames, dtype=bool)
    for start, end in talk:
        selected[round(start / FRAME_SECONDS) : round(end / FRAME_SECONDS)] = True
    power = np.power(10.0, frames.level_db[channel][selected] / 10.0)
    return round(float(10 * np.log10(np.mean(power))), 1) if power.size else None


def describe_method(frames: CallFrames, rule: Rule, music_veto: bool = True) -> str:
    mode = f", mode {WEBRTC_MODE}" if frames.engine == "webrtc" else ""
    veto = f"; {describe_veto()}" if music_veto else ""
    return (
        f"Voice activity: {frames.engine} {frames.engine_version}{mode} per channel "
        f"on {FRAME_SECONDS * 1000:g} ms frames at {frames.stream.sample_rate} Hz; {rule.describe()}{veto}. "
        f"Talk bridges pauses under {metrics.BRIDGE_SECONDS:g} s and drops runs under {metrics.MIN_TURN_SECONDS:g} s; "
        f"overtalkCount and interruptions count overlaps of at least {metrics.OVERLAP_SECONDS:g} s "
        f"(shorter ones are backchannels); long silences are at least {metrics.LONG_SILENCE_SECONDS:g} s. "
        f"Percentages are of durationSeconds. Analyser version {ANALYSER_VERSION}."
    )


def summarise(a: CallAnalytics) -> str:
    """One paragraph an assistant can quote."""
    minutes = a.durationSeconds / 60
    talk = "; ".join(
        f"{'speech (both parties mixed)' if p.label == 'mixed' else p.label} took {p.talkSeconds:.0f} s "
        f"({p.talkPercent:.0f}%) in {p.turns} turns"
        for p in a.parties
    )
    kind = "dual-mono" if a.dualMono else "two-channel" if a.channels == 2 else "mono"
    parts = [f"A {minutes:.1f}-minute {kind} call: {talk}."]
    silence = f"Nobody talked for {a.nonTalkSeconds:.0f} s ({a.nonTalkPercent:.0f}%)"
    if a.longestSilence is not None:
        s = a.longestSilence
        silence += f"; the longest silence was {s.durationSeconds:.1f} s (from {clock(s.startSeconds)} to {clock(s.endSeconds)})"
    long_ones = counted(a.longSilences.count, "silence")
    silence += f", and {long_ones} lasted {a.longSilences.thresholdSeconds:g} s or more."
    parts.append(silence)
    if a.overtalkSeconds is None or a.overtalkCount is None:  # both None together (mono)
        parts.append(
            f"Overtalk and interruptions cannot be measured on a {kind} recording (both parties share one channel)."
        )
    else:
        interrupted = ", ".join(f"{p.label} {p.interruptions}" for p in a.parties)
        parts.append(
            f"They talked over each other for {a.overtalkSeconds:.1f} s ({a.overtalkPercent:.1f}%), "
            f"{times(a.overtalkCount)} for {metrics.OVERLAP_SECONDS:g} s or more; interruptions: {interrupted}."
        )
    parts += [f"Warning: {warning}" for warning in a.warnings]
    return " ".join(parts)


def counted(count: int, noun: str) -> str:
    """``no silences``, ``1 silence``, ``2 silences`` (regular plurals: the nouns are ours)."""
    if count == 0:
        return f"no {noun}s"
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def times(count: int) -> str:
    """``never``, ``once``, ``2 times``."""
    return "never" if count == 0 else "once" if count == 1 else f"{count} times"


def clock(seconds: float) -> str:
    """``m:ss`` (the summary's and the timeline caption's way of naming a moment)."""
    whole = int(seconds)
    return f"{whole // 60}:{whole % 60:02d}"
