"""The browser tests' host, server side: a Starlette app on 127.0.0.1 serving the host page (ext-apps'
AppBridge, built from ui/) and proxying what the page asks for (tools/list, tools/call, resources/read)
to the real cte1-mcp server over the real MCP client session it is given (stdio or HTTP)."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from mcp import Client
from mcp_types import TextResourceContents
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

ROOT = Path(__file__).resolve().parents[1]
UI = ROOT / "ui"


def node_ready() -> bool:
    """node and ui/'s locked packages (``make ui-deps``) are there."""
    return shutil.which("node") is not None and (UI / "node_modules" / ".installed").exists()


def build(*args: str) -> None:
    subprocess.run(["node", str(UI / "build.mjs"), *args], check=True, cwd=UI, capture_output=True)


def host_page(directory: Path) -> str:
    """The host page, bundled from ui/harness with the locked ext-apps."""
    out = directory / "host.html"
    build("--host", str(out))
    return out.read_text(encoding="utf-8")


#: The spec's (2026-01-26) restrictive default CSP for a ui:// resource that declares none, with the
#: sandbox's own rules (no nested frames, no plugins, base URI self).
VIEW_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; media-src 'self' data:; connect-src 'none'; frame-src 'none'; "
    "object-src 'none'; base-uri 'self'"
)


def harness_app(client: Client, page: str, calls: list[dict[str, Any]]) -> Starlette:
    sandbox_page = (UI / "harness" / "sandbox.html").read_text(encoding="utf-8")

    async def index(request: Request) -> Response:
        return HTMLResponse(page)

    async def sandbox(request: Request) -> Response:
        """The sandbox proxy; its CSP header is inherited by the view it writes into its frame."""
        return HTMLResponse(sandbox_page, headers={"Content-Security-Policy": VIEW_CSP})

    async def tools(request: Request) -> Response:
        listed = await client.list_tools()
        return JSONResponse(
            [tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in listed.tools]
        )

    async def resource(request: Request) -> Response:
        read = await client.read_resource(request.query_params["uri"])
        [contents] = read.contents
        assert isinstance(contents, TextResourceContents)
        return JSONResponse({"text": contents.text, "mimeType": contents.mime_type})

    async def read(request: Request) -> Response:
        """resources/read for the view, as the server answered it."""
        result = await client.read_resource(request.query_params["uri"])
        return JSONResponse(result.model_dump(mode="json", by_alias=True, exclude_none=True))

    async def tool(request: Request) -> Response:
        params = await request.json()
        calls.append(params)
        result = await client.call_tool(params["name"], params.get("arguments") or {})
        return JSONResponse(result.model_dump(mode="json", by_alias=True, exclude_none=True))

    return Starlette(
        routes=[
            Route("/", index),
            Route("/sandbox", sandbox),
            Route("/tools", tools),
            Route("/resource", resource),
            Route("/read", read),
            Route("/tool", tool, methods=["POST"]),
        ]
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@asynccontextmanager
async def serving(app: Starlette) -> AsyncIterator[str]:
    """``app`` on a free loopback port, in this event loop (so it shares the MCP client's)."""
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    async with anyio.create_task_group() as group:
        group.start_soon(server.serve)
        while not server.started:
            await anyio.sleep(0.02)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
