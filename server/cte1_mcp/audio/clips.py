"""Clips: a stretch of one party (or the mix) re-encoded for audio-capable assistants.

``ClipRequest`` is the argument shape (validated before any work, each error naming the valid
values); ``plan`` checks it against the recording (range, channel, maximum length) from the
stored format alone; ``cut`` decodes only the requested frames and encodes them with libsndfile
(WAV, MP3, FLAC, Ogg Vorbis), mono at 8 or 16 kHz, a bounded block at a time (flat memory; see
``_write`` for why every encoder write is small). Which assistants take which format: OpenAI's
audio models WAV and MP3; Gemini WAV, MP3, FLAC and OGG; Claude none (it reads the analytics).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Literal, NoReturn

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cte1_mcp.audio.decode import iter_blocks, probe
from cte1_mcp.errors import InvalidParameter, UnsupportedAudio

if TYPE_CHECKING:
    from soundfile import SoundFile

ClipFormat = Literal["wav", "mp3", "flac", "ogg"]
FORMATS: tuple[ClipFormat, ...] = ("wav", "mp3", "flac", "ogg")
RATES = (8000, 16000)
MIME_TYPES: dict[ClipFormat, str] = {
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
}
_LIBSNDFILE: dict[ClipFormat, tuple[str, str]] = {
    "wav": ("WAV", "PCM_16"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
}
#: Frames per encoder write (see _write): 16 KiB of stack at most, whatever the clip's length.
WRITE_FRAMES = 4096


class ClipRequest(BaseModel):
    """What to cut: ``start``/``end`` in seconds (end None: the end of the call), a channel
    (``mix``, ``0``, ``1`` or a role of CTE1_CHANNEL_ROLES), a format and an output rate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start_seconds: float = Field(0.0, ge=0, allow_inf_nan=False)
    end_seconds: float | None = Field(None, gt=0, allow_inf_nan=False)
    channel: str = "mix"
    format: ClipFormat = "wav"
    sample_rate: Literal[8000, 16000] = 8000

    @classmethod
    def of(cls, **values: object) -> ClipRequest:
        """Validate, turning pydantic's error into ``[invalid_parameter]`` naming the valid values."""
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = str(error["loc"][0]) if error["loc"] else "arguments"
            name, valid = _VALID.get(field, (field, str(error["msg"])))
            raise InvalidParameter(f"{name} {valid}.") from None


#: Field → (the tool's argument name, what is valid).
_VALID = {
    "start_seconds": ("startSeconds", "must be a number of seconds >= 0"),
    "end_seconds": ("endSeconds", "must be a number of seconds > 0 (or omitted: the end of the call)"),
    "format": ("format", f"must be one of {', '.join(FORMATS)}"),
    "sample_rate": ("sampleRate", "must be 8000 or 16000"),
    "channel": ("channel", "must be mix, 0, 1 or a role name of CTE1_CHANNEL_ROLES"),
}


@dataclass(frozen=True, slots=True)
class ClipPlan:
    """A request checked against one recording: its bounds (whole milliseconds, see ``plan``),
    which channel (None = mix)."""

    start_seconds: float
    end_seconds: float
    channel: int | None
    format: ClipFormat
    sample_rate: int

    @property
    def duration_seconds(self) -> float:
        return round(self.end_seconds - self.start_seconds, 3)

    @property
    def channel_name(self) -> str:
        return "mix" if self.channel is None else str(self.channel)

    @property
    def artifact_name(self) -> str:
        start, end = round(self.start_seconds * 1000), round(self.end_seconds * 1000)
        return f"clip-{start}-{end}-{self.channel_name}-{self.sample_rate}.{self.format}"


