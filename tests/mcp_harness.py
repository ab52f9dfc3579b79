"""The real server under the official MCP client: as a subprocess over stdio, or in this process."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal, TextIO

import httpx
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, TextContent

from cte1_mcp.mcp_server import Cte1MCPServer
from cte1_mcp.service import RecordingService
from cte1_mcp.settings import load_settings
from cte1_mcp.simulator import DEFAULT_API_KEY, DEFAULT_SOURCE_UUID

EXAMPLE = {"tenantId": "05053698341", "sessionId": 942125, "recordId": 1}
# Sample calls of the simulator's catalogue (see README "Sample calls").
SMALL = {"tenantId": "05053698341", "sessionId": 942126, "recordId": 1}  # ~156 KiB: under 512 KiB
LARGE = EXAMPLE  # ~4.3 MiB: over 512 KiB
TRANSFERRED_2 = {"tenantId": "05053698341", "sessionId": 942130, "recordId": 2}
IN_PROGRESS = {"tenantId": "05053698341", "sessionId": 942140, "recordId": 1}
OLD = {"tenantId": "05058085500", "sessionId": 35080001, "recordId": 1}
PCM_STEREO = {"tenantId": "05058085500", "sessionId": 35087858, "recordId": 1}  # ~2.3 MiB 16-bit PCM
FOREIGN = {"tenantId": "0120000000", "sessionId": 1, "recordId": 1}
UNKNOWN = {"tenantId": "05053698341", "sessionId": 999999, "recordId": 1}


def server_env(simulator_url: str, cache_dir: Path, **overrides: str) -> dict[str, str]:
    """The server's whole configuration, through the environment as a user would give it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTE1_")}
    env.update(
        {
            "CTE1_BASE_URL": simulator_url,
            "CTE1_SOURCE_UUID": DEFAULT_SOURCE_UUID,
            "CTE1_API_KEY": DEFAULT_API_KEY,
            "CTE1_CACHE_DIR": str(cache_dir),
            "CTE1_MIN_INTERVAL_SECONDS": "0",
        }
    )
    env.update(overrides)
    return env


@asynccontextmanager
async def stdio_server(env: dict[str, str], errlog: TextIO | None = None) -> AsyncIterator[Client]:
    """``cte1-mcp`` as a subprocess over stdio; its stderr goes to ``errlog`` (a real file) if given."""
    params = StdioServerParameters(command=sys.executable, args=["-m", "cte1_mcp"], env=env)
    transport = stdio_client(params, errlog=errlog) if errlog is not None else params
    async with Client(transport, read_timeout_seconds=60) as client:
        yield client


