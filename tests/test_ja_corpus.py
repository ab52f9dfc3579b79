"""The committed Japanese speech corpus (tests/corpus_ja/) matches its manifest and cannot drift.

The corpus is made by ``make corpus`` (scripts/make_ja_corpus.py, its own venv): its manifest is the
ground truth the transcription tests and benchmark will be held to, so these checks are integrity
only: each file is what the manifest says it is (format, rate, channels, length, sha256), and each
utterance is a sane label (inside the call, on a real channel, never overlapping its own party
unless marked as overlap on a mono mix).
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from pathlib import Path
from typing import Any

import pytest
import soundfile

from cte1_mcp.transcribe.cer import normalise

CORPUS = Path(__file__).resolve().parent / "corpus_ja"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text(encoding="utf-8"))
CALLS: list[dict[str, Any]] = MANIFEST["calls"]
IDS = [call["id"] for call in CALLS]


def test_manifest_lists_every_committed_wav_and_nothing_else() -> None:
    assert sorted(p.name for p in CORPUS.glob("*.wav")) == sorted(call["file"] for call in CALLS)


@pytest.mark.parametrize("call", CALLS, ids=IDS)
def test_file_is_what_the_manifest_says(call: dict[str, Any]) -> None:
    path = CORPUS / call["file"]
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == call["sha256"], "regenerate with make corpus and commit both"
    assert len(data) == call["bytes"]
    info = soundfile.info(path)
    assert (info.format, info.subtype) == (call["format"], call["subtype"])
    assert info.samplerate == call["sampleRate"]
    assert info.channels == call["channels"] == len(call["channelRoles"])
    assert info.frames == call["frames"]
    assert round(info.frames * 1000 / info.samplerate) == call["durationMs"]


@pytest.mark.parametrize("call", CALLS, ids=IDS)
def test_utterances_are_sane_labels(call: dict[str, Any]) -> None:
    utterances = call["utterances"]
    assert utterances
    assert {u["role"] for u in utterances} == {"customer", "agent"}
    for u in utterances:
        assert 0 <= u["startMs"] < u["endMs"] <= call["durationMs"]
        assert 0 <= u["channel"] < call["channels"]
        if call["channels"] == 2:
            assert call["channelRoles"][u["channel"]] == u["role"]
        assert u["kind"] in {"sentence", "backchannel"}
        assert isinstance(u["overlap"], bool) and isinstance(u["numerals"], bool)
        assert u["text"] == unicodedata.normalize("NFC", u["text"]).strip() != ""
    for i, u in enumerate(utterances):
        for v in utterances[i + 1 :]:
            overlapping = v["startMs"] < u["endMs"] and u["startMs"] < v["endMs"]
            if overlapping:
                assert u["overlap"] and v["overlap"], (u, v)
                assert u["channel"] != v["channel"] or call["channels"] == 1, (u, v)


#: Kanji that spell a number in the corpus's texts (二丁目, 三千円, 〇九〇): what ``written`` turns into digits.
KANJI_NUMBER = re.compile("[〇一二三四五六七八九十百千万]+")
DIGITS = re.compile("[0-9]+")


@pytest.mark.parametrize("call", CALLS, ids=IDS)
def test_written_reference_differs_from_the_spoken_text_only_in_its_numbers(call: dict[str, Any]) -> None:
    """``written`` (what a CER is measured against) is ``text`` with its numbers in digits: the same
    words otherwise, so a hand-made reference cannot drift from what the TTS said."""
    for u in call["utterances"]:
        if not u["numerals"]:
            assert u["written"] == u["text"], u
            continue
        assert DIGITS.search(u["written"]) and not DIGITS.search(u["text"]), u
        spoken, written = normalise(u["text"]), normalise(u["written"])  # punctuation aside
        assert KANJI_NUMBER.sub("#", spoken) == DIGITS.sub("#", written), u


@pytest.mark.parametrize("call", CALLS, ids=IDS)
def test_holds_and_music_hold_no_speech(call: dict[str, Any]) -> None:
    for interval in call["holds"] + call["music"]:
        assert 0 <= interval["startMs"] < interval["endMs"] <= call["durationMs"]
        for u in call["utterances"]:
            assert u["endMs"] <= interval["startMs"] or u["startMs"] >= interval["endMs"], (interval, u)
    assert all(any(h["music"] and h["startMs"] == m["startMs"] for h in call["holds"]) for m in call["music"])


def test_corpus_covers_what_the_transcriber_must_handle() -> None:
    conditions = {c for call in CALLS for c in call["conditions"]}
    assert {
        "overtalk",
        "backchannels",
        "silent-hold",
        "music-hold",
        "line-echo",
        "noise",
        "mono-mixed",
    } <= conditions
    assert {(c["subtype"], c["sampleRate"]) for c in CALLS} >= {
        ("ULAW", 8000),
        ("PCM_16", 8000),
        ("PCM_16", 16000),
    }
    assert any(c["echo"] and c["echo"]["levelDb"] == -20 for c in CALLS)
    assert any(h["endMs"] - h["startMs"] >= 12000 and not h["music"] for c in CALLS for h in c["holds"])
    assert any(c["durationMs"] >= 280_000 and c["channels"] == 2 and c["clean"] for c in CALLS)
    assert len({v for c in CALLS for v in c["voices"].values()}) >= 2
    assert sum(c["bytes"] for c in CALLS) < 15 * 2**20