def plan(
    request: ClipRequest, *, duration: float, channels: int, roles: tuple[str, ...], max_seconds: float
) -> ClipPlan:
    """The request checked against the recording (no decoding): InvalidParameter names what is valid.

    The bounds are rounded to the millisecond here, once: the clip's URI and artefact name carry
    milliseconds, and at 8 or 16 kHz a millisecond is a whole number of samples, so what is cut,
    named and reported is the same stretch. A range that rounds to nothing is refused."""
    last_ms = math.floor(round(duration * 1000, 6))  # the call's last whole millisecond
    if last_ms < 1:
        raise UnsupportedAudio(
            f"The recording holds no audio to cut a clip from: it is {_given(duration)} s long, and a clip "
            "holds at least 1 ms."
        )
    end = duration if request.end_seconds is None else request.end_seconds
    valid_range = (
        f"the call is {duration:.2f} s long: use 0 <= startSeconds < endSeconds <= {duration:.2f}, "
        "at least 0.001 s apart"
    )
    if request.start_seconds >= duration:
        raise InvalidParameter(
            f"startSeconds {_given(request.start_seconds)} is past the end of the call; {valid_range}."
        )
    if end > duration + 0.005:
        raise InvalidParameter(f"endSeconds {_given(end)} is past the end of the call; {valid_range}.")
    if end <= request.start_seconds:
        raise InvalidParameter(f"endSeconds must be greater than startSeconds; {valid_range}.")
    start_ms, end_ms = round(request.start_seconds * 1000), min(round(end * 1000), last_ms)
    if end_ms <= start_ms:
        raise InvalidParameter(
            f"A clip holds at least 1 ms of audio: {_given(request.start_seconds)} to {_given(end)} s is the "
            f"same millisecond ({_seconds(start_ms)} s); {valid_range}."
        )
    if (end_ms - start_ms) / 1000 > max_seconds:
        raise InvalidParameter(
            f"A clip is at most {max_seconds:g} s long (CTE1_CLIP_MAX_SECONDS); this one would be "
            f"{(end_ms - start_ms) / 1000:.3f} s: ask for several clips."
        )
    channel = _channel(request.channel, channels, roles)
    return ClipPlan(start_ms / 1000, end_ms / 1000, channel, request.format, request.sample_rate)


def _given(seconds: float) -> str:
    """A number as the caller gave it: short when that is exact (300, not 300.0), else repr."""
    short = f"{seconds:g}"
    return short if float(short) == seconds else repr(seconds)


def _seconds(milliseconds: int) -> str:
    """Milliseconds as seconds, no trailing zeros (20000 → 20, 1234567 → 1234.567)."""
    return f"{milliseconds / 1000:.3f}".rstrip("0").rstrip(".")


def _channel(name: str, channels: int, roles: tuple[str, ...]) -> int | None:
    choices = ["mix", "0"] if channels == 1 else ["mix", "0", "1", *roles]
    wanted = name.strip().casefold()
    if wanted == "mix":
        return None
    if wanted in ("0", "1") and int(wanted) < channels:
        return int(wanted)
    if channels == 2:
        for index, role in enumerate(roles):
            if wanted == role.casefold():
                return index
    mono = " (this recording is mono: it has channel 0 only)" if channels == 1 else ""
    raise InvalidParameter(f"channel {name!r} is not one of {', '.join(choices)}{mono}.")


def cut(
    file: BinaryIO, clip: ClipPlan, out: BinaryIO, on_block: Callable[[float, float], None] | None = None
) -> None:
    """Encode the clip into ``out`` (a seekable file), decoding only its frames, a block at a time:
    memory stays flat in the clip's length (blocking: a worker thread). ``on_block(seconds done,
    clip seconds)`` after each block (progress; it may raise to stop, e.g. when cancelled).

    A recording whose data ends before its header says (so before the planned range ends) is
    refused with the real end named, rather than stored as a clip shorter than it reports."""
    import soundfile

    stream = probe(file)
    start = round(clip.start_seconds * stream.sample_rate)
    stop = round(clip.end_seconds * stream.sample_rate)
    blocks = iter_blocks(file, start=start, stop=stop)
    first = next(blocks, None)
    if first is None:  # the header promised more audio than the file holds
        _ran_out(clip, min(start, stream.frames) / stream.sample_rate)
    halfband = HalfBand(stream.sample_rate, clip.sample_rate)
    container, subtype = _LIBSNDFILE[clip.format]
    with soundfile.SoundFile(out, "w", clip.sample_rate, 1, format=container, subtype=subtype) as sound:
        done = 0
        for block in itertools.chain((first,), blocks):
            _write(sound, halfband.feed(_select(block, clip.channel)))
            done += len(block)
            if on_block is not None:
                on_block(done / stream.sample_rate, clip.duration_seconds)
        if (stop - start - done) * 1000 >= stream.sample_rate:
            # short by a millisecond or more, counted in frames; less is the rounding of a length
            # to the millisecond (80,004 frames at 8 kHz, 10.0005 s, are listed as 10.001 s)
            _ran_out(clip, (start + done) / stream.sample_rate)
        _write(sound, halfband.flush())


