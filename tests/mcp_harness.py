"""Start the real server as a subprocess and talk to it with the official MCP client."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters
from mcp_types import CallToolResult, TextContent

from cte1_mcp.simulator import DEFAULT_API_KEY, DEFAULT_SOURCE_UUID

EXAMPLE = {"tenantId": "05053698341", "sessionId": 942125, "recordId": 1}


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
async def stdio_server(env: dict[str, str]) -> AsyncIterator[Client]:
    params = StdioServerParameters(command=sys.executable, args=["-m", "cte1_mcp"], env=env)
    async with Client(params, read_timeout_seconds=60) as client:
        yield client


def text(result: CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, TextContent))


def structured(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, text(result)
    assert isinstance(result.structured_content, dict)
    return result.structured_content
