"""A Hugging Face hub on 127.0.0.1 that answers what ``hf_hub_download`` asks at a pinned revision.

What huggingface_hub (2.x, file_download.py) requests for one file, and what the real hub answers:

- ``HEAD {endpoint}/{repo}/resolve/{revision}/{file}``: 200 with ``X-Repo-Commit`` (required, or the
  client refuses a non-hub endpoint), ``ETag`` and ``Content-Length``; for an LFS file a 302 to the
  storage URL with ``X-Linked-Etag`` (the sha256) and ``X-Linked-Size``. A missing file is a 404
  with ``X-Error-Code: EntryNotFound`` (``RevisionNotFound``, ``RepoNotFound`` likewise).
- ``GET`` of that URL (or of the redirect's ``Location``): the bytes; a dropped connection is
  resumed with ``Range: bytes=N-`` up to five times, one second apart.

Faults, per file: ``wrong`` (other bytes, consistent headers), ``cut`` (a Content-Length longer
than the body, then the connection closes), ``interrupt`` (half the body, then the connection
closes; every resume is closed before any byte), ``missing`` (404), ``stall`` (half the body, then
nothing until the hub stops: a download to interrupt), ``error500`` (HTTP 500 to every request for it,
a hub having a bad day), ``endless`` (a bad mirror: it announces ``ENDLESS_BYTES`` and sends zeros
until the client goes away or they are sent; ``sent`` counts what left the hub), ``busy`` (HTTP 503
with ``Retry-After: RETRY_AFTER`` to every request for it), ``ratelimited`` (the HEAD answered, every
GET an HTTP 429 with that ``Retry-After``), ``silent`` (the headers, then not one byte of the body,
every resume too, until the hub stops), ``trickle`` (the body one byte every ``TRICKLE_SECONDS``).
"""

from __future__ import annotations

import hashlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import unquote

Fault = Literal[
    "wrong",
    "cut",
    "interrupt",
    "missing",
    "stall",
    "error500",
    "endless",
    "busy",
    "ratelimited",
    "silent",
    "trickle",
]
#: What an ``endless`` file announces and sends at most (1 GiB).
ENDLESS_BYTES = 1 << 30
#: What ``busy`` and ``ratelimited`` ask the client to wait, in seconds (11.6 days).
RETRY_AFTER = 999_999
#: How long a ``trickle`` file waits before each byte.
TRICKLE_SECONDS = 1.0


@dataclass
class HubFile:
    content: bytes
    #: Served like an LFS file: the resolve URL redirects to the storage URL.
    lfs: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass
class FakeHub:
    repo: str
    revision: str
    files: dict[str, HubFile]
    faults: dict[str, Fault] = field(default_factory=dict)
    #: Every request line seen, for assertions on what the client asked.
    requests: list[str] = field(default_factory=list)
    url: str = ""
    #: Set when a stalled download has sent its first half.
    stalled: threading.Event = field(default_factory=threading.Event)
    stopping: threading.Event = field(default_factory=threading.Event)
    #: Bytes of file content sent, per file name (counted as written to the socket).
    sent: dict[str, int] = field(default_factory=dict)


@contextmanager
def running_hub(hub: FakeHub) -> Iterator[FakeHub]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    server.daemon_threads = True
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        hub.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join()


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_HEAD(self) -> None:
            self._answer(head=True)

        def do_GET(self) -> None:
            self._answer(head=False)

        def _answer(self, *, head: bool) -> None:
            hub.requests.append(f"{self.command} {self.path} {self.headers.get('Range') or ''}".strip())
            path = unquote(self.path.split("?")[0])
            storage = "/storage/"
            if path.startswith(storage):  # where an LFS file's resolve URL redirects
                name = path[len(storage) :]
                self._content(name, head=head)
                return
            prefix = f"/{hub.repo}/resolve/"
            if not path.startswith(prefix):
                self._error(404, "RepoNotFound")
                return
            revision, _, name = path[len(prefix) :].partition("/")
            if revision != hub.revision:
                self._error(404, "RevisionNotFound")
                return
            if name not in hub.files or hub.faults.get(name) == "missing":
                self._error(404, "EntryNotFound")
                return
            if hub.faults.get(name) == "error500":
                self._error(500, "InternalError")
                return
            if hub.faults.get(name) == "busy":
                self._error(503, "ServiceUnavailable", retry_after=RETRY_AFTER)
                return
            file = hub.files[name]
            if file.lfs:
                self.send_response(302)
                self.send_header("Location", f"{hub.url}{storage}{name}")
                self.send_header("X-Repo-Commit", hub.revision)
                self.send_header("X-Linked-Etag", f'"{file.sha256}"')
                self.send_header("X-Linked-Size", str(len(file.content)))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._content(name, head=head)

        def _content(self, name: str, *, head: bool) -> None:
            file = hub.files[name]
            fault = hub.faults.get(name)
            if fault == "ratelimited" and not head:
                self._error(429, "TooManyRequests", retry_after=RETRY_AFTER)
                return
            body = file.content
            if fault == "wrong":
                body = bytes(b ^ 0x5A for b in body)
            resume = self.headers.get("Range")
            length = len(body) + (1000 if fault == "cut" else 0)
            if fault == "endless":
                length = ENDLESS_BYTES
            self.send_response(200)
            self.send_header("X-Repo-Commit", hub.revision)
            self.send_header("ETag", f'"{file.sha256}"')
            self.send_header("Content-Length", str(length))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if head:
                return
            if fault == "endless":
                self._endless(name)
                return
            if fault == "silent":
                hub.stalled.set()
                hub.stopping.wait()
                self._drop()
                return
            if fault == "trickle":
                self._trickle(body)
                return
            if fault in ("cut", "interrupt") and resume:
                self._drop()  # the connection never comes back: not one more byte
                return
            if fault in ("interrupt", "stall"):
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                if fault == "stall":
                    hub.stalled.set()
                    hub.stopping.wait()
                self._drop()
                return
            self.wfile.write(body)
            if fault == "cut":
                self._drop()

        def _endless(self, name: str) -> None:
            block = bytes(1 << 20)
            hub.sent[name] = 0
            try:
                while hub.sent[name] < ENDLESS_BYTES and not hub.stopping.is_set():
                    self.wfile.write(block)
                    hub.sent[name] += len(block)
            except OSError:  # the client went away
                self.close_connection = True

        def _trickle(self, body: bytes) -> None:
            try:
                for byte in body:
                    if hub.stopping.wait(TRICKLE_SECONDS):
                        break
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
            except OSError:  # the client went away
                pass
            self.close_connection = True

        def _drop(self) -> None:
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

        def _error(self, status: int, code: str, *, retry_after: int | None = None) -> None:
            body = f'{{"error": "{code}"}}'.encode()
            self.send_response(status)
            self.send_header("X-Error-Code", code)
            if retry_after is not None:
                self.send_header("Retry-After", str(retry_after))
            self.send_header("X-Repo-Commit", hub.revision)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

    return Handler
