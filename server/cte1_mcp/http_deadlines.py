"""Deadlines on reading a request, which uvicorn does not have: a connection that sends no request,
or its head or body a byte at a time, is otherwise held open for ever, and a few thousand such
connections (slowloris) use up the process's file descriptors, so no client can connect.

As nginx does (``client_header_timeout``, ``client_body_timeout``): a request's head must arrive
within ``READ_TIMEOUT_SECONDS`` of the connection opening or of the previous answer, however it is
trickled; its body may not pause that long between reads. While the server works on a request
(a transcription of minutes), streams its answer, or holds a body back (flow control, ``Expect:
100-continue``), no deadline runs.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

#: nginx's defaults are 60 s; a client of this server sends small requests on a LAN or the internet.
READ_TIMEOUT_SECONDS = 30.0


class DeadlinedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol (the one it uses without httptools) with the read deadlines."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_deadline: asyncio.TimerHandle | None = None
        #: The last tick found the body held back by the server: the client gets a whole deadline after.
        self._held_back = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            self._arm()  # the body is coming: the deadline is for the next read
        elif state is not h11.IDLE:  # the request is in (or the connection is ending): the server's turn
            self._disarm()
        # IDLE: a head still incomplete: its deadline runs on from its start, bytes do not extend it

    def on_response_complete(self) -> None:
        self._held_back = False
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()  # the next request's head (uvicorn's keep-alive timer closes an idle one sooner)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._read_deadline = self.loop.call_later(READ_TIMEOUT_SECONDS, self._read_timed_out)

    def _disarm(self) -> None:
        if self._read_deadline is not None:
            self._read_deadline.cancel()
            self._read_deadline = None

    def _read_timed_out(self) -> None:
        self._read_deadline = None
        if self.transport.is_closing() or self.transport.get_protocol() is not self:  # gone, or upgraded
            return
        held_back = self.flow.read_paused or (self.cycle is not None and self.cycle.waiting_for_100_continue)
        if held_back or self._held_back:
            # the server holds the body back (the app has not read what came, or not asked for the
            # rest of an ``Expect: 100-continue``), or did until lately: the client is not late
            self._held_back = held_back
            self._arm()
            return
        if self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
            self.transport.close()
