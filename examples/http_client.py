"""Talk to cte1-mcp over Streamable HTTP, with the bearer token a non-loopback server requires.

Start a server first, for example against the embedded simulator:

    CTE1_HTTP_TOKEN=change-me .venv/bin/cte1-mcp serve --demo --transport http --port 8000

then:

    CTE1_HTTP_TOKEN=change-me .venv/bin/python examples/http_client.py http://127.0.0.1:8000/mcp
"""

from __future__ import annotations

import asyncio
import os
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


async def main(url: str) -> None:
    token = os.environ.get("CTE1_HTTP_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=120) as http,
        Client(streamable_http_client(url, http_client=http)) as client,
    ):
        print("tools:", [tool.name for tool in (await client.list_tools()).tools])
        result = await client.call_tool(
            "get_call_audio", {"tenantId": "05053698341", "sessionId": 942125, "recordId": 1, "inline": True}
        )
        audio = (result.structured_content or {}).get("audio", {})
        print(
            f"audio: {audio.get('uri')} {audio.get('mimeType')} {audio.get('sizeBytes')} bytes, "
            f"inlined={audio.get('inlined')}"
        )
        print("resources:", [str(r.uri) for r in (await client.list_resources()).resources])


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000/mcp"))
