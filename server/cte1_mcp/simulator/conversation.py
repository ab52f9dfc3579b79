"""Conversations assembled from the phrase bank at known times, and their ground truth.

A :class:`Conversation` is a script (which phrase each party says when) plus the line's acoustics
(party levels, a stereo bleed, line noise). Rendering it is deterministic, and the ground truth
(each party's speech intervals) is read off the script, never measured from the audio: that is
what lets the analyser be held to it. Channel 0 carries the customer and channel 1 the agent
(``CTE1_CHANNEL_ROLES=customer,agent``); a mono recording carries both parties mixed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import numpy as np
import numpy.typing as npt

from cte1_mcp.simulator.speech import SAMPLE_RATE, phrase, phrase_bank

#: Party index = its channel in a two-channel recording.
CUSTOMER: Literal[0] = 0
AGENT: Literal[1] = 1
Interval = tuple[float, float]


@dataclass(frozen=True, slots=True)
class Line:
    """One phrase said by one party, starting ``start`` seconds into the call."""

    start: float
    party: Literal[0, 1]
    phrase: str


@dataclass(frozen=True, slots=True)
class Acoustics:
    """How the line sounds: per-party level, the other party leaking in, background noise."""

    #: Gain applied to each party's phrases (the bank is normalised to -20 dBFS active).
    party_gain_db: tuple[float, float] = (0.0, 0.0)
    #: Each channel also carries the other party this many dB down (a stereo bleed), or None.
    bleed_db: float | None = None
    #: The bleed's delay, as a hybrid's echo path would add.
    bleed_delay_ms: float = 2.0
    #: Gaussian line noise on every channel at this RMS level, or None for digital silence.
    noise_dbfs: float | None = -62.0
    #: Music on hold (what the customer hears, so on the agent's channel) at this RMS level, or None.
    hold_music_dbfs: float | None = None


@dataclass(frozen=True, slots=True)
class Conversation:
    """A script of lines on a call of ``seconds``, and how it is recorded."""

    seconds: float
    lines: tuple[Line, ...]
    acoustics: Acoustics = field(default_factory=Acoustics)
    seed: int = 0
    #: Where the agent put the customer on hold (seconds): silent, or music with ``hold_music_dbfs``.
    holds: tuple[Interval, ...] = ()

    @property
    def frames(self) -> int:
        return round(self.seconds * SAMPLE_RATE)

    def truth(self, channels: Literal[1, 2]) -> tuple[tuple[Interval, ...], ...]:
        """Per channel, the voiced intervals (seconds) the script put there; mono: both parties'."""
        per_party: list[list[Interval]] = [[], []]
        end_of_call = self.seconds
        for line in self.lines:
            for start, end in phrase(line.phrase).spans:
                a = line.start + start / SAMPLE_RATE
                b = min(line.start + end / SAMPLE_RATE, end_of_call)
                if b > a:
                    per_party[line.party].append((a, b))
        if channels == 1:
            return (_union(per_party[0] + per_party[1]),)
        return (_union(per_party[0]), _union(per_party[1]))


def _union(intervals: list[Interval]) -> tuple[Interval, ...]:
    merged: list[list[float]] = []
    for start, end in sorted(intervals):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return tuple((a, b) for a, b in merged)


def hold_music(frames: int, seed: int) -> npt.NDArray[np.float32]:
    """A seeded melody of plucked harmonic notes (unit RMS): no words, so never anyone's talk."""
    rng = np.random.default_rng(seed + 1)
    note = int(0.4 * SAMPLE_RATE)
    t = np.arange(note, dtype=np.float32) / SAMPLE_RATE
    envelope = np.exp(-4.0 * t, dtype=np.float32)
    out = np.zeros(frames + note, dtype=np.float32)
    for start in range(0, frames, note):
        pitch = 262.0 * 2 ** (int(rng.integers(0, 15)) / 12)
        tone = np.zeros(note, dtype=np.float32)
        for harmonic in (1, 2, 3, 4):
            tone += np.sin(2 * np.pi * pitch * harmonic * t) / harmonic
        out[start : start + note] += envelope * tone
    music = out[:frames]
    rms = float(np.sqrt(np.mean(music**2))) if frames else 1.0
    return (music / rms).astype(np.float32)


