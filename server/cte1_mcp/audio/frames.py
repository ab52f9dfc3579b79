"""One pass over a recording, block by block, into per-10-ms-frame features of each channel.

Per frame and channel: its level (dBFS), the detector's speech probability, and (two-channel only)
how much of its energy a delayed copy of the other channel explains (the leak, max ρ² over lags up
to 8 ms); per frame (two-channel only) whether both channels carry the same sound (twin). Only
features are kept, never the audio, so memory grows with the call by about 16 bytes per channel per
10 ms (these and the detector's output): 6 MB for a 30-minute stereo call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from cte1_mcp.audio.decode import AudioStream, Checkpoint, Repairs, iter_blocks, probe
from cte1_mcp.audio.vad import EngineName, make_detector

FRAME_SECONDS = 0.01
#: The leak is measured only where the other channel is at least this much louder.
LEAK_CANDIDATE_DB = 6.0
#: A frame is twin (the same sound on both channels, as in dual mono) when neither channel is
#: ``LEAK_CANDIDATE_DB`` louder (louder is the crosstalk rule's case) and, undelayed, one explains
#: this share of the other's energy. Two voices, or a voice and line noise, stay far below it; one
#: signal written to both channels is 1.0.
TWIN_RHO2 = 0.9
#: Lags searched for the leak (a stereo bleed is near-simultaneous; a hybrid echo a few ms late).
MAX_LAG_SECONDS = 0.008
#: A sample this close to full scale counts as clipped (μ-law's largest value is -0.2 dBFS).
CLIP_LEVEL = 32000
_EPS = 1e-10
_FULL_SCALE_DB = 20 * np.log10(32768.0)

Floats = npt.NDArray[np.float32]
BlockCallback = Callable[[float, float], None]


@dataclass(frozen=True, slots=True)
class CallFrames:
    """Features of every 10 ms frame; arrays are (channels, frames)."""

    stream: AudioStream
    engine: str
    engine_version: str
    level_db: Floats
    speech: Floats
    #: ρ² of each channel against the other (0 where not measured, and for mono).
    leak: Floats
    clipped_samples: tuple[int, ...]
    #: Per frame: both channels carry the same sound (all False for mono).
    twin: npt.NDArray[np.bool_]
    #: NaN or infinite samples decoded as silence (a floating-point file from a broken writer).
    non_finite_samples: int = 0

    @property
    def frames(self) -> int:
        return int(self.level_db.shape[1])


def measure(
    file: BinaryIO,
    engine: EngineName,
    on_block: BlockCallback | None = None,
    checkpoint: Checkpoint | None = None,
) -> CallFrames:
    """Read ``file`` once and compute every frame's features; ``on_block(seconds done, seconds in
    all)`` after each block (from this thread)."""
    stream = probe(file)
    hop = stream.sample_rate // 100
    total = stream.frames // hop
    channels = stream.channels
    lag = round(MAX_LAG_SECONDS * stream.sample_rate)
    level = np.full((channels, total), -120.0, dtype=np.float32)
    leak = np.zeros((channels, total), dtype=np.float32)
    twin = np.zeros(total, dtype=np.bool_)
    detectors = [make_detector(engine, stream.sample_rate) for _ in range(channels)]
    probabilities: list[list[Floats]] = [[] for _ in range(channels)]
    clipped = [0] * channels
    # pending[0] is global sample `offset`; lag zeros in front give the first frame its context
    pending = np.zeros((lag, channels), dtype=np.int16)
    offset = -lag
    next_frame = 0
    repairs = Repairs()

    def frames_up_to(available_end: int, flush: bool) -> None:
        nonlocal pending, offset, next_frame
        last = total if flush else min(total, (available_end - 2 * hop - lag) // hop + 1)
        if last <= next_frame:
            return
        ks = np.arange(next_frame, last)
        base = ks * hop - offset
        audio = pending.astype(np.float32)
        own = audio[base[:, None] + np.arange(hop)]  # (frames, hop, channels)
        energy = np.mean(own * own, axis=1).T  # (channels, frames)
        level[:, next_frame:last] = 10 * np.log10(energy / 32768.0**2 + _EPS)
        if channels == 2:
            leak[:, next_frame:last] = _leak(audio, base, hop, lag, level[:, next_frame:last])
            twin[next_frame:last] = _twin(own, level[:, next_frame:last])
        drop = last * hop - lag - offset
        pending = pending[drop:]
        offset += drop
        next_frame = last

    for block in iter_blocks(file, repairs=repairs, checkpoint=checkpoint):
        for channel in range(channels):
            column = np.ascontiguousarray(block[:, channel])
            probabilities[channel].append(detectors[channel].feed(column))
            clipped[channel] += int(np.count_nonzero(np.abs(column.astype(np.int32)) >= CLIP_LEVEL))
        pending = np.concatenate([pending, block])
        frames_up_to(offset + len(pending), flush=False)
        if on_block is not None:
            on_block((offset + len(pending)) / stream.sample_rate, stream.duration_seconds)
    decoded = offset + len(pending)
    if decoded < stream.frames:  # the data ended before the header said: measure what is there
        stream = replace(stream, frames=decoded)
        total = decoded // hop
        level, leak, twin = level[:, :total], leak[:, :total], twin[:total]
    pending = np.concatenate([pending, np.zeros((2 * hop + 2 * lag, channels), dtype=np.int16)])
    frames_up_to(offset + len(pending), flush=True)

    speech = np.zeros((channels, total), dtype=np.float32)
    for channel, detector in enumerate(detectors):
        hops = np.concatenate(probabilities[channel]) if probabilities[channel] else np.zeros(0, np.float32)
        # frame k's centre sample, in the detector's hops
        index = ((np.arange(total) * hop + hop // 2) // detector.hop_samples).clip(0, max(len(hops) - 1, 0))
        if len(hops):
            speech[channel] = hops[index]
    return CallFrames(
        stream,
        engine,
        detectors[0].version,
        level,
        speech,
        leak,
        tuple(clipped),
        twin,
        repairs.non_finite_samples,
    )


def _twin(own: Floats, level: Floats) -> npt.NDArray[np.bool_]:
    """Per frame of ``own`` (frames, hop, 2): the channels within ``LEAK_CANDIDATE_DB`` of each other
    and, undelayed, ρ² >= ``TWIN_RHO2`` (digital silence on both is not twin: it has no sound)."""
    a, b = own[:, :, 0].astype(np.float64), own[:, :, 1].astype(np.float64)
    cross = np.sum(a * b, axis=1)
    energy = np.sum(a * a, axis=1) * np.sum(b * b, axis=1)
    rho2 = np.divide(cross * cross, energy, out=np.zeros_like(cross), where=energy > 0)
    near = np.abs(level[0] - level[1]) < LEAK_CANDIDATE_DB
    return np.asarray(near & (rho2 >= TWIN_RHO2))


def _leak(
    audio: npt.NDArray[np.float32], base: npt.NDArray[np.int64], hop: int, lag: int, level: Floats
) -> Floats:
    """Per frame, max over lags of ρ² between a channel's 20 ms window and the other's, where the
    other is clearly louder (elsewhere 0: a quieter channel cannot be the source of a leak)."""
    out = np.zeros(level.shape, dtype=np.float32)
    width = 2 * hop
    size = 1 << int(np.ceil(np.log2(width + 2 * lag + width)))
    for target, source in ((0, 1), (1, 0)):
        candidates = np.flatnonzero(level[source] >= level[target] + LEAK_CANDIDATE_DB)
        if not len(candidates):
            continue
        starts = base[candidates]
        a = audio[starts[:, None] + np.arange(width), target]
        b = audio[starts[:, None] - lag + np.arange(width + 2 * lag), source]
        spectrum = np.conj(np.fft.rfft(a, size)) * np.fft.rfft(b, size)
        cross = np.fft.irfft(spectrum, size)[:, : 2 * lag + 1]  # cross[m] = Σ a[n] b[n + m]
        b_square = np.concatenate([np.zeros((len(b), 1), np.float32), np.cumsum(b * b, axis=1)], axis=1)
        b_energy = b_square[:, width : width + 2 * lag + 1] - b_square[:, : 2 * lag + 1]
        a_energy = np.sum(a * a, axis=1, keepdims=True)
        rho2 = cross * cross / (a_energy * b_energy + _EPS)
        out[target, candidates] = np.max(rho2, axis=1)
    return out
