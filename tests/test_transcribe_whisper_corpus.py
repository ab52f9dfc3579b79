"""Whisper-base through the whole pipeline on real Japanese speech: the labelled corpus
(tests/corpus_ja/, scripts/make_ja_corpus.py), whose ground truth comes from its construction.

Each call is analysed by the real analyser (the stored analysis a transcription starts from), then
transcribed with the real model, once a session. Few calls, chosen for what they test, since CPU is
scarce: two clean calls for the character error rate (8 kHz μ-law, and 16 kHz PCM, which is not
resampled), a silent hold, a music hold, line echo, and a mono call; and the 16-kHz call again at
half its level, which must be heard as the same words.

Tolerances, and why:

- **CER ≤ 12 % over both parties of the clean calls** (the issue's target with Whisper-base), and
  **≤ 20 % for each party**: Whisper-base meets 12 % for the agent's voice and misses it for the male
  customer voice on 8-kHz PCM (c02, not run here; homophones such as 料金→両金, 請求額→成球学).
  The reference is each utterance's ``written`` form: numbers in digits, as a transcript writes
  them and as Whisper does (the TTS was given kanji numerals, ``text``), so a misheard number counts.
- **a sentence overlaps the truth by time**: every sentence lies at least partly on an utterance of
  its own party; times are Whisper's segment times (or a share of them), not exact.
- **holds and music**: no sentence overlaps a hold or music by more than ``EDGE`` (0.5 s): the pieces
  reach 0.2 s into the pause either side, and a segment's time may run past its last word.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from cte1_mcp.audio.analytics import analyse
from cte1_mcp.transcribe.base import Transcriber
from cte1_mcp.transcribe.cer import cer, edit_distance, normalise
from cte1_mcp.transcribe.pipeline import transcribe_file
from cte1_mcp.transcribe.transcript import Heard

CORPUS = Path(__file__).parent / "corpus_ja"
MANIFEST: dict[str, Any] = json.loads((CORPUS / "manifest.json").read_text(encoding="utf-8"))
CALLS = {call["id"]: call for call in MANIFEST["calls"]}
CLEAN_CALLS = ["c01_identity_clean", "c10_wideband_16k_pcm"]
MAX_CER = 0.12
MAX_PARTY_CER = 0.20
EDGE = 0.5

pytestmark = pytest.mark.slow

Transcribed = Callable[[str], tuple[dict[str, Any], list[Heard]]]


@pytest.fixture(scope="module")
def transcribed(whisper_base: Transcriber) -> Transcribed:
    """``call id -> (manifest entry, sentences)``, each call analysed and transcribed once."""
    done: dict[str, tuple[dict[str, Any], list[Heard]]] = {}

    def run(call_id: str) -> tuple[dict[str, Any], list[Heard]]:
        if call_id not in done:
            call = CALLS[call_id]
            audio = io.BytesIO((CORPUS / call["file"]).read_bytes())
            analysis = analyse(audio, tuple(call["channelRoles"]) if call["channels"] == 2 else ())
            done[call_id] = call, transcribe_file(audio, analysis, whisper_base, language="ja")
        return done[call_id]

    return run


def seconds(item: dict[str, Any]) -> tuple[float, float]:
    return item["startMs"] / 1000, item["endMs"] / 1000


def overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return max(0.0, min(a[1], b[1]) - max(a[0], b[0]))


def party_texts(call: dict[str, Any], heard: list[Heard], channel: int) -> tuple[str, str]:
    """One party's reference (as written, numbers in digits) and heard text over the call."""
    party = None if call["channels"] == 1 else channel
    reference = "".join(u["written"] for u in call["utterances"] if u["channel"] == channel)
    return reference, "".join(h.text for h in heard if h.channel == party)


def test_the_clean_calls_are_heard_within_the_error_target(transcribed: Transcribed) -> None:
    parties = [party_texts(*transcribed(call_id), channel) for call_id in CLEAN_CALLS for channel in (0, 1)]
    rates = [cer(reference, hypothesis) for reference, hypothesis in parties]
    lengths = [len(normalise(reference)) for reference, _ in parties]
    pooled = sum(rate * length for rate, length in zip(rates, lengths, strict=True)) / sum(lengths)
    assert pooled <= MAX_CER, (pooled, rates)
    assert all(rate <= MAX_PARTY_CER for rate in rates), rates