def _ran_out(clip: ClipPlan, real_end: float) -> NoReturn:
    """The range fitted the length the recording's header announced, not the audio it holds."""
    whole_ms = math.floor(real_end * 1000)
    if not whole_ms:
        raise UnsupportedAudio("The recording holds no audio, although its header announces some.")
    raise InvalidParameter(
        f"The recording's audio ends at {real_end:.3f} s, before its header says, so the clip "
        f"{_seconds(round(clip.start_seconds * 1000))} to {_seconds(round(clip.end_seconds * 1000))} s "
        f"is not all there: use 0 <= startSeconds < endSeconds <= {_seconds(whole_ms)}.",
        next_step=f"Ask for a clip that ends by {_seconds(whole_ms)} s.",
    )


def _write(sound: SoundFile, samples: npt.NDArray[np.float32]) -> None:
    """At most WRITE_FRAMES per write: libvorbis, under libsndfile 1.2.2, pre-extrapolates the
    first write on the stack (``alloca`` of 4 bytes a sample), so a first write of 2^21 samples
    (262 s at 8 kHz) overflows an 8 MiB stack and kills the process."""
    for offset in range(0, len(samples), WRITE_FRAMES):
        sound.write(samples[offset : offset + WRITE_FRAMES])


def _select(block: npt.NDArray[np.int16], channel: int | None) -> npt.NDArray[np.float32]:
    scaled = block.astype(np.float32) / np.float32(32768.0)
    if channel is None:
        return scaled.mean(axis=1) if scaled.shape[1] > 1 else scaled[:, 0]
    return scaled[:, channel]


def resample(samples: npt.NDArray[np.float32], rate: int, target: int) -> npt.NDArray[np.float32]:
    """8 ↔ 16 kHz at once (a whole signal; clips go through HalfBand block by block)."""
    halfband = HalfBand(rate, target)
    return np.concatenate((halfband.feed(samples), halfband.flush()))


#: Half-band low-pass (cut-off at a quarter of the rate): 63 Blackman-windowed sinc taps.
_TAPS = np.arange(-31, 32)
_KERNEL = (0.5 * np.sinc(_TAPS / 2) * np.blackman(len(_TAPS))).astype(np.float32)
_KERNEL /= _KERNEL.sum()
_DELAY = len(_KERNEL) // 2


class HalfBand:
    """8 ↔ 16 kHz by a factor of two through the half-band low-pass (no aliasing, no imaging), fed
    block by block: the output equals filtering the whole signal at once (zero beyond both ends,
    the filter's delay removed), so no block boundary is heard and no clip is held whole."""

    def __init__(self, rate: int, target: int) -> None:
        if target not in (rate, 2 * rate) and rate != 2 * target:
            raise ValueError(f"cannot resample {rate} Hz to {target} Hz")
        self._up, self._down = target == 2 * rate, rate == 2 * target
        # the signal is preceded by _DELAY zeros, so the first output is the filter centred on it
        self._history = np.zeros(_DELAY, dtype=np.float32)
        self._emitted = 0

    def feed(self, samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        if not (self._up or self._down):
            return samples
        if self._up:
            stuffed = np.zeros(2 * len(samples), dtype=np.float32)
            stuffed[0::2] = samples
            samples = stuffed
        return self._filter(samples)

    def flush(self) -> npt.NDArray[np.float32]:
        """The last outputs (the filter run past the end over zeros)."""
        if not (self._up or self._down):
            return np.zeros(0, dtype=np.float32)
        return self._filter(np.zeros(_DELAY, dtype=np.float32))

    def _filter(self, samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        buffer = np.concatenate((self._history, samples))
        if len(buffer) < len(_KERNEL):  # np.convolve "valid" would swap its arguments
            self._history = buffer
            return np.zeros(0, dtype=np.float32)
        self._history = buffer[-(len(_KERNEL) - 1) :]
        out = np.convolve(buffer, _KERNEL, mode="valid").astype(np.float32)
        if self._up:
            return out * np.float32(2)
        first = self._emitted % 2  # keep the outputs at even positions of the whole signal
        self._emitted += len(out)
        return out[first::2]
