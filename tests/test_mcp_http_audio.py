"""Audio over Streamable HTTP for the official client at its defaults (issue 14, item 2).

The SDK's client refuses one server-sent event over 1 MiB (``max_sse_event_size``); a recording
over ~786 KiB is more than that once base64-encoded. Both protocol generations, a session kept or
not, through the real server process.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp_types import (
    BlobResourceContents,
    ErrorData,
    JSONRPCError,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
    ReadResourceResult,
)

from tests.helpers.servers import http_process
from tests.mcp_harness import TRANSFERRED_2, call_uri, server_env, structured
from tests.test_mcp_http import free_port, wait_for_port

pytestmark = pytest.mark.anyio

SSE_EVENT_LIMIT = 1024 * 1024  # mcp.client.streamable_http.DEFAULT_MAX_SSE_EVENT_SIZE
#: 120 s of 16 kHz 16-bit mono WAV: 3.84 MB, as in the issue.
BIG_CLIP = "cte1://calls/05053698341/942125/1/clip?start=0&end=120&rate=16000"
GENERATIONS = ["2025-11-25", "2026-07-28"]
MODES = [(), ("--stateless",)]
#: 20 s mono (160 KB): small enough to read inline.
SMALL_CALL = {"tenantId": "05053698341", "sessionId": 942126, "recordId": 1}


class Reader:
    """One client generation at its defaults: ``read`` a resource, ``call`` a tool."""

    def __init__(self, session: ClientSession | Client) -> None:
        self._session = session

    async def read(self, uri: str) -> ReadResourceResult:
        return await self._session.read_resource(uri)

    async def call(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return structured(await self._session.call_tool(name, arguments))


@asynccontextmanager
async def official_client(url: str, generation: str) -> AsyncIterator[Reader]:
    """2025-11-25: ``ClientSession`` with the initialize handshake over the SDK's streamable HTTP
    client, as many deployed clients still speak it; 2026-07-28: ``mcp.Client(url)``."""
    if generation == "2025-11-25":
        async with streamable_http_client(url) as (read, write), ClientSession(read, write) as session:
            initialized = await session.initialize()
            assert initialized.protocol_version == generation
            yield Reader(session)
    else:
        async with Client(url) as client:
            assert client.protocol_version == generation
            yield Reader(client)


def blob(result: ReadResourceResult) -> tuple[str | None, bytes]:
    content = result.contents[0]
    assert isinstance(content, BlobResourceContents)
    return content.mime_type, base64.b64decode(content.blob)


@pytest.mark.parametrize("mode", MODES, ids=["stateful", "stateless"])
@pytest.mark.parametrize("generation", GENERATIONS)
async def test_recordings_and_clips_over_a_megabyte_reach_the_official_client(
    simulator: Any, tmp_path: Path, generation: str, mode: tuple[str, ...]
) -> None:
    """The issue's reads: the 1.92 MB recording (cold: fetched by the read itself, then stored)
    and a 3.84 MB clip, each over the client's 1 MiB event limit once base64-encoded."""
    env = server_env(simulator.url, tmp_path / "cache")
    with http_process(env, *mode) as server:
        async with official_client(server.url, generation) as client:
            mime, audio = blob(await client.read(call_uri(TRANSFERRED_2)))
            stored = (await client.call("get_call_audio", TRANSFERRED_2))["audio"]
            mime_clip, clip = blob(await client.read(BIG_CLIP))
    assert len(base64.b64encode(audio)) > SSE_EVENT_LIMIT
    assert (mime, len(audio), hashlib.sha256(audio).hexdigest()) == (
        stored["mimeType"],
        stored["sizeBytes"],
        stored["sha256"],
    )
    assert mime_clip == "audio/wav"
    assert len(clip) == 44 + 120 * 16000 * 2


