"""Clips: a stretch of one party (or the mix) re-encoded for audio-capable assistants.

``ClipRequest`` is the argument shape (validated before any work, each error naming the valid
values); ``plan`` checks it against the recording (range, channel, maximum length) from the
stored format alone; ``cut`` decodes only the requested frames and encodes them with libsndfile
(WAV, MP3, FLAC, Ogg Vorbis), mono at 8 or 16 kHz. Which assistants take which format: OpenAI's
audio models WAV and MP3; Gemini WAV, MP3, FLAC and OGG; Claude none (it reads the analytics).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import BinaryIO, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cte1_mcp.audio.decode import Checkpoint, iter_blocks, probe
from cte1_mcp.errors import InvalidParameter, UnsupportedAudio

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
    """A request checked against one recording: frames to read, which channel (None = mix)."""

    start_seconds: float
    end_seconds: float
    channel: int | None
    format: ClipFormat
    sample_rate: int

    @property
    def duration_seconds(self) -> float:
        return self.end_seconds - self.start_seconds

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
    """The request checked against the recording (no decoding): InvalidParameter names what is valid."""
    end = duration if request.end_seconds is None else request.end_seconds
    valid_range = f"the call is {duration:.2f} s long: use 0 <= startSeconds < endSeconds <= {duration:.2f}"
    if request.start_seconds >= duration:
        raise InvalidParameter(
            f"startSeconds {request.start_seconds:g} is past the end of the call; {valid_range}."
        )
    if end > duration + 0.005:
        raise InvalidParameter(f"endSeconds {end:g} is past the end of the call; {valid_range}.")
    if end <= request.start_seconds:
        raise InvalidParameter(f"endSeconds must be greater than startSeconds; {valid_range}.")
    if end - request.start_seconds > max_seconds:
        raise InvalidParameter(
            f"A clip is at most {max_seconds:g} s long (CTE1_CLIP_MAX_SECONDS); this one would be "
            f"{end - request.start_seconds:.2f} s: ask for several clips."
        )
    channel = _channel(request.channel, channels, roles)
    return ClipPlan(request.start_seconds, min(end, duration), channel, request.format, request.sample_rate)


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


def cut(file: BinaryIO, clip: ClipPlan, checkpoint: Checkpoint | None = None) -> bytes:
    """The clip's encoded bytes: only its frames are decoded (blocking: a worker thread)."""
    import soundfile

    stream = probe(file)
    start = round(clip.start_seconds * stream.sample_rate)
    stop = round(clip.end_seconds * stream.sample_rate)
    blocks = iter_blocks(file, start=start, stop=stop, checkpoint=checkpoint)
    pieces = [_select(block, clip.channel) for block in blocks]
    if not pieces:  # the header promised more audio than the file holds
        raise UnsupportedAudio(
            f"The stored audio ends at {stream.duration_seconds:.2f} s, before the clip's start: "
            "it is shorter than its header says."
        )
    samples = resample(np.concatenate(pieces), stream.sample_rate, clip.sample_rate)
    out = io.BytesIO()
    container, subtype = _LIBSNDFILE[clip.format]
    soundfile.write(out, samples, clip.sample_rate, format=container, subtype=subtype)
    return out.getvalue()


def _select(block: npt.NDArray[np.int16], channel: int | None) -> npt.NDArray[np.float32]:
    scaled = block.astype(np.float32) / np.float32(32768.0)
    if channel is None:
        return scaled.mean(axis=1) if scaled.shape[1] > 1 else scaled[:, 0]
    return scaled[:, channel]


def resample(samples: npt.NDArray[np.float32], rate: int, target: int) -> npt.NDArray[np.float32]:
    """8 ↔ 16 kHz by a factor of two through a windowed-sinc low-pass (no aliasing, no imaging)."""
    if rate == target:
        return samples
    if target == 2 * rate:
        up = np.zeros(2 * len(samples), dtype=np.float32)
        up[0::2] = samples
        return (2 * _lowpass(up)).astype(np.float32)
    if rate == 2 * target:
        return _lowpass(samples)[0::2].astype(np.float32)
    raise ValueError(f"cannot resample {rate} Hz to {target} Hz")


def _lowpass(samples: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Half-band low-pass (cut-off at a quarter of the rate): 63 Blackman-windowed sinc taps."""
    taps = np.arange(-31, 32)
    kernel = (0.5 * np.sinc(taps / 2) * np.blackman(len(taps))).astype(np.float32)
    kernel /= kernel.sum()
    # "full" then centred: mode="same" would return len(kernel) samples for a shorter input
    full = np.convolve(samples, kernel, mode="full")
    return full[len(taps) // 2 : len(taps) // 2 + len(samples)].astype(np.float32)
