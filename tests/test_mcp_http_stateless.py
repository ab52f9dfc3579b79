"""``serve --transport http --stateless``: replicas that keep no session, so any one answers any request.

Two real server processes; the load balancer's part (each request to the next replica) is played
by the client's HTTP transport, per request, as a round-robin balancer with keep-alive does.
"""

from __future__ import annotations

import subprocess
import sys
import traceback
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.helpers.servers import HttpServer, http_process
from tests.mcp_harness import EXAMPLE, PCM_STEREO, server_env, structured

pytestmark = pytest.mark.anyio

LEGACY = "legacy"  # the 2025-11-25 initialize handshake
MODERN = "2026-07-28"  # session-less requests


class RoundRobin(httpx2.AsyncBaseTransport):
    """Sends each request to the next replica, and remembers who answered what."""

    def __init__(self, ports: list[int]) -> None:
        self._inner = httpx2.AsyncHTTPTransport()
        self._ports = ports
        self.sent: list[tuple[int, str]] = []
        self.session_ids: list[str] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        port = self._ports[len(self.sent) % len(self._ports)]
        request.url = request.url.copy_with(port=port)
        request.headers["Host"] = f"127.0.0.1:{port}"
        self.sent.append((port, request.method))
        response = await self._inner.handle_async_request(request)
        if "mcp-session-id" in response.headers:
            self.session_ids.append(response.headers["mcp-session-id"])
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


@contextmanager
def replicas(tmp_path: Path, simulator: Any, *extra: str, **env: str) -> Iterator[list[HttpServer]]:
    """Two replicas with their own stores (as on two machines), against one platform."""
    with ExitStack() as stack:
        yield [
            stack.enter_context(
                http_process(server_env(simulator.url, tmp_path / f"cache-{n}", **env), *extra)
            )
            for n in (1, 2)
        ]


@asynccontextmanager
async def balanced(servers: list[HttpServer], mode: str) -> AsyncIterator[tuple[Client, RoundRobin]]:
    ports = [int(s.url.rsplit(":", 1)[1].split("/")[0]) for s in servers]
    balancer = RoundRobin(ports)
    async with (
        httpx2.AsyncClient(transport=balancer, timeout=60) as http,
        Client(streamable_http_client(servers[0].url, http_client=http), mode=mode) as client,
    ):
        yield client, balancer


async def session_of_calls(client: Client) -> None:
    tools = await client.list_tools()
    assert {"get_call_metadata", "get_call_audio"} <= {t.name for t in tools.tools}
    structured(await client.call_tool("get_call_metadata", EXAMPLE))
    audio = structured(await client.call_tool("get_call_audio", EXAMPLE))["audio"]
    read = await client.read_resource(audio["uri"].replace("/audio", "/metadata"))
    assert read.contents


async def test_a_stateful_replica_does_not_know_another_ones_session(tmp_path: Path, simulator: Any) -> None:
    # Why the flag exists: a 2025-11-25 client's session lives in the replica that opened it.
    with replicas(tmp_path, simulator) as servers:
        try:
            async with balanced(servers, LEGACY) as (client, _):
                await session_of_calls(client)
        except (MCPError, ExceptionGroup) as exc:
            assert "Session not found" in "".join(traceback.format_exception(exc))
        else:
            raise AssertionError("the second replica served a session it never opened")


@pytest.mark.parametrize("how", ["flag", "env"])
@pytest.mark.parametrize("mode", [LEGACY, MODERN])
async def test_stateless_replicas_answer_any_request(
    tmp_path: Path, simulator: Any, mode: str, how: str
) -> None:
    extra, env = (("--stateless",), {}) if how == "flag" else ((), {"CTE1_HTTP_STATELESS": "true"})
    with replicas(tmp_path, simulator, *extra, **env) as servers:
        async with balanced(servers, mode) as (client, balancer):
            await session_of_calls(client)
    ports = {port for port, _ in balancer.sent}
    assert len(ports) == 2  # every other request went to the other replica
    assert len([m for _, m in balancer.sent if m == "POST"]) >= 4
    assert balancer.session_ids == []  # no session was handed out


@pytest.mark.parametrize("mode", [LEGACY, MODERN])
async def test_progress_reaches_the_caller_of_a_long_request(
    tmp_path: Path, simulator: Any, mode: str
) -> None:
    events: list[tuple[float, float | None, str | None]] = []

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        events.append((progress, total, message))

    with replicas(tmp_path, simulator, "--stateless", CTE1_MIN_INTERVAL_SECONDS="1.5") as servers:
        # One replica, so the second request must wait for the spacing the first one set.
        async with balanced(servers[:1], mode) as (client, _):
            structured(await client.call_tool("get_call_metadata", EXAMPLE))
            structured(await client.call_tool("get_call_audio", PCM_STEREO, progress_callback=progress))
    assert any(m and m.startswith("waiting") for _, _, m in events), events
    assert any(m and m.startswith("received") for _, _, m in events), events
    values = [p for p, _, _ in events]
    assert values == sorted(values)


def test_stateless_is_refused_with_stdio(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cte1_mcp", "serve", "--stateless"],
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 2
    assert "--stateless applies to --transport http only" in done.stderr
