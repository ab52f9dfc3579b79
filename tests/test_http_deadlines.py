"""The HTTP server's read deadlines (``http_deadlines.py``) against slow and silent clients: the real
``serve_http`` on 127.0.0.1, in this process so the deadline can be made short, raw sockets for the
clients no HTTP library would be."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client

from cte1_mcp import http_deadlines, runner
from cte1_mcp.settings import load_settings
from cte1_mcp.simulator.state import Fault
from tests.mcp_harness import SMALL, server_env, text
from tests.test_mcp_http import free_port

pytestmark = pytest.mark.anyio

DEADLINE = 1.0
#: Far past the deadline: a connection still open then was not closed by it.
LONG_PAST = 8.0


@asynccontextmanager
async def serving(simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[int]:
    monkeypatch.setattr(http_deadlines, "READ_TIMEOUT_SECONDS", DEADLINE)
    for name, value in server_env(simulator.url, tmp_path / "cache").items():
        if name.startswith("CTE1_"):
            monkeypatch.setenv(name, value)
    settings = load_settings()
    port = free_port()
    async with anyio.create_task_group() as group:
        group.start_soon(runner.serve_http, settings, "127.0.0.1", port)
        await anyio.to_thread.run_sync(_wait_listening, port)
        yield port
        group.cancel_scope.cancel()


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("the server did not listen")


def _closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> bool:
    """Whether the server closes ``sock`` within ``seconds``, sending ``trickle`` a byte every 0.2 s."""
    sock.settimeout(0.2)
    end = time.monotonic() + seconds
    sent = 0
    while time.monotonic() < end:
        try:
            if sock.recv(4096) == b"":
                return True
        except TimeoutError:
            pass
        except ConnectionResetError:
            return True
        if sent < len(trickle):
            try:
                sock.sendall(trickle[sent : sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                return True
            sent += 1
    return False


async def _client_verdict(port: int, first: bytes, trickle: bytes = b"") -> bool:
    def run() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            if first:
                sock.sendall(first)
            return _closed_within(sock, LONG_PAST, trickle)

    return await anyio.to_thread.run_sync(run)


HEAD = b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"


@pytest.mark.parametrize(
    ("first", "trickle"),
    [
        (b"", b""),  # connects, sends nothing
        (b"", HEAD * 20),  # a head a byte every 0.2 s: bytes do not extend the deadline
        (HEAD + b"Content-Length: 100\r\n\r\n{", b""),  # a body that stops
    ],
    ids=["silent", "trickled-head", "stalled-body"],
)
async def test_a_client_that_does_not_send_its_request_is_disconnected(
    simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: bytes, trickle: bytes
) -> None:
    """Regression: uvicorn kept each such connection open for ever (slowloris: a few thousand use
    up the file descriptors, and nobody else can connect)."""
    async with serving(simulator, tmp_path, monkeypatch) as port:
        assert await _client_verdict(port, first, trickle)


async def test_the_deadline_does_not_cut_a_working_request_or_a_kept_alive_client(
    simulator: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tool call the server works on for three deadlines (the platform answers slowly), then
    another on the same client after a pause: both answered."""
    simulator.state.reset()
    simulator.state.fail_next(Fault(delay=3 * DEADLINE))
    async with (
        serving(simulator, tmp_path, monkeypatch) as port,
        Client(f"http://127.0.0.1:{port}/mcp") as client,
    ):
        started = time.monotonic()
        slow = await client.call_tool("get_call_metadata", SMALL)
        waited = time.monotonic() - started
        await anyio.sleep(0.5 * DEADLINE)
        again = await client.call_tool("get_call_metadata", SMALL)
    assert waited >= 3 * DEADLINE  # the server did work past the deadline
    assert not slow.is_error and not again.is_error, (text(slow), text(again))


async def _late_reader(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Reads the request's body only after three deadlines (busy with something else first)."""
    assert scope["type"] == "http"
    await anyio.sleep(3 * DEADLINE)
    size, more = 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    body = str(size).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


@pytest.mark.parametrize("expect_continue", [False, True], ids=["flow-control", "100-continue"])
async def test_a_body_the_server_holds_back_is_not_the_clients_delay(
    monkeypatch: pytest.MonkeyPatch, expect_continue: bool
) -> None:
    """Regression (review): a 2 MB body stops being read once 64 KiB wait unread (uvicorn's flow
    control), and an ``Expect: 100-continue`` body is not sent until the app reads; the deadline
    ran on and cut the client, which was waiting on the server."""
    import uvicorn

    monkeypatch.setattr(http_deadlines, "READ_TIMEOUT_SECONDS", DEADLINE)
    listening = runner._listening_socket("127.0.0.1", 0)
    port = listening.getsockname()[1]
    config = uvicorn.Config(
        _late_reader, log_level="warning", lifespan="off", http=http_deadlines.DeadlinedH11Protocol
    )
    server = uvicorn.Server(config)
    headers = {"Expect": "100-continue"} if expect_continue else {}
    async with anyio.create_task_group() as group:
        group.start_soon(lambda: server.serve(sockets=[listening]))
        while not server.started:
            await anyio.sleep(0.05)
        async with httpx.AsyncClient(trust_env=False, timeout=30) as http:
            answer = await http.post(f"http://127.0.0.1:{port}/", content=b"x" * 2_000_000, headers=headers)
        server.should_exit = True
    assert (answer.status_code, answer.text) == (200, "2000000")
