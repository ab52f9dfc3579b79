"""Real server processes for the multi-process tests: stdio through the official client, or HTTP."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

from mcp import Client

from tests.test_mcp_http import free_port, wait_for_port


@dataclass
class HttpServer:
    process: subprocess.Popen[bytes]
    url: str


@contextmanager
def http_process(env: dict[str, str], *extra: str) -> Iterator[HttpServer]:
    """``cte1-mcp serve --transport http`` on a free loopback port; its pid is there to be killed."""
    port = free_port()
    argv = [sys.executable, "-m", "cte1_mcp", "serve", "--transport", "http", "--host", "127.0.0.1"]
    process = subprocess.Popen([*argv, "--port", str(port), *extra], env=env, stdout=subprocess.DEVNULL)
    try:
        wait_for_port(process, port)
        yield HttpServer(process, f"http://127.0.0.1:{port}/mcp")
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(10)


@asynccontextmanager
async def http_client(server: HttpServer) -> AsyncIterator[Client]:
    async with Client(server.url) as client:
        yield client
