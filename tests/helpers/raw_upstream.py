"""An adversarial raw HTTP server on loopback, and the client's side of a test against it (or
against the simulator).

The server writes exactly the bytes a test chooses, in the chunk sizes it chooses, and records
the request it received; the client (``AudioDataEndpoint``) runs unchanged over a real socket.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import struct
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from cte1_mcp.cte1.audio_data import AudioDataEndpoint, FetchedCall
from cte1_mcp.errors import Cte1Error
from cte1_mcp.models import CallKey
from cte1_mcp.settings import Settings
from cte1_mcp.simulator import RunningSimulator, find_call
from cte1_mcp.simulator.wav import iter_wav

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
    #: With ``cut_after``: reset the connection (RST) instead of closing it.
    reset: bool = False
    #: After ``cut_after`` bytes, keep the connection open and send nothing more (a stalled upstream).
    stall: bool = False
    #: Seconds to wait before the status line, and between body pieces.
    delay: float = 0.0
    pause: float = 0.0
    #: Drop the connection before the response's head has been sent completely.
    cut_head: bool = False
    #: Raw bytes sent instead of an HTTP response (say, a TLS alert, or a hand-made response),
    #: in ``chunks`` pieces ``pause`` seconds apart.
    raw: bytes | None = None


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
    #: Set when the client closed the connection (or it broke) while the reply was being sent.
    client_gone: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)


class RawServer:
    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[Captured] = []
        self.served: list[Served] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def reply(self, reply: Reply) -> RawServer:
        self.replies.append(reply)
        return self

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, HOST, 0)

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
            served.client_gone = True  # the client hung up: exactly what some tests want
        finally:
            writer.close()
            served.done.set()
            self._handlers.discard(task)

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, served: Served
    ) -> None:
        reply = self.replies.popleft()
        if reply.raw is not None:
            for piece in pieces(reply.raw, reply.chunks):
                writer.write(piece)
                await writer.drain()
                await asyncio.sleep(reply.pause)
            await reader.read(65536)
            return
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {
            name.strip().lower(): value.strip() for name, _, value in (x.partition(":") for x in lines if x)
        }
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        method, target, _ = request_line.split(" ")
        self.requests.append(Captured(method, target, headers, body))
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
        for piece in pieces(body_out, reply.chunks):
            writer.write(piece)
            await writer.drain()
            served.body_bytes_sent += len(piece)
            await asyncio.sleep(reply.pause)
        served.completed = reply.cut_after is None
        if reply.stall:
            # Nothing more, until the client goes away (reading returns b"" once it shut down).
            await writer.drain()
            await reader.read(1)
            served.client_gone = True
        elif reply.reset:
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def pieces(data: bytes, sizes: Sequence[int] | None) -> list[bytes]:
    if not sizes:
        return [data]
    out, pos, i = [], 0, 0
    while pos < len(data):
        size = sizes[i % len(sizes)]
        out.append(data[pos : pos + size])
        pos, i = pos + size, i + 1
    return out


@asynccontextmanager
async def raw_server() -> AsyncIterator[RawServer]:
    """A started server (for a test module's ``server`` fixture), stopped on exit."""
    raw = RawServer()
    await raw.start()
    try:
        yield raw
    finally:
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


def simulator_settings(simulator: RunningSimulator, tmp_path: Path, **overrides: Any) -> Settings:
    """Settings pointing at ``simulator`` (its key and source UUID), without spacing."""
    options: dict[str, Any] = {
        "source_uuid": simulator.config.source_uuid,
        "api_key": simulator.config.api_key,
        "timeout_seconds": 10,
    }
    return make_settings(simulator.url, tmp_path, **(options | overrides))


def expected_recording(key: CallKey) -> tuple[str, int]:
    """The sha256 and size of the WAV file the simulator serves for ``key``."""
    call = find_call(key.tenant_id, key.session_id, key.record_id)
    assert call is not None
    digest, size = hashlib.sha256(), 0
    for chunk in iter_wav(call.wav_spec()):
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


class Sink:
    """What the repository's staging does for the endpoint: takes the audio in the worker thread."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.writes = 0

    def write_blocking(self, chunk: bytes) -> None:
        self.data += chunk
        self.writes += 1


@dataclass
class Run:
    sink: Sink
    result: FetchedCall | None = None
    error: Cte1Error | None = None
    progress: list[tuple[int, int | None]] = field(default_factory=list)


async def fetch_from(settings: Settings, key: CallKey = KEY) -> Run:
    run = Run(Sink())

    async def progress(received: int, total: int | None) -> None:
        run.progress.append((received, total))

    async with AudioDataEndpoint(settings) as endpoint:
        try:
            run.result = await endpoint.fetch(key, run.sink, on_progress=progress)
        except Cte1Error as exc:
            run.error = exc
    return run


async def fetch(server: RawServer, tmp_path: Path, key: CallKey = KEY, **settings: Any) -> Run:
    return await fetch_from(make_settings(server.url, tmp_path, **settings), key)


def failed(run: Run, kind: type[E], code: str) -> E:
    """The failure, checked for its class and code, and for the key and the host being nowhere in it."""
    assert run.result is None, "expected a failure"
    exc = run.error
    assert isinstance(exc, kind), repr(exc)
    assert exc.code == code
    for text in (str(exc), exc.render(), exc.message, exc.platform_message or ""):
        assert API_KEY not in text.lower()
        assert HOST not in text
        assert "Traceback" not in text
    return exc


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


def raw_metadata_part(raw: bytes) -> bytes:
    return part(raw, 'Content-Disposition: form-data; name="metadata"', "Content-Type: application/json")


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
