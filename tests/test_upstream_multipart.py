"""The upstream client against an adversarial raw HTTP server on loopback.

The server writes exactly the bytes a test chooses, in the chunk sizes it chooses, and records
the request it received; the client runs unchanged over a real socket.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import logging
import socket
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from cte1_mcp import __version__
from cte1_mcp.errors import (
    AudioTooLarge,
    CallInProgress,
    Cte1Error,
    RateLimited,
    UpstreamAuthFailed,
    UpstreamBadResponse,
    UpstreamIpNotAllowed,
    UpstreamRejected,
    UpstreamTruncated,
    UpstreamUnavailable,
)
from cte1_mcp.models import CallKey, CallMetadata
from cte1_mcp.multipart_stream import RecordingPartsReader
from cte1_mcp.settings import Settings
from cte1_mcp.upstream import ACCEPT, CallAudioClient, FetchedCall, retry_after_seconds

pytestmark = pytest.mark.anyio

E = TypeVar("E", bound=Cte1Error)

API_KEY = "e0167b81201d415ab0d7ce9081849999"
#: The loopback server's host: stands for the customer's private CT-e1 domain.
HOST = "127.0.0.1"
SOURCE_UUID = "6f1c2a4e-8d3b-4e55-9a71-0c2b7d9e4f10"
KEY = CallKey("05053698341", 942125, 1)
BOUNDARY = "BOUNDARY"
METADATA: dict[str, Any] = {
    "status": "complete",
    "tenantId": "05053698341",
    "sessionId": 942125,
    "recordId": 1,
    "direction": 0,
    "ani": "08075082398",
    "dnis": "05053698333",
    "agentId": "F99971353",
    "agentName": "コムデザイン一郎",
    "skillName": "着信スキル名1",
    "groupId": "0368509999@0368939999",
    "groupName": "局番スキル名1",
    "connectTime": "2023-01-04T11:22:33.123Z",
    "disconnectTime": "2023-01-04T11:27:13.570Z",
    "futureField": {"added": "later"},
}
#: Audio full of things a boundary scanner could trip on: CRLFs, near-boundaries, a bare boundary.
TRICKY_AUDIO = (
    b"RIFF\x00\x00\x00\x00WAVE\r\n\r\n--"
    + b"\r\n--BOUNDARX\r\n"
    + b"x--BOUNDARY\r\n"  # not preceded by CRLF: not a delimiter
    + b"\n--BOUNDARY--\r\n"  # LF alone is not CRLF either
    + b"\r\n--BOUNDAR"
    + b"\r\r\n\n\r\n-\r\n--"
    + bytes(range(256)) * 8
    + b"\r\n--BOUNDAR"  # a partial delimiter right before the real one
)


# --- the raw server -------------------------------------------------------------------------------


@dataclass
class Reply:
    """One HTTP answer, byte for byte."""

    status: int = 200
    headers: Sequence[tuple[str, str]] = ()
    body: bytes = b""
    #: Body piece sizes, cycled; None sends the body in one write.
    chunks: Sequence[int] | None = None
    #: Add a Content-Length header for the whole body (else the body ends when the connection closes).
    content_length: bool = True
    #: Close the connection after this many body bytes (the announced length stays the full one).
    cut_after: int | None = None
    #: Seconds to wait before the status line, and between body pieces.
    delay: float = 0.0
    pause: float = 0.0
    #: Drop the connection before the response's head has been sent completely.
    cut_head: bool = False


@dataclass
class Captured:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Served:
    """What the server managed to send of one reply."""

    body_bytes_sent: int = 0
    completed: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)


class RawServer:
    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[Captured] = []
        self.served: list[Served] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def reply(self, reply: Reply) -> RawServer:
        self.replies.append(reply)
        return self

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._handlers:  # e.g. one still sleeping before an answer the client gave up on
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = Served()
        self.served.append(served)
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._serve(reader, writer, served)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client hung up: exactly what some tests want
        finally:
            writer.close()
            served.done.set()
            self._handlers.discard(task)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, served: Served
    ) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {
            name.strip().lower(): value.strip() for name, _, value in (x.partition(":") for x in lines if x)
        }
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        method, target, _ = request_line.split(" ")
        self.requests.append(Captured(method, target, headers, body))
        reply = self.replies.popleft()
        await asyncio.sleep(reply.delay)
        header_lines = [f"HTTP/1.1 {reply.status} X", "Connection: close"]
        header_lines += [f"{name}: {value}" for name, value in reply.headers]
        if reply.content_length:
            header_lines.append(f"Content-Length: {len(reply.body)}")
        head_bytes = ("\r\n".join(header_lines) + "\r\n\r\n").encode("utf-8")
        if reply.cut_head:
            writer.write(head_bytes[: len(head_bytes) // 2])
            await writer.drain()
            return
        writer.write(head_bytes)
        body_out = reply.body if reply.cut_after is None else reply.body[: reply.cut_after]
        for piece in _pieces(body_out, reply.chunks):
            writer.write(piece)
            await writer.drain()
            served.body_bytes_sent += len(piece)
            await asyncio.sleep(reply.pause)
        served.completed = reply.cut_after is None


def _pieces(data: bytes, sizes: Sequence[int] | None) -> list[bytes]:
    if not sizes:
        return [data]
    out, pos, i = [], 0, 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        out.append(data[pos : pos + size])
        pos, i = pos + size, i + 1
    return out


@pytest.fixture
async def server() -> AsyncIterator[RawServer]:
    raw = RawServer()
    await raw.start()
    yield raw
    await raw.stop()


def make_settings(url: str, tmp_path: Path, **overrides: Any) -> Settings:
    options: dict[str, Any] = {
        "base_url": url,
        "source_uuid": SOURCE_UUID,
        "api_key": API_KEY,
        "cache_dir": tmp_path,
        "min_interval_seconds": 0,
        "timeout_seconds": 5,
    }
    return Settings(**(options | overrides))


class Sink:
    def __init__(self) -> None:
        self.data = bytearray()
        self.writes = 0

    async def write(self, chunk: bytes) -> None:
        self.data += chunk
        self.writes += 1


@dataclass
class Run:
    sink: Sink
    result: FetchedCall | None = None
    error: Cte1Error | None = None
    progress: list[tuple[int, int | None]] = field(default_factory=list)


async def fetch(server: RawServer, tmp_path: Path, key: CallKey = KEY, **settings: Any) -> Run:
    run = Run(Sink())

    async def progress(received: int, total: int | None) -> None:
        run.progress.append((received, total))

    async with CallAudioClient(make_settings(server.url, tmp_path, **settings)) as client:
        try:
            run.result = await client.fetch(key, run.sink, on_progress=progress)
        except Cte1Error as exc:
            run.error = exc
    return run


def failed(run: Run, kind: type[E], code: str) -> E:
    """The failure, checked for its class and code, and for the key and the host being nowhere in it."""
    assert run.result is None, "expected a failure"
    exc = run.error
    assert isinstance(exc, kind), repr(exc)
    assert exc.code == code
    for text in (str(exc), exc.render(), exc.message, exc.platform_message or ""):
        assert API_KEY not in text
        assert HOST not in text
        assert "Traceback" not in text
    return exc


def logged_warnings(caplog: pytest.LogCaptureFixture) -> str:
    """The upstream module's WARNING records, checked for the key being nowhere in them."""
    text = "\n".join(
        r.getMessage()
        for r in caplog.records
        if r.name == "cte1_mcp.upstream" and r.levelno == logging.WARNING
    )
    assert API_KEY not in text
    return text


