"""When a download offers its core to other threads (``cte1_mcp.cpu``): before a read that will
not wait, and never before one that will, which gives the core away by itself."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpcore
import pytest

from cte1_mcp import cpu
from cte1_mcp.cte1.transport import Wire, _Stream


@pytest.fixture
def offers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Each time a download offered its core (``sched_yield`` is not called)."""
    offered: list[str] = []
    monkeypatch.setattr(cpu, "_SCHED_YIELD", lambda: offered.append("offered"))
    return offered


@pytest.fixture
def pair() -> Iterator[tuple[_Stream, socket.socket]]:
    ours, theirs = socket.socketpair()
    with theirs:
        stream = _Stream(ours, Wire())
        yield stream, theirs
        stream.close()


def test_no_offer_before_a_read_that_waits(pair: tuple[_Stream, socket.socket], offers: list[str]) -> None:
    stream, theirs = pair
    # Nothing has arrived: the read waits (until its timeout here), and is not delayed by an offer.
    with pytest.raises(httpcore.ReadTimeout):
        stream.read(1024, timeout=0.05)
    assert offers == []
    theirs.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody")
    assert stream.read(1024, timeout=5) == b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n"
    assert offers == ["offered"]  # it had arrived: the read runs on, so the core is offered first
    assert stream.end_head()
    assert stream.read_body(4, timeout=5) == b"body"  # held from the last read: nothing to wait for
    assert offers == ["offered"]


def test_an_offer_before_reading_what_arrived_and_the_end(
    pair: tuple[_Stream, socket.socket], offers: list[str]
) -> None:
    stream, theirs = pair
    theirs.sendall(b"HTTP/1.1 200 OK\r\n\r\n")
    theirs.shutdown(socket.SHUT_WR)
    assert stream.read(1024, timeout=5)
    assert stream.read(1024, timeout=5) == b""  # the end of the connection: no wait either
    assert offers == ["offered", "offered"]
