"""get_call_transcript and its resources through the official MCP client, on real Japanese speech
(a call of the labelled corpus, served by the simulator as a recording) with the real Whisper-base
model: the words, the parties, the times, storage, single-flight, cancellation and every refusal.
Ground truth is the corpus manifest (how the audio was made), never the recogniser."""

from __future__ import annotations

import io
import json
import os
from datetime import UTC
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
import soundfile
from mcp.shared.exceptions import MCPError
from mcp_types import TextResourceContents

from cte1_mcp.transcribe.base import cached_fingerprint
from cte1_mcp.transcribe.cer import cer
from tests.mcp_harness import SMALL, call_uri, in_process, structured, text
from tests.test_mcp_hostile_audio import serve_once

CORPUS = Path(__file__).parent / "corpus_ja"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())
CALL = next(c for c in MANIFEST["calls"] if c["id"] == "c10_wideband_16k_pcm")
ROLES = ("customer", "agent")

pytestmark = pytest.mark.anyio


def reference(role: str) -> str:
    return "".join(u["written"] for u in CALL["utterances"] if u["role"] == role)


def heard(sentences: list[dict[str, Any]], role: str) -> str:
    return "".join(s["text"] for s in sentences if s["speaker"] == role)


def serve_corpus_call(simulator: Any) -> None:
    serve_once(simulator, (CORPUS / CALL["file"]).read_bytes())


async def test_without_a_model_the_tool_and_resources_refuse_before_any_upstream_request(
    simulator: Any, tmp_path: Path
) -> None:
    simulator.state.reset()
    async with in_process(simulator.url, tmp_path, asr_models_dir=tmp_path / "models") as client:
        result = await client.call_tool("get_call_transcript", SMALL)
        assert result.is_error
        assert text(result).startswith("[transcription_unavailable]") and "CTE1_ASR_MODEL" in text(result)
        assert "cte1-mcp models" in text(result)
        for kind in ("transcript", "transcript.vtt"):
            with pytest.raises(MCPError) as caught:
                await client.read_resource(call_uri(SMALL, kind))
            assert caught.value.error.data["code"] == "transcription_unavailable"
    assert simulator.state.requests == []


