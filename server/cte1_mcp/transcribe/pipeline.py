"""A stored recording to sentences: each party's talk, piece by piece, through one engine.

Blocking (run it in a worker thread). Only one piece of audio (at most ``MAX_PIECE_SECONDS`` of
one channel) is decoded at a time, straight from the stored file, so a 2-hour call costs the memory
of one piece. Pieces come from the stored analysis (``pieces.plan_pieces``): the engine never hears
silence, holds, music or the other party's echo.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
import soxr

from cte1_mcp.audio.analytics import CallAnalytics
from cte1_mcp.audio.decode import iter_blocks, probe
from cte1_mcp.transcribe import guards
from cte1_mcp.transcribe.base import ENGINE_SAMPLE_RATE, Recognised, Transcriber
from cte1_mcp.transcribe.pieces import Piece, plan_pieces
from cte1_mcp.transcribe.transcript import Heard

#: Told after each piece: ``(pieces done, pieces in all)``.
PieceCallback = Callable[[int, int], None]


class TranscriptionCancelled(Exception):
    """``cancelled()`` said stop: raised between pieces, so the worker thread is free at once."""


def transcribe_file(
    file: BinaryIO,
    analysis: CallAnalytics,
    transcriber: Transcriber,
    *,
    language: str,
    on_piece: PieceCallback | None = None,
    cancelled: Callable[[], bool] | None = None,
) -> list[Heard]:
    """Sentences of every party of the recording in ``file``, which ``analysis`` (the stored one, with
    every segment) describes. ``on_piece`` is called from this thread and must not block."""
    if analysis.segmentsTruncated:
        raise ValueError("transcription needs the stored analysis with every talk segment")
    stream = probe(file)
    if stream.channels != analysis.channels:
        raise ValueError(
            f"the analysis is of a {analysis.channels}-channel recording, the file has {stream.channels}"
        )
    duration = stream.duration_seconds
    pieces = plan_pieces(((s.channel, s.startSeconds, s.endSeconds) for s in analysis.segments), duration)
    heard: list[Heard] = []
    if on_piece is not None:
        on_piece(0, len(pieces))
    for done, piece in enumerate(pieces, start=1):
        if cancelled is not None and cancelled():
            raise TranscriptionCancelled
        audio = piece_audio(file, piece, stream.sample_rate)
        recognised = guards.apply(transcriber.transcribe(audio, language), piece.duration)
        channel = None if stream.channels == 1 else piece.channel
        heard.extend(_placed(recognised, piece, channel))
        if on_piece is not None:
            on_piece(done, len(pieces))
    if stream.channels == 2:
        heard = guards.drop_echoes(
            heard, lambda channel, start, end: level_dbfs(file, channel, start, end, stream.sample_rate)
        )
    return heard


def level_dbfs(file: BinaryIO, channel: int, start: float, end: float, sample_rate: int) -> float:
    """RMS level of one channel over ``start``-``end`` (a sentence: decoded on its own, bounded)."""
    total, count = 0.0, 0
    for block in iter_blocks(file, start=round(start * sample_rate), stop=round(end * sample_rate)):
        samples = block[:, channel].astype(np.float64) / 32768.0
        total += float(np.dot(samples, samples))
        count += len(samples)
    return 10 * math.log10(max(total / count if count else 0.0, 1e-12))


def piece_audio(file: BinaryIO, piece: Piece, sample_rate: int) -> npt.NDArray[np.float32]:
    """One channel of ``piece`` as the engines take it: float32 in [-1, 1] at 16 kHz."""
    start, stop = round(piece.start * sample_rate), round(piece.end * sample_rate)
    blocks = [block[:, piece.channel] for block in iter_blocks(file, start=start, stop=stop)]
    samples = np.concatenate(blocks) if blocks else np.zeros(0, np.int16)
    audio = samples.astype(np.float32) / np.float32(32768.0)
    if sample_rate != ENGINE_SAMPLE_RATE and len(audio):
        # soxr rather than a hand-made polyphase filter: its band edge is sharp and its resampler is
        # stateless per call, and a piece is resampled whole
        audio = soxr.resample(audio, sample_rate, ENGINE_SAMPLE_RATE, quality="HQ").astype(np.float32)
    return np.ascontiguousarray(audio, dtype=np.float32)


def _placed(recognised: list[Recognised], piece: Piece, channel: int | None) -> list[Heard]:
    """Times from the piece's start to the recording's, kept inside the piece (an engine can place
    a word past the audio it heard)."""
    placed = []
    for item in recognised:
        start = min(max(piece.start + item.start, piece.start), piece.end)
        end = min(max(piece.start + item.end, start), piece.end)
        placed.append(Heard(channel, round(start, 3), round(end, 3), item.text))
    return placed
