"""The network path of one download, for a synchronous ``httpx.Client`` in a worker thread.

httpx has no setting for the read size, and httpcore reads 64 KiB per call: at hundreds of MB/s
that is thousands of interpreter round trips per second. Its public extension point is the
network backend of ``httpcore.ConnectionPool``, so this module provides one whose streams

- read up to :data:`READ_BYTES` per call (over TLS: every record already received, decrypted
  into one buffer, since each ``recv()`` of an ``SSLSocket`` returns a single 16 KiB record);
- register their socket with a :class:`Wire`, so the event loop can stop a blocked read at once
  by shutting the socket down (never by closing it: the descriptor belongs to the thread);
- hand h11 the response head and nothing after it, so that a body framed by Content-Length
  alone is read straight from the stream by this transport (:func:`_straight_body`) rather than
  through h11, which copies every body byte three times on its way (profiled: 0.07 of the 0.39
  CPU seconds a 256 MiB download cost, the largest cost after sha256 and the writes). Every
  other body (chunked, ended by the connection closing, an error page) goes through h11 as usual.

A connection serves one download and is not kept alive: the 5-second spacing makes reuse worthless,
and a fresh socket per download is what lets the wire know which socket to shut.
"""

from __future__ import annotations

import abc
import errno
import math
import os
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from functools import partial
from typing import Any

import httpcore
import httpx

from cte1_mcp.cpu import give_way
from cte1_mcp.units import MiB

#: Bytes asked of the network per read.
READ_BYTES = 1 * MiB
#: How often a connect in progress looks whether the download was abandoned.
CONNECT_POLL_SECONDS = 0.05
#: The blank line that ends a response head, exactly as h11 finds it (a bare LF ends a line too):
#: the first match is where h11 stops reading the head, so the stream stops there as well.
_END_OF_HEAD = re.compile(b"\n\r?\n")


class Aborted(Exception):
    """The download was abandoned from the loop side (cancelled or past its deadline)."""