async def test_a_transcript_of_real_speech_per_party_with_times(
    simulator: Any, tmp_path: Path, whisper_base_dir: Path
) -> None:
    serve_corpus_call(simulator)
    events: list[Any] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        events.append(message)

    async with in_process(
        simulator.url, tmp_path, asr_model=str(whisper_base_dir), channel_roles=ROLES, asr_threads=2
    ) as client:
        result = await client.call_tool("get_call_transcript", SMALL, progress_callback=progress)
        body = structured(result)
        again = structured(await client.call_tool("get_call_transcript", SMALL))
        whole = json.loads(_text_of(await client.read_resource(call_uri(SMALL, "transcript"))))
        vtt = _text_of(await client.read_resource(call_uri(SMALL, "transcript.vtt")))
        review = await client.call_tool("review_call", SMALL)  # a client without apps: text
    transcript = body["transcript"]
    assert transcript["language"] == "ja" and transcript["channels"] == 2
    assert transcript["engine"]["name"] == "faster-whisper" and len(transcript["engine"]["modelSha256"]) == 64
    assert transcript["speakers"] == [
        {"speakerId": 1, "speaker": "customer", "channel": 0},
        {"speakerId": 2, "speaker": "agent", "channel": 1},
    ]
    sentences = transcript["sentenceList"]
    assert [s["sequence"] for s in sentences] == list(range(1, len(sentences) + 1))
    assert [s["startOffsetMs"] for s in sentences] == sorted(s["startOffsetMs"] for s in sentences)
    # the words of each party, from its own channel (the reference leaves out read-out numbers,
    # which the corpus spells in kanji and Whisper in digits)
    for role in ROLES:
        assert cer(reference(role), heard(sentences, role)) <= 0.25, (role, heard(sentences, role))
    # every sentence lies on speech the corpus placed on that party's channel
    for sentence in sentences:
        spoken = [u for u in CALL["utterances"] if u["role"] == sentence["speaker"]]
        assert any(
            sentence["startOffsetMs"] < u["endMs"] + 300 and u["startMs"] - 300 < sentence["endOffsetMs"]
            for u in spoken
        ), sentence
        assert sentence["startTime"].endswith("Z") and sentence["startTime"] < sentence["endTime"]
    # clients that show only text get the words too, one line a sentence after the summary
    lines = text(result).splitlines()
    assert "transcript of 0:32 (ja) by faster-whisper" in lines[0]
    assert lines[0].count("sentence") == 2 and "cte1://calls/05053698341/942126/1/transcript" in lines[0]
    assert lines[2:] == [
        f"{_clock(s['startOffsetMs'])}\N{EN DASH}{_clock(s['endOffsetMs'])} {s['speaker']}: {s['text']}"
        for s in sentences
    ]
    assert body["transcriptUri"] == call_uri(SMALL, "transcript")
    assert body["call"]["audioUri"] == call_uri(SMALL)
    # stored: asked again, the same sentences, no second transcription and no second download
    assert again["transcript"] == transcript and whole == transcript
    assert len(list(tmp_path.rglob("transcript-v*.json"))) == 1
    assert len(simulator.state.requests) == 1
    assert vtt.startswith("WEBVTT\n\n1\n") and vtt.count("<v customer>") + vtt.count("<v agent>") == len(
        sentences
    )
    assert any(m and m.startswith("Transcribed ") for m in events)
    # review_call's text answer, for hosts without apps, carries the transcript's first lines
    review_lines = text(review).splitlines()
    first = review_lines.index("Transcript:")
    assert (
        review_lines[first + 1 : first + 1 + min(10, len(sentences))]
        == lines[2 : 2 + min(10, len(sentences))]
    )


async def test_a_mixed_call_recorded_on_both_channels_is_one_party_said_once(
    simulator: Any, tmp_path: Path, whisper_base_dir: Path
) -> None:
    """Regression: the corpus's mono call written to both channels (dual mono) came back as two
    parties, each saying every sentence, talking over each other most of the call."""
    mono = next(c for c in MANIFEST["calls"] if c["id"] == "c09_mono_mixed")
    samples, rate = soundfile.read(CORPUS / mono["file"], dtype="int16")
    stereo = io.BytesIO()
    soundfile.write(stereo, np.stack([samples, samples], axis=1), rate, format="WAV", subtype="PCM_16")
    serve_once(simulator, stereo.getvalue())
    async with in_process(
        simulator.url, tmp_path, asr_model=str(whisper_base_dir), channel_roles=ROLES, asr_threads=2
    ) as client:
        analytics = structured(await client.call_tool("get_call_analytics", SMALL))["analytics"]
        transcript = structured(await client.call_tool("get_call_transcript", SMALL))["transcript"]
    assert analytics["channels"] == 2 and analytics["dualMono"] and analytics["overtalkSeconds"] is None
    assert [p["label"] for p in analytics["parties"]] == ["mixed"]
    assert transcript["channels"] == 2
    assert transcript["speakers"] == [{"speakerId": 1, "speaker": "mixed", "channel": None}]
    sentences = transcript["sentenceList"]
    assert sentences and {(s["speaker"], s["channel"]) for s in sentences} == {("mixed", None)}
    said = "".join(u["written"] for u in sorted(mono["utterances"], key=lambda u: u["startMs"]))
    # each sentence once: said twice, the CER would pass 100 %; measured 17.8 % on the mono file
    assert cer(said, "".join(s["text"] for s in sentences)) <= 0.3


