"""Talk to cte1-mcp over Streamable HTTP and fetch a recording's audio, with the bearer token a
non-loopback server requires.

Start a server first, for example against the embedded simulator:

    CTE1_HTTP_TOKEN=change-me .venv/bin/cte1-mcp serve --demo --transport http --port 8000

then (``--legacy``: speak the 2025-11-25 initialize handshake, as many deployed clients do):

    CTE1_HTTP_TOKEN=change-me .venv/bin/python examples/http_client.py http://127.0.0.1:8000/mcp [--legacy]

The audio comes two ways: as the resource blob (resources/read, one JSON message), and from the
result's ``downloadUrl`` (plain HTTP GET with the same token; Range and an ETag = sha256), which
suits large recordings and resumable downloads. Both are checked against the result's sha256.
Recordings are personal data: this example keeps them in memory only.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

CALL = {"tenantId": "05053698341", "sessionId": 942130, "recordId": 2}  # 1.9 MB: about two minutes


async def main(url: str, mode: str) -> None:
    token = os.environ.get("CTE1_HTTP_TOKEN")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=120) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        print("protocol:", client.protocol_version)
        print("tools:", [tool.name for tool in (await client.list_tools()).tools])
        result = await client.call_tool("get_call_audio", CALL)
        audio = (result.structured_content or {})["audio"]
        print(
            f"audio: {audio['uri']} {audio['mimeType']} {audio['sizeBytes']} bytes, sha256 {audio['sha256']}"
        )

        read = (await client.read_resource(audio["uri"])).contents[0]
        blob = base64.b64decode(getattr(read, "blob", ""))
        print(f"resource: {len(blob)} bytes, sha256 matches: {_sha256(blob) == audio['sha256']}")

        # Streamed in pieces, as a download of any size should be (the same token as /mcp).
        digest, size = hashlib.sha256(), 0
        async with http.stream("GET", audio["downloadUrl"]) as response:
            response.raise_for_status()
            async for chunk in response.aiter_bytes():
                digest.update(chunk)
                size += len(chunk)
        print(
            f"download: {audio['downloadUrl']} {size} bytes, sha256 matches: {digest.hexdigest() == audio['sha256']}"
        )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


if __name__ == "__main__":
    args = [arg for arg in sys.argv[1:] if arg != "--legacy"]
    asyncio.run(
        main(args[0] if args else "http://127.0.0.1:8000/mcp", "legacy" if "--legacy" in sys.argv else "auto")
    )
