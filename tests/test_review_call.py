"""review_call and its view's ui:// resource, through the official client over stdio and HTTP: the
tool names the view, initialize advertises MCP Apps, the view is served as an app, and a client
that does not render apps gets a useful text answer (an extension must degrade gracefully)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.extension import advertise
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID
from mcp_types import TextResourceContents

from cte1_mcp.app_view import REVIEW_HTML, REVIEW_URI
from tests.mcp_harness import EXAMPLE, IN_PROGRESS, server_env, structured, text
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
    assert "CTE1_ASR_MODEL" in said
    assert "cte1-mcp models" in said
    payload = structured(review)
    assert payload["summary"] == said
    assert payload["transcript"] == {
        "available": False,
        "lines": [],
        "sentenceCount": None,
        "note": said.splitlines()[-1],
    }


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
