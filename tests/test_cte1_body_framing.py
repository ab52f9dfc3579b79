"""The body read past h11: the transport's streams hand h11 the response head and nothing after
it, so that a body framed by Content-Length alone is read straight from the connection. Nothing
may be lost, duplicated or reordered, however the bytes arrive; every other framing still goes
through h11."""

from __future__ import annotations

import hashlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpcore
import httpx
import pytest

from cte1_mcp.cte1.transport import Wire, _framed_by_length_alone, _Stream
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

BODY = multipart_body(metadata_part(), audio_part(TRICKY_AUDIO * 8))
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


# --- the stream, on a socket pair: every split position, deterministically ------------------------


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
            handed_to_h11 = stream.read(65536, timeout=5)  # all that had arrived, or up to a head's end
            theirs.sendall(blob[split:])
            while len(handed_to_h11) < len(response_head):
                handed_to_h11 += stream.read(65536, timeout=5)
            assert handed_to_h11 == response_head, f"split at {split}"
            assert stream.head_read()
            body = b""
            while len(body) < len(BODY):
                piece = stream.read_body(len(BODY) - len(body), timeout=5)
                assert piece, f"split at {split}: the body ended early"
                body += piece
            assert body == BODY, f"split at {split}"
        finally:
            stream.close()
            theirs.close()


def test_a_head_h11_reads_differently_disables_the_straight_read() -> None:
    """Should h11 finish a head where the stream saw no end, the body is left to h11."""
    ours, theirs = socket.socketpair()
    stream = _Stream(ours, Wire())
    try:
        theirs.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n")
        assert stream.read(65536, timeout=5) == b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n"
        assert not stream.head_read()
    finally:
        stream.close()
        theirs.close()


@pytest.mark.parametrize(
    ("method", "status", "headers", "straight"),
    [
        ("POST", 200, [(b"Content-Length", b"17")], 17),
        ("POST", 200, [(b"content-length", b" 0 ")], 0),
        ("POST", 200, [(b"Transfer-Encoding", b"chunked")], None),
        ("POST", 200, [(b"Content-Length", b"17"), (b"Transfer-Encoding", b"chunked")], None),
        ("POST", 200, [(b"Content-Length", b"17"), (b"Content-Length", b"17")], None),
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


def audio_sha() -> str:
    return hashlib.sha256(TRICKY_AUDIO * 8).hexdigest()


@pytest.mark.parametrize("name", list(HEADS))
@pytest.mark.parametrize(
    "pieces",
    [None, "byte-by-byte head"],
    ids=["in-one-write", "byte-by-byte-head"],
)
async def test_the_recording_arrives_byte_exact_however_head_and_body_arrive(
    server: RawServer, tmp_path: Path, name: str, pieces: str | None
) -> None:
    response_head = HEADS[name]
    chunks = None if pieces is None else [1] * len(response_head) + [len(BODY)]
    server.reply(Reply(raw=response_head + BODY, chunks=chunks, pause=0.0005 if chunks else 0.0))
    assert_success(await fetch(server, tmp_path), TRICKY_AUDIO * 8)


async def test_bytes_after_the_announced_length_are_not_read_as_the_body(
    server: RawServer, tmp_path: Path
) -> None:
    server.reply(Reply(raw=FINAL + BODY + b"HTTP/1.1 200 OK\r\n\r\nnot part of this answer"))
    assert_success(await fetch(server, tmp_path), TRICKY_AUDIO * 8)


async def test_a_chunked_body_is_still_read_through_h11(server: RawServer, tmp_path: Path) -> None:
    chunked = b"".join(
        f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        for piece in (BODY[:100], BODY[100:5000], BODY[5000:])
    )
    response_head = head("HTTP/1.1 200 OK", f"Content-Type: {CONTENT_TYPE}", "Transfer-Encoding: chunked")
    server.reply(Reply(raw=response_head + chunked + b"0\r\n\r\n", chunks=[7, 300, 4096]))
    assert_success(await fetch(server, tmp_path), TRICKY_AUDIO * 8)


async def test_a_chunked_body_cut_off_is_a_truncation(server: RawServer, tmp_path: Path) -> None:
    response_head = head("HTTP/1.1 200 OK", f"Content-Type: {CONTENT_TYPE}", "Transfer-Encoding: chunked")
    piece = BODY[:3000]
    server.reply(Reply(raw=response_head + f"{len(BODY):x}\r\n".encode() + piece))
    exc = failed(await fetch(server, tmp_path), UpstreamTruncated, "upstream_bad_response")
    assert exc.retryable


async def test_a_body_cut_off_in_the_read_that_brought_the_head_is_a_truncation(
    server: RawServer, tmp_path: Path
) -> None:
    server.reply(Reply(raw=FINAL + BODY[:1000]))
    exc = failed(await fetch(server, tmp_path), UpstreamTruncated, "upstream_bad_response")
    assert exc.retryable and f"broke off after 1,000 of {len(BODY):,} bytes" in exc.message