# --- building bodies ----------------------------------------------------------------------------------


def part(body: bytes, *headers: str) -> bytes:
    return "".join(f"{h}\r\n" for h in headers).encode() + b"\r\n" + body


def multipart_body(
    *parts: bytes, boundary: str = BOUNDARY, preamble: bytes = b"", epilogue: bytes = b"", close: bool = True
) -> bytes:
    delimiter = f"--{boundary}".encode()
    out = preamble + (b"\r\n" if preamble else b"")
    for i, content in enumerate(parts):
        out += (b"\r\n" if i else b"") + delimiter + b"\r\n" + content
    if close:
        out += b"\r\n" + delimiter + b"--\r\n" + epilogue
    return out


def metadata_part(data: dict[str, Any] | None = None, *, named: bool = True) -> bytes:
    headers = ['Content-Disposition: form-data; name="metadata"'] if named else []
    body = json.dumps(METADATA if data is None else data, ensure_ascii=False).encode()
    return part(body, *headers, "Content-Type: application/json; charset=utf-8")


def audio_part(audio: bytes, *, named: bool = True, content_type: str = "audio/wav") -> bytes:
    headers = ['Content-Disposition: form-data; name="audioFile"; filename="942125_1.wav"'] if named else []
    return part(audio, *headers, f"Content-Type: {content_type}")


def multipart_reply(
    body: bytes, *, subtype: str = "form-data", boundary: str = BOUNDARY, **reply: Any
) -> Reply:
    return Reply(headers=[("Content-Type", f"multipart/{subtype}; boundary={boundary}")], body=body, **reply)


def sha(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_success(run: Run, audio: bytes, content_type: str | None = "audio/wav") -> FetchedCall:
    assert run.error is None, run.error.render() if run.error else ""
    assert run.result is not None
    assert sha(run.sink.data) == sha(audio)
    assert run.result.audio_bytes == len(audio)
    assert run.result.audio_content_type == content_type
    metadata = run.result.metadata
    assert metadata.platform_json() == METADATA  # every field, unknown ones included
    assert metadata.model_extra == {"futureField": {"added": "later"}}
    assert (metadata.agentName, metadata.sessionId) == ("コムデザイン一郎", 942125)
    return run.result


# --- the request ------------------------------------------------------------------------------------


async def test_sends_exactly_the_documented_request(server: RawServer, tmp_path: Path) -> None:
    audio = b"RIFF" + b"\x00" * 100
    server.reply(multipart_reply(multipart_body(metadata_part(), audio_part(audio))))
    run = await fetch(server, tmp_path, api_version="v1")
    assert_success(run, audio)
    [request] = server.requests
    assert request.method == "POST"
    assert request.target == f"/general/v1/{SOURCE_UUID}/call/audio_data"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept"] == ACCEPT == "multipart/form-data, multipart/mixed, application/json"
    assert request.headers["user-agent"] == f"cte1-mcp/{__version__}"
    assert json.loads(request.body) == {"tenantId": "05053698341", "sessionId": 942125, "recordId": 1}


async def test_bearer_key_is_passed_through_and_base_path_and_version_kept(
    server: RawServer, tmp_path: Path
) -> None:
    server.reply(Reply(status=403, body=b"{}"))
    run = await fetch(server, tmp_path, api_key=f"Bearer {API_KEY}", api_version="v2")
    failed(run, UpstreamAuthFailed, "upstream_auth_failed")
    [request] = server.requests
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.target == f"/general/v2/{SOURCE_UUID}/call/audio_data"


async def test_base_url_with_a_path_prefix(server: RawServer, tmp_path: Path) -> None:
    server.reply(Reply(status=403, body=b"{}"))
    settings = make_settings(server.url + "/gateway/", tmp_path)
    async with CallAudioClient(settings) as client:
        with pytest.raises(UpstreamAuthFailed):
            await client.fetch(KEY, Sink())
    assert server.requests[0].target == f"/gateway/general/v1/{SOURCE_UUID}/call/audio_data"


# --- successes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subtype", "named", "chunks", "content_length"),
    [
        ("form-data", True, [1], True),
        ("form-data", True, [1, 2, 3, 5, 7, 11, 13], False),
        ("mixed", False, [7, 1, 1, 1, 64], True),
        ("mixed", True, [4096, 1, 3], False),
        ("form-data", False, None, True),
    ],
)
async def test_tricky_audio_arrives_byte_exact_whatever_the_chunking(
    server: RawServer,
    tmp_path: Path,
    subtype: str,
    named: bool,
    chunks: list[int] | None,
    content_length: bool,
) -> None:
    body = multipart_body(metadata_part(named=named), audio_part(TRICKY_AUDIO, named=named))
    server.reply(multipart_reply(body, subtype=subtype, chunks=chunks, content_length=content_length))
    assert_success(await fetch(server, tmp_path), TRICKY_AUDIO)


