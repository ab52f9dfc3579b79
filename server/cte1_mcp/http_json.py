"""Answer a Streamable HTTP request as plain JSON when nothing needed a stream.

The SDK's handshake-era transport (clients on 2025-11-25 and older) answers every POST as an SSE
stream, and the SDK's own client refuses one event over 1 MiB (``max_sse_event_size``), so a
recording over ~786 KB (base64) never reached it. The transport's ``json_response`` option is
all-or-nothing per server and drops progress notifications, so it is not used. Instead this
wrapper does per request what the SDK already does for 2026-07-28 clients
(``_streamable_http_modern``): the response head is held back until the first event; if that
event is the request's own answer, it goes out as ``application/json`` with a Content-Length;
if it is anything else (a progress notification, a keep-alive ping after 15 s, a request to the
client), the held head and everything after it go out as the SSE stream they were. Both forms are
what the protocol allows for a client that accepts both (it must).
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_SSE = b"text/event-stream"
#: Headers of the SSE head that do not describe a JSON body.
_STREAM_ONLY = {b"content-type", b"content-length", b"cache-control", b"connection", b"x-accel-buffering"}


class PlainJsonAnswers:
    """ASGI wrapper of the SDK's Streamable HTTP app; only POSTs to ``path`` are looked at."""

    def __init__(self, app: ASGIApp, path: str) -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != self.path:
            await self.app(scope, receive, send)
            return
        deferred = _DeferredHead(send)
        await self.app(scope, receive, deferred.send)
        await deferred.finish()


class _DeferredHead:
    """One response: passed through, held until its first event, or answered as JSON."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._held: Message | None = None
        self._state = "deciding"  # then "stream" (pass everything) or "answered" (drop the rest)

    async def send(self, message: Message) -> None:
        if self._state == "stream":
            await self._send(message)
        elif self._state == "answered":
            return  # the SSE response's closing chunk and pings: its answer already went out
        elif message["type"] == "http.response.start" and _content_type(message).startswith(_SSE):
            self._held = message
        elif self._held is None or message["type"] != "http.response.body":
            await self._stream(message)
        else:
            body: bytes = message.get("body", b"")
            if not body and message.get("more_body", False):
                return  # an empty chunk says nothing yet
            answer = _lone_answer(body)
            if answer is None:
                await self._stream(message)
            else:
                await self._answer(answer)

    async def finish(self) -> None:
        """The app ended with the head still held (no event at all): send it as it was."""
        if self._state == "deciding" and self._held is not None:
            await self._stream({"type": "http.response.body", "body": b"", "more_body": False})

    async def _stream(self, message: Message) -> None:
        self._state = "stream"
        if self._held is not None:
            await self._send(self._held)
            self._held = None
        await self._send(message)

    async def _answer(self, answer: bytes) -> None:
        assert self._held is not None
        self._state = "answered"
        headers = [(name, value) for name, value in self._held["headers"] if name.lower() not in _STREAM_ONLY]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]
        await self._send({"type": "http.response.start", "status": self._held["status"], "headers": headers})
        await self._send({"type": "http.response.body", "body": answer, "more_body": False})
        self._held = None


def _content_type(message: Message) -> bytes:
    for name, value in message.get("headers", []):
        if name.lower() == b"content-type":
            return bytes(value).lower()
    return b""


def _lone_answer(chunk: bytes) -> bytes | None:
    """The JSON of ``chunk`` if it is exactly one SSE ``message`` event (as the SDK writes it: no
    id, no retry, one data line) holding a JSON-RPC response or error; else None.

    Only the head of the JSON is looked at, and the rest searched for a line break at C speed: the
    answer may be 90 MB of base64, which parsing whole would hold up the event loop. A shape this
    does not recognise is simply left a stream.
    """
    if not (chunk.startswith(_EVENT_HEAD) and chunk.endswith(_EVENT_END)):
        return None
    begin, end = len(_EVENT_HEAD), len(chunk) - len(_EVENT_END)
    if chunk.find(b"\n", begin, end) != -1 or _ANSWER_HEAD.match(chunk, begin) is None:
        return None  # several lines, or not an answer (a notification, a request to the client)
    return chunk[begin:end]


_EVENT_HEAD = b"event: message\r\ndata: "
_EVENT_END = b"\r\n\r\n"
#: pydantic writes a JSONRPCResponse/JSONRPCError's fields in this order; a request or a
#: notification has "method" where this wants "result" or "error".
_ANSWER_HEAD = re.compile(
    rb'\{"jsonrpc":"2\.0","id":(?:-?[0-9]{1,20}|"(?:[^"\\]|\\.){0,200}"),"(?:result|error)":'
)
