"""The body read past h11: the transport's streams hand h11 the response head and nothing after
it, so that a body framed by Content-Length alone is read straight from the connection. Nothing
may be lost, duplicated or reordered, however the bytes arrive; every other framing still goes
through h11."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import h11._receivebuffer
import httpcore
import httpx
import pytest

from cte1_mcp.cte1.transport import _END_OF_HEAD, Wire, _framed_by_length_alone, _straight_body, _Stream
from cte1_mcp.errors import UpstreamTruncated
from tests.helpers.raw_upstream import (
    BOUNDARY,
    TRICKY_AUDIO,
    RawServer,
    Reply,
    assert_success,
    audio_part,
    failed,
    fetch,
    metadata_part,
    multipart_body,
    raw_server,
)

pytestmark = pytest.mark.anyio

AUDIO = TRICKY_AUDIO * 8  # holds blank lines of its own, CRLF and bare LF
BODY = multipart_body(metadata_part(), audio_part(AUDIO))
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


def head(*lines: str, newline: str = "\r\n") -> bytes:
    return (newline.join(lines) + newline + newline).encode()


FINAL = head("HTTP/1.1 200 OK", f"Content-Type: {CONTENT_TYPE}", f"Content-Length: {len(BODY)}")
#: Heads as they may come: CRLF, bare LF (which h11 accepts), and after an informational 100.
HEADS = {
    "crlf": FINAL,
    "bare-lf": head(
        "HTTP/1.1 200 OK", f"Content-Type: {CONTENT_TYPE}", f"Content-Length: {len(BODY)}", newline="\n"
    ),
    "after-100-continue": head("HTTP/1.1 100 Continue") + FINAL,
}


@pytest.fixture
async def server() -> AsyncIterator[RawServer]:
    async with raw_server() as raw:
        yield raw


@pytest.fixture
def pair() -> Iterator[tuple[_Stream, socket.socket]]:
    """Our stream on one end of a socket pair, the other end for the test to write to."""
    ours, theirs = socket.socketpair()
    stream = _Stream(ours, Wire())
    try:
        yield stream, theirs
    finally:
        stream.close()
        theirs.close()


def test_the_head_ends_where_h11_ends_it() -> None:
    """The cut copies h11's rule; an h11 that ended heads elsewhere would break the straight read."""
    assert _END_OF_HEAD.pattern == h11._receivebuffer.blank_line_regex.pattern


# --- the stream, on a socket pair: every way a read can split the head, deterministically -------------


def read_head_as_h11(stream: _Stream, size: int, *, first: bytes = b"") -> bytes:
    handed = first
    while len(handed) < size:
        piece = stream.read(65536, timeout=5)
        assert piece, "the connection ended inside the head"
        handed += piece
    return handed


def read_body(stream: _Stream, size: int) -> bytes:
    body = b""
    while len(body) < size:
        piece = stream.read_body(size - len(body), timeout=5)
        assert piece, "the body ended early"
        body += piece
    return body


@pytest.mark.parametrize("name", list(HEADS))
def test_reads_stop_at_the_end_of_the_head_wherever_a_read_splits_it(name: str) -> None:
    """What h11 reads is exactly the head; what follows comes, in order, from ``read_body``."""
    response_head = HEADS[name]
    blob = response_head + BODY
    for split in [*range(1, len(response_head) + 3), len(blob)]:
        ours, theirs = socket.socketpair()
        stream = _Stream(ours, Wire())
        try:
            theirs.sendall(blob[:split])
            first = stream.read(65536, timeout=5)  # all that had arrived, or up to a head's end
            theirs.sendall(blob[split:])
            assert read_head_as_h11(stream, len(response_head), first=first) == response_head, split
            assert stream.end_head()
            assert read_body(stream, len(BODY)) == BODY, split
        finally:
            stream.close()
            theirs.close()


@pytest.mark.parametrize("name", list(HEADS))
def test_a_head_arriving_a_byte_at_a_time_is_cut_exactly(
    pair: tuple[_Stream, socket.socket], name: str
) -> None:
    """Every read one byte: a blank line spread over two or three reads is still found."""
    stream, theirs = pair
    response_head = HEADS[name]
    handed = b""
    for byte in response_head:
        theirs.sendall(bytes([byte]))
        handed += stream.read(65536, timeout=5)
    theirs.sendall(BODY)
    assert handed == response_head
    assert stream.end_head()
    assert read_body(stream, len(BODY)) == BODY


def test_a_read_not_ending_at_a_head_end_leaves_the_body_to_h11(pair: tuple[_Stream, socket.socket]) -> None:
    """Should httpcore report a head where the stream saw none end, the body is not read straight."""
    stream, theirs = pair
    theirs.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n")
    assert stream.read(65536, timeout=5) == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
    assert not stream.end_head()


def test_a_second_answer_on_the_same_connection_is_never_read_straight(
    pair: tuple[_Stream, socket.socket],
) -> None:
    stream, theirs = pair
    theirs.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert stream.read(65536, timeout=5).endswith(b"\r\n\r\n")
    assert stream.end_head()
    assert stream.read_body(2, timeout=5) == b"ok"
    assert not stream.end_head()


