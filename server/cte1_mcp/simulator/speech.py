"""The speech phrase banks: telephone-band phrases synthesised once, shipped with the package.

``speech/phrases.ogg`` holds every phrase one after another and ``speech/phrases.json`` says where
each starts, how long it is and where it is voiced (measured on the clean signal when the bank was
made by ``scripts/make_speech_fixtures.py``). Nothing here runs a TTS engine: the bank ships with
the package, so the simulator, the tests and CI need neither espeak-ng nor sox.

``speech/dialogues_ja.{ogg,json}`` is the second bank: natural Japanese sentences (Kokoro-82M, made
by ``scripts/make_ja_dialogues.py``) and the dialogues the sample calls speak with them, so a
transcript of a sample call can be held to known words. The analytics corpus keeps the first bank.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Literal

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


@dataclass(frozen=True, slots=True)
class Step:
    """One step of a dialogue: ``role`` says ``phrase``, or (``hold``) the agent holds the line."""

    role: Role = "agent"
    phrase: str = ""
    hold: bool = False
    #: The sentence says a number the TTS was given in kanji (Whisper tends to write digits).
    numerals: bool = False


@dataclass(frozen=True, slots=True)
class Dialogue:
    """A sample call's script: its steps in order, and each party's backchannel (あいづち)."""

    name: str
    steps: tuple[Step, ...]
    backchannels: dict[Role, str]


@lru_cache(maxsize=1)
def phrase_bank() -> dict[str, Phrase]:
    """Every espeak-ng phrase by name, decoded once per process (about 74 s of audio, 2.4 MB as float32)."""
    return _bank("phrases")[0]


@lru_cache(maxsize=1)
def dialogue_bank() -> tuple[dict[str, Phrase], dict[str, Dialogue]]:
    """The Kokoro sentences by name (about 320 s, 10 MB as float32) and the dialogues by name."""
    phrases, index = _bank("dialogues_ja")
    dialogues = {
        name: Dialogue(
            name,
            tuple(Step(**step) for step in entry["script"]),
            {role: str(phrase) for role, phrase in entry["backchannels"].items()},
        )
        for name, entry in index["dialogues"].items()
    }
    return phrases, dialogues


def phrase(name: str) -> Phrase:
    """A phrase of either bank (the Kokoro ones are named ``ja-NNN``); the second bank is decoded
    only when a call uses it, so the analytics corpus never pays for it."""
    return (dialogue_bank()[0] if name.startswith("ja-") else phrase_bank())[name]


def _bank(stem: str) -> tuple[dict[str, Phrase], dict[str, Any]]:
    folder = resources.files("cte1_mcp.simulator") / "speech"
    index = json.loads((folder / f"{stem}.json").read_text(encoding="utf-8"))
    audio, rate = soundfile.read(io.BytesIO((folder / f"{stem}.ogg").read_bytes()), dtype="float32")
    if rate != SAMPLE_RATE or index["sampleRate"] != SAMPLE_RATE:
        raise ValueError("the phrase bank must be 8 kHz")
    bank: dict[str, Phrase] = {}
    for entry in index["phrases"]:
        start, frames = int(entry["start"]), int(entry["frames"])
        role: Role = entry.get("role") or ("agent" if entry["voice"].startswith("agent") else "customer")
        spans = tuple((int(a), int(b)) for a, b in entry["spans"])
        samples = np.ascontiguousarray(audio[start : start + frames])
        bank[entry["name"]] = Phrase(entry["name"], role, entry["language"], entry["text"], samples, spans)
    return bank, index
