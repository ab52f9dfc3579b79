"""A response head h11 refuses as malformed is a bad response: the same request would get the
same head, so the server does not spend two more of the platform's requests asking again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers.raw_upstream import API_KEY, RawServer, Reply, raw_server
from tests.mcp_harness import EXAMPLE, in_process, text

pytestmark = pytest.mark.anyio


@pytest.fixture
async def server() -> AsyncIterator[RawServer]:
    async with raw_server() as raw:
        yield raw


@pytest.mark.parametrize(
    "headers",
    [
        # ~200 KB of header lines: past h11's limit on a head ("Receive buffer too long").
        pytest.param([(f"X-Filler-{i}", "y" * 100) for i in range(2000)], id="oversized-head"),
        pytest.param([("Content-Type", "text/plain"), ("Bad Header", "x")], id="illegal-header-line"),
    ],
)
async def test_a_malformed_response_head_is_a_bad_response_asked_once(
    server: RawServer, tmp_path: Path, headers: list[tuple[str, str]]
) -> None:
    for _ in range(3):  # enough answers for every attempt the server might make
        server.reply(Reply(headers=headers, body=b"x"))
    async with in_process(server.url, tmp_path, api_key=API_KEY) as client:
        result = await client.call_tool("get_call_metadata", EXAMPLE)
    assert result.is_error
    assert text(result).startswith("[upstream_bad_response]"), text(result)
    assert len(server.requests) == 1
