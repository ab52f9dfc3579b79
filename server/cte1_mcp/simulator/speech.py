"""The speech phrase bank: short telephone-band phrases synthesised once with espeak-ng.

``speech/phrases.ogg`` holds every phrase one after another and ``speech/phrases.json`` says where
each starts, how long it is and where it is voiced (measured on the clean signal when the bank was
made by ``scripts/make_speech_fixtures.py``). Nothing here runs a TTS engine: the bank ships with
the package, so the simulator, the tests and CI need neither espeak-ng nor sox.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Literal

import numpy as np
import numpy.typing as npt
import soundfile

SAMPLE_RATE = 8000
Role = Literal["agent", "customer"]


@dataclass(frozen=True, slots=True, eq=False)
class Phrase:
    """One synthesised utterance: its samples (float32, 8 kHz) and voiced spans in samples."""

    name: str
    role: Role
    language: str
    text: str
    samples: npt.NDArray[np.float32]
    spans: tuple[tuple[int, int], ...]

    @property
    def seconds(self) -> float:
        return len(self.samples) / SAMPLE_RATE


@lru_cache(maxsize=1)
def phrase_bank() -> dict[str, Phrase]:
    """Every phrase by name, decoded once per process (about 74 s of audio, 2.4 MB as float32)."""
    folder = resources.files("cte1_mcp.simulator") / "speech"
    index = json.loads((folder / "phrases.json").read_text(encoding="utf-8"))
    audio, rate = soundfile.read(io.BytesIO((folder / "phrases.ogg").read_bytes()), dtype="float32")
    if rate != SAMPLE_RATE or index["sampleRate"] != SAMPLE_RATE:
        raise ValueError("the phrase bank must be 8 kHz")
    bank: dict[str, Phrase] = {}
    for entry in index["phrases"]:
        start, frames = int(entry["start"]), int(entry["frames"])
        role: Role = "agent" if entry["voice"].startswith("agent") else "customer"
        spans = tuple((int(a), int(b)) for a, b in entry["spans"])
        samples = np.ascontiguousarray(audio[start : start + frames])
        bank[entry["name"]] = Phrase(entry["name"], role, entry["language"], entry["text"], samples, spans)
    return bank
