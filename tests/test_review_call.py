"""review_call and its view's ui:// resource, through the official client over stdio and HTTP: the
tool names the view, initialize advertises MCP Apps, the view is served as an app, and a client
that does not render apps gets a useful text answer (an extension must degrade gracefully)."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.extension import advertise
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID
from mcp_types import TextResourceContents

from cte1_mcp.app_view import REVIEW_HTML, REVIEW_URI
from tests.mcp_harness import EXAMPLE, IN_PROGRESS, SMALL, in_process, server_env, structured, text
from tests.test_mcp_http import http_server

pytestmark = pytest.mark.anyio

APPS = advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})


@asynccontextmanager
async def connected(
    transport: Literal["stdio", "http"], env: dict[str, str], *, apps: bool
) -> AsyncIterator[Client]:
    extensions = [APPS] if apps else None
    if transport == "stdio":
        params = StdioServerParameters(command=sys.executable, args=["-m", "cte1_mcp"], env=env)
        async with Client(params, read_timeout_seconds=60, extensions=extensions) as client:
            yield client
    else:
        with http_server(env) as url:
            async with Client(url, read_timeout_seconds=60, extensions=extensions) as client:
                yield client


async def push_transcript(
    simulator_url: str,
    cache: Path,
    call: dict[str, Any],
    sentences: Sequence[tuple[int, float, float, str]],
    **settings: Any,
) -> None:
    """Store ``sentences`` (speakerId, start and end seconds from connectTime, text) in ``cache`` as
    the transcript CT-e1 pushed for ``call``, the way the push endpoint stores one."""
    from cte1_mcp.models import CallKey
    from cte1_mcp.service import RecordingService
    from cte1_mcp.transcribe.pushed import PushBody, StoredPush
    from tests.helpers.push_server import example

    def iso(moment: datetime) -> str:
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"

    services: list[RecordingService] = []

    def keep(service: RecordingService) -> RecordingService:
        services.append(service)
        return service

    async with in_process(simulator_url, cache, wrap=keep, **settings) as client:
        connected = datetime.fromisoformat(
            structured(await client.call_tool("get_call_metadata", call))["connectTime"]
        )
        body = example()
        conversation = body["conversation"]
        conversation.update(
            tenantId=call["tenantId"], sessionId=call["sessionId"], connectTime=iso(connected)
        )
        record = conversation["recordList"][0]
        conversation["recordList"] = [record]
        record["sentenceList"] = [
            {
                "sequence": index + 1,
                "speakerId": speaker,
                "startTime": iso(connected + timedelta(seconds=start)),
                "endTime": iso(connected + timedelta(seconds=end)),
                "text": said,
            }
            for index, (speaker, start, end, said) in enumerate(sentences)
        ]
        parsed = PushBody.model_validate(body).conversation
        await services[-1].repository.write_pushed_transcript(
            CallKey(call["tenantId"], call["sessionId"], call["recordId"]),
            StoredPush.of(parsed, parsed.recordList[0]).model_dump_json().encode(),
            available_until=datetime.now(UTC) + timedelta(days=1),
        )


@pytest.fixture
def env(simulator: Any, tmp_path: Path) -> dict[str, str]:
    return server_env(simulator.url, tmp_path / "cache", CTE1_CHANNEL_ROLES="customer,agent")


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_review_call_names_its_view_and_the_view_is_served(
    transport: Literal["stdio", "http"], env: dict[str, str]
) -> None:
    async with connected(transport, env, apps=True) as client:
        assert EXTENSION_ID in (client.server_capabilities.extensions or {})
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert tools["review_call"].meta == {"ui": {"resourceUri": REVIEW_URI}}
        assert all(tool.meta is None for name, tool in tools.items() if name != "review_call")
        read = await client.read_resource(REVIEW_URI)
        result = await client.call_tool("review_call", EXAMPLE)
    [contents] = read.contents
    assert isinstance(contents, TextResourceContents)
    assert contents.mime_type == APP_MIME_TYPE
    assert contents.text == REVIEW_HTML.read_text(encoding="utf-8")
    payload = structured(result)
    assert payload["view"] == REVIEW_URI
    assert payload["clipMaxSeconds"] == 600  # CTE1_CLIP_MAX_SECONDS' default: the view's clips fit it
    assert payload["transcript"] is None  # the view fetches it
    assert payload["analytics"]["parties"][0]["label"] == "customer"
    assert payload["call"]["agentName"] == "コムデザイン一郎"
    assert "review view" in text(result)


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_a_client_without_apps_gets_the_summary_and_how_to_get_a_transcript(
    transport: Literal["stdio", "http"], env: dict[str, str]
) -> None:
    async with connected(transport, env, apps=False) as client:
        review = await client.call_tool("review_call", EXAMPLE)
        analytics = await client.call_tool("get_call_analytics", {**EXAMPLE, "timeline": False})
    said = text(review)
    assert said.startswith(text(analytics))  # the same summary as get_call_analytics
    assert "CTE1_ASR_MODEL is not set" in said  # the server's own reason and next step
    assert "cte1-mcp models" in said
    payload = structured(review)
    assert payload["summary"] == said
    note = payload["transcript"]["note"]
    assert payload["transcript"] == {"available": False, "lines": [], "sentenceCount": None, "note": note}
    assert note.startswith("[transcription_unavailable] ") and said.endswith(note)


async def test_a_configured_model_that_does_not_load_is_named_not_called_missing(
    simulator: Any, tmp_path: Path
) -> None:
    """A configured model that cannot be used (files changed since start-up, a damaged download):
    the text gives the server's own reason, as get_call_transcript does, not "no model configured"."""
    model = tmp_path / "model"
    model.mkdir()
    for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.json"):
        (model / name).write_text("{}")
    async with in_process(simulator.url, tmp_path / "cache", asr_model=str(model)) as client:
        transcript = await client.call_tool("get_call_transcript", EXAMPLE)
        review = await client.call_tool("review_call", EXAMPLE)
    reason = text(transcript)
    assert reason.startswith(
        "[transcription_unavailable] the model CTE1_ASR_MODEL names (model, faster-whisper)"
    )
    assert structured(review)["transcript"]["note"] == reason
    assert text(review).endswith(reason)
    assert "not set" not in text(review)


