"""The pipeline's own logic with an engine stand-in that reports what it was given (which channel,
which stretch, at which rate), on WAV files whose content the test sets: each channel carries its
own tone where the hand-written analysis says that party talks. The real model on real speech:
test_transcribe_whisper_corpus.py."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pytest
import soundfile

from cte1_mcp.audio.analytics import CallAnalytics, LongSilences, Segment
from cte1_mcp.transcribe.base import ENGINE_SAMPLE_RATE, MAX_PIECE_SECONDS, EngineInfo, Recognised
from cte1_mcp.transcribe.pipeline import TranscriptionCancelled, transcribe_file
from cte1_mcp.transcribe.transcript import Heard

TONES = (440.0, 1000.0)  # channel 0, channel 1


def call_file(
    talk: list[tuple[int, float, float]],
    channels: int,
    seconds: float,
    rate: int = 8000,
    gains: tuple[float, float] = (0.5, 0.5),
) -> io.BytesIO:
    """μ-law WAV: each talk span carries its channel's tone, the rest is silence."""
    samples = np.zeros((round(seconds * rate), channels), np.float32)
    for channel, start, end in talk:
        t = np.arange(round(start * rate), round(end * rate)) / rate
        samples[round(start * rate) : round(start * rate) + len(t), channel] = gains[channel] * np.sin(
            2 * np.pi * TONES[channel] * t
        )
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype="ULAW")
    buffer.seek(0)
    return buffer


def analysis(
    talk: list[tuple[int, float, float]], channels: int, seconds: float, **extra: object
) -> CallAnalytics:
    """A stored analysis as the analyser would give it, for the talk the test laid out."""
    return CallAnalytics.model_validate(
        {
            "summary": "",
            "method": "",
            "durationSeconds": seconds,
            "channels": channels,
            "parties": [],
            "nonTalkSeconds": 0.0,
            "nonTalkPercent": 0.0,
            "longestSilence": None,
            "longSilences": LongSilences(thresholdSeconds=3.0, count=0, totalSeconds=0.0),
            "overtalkSeconds": None,
            "overtalkPercent": None,
            "overtalkCount": None,
            "segments": [Segment(channel=c, startSeconds=a, endSeconds=b) for c, a, b in talk],
            "segmentsTruncated": False,
            **extra,
        }
    )


@dataclass
class Heard1:
    seconds: float
    tone: float
    peak: float


@dataclass
class Listener:
    """Reports what each piece sounded like and answers with what the test scripts."""

    answer: list[Recognised] = field(default_factory=lambda: [Recognised(0.0, 1.0, "もしもし。")])
    pieces: list[Heard1] = field(default_factory=list)

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(name="listener", model="none", modelSha256=None)

    def transcribe(self, audio: npt.NDArray[np.float32], language: str) -> list[Recognised]:
        assert audio.dtype == np.float32 and audio.ndim == 1 and language == "ja"
        spectrum = np.abs(np.fft.rfft(audio))
        tone = float(np.fft.rfftfreq(len(audio), 1 / ENGINE_SAMPLE_RATE)[int(np.argmax(spectrum))])
        self.pieces.append(Heard1(len(audio) / ENGINE_SAMPLE_RATE, tone, float(np.max(np.abs(audio)))))
        return list(self.answer)

    def close(self) -> None:
        pass


TALK = [(1, 1.0, 3.0), (0, 4.0, 5.5), (1, 7.0, 8.0)]


def test_each_piece_is_its_own_channel_at_16_khz_and_placed_in_the_call() -> None:
    listener = Listener()
    heard = transcribe_file(call_file(TALK, 2, 10.0), analysis(TALK, 2, 10.0), listener, language="ja")
    assert [(round(p.tone), round(p.seconds, 2)) for p in listener.pieces] == [
        (1000, 2.4),
        (440, 1.9),
        (1000, 1.4),
    ]
    assert all(0.4 < p.peak < 0.6 for p in listener.pieces)  # scaled to [-1, 1], not int16
    # the pieces are padded 0.2 s either side: a sentence at 0-1 s of a piece starts 0.2 s early
    assert heard == [
        Heard(1, 0.8, 1.8, "もしもし。"),
        Heard(0, 3.8, 4.8, "もしもし。"),
        Heard(1, 6.8, 7.8, "もしもし。"),
    ]


def test_a_16_khz_recording_is_not_resampled() -> None:
    listener = Listener()
    transcribe_file(call_file(TALK, 2, 10.0, rate=16000), analysis(TALK, 2, 10.0), listener, language="ja")
    assert [(round(p.tone), round(p.seconds, 2)) for p in listener.pieces] == [
        (1000, 2.4),
        (440, 1.9),
        (1000, 1.4),
    ]