def test_the_straight_body_stops_at_its_length(pair: tuple[_Stream, socket.socket]) -> None:
    """Bytes after the announced length stay unread (h11 would take them for a next answer)."""
    stream, theirs = pair
    theirs.sendall(FINAL + BODY + b"HTTP/1.1 200 OK\r\n\r\n")
    assert read_head_as_h11(stream, len(FINAL)) == FINAL
    assert stream.end_head()
    assert b"".join(_straight_body(stream, len(BODY), timeout=5)) == BODY
    assert stream.read_body(65536, timeout=5) == b"HTTP/1.1 200 OK\r\n\r\n"


def test_a_straight_body_that_ends_early_is_what_h11_would_call_it(
    pair: tuple[_Stream, socket.socket],
) -> None:
    stream, theirs = pair
    theirs.sendall(FINAL + BODY[:1000])
    theirs.shutdown(socket.SHUT_WR)
    read_head_as_h11(stream, len(FINAL))
    assert stream.end_head()
    with pytest.raises(httpcore.RemoteProtocolError, match=f"received 1000 bytes, expected {len(BODY)}"):
        b"".join(_straight_body(stream, len(BODY), timeout=5))


@pytest.mark.parametrize(
    ("method", "status", "headers", "straight"),
    [
        ("POST", 200, [(b"Content-Length", b"17")], 17),
        ("POST", 200, [(b"content-length", b" 0 ")], 0),
        ("POST", 200, [(b"Transfer-Encoding", b"chunked")], None),
        ("POST", 200, [(b"Content-Length", b"17"), (b"Transfer-Encoding", b"chunked")], None),
        ("POST", 200, [], None),  # ends when the connection closes
        ("POST", 204, [(b"Content-Length", b"17")], None),
        ("POST", 404, [(b"Content-Length", b"17")], None),
        ("HEAD", 200, [(b"Content-Length", b"17")], None),
    ],
)
def test_only_a_successful_body_framed_by_its_length_alone_is_read_straight(
    method: str, status: int, headers: list[tuple[bytes, bytes]], straight: int | None
) -> None:
    request = httpx.Request(method, "http://127.0.0.1/")
    assert _framed_by_length_alone(request, httpcore.Response(status, headers=headers)) == straight


# --- end to end, through httpx and h11, against a real server ------------------------------------


@pytest.mark.parametrize("name", list(HEADS))
@pytest.mark.parametrize("byte_by_byte", [False, True], ids=["in-one-write", "byte-by-byte-head"])
async def test_the_recording_arrives_byte_exact_however_head_and_body_arrive(
    server: RawServer, tmp_path: Path, straight_reads: list[int], name: str, byte_by_byte: bool
) -> None:
    response_head = HEADS[name]
    chunks = [1] * len(response_head) + [len(BODY)] if byte_by_byte else None
    server.reply(Reply(raw=response_head + BODY, chunks=chunks, pause=0.0005 if chunks else 0.0))
    assert_success(await fetch(server, tmp_path), AUDIO)
    assert straight_reads == [len(BODY)]


async def test_an_answer_with_a_content_length_is_read_straight_however_it_is_sent(
    server: RawServer, tmp_path: Path, straight_reads: list[int]
) -> None:
    server.reply(Reply(headers=[("Content-Type", CONTENT_TYPE)], body=BODY, chunks=[7, 4096]))
    assert_success(await fetch(server, tmp_path), AUDIO)
    assert straight_reads == [len(BODY)]


async def test_a_chunked_body_is_still_read_through_h11(
    server: RawServer, tmp_path: Path, straight_reads: list[int]
) -> None:
    chunked = b"".join(
        f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        for piece in (BODY[:100], BODY[100:5000], BODY[5000:])
    )
    response_head = head("HTTP/1.1 200 OK", f"Content-Type: {CONTENT_TYPE}", "Transfer-Encoding: chunked")
    server.reply(Reply(raw=response_head + chunked + b"0\r\n\r\n", chunks=[7, 300, 4096]))
    assert_success(await fetch(server, tmp_path), AUDIO)
    assert straight_reads == []


async def test_a_chunked_body_cut_off_is_a_truncation(server: RawServer, tmp_path: Path) -> None:
    response_head = head("HTTP/1.1 200 OK", f"Content-Type: {CONTENT_TYPE}", "Transfer-Encoding: chunked")
    server.reply(Reply(raw=response_head + f"{len(BODY):x}\r\n".encode() + BODY[:3000]))
    exc = failed(await fetch(server, tmp_path), UpstreamTruncated, "upstream_bad_response")
    assert exc.retryable


async def test_a_body_cut_off_in_the_read_that_brought_the_head_is_a_truncation(
    server: RawServer, tmp_path: Path
) -> None:
    server.reply(Reply(raw=FINAL + BODY[:1000]))
    exc = failed(await fetch(server, tmp_path), UpstreamTruncated, "upstream_bad_response")
    assert exc.retryable and f"broke off after 1,000 of {len(BODY):,} bytes" in exc.message
