"""The listening sockets the HTTP server and the simulator hand to uvicorn: what asyncio makes of
the connections it accepts on them."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest

from cte1_mcp.runner import _listening_socket as server_socket
from cte1_mcp.simulator.config import SimulatorConfig
from cte1_mcp.simulator.server import _listening_socket as simulator_socket


def _nodelay_of_accepted(listening: socket.socket) -> int:
    """TCP_NODELAY on the transport asyncio builds for a connection accepted on ``listening`` (as
    uvicorn's ``serve(sockets=[...])`` does: ``loop.create_server(sock=...)``)."""

    async def run() -> int:
        seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.set_result(
                writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            )
            writer.close()

        server = await asyncio.start_server(accepted, sock=listening)
        async with server:
            _, writer = await asyncio.open_connection(*listening.getsockname()[:2])
            value = await asyncio.wait_for(seen, 10)
            writer.close()
        return value

    return asyncio.run(run())


@pytest.mark.parametrize(
    "make",
    [
        lambda: server_socket("127.0.0.1", 0),
        lambda: simulator_socket(SimulatorConfig(host="127.0.0.1", port=0)),
    ],
    ids=["server", "simulator"],
)
def test_accepted_connections_answer_without_waiting_for_a_delayed_ack(
    make: Callable[[], socket.socket],
) -> None:
    """Regression: both sockets were made with protocol 0, so asyncio left Nagle's algorithm on for
    every connection, and each answer over a kept-alive connection waited for the client's delayed
    ACK (a 404 took 44 ms instead of 0.5 ms; measured with ``cte1-mcp serve --transport http``)."""
    with make() as listening:
        assert _nodelay_of_accepted(listening) == 1
