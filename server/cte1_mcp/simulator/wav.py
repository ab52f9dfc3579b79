"""Deterministic 8 kHz telephone WAVs of real (synthesised) speech, streamed in chunks of any total size.

A sample call is a scripted :class:`~cte1_mcp.simulator.conversation.Conversation`, rendered once
per process and sliced into chunks. A benchmark recording (any size up to 4 GiB) is never built in
memory: one 60-second scripted conversation is rendered once per seed and repeated; it starts and
ends in silence, so the repetition has no clicks, and a chunk is a slice of a pre-repeated buffer,
so streaming costs one memcpy per chunk (GB/s) and the simulator is never the bottleneck of a
throughput benchmark.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # numpy and the phrase bank load on the first request, not at import
    import numpy as np
    import numpy.typing as npt

    from cte1_mcp.simulator.conversation import Conversation, Interval

SAMPLE_RATE = 8000
#: WAVE format tags (mmreg.h).
WAVE_FORMAT_PCM = 1
WAVE_FORMAT_MULAW = 7

Encoding = Literal["pcm16", "mulaw"]

DEFAULT_CHUNK_SIZE = 512 * 1024
_RIFF_MAX = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class WavSpec:
    """What to generate: channel layout (1 = mixed, 2 = customer/agent), encoding, length, content.

    With a ``conversation`` the file is that script rendered (it must be ``frames`` long); without
    one it is the seed's 60-second period repeated (benchmark recordings of any size).
    """

    channels: Literal[1, 2]
    encoding: Encoding
    frames: int
    seed: int = 0
    sample_rate: int = SAMPLE_RATE
    conversation: Conversation | None = None

    def __post_init__(self) -> None:
        if self.channels not in (1, 2):
            raise ValueError("channels must be 1 or 2")
        if self.frames < 0:
            raise ValueError("frames must be >= 0")
        if self.file_size - 8 > _RIFF_MAX:
            raise ValueError("a RIFF file cannot exceed 4 GiB")
        if self.conversation is not None and self.conversation.frames != self.frames:
            raise ValueError("the conversation must be exactly as long as the file")

    @classmethod
    def for_duration(
        cls,
        seconds: float,
        *,
        channels: Literal[1, 2],
        encoding: Encoding,
        seed: int = 0,
        conversation: Conversation | None = None,
    ) -> WavSpec:
        return cls(channels, encoding, round(seconds * SAMPLE_RATE), seed, conversation=conversation)

    @classmethod
    def for_file_size(
        cls, total_bytes: int, *, channels: Literal[1, 2], encoding: Encoding, seed: int = 0
    ) -> WavSpec:
        """The spec whose whole file is exactly ``total_bytes`` long (benchmarks ask for N MiB)."""
        probe = cls(channels, encoding, 0, seed)
        data = total_bytes - probe.header_size
        if data < 0 or data % probe.block_align:
            raise ValueError(f"no {channels}-channel {encoding} WAV is exactly {total_bytes} bytes")
        return cls(channels, encoding, data // probe.block_align, seed)

    @property
    def bits_per_sample(self) -> int:
        return 16 if self.encoding == "pcm16" else 8

    @property
    def block_align(self) -> int:
        return self.channels * self.bits_per_sample // 8

    @property
    def data_size(self) -> int:
        return self.frames * self.block_align

    @property
    def header_size(self) -> int:
        # RIFF/WAVE (12) + fmt (8+16, or 8+18 with cbSize) [+ fact (8+4)] + data chunk header (8)
        return 44 if self.encoding == "pcm16" else 58

    @property
    def file_size(self) -> int:
        # A RIFF chunk of odd length is followed by one pad byte.
        return self.header_size + self.data_size + (self.data_size & 1)

    @property
    def duration_seconds(self) -> float:
        return self.frames / self.sample_rate

    def truth(self) -> tuple[tuple[Interval, ...], ...]:
        """Per channel, the voiced intervals (seconds) the script placed there: the ground truth."""
        if self.conversation is not None:
            return self.conversation.truth(self.channels)
        period = _period_conversation(self.seed)
        repeats = -(-self.frames // period.frames)
        end = self.duration_seconds
        return tuple(
            tuple(
                (start + k * period.seconds, min(stop + k * period.seconds, end))
                for k in range(repeats)
                for start, stop in channel
                if start + k * period.seconds < end
            )
            for channel in period.truth(self.channels)
        )


def wav_header(spec: WavSpec) -> bytes:
    """RIFF header with the final sizes; non-PCM gets ``cbSize`` and the ``fact`` chunk it requires."""
    byte_rate = spec.sample_rate * spec.block_align
    if spec.encoding == "pcm16":
        fmt = struct.pack(
            "<HHIIHH",
            WAVE_FORMAT_PCM,
            spec.channels,
            spec.sample_rate,
            byte_rate,
            spec.block_align,
            16,
        )
        extra = b""
    else:
        fmt = struct.pack(
            "<HHIIHHH",
            WAVE_FORMAT_MULAW,
            spec.channels,
            spec.sample_rate,
            byte_rate,
            spec.block_align,
            8,
            0,
        )
        extra = b"fact" + struct.pack("<II", 4, spec.frames)
    header = (
        b"RIFF"
        + struct.pack("<I", spec.file_size - 8)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + extra
        + b"data"
        + struct.pack("<I", spec.data_size)
    )
    assert len(header) == spec.header_size
    return header


def iter_wav(spec: WavSpec, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[bytes]:
    """The whole file: the header, then data chunks of at most ``chunk_size`` bytes, in flat memory."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    yield wav_header(spec)
    if spec.conversation is not None:
        data = _rendered(spec.conversation, spec.channels, spec.encoding)
        for offset in range(0, len(data), chunk_size):
            yield data[offset : offset + chunk_size]
        if spec.data_size & 1:
            yield b"\x00"
        return
    period = _period(spec.seed, spec.channels, spec.encoding)
    ring = period * (1 + -(-chunk_size // len(period)))  # any slice [p, p+chunk) with p < period fits
    position, remaining = 0, spec.data_size
    while remaining:
        size = min(chunk_size, remaining)
        yield ring[position : position + size]
        position = (position + size) % len(period)
        remaining -= size
    if spec.data_size & 1:
        yield b"\x00"


def wav_bytes(spec: WavSpec) -> bytes:
    """A whole small file at once (tests, fixtures); use :func:`iter_wav` for anything large."""
    return b"".join(iter_wav(spec))


# --- content ------------------------------------------------------------------------------------

#: Length of a benchmark recording's repeated conversation.
PERIOD_SECONDS = 60.0


@lru_cache(maxsize=8)
def _rendered(conversation: Conversation, channels: Literal[1, 2], encoding: Encoding) -> bytes:
    """A sample call's data chunk (a few MB at most), rendered once per process."""
    from cte1_mcp.simulator.conversation import render

    return encode(render(conversation, channels), encoding)


def _period_conversation(seed: int) -> Conversation:
    from cte1_mcp.simulator.conversation import Style, scripted

    return scripted(PERIOD_SECONDS, seed, Style(overtalks=1, backchannels=1))


@lru_cache(maxsize=4)
def _period(seed: int, channels: Literal[1, 2], encoding: Encoding) -> bytes:
    """One seeded 60-second conversation, encoded: what a benchmark recording repeats."""
    from cte1_mcp.simulator.conversation import render

    return encode(render(_period_conversation(seed), channels), encoding)


def encode(samples: npt.NDArray[np.int16], encoding: Encoding) -> bytes:
    """Interleaved little-endian 16-bit PCM, or one G.711 μ-law byte per sample."""
    import numpy as np

    if encoding == "pcm16":
        return samples.astype("<i2", copy=False).tobytes()
    table = np.frombuffer(_mulaw_table(), dtype=np.uint8)
    return table[samples.view(np.uint16)].tobytes()


@lru_cache(maxsize=1)
def _mulaw_table() -> bytes:
    """G.711 μ-law byte for every 16-bit sample (index = sample & 0xFFFF): encoding is one lookup."""
    return bytes(mulaw_encode(s - 0x10000 if s >= 0x8000 else s) for s in range(0x10000))


def mulaw_encode(sample: int) -> int:
    """ITU-T G.711 μ-law of one signed 16-bit sample (bias 0x84, clip 32635)."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(-sample if sample < 0 else sample, 32635) + 0x84
    exponent = magnitude.bit_length() - 8  # magnitude >= 0x84, so bit_length >= 8
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF
