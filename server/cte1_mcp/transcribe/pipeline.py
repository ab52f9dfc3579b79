"""A stored recording to sentences: each party's talk, piece by piece, through one engine.

Blocking (run it in a worker thread). Pieces come from the stored analysis (``pieces.plan_pieces``):
the engine never hears silence, holds, music or the other party's echo. Consecutive pieces of one
channel are packed into one engine call of at most ``MAX_PIECE_SECONDS``, ``PACK_GAP_SECONDS`` of
silence between them: Whisper encodes a whole 30-s window however short its audio, so one call per
piece (median 3.9 s on the 5-minute corpus call) cost 0.44 of the call's length in wall time. Every
sentence is mapped back to its piece by time and split at a piece boundary by its words' times, so
none spans a pause the pieces were cut at. Only one engine call's audio is decoded at a time,
straight from the stored file, so a 2-hour call costs the memory of one call. Each engine call's
speech is brought to one level (``SPEECH_LEVEL_DBFS``), so a quiet line is heard like a loud one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import BinaryIO

import numpy as np
import numpy.typing as npt
import soxr

from cte1_mcp.audio.analytics import CallAnalytics
from cte1_mcp.audio.decode import iter_blocks, probe
from cte1_mcp.transcribe import guards
from cte1_mcp.transcribe.base import ENGINE_SAMPLE_RATE, MAX_PIECE_SECONDS, Recognised, Transcriber, Word
from cte1_mcp.transcribe.echo import EchoTest
from cte1_mcp.transcribe.pieces import Piece, plan_pieces
from cte1_mcp.transcribe.transcript import Heard

#: Told after each engine call: ``(calls done, calls in all)``.
PieceCallback = Callable[[int, int], None]
#: Digital silence between two pieces packed into one engine call: a clear pause to Whisper.
#: Measured with Whisper-base int8, CER without read-out numbers, customer/agent, on l01, c01, c10:
#: one call per piece 14.3/12.9, 13.3/6.1, 11.6/10.3 %; packed with 0.5 s 11.0/15.0, 6.7/8.5,
#: 2.3/10.3 %; 0.3 s and 1.0 s alike (party by party a few points up or down: which words Whisper
#: picks). A longer gap fits fewer pieces in a call (l01: 12, 13, 14 calls with 0.3, 0.5, 1.0 s).
PACK_GAP_SECONDS = 0.5
#: The RMS level (dBFS) each engine call's speech is brought to, over its pieces (not the silence
#: between them). Whisper's log-mel features are absolute, so the same talk 6 dB apart came back
#: with other words (c10: 「請求書」 at one level, 「成球所」 at the other), and a channel's level
#: depends on the handset, the line and the recorder. -20 dBFS is digital audio's usual nominal
#: level (SMPTE RP 155's alignment level, 20 dB under full scale); chosen before measuring, then
#: measured with Whisper-base on the corpus at -26, -23, -20, -17 and -14 dBFS: on the calls with
#: echo, noise or holds every level beat the recording's own (customer 12.0 % → 7.6-10.0 %, agent
#: 10.9 → 8.8-10.1 %); on the clean calls each moved a party by a point or less either way (which
#: words Whisper picks), -20 included. docs/transcripts.md has the table.
SPEECH_LEVEL_DBFS = -20.0
#: Gain stops short of full scale: recorded audio never goes beyond it, nor did Whisper's training.
PEAK_LIMIT = 0.99


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
    packs = pack_pieces(pieces)
    heard: list[Heard] = []
    if on_piece is not None:
        on_piece(0, len(packs))
    for done, pack in enumerate(packs, start=1):
        if cancelled is not None and cancelled():
            raise TranscriptionCancelled
        audio, placed = packed_audio(file, pack, stream.sample_rate)
        per_piece = unpacked(transcriber.transcribe(audio, language), placed)
        channel = None if stream.channels == 1 or analysis.dualMono else pack[0].channel
        for (_, _, piece), recognised in zip(placed, per_piece, strict=True):
            heard.extend(_placed(guards.apply(recognised, piece.duration), piece, channel))
        if on_piece is not None:
            on_piece(done, len(packs))
    heard.sort(key=lambda sentence: (sentence.start, -1 if sentence.channel is None else sentence.channel))
    if stream.channels == 2 and not analysis.dualMono:
        talk = [(s.channel, s.startSeconds, s.endSeconds) for s in analysis.segments]
        heard = guards.drop_echoes(heard, EchoTest(file, stream.sample_rate, talk))
    return heard


def pack_pieces(
    pieces: Sequence[Piece], *, max_seconds: float = MAX_PIECE_SECONDS, gap_seconds: float = PACK_GAP_SECONDS
) -> list[list[Piece]]:
    """Consecutive pieces of one channel, as many as fit in ``max_seconds`` with ``gap_seconds``
    between them, in the order of their first piece."""
    open_packs: dict[int, list[Piece]] = {}
    packs: list[list[Piece]] = []
    for piece in sorted(pieces, key=lambda p: (p.start, p.channel)):
        current = open_packs.get(piece.channel)
        if (
            current is not None
            and _packed_seconds(current, gap_seconds) + gap_seconds + piece.duration <= max_seconds
        ):
            current.append(piece)
            continue
        current = [piece]
        open_packs[piece.channel] = current
        packs.append(current)
    return packs


def _packed_seconds(pack: list[Piece], gap_seconds: float) -> float:
    return sum(piece.duration for piece in pack) + gap_seconds * (len(pack) - 1)


#: Where a piece sits in the audio of one engine call: ``(start, end, piece)``, seconds into it.
Placement = tuple[float, float, Piece]


def packed_audio(
    file: BinaryIO, pack: Sequence[Piece], sample_rate: int, *, gap_seconds: float = PACK_GAP_SECONDS
) -> tuple[npt.NDArray[np.float32], list[Placement]]:
    """One channel's pieces as one engine call's audio, ``gap_seconds`` of silence between them,
    and where each piece sits in it (from the samples themselves, so mapping back is exact)."""
    gap = np.zeros(round(gap_seconds * ENGINE_SAMPLE_RATE), np.float32)
    parts: list[npt.NDArray[np.float32]] = []
    placed: list[Placement] = []
    at = 0
    for index, piece in enumerate(pack):
        if index:
            parts.append(gap)
            at += len(gap)
        audio = piece_audio(file, piece, sample_rate)
        parts.append(audio)
        placed.append((at / ENGINE_SAMPLE_RATE, (at + len(audio)) / ENGINE_SAMPLE_RATE, piece))
        at += len(audio)
    audio = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    speech_samples = len(audio) - len(gap) * max(len(pack) - 1, 0)
    return at_speech_level(np.ascontiguousarray(audio, dtype=np.float32), speech_samples), placed


def at_speech_level(
    audio: npt.NDArray[np.float32], speech_samples: int, *, level_dbfs: float = SPEECH_LEVEL_DBFS
) -> npt.NDArray[np.float32]:
    """``audio`` with one gain, so its ``speech_samples`` (the rest is digital silence) have an RMS
    of ``level_dbfs``, its peak at most ``PEAK_LIMIT``; silence stays silence."""
    wide = audio.astype(np.float64)  # a float32 sum of 450,000 squares drifts
    energy = float(np.dot(wide, wide))
    if speech_samples <= 0 or energy <= 0.0:
        return audio
    rms = math.sqrt(energy / speech_samples)
    gain = min(10 ** (level_dbfs / 20) / rms, PEAK_LIMIT / float(np.max(np.abs(audio))))
    return np.ascontiguousarray(audio * np.float32(gain), dtype=np.float32)


def unpacked(recognised: list[Recognised], placed: Sequence[Placement]) -> list[list[Recognised]]:
    """What the engine heard in a packed call, per piece, timed from each piece's start. A sentence
    whose words fall in two pieces is split between them; one without word times goes whole to the
    piece its middle falls in (or nearest)."""
    per_piece: list[list[Recognised]] = [[] for _ in placed]
    for item in recognised:
        if not item.words:
            index = _nearest(placed, (item.start + item.end) / 2)
            offset = placed[index][0]
            per_piece[index].append(Recognised(item.start - offset, item.end - offset, item.text))
            continue
        runs: list[tuple[int, list[Word]]] = []
        for word in item.words:
            index = _nearest(placed, (word.start + word.end) / 2)
            if runs and runs[-1][0] == index:
                runs[-1][1].append(word)
            else:
                runs.append((index, [word]))
        if len(runs) == 1:  # all in one piece: the sentence as the engine gave it
            index = runs[0][0]
            offset = placed[index][0]
            local = tuple(Word(w.start - offset, w.end - offset, w.text) for w in item.words)
            per_piece[index].append(Recognised(item.start - offset, item.end - offset, item.text, local))
            continue
        for index, words in runs:
            text = "".join(word.text for word in words).strip()
            if not text:
                continue
            offset = placed[index][0]
            start, end = words[0].start - offset, max(words[0].start, words[-1].end) - offset
            local = tuple(Word(w.start - offset, w.end - offset, w.text) for w in words)
            per_piece[index].append(Recognised(start, end, text, local))
    return per_piece


def _nearest(placed: Sequence[Placement], at: float) -> int:
    """The piece ``at`` (seconds into the call's audio) falls in, else the nearest one."""
    return min(range(len(placed)), key=lambda i: max(placed[i][0] - at, at - placed[i][1], 0.0))


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