async def test_preamble_epilogue_and_quoted_boundary(server: RawServer, tmp_path: Path) -> None:
    boundary = "=_part 0'9:+(x)?,./"  # legal boundary characters that need quoting
    body = multipart_body(
        metadata_part(),
        audio_part(TRICKY_AUDIO),
        boundary=boundary,
        preamble=b"This is a multi-part message in MIME format.",
        epilogue=b"\r\nthe end\r\n",
    )
    headers = [("Content-Type", f'multipart/mixed; charset=utf-8; boundary="{boundary}"')]
    server.reply(Reply(headers=headers, body=body, chunks=[3, 17]))
    assert_success(await fetch(server, tmp_path), TRICKY_AUDIO)


async def test_dispositions_other_than_form_data_are_accepted(server: RawServer, tmp_path: Path) -> None:
    meta = part(json.dumps(METADATA).encode(), 'Content-Disposition: inline; name="metadata"')
    audio = part(TRICKY_AUDIO, 'Content-Disposition: attachment; name="audioFile"; filename="a.wav"')
    server.reply(multipart_reply(multipart_body(meta, audio), subtype="mixed"))
    assert_success(await fetch(server, tmp_path), TRICKY_AUDIO, content_type=None)


async def test_parts_identified_by_content_type_when_unnamed_and_out_of_the_usual_headers(
    server: RawServer, tmp_path: Path
) -> None:
    meta = part(json.dumps(METADATA).encode(), "Content-Type: application/vnd.cte1+json")
    audio = part(TRICKY_AUDIO, "Content-Type: application/octet-stream", "X-Whatever: 1")
    server.reply(multipart_reply(multipart_body(meta, audio), subtype="mixed"))
    assert_success(await fetch(server, tmp_path), TRICKY_AUDIO, content_type="application/octet-stream")


async def test_extra_non_audio_part_is_ignored(server: RawServer, tmp_path: Path) -> None:
    extra = part(
        b'{"transcript": null}', 'Content-Disposition: form-data; name="notes"', "Content-Type: text/plain"
    )
    body = multipart_body(metadata_part(), audio_part(TRICKY_AUDIO), extra)
    server.reply(multipart_reply(body))
    assert_success(await fetch(server, tmp_path), TRICKY_AUDIO)


async def test_gzip_content_encoding_is_decoded(server: RawServer, tmp_path: Path) -> None:
    body = gzip.compress(multipart_body(metadata_part(), audio_part(TRICKY_AUDIO * 50)))
    reply = multipart_reply(body, chunks=[999])
    reply.headers = [*reply.headers, ("Content-Encoding", "gzip")]
    server.reply(reply)
    assert_success(await fetch(server, tmp_path), TRICKY_AUDIO * 50)


async def test_large_audio_with_throttled_progress(server: RawServer, tmp_path: Path) -> None:
    audio = bytes(range(256)) * (3 * 4096 + 7)  # ~3 MiB
    body = multipart_body(metadata_part(), audio_part(audio))
    server.reply(multipart_reply(body, chunks=[65536 + 3]))
    run = await fetch(server, tmp_path)
    assert_success(run, audio)
    received = [done for done, _ in run.progress]
    assert received == sorted(received)
    assert run.progress[-1] == (len(body), len(body))
    assert 3 <= len(run.progress) <= 6  # first chunk, about every MiB, the end: not every network read
    assert all(total == len(body) for _, total in run.progress)


# --- malformed multipart ----------------------------------------------------------------------------


def bad(run: Run, *fragments: str) -> UpstreamBadResponse:
    """Malformed: the plain class, not retried (the same request would get the same answer)."""
    exc = failed(run, UpstreamBadResponse, "upstream_bad_response")
    assert isinstance(exc, UpstreamBadResponse) and not isinstance(exc, UpstreamTruncated), repr(exc)
    assert exc.retryable is False
    assert "HTTP 200" in exc.message
    for fragment in fragments:
        assert fragment in exc.message
    return exc


def truncated(run: Run, *fragments: str) -> UpstreamTruncated:
    """Cut off: same code as a malformed answer, but retried."""
    exc = failed(run, UpstreamTruncated, "upstream_bad_response")
    assert isinstance(exc, UpstreamTruncated) and isinstance(exc, UpstreamBadResponse)
    assert exc.retryable is True
    assert "HTTP 200" in exc.message
    for fragment in fragments:
        assert fragment in exc.message
    assert run.result is None
    return exc


async def test_truncated_mid_audio_with_content_length(server: RawServer, tmp_path: Path) -> None:
    body = multipart_body(metadata_part(), audio_part(TRICKY_AUDIO))
    server.reply(multipart_reply(body, cut_after=len(body) - 600))
    run = await fetch(server, tmp_path)
    truncated(run, "broke off", f"of {len(body):,} bytes")


async def test_complete_multipart_short_of_its_content_length_is_truncated(
    server: RawServer, tmp_path: Path
) -> None:
    """Every part and the closing boundary arrived, but not every announced byte."""
    body = multipart_body(metadata_part(), audio_part(TRICKY_AUDIO), epilogue=b"x" * 100)
    server.reply(multipart_reply(body, cut_after=len(body) - 50))
    truncated(await fetch(server, tmp_path), "broke off", f"of {len(body):,} bytes")


async def test_truncated_mid_audio_without_content_length(server: RawServer, tmp_path: Path) -> None:
    body = multipart_body(metadata_part(), audio_part(TRICKY_AUDIO))
    server.reply(multipart_reply(body, content_length=False, cut_after=len(body) - 600))
    truncated(await fetch(server, tmp_path), "closing multipart boundary", "truncated")