@pytest.mark.parametrize(
    "call_id", [*CLEAN_CALLS, "c05_hold_silent_12s", "c06_hold_music", "c07_line_echo_20db"]
)
def test_every_sentence_is_timed_on_an_utterance_of_its_own_party(
    transcribed: Transcribed, call_id: str
) -> None:
    call, heard = transcribed(call_id)
    assert heard
    for sentence in heard:
        spoken = [seconds(u) for u in call["utterances"] if u["channel"] == sentence.channel]
        assert any(overlap((sentence.start, sentence.end), span) > 0 for span in spoken), sentence


@pytest.mark.parametrize("call_id", ["c05_hold_silent_12s", "c06_hold_music"])
def test_no_sentence_spans_a_hold_or_music_and_none_is_heard_in_it(
    transcribed: Transcribed, call_id: str
) -> None:
    call, heard = transcribed(call_id)
    quiet = [seconds(hold) for hold in call["holds"]] + [seconds(music) for music in call["music"]]
    assert quiet
    for span in quiet:
        inside = [h for h in heard if overlap((h.start, h.end), span) > EDGE]
        assert inside == [], span


def test_the_echo_channel_does_not_repeat_the_other_party(transcribed: Transcribed) -> None:
    call, heard = transcribed("c07_line_echo_20db")
    for sentence in heard:
        other = [u for u in call["utterances"] if u["channel"] != sentence.channel]
        said_there = [u["text"] for u in other if overlap((sentence.start, sentence.end), seconds(u)) > 0]
        # the echo of the other party's words would be close to them (measured before the echo
        # guard: 245 % CER on the echo channel, every sentence of the other party heard twice)
        said = normalise(sentence.text)
        assert all(
            edit_distance(said, normalise(text), within=True) > 0.5 * len(said) for text in said_there
        ), (
            sentence,
            said_there,
        )
    assert {h.channel for h in heard} == {0, 1}


@pytest.mark.parametrize("call_id", ["c04_cancellation_backchannels", "c07_line_echo_20db"])
def test_every_utterance_is_heard_on_its_own_channel(transcribed: Transcribed, call_id: str) -> None:
    """Regression: the echo guard judged by loudness and dropped genuine replies (c04: two of the
    customer's 「はい」, timed just past their talk, looked 100 dB quieter than the agent). c07's
    channels carry each other's echo: each party's own words must still all be there."""
    call, heard = transcribed(call_id)
    for utterance in call["utterances"]:
        start, end = seconds(utterance)
        near = [
            h
            for h in heard
            if h.channel == utterance["channel"] and h.start < end + EDGE and start - EDGE < h.end
        ]
        assert near, utterance


def test_the_same_talk_6_db_quieter_is_heard_as_the_same_words(whisper_base: Transcriber) -> None:
    # a line's level depends on the handset, the line and the recorder, not on what was said;
    # before each engine call's speech was brought to one level, c10 6 dB quieter was heard with
    # other words (「成球所」 at its own level, 「請求書」 6 dB down; 「デス料」, 「手数量」). Halving even
    # samples is exact, so only the level differs.
    call = CALLS["c10_wideband_16k_pcm"]
    samples, rate = soundfile.read(CORPUS / call["file"], dtype="int16", always_2d=True)
    loud = samples & ~np.int16(1)
    files = []
    for version in (loud, loud // 2):
        file = io.BytesIO()
        soundfile.write(file, version, rate, format="WAV", subtype="PCM_16")
        files.append(file)
    files[0].seek(0)
    # one analysis for both: the analyser's talk edges are found against fixed levels, so pieces
    # 6 dB quieter end some 50 ms earlier; this is about what the engine hears in the same pieces
    talk = analyse(files[0], tuple(call["channelRoles"]))
    heard = []
    for file in files:
        file.seek(0)
        heard.append(transcribe_file(file, talk, whisper_base, language="ja"))
    assert heard[0] and heard[0] == heard[1]


def test_a_mono_call_is_one_party_and_heard(transcribed: Transcribed) -> None:
    call, heard = transcribed("c09_mono_mixed")
    assert heard and {h.channel for h in heard} == {None}
    # two voices mixed on one channel: measured 17.8 %, short of the clean calls
    assert cer(*party_texts(call, heard, 0)) <= 0.3