async def test_the_text_answer_stays_bounded_whatever_the_sentences(simulator: Any, tmp_path: Path) -> None:
    """Pushed sentences of 100,000 characters: each line is shortened and the whole result (the lines
    are in the text, the summary and transcript.lines) stays under 50,000 characters."""
    cache = tmp_path / "cache"
    huge = [(1 + index % 2, index, index + 0.9, f"{index}" + "あ" * 100_000) for index in range(12)]
    await push_transcript(simulator.url, cache, SMALL, huge, channel_roles=("customer", "agent"))
    async with in_process(simulator.url, cache, channel_roles=("customer", "agent")) as client:
        review = await client.call_tool("review_call", SMALL)
    payload = structured(review)
    assert len(json.dumps(payload, ensure_ascii=False)) + len(text(review)) < 50_000
    lines = payload["transcript"]["lines"]
    assert len(lines) == 10 and payload["transcript"]["sentenceCount"] == 12
    for index, line in enumerate(lines):
        assert len(line) == 200 and line.endswith("…")
        assert f": {index}ああ" in line  # each sentence's own start, in order
    assert payload["transcript"]["note"].startswith("2 more sentences: call get_call_transcript")
    assert "shortened" in payload["transcript"]["note"]
    assert text(review) == payload["summary"] and "\n".join(lines) in text(review)


async def test_a_call_in_progress_is_the_servers_documented_error(env: dict[str, str]) -> None:
    async with connected("stdio", env, apps=True) as client:
        result = await client.call_tool("review_call", IN_PROGRESS)
    assert result.is_error
    assert text(result).startswith("[call_in_progress]")


async def test_an_unknown_view_is_the_documented_unknown_resource_error(env: dict[str, str]) -> None:
    from mcp.shared.exceptions import MCPError

    async with connected("stdio", env, apps=True) as client:
        with pytest.raises(MCPError) as raised:
            await client.read_resource("ui://cte1/nothing.html")
        assert (await client.call_tool("get_call_metadata", EXAMPLE)).is_error is not True
    assert raised.value.error.message.startswith(
        "[invalid_parameter] Unknown resource 'ui://cte1/nothing.html'"
    )
    assert isinstance(raised.value.error.data, dict)
    assert raised.value.error.data.get("code") == "invalid_parameter"