async def test_truncated_gzip_body_is_truncated_not_undecodable(server: RawServer, tmp_path: Path) -> None:
    """A cut gzip stream just ends early (zlib does not complain): the multipart check catches it."""
    good = gzip.compress(multipart_body(metadata_part(), audio_part(TRICKY_AUDIO * 50)))
    reply = multipart_reply(good, content_length=False, cut_after=len(good) * 2 // 3)
    reply.headers = [*reply.headers, ("Content-Encoding", "gzip")]
    server.reply(reply)
    truncated(await fetch(server, tmp_path), "closing multipart boundary")


async def test_truncated_before_the_final_boundary_dashes(server: RawServer, tmp_path: Path) -> None:
    body = multipart_body(metadata_part(), audio_part(TRICKY_AUDIO), close=False) + b"\r\n--BOUNDARY"
    server.reply(multipart_reply(body, content_length=False))
    truncated(await fetch(server, tmp_path), "truncated")


async def test_truncated_mid_part_headers(server: RawServer, tmp_path: Path) -> None:
    body = multipart_body(metadata_part(), close=False) + b"\r\n--BOUNDARY\r\nContent-Disposition: form-da"
    server.reply(multipart_reply(body, content_length=False))
    run = await fetch(server, tmp_path)
    truncated(run, "truncated")
    assert run.sink.data == b""


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"--BOUND",
        b"--BOUNDARY\r\nContent-Disposition: form-da",
        b"preamble\r\n--BOUNDARY\r\nContent-Type: applica",
    ],
    ids=["empty", "mid-delimiter", "mid-first-headers", "after-preamble"],
)
async def test_truncated_before_the_first_part_began(server: RawServer, tmp_path: Path, body: bytes) -> None:
    """What arrived is the start of a multipart body, so no part yet is a cut, not a malformed answer."""
    server.reply(multipart_reply(body, content_length=False))
    run = await fetch(server, tmp_path)
    truncated(run, "closing multipart boundary")
    assert run.sink.data == b""