def text(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


def structured(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, text(result)
    assert isinstance(result.structured_content, dict)
    return result.structured_content


@asynccontextmanager
async def in_process(
    simulator_url: str,
    cache_dir: Path,
    transport: Literal["stdio", "http"] = "stdio",
    wrap: Callable[[RecordingService], Any] | None = None,
    **settings: Any,
) -> AsyncIterator[Client]:
    """The server in this process behind the SDK's in-memory transport: the official client, the
    real service, store and upstream client, the simulator on loopback; no subprocess to start.
    ``wrap`` may put a test hook around the service (see ``EvictAfterFirstGet``)."""
    defaults: dict[str, Any] = {
        "base_url": simulator_url,
        "source_uuid": DEFAULT_SOURCE_UUID,
        "api_key": DEFAULT_API_KEY,
        "cache_dir": cache_dir,
        "min_interval_seconds": 0,
    }
    configured = load_settings(**{**defaults, **settings})
    async with RecordingService.open(configured) as service:
        served = wrap(service) if wrap is not None else service
        async with Client(Cte1MCPServer(served, transport), read_timeout_seconds=60) as client:
            yield client


def call_uri(call: dict[str, Any], kind: str = "audio") -> str:
    return f"cte1://calls/{call['tenantId']}/{call['sessionId']}/{call['recordId']}/{kind}"


def platform_answer(simulator_url: str, call: dict[str, Any]) -> tuple[str, bytes]:
    """The simulator's real multipart answer for ``call`` (content type, body), to replay altered."""
    response = httpx.post(
        f"{simulator_url}/general/v1/{DEFAULT_SOURCE_UUID}/call/audio_data",
        headers={"Authorization": f"Bearer {DEFAULT_API_KEY}"},
        json=call,
    )
    response.raise_for_status()
    return response.headers["content-type"], response.content


def with_metadata(content_type: str, body: bytes, metadata: dict[str, Any]) -> bytes:
    """``body`` with its metadata part's JSON replaced."""
    boundary = content_type.split("boundary=", 1)[1].encode()
    head, rest = body.split(b"\r\n\r\n", 1)
    _, after = rest.split(b"\r\n--" + boundary, 1)
    return (
        head + b"\r\n\r\n" + json.dumps(metadata, ensure_ascii=False).encode() + b"\r\n--" + boundary + after
    )


def with_other_samples(content_type: str, body: bytes) -> bytes:
    """``body`` with the last audio bytes changed: same size and header, another sha256."""
    boundary = content_type.split("boundary=", 1)[1].encode()
    end = body.rindex(b"\r\n--" + boundary + b"--")
    return body[: end - 64] + bytes(b ^ 0x55 for b in body[end - 64 : end]) + body[end:]


def with_audio(content_type: str, body: bytes, audio: bytes) -> bytes:
    """``body`` with its audio part's bytes replaced by ``audio`` (its part headers kept)."""
    boundary = content_type.split("boundary=", 1)[1].encode()
    start = body.index(b"\r\n\r\n", body.rindex(b"\r\n--" + boundary + b"\r\n")) + 4
    end = body.rindex(b"\r\n--" + boundary + b"--")
    return body[:start] + audio + body[end:]


def metadata_of(body: bytes) -> dict[str, Any]:
    part = body.split(b"\r\n\r\n", 1)[1].split(b"\r\n--", 1)[0]
    parsed: dict[str, Any] = json.loads(part)
    return parsed


class EvictAfterFirstGet:
    """The real service, but right after its first ``get`` the stored recording disappears (as when
    another server sharing the cache evicts it) and ``then`` runs (e.g. queue another answer)."""

    def __init__(self, service: RecordingService, cache_dir: Path, then: Callable[[], None]):
        self._service = service
        self._cache_dir = cache_dir
        self._then = then
        self._done = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._service, name)

    async def get(self, key: Any, on_progress: Any = None) -> Any:
        recording = await self._service.get(key, on_progress)
        if not self._done:
            self._done = True
            for directory in self._cache_dir.rglob("/".join(key.path_parts)):
                shutil.rmtree(directory)
            self._then()
        return recording


#: A clip longer than this is refused in the analysis checks (they set CTE1_CLIP_MAX_SECONDS to it).
CLIP_MAX_SECONDS = 60

CLIP_ERRORS: list[tuple[dict[str, Any], list[str]]] = [
    ({**EXAMPLE, "startSeconds": 300}, ["startSeconds", "280.45"]),  # past the end (280.447 s)
    ({**EXAMPLE, "startSeconds": 10, "endSeconds": 290}, ["endSeconds", "280.45"]),
    ({**EXAMPLE, "startSeconds": 20, "endSeconds": 20}, ["greater than startSeconds"]),
    ({**EXAMPLE, "startSeconds": 0, "endSeconds": 120}, ["at most 60 s"]),  # over CTE1_CLIP_MAX_SECONDS
    ({**EXAMPLE, "endSeconds": 10, "channel": "supervisor"}, ["mix, 0, 1"]),
    ({**EXAMPLE, "endSeconds": 10, "format": "aac"}, ["'wav', 'mp3', 'flac' or 'ogg'"]),
    ({**EXAMPLE, "endSeconds": 10, "sampleRate": 44100}, ["8000 or 16000"]),
    ({**SMALL, "endSeconds": 10, "channel": "1"}, ["mono", "mix, 0"]),  # a mono recording
]


async def check_analysis_surface(client: Client, simulator: Any, *, local: bool) -> None:
    """get_call_analytics, get_call_clip and the timeline, analytics and clip resources, with the
    documented clip errors, through ``client`` (stdio or HTTP); ``local``: paths are offered."""
    from mcp_types import AudioContent, BlobResourceContents, ImageContent, TextResourceContents

    names = {tool.name for tool in (await client.list_tools()).tools}
    assert {"get_call_analytics", "get_call_clip"} <= names
    result = await client.call_tool("get_call_analytics", EXAMPLE)
    payload = structured(result)
    analytics = payload["analytics"]
    assert payload["summary"] == text(result)
    assert analytics["summary"] in payload["summary"]
    assert analytics["channels"] == 2
    assert [p["label"] for p in analytics["parties"]] == ["customer", "agent"]  # CTE1_CHANNEL_ROLES
    assert analytics["durationSeconds"] == pytest.approx(280.447, abs=0.01)
    assert analytics["timelineUri"] == "cte1://calls/05053698341/942125/1/timeline"
    images = [block for block in result.content if isinstance(block, ImageContent)]
    assert len(images) == 1
    assert images[0].mime_type == "image/png"
    png = base64.b64decode(images[0].data)
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    without = await client.call_tool("get_call_analytics", {**EXAMPLE, "timeline": False})
    assert not [block for block in without.content if isinstance(block, ImageContent)]
    assert structured(without)["analytics"] == analytics  # stored: the same analysis

    timeline = (await client.read_resource(analytics["timelineUri"])).contents[0]
    assert isinstance(timeline, BlobResourceContents)
    assert timeline.mime_type == "image/png"
    assert base64.b64decode(timeline.blob) == png
    whole = (await client.read_resource(payload["analyticsUri"])).contents[0]
    assert isinstance(whole, TextResourceContents)
    assert whole.mime_type == "application/json"
    full = json.loads(whole.text)
    assert full["segmentsTruncated"] is False
    assert full["segments"][: len(analytics["segments"])] == analytics["segments"]

    clip_result = await client.call_tool(
        "get_call_clip",
        {
            **EXAMPLE,
            "startSeconds": 60,
            "endSeconds": 75,
            "channel": "agent",
            "format": "mp3",
            "inline": True,
        },
    )
    clip = structured(clip_result)["clip"]
    assert (clip["channel"], clip["label"], clip["format"], clip["mimeType"]) == (
        "1",
        "agent",
        "mp3",
        "audio/mpeg",
    )
    assert clip["durationSeconds"] == pytest.approx(15)
    assert clip["inlined"] is True
    inline = [block for block in clip_result.content if isinstance(block, AudioContent)]
    assert len(inline) == 1
    data = base64.b64decode(inline[0].data)
    assert hashlib.sha256(data).hexdigest() == clip["sha256"]
    assert len(data) == clip["sizeBytes"]
    read = (await client.read_resource(clip["uri"])).contents[0]
    assert isinstance(read, BlobResourceContents)
    assert read.mime_type == "audio/mpeg"
    assert base64.b64decode(read.blob) == data
    if local:
        assert Path(clip["path"]).read_bytes() == data
        assert clip["path"] in structured(clip_result)["summary"]
    else:
        assert "path" not in clip
    wav = (
        await client.read_resource(
            "cte1://calls/05053698341/942125/1/clip?start=1&end=3&channel=mix&rate=16000"
        )
    ).contents[0]
    assert isinstance(wav, BlobResourceContents)
    assert wav.mime_type == "audio/wav"
    assert base64.b64decode(wav.blob)[:4] == b"RIFF"

    before = len(simulator.state.requests)
    assert before == 1  # one download served the analysis, the picture and every clip
    for arguments, named in CLIP_ERRORS:
        refused = await client.call_tool("get_call_clip", arguments)
        assert refused.is_error, arguments
        message = text(refused)
        assert message.startswith("[invalid_parameter]"), message
        for part in named:
            assert part in message, (part, message)
    assert len(simulator.state.requests) == 2  # the mono call's download, nothing else
    with pytest.raises(MCPError) as caught:
        await client.read_resource("cte1://calls/05053698341/942125/1/clip?start=50&end=40")
    assert caught.value.error.data["code"] == "invalid_parameter"
