"""Which frames are a party's own speech: detector, noise gate and the two-channel crosstalk rule.

A frame of a channel is that party's speech when the detector says speech, the frame stands
clear of the channel's noise floor, and (two-channel recordings) it is not crosstalk. Crosstalk
is the other party leaking in (a stereo bleed, a line echo): the other channel is at least
``LEAK_CANDIDATE_DB`` louder *and* a delayed copy of it explains at least ``LEAK_RHO2`` of the
frame's energy. Genuine overtalk is kept, because two different voices do not correlate; a per-
channel detector alone cannot make that distinction.

A two-channel recording whose talk is mostly the same sound on both channels (dual mono: a mixed
call written twice) has one party, as a mono recording does: two "parties" that talk over each other
all the time would be a false picture, and a transcript would say every sentence twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from cte1_mcp.audio.frames import FRAME_SECONDS, LEAK_CANDIDATE_DB, MAX_LAG_SECONDS, TWIN_RHO2, CallFrames
from cte1_mcp.audio.metrics import Interval

SPEECH_PROBABILITY = 0.5
#: A frame must be this far above its channel's noise floor (the 2nd percentile of frame levels).
GATE_DB = 9.0
NOISE_PERCENTILE = 2
#: Share of a frame's energy a delayed copy of the louder channel must explain to be crosstalk.
#: Both thresholds sit mid-way in the range where the corpus stays within target (gate 7-12 dB,
#: rho^2 0.35-0.65: docs/analytics.md, "Choosing the voice-activity detector"), not its optimum.
LEAK_RHO2 = 0.5
#: Share of the frames where someone talks that must be twin for the recording to be dual mono. A
#: two-party call has next to none (two voices do not correlate; a leak is 6 dB down or more); a
#: prompt or hold message played to both parties is a minority of a call's talk.
DUAL_MONO_SHARE = 0.8


@dataclass(frozen=True, slots=True)
class Rule:
    """The thresholds, in one place so ``method`` can state them."""

    speech_probability: float = SPEECH_PROBABILITY
    gate_db: float = GATE_DB
    leak_rho2: float = LEAK_RHO2
    crosstalk: bool = True

    def describe(self) -> str:
        crosstalk = (
            f"crosstalk rejected using both channels: a frame is the other party leaking in when the other "
            f"channel is >= {LEAK_CANDIDATE_DB:g} dB louder and a copy of it delayed by up to "
            f"{MAX_LAG_SECONDS * 1000:g} ms explains >= {self.leak_rho2:.0%} of the frame's energy (rho^2)"
            if self.crosstalk
            else "no crosstalk rejection"
        )
        return (
            f"speech probability >= {self.speech_probability:g}; noise gate {self.gate_db:g} dB above the "
            f"channel's noise floor (percentile {NOISE_PERCENTILE} of its frame levels); {crosstalk}; "
            f"a two-channel recording is dual mono (one mixed party) when in >= {DUAL_MONO_SHARE:.0%} of the "
            f"frames where someone talks (after the music veto) both channels carry the same sound (within "
            f"{LEAK_CANDIDATE_DB:g} dB, undelayed rho^2 >= {TWIN_RHO2:g})"
        )


DEFAULT_RULE = Rule()


def speech_frames(frames: CallFrames, rule: Rule = DEFAULT_RULE) -> npt.NDArray[np.bool_]:
    """(channels, frames) booleans: each party's own speech."""
    floor = np.percentile(frames.level_db, NOISE_PERCENTILE, axis=1, keepdims=True) if frames.frames else 0
    own = (frames.speech >= rule.speech_probability) & (frames.level_db >= floor + rule.gate_db)
    if rule.crosstalk and frames.stream.channels == 2:
        own &= frames.leak < rule.leak_rho2
    return np.asarray(own)


def dual_mono(frames: CallFrames, speech: Sequence[Sequence[Interval]]) -> bool:
    """Whether a two-channel recording carries one mixed call on both channels: ``speech``, each
    channel's talk as the analyser keeps it (after the music veto: hold music or a prompt played to
    both parties is the same sound on both channels, but nobody's talk), is mostly twin frames."""
    if frames.stream.channels != 2 or len(speech) != 2:
        return False
    talking = np.zeros(frames.frames, dtype=np.bool_)
    for channel in speech:
        for start, end in channel:
            talking[round(start / FRAME_SECONDS) : round(end / FRAME_SECONDS)] = True
    count = int(np.count_nonzero(talking))
    return count > 0 and int(np.count_nonzero(frames.twin[talking])) >= DUAL_MONO_SHARE * count


def intervals(mask: npt.NDArray[np.bool_]) -> tuple[Interval, ...]:
    """Runs of True frames as (start, end) seconds."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    starts, ends = edges[0::2], edges[1::2]
    return tuple(
        (round(float(a) * FRAME_SECONDS, 3), round(float(b) * FRAME_SECONDS, 3))
        for a, b in zip(starts, ends, strict=True)
    )