@pytest.mark.parametrize("error", [httpx.ReadError, httpx.RemoteProtocolError])
async def test_connection_errors_mid_body_are_truncations(
    tmp_path: Path, error: type[httpx.HTTPError]
) -> None:
    """Both ways httpx reports a dropped connection while the body streams."""
    body = multipart_body(metadata_part(), audio_part(TRICKY_AUDIO))

    class Breaking(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield body[:500]
            raise error("connection reset by peer")

    def handler(request: httpx.Request) -> httpx.Response:
        headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
        return httpx.Response(200, headers=headers, stream=Breaking())

    settings = make_settings("https://ct-e1.invalid", tmp_path)
    async with CallAudioClient(settings, transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(UpstreamTruncated) as caught:
            await client.fetch(KEY, Sink())
    exc = caught.value
    assert (exc.code, exc.retryable) == ("upstream_bad_response", True)
    assert isinstance(exc, UpstreamBadResponse)
    assert "broke off after 500 bytes (connection reset by peer)" in exc.message
    assert "ct-e1.invalid" not in exc.render()


async def test_truncated_response_head(server: RawServer, tmp_path: Path) -> None:
    """Before any body: CT-e1 failed, not the body (retried as unavailable)."""
    server.reply(multipart_reply(b"", cut_head=True))
    exc = failed(await fetch(server, tmp_path), UpstreamUnavailable, "upstream_unavailable")
    assert exc.retryable is True
    assert "The connection to CT-e1 failed" in exc.message


async def test_missing_audio_part(server: RawServer, tmp_path: Path) -> None:
    server.reply(multipart_reply(multipart_body(metadata_part())))
    bad(await fetch(server, tmp_path), "no audio part")


async def test_missing_metadata_part(server: RawServer, tmp_path: Path) -> None:
    server.reply(multipart_reply(multipart_body(audio_part(TRICKY_AUDIO))))
    run = await fetch(server, tmp_path)
    bad(run, "audio part comes before the metadata")
    assert run.sink.data == b""


async def test_audio_before_metadata(server: RawServer, tmp_path: Path) -> None:
    server.reply(multipart_reply(multipart_body(audio_part(TRICKY_AUDIO), metadata_part())))
    bad(await fetch(server, tmp_path), "before the metadata")


async def test_empty_audio_part(server: RawServer, tmp_path: Path) -> None:
    server.reply(multipart_reply(multipart_body(metadata_part(), audio_part(b""))))
    bad(await fetch(server, tmp_path), "audio part is empty")


async def test_two_audio_parts_are_ambiguous(server: RawServer, tmp_path: Path) -> None:
    body = multipart_body(metadata_part(), audio_part(b"left"), audio_part(b"right"))
    server.reply(multipart_reply(body))
    bad(await fetch(server, tmp_path), "more than one audio part")


@pytest.mark.parametrize(
    ("metadata", "fragment"),
    [
        (b"<xml>not json</xml>", "not JSON"),
        (b'{"status": "complete", "tenantId": "05053698341"', "not JSON"),
        (b'["complete"]', "not an object"),
        (b'{"status": "complete", "tenantId": "05053698341", "sessionId": "x", "recordId": 1}', "sessionId"),
        (b'{"tenantId": "05053698341", "sessionId": 942125, "recordId": 1}', "status"),
        (
            b'{"status": "complete", "tenantId": "05053698341", "sessionId": 942125, "recordId": 1, '
            b'"connectTime": "2023-01-04 11:22:33"}',
            "connectTime",
        ),
    ],
)
async def test_metadata_that_is_not_the_documented_json(
    server: RawServer, tmp_path: Path, metadata: bytes, fragment: str
) -> None:
    meta = part(metadata, 'Content-Disposition: form-data; name="metadata"', "Content-Type: application/json")
    server.reply(multipart_reply(multipart_body(meta, audio_part(TRICKY_AUDIO))))
    run = await fetch(server, tmp_path)
    bad(run, fragment)
    assert run.sink.data == b""


async def test_metadata_of_another_call_is_refused(server: RawServer, tmp_path: Path) -> None:
    body = multipart_body(metadata_part(METADATA | {"sessionId": 942126}), audio_part(TRICKY_AUDIO))
    server.reply(multipart_reply(body))
    run = await fetch(server, tmp_path)
    bad(run, "05053698341/942126/1", "instead of 05053698341/942125/1")
    assert run.sink.data == b""


async def test_oversized_metadata_part(server: RawServer, tmp_path: Path) -> None:
    huge = METADATA | {"padding": "x" * (1024 * 1024)}
    server.reply(multipart_reply(multipart_body(metadata_part(huge), audio_part(TRICKY_AUDIO))))
    bad(await fetch(server, tmp_path), "metadata part is larger")


async def test_boundary_inside_the_audio_is_malformed(server: RawServer, tmp_path: Path) -> None:
    audio = b"abc\r\n--BOUNDARYxyz"
    server.reply(multipart_reply(multipart_body(metadata_part(), audio_part(audio))))
    bad(await fetch(server, tmp_path), "malformed")


async def test_base64_transfer_encoding_is_refused_not_stored_encoded(
    server: RawServer, tmp_path: Path
) -> None:
    audio = part(b"UklGRg==", "Content-Type: audio/wav", "Content-Transfer-Encoding: base64")
    server.reply(multipart_reply(multipart_body(metadata_part(), audio), subtype="mixed"))
    bad(await fetch(server, tmp_path), "base64")


async def test_multipart_without_boundary(server: RawServer, tmp_path: Path) -> None:
    server.reply(Reply(headers=[("Content-Type", "multipart/form-data")], body=b"--x\r\n"))
    bad(await fetch(server, tmp_path), "no boundary")


async def test_oversized_part_header_line(server: RawServer, tmp_path: Path) -> None:
    header = "X-Long: " + "a" * 20000
    body = multipart_body(part(json.dumps(METADATA).encode(), header), audio_part(b"x"))
    server.reply(multipart_reply(body))
    bad(await fetch(server, tmp_path), "malformed")


async def test_endless_epilogue_is_cut_off(server: RawServer, tmp_path: Path) -> None:
    body = multipart_body(metadata_part(), audio_part(b"x" * 1000), epilogue=b"z" * (3 * 1024 * 1024))
    server.reply(multipart_reply(body, content_length=False))
    bad(await fetch(server, tmp_path, max_audio_bytes=1000), "outside the audio part")


# --- call in progress, too large ----------------------------------------------------------------------


async def test_call_in_progress_writes_no_audio_and_stops_reading(server: RawServer, tmp_path: Path) -> None:
    audio = b"\x55" * (32 * 1024 * 1024)
    body = multipart_body(metadata_part(METADATA | {"status": "connected"}), audio_part(audio))
    server.reply(multipart_reply(body, chunks=[256 * 1024], pause=0.001))
    run = await fetch(server, tmp_path)
    exc = failed(run, CallInProgress, "call_in_progress")
    assert "'connected'" in exc.message and "05053698341/942125/1" in exc.message
    assert run.sink.data == b""
    await asyncio.wait_for(server.served[0].done.wait(), 5)
    assert not server.served[0].completed
    assert server.served[0].body_bytes_sent < len(body) // 2


async def test_audio_too_large_stops_at_the_limit(server: RawServer, tmp_path: Path) -> None:
    limit = 100_000
    audio = b"\x01" * (16 * 1024 * 1024)
    body = multipart_body(metadata_part(), audio_part(audio))
    server.reply(multipart_reply(body, content_length=False, chunks=[16 * 1024], pause=0.0005))
    run = await fetch(server, tmp_path, max_audio_bytes=limit)
    exc = failed(run, AudioTooLarge, "audio_too_large")
    assert f"{limit:,}" in exc.message
    assert limit - 65536 <= len(run.sink.data) <= limit
    await asyncio.wait_for(server.served[0].done.wait(), 5)
    assert not server.served[0].completed


async def test_audio_exactly_at_the_limit_is_fine(server: RawServer, tmp_path: Path) -> None:
    server.reply(multipart_reply(multipart_body(metadata_part(), audio_part(TRICKY_AUDIO))))
    assert_success(await fetch(server, tmp_path, max_audio_bytes=len(TRICKY_AUDIO)), TRICKY_AUDIO)


async def test_announced_content_length_over_the_limit_fails_before_reading(
    server: RawServer, tmp_path: Path
) -> None:
    audio = b"\x01" * (4 * 1024 * 1024)
    server.reply(multipart_reply(multipart_body(metadata_part(), audio_part(audio))))
    run = await fetch(server, tmp_path, max_audio_bytes=1024)
    exc = failed(run, AudioTooLarge, "audio_too_large")
    assert "announced" in exc.message
    assert run.sink.data == b""


# --- HTTP 200 without a recording (the documented "200 失敗") --------------------------------------------


async def test_200_json_failure_keeps_the_japanese_description_verbatim(
    server: RawServer, tmp_path: Path
) -> None:
    description = "31日以上前の音声データを要求しています"
    body = json.dumps(
        {"status": "error", "description": description, "errorCode": "E4004"}, ensure_ascii=False
    )
    server.reply(Reply(headers=[("Content-Type", "application/json; charset=utf-8")], body=body.encode()))
    exc = failed(await fetch(server, tmp_path), UpstreamRejected, "upstream_rejected")
    assert exc.platform_message == description
    assert exc.message == 'CT-e1 answered without a recording (HTTP 200; status "error"; code "E4004").'
    assert f"Platform said: {description}" in exc.render()


async def test_200_json_with_message_and_nested_error(server: RawServer, tmp_path: Path) -> None:
    body = {"error": {"code": 17, "message": "tenant mismatch"}, "message": "request failed"}
    server.reply(Reply(headers=[("Content-Type", "application/json")], body=json.dumps(body).encode()))
    exc = failed(await fetch(server, tmp_path), UpstreamRejected, "upstream_rejected")
    assert exc.platform_message == "request failed"
    assert "code 17" in exc.message


async def test_200_json_without_any_message_field_is_quoted_whole(server: RawServer, tmp_path: Path) -> None:
    server.reply(Reply(headers=[("Content-Type", "application/json")], body=b'{"result": false, "id": 3}'))
    exc = failed(await fetch(server, tmp_path), UpstreamRejected, "upstream_rejected")
    assert exc.platform_message == '{"result": false, "id": 3}'


async def test_200_plain_text_is_the_platforms_words(server: RawServer, tmp_path: Path) -> None:
    server.reply(Reply(headers=[("Content-Type", "text/plain")], body="  通話が見つかりません\n".encode()))
    exc = failed(await fetch(server, tmp_path), UpstreamRejected, "upstream_rejected")
    assert exc.platform_message == "通話が見つかりません"
    assert "HTTP 200; text/plain" in exc.message


async def test_200_html_from_a_proxy_is_summarised(server: RawServer, tmp_path: Path) -> None:
    page = (
        "<!DOCTYPE html><html><head><title>Service   Unavailable</title><style>body{color:red}</style>"
        "<script>var x = '<b>';</script></head><body>\n\n<h1>Maintenance &amp; upgrade</h1>"
        + "<p>lorem ipsum</p>" * 100
        + "</body></html>"
    )
    server.reply(Reply(headers=[("Content-Type", "text/html; charset=utf-8")], body=page.encode()))
    exc = failed(await fetch(server, tmp_path), UpstreamRejected, "upstream_rejected")
    assert exc.platform_message is None
    assert "HTTP 200; text/html: “Service Unavailable Maintenance & upgrade lorem ipsum" in exc.message
    assert "<" not in exc.message and "color:red" not in exc.message and "var x" not in exc.message
    assert len(exc.message) < 300


@pytest.mark.parametrize("content_type", [None, "application/json"])
async def test_200_empty_body(server: RawServer, tmp_path: Path, content_type: str | None) -> None:
    headers = [("Content-Type", content_type)] if content_type else []
    server.reply(Reply(headers=headers, body=b""))
    exc = failed(await fetch(server, tmp_path), UpstreamRejected, "upstream_rejected")
    assert exc.message.endswith(f"(HTTP 200; empty {content_type + ' ' if content_type else ''}body).")


async def test_200_labelled_multipart_but_no_part_inside(server: RawServer, tmp_path: Path) -> None:
    server.reply(multipart_reply(b"<html>Gateway error</html>"))
    bad(await fetch(server, tmp_path), "no part delimited by the announced boundary")


async def test_200_labelled_multipart_but_json_inside(server: RawServer, tmp_path: Path) -> None:
    description = "存在しないリクエストパラメータです"
    body = json.dumps({"status": "error", "description": description}, ensure_ascii=False)
    server.reply(multipart_reply(body.encode()))
    exc = failed(await fetch(server, tmp_path), UpstreamRejected, "upstream_rejected")
    assert exc.platform_message == description


@pytest.mark.parametrize(
    "description",
    ["未完了の通話に対する取得要求です", "The call is still in progress", "通話がまだ終了していません"],
)
async def test_200_failure_for_an_unfinished_call_is_call_in_progress(
    server: RawServer, tmp_path: Path, description: str
) -> None:
    raw = json.dumps({"status": "error", "description": description}, ensure_ascii=False).encode()
    server.reply(Reply(headers=[("Content-Type", "application/json")], body=raw))
    exc = failed(await fetch(server, tmp_path), CallInProgress, "call_in_progress")
    assert exc.platform_message == description
    assert "HTTP 200" in exc.message


@pytest.mark.parametrize(
    "body",
    [
        {"status": "error", "description": "リクエストが多すぎます。リクエスト間隔は5秒以上としてください"},
        {"status": "error", "description": "Too Many Requests"},
        {"status": 429, "description": "slow down"},
        {"status": "error", "errorCode": "RATE_LIMIT_EXCEEDED", "message": "x"},
    ],
)
async def test_200_rate_limit_wording_is_retryable(
    server: RawServer, tmp_path: Path, body: dict[str, Any]
) -> None:
    raw = json.dumps(body, ensure_ascii=False).encode()
    server.reply(Reply(headers=[("Content-Type", "application/json"), ("Retry-After", "6")], body=raw))
    exc = failed(await fetch(server, tmp_path), RateLimited, "rate_limited")
    assert exc.retryable is True
    assert exc.retry_after_seconds == 6
    assert "HTTP 200" in exc.message


async def test_200_rate_limit_without_retry_after_invents_none(server: RawServer, tmp_path: Path) -> None:
    raw = json.dumps({"status": "error", "description": "Too Many Requests"}).encode()
    server.reply(Reply(headers=[("Content-Type", "application/json")], body=raw))
    exc = failed(await fetch(server, tmp_path), RateLimited, "rate_limited")
    assert exc.retryable is True
    assert exc.retry_after_seconds is None


async def test_200_rate_limit_labelled_multipart_keeps_retry_after(server: RawServer, tmp_path: Path) -> None:
    """A "200 失敗" JSON sent under a multipart label is still a rate limit with its Retry-After."""
    reply = multipart_reply(json.dumps({"status": 429, "description": "slow down"}).encode())
    reply.headers = [*reply.headers, ("Retry-After", "9")]
    server.reply(reply)
    exc = failed(await fetch(server, tmp_path), RateLimited, "rate_limited")
    assert (exc.retryable, exc.retry_after_seconds) == (True, 9)


@pytest.mark.parametrize(
    "description",
    [
        "存在しないリクエストパラメータです (no such call: sessionId=429)",
        "31日以上前の音声データの取得は制限されています",
        "許可されていないテナントの情報要求です",
    ],
)
async def test_200_failures_that_merely_mention_numbers_or_limits_are_not_rate_limits(
    server: RawServer, tmp_path: Path, description: str
) -> None:
    raw = json.dumps({"status": "error", "description": description}, ensure_ascii=False).encode()
    server.reply(Reply(headers=[("Content-Type", "application/json")], body=raw))
    exc = failed(await fetch(server, tmp_path), UpstreamRejected, "upstream_rejected")
    assert exc.platform_message == description


async def test_only_a_bounded_part_of_a_failure_body_is_read(server: RawServer, tmp_path: Path) -> None:
    body = b"E" * (8 * 1024 * 1024)
    server.reply(Reply(headers=[("Content-Type", "text/plain")], body=body, chunks=[65536], pause=0.001))
    exc = failed(await fetch(server, tmp_path), UpstreamRejected, "upstream_rejected")
    assert exc.platform_message is not None and len(exc.platform_message) <= 1001
    await asyncio.wait_for(server.served[0].done.wait(), 5)
    assert not server.served[0].completed


async def test_a_platform_echoing_the_key_has_it_redacted(server: RawServer, tmp_path: Path) -> None:
    raw = json.dumps({"status": "error", "description": f"invalid Authorization: Bearer {API_KEY}"}).encode()
    server.reply(Reply(status=200, headers=[("Content-Type", "application/json")], body=raw))
    exc = failed(await fetch(server, tmp_path), UpstreamRejected, "upstream_rejected")
    assert exc.platform_message == "invalid Authorization: [redacted]"


# --- HTTP statuses ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (401, UpstreamAuthFailed, "upstream_auth_failed"),
        (402, UpstreamAuthFailed, "upstream_auth_failed"),
        (403, UpstreamAuthFailed, "upstream_auth_failed"),
        (404, UpstreamIpNotAllowed, "upstream_ip_not_allowed"),
        (429, RateLimited, "rate_limited"),
        (500, UpstreamUnavailable, "upstream_unavailable"),
        (502, UpstreamUnavailable, "upstream_unavailable"),
        (503, UpstreamUnavailable, "upstream_unavailable"),
        (400, UpstreamRejected, "upstream_rejected"),
        (405, UpstreamRejected, "upstream_rejected"),
        (422, UpstreamRejected, "upstream_rejected"),
    ],
)
async def test_http_status_classification(
    server: RawServer, tmp_path: Path, status: int, kind: type[Cte1Error], code: str
) -> None:
    raw = json.dumps({"status": "error", "description": f"説明 {status}"}, ensure_ascii=False).encode()
    server.reply(Reply(status=status, headers=[("Content-Type", "application/json")], body=raw))
    exc = failed(await fetch(server, tmp_path), kind, code)
    assert f"HTTP {status}" in exc.message
    assert exc.platform_message == f"説明 {status}"


