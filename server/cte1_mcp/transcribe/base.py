"""The seam between the transcript pipeline and a speech-recognition engine.

An engine hears one party's speech at a time (16 kHz float32 mono, at most ``MAX_PIECE_SECONDS``:
one piece, or several packed with silence between them) and answers with the sentences it
recognised, timed from the start of that audio.
Everything call-shaped (which channel, where the piece sits, the guards against an engine's known
failure modes, the speaker labels) is the pipeline's, so a new engine is one module here.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict

#: Engines take 16 kHz audio (Whisper and the Japanese transducers alike); 8 kHz calls are upsampled.
ENGINE_SAMPLE_RATE = 16_000
#: Whisper hears 30-s windows; ReazonSpeech-k2 is trained on utterances up to 30 s. Pieces stay under.
MAX_PIECE_SECONDS = 28.0


class ModelUnusable(Exception):
    """A model directory an engine cannot use (files missing, a file that does not load, the engine's
    package not installed): the reason, in words a user can act on, never a traceback."""


class EngineInfo(BaseModel):
    """Which engine and model made a transcript: part of what a stored transcript is bound to."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    model: str
    #: The model file's sha256, or a sha256 over every file of the model (name and digest), when the
    #: model is several files.
    modelSha256: str | None
    device: str | None = None
    computeType: str | None = None


@dataclass(frozen=True, slots=True)
class Word:
    """One word (or token) of a sentence, timed like the sentence."""

    start: float
    end: float
    text: str


@dataclass(frozen=True, slots=True)
class Recognised:
    """One sentence (or phrase) an engine heard, seconds from the start of the audio it was given.
    ``words``, when the engine times them, spell ``text`` in order: the pipeline splits a sentence
    that runs across two pieces packed into one engine call at the boundary between them."""

    start: float
    end: float
    text: str
    #: Not part of equality: two engines' answers with the same sentences and times are the same.
    words: tuple[Word, ...] = field(default=(), compare=False)


class Transcriber(Protocol):
    """A loaded model. ``transcribe`` is called from a worker thread, one piece at a time."""

    @property
    def info(self) -> EngineInfo: ...

    def transcribe(self, audio: npt.NDArray[np.float32], language: str) -> list[Recognised]:
        """Sentences heard in ``audio`` (16 kHz mono float32 in [-1, 1]); deterministic."""
        ...

    def cannot_hear(self, language: str) -> str | None:
        """Why this model cannot transcribe ``language`` (an English-only Whisper asked for
        Japanese), or None: asked when it is loaded, so such a model is unavailable before any
        recording is fetched, not a failure after it."""
        ...

    def close(self) -> None:
        """Free the model's memory (and threads); the transcriber is not used afterwards."""
        ...


def fingerprint(model_dir: Path) -> str:
    """sha256 over every regular file of a model (relative name and content), in name order: one
    value that changes when any file does, for models made of several files."""
    digest = hashlib.sha256()
    # Links are followed: a hub cache's snapshot folder is all links to its blobs.
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        file_digest = hashlib.sha256()
        with path.open("rb") as file:
            while block := file.read(1 << 20):
                file_digest.update(block)
        digest.update(f"{path.relative_to(model_dir).as_posix()}\0{file_digest.hexdigest()}\n".encode())
    return digest.hexdigest()


_fingerprints: dict[tuple[object, ...], str] = {}
_fingerprints_lock = threading.Lock()


def cached_fingerprint(model_dir: Path) -> str:
    """``fingerprint``, computed again only when a file's name, size or modification time changed:
    loading a model a second time does not re-read its hundreds of megabytes."""
    root = model_dir.resolve()
    files = sorted(p for p in root.rglob("*") if p.is_file())  # links followed, as ``fingerprint`` does
    key = (
        str(root),
        *(
            (path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns)
            for path in files
            for stat in [path.stat()]
        ),
    )
    with _fingerprints_lock:
        known = _fingerprints.get(key)
    if known is None:
        known = fingerprint(root)
        with _fingerprints_lock:
            _fingerprints[key] = known
    return known


class EngineFailed(Exception):
    """The engine raised something other than ``ModelUnusable`` on a piece (its cause is the error):
    told apart from the pipeline's own errors, which stay what they are."""


@dataclass(frozen=True, slots=True)
class EngineMarked:
    """The transcriber as the pipeline uses it, its failures marked as the engine's."""

    inner: Transcriber

    @property
    def info(self) -> EngineInfo:
        return self.inner.info

    def transcribe(self, audio: npt.NDArray[np.float32], language: str) -> list[Recognised]:
        try:
            return self.inner.transcribe(audio, language)
        except ModelUnusable:
            raise
        except Exception as exc:
            raise EngineFailed from exc

    def cannot_hear(self, language: str) -> str | None:
        return self.inner.cannot_hear(language)

    def close(self) -> None:
        self.inner.close()
