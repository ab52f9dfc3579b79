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
from cte1_mcp.transcribe.base import ENGINE_SAMPLE_RATE, MAX_PIECE_SECONDS, EngineInfo, Recognised, Word
from cte1_mcp.transcribe.pipeline import (
    PACK_GAP_SECONDS,
    PEAK_LIMIT,
    SPEECH_LEVEL_DBFS,
    TranscriptionCancelled,
    at_speech_level,
    transcribe_file,
)
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
class Sound:
    """A stretch of sound in what the engine was given, seconds from the start of its audio."""

    start: float
    end: float
    tone: float
    peak: float


@dataclass
class Call:
    """One engine call: how long its audio was, and the stretches of sound in it."""

    seconds: float
    sounds: list[Sound]
    audio: npt.NDArray[np.float32]


def sounds(audio: npt.NDArray[np.float32]) -> list[Sound]:
    """Runs of 10-ms frames louder than -26 dBFS (a test tone is -9 dBFS, the silence between is 0)."""
    frame = ENGINE_SAMPLE_RATE // 100
    loud = [
        float(np.sqrt(np.mean(np.square(audio[i : i + frame])))) > 0.05 for i in range(0, len(audio), frame)
    ]
    found: list[Sound] = []
    index = 0
    while index < len(loud):
        if not loud[index]:
            index += 1
            continue
        end = index
        while end < len(loud) and loud[end]:
            end += 1
        part = audio[index * frame : end * frame]
        spectrum = np.abs(np.fft.rfft(part))
        tone = float(np.fft.rfftfreq(len(part), 1 / ENGINE_SAMPLE_RATE)[int(np.argmax(spectrum))])
        found.append(Sound(index / 100, end / 100, tone, float(np.max(np.abs(part)))))
        index = end
    return found


@dataclass
class Listener:
    """Reports what each engine call sounded like. Answers with what the test scripts, or else, like
    an engine, with one sentence (no word times) at the start of every stretch of sound it heard."""

    answer: list[Recognised] | None = None
    calls: list[Call] = field(default_factory=list)

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(name="listener", model="none", modelSha256=None)

    def transcribe(self, audio: npt.NDArray[np.float32], language: str) -> list[Recognised]:
        assert audio.dtype == np.float32 and audio.ndim == 1 and language == "ja"
        heard = sounds(audio)
        self.calls.append(Call(len(audio) / ENGINE_SAMPLE_RATE, heard, audio.copy()))
        if self.answer is not None:
            return list(self.answer)
        return [Recognised(s.start, min(s.start + 1.0, s.end), "もしもし。") for s in heard]

    def cannot_hear(self, language: str) -> str | None:
        return None

    def close(self) -> None:
        pass


TALK = [(1, 1.0, 3.0), (0, 4.0, 5.5), (1, 7.0, 8.0)]


def test_a_channels_pieces_share_one_engine_call_at_16_khz_with_silence_between_and_are_placed_in_the_call() -> (
    None
):
    listener = Listener()
    heard = transcribe_file(call_file(TALK, 2, 10.0), analysis(TALK, 2, 10.0), listener, language="ja")
    # channel 1's pieces (0.8-3.2 s and 6.8-8.2 s: padded 0.2 s) in one call, 0.5 s apart; channel 0's alone
    assert [round(c.seconds, 2) for c in listener.calls] == [2.4 + PACK_GAP_SECONDS + 1.4, 1.9]
    assert [[(round(s.tone), s.start, s.end) for s in c.sounds] for c in listener.calls] == [
        [(1000, 0.2, 2.2), (1000, 2.4 + PACK_GAP_SECONDS + 0.2, 2.4 + PACK_GAP_SECONDS + 1.2)],
        [(440, 0.2, 1.7)],
    ]
    assert all(0.1 < s.peak < 0.2 for c in listener.calls for s in c.sounds)  # [-1, 1] at speech level
    # each sentence back on its piece, at the time its sound has in the recording
    assert heard == [
        Heard(1, 1.0, 2.0, "もしもし。"),
        Heard(0, 4.0, 5.0, "もしもし。"),
        Heard(1, 7.0, 8.0, "もしもし。"),
    ]


def test_a_16_khz_recording_is_not_resampled() -> None:
    listener = Listener()
    transcribe_file(call_file(TALK, 2, 10.0, rate=16000), analysis(TALK, 2, 10.0), listener, language="ja")
    assert [round(c.seconds, 2) for c in listener.calls] == [2.4 + PACK_GAP_SECONDS + 1.4, 1.9]
    assert [[(round(s.tone), s.start, s.end) for s in c.sounds] for c in listener.calls] == [
        [(1000, 0.2, 2.2), (1000, 2.4 + PACK_GAP_SECONDS + 0.2, 2.4 + PACK_GAP_SECONDS + 1.2)],
        [(440, 0.2, 1.7)],
    ]