async def test_429_retry_after_seconds(server: RawServer, tmp_path: Path) -> None:
    server.reply(Reply(status=429, headers=[("Retry-After", "7")], body=b"Too Many Requests"))
    exc = failed(await fetch(server, tmp_path), RateLimited, "rate_limited")
    assert exc.retry_after_seconds == 7
    assert "Retry after 7 s." in exc.render()


@pytest.mark.parametrize("headers", [[], [("Retry-After", "soon")]], ids=["absent", "unreadable"])
async def test_429_without_a_usable_retry_after_invents_none(
    server: RawServer, tmp_path: Path, headers: list[tuple[str, str]]
) -> None:
    """The service spaces the retry itself; the client must not make up a wait."""
    server.reply(Reply(status=429, headers=headers, body=b"Too Many Requests"))
    exc = failed(await fetch(server, tmp_path), RateLimited, "rate_limited")
    assert exc.retryable is True
    assert exc.retry_after_seconds is None
    assert "Retry after" not in exc.render()


async def test_429_retry_after_http_date(server: RawServer, tmp_path: Path) -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    server.reply(Reply(status=429, headers=[("Retry-After", format_datetime(when, usegmt=True))]))
    exc = failed(await fetch(server, tmp_path), RateLimited, "rate_limited")
    assert exc.retry_after_seconds is not None and 25 <= exc.retry_after_seconds <= 31


