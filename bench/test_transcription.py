"""The transcription part's own pieces (no timing asserted): its scoring, both children on a real
corpus call with the real Whisper-base, the server's stored transcript over stdio, and the report."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from bench import report
from bench.transcription import (
    CORPUS,
    FIVE_MINUTES,
    VARIANTS,
    Said,
    Sample,
    Score,
    TranscriptionResult,
    model_dir,
    score,
    stored_part,
    transcribe_once,
)
from cte1_mcp.transcribe.cer import edit_distance, normalise

MANIFEST = json.loads((CORPUS / "manifest.json").read_text(encoding="utf-8"))
#: The shortest call of the corpus (29 s, mono): the children and the server on real speech.
SHORT = next(c for c in MANIFEST["calls"] if c["id"] == "c09_mono_mixed")

CALL = {
    "id": "x",
    "clean": True,
    "channels": 2,
    "channelRoles": ["customer", "agent"],
    "conditions": [],
    "utterances": [
        {"channel": 0, "startMs": 0, "endMs": 1000, "text": "もしもし。", "written": "もしもし。"},
        {"channel": 1, "startMs": 1000, "endMs": 2000, "text": "はい、田中です", "written": "はい、田中です"},
        {
            "channel": 0,
            "startMs": 3000,
            "endMs": 5000,
            "text": "番号は一二三です",
            "written": "番号は123です",
        },
    ],
}


def test_scoring_per_party_against_the_written_and_the_kanji_reference() -> None:
    heard = [
        Said(0, 0.1, 0.9, "もしもし"),
        Said(1, 1.0, 2.0, "はい田中です"),
        Said(0, 3.1, 4.8, "番号は123です"),
    ]
    written = score(CALL, heard)
    assert written["customer"] == Score(0, len(normalise("もしもし。番号は123です")))
    assert written["agent"] == Score(0, len(normalise("はい、田中です")))
    assert written["all"] == written["customer"] + written["agent"] and written["all"].cer == 0.0
    # against the kanji the TTS read, the digits count as three substitutions
    kanji = score(CALL, heard, written=False)
    customer = normalise("もしもし。番号は一二三です")
    assert kanji["customer"] == Score(3, len(customer))
    # a wrong number is an error against the written reference too; the other party's words count
    misheard = [*heard[:2], Said(0, 3.1, 4.8, "番号は124です"), Said(1, 3.5, 4.0, "ええ")]
    assert score(CALL, misheard)["customer"].errors == 1
    assert score(CALL, misheard)["agent"].errors == 2


@pytest.fixture(scope="module")
def whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model_dir(tmp_path_factory.mktemp("bench-models"))


def test_both_children_transcribe_a_corpus_call(whisper: Path) -> None:
    for variant in VARIANTS:
        sample = transcribe_once(variant, whisper, CORPUS / SHORT["file"])
        assert sample.audio_seconds == pytest.approx(SHORT["durationMs"] / 1000)
        assert sample.seconds > 0 and sample.rss_growth_bytes > 0
        assert sample.heard and {h.channel for h in sample.heard} == {None}
        scored = score(SHORT, sample.heard)
        reference = normalise(
            "".join(u["written"] for u in sorted(SHORT["utterances"], key=lambda u: u["startMs"]))
        )
        hypothesis = normalise("".join(h.text for h in sorted(sample.heard, key=lambda h: h.start)))
        assert scored["mixed"] == Score(edit_distance(reference, hypothesis), len(reference))
        assert scored["mixed"].cer < 1.0, (variant, hypothesis)  # it heard the call, not nothing


def test_the_stored_transcript_over_stdio(whisper: Path, tmp_path: Path) -> None:
    result = TranscriptionResult()
    with (tmp_path / "err.log").open("w") as errlog:
        anyio.run(stored_part, whisper, tmp_path, errlog, result, CORPUS / SHORT["file"], 3)
    assert result.first_service_seconds > 0 and result.service_rss_growth_bytes > 0
    assert len(result.stored_seconds) == 3


def test_the_report_shows_the_comparison_and_its_targets() -> None:
    five = {**CALL, "id": FIVE_MINUTES, "conditions": ["backchannels"]}
    echo = {**CALL, "id": "echo", "clean": False, "conditions": ["line-echo"]}
    good = [
        Said(0, 0.1, 0.9, "もしもし"),
        Said(1, 1.0, 2.0, "はい田中です"),
        Said(0, 3.1, 4.8, "番号は123です"),
    ]
    echoed = [*good, Said(1, 0.1, 0.9, "もしもし")]
    r = TranscriptionResult(calls=[five, echo], model="whisper-base")
    for call_id in (FIVE_MINUTES, "echo"):
        r.samples[call_id] = {
            "ours": [Sample(30.0, 300.0, 40 << 20, good)] * 3,
            "obvious": [Sample(20.0, 300.0, 200 << 20, echoed)] * 3,
        }
    r.first_service_seconds, r.service_rss_growth_bytes, r.stored_seconds = 40.0, 300 << 20, [0.004] * 5
    results = report.Results(None, None, 0, None, None, transcription=r)
    targets = {t.name: t for t in report.targets(results)}
    assert len(targets) == 6  # CER per party (2), against the obvious per party (2), speed, stored
    rtf = next(t for t in targets.values() if "wall / audio" in t.name)
    assert rtf.met and rtf.measured.startswith("0.100")
    assert all(t.met for t in targets.values() if "CER" in t.name)
    text = report.render(results, [], "python -m bench --parts transcription", 3, 1.0, quick=True)
    assert "## 8. Transcripts (issue 15)" in text
    assert "| echo | line-echo | **all** |" in text
    assert "| every call | agent |" in text
