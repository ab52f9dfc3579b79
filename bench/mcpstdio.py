"""The server as a user runs it: the ``cte1-mcp`` console script over stdio, with the official client.

Yields the connected client together with the server's pid, so its peak RSS can be read.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp_types import CallToolResult, TextContent

from bench.procs import CTE1_MCP, children, clean_env, cmdline

# The client validates structured results with jsonschema, imported on its first tools/call
# (~0.1 s): import it now so no timed call pays for it.
importlib.import_module("jsonschema.validators")

#: Generous: a cold 256 MiB download is one tools/call.
READ_TIMEOUT_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where the server finds CT-e1 (the simulator) and how it authenticates."""

    url: str
    api_key: str
    source_uuid: str


def server_env(upstream: Upstream, cache_dir: Path, **overrides: str) -> dict[str, str]:
    """The server's whole configuration, through the environment as a user would give it."""
    env = clean_env(
        CTE1_BASE_URL=upstream.url,
        CTE1_SOURCE_UUID=upstream.source_uuid,
        CTE1_API_KEY=upstream.api_key,
        CTE1_CACHE_DIR=str(cache_dir),
        CTE1_MIN_INTERVAL_SECONDS="0",
    )
    env.update(overrides)
    return env


@dataclass(slots=True)
class Served:
    client: Client
    pid: int


def _server_pid(before: set[int]) -> int:
    new = [pid for pid in children() - before if "simulator" not in cmdline(pid)]
    if len(new) != 1:
        raise RuntimeError(f"expected one new server child process, found {new}")
    return new[0]


@asynccontextmanager
async def serve(
    env: dict[str, str], errlog: TextIO, command: Sequence[str] = (str(CTE1_MCP),)
) -> AsyncIterator[Served]:
    """Spawn ``cte1-mcp`` (stdio), complete the MCP handshake, yield the client and the server's pid.

    ``command`` is for experiments (a patched server); the benchmark runs the console script.
    """
    params = StdioServerParameters(command=command[0], args=list(command[1:]), env=env)
    before = children()
    transport = stdio_client(params, errlog=errlog)
    async with Client(transport, read_timeout_seconds=READ_TIMEOUT_SECONDS) as client:
        # As MCP hosts do on connecting; otherwise the client lists the tools inside the first
        # tools/call (to validate its result) and that round trip would be timed as the call's.
        await client.list_tools()
        yield Served(client, _server_pid(before))


async def timed_call(client: Client, tool: str, arguments: dict[str, Any]) -> tuple[float, CallToolResult]:
    """Seconds from sending the tools/call request to having its result, and the result."""
    start = time.perf_counter()
    result = await client.call_tool(tool, arguments)
    return time.perf_counter() - start, result


def structured(result: CallToolResult) -> dict[str, Any]:
    """The structured result, or an error naming what the server said."""
    if result.is_error or not isinstance(result.structured_content, dict):
        said = "\n".join(c.text for c in result.content if isinstance(c, TextContent))
        raise RuntimeError(f"tool call failed: {said}")
    return result.structured_content