class Wire:
    """The sockets of one download, and the one way to interrupt it from another thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.reason: str | None = None

    def abort(self, reason: str) -> None:
        """Make every blocked or later read of this download return at once (end of stream)."""
        with self._lock:
            if self.reason is None:
                self.reason = reason
            for sock in self._sockets:
                _shutdown(sock)

    def adopt(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.reason is not None:
                _shutdown(sock)

    def release(self, sock: socket.socket) -> None:
        """Close ``sock`` (from the thread that owns it), under the lock ``abort`` takes."""
        with self._lock:
            if sock in self._sockets:
                self._sockets.remove(sock)
            sock.close()

    def check(self) -> None:
        if self.reason is not None:
            raise Aborted(self.reason)


def _shutdown(sock: socket.socket) -> None:
    with suppress(OSError):  # not connected yet, or already closed by its thread
        sock.shutdown(socket.SHUT_RDWR)


@contextmanager
def _mapped(timeout: type[Exception], other: type[Exception]) -> Iterator[None]:
    try:
        yield
    except TimeoutError as exc:
        raise timeout(str(exc) or "timed out") from exc
    except Aborted as exc:
        raise other(f"abandoned ({exc})") from exc
    except OSError as exc:
        raise other(str(exc) or type(exc).__name__) from exc


class _HeadBoundedStream(httpcore.NetworkStream, abc.ABC):
    """What both streams share: h11's reads, which end at the response head while it is being
    read, and :meth:`read_body`, the straight reads of the body after it.

    Nothing is lost or reordered: what a read received beyond the head is held and comes first
    in the next read, whoever makes it.
    """

    def __init__(self, sock: socket.socket, wire: Wire) -> None:
        self._sock = sock
        self._wire = wire
        self._timeout: float | None = -1.0
        self._held = b""
        self._in_head = True
        self._tail = b""  # the last bytes handed over in the head, for a blank line split by a read
        self._at_head_end = False

    @abc.abstractmethod
    def _receive(self, limit: int, timeout: float | None) -> bytes:
        """Up to ``limit`` bytes from the connection, waiting for at least one (b"" at its end)."""

    @abc.abstractmethod
    def _send(self, buffer: bytes) -> None:
        """All of ``buffer`` onto the connection."""

    def _set_timeout(self, timeout: float | None) -> None:
        if timeout != self._timeout:  # each change costs a syscall
            self._sock.settimeout(timeout)
            self._timeout = timeout

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with _mapped(httpcore.ReadTimeout, httpcore.ReadError):
            data = self._take_held(None) or self._receive_fairly(max(max_bytes, READ_BYTES), timeout)
        return self._cut_at_head_end(data) if self._in_head else data

    def read_body(self, limit: int, timeout: float | None) -> bytes:
        """At most ``limit`` bytes that follow the head (b"" once the connection has ended)."""
        with _mapped(httpcore.ReadTimeout, httpcore.ReadError):
            return self._take_held(limit) or self._receive_fairly(limit, timeout)

    def _receive_fairly(self, limit: int, timeout: float | None) -> bytes:
        """``_receive``, once any thread waiting for this core has had it (:mod:`cte1_mcp.cpu`),
        if this read will not wait: a read that waits gives the core away anyway, and an offer
        before it would only delay taking what arrives (on a busy machine by a time slice, as it
        did for the response head)."""
        if self._arrived():
            give_way()
        return self._receive(limit, timeout)

    def _arrived(self) -> bool:
        """Whether bytes for the next read are already here (or the connection ended)."""
        try:
            return _ready(self._sock, select.POLLIN, 0)
        except OSError:  # shut down by the wire: the read reports it
            return True

    def end_head(self) -> bool:
        """Called once httpcore has the final response head: reads are no longer cut. Whether h11
        was handed exactly that head (so it holds no body byte, and the body may be read with
        :meth:`read_body`); never again for a later answer on the same connection, which is not
        reused here, but whose head would no longer be cut."""
        exact = self._in_head and self._at_head_end
        self._in_head = False
        return exact

    def _take_held(self, limit: int | None) -> bytes:
        data = self._held
        if limit is not None and len(data) > limit:
            data, self._held = data[:limit], data[limit:]
        else:
            self._held = b""
        return data

    def _cut_at_head_end(self, data: bytes) -> bytes:
        """``data`` up to the end of the head it completes, the rest held for the next read.

        (Each head is cut in turn: an informational 1xx head, then the final one.)
        """
        tail = self._tail
        match = _END_OF_HEAD.search(tail + data[:2])
        if match is not None:  # a blank line that began in the previous read
            end = match.end() - len(tail)
        else:
            match = _END_OF_HEAD.search(data)
            end = match.end() if match is not None else -1
        if end < 0:
            self._tail = (tail + data[-2:])[-2:]
            self._at_head_end = False
            return data
        self._held = data[end:]
        self._tail = b""
        self._at_head_end = True
        return data[:end]

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        with _mapped(httpcore.WriteTimeout, httpcore.WriteError):
            self._wire.check()
            self._set_timeout(timeout)
            self._send(buffer)

    def close(self) -> None:
        self._wire.release(self._sock)


class _Stream(_HeadBoundedStream):
    """Plain TCP: one ``recv`` of up to :data:`READ_BYTES` (the kernel hands over all it holds)."""

    def _receive(self, limit: int, timeout: float | None) -> bytes:
        self._set_timeout(timeout)
        return self._sock.recv(limit)

    def _send(self, buffer: bytes) -> None:
        self._sock.sendall(buffer)

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            try:
                return _TlsStream(self._sock, self._wire, ssl_context, server_hostname, timeout)
            except BaseException:
                self.close()
                raise

    def get_extra_info(self, info: str) -> Any:
        return _extra_info(self._sock, info)


class _TlsStream(_HeadBoundedStream):
    """TLS over memory BIOs on the plain socket: one ``recv`` brings many records, all decrypted
    into one buffer per read (``SSLSocket`` would hand them over one 16 KiB record at a time)."""

    def __init__(
        self,
        sock: socket.socket,
        wire: Wire,
        context: ssl.SSLContext,
        server_hostname: str | None,
        timeout: float | None,
    ) -> None:
        super().__init__(sock, wire)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=server_hostname)
        # Decrypted into this one buffer, reused by every read (a fresh one would be zeroed each time).
        self._buffer = bytearray(READ_BYTES)
        self._set_timeout(timeout)
        self._exchange(self._tls.do_handshake)

    def _flush(self) -> None:
        pending = self._outgoing.read()
        if pending:
            self._sock.sendall(pending)

    def _receive_raw(self) -> None:
        data = self._sock.recv(READ_BYTES)
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    def _exchange(self, operation: Any) -> Any:
        """Run a TLS operation, sending what it produced and receiving what it waits for."""
        while True:
            try:
                result = operation()
            except ssl.SSLWantReadError:
                self._flush()
                self._wire.check()
                self._receive_raw()
                continue
            self._flush()
            return result

    def _arrived(self) -> bool:
        return bool(self._tls.pending() or self._incoming.pending) or super()._arrived()

    def _receive(self, limit: int, timeout: float | None) -> bytes:
        if len(self._buffer) < limit:
            self._buffer = bytearray(limit)
        self._set_timeout(timeout)
        with memoryview(self._buffer) as whole, whole[:limit] as view:
            try:
                filled: int = self._exchange(lambda: self._tls.read(limit, view))
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""  # closed, with or without close_notify: the reader decides whether that is early
            filled = self._gather(view, filled)
            return bytes(view[:filled])

    def _gather(self, view: memoryview, filled: int) -> int:
        """Decrypt into ``view[filled:]`` what has already arrived, without waiting; the new fill."""
        while filled < len(view):
            try:
                got: int = self._tls.read(len(view) - filled, view[filled:])  # type: ignore[assignment]
            except ssl.SSLWantReadError:
                if self._receive_available():
                    continue
                return filled
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return filled  # the end is reported by the next read
            if not got:
                return filled
            filled += got
        return filled

    def _receive_available(self) -> bool:
        """Whatever the socket already holds, without waiting; False when it holds nothing.

        (``MSG_DONTWAIT`` would not do: a socket with a timeout first waits for readiness.)
        """
        if not _ready(self._sock, select.POLLIN, 0):
            return False
        data = self._sock.recv(READ_BYTES)
        if not data:
            self._incoming.write_eof()
            return True
        self._incoming.write(data)
        return True

    def _send(self, buffer: bytes) -> None:
        view = memoryview(buffer)
        while view:
            written: int = self._exchange(partial(self._tls.write, view))
            view = view[written:]

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.UnsupportedProtocol("TLS inside TLS (an HTTPS proxy) is not supported")

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object":
            return self._tls
        return _extra_info(self._sock, info)


def _extra_info(sock: socket.socket, info: str) -> Any:
    if info == "socket":
        return sock
    if info == "client_addr":
        return sock.getsockname()
    if info == "server_addr":
        return sock.getpeername()
    if info == "is_readable":
        try:
            return _ready(sock, select.POLLIN, 0)
        except OSError:
            return True
    return None


def _ready(sock: socket.socket, events: int, seconds: float) -> bool:
    """Whether ``sock`` has ``events`` within ``seconds`` (poll, not select: any descriptor number)."""
    poller = select.poll()
    poller.register(sock, events | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(max(0, math.ceil(seconds * 1000))))


class _Backend(httpcore.NetworkBackend):
    """Opens the download's connections: registered with its wire before they connect, and
    connected in short polls so an abandoned download does not wait out a connect timeout."""

    def __init__(self, wire: Wire) -> None:
        self._wire = wire

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        with _mapped(httpcore.ConnectTimeout, httpcore.ConnectError):
            deadline = None if timeout is None else time.monotonic() + timeout
            failure: OSError | None = None
            for family, kind, proto, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
                self._wire.check()
                sock = socket.socket(family, kind, proto)
                self._wire.adopt(sock)
                try:
                    if local_address is not None:
                        sock.bind((local_address, 0))
                    for option in socket_options or ():
                        sock.setsockopt(*option)
                    self._connect(sock, address, deadline)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                except OSError as exc:
                    self._wire.release(sock)
                    if isinstance(exc, TimeoutError):
                        raise
                    failure = exc  # refused or unreachable: try the next address
                    continue
                except BaseException:  # abandoned: no socket is left open
                    self._wire.release(sock)
                    raise
                return _Stream(sock, self._wire)
            raise failure or OSError(f"no address found for {host}")

    def _connect(self, sock: socket.socket, address: Any, deadline: float | None) -> None:
        sock.setblocking(False)
        error = sock.connect_ex(address)
        while error in (errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK):
            self._wire.check()
            left = CONNECT_POLL_SECONDS
            if deadline is not None:
                left = min(left, deadline - time.monotonic())
            if left <= 0:
                raise TimeoutError("connect timed out")
            if _ready(sock, select.POLLOUT, left):
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                break
        self._wire.check()
        if error:
            raise OSError(error, os.strerror(error))
        sock.setblocking(True)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.UnsupportedProtocol("CT-e1 is reached over TCP only")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


# --- httpx on top of the pool ------------------------------------------------------------------------

_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProxyError, httpx.ProxyError),
)


@contextmanager
def _as_httpx(request: httpx.Request) -> Iterator[None]:
    """httpcore's exceptions as the httpx ones (what httpx's own transport does, publicly)."""
    try:
        yield
    except httpcore.TimeoutException as exc:
        raise _translate(exc, request) from exc
    except httpcore.NetworkError as exc:
        raise _translate(exc, request) from exc
    except (httpcore.ProtocolError, httpcore.UnsupportedProtocol, httpcore.ProxyError) as exc:
        raise _translate(exc, request) from exc


def _translate(exc: Exception, request: httpx.Request) -> httpx.HTTPError:
    for source, target in _ERRORS:
        if isinstance(exc, source):
            return target(str(exc), request=request)
    return httpx.TransportError(str(exc))


class _Body(httpx.SyncByteStream):
    def __init__(
        self, stream: Iterable[bytes], request: httpx.Request, straight: Iterator[bytes] | None
    ) -> None:
        self._stream = stream
        self._request = request
        self._straight = straight

    def __iter__(self) -> Iterator[bytes]:
        with _as_httpx(self._request):
            yield from (self._stream if self._straight is None else self._straight)

    def close(self) -> None:
        # Also after a straight read: h11 then still expects the body, so httpcore closes the
        # connection (which is never kept alive here anyway).
        closer = getattr(self._stream, "close", None)
        if closer is not None:
            with _as_httpx(self._request):
                closer()


def _straight_body(stream: _HeadBoundedStream, length: int, timeout: float | None) -> Iterator[bytes]:
    """A body of ``length`` bytes read straight from ``stream``; ending early is what h11 would
    call it, a :class:`httpcore.RemoteProtocolError`."""
    left = length
    while left:
        chunk = stream.read_body(min(left, READ_BYTES), timeout)
        if not chunk:
            raise httpcore.RemoteProtocolError(
                "peer closed connection without sending complete message body: "
                f"received {length - left} bytes, expected {length}"
            )
        left -= len(chunk)
        yield chunk


def _framed_by_length_alone(request: httpx.Request, response: httpcore.Response) -> int | None:
    """The body's length when its Content-Length alone frames it (RFC 9112 §6.3), else None:
    h11 then reads it. Only a successful answer that has a body qualifies (h11's rule for which
    have none: HEAD, CONNECT, 204); h11 has accepted the header already, so one plain value is
    all that remains to be checked here."""
    if request.method in ("HEAD", "CONNECT") or not 200 <= response.status < 300 or response.status == 204:
        return None
    lengths = [value for name, value in response.headers if name.lower() == b"content-length"]
    if any(name.lower() == b"transfer-encoding" for name, _ in response.headers) or len(lengths) != 1:
        return None
    value = lengths[0].strip()
    return int(value) if value.isdigit() and len(value) < 20 else None


class DownloadTransport(httpx.BaseTransport):
    """An httpx transport over ``httpcore.ConnectionPool`` with this module's network backend."""

    def __init__(self, wire: Wire, ssl_context: ssl.SSLContext | None) -> None:
        """``ssl_context``: None for plain http://, which needs none."""
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=1,
            max_keepalive_connections=0,
            network_backend=_Backend(wire),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _as_httpx(request):
            response = self._pool.handle_request(core_request)
        assert isinstance(response.stream, Iterable)
        straight: Iterator[bytes] | None = None
        stream = response.extensions.get("network_stream")
        if isinstance(stream, _HeadBoundedStream) and stream.end_head():
            length = _framed_by_length_alone(request, response)
            if length is not None:
                # The same per-read timeout httpcore gives h11's reads. A failure mid-body is
                # raised to the reader, whose ``http.stream`` block then closes the connection.
                timeout: float | None = request.extensions.get("timeout", {}).get("read")
                straight = _straight_body(stream, length, timeout)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream, request, straight),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()