async def test_concurrent_callers_share_one_transcription_and_a_lone_cancel_stops_it(
    simulator: Any, tmp_path: Path, whisper_base_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cte1_mcp.transcription as transcription

    runs: list[int] = []
    pieces_heard: list[int] = []
    real = transcription.transcribe_file

    def counted(*args: Any, **kwargs: Any) -> Any:
        runs.append(1)
        on_piece = kwargs["on_piece"]
        kwargs["on_piece"] = lambda done, total: (pieces_heard.append(done), on_piece(done, total))
        return real(*args, **kwargs)

    monkeypatch.setattr(transcription, "transcribe_file", counted)
    serve_corpus_call(simulator)
    async with in_process(simulator.url, tmp_path, asr_model=str(whisper_base_dir), asr_threads=2) as client:
        # the only caller gives up as the first engine call starts (the call is c10's channels: two
        # calls, one per channel): the work stops before the second, nothing is stored
        with anyio.CancelScope() as scope:

            async def give_up(done: float, total: float | None, message: str | None) -> None:
                if message and message.startswith("Transcribed 0 "):
                    scope.cancel()

            await client.call_tool("get_call_transcript", SMALL, progress_callback=give_up)
        with anyio.fail_after(60):  # the abandoned work ends at its next piece: no more pieces come
            last = -1
            while len(pieces_heard) != last:
                last = len(pieces_heard)
                await anyio.sleep(1.0)
        assert not list(tmp_path.rglob("transcript-v*.json"))
        stopped_at = len(pieces_heard)
        # two callers at once: one transcription, both get it
        results: list[dict[str, Any]] = []
        async with anyio.create_task_group() as group:
            for _ in range(2):

                async def one() -> None:
                    results.append(structured(await client.call_tool("get_call_transcript", SMALL)))

                group.start_soon(one)
    assert len(runs) == 2  # the cancelled one and the shared one
    assert results[0] == results[1] and results[0]["transcript"]["sentenceList"]
    total = max(pieces_heard)
    assert max(pieces_heard[:stopped_at]) < total  # the cancelled run did not go on to the end


#: A model's probe that never ends (as a large model loading on a slow CPU seems to): a real child
#: process, run the way the engine runs its probe, that says when it started.
ENDLESS_PROBE = """
import os, pathlib, time
started = pathlib.Path(os.environ["ENDLESS_PROBE_STARTED"])
started.with_suffix(".part").write_text(str(os.getpid()))
started.with_suffix(".part").rename(started)
time.sleep(600)
"""


async def test_the_only_caller_giving_up_while_the_model_is_tried_kills_the_try_and_frees_the_load(
    simulator: Any, tmp_path: Path, whisper_base_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a cancelled call waited for the model's probe child (up to its 300-s limit) with
    the load lock held, so every other call waited too, and the child ran on."""
    from cte1_mcp.transcribe.engines import faster_whisper
    from tests.test_transcribe_faster_whisper import with_file

    # files of their own: this process may have tried whisper_base_dir's already
    model = with_file(
        whisper_base_dir, tmp_path / "model", "config.json", (whisper_base_dir / "config.json").read_bytes()
    )
    modules = tmp_path / "modules"
    modules.mkdir()
    (modules / "endless_probe.py").write_text(ENDLESS_PROBE)
    started = tmp_path / "probe-started"
    monkeypatch.setenv("PYTHONPATH", str(modules))
    monkeypatch.setenv("ENDLESS_PROBE_STARTED", str(started))
    monkeypatch.setattr(faster_whisper, "PROBE_MODULE", "endless_probe")
    serve_corpus_call(simulator)
    async with in_process(simulator.url, tmp_path / "cache", asr_model=str(model), asr_threads=2) as client:
        # a guard against hanging: before, the cancelled call ended with the probe's 300-s limit
        with anyio.fail_after(60):
            async with anyio.create_task_group() as group:

                async def call() -> None:
                    await client.call_tool("get_call_transcript", SMALL)

                group.start_soon(call)
                while not started.exists():
                    await anyio.sleep(0.05)
                group.cancel_scope.cancel()
            pid = int(started.read_text())
            while _running(pid):
                await anyio.sleep(0.05)
        assert simulator.state.requests == []  # the model comes before the recording
        # the next caller is not held behind the abandoned load: with the real probe it transcribes
        monkeypatch.setattr(
            faster_whisper, "PROBE_MODULE", "cte1_mcp.transcribe.engines.faster_whisper_probe"
        )
        with anyio.fail_after(240):
            result = structured(await client.call_tool("get_call_transcript", SMALL))
    assert result["transcript"]["sentenceList"]


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as ended: its parent has not reaped it yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


async def test_a_model_changed_while_a_call_is_transcribed_loads_again_and_the_running_one_finishes(
    simulator: Any, tmp_path: Path, whisper_base_dir: Path
) -> None:
    # A plain model directory (no manifest) whose files change while a transcription runs on it, as
    # when a model is replaced in place: the next call loads the new files and its transcript names
    # them; the running one keeps the model it started with to its end.
    model = tmp_path / "model"
    model.mkdir()
    for file in whisper_base_dir.iterdir():
        os.link(file, model / file.name)  # the session's model is left untouched (see below)
    before = cached_fingerprint(model)
    serve_corpus_call(simulator)
    results: dict[str, Any] = {}
    async with (
        in_process(simulator.url, tmp_path / "store", asr_model=str(model), asr_threads=2) as client,
        anyio.create_task_group() as group,
    ):

        async def second() -> None:
            results["second"] = await client.call_tool("get_call_transcript", SMALL)

        async def change_the_model(done: float, total: float | None, message: str | None) -> None:
            if message and message.startswith("Transcribed 0 ") and "second" not in results:
                config = json.loads((model / "config.json").read_text())
                (model / "config.json").unlink()  # a new file: the link to the session's is broken
                (model / "config.json").write_text(json.dumps({**config, "replaced": True}))
                results["second"] = None
                group.start_soon(second)

        results["first"] = await client.call_tool(
            "get_call_transcript", SMALL, progress_callback=change_the_model
        )
    first, later = results["first"], results["second"]
    assert not first.is_error and not later.is_error, (text(first), text(later))
    engines = [structured(r)["transcript"]["engine"]["modelSha256"] for r in (first, later)]
    assert engines == [before, cached_fingerprint(model)]
    assert engines[0] != engines[1]
    assert structured(first)["transcript"]["sentenceList"]
    assert structured(later)["transcript"]["sentenceList"]


async def test_a_call_waiting_for_the_transcriber_is_told_so_again_and_again(
    simulator: Any, tmp_path: Path, whisper_base_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind a long transcription a caller waits minutes; a client that times out without progress
    (the TypeScript SDK's 60 s) must keep hearing that it waits, not once and then nothing."""
    import cte1_mcp.transcription as transcription

    services: list[Any] = []
    init = transcription.TranscriptionService.__init__

    def kept(self: Any, *args: Any) -> None:
        init(self, *args)
        services.append(self)

    monkeypatch.setattr(transcription.TranscriptionService, "__init__", kept)
    monkeypatch.setattr(transcription, "WAITING_PROGRESS_SECONDS", 0.3)
    serve_corpus_call(simulator)
    messages: list[str] = []
    async with in_process(simulator.url, tmp_path, asr_model=str(whisper_base_dir), asr_threads=2) as client:
        await client.call_tool("get_call_metadata", SMALL)
        unknown = await client.call_tool("get_call_transcript", {**SMALL, "sessionId": 999999})
        assert unknown.is_error  # the service is built and the model loaded; now its slot is taken
        (service,) = services
        await service._slots.acquire()  # as another call's transcription would hold it

        async def progress(done: float, total: float | None, message: str | None) -> None:
            messages.append(message or "")
            if sum("(waited" in m for m in messages) == 3:
                service._slots.release()

        with anyio.fail_after(120):
            result = await client.call_tool("get_call_transcript", SMALL, progress_callback=progress)
    assert not result.is_error, text(result)
    waiting = [m for m in messages if m.startswith("Waiting for the transcriber")]
    assert waiting[0] == "Waiting for the transcriber: another call is being transcribed"
    assert len(waiting) >= 4 and all("(waited " in m for m in waiting[1:])
    assert any(m.startswith("Transcribed ") for m in messages[messages.index(waiting[-1]) :])


async def test_a_stored_transcript_damaged_on_disk_is_made_again_not_an_error(
    simulator: Any, tmp_path: Path, whisper_base_dir: Path
) -> None:
    """Cut short (its length tells), then one digit changed in place (its sha256 tells)."""
    serve_corpus_call(simulator)
    async with in_process(simulator.url, tmp_path, asr_model=str(whisper_base_dir), asr_threads=2) as client:
        first = structured(await client.call_tool("get_call_transcript", SMALL))
        (stored,) = tmp_path.rglob("transcript-v*.json")
        (analysis,) = tmp_path.rglob("analytics-v*.json")  # what the transcript is cut by
        whole_analysis = analysis.read_bytes()
        for damaged in (stored, analysis):
            damaged.write_bytes(damaged.read_bytes()[:100])  # cut short, as a disk fault might leave it
        again = await client.call_tool("get_call_transcript", SMALL)
        assert not again.is_error, text(again)
        assert structured(again)["transcript"] == first["transcript"]
        assert json.loads(stored.read_text()) == first["transcript"]  # replaced by a whole one
        assert analysis.read_bytes() == whole_analysis

        # One digit of an offset changed (same length, still valid JSON): rebuilt, not served.
        whole = stored.read_bytes()
        at = whole.index(b'"startOffsetMs":') + len(b'"startOffsetMs":')
        stored.write_bytes(whole[:at] + (b"1" if whole[at : at + 1] == b"9" else b"9") + whole[at + 1 :])
        again = await client.call_tool("get_call_transcript", SMALL)
        assert not again.is_error, text(again)
        assert structured(again)["transcript"] == first["transcript"]
        assert stored.read_bytes() == whole
    assert len(simulator.state.requests) == 1  # the recording itself was still stored


async def test_a_transcription_past_its_timeout_is_stopped_and_says_so(
    simulator: Any, tmp_path: Path, whisper_base_dir: Path
) -> None:
    serve_corpus_call(simulator)
    async with in_process(
        simulator.url, tmp_path, asr_model=str(whisper_base_dir), asr_timeout_seconds=0.2, asr_threads=1
    ) as client:
        result = await client.call_tool("get_call_transcript", SMALL)
    assert result.is_error
    assert text(result).startswith(
        "[transcription_failed] The transcription took longer than CTE1_ASR_TIMEOUT_SECONDS"
    )
    assert not list(tmp_path.rglob("transcript-v*.json"))


async def test_a_model_directory_that_does_not_load_is_unavailable_before_any_upstream_request(
    simulator: Any, tmp_path: Path
) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.json"):
        (broken / name).write_bytes(b"not a model")
    simulator.state.reset()
    async with in_process(simulator.url, tmp_path / "store", asr_model=str(broken)) as client:
        result = await client.call_tool("get_call_transcript", SMALL)
    assert result.is_error and text(result).startswith("[transcription_unavailable]"), text(result)
    assert "does not load" in text(result)
    assert simulator.state.requests == []


def _text_of(result: Any) -> str:
    (content,) = result.contents
    assert isinstance(content, TextResourceContents)
    return content.text


def _clock(ms: int) -> str:
    tenths = round(ms / 100)
    return f"{tenths // 600:02d}:{tenths % 600 / 10:04.1f}"


async def test_a_transcript_ct_e1_pushed_is_served_without_a_model_and_local_is_used_when_preferred(
    simulator: Any, tmp_path: Path
) -> None:
    """CTE1_TRANSCRIPT_SOURCE=platform (the default): the platform's own sentences, timed from the
    stored recording's connectTime; =local: the local model, here none, so [transcription_unavailable]."""
    from datetime import datetime, timedelta

    from cte1_mcp.models import CallKey
    from cte1_mcp.service import RecordingService
    from cte1_mcp.transcribe.pushed import PushBody, StoredPush
    from tests.helpers.push_server import example

    services: list[RecordingService] = []

    def keep(service: RecordingService) -> RecordingService:
        services.append(service)
        return service

    simulator.state.reset()
    for source in ("platform", "local"):
        async with in_process(simulator.url, tmp_path, wrap=keep, transcript_source=source) as client:
            metadata = structured(await client.call_tool("get_call_metadata", SMALL))
            connected = datetime.fromisoformat(metadata["connectTime"])
            body = example()
            conversation = body["conversation"]
            conversation.update(tenantId=SMALL["tenantId"], sessionId=SMALL["sessionId"])
            conversation["connectTime"] = metadata["connectTime"]
            conversation["recordList"] = conversation["recordList"][:1]
            for sentence, offset in zip(
                conversation["recordList"][0]["sentenceList"], (4.36, 8.18), strict=True
            ):
                sentence["startTime"] = _iso(connected + timedelta(seconds=offset))
                sentence["endTime"] = _iso(connected + timedelta(seconds=offset + 1.8))
            parsed = PushBody.model_validate(body).conversation
            stored = StoredPush.of(parsed, parsed.recordList[0])
            await services[-1].repository.write_pushed_transcript(
                CallKey(SMALL["tenantId"], SMALL["sessionId"], SMALL["recordId"]),
                stored.model_dump_json().encode(),
                available_until=datetime.now(UTC) + timedelta(days=1),
            )
            result = await client.call_tool("get_call_transcript", SMALL)
            if source == "platform":
                transcript = structured(result)["transcript"]
                assert transcript["engine"]["name"] == "cte1"
                assert [
                    (s["speakerId"], s["text"], s["startOffsetMs"]) for s in transcript["sentenceList"]
                ] == [
                    (2, "私はコムデザイン一郎です", 4360),
                    (1, "パソコンの調子が悪いです", 8180),
                ]
                assert "CT-e1's own speech recognition" in text(result)
            else:
                assert result.is_error and text(result).startswith("[transcription_unavailable]")


def _iso(moment: Any) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


async def test_a_long_transcript_keeps_the_whole_result_under_50000_characters(
    simulator: Any, tmp_path: Path
) -> None:
    """A 2-hour call's 2,400 sentences (pushed, so no model is needed): structuredContent and the
    text block together stay under the 50,000 characters every tool's result keeps to, with as many
    sentences as fit, and the summary says where the rest is."""
    from tests.test_review_call import push_transcript

    simulator.state.reset()
    said = "お客様のご契約内容を確認いたしますので少々お待ちください"
    await push_transcript(
        simulator.url, tmp_path, SMALL, [(1 + i % 2, 3.0 * i, 3.0 * i + 2.5, said) for i in range(2400)]
    )
    async with in_process(simulator.url, tmp_path) as client:
        result = await client.call_tool("get_call_transcript", SMALL)
        whole = json.loads(_text_of(await client.read_resource(call_uri(SMALL, "transcript"))))
    content = structured(result)
    shown = content["transcript"]["sentenceList"]
    size = len(json.dumps(content, ensure_ascii=False, separators=(",", ":"))) + len(text(result))
    assert 40_000 < size <= 50_000  # under the bound, and not far under it
    assert content["transcript"]["shortened"] is True
    assert 0 < len(shown) < 2400 and len(whole["sentenceList"]) == 2400
    assert shown == whole["sentenceList"][: len(shown)]
    assert f"the first {len(shown)} of 2400 sentences" in content["summary"]
    assert text(result).count("\n") == 1 + len(shown)  # the summary, a blank line, a line a sentence
