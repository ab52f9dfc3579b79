"""Deterministic, audible 8 kHz telephone WAVs, streamed in chunks of any total size.

A recording is never built in memory: one short "conversation period" (an agent turn, then a
customer turn, as buzzy voice-like tones with syllable envelopes) is rendered once per seed and
repeated. Each period starts and ends in silence, so the repetition has no clicks, and a chunk
is a slice of a pre-repeated buffer, so streaming costs one memcpy per chunk (GB/s) and the
simulator is never the bottleneck of a throughput benchmark.
"""

from __future__ import annotations

import math
import random
import struct
import sys
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

SAMPLE_RATE = 8000
#: WAVE format tags (mmreg.h).
WAVE_FORMAT_PCM = 1
WAVE_FORMAT_MULAW = 7

Encoding = Literal["pcm16", "mulaw"]

DEFAULT_CHUNK_SIZE = 512 * 1024
_RIFF_MAX = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class WavSpec:
    """What to generate: channel layout (1 = mixed, 2 = agent/customer), encoding, length, seed."""

    channels: Literal[1, 2]
    encoding: Encoding
    frames: int
    seed: int = 0
    sample_rate: int = SAMPLE_RATE

    def __post_init__(self) -> None:
        if self.channels not in (1, 2):
            raise ValueError("channels must be 1 or 2")
        if self.frames < 0:
            raise ValueError("frames must be >= 0")
        if self.file_size - 8 > _RIFF_MAX:
            raise ValueError("a RIFF file cannot exceed 4 GiB")

    @classmethod
    def for_duration(
        cls, seconds: float, *, channels: Literal[1, 2], encoding: Encoding, seed: int = 0
    ) -> WavSpec:
        return cls(channels, encoding, round(seconds * SAMPLE_RATE), seed)

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


def _voice_turn(rng: random.Random, pitch: float, seconds: float) -> list[float]:
    """A talker's turn: syllables of a gliding harmonic tone, each with a sine envelope (0 at both ends)."""
    out: list[float] = []
    total = int(seconds * SAMPLE_RATE)
    while len(out) < total:
        length = int(rng.uniform(0.12, 0.32) * SAMPLE_RATE)
        start, end = pitch * rng.uniform(0.85, 1.15), pitch * rng.uniform(0.85, 1.15)
        loudness = rng.uniform(0.55, 1.0)
        phase = 0.0
        for i in range(length):
            freq = start + (end - start) * i / length
            phase += 2 * math.pi * freq / SAMPLE_RATE
            tone = math.sin(phase) + 0.5 * math.sin(2 * phase) + 0.25 * math.sin(3 * phase)
            out.append(loudness * math.sin(math.pi * i / length) * tone / 1.75)
        out.extend([0.0] * int(rng.uniform(0.04, 0.14) * SAMPLE_RATE))
    return out


@lru_cache(maxsize=64)
def _period(seed: int, channels: int, encoding: Encoding) -> bytes:
    """One seeded conversation period (agent speaks, pause, customer speaks, pause), encoded."""
    rng = random.Random(seed)  # noqa: S311 -- reproducible test audio, not secrets
    agent = _voice_turn(rng, rng.uniform(190.0, 260.0), rng.uniform(1.5, 3.0))
    customer = _voice_turn(rng, rng.uniform(120.0, 170.0), rng.uniform(1.5, 3.0))
    gap = [0.0] * int(rng.uniform(0.25, 0.6) * SAMPLE_RATE)
    silence_a, silence_c = [0.0] * len(agent), [0.0] * len(customer)
    agent_track = agent + gap + silence_c + gap
    customer_track = silence_a + gap + customer + gap
    peak = 0.6 * 32767
    if channels == 1:
        samples = [round(peak * (a + c)) for a, c in zip(agent_track, customer_track, strict=True)]
    else:
        samples = [round(peak * s) for pair in zip(agent_track, customer_track, strict=True) for s in pair]
    if encoding == "pcm16":
        pcm = array("h", samples)
        if sys.byteorder == "big":
            pcm.byteswap()
        return pcm.tobytes()
    table = _mulaw_table()
    return bytes(table[s & 0xFFFF] for s in samples)


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
