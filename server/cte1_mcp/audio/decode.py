"""Decoding a stored recording in bounded blocks (μ-law, A-law, PCM WAV; anything libsndfile reads).

The analyser never holds a whole call: it reads fixed-size blocks of int16 samples (libsndfile
expands G.711 to 16-bit itself), so a 30-minute call costs the same memory as a 30-second one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
import soundfile

from cte1_mcp.errors import UnsupportedAudio

#: Rates the voice-activity detectors take natively (telephone narrow- and wide-band).
SUPPORTED_RATES = (8000, 16000)
#: Four seconds at 8 kHz: large enough for numpy to be efficient, small enough to stay flat.
BLOCK_FRAMES = 32_000
#: Called before each block is decoded, in the decoding thread: it raises to stop the work (the
#: caller was cancelled), so a stop takes effect within one block whatever stage is reading.
Checkpoint = Callable[[], None]


@dataclass(frozen=True, slots=True)
class AudioStream:
    """What the file holds: its rate, channel count, length and libsndfile's name for its encoding."""

    sample_rate: int
    channels: int
    frames: int
    subtype: str

    @property
    def duration_seconds(self) -> float:
        return self.frames / self.sample_rate


def probe(file: BinaryIO) -> AudioStream:
    """The stream's shape, read from its header only."""
    with _open(file) as sound:
        return _describe(sound)


def iter_blocks(
    file: BinaryIO,
    block_frames: int = BLOCK_FRAMES,
    *,
    start: int = 0,
    stop: int | None = None,
    checkpoint: Checkpoint | None = None,
) -> Iterator[npt.NDArray[np.int16]]:
    """int16 blocks of shape (frames, channels) from ``start`` to ``stop`` (frame indexes); fewer
    frames than the header announced when the data ends early (an MP3's length is an estimate)."""
    with _open(file) as sound:
        stream = _describe(sound)
        end = stream.frames if stop is None else min(stop, stream.frames)
        position = start
        if 0 < start < end:
            with _decoding():
                sound.seek(start)
        while position < end:
            if checkpoint is not None:
                checkpoint()
            with _decoding():  # a valid header does not promise valid (or enough) data
                block = sound.read(min(block_frames, end - position), dtype="int16", always_2d=True)
            if not len(block):
                break
            position += len(block)
            yield block


def _open(file: BinaryIO) -> soundfile.SoundFile:
    file.seek(0)
    with _decoding():
        return soundfile.SoundFile(file)


@contextmanager
def _decoding() -> Iterator[None]:
    """libsndfile's failures as ``[unsupported_audio]``, in its words, never the file's repr."""
    try:
        yield
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        reason = getattr(exc, "error_string", "") or "unreadable"
        raise UnsupportedAudio(
            f"The stored audio is not a format the analyser can decode: {reason}"
        ) from None


def _describe(sound: soundfile.SoundFile) -> AudioStream:
    if sound.samplerate not in SUPPORTED_RATES or sound.channels not in (1, 2):
        raise UnsupportedAudio(
            f"The recording is {sound.samplerate} Hz with {sound.channels} channels; "
            "analytics take 8000 or 16000 Hz, mono or two-channel."
        )
    return AudioStream(sound.samplerate, sound.channels, sound.frames, sound.subtype)