async def test_an_answer_is_plain_json_unless_the_request_streams_progress(
    simulator: Any, tmp_path: Path
) -> None:
    """Per request, on one 2025-11-25 session: a request that needs no stream is answered as
    ``application/json`` (no event size limit applies); one that asked for progress on a download
    still gets its notifications, on an SSE stream, before its answer."""
    env = server_env(simulator.url, tmp_path / "cache", CTE1_MIN_INTERVAL_SECONDS="1")
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    initialize = {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    }

    def request(n: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": n, "method": method, "params": params}

    with http_process(env) as server:
        async with httpx.AsyncClient(timeout=60) as http:
            opened = await http.post(server.url, json=request(1, "initialize", initialize), headers=headers)
            session = {
                **headers,
                "Mcp-Session-Id": opened.headers["mcp-session-id"],
                "Mcp-Protocol-Version": "2025-11-25",
            }
            initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
            assert (await http.post(server.url, json=initialized, headers=session)).status_code == 202
            read = await http.post(
                server.url,
                json=request(2, "resources/read", {"uri": call_uri(TRANSFERRED_2)}),
                headers=session,
            )
            call = request(
                3, "tools/call", {"name": "get_call_audio", "arguments": TRANSFERRED_2 | {"recordId": 1}}
            )
            call["params"]["_meta"] = {"progressToken": "p1"}
            streamed = await http.post(server.url, json=call, headers=session)
            unknown = await http.post(
                server.url, json=request(4, "resources/read", {"uri": "cte1://nothing"}), headers=session
            )
    assert opened.headers["content-type"] == "application/json"
    assert read.headers["content-type"] == "application/json"
    assert int(read.headers["content-length"]) == len(read.content) > SSE_EVENT_LIMIT
    assert read.headers["mcp-session-id"] == session["Mcp-Session-Id"]
    assert read.json()["result"]["contents"][0]["mimeType"] == "audio/wav"

    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = [
        json.loads(line[len("data: ") :]) for line in streamed.text.splitlines() if line.startswith("data: ")
    ]
    assert events[0]["method"] == "notifications/progress"  # it waited for the spacing
    assert events[0]["params"]["progressToken"] == "p1"
    assert events[-1]["id"] == 3
    assert not events[-1]["result"]["isError"]

    assert unknown.headers["content-type"] == "application/json"  # an error answer, likewise
    assert unknown.json()["error"]["data"]["code"] == "invalid_parameter"


@pytest.mark.parametrize(
    ("message", "answer"),
    [
        (JSONRPCResponse(jsonrpc="2.0", id=7, result={"contents": []}), True),
        (JSONRPCResponse(jsonrpc="2.0", id='a\\"b', result={}), True),
        (JSONRPCError(jsonrpc="2.0", id=8, error=ErrorData(code=-32602, message="[x]\nNext: y")), True),
        (JSONRPCNotification(jsonrpc="2.0", method="notifications/progress", params={"progress": 1}), False),
        (JSONRPCRequest(jsonrpc="2.0", id=9, method="sampling/createMessage", params={}), False),
    ],
)
def test_only_an_sse_event_holding_an_answer_becomes_plain_json(message: Any, answer: bool) -> None:
    """Events exactly as the SDK's transport writes them (its models' JSON, sse_starlette's framing)."""
    from sse_starlette import ServerSentEvent

    from cte1_mcp.http_json import _lone_answer

    data = message.model_dump_json(by_alias=True, exclude_unset=True)
    event = ServerSentEvent(event="message", data=data).encode()
    assert _lone_answer(event) == (data.encode() if answer else None)
    with_id = ServerSentEvent(event="message", data=data, id="e1").encode()
    assert _lone_answer(with_id) is None  # a resumable stream's event stays a stream
    assert _lone_answer(ServerSentEvent(comment="ping").encode()) is None


async def test_a_debug_log_holds_no_recording(simulator: Any, tmp_path: Path) -> None:
    """Before: at ``CTE1_LOG_LEVEL=DEBUG`` sse_starlette logged every event it sent, so each read
    wrote the whole recording, base64, to stderr (a log with no retention and no 0600), with the
    results beside it."""
    env = server_env(simulator.url, tmp_path / "cache", CTE1_LOG_LEVEL="DEBUG")
    port = free_port()
    log = tmp_path / "stderr.log"
    argv = [sys.executable, "-m", "cte1_mcp", "serve", "--transport", "http", "--host", "127.0.0.1"]
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            [*argv, "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )
        try:
            wait_for_port(process, port)
            async with official_client(f"http://127.0.0.1:{port}/mcp", "2025-11-25") as client:
                _, audio = blob(await client.read(call_uri(SMALL_CALL)))
                answer = json.dumps(await client.call("get_call_metadata", SMALL_CALL), ensure_ascii=False)
        finally:
            process.terminate()
            process.wait(10)
    written = log.read_text(encoding="utf-8", errors="replace")
    assert " DEBUG " in written  # the level took effect: the checks below mean something
    assert base64.b64encode(audio[1000:1060]).decode()[:40] not in written
    assert len(max(written.splitlines(), key=len)) < 2000
    assert answer[:60] not in written and json.dumps(json.loads(answer))[:60] not in written