async def test_503_with_retry_after_and_html(server: RawServer, tmp_path: Path) -> None:
    page = b"<html><body><h1>503 Service Temporarily Unavailable</h1><hr>nginx</body></html>"
    server.reply(
        Reply(status=503, headers=[("Content-Type", "text/html"), ("Retry-After", "120")], body=page)
    )
    exc = failed(await fetch(server, tmp_path), UpstreamUnavailable, "upstream_unavailable")
    assert exc.retry_after_seconds == 120
    assert "HTTP 503; text/html: “503 Service Temporarily Unavailable nginx”" in exc.message


async def test_redirect_is_not_followed(
    server: RawServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    location = f"https://ct-e1.example/general?key={API_KEY}"
    page = b"<html><body><p>Moved to <a href='x'>ct-e1.example</a></p><address>Server at 127.0.0.1</address>"
    server.reply(
        Reply(status=301, headers=[("Location", location), ("Content-Type", "text/html")], body=page)
    )
    with caplog.at_level(logging.WARNING, logger="cte1_mcp.upstream"):
        exc = failed(await fetch(server, tmp_path), UpstreamRejected, "upstream_rejected")
    assert "HTTP 301" in exc.message and "redirects are not followed" in exc.message
    assert "CTE1_BASE_URL" in exc.render() and "log" in exc.render()
    rendered = exc.render()
    assert HOST not in rendered and "ct-e1.example" not in rendered and "https://" not in exc.message
    assert exc.retryable is False
    assert len(server.requests) == 1
    # The operator still learns where it pointed, from the log, without the key.
    log = logged_warnings(caplog)
    assert "https://ct-e1.example/general?key=[redacted]" in log and HOST in log


async def test_unexpected_status_is_a_plain_bad_response(tmp_path: Path) -> None:
    """A final 1xx (h11 never hands one over from a socket, so a transport does)."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(199, text="?")

    settings = make_settings("https://ct-e1.invalid", tmp_path)
    async with CallAudioClient(settings, transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(UpstreamBadResponse) as caught:
            await client.fetch(KEY, Sink())
    exc = caught.value
    assert not isinstance(exc, UpstreamTruncated)
    assert (exc.code, exc.retryable) == ("upstream_bad_response", False)
    assert "unexpected status (HTTP 199" in exc.message


async def test_a_proxy_page_naming_the_host_has_it_hidden(server: RawServer, tmp_path: Path) -> None:
    """Apache's error pages end "Server at <host> Port 443"; the host must not reach the client."""
    page = b"<html><body><h1>Bad Gateway</h1><address>Apache Server at 127.0.0.1 Port 443</address></body></html>"
    server.reply(Reply(status=502, headers=[("Content-Type", "text/html")], body=page))
    exc = failed(await fetch(server, tmp_path), UpstreamUnavailable, "upstream_unavailable")
    assert "Apache Server at [CT-e1 host] Port 443" in exc.message


async def test_host_hiding_matches_whole_host_names_only(tmp_path: Path) -> None:
    words = "ct-e1.invalid: down; CT-E1.INVALID:443 too; not api.ct-e1.invalid.net nor my-ct-e1.invalid"

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503, text=words)

    settings = make_settings("https://ct-e1.invalid", tmp_path)
    async with CallAudioClient(settings, transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(UpstreamUnavailable) as caught:
            await client.fetch(KEY, Sink())
    assert caught.value.platform_message == (
        "[CT-e1 host]: down; [CT-e1 host]:443 too; not api.ct-e1.invalid.net nor my-ct-e1.invalid"
    )


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("5", 5.0),
        (" 0 ", 0.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        ("soon", None),
        ("", None),
        (None, None),
        ("nan", None),
    ],
)
def test_retry_after_parsing(value: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value) == seconds