def render(conversation: Conversation, channels: Literal[1, 2]) -> npt.NDArray[np.int16]:
    """The recording as int16 samples, shape (frames, channels)."""
    frames = conversation.frames
    parties = np.zeros((2, frames), dtype=np.float32)
    acoustics = conversation.acoustics
    for line in conversation.lines:
        samples = phrase(line.phrase).samples
        begin = round(line.start * SAMPLE_RATE)
        if begin >= frames:
            continue
        piece = samples[: frames - begin]
        gain = np.float32(10 ** (acoustics.party_gain_db[line.party] / 20))
        parties[line.party, begin : begin + len(piece)] += piece * gain
    if acoustics.hold_music_dbfs is not None:
        for start, end in conversation.holds:
            begin, stop = round(start * SAMPLE_RATE), min(round(end * SAMPLE_RATE), frames)
            gain = np.float32(10 ** (acoustics.hold_music_dbfs / 20))
            parties[AGENT, begin:stop] += gain * hold_music(stop - begin, conversation.seed)
    if channels == 1:
        tracks = parties.sum(axis=0, keepdims=True)
    else:
        tracks = parties.copy()
        if acoustics.bleed_db is not None:
            delay = round(acoustics.bleed_delay_ms * SAMPLE_RATE / 1000)
            leak = np.float32(10 ** (acoustics.bleed_db / 20))
            tracks[0, delay:] += leak * parties[1, : frames - delay]
            tracks[1, delay:] += leak * parties[0, : frames - delay]
    if acoustics.noise_dbfs is not None:
        rng = np.random.default_rng(conversation.seed)
        sigma = 10 ** (acoustics.noise_dbfs / 20)
        tracks += rng.standard_normal(tracks.shape, dtype=np.float32) * np.float32(sigma)
    pcm = np.clip(np.rint(tracks * 32767.0), -32768, 32767).astype(np.int16)
    return np.ascontiguousarray(pcm.T)


# --- scripted conversations ------------------------------------------------------------------------

_AGENT_TALK = ("ask-business", "ask-name", "yes-indeed", "explain", "ask-number", "apology", "certainly")
_CUSTOMER_TALK = ("complaint", "my-name", "please", "understood", "my-number", "objection", "no-thanks")
_AGENT_EN = ("en-greeting", "en-checking")
_CUSTOMER_EN = ("en-order", "en-thanks")


@dataclass(frozen=True, slots=True)
class Style:
    """What a scripted call contains besides ordinary turn-taking."""

    #: Seconds of hold (agent: "please hold" ... silence ... "thank you for waiting"), or 0.
    hold_seconds: float = 0.0
    #: How many times one party starts 0.8-1.5 s before the other's phrase ends (an overtalk).
    overtalks: int = 0
    #: Backchannels ("はい", "ええ") under the other's turn: overlaps under the 0.5 s grace.
    backchannels: int = 2
    english: bool = False


@lru_cache(maxsize=64)
def scripted(
    seconds: float, seed: int, style: Style = Style(), acoustics: Acoustics = Acoustics()
) -> Conversation:
    """A plausible call of exactly ``seconds``: greeting, alternating turns, the style's events, closing."""
    rng = random.Random(seed)  # noqa: S311 -- reproducible test audio, not secrets
    bank = phrase_bank()
    lines: list[Line] = []
    busy_until = [0.0, 0.0]  # when each party's last phrase ends

    def say(party: Literal[0, 1], phrase: str, start: float) -> float:
        start = max(start, busy_until[party] + 0.3)
        lines.append(Line(round(start, 3), party, phrase))
        busy_until[party] = start + bank[phrase].seconds
        return busy_until[party]

    closing = bank["en-thanks" if style.english else "closing"].seconds
    last_start = seconds - closing - 0.8
    t = say(AGENT, "en-greeting" if style.english else "greeting", rng.uniform(0.4, 0.9))
    t = say(CUSTOMER, "en-order" if style.english else "hello", t + rng.uniform(0.4, 0.9))
    party: Literal[0, 1] = AGENT
    hold_at = rng.uniform(0.3, 0.5) * seconds if style.hold_seconds else None
    holds: list[Interval] = []
    overtalks, backchannels = style.overtalks, style.backchannels
    while True:
        if hold_at is not None and t >= hold_at:
            t = say(AGENT, "checking", t + 0.6)
            holds.append((round(t + 0.3, 3), round(t + style.hold_seconds - 0.3, 3)))
            t = say(AGENT, "thanks-for-waiting", t + style.hold_seconds)
            hold_at, party = None, CUSTOMER
            continue
        pool = (
            (_CUSTOMER_EN if style.english else _CUSTOMER_TALK)
            if party == CUSTOMER
            else (_AGENT_EN if style.english else _AGENT_TALK)
        )
        phrase = rng.choice(pool)
        length = bank[phrase].seconds
        if overtalks and rng.random() < 0.3 and t > 8:
            start = t - rng.uniform(0.8, 1.5)  # starts while the other is still talking
            overtalks -= 1
        else:
            start = t + rng.uniform(0.35, 1.2)
        if max(start, busy_until[party] + 0.3) + length > last_start:
            break
        previous_end = t
        t = max(t, say(party, phrase, start))
        if backchannels and length > 2.5 and rng.random() < 0.6:
            other: Literal[0, 1] = AGENT if party == CUSTOMER else CUSTOMER
            short = "agent-hai" if other == AGENT else "customer-ee"
            # under the speaker's phrase, well after the previous turn ended
            at = max(start + 1.0, previous_end + 0.6)
            if at + bank[short].seconds < start + length - 0.3 and at > busy_until[other] + 0.3:
                say(other, short, at)
                backchannels -= 1
        party = CUSTOMER if party == AGENT else AGENT
    say(AGENT, "en-thanks" if style.english else "closing", max(t + 0.5, last_start))
    return Conversation(
        seconds, tuple(sorted(lines, key=lambda line: line.start)), acoustics, seed, tuple(holds)
    )