def test_a_mono_recording_is_one_party_without_a_channel() -> None:
    talk = [(0, 1.0, 2.0), (0, 5.0, 6.0)]
    heard = transcribe_file(call_file(talk, 1, 8.0), analysis(talk, 1, 8.0), Listener(), language="ja")
    assert [h.channel for h in heard] == [None, None]


def test_times_an_engine_gives_outside_its_piece_are_kept_inside_it() -> None:
    listener = Listener(answer=[Recognised(-0.5, 0.4, "はい。"), Recognised(1.5, 9.0, "承知しました。")])
    talk = [(0, 2.0, 3.0)]
    heard = transcribe_file(call_file(talk, 2, 6.0), analysis(talk, 2, 6.0), listener, language="ja")
    # the piece is 1.8-3.2 s (padded): nothing said before it began or after it ended
    assert heard == [Heard(0, 1.8, 2.2, "はい。"), Heard(0, 3.2, 3.2, "承知しました。")]


def test_every_piece_passes_the_guards() -> None:
    listener = Listener(
        answer=[Recognised(0.0, 0.8, "はい。"), Recognised(0.8, 1.4, "ご視聴ありがとうございました")]
    )
    talk = [(0, 1.0, 2.0)]
    heard = transcribe_file(call_file(talk, 2, 4.0), analysis(talk, 2, 4.0), listener, language="ja")
    assert [h.text for h in heard] == ["はい。"]


def test_long_talk_reaches_the_engine_in_pieces_no_longer_than_its_window() -> None:
    talk = [(0, 0.5, 70.0)]  # 70 s without a pause
    listener = Listener()
    transcribe_file(call_file(talk, 2, 71.0), analysis(talk, 2, 71.0), listener, language="ja")
    assert len(listener.pieces) == 3
    assert all(p.seconds <= MAX_PIECE_SECONDS for p in listener.pieces)
    # cut into equal parts, padded 0.2 s at the outer ends only: every moment heard once
    assert sum(p.seconds for p in listener.pieces) == pytest.approx(69.5 + 0.4, abs=0.01)


def test_progress_is_told_before_the_first_piece_and_after_each() -> None:
    told: list[tuple[int, int]] = []
    transcribe_file(
        call_file(TALK, 2, 10.0),
        analysis(TALK, 2, 10.0),
        Listener(),
        language="ja",
        on_piece=lambda d, n: told.append((d, n)),
    )
    assert told == [(0, 3), (1, 3), (2, 3), (3, 3)]


def test_cancelling_stops_before_the_next_piece() -> None:
    listener = Listener()
    with pytest.raises(TranscriptionCancelled):
        transcribe_file(
            call_file(TALK, 2, 10.0),
            analysis(TALK, 2, 10.0),
            listener,
            language="ja",
            cancelled=lambda: len(listener.pieces) >= 1,
        )
    assert len(listener.pieces) == 1


def test_a_recording_without_talk_gives_no_sentence_and_no_engine_call() -> None:
    listener = Listener()
    assert transcribe_file(call_file([], 2, 5.0), analysis([], 2, 5.0), listener, language="ja") == []
    assert listener.pieces == []


def test_an_analysis_that_does_not_describe_the_file_is_refused() -> None:
    with pytest.raises(ValueError, match="every talk segment"):
        transcribe_file(
            call_file(TALK, 2, 10.0),
            analysis(TALK, 2, 10.0, segmentsTruncated=True),
            Listener(),
            language="ja",
        )
    with pytest.raises(ValueError, match="2-channel recording, the file has 1"):
        transcribe_file(call_file([], 1, 10.0), analysis(TALK, 2, 10.0), Listener(), language="ja")


def test_the_same_words_heard_on_a_channel_20_db_quieter_at_the_same_time_are_dropped_as_echo() -> None:
    talk = [(0, 1.0, 3.0), (1, 1.0, 3.0)]
    listener = Listener(answer=[Recognised(0.2, 2.0, "お電話ありがとうございます。")])
    loud_0 = transcribe_file(
        call_file(talk, 2, 5.0, gains=(0.5, 0.05)), analysis(talk, 2, 5.0), listener, language="ja"
    )
    assert [h.channel for h in loud_0] == [0]
    loud_1 = transcribe_file(
        call_file(talk, 2, 5.0, gains=(0.05, 0.5)), analysis(talk, 2, 5.0), listener, language="ja"
    )
    assert [h.channel for h in loud_1] == [1]
    both = transcribe_file(
        call_file(talk, 2, 5.0, gains=(0.4, 0.5)), analysis(talk, 2, 5.0), listener, language="ja"
    )
    assert [h.channel for h in both] == [0, 1]  # both loud: two people said it