def speech_dbfs(call: Call) -> float:
    """RMS level of an engine call's audio over its stretches of sound (not the silence between)."""
    speech = np.concatenate(
        [
            call.audio[round(s.start * ENGINE_SAMPLE_RATE) : round(s.end * ENGINE_SAMPLE_RATE)]
            for s in call.sounds
        ]
    )
    return 20 * float(np.log10(np.sqrt(np.mean(np.square(speech.astype(np.float64))))))


def test_the_engine_hears_a_quiet_line_at_the_level_of_a_loud_one() -> None:
    # the same talk recorded 20 dB apart (a headset and a weak line): Whisper's features are absolute,
    # and the same words 6 dB quieter came back as others
    loud, quiet = Listener(), Listener()
    transcribe_file(call_file(TALK, 2, 10.0), analysis(TALK, 2, 10.0), loud, language="ja")
    transcribe_file(
        call_file(TALK, 2, 10.0, gains=(0.05, 0.05)), analysis(TALK, 2, 10.0), quiet, language="ja"
    )
    assert len(loud.calls) == len(quiet.calls) == 2
    for heard_loud, heard_quiet in zip(loud.calls, quiet.calls, strict=True):
        # the tone plus its 0.2-s pads of silence are brought to the level: the tone is a little above it
        assert SPEECH_LEVEL_DBFS < speech_dbfs(heard_loud) < SPEECH_LEVEL_DBFS + 2.5
        assert abs(speech_dbfs(heard_loud) - speech_dbfs(heard_quiet)) < 0.1
        assert [(s.start, s.end) for s in heard_loud.sounds] == [(s.start, s.end) for s in heard_quiet.sounds]
    # channel 1's two pieces share a call: the 0.5 s between them (after 2.4 s of piece) stays silent
    gap = loud.calls[0].audio[
        round(2.4 * ENGINE_SAMPLE_RATE) : round((2.4 + PACK_GAP_SECONDS) * ENGINE_SAMPLE_RATE)
    ]
    assert len(gap) and not gap.any()


def test_speech_is_raised_no_further_than_just_under_full_scale() -> None:
    # a click in faint talk: the gain the level asks for would push the click past full scale
    audio = np.full(16000, 0.001, np.float32)
    audio[8000] = 0.5
    raised = at_speech_level(audio, len(audio))
    assert float(np.max(np.abs(raised))) == pytest.approx(PEAK_LIMIT)
    assert float(raised[0]) == pytest.approx(0.001 * PEAK_LIMIT / 0.5)


def test_silence_is_left_silent() -> None:
    silence = np.zeros(16000, np.float32)
    assert not at_speech_level(silence, len(silence)).any()
    assert not at_speech_level(silence, 0).any()


def test_a_mono_recording_is_one_party_without_a_channel() -> None:
    talk = [(0, 1.0, 2.0), (0, 5.0, 6.0)]
    heard = transcribe_file(call_file(talk, 1, 8.0), analysis(talk, 1, 8.0), Listener(), language="ja")
    assert heard == [Heard(None, 1.0, 2.0, "もしもし。"), Heard(None, 5.0, 6.0, "もしもし。")]


def test_packing_maps_times_back_exactly_and_splits_a_sentence_whose_words_span_two_pieces() -> None:
    talk = [(0, 1.0, 2.0), (0, 5.0, 6.0)]  # pieces 0.8-2.2 s and 4.8-6.2 s; in the call 0-1.4 s and 1.9-3.3 s
    second = 1.4 + PACK_GAP_SECONDS
    words = (
        Word(0.3, 0.9, "もしもし"),
        Word(0.9, 1.1, "、"),
        Word(second + 0.1, second + 0.6, "お電話"),
        Word(second + 0.6, second + 1.2, "です。"),
    )
    listener = Listener(
        answer=[
            Recognised(0.3, second + 1.2, "もしもし、お電話です。", words),
            Recognised(second + 1.25, second + 1.35, "はい。"),  # no word times: placed by its middle
        ]
    )
    heard = transcribe_file(call_file(talk, 2, 8.0), analysis(talk, 2, 8.0), listener, language="ja")
    assert [round(c.seconds, 3) for c in listener.calls] == [round(second + 1.4, 3)]
    assert heard == [
        Heard(0, 1.1, 1.9, "もしもし、"),
        Heard(0, 4.9, 6.0, "お電話です。"),
        Heard(0, 6.05, 6.15, "はい。"),
    ]


