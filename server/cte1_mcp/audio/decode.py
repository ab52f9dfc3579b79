"""Decoding a stored recording in bounded blocks (μ-law, A-law, PCM WAV; anything libsndfile reads).

The analyser never holds a whole call: it reads fixed-size blocks of int16 samples (libsndfile
expands G.711 to 16-bit itself), so a 30-minute call costs the same memory as a 30-second one.
Floating-point files are the exception: libsndfile hands their samples to an int16 reader
unscaled (a full-scale 1.0 becomes 1, i.e. silence), and passes NaN and infinities on, so they
are read as float32 and converted here, non-finite samples as silence and counted.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
import soundfile

from cte1_mcp.audio.sniff import unsized_wav_data
from cte1_mcp.errors import UnsupportedAudio

#: Rates the voice-activity detectors take natively (telephone narrow- and wide-band).
SUPPORTED_RATES = (8000, 16000)
#: Four seconds at 8 kHz: large enough for numpy to be efficient, small enough to stay flat.
BLOCK_FRAMES = 32_000
#: libsndfile's subtypes whose samples are floating point (read as float32, repaired, scaled).
FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")
#: The recording's first bytes that are read for its RIFF chunks (as many as the sniffer is given).
HEAD_BYTES = 64 * 1024


@dataclass(slots=True)
class Repairs:
    """What decoding had to mend, counted as it goes (the caller reports it)."""

    #: NaN or infinite samples (floating-point files only), decoded as silence.
    non_finite_samples: int = 0


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
    repairs: Repairs | None = None,
    checkpoint: Checkpoint | None = None,
) -> Iterator[npt.NDArray[np.int16]]:
    """int16 blocks of shape (frames, channels) from ``start`` to ``stop`` (frame indexes); fewer
    frames than the header announced when the data ends early (an MP3's length is an estimate).
    What had to be mended is added to ``repairs``."""
    with _open(file) as sound:
        stream = _describe(sound)
        end = stream.frames if stop is None else min(stop, stream.frames)
        floating = stream.subtype in FLOAT_SUBTYPES
        position = start
        if 0 < start < end:
            with _decoding():
                sound.seek(start)
        while position < end:
            count = min(block_frames, end - position)
            if checkpoint is not None:
                checkpoint()
            with _decoding():  # a valid header does not promise valid (or enough) data
                if floating:
                    block = _from_float(sound.read(count, dtype="float32", always_2d=True), repairs)
                else:
                    block = sound.read(count, dtype="int16", always_2d=True)
            if not len(block):
                break
            position += len(block)
            yield block


def _from_float(samples: npt.NDArray[np.float32], repairs: Repairs | None) -> npt.NDArray[np.int16]:
    """Full scale ±1.0 to int16; NaN and infinities (a broken writer) as silence, overs clipped."""
    finite = np.isfinite(samples)
    if not finite.all():
        if repairs is not None:
            repairs.non_finite_samples += int(finite.size - np.count_nonzero(finite))
        samples = np.where(finite, samples, np.float32(0.0))
    scaled: npt.NDArray[np.int16] = np.rint(np.clip(samples, -1.0, 1.0) * np.float32(32767.0)).astype(
        np.int16
    )
    return scaled


def _open(file: BinaryIO) -> soundfile.SoundFile:
    """libsndfile on the file; a WAV whose data size is 0 (see ``unsized_wav_data``) as RAW from
    its data to the end of the file, so decoding reads the audio the listed length counts."""
    file.seek(0)
    layout = unsized_wav_data(file.read(HEAD_BYTES))
    file.seek(0)
    with _decoding():
        if layout is None:
            return soundfile.SoundFile(file)
        return soundfile.SoundFile(
            _FromOffset(file, layout.offset),
            format="RAW",
            subtype=layout.subtype,
            channels=layout.channels,
            samplerate=layout.sample_rate,
            endian="LITTLE",
        )


class _FromOffset:
    """The file from ``offset`` on, as a file of its own: libsndfile's virtual I/O (soundfile's
    file objects) seeks and measures from position 0, where a RAW stream's first sample must be."""

    def __init__(self, file: BinaryIO, offset: int) -> None:
        self._file, self._offset = file, offset
        file.seek(offset)

    def seek(self, position: int, whence: int = io.SEEK_SET) -> int:
        return (
            self._file.seek(position + self._offset if whence == io.SEEK_SET else position, whence)
            - self._offset
        )

    def tell(self) -> int:
        return self._file.tell() - self._offset

    def read(self, size: int = -1) -> bytes:
        return self._file.read(size)


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
