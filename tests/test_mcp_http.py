"""Streamable HTTP: the real server process on loopback, the official client, raw HTTP for the refusals."""

from __future__ import annotations

import base64
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
import soundfile
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp_types import BlobResourceContents

from tests.mcp_harness import CLIP_MAX_SECONDS, EXAMPLE, check_analysis_surface, server_env, structured

pytestmark = pytest.mark.anyio

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw-test", "version": "0"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(process: subprocess.Popen[bytes], port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listened on port {port} within {timeout} s")


def serve_http(host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "cte1_mcp",
        "serve",
        "--transport",
        "http",
        "--host",
        host,
        "--port",
        str(port),
    ]


@contextmanager
def http_server(env: dict[str, str], host: str = "127.0.0.1") -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        serve_http(host, port),
        env=env,
        stdout=subprocess.DEVNULL,  # stderr is inherited: pytest shows it when a test fails
    )
    try:
        wait_for_port(process, port)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def env(simulator: Any, tmp_path: Path) -> dict[str, str]:
    return server_env(simulator.url, tmp_path / "cache")


async def test_initialize_and_tool_call_over_http(env: dict[str, str], simulator: Any) -> None:
    with http_server(env) as url:
        async with Client(url) as client:
            tools = await client.list_tools()
            assert {"get_call_metadata", "get_call_audio"} <= {t.name for t in tools.tools}
            result = await client.call_tool("get_call_audio", EXAMPLE)
    audio = structured(result)["audio"]
    assert audio["sizeBytes"] > 0
    assert "path" not in audio  # a remote client gets no server-local path
    assert "Local file" not in str(result.content)


async def test_wrong_host_header_is_refused(env: dict[str, str]) -> None:
    with http_server(env) as url:
        async with httpx.AsyncClient() as http:
            good = await http.post(url, json=INITIALIZE, headers=MCP_HEADERS)
            evil = await http.post(url, json=INITIALIZE, headers={**MCP_HEADERS, "Host": "evil.example:80"})
    assert good.status_code == 200
    assert evil.status_code in (400, 403, 421)


def test_non_loopback_bind_requires_a_token(env: dict[str, str]) -> None:
    done = subprocess.run(
        serve_http("0.0.0.0", 0),
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "CTE1_HTTP_TOKEN" in done.stderr


async def test_token_is_required_when_configured(env: dict[str, str]) -> None:
    token = "s3cret-token-for-tests"
    port_env = {**env, "CTE1_HTTP_TOKEN": token}
    with http_server(port_env) as url:
        async with httpx.AsyncClient() as http:
            missing = await http.post(url, json=INITIALIZE, headers=MCP_HEADERS)
            wrong = await http.post(
                url, json=INITIALIZE, headers={**MCP_HEADERS, "Authorization": "Bearer nope"}
            )
        assert missing.status_code == 401
        assert wrong.status_code == 401
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}) as authed,
            Client(streamable_http_client(url, http_client=authed)) as client,
        ):
            structured(await client.call_tool("get_call_metadata", EXAMPLE))


async def test_analytics_clips_and_their_resources_over_http(simulator: Any, tmp_path: Path) -> None:
    env = server_env(
        simulator.url,
        tmp_path / "cache",
        CTE1_CHANNEL_ROLES="customer,agent",
        CTE1_CLIP_MAX_SECONDS=str(CLIP_MAX_SECONDS),
    )
    with http_server(env) as url:
        async with Client(url) as client:
            await check_analysis_surface(client, simulator, local=False)


async def test_a_whole_call_as_ogg_leaves_every_session_served(env: dict[str, str], tmp_path: Path) -> None:
    """The README's example call (280 s) as one Ogg clip at 8 kHz used to segfault the server
    inside libsndfile, taking every other client's session with it."""
    with http_server(env) as url:
        async with Client(url) as bystander, Client(url) as asker:
            structured(await bystander.call_tool("get_call_metadata", EXAMPLE))
            result = await asker.call_tool("get_call_clip", {**EXAMPLE, "format": "ogg"})
            clip = structured(result)["clip"]
            structured(await bystander.call_tool("get_call_metadata", EXAMPLE))  # its session lives on
            contents = (await asker.read_resource(clip["uri"])).contents[0]
    assert isinstance(contents, BlobResourceContents) and contents.mime_type == "audio/ogg"
    (tmp_path / "clip.ogg").write_bytes(base64.b64decode(contents.blob))
    info = soundfile.info(str(tmp_path / "clip.ogg"))
    assert info.samplerate == 8000 and abs(info.frames / 8000 - clip["durationSeconds"]) < 0.1
    assert clip["durationSeconds"] > 262  # past the length that crashed