def test_a_channels_pieces_are_packed_up_to_the_engines_window_and_each_heard_where_it_was_said() -> None:
    talk = [(0, 1.0 + 4 * i, 3.0 + 4 * i) for i in range(20)]  # 20 pieces of 2.4 s (padded)
    listener = Listener()
    heard = transcribe_file(call_file(talk, 2, 82.0), analysis(talk, 2, 82.0), listener, language="ja")
    # 9 pieces fill 9 x 2.4 + 8 x 0.5 = 25.6 s; a tenth would not fit in 28 s
    assert [len(c.sounds) for c in listener.calls] == [9, 9, 2]
    assert all(c.seconds <= MAX_PIECE_SECONDS for c in listener.calls)
    assert [(h.channel, h.start, h.end) for h in heard] == [(0, start, start + 1.0) for _, start, _ in talk]


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
    # three pieces of 23.3 s: no two fit in one call
    assert len(listener.calls) == 3
    assert all(c.seconds <= MAX_PIECE_SECONDS for c in listener.calls)
    # cut into equal parts, padded 0.2 s at the outer ends only: every moment heard once
    assert sum(c.seconds for c in listener.calls) == pytest.approx(69.5 + 0.4, abs=0.01)


def test_progress_is_told_before_the_first_engine_call_and_after_each() -> None:
    told: list[tuple[int, int]] = []
    transcribe_file(
        call_file(TALK, 2, 10.0),
        analysis(TALK, 2, 10.0),
        Listener(),
        language="ja",
        on_piece=lambda d, n: told.append((d, n)),
    )
    assert told == [(0, 2), (1, 2), (2, 2)]  # channel 1's two pieces in one call, channel 0's in another


def test_cancelling_stops_before_the_next_engine_call() -> None:
    listener = Listener()
    with pytest.raises(TranscriptionCancelled):
        transcribe_file(
            call_file(TALK, 2, 10.0),
            analysis(TALK, 2, 10.0),
            listener,
            language="ja",
            cancelled=lambda: len(listener.calls) >= 1,
        )
    assert len(listener.calls) == 1


def test_a_recording_without_talk_gives_no_sentence_and_no_engine_call() -> None:
    listener = Listener()
    assert transcribe_file(call_file([], 2, 5.0), analysis([], 2, 5.0), listener, language="ja") == []
    assert listener.calls == []


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


def echo_file(loud: int, echo_gain: float, delay: float, *, own: bool = False) -> io.BytesIO:
    """μ-law WAV, 5 s: noise-like speech on channel ``loud`` from 1 to 3 s, and on the other channel
    its copy ``delay`` s late at ``echo_gain``; with ``own``, other noise of that level instead
    (a quiet party of its own, not a copy)."""
    rate = 8000
    rng = np.random.default_rng(7)
    speech = (0.3 * rng.standard_normal(2 * rate)).clip(-0.9, 0.9).astype(np.float32)
    samples = np.zeros((5 * rate, 2), np.float32)
    samples[rate : 3 * rate, loud] = speech
    other = (0.3 * rng.standard_normal(2 * rate)).clip(-0.9, 0.9).astype(np.float32) if own else speech
    at = rate + round(delay * rate)
    samples[at : at + 2 * rate, 1 - loud] = echo_gain * other[: len(samples) - at]
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype="ULAW")
    buffer.seek(0)
    return buffer


def test_the_same_words_heard_where_a_channel_carries_the_others_delayed_copy_are_dropped_as_echo() -> None:
    talk = [(0, 1.0, 3.0), (1, 1.0, 3.0)]
    listener = Listener(answer=[Recognised(0.2, 2.0, "お電話ありがとうございます。")])
    # a line echo 20 dB down and 40 ms late, either way round
    for loud in (0, 1):
        heard = transcribe_file(echo_file(loud, 0.1, 0.04), analysis(talk, 2, 5.0), listener, language="ja")
        assert [h.channel for h in heard] == [loud]
    # 20 dB quieter but not a copy: a quiet party of its own, saying the same (before: dropped)
    heard = transcribe_file(
        echo_file(0, 0.1, 0.04, own=True), analysis(talk, 2, 5.0), listener, language="ja"
    )
    assert [h.channel for h in heard] == [0, 1]
    both = transcribe_file(
        call_file(talk, 2, 5.0, gains=(0.4, 0.5)), analysis(talk, 2, 5.0), listener, language="ja"
    )
    assert [h.channel for h in both] == [0, 1]  # both loud: two people said it
