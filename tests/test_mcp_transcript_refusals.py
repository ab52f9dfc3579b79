"""get_call_transcript through the official MCP client when the model's files, a setting or the engine
are wrong: a documented code with a next step (before any platform request where that can be known),
never a crash of the server or ``[internal_error]``; and the device ``auto`` stands for is the one a
stored transcript is bound to."""

from __future__ import annotations

import logging
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from cte1_mcp.transcribe import engines
from cte1_mcp.transcribe.engines import Engine
from tests.mcp_harness import SMALL, in_process, server_env, stdio_server, structured, text
from tests.test_mcp_transcript import ROLES, serve_corpus_call
from tests.test_transcribe_faster_whisper import LARGE_V3_HEADS, with_config

pytestmark = pytest.mark.anyio


async def test_a_whisper_config_json_of_another_size_is_refused_and_the_server_lives_on(
    simulator: Any, tmp_path: Path, whisper_base_dir: Path
) -> None:
    """Before, the model loaded, the recording was fetched and the first transcription ended the
    server process (SIGSEGV in CTranslate2's word alignment): over stdio the client only saw its
    connection close, at every restart."""
    model = with_config(whisper_base_dir, tmp_path / "base-misconfigured", alignment_heads=LARGE_V3_HEADS)
    serve_corpus_call(simulator)
    env = server_env(
        simulator.url,
        tmp_path / "store",
        CTE1_ASR_MODEL=str(model),
        CTE1_ASR_THREADS="2",
        CTE1_CHANNEL_ROLES=",".join(ROLES),
    )
    with (tmp_path / "server-stderr.txt").open("w") as errlog:
        async with stdio_server(env, errlog=errlog) as client:
            for _ in range(2):
                result = await client.call_tool("get_call_transcript", SMALL)
                assert result.is_error and text(result).startswith("[transcription_unavailable]"), text(
                    result
                )
                assert f"config.json in {model} has alignment_heads [7, 0]" in text(result)
                assert "\nNext: " in text(result)
            assert (await client.list_tools()).tools  # still serving
    assert simulator.state.requests == []


async def test_a_language_whisper_does_not_know_is_unavailable_before_any_upstream_request(
    simulator: Any, tmp_path: Path, whisper_base_dir: Path
) -> None:
    """CTE1_ASR_LANGUAGE=jp (Japan's country code for ja): before, the recording was fetched and
    analysed, then faster-whisper refused the code: [internal_error], after a platform request."""
    simulator.state.reset()
    async with in_process(
        simulator.url, tmp_path, asr_model=str(whisper_base_dir), asr_language="jp", asr_threads=2
    ) as client:
        result = await client.call_tool("get_call_transcript", SMALL)
    assert result.is_error and text(result).startswith("[transcription_unavailable]"), text(result)
    assert "'jp' is not a language Whisper knows" in text(result)
    assert "Next: Ask the operator to set CTE1_ASR_LANGUAGE" in text(result)
    assert simulator.state.requests == []


#: An engine whose model loads and then fails on every recording with an error of its own (what a
#: GPU out of memory, or a library's bug, looks like): not one this server's load checks can foresee.
FAILING_ENGINE = """
from pathlib import Path

from cte1_mcp.transcribe.base import EngineInfo

NAME = "failing"


def matches(model_dir: Path) -> bool:
    return (model_dir / "failing.bin").is_file()


class Failing:
    info = EngineInfo(name=NAME, model="failing", modelSha256=None, device="cpu")

    def transcribe(self, audio, language):
        raise RuntimeError("CUDA failed with error out of memory\\nsecond line of the engine's message")

    def cannot_hear(self, language):
        return None

    def close(self) -> None:
        pass


def load(model_dir: Path, *, device: str, compute_type: str | None, threads: int) -> Failing:
    return Failing()
"""


async def test_an_engine_failing_on_a_recording_is_transcription_failed_with_its_cause_in_the_log(
    simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Before, any error of the engine other than ModelUnusable became [internal_error], no next step."""
    package = tmp_path / "engine_modules"
    package.mkdir()
    (package / "failing_engine.py").write_text(textwrap.dedent(FAILING_ENGINE), encoding="utf-8")
    monkeypatch.syspath_prepend(str(package))
    monkeypatch.setitem(
        engines.ENGINES, "failing", Engine("failing", "failing_engine", (), "-", (("failing.bin",),))
    )
    monkeypatch.delitem(sys.modules, "failing_engine", raising=False)
    model = tmp_path / "failing-model"
    model.mkdir()
    (model / "failing.bin").write_bytes(b"weights")
    serve_corpus_call(simulator)
    caplog.set_level(logging.ERROR, logger="cte1_mcp.transcription")
    async with in_process(simulator.url, tmp_path / "store", asr_model=str(model)) as client:
        result = await client.call_tool("get_call_transcript", SMALL)
    assert result.is_error and text(result).startswith(
        "[transcription_failed] The speech-recognition engine failed on this recording "
        "(RuntimeError: CUDA failed with error out of memory)"
    ), text(result)
    assert "second line" not in text(result)
    assert "\nNext: Ask the operator to check the server's log" in text(result)
    (logged,) = [r for r in caplog.records if r.name == "cte1_mcp.transcription"]
    assert (
        "the engine failing (model failing-model) failed on a recording of 05053698341/942126/1"
        in logged.getMessage()
    )
    assert logged.exc_info is not None and logged.exc_info[0] is RuntimeError  # the traceback
    assert not list((tmp_path / "store").rglob("transcript-v*.json"))


async def test_auto_on_a_host_without_cuda_and_int8_said_find_what_cpu_stored(
    simulator: Any, tmp_path: Path, whisper_base_dir: Path
) -> None:
    """Before, auto ran Whisper in float32 here, said device auto / compute default, and was stored
    under a name of its own: switching cpu to auto transcribed every call again, differently. And
    CTE1_ASR_COMPUTE_TYPE=int8 on a CPU, what an unset one runs, made a second transcript too."""
    serve_corpus_call(simulator)
    settings: dict[str, Any] = {"asr_model": str(whisper_base_dir), "channel_roles": ROLES, "asr_threads": 2}
    async with in_process(simulator.url, tmp_path, asr_device="cpu", **settings) as client:
        first = structured(await client.call_tool("get_call_transcript", SMALL))
    stored = sorted(tmp_path.rglob("transcript-v*.json"))
    assert len(stored) == 1
    async with in_process(simulator.url, tmp_path, asr_device="auto", **settings) as client:
        again = structured(await client.call_tool("get_call_transcript", SMALL))
    assert sorted(tmp_path.rglob("transcript-v*.json")) == stored  # served from the store
    async with in_process(
        simulator.url, tmp_path, asr_device="cpu", asr_compute_type="int8", **settings
    ) as client:
        said = structured(await client.call_tool("get_call_transcript", SMALL))
    assert sorted(tmp_path.rglob("transcript-v*.json")) == stored
    assert said["transcript"] == first["transcript"]
    assert again["transcript"] == first["transcript"]
    assert (first["transcript"]["engine"]["device"], first["transcript"]["engine"]["computeType"]) == (
        "cpu",
        "int8",
    )
    assert len(simulator.state.requests) == 1
