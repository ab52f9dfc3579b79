"""The stdio transport's edge: every line a client sends is either a message or gets an answer.

Written here, in front of the SDK's reader, because that reader (``mcp/server/stdio.py``, mcp 2.3)
hands a line it cannot validate to the session as an exception, and the session only logs it at
debug level: the client of a malformed line hears nothing and waits for its timeout. Each line is
checked first by ``message_check`` (as HTTP bodies are, in ``http_edge``); a line that fails is
answered here, through the SDK's own write stream (so answers are never interleaved with its other
output). A blank line is not a message and is skipped. A valid notification still gets no answer.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from typing import Any, BinaryIO, cast

import anyio
import anyio.to_thread
from anyio.abc import ObjectSendStream
from mcp.server.stdio import _claim_fd, _open_stdin_diversion, stdio_server
from mcp.shared.message import SessionMessage

from cte1_mcp.message_check import check_message

logger = logging.getLogger(__name__)


class CheckedLines:
    """The client's lines for the SDK's reader (``async for``), each checked; malformed ones are
    answered on the write stream given by ``answer_on`` once the transport has made it."""

    def __init__(self, wire: BinaryIO) -> None:
        self._wire = wire
        self._answers: ObjectSendStream[SessionMessage] | None = None
        self._ready = anyio.Event()

    def answer_on(self, stream: ObjectSendStream[SessionMessage]) -> None:
        self._answers = stream
        self._ready.set()

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[str]:
        while raw := await anyio.to_thread.run_sync(self._wire.readline, abandon_on_cancel=True):
            verdict = check_message(raw)
            if verdict is None:
                continue
            if isinstance(verdict, str):
                yield verdict
                continue
            logger.warning("answered a malformed line from the client: %s", verdict.error.message[:120])
            await self._ready.wait()
            assert self._answers is not None
            try:
                await self._answers.send(SessionMessage(verdict))
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return  # the server is ending: nothing is listening any more


async def serve(run: Any) -> None:
    """Run ``run(read_stream, write_stream)`` on the process's stdin and stdout, lines checked.

    stdin is claimed as the SDK claims it (fd 0 then reads the null device, so a child process
    never takes the client's bytes), through its own helper: the SDK skips the claim when it is
    given the stream to read.
    """
    wire, release = _claim_fd(0, sys.stdin, "rb", _open_stdin_diversion)
    try:
        lines = CheckedLines(wire)
        # CheckedLines is only iterated (``async for``), all the SDK does with its ``stdin``.
        async with stdio_server(stdin=cast("anyio.AsyncFile[str]", lines)) as (read_stream, write_stream):
            lines.answer_on(write_stream)
            await run(read_stream, write_stream)
    finally:
        if release is not None:
            release()