def test_retry_after_dates_in_the_past_mean_now() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert retry_after_seconds("Wed, 31 Dec 2025 23:59:00 GMT", now=now) == 0.0
    assert retry_after_seconds("Thu, 01 Jan 2026 00:01:00 GMT", now=now) == 60.0


# --- transport failures --------------------------------------------------------------------------------


async def test_connection_refused(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    with caplog.at_level(logging.WARNING, logger="cte1_mcp.upstream"):
        async with CallAudioClient(make_settings(f"http://{HOST}:{port}", tmp_path)) as client:
            with pytest.raises(UpstreamUnavailable) as caught:
                await client.fetch(KEY, Sink())
    exc = caught.value
    assert (exc.code, exc.retryable) == ("upstream_unavailable", True)
    assert exc.message.startswith("Could not connect to CT-e1: ")
    assert HOST not in exc.render() and str(port) not in exc.render()
    assert API_KEY not in exc.render()
    assert f"could not connect to CT-e1 at {HOST}" in logged_warnings(caplog)


async def test_read_timeout_before_the_answer(
    server: RawServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server.reply(Reply(status=200, delay=1.0))
    with caplog.at_level(logging.WARNING, logger="cte1_mcp.upstream"):
        exc = failed(
            await fetch(server, tmp_path, timeout_seconds=0.2), UpstreamUnavailable, "upstream_unavailable"
        )
    assert exc.message == "CT-e1 did not answer in time (read timeout, 0.2 s)."
    assert HOST not in exc.render()
    assert f"CT-e1 at {HOST} did not answer in time (read timeout, 0.2 s)" in logged_warnings(caplog)


async def test_read_timeout_mid_audio(server: RawServer, tmp_path: Path) -> None:
    body = multipart_body(metadata_part(), audio_part(b"\x00" * 4096))
    server.reply(multipart_reply(body, chunks=[len(body) - 100, 100], pause=1.0))
    run = await fetch(server, tmp_path, timeout_seconds=0.2)
    exc = failed(run, UpstreamUnavailable, "upstream_unavailable")
    assert "timeout" in exc.message


async def test_corrupt_gzip_is_a_bad_response(server: RawServer, tmp_path: Path) -> None:
    good = gzip.compress(multipart_body(metadata_part(), audio_part(TRICKY_AUDIO)))
    reply = multipart_reply(good[:20] + b"\x00garbage" * 50)
    reply.headers = [*reply.headers, ("Content-Encoding", "gzip")]
    server.reply(reply)
    exc = failed(await fetch(server, tmp_path), UpstreamBadResponse, "upstream_bad_response")
    assert not isinstance(exc, UpstreamTruncated) and exc.retryable is False
    assert "could not be decoded" in exc.message


async def test_connect_timeout(tmp_path: Path) -> None:
    """A corner a loopback server cannot produce reliably, so a transport raises it."""

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    settings = make_settings("https://ct-e1.invalid", tmp_path, timeout_seconds=3)
    async with CallAudioClient(settings, transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(UpstreamUnavailable) as caught:
            await client.fetch(KEY, Sink())
    assert caught.value.message == "CT-e1 did not answer in time (connect timeout, 3 s)."
    assert "ct-e1.invalid" not in caught.value.render()


# --- the body reader alone, split at every byte ---------------------------------------------------------


async def _read_split(
    body: bytes, pieces: list[bytes], boundary: str = BOUNDARY
) -> tuple[CallMetadata, bytes]:
    sink = Sink()
    seen: list[CallMetadata] = []
    reader = RecordingPartsReader(boundary, sink.write, seen.append, max_audio_bytes=1 << 20, status=200)
    for piece in pieces:
        await reader.feed(piece)
    metadata = reader.finish()
    assert seen == [metadata]
    assert reader.audio_bytes == len(sink.data)
    return metadata, bytes(sink.data)


@pytest.mark.parametrize("named", [True, False])
async def test_every_split_point_and_byte_by_byte(named: bool) -> None:
    """Deterministic chunk edges: a loopback socket may coalesce small writes, this cannot."""
    body = multipart_body(
        metadata_part(named=named),
        audio_part(TRICKY_AUDIO[:200], named=named),
        preamble=b"pre",
        epilogue=b"post",
    )
    expected = TRICKY_AUDIO[:200]
    for cut in range(len(body) + 1):
        metadata, audio = await _read_split(body, [body[:cut], body[cut:]] if 0 < cut < len(body) else [body])
        assert audio == expected, cut
        assert metadata.platform_json() == METADATA
    _, audio = await _read_split(body, [body[i : i + 1] for i in range(len(body))])
    assert audio == expected
