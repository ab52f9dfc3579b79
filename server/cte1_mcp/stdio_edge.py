"""The stdio transport's edge: every line a client sends is either a message or gets an answer.

Written here, in front of the SDK's reader, because that reader (``mcp/server/stdio.py``, mcp 2.3)
hands a line it cannot validate to the session as an exception, and the session only logs it at
debug level: the client of a malformed line hears nothing and waits for its timeout. Each line is
checked first, with the very validation the SDK then applies (so what passes is what the SDK
accepts); a line that fails is answered here, through the SDK's own write stream (so answers are
never interleaved with its other output), as JSON-RPC 2.0 asks:

- ``-32700`` parse error, ``id`` null: not UTF-8, not JSON (``NaN``/``Infinity`` included),
  an integer past Python's 4,300 digits, nesting deeper than the parsers go;
- ``-32600`` invalid request: JSON but not a JSON-RPC message (a bare value, a batch, which MCP
  dropped, no ``"jsonrpc": "2.0"``, a method that is not a string, an id that is not a string or
  an integer). Its ``id`` is the line's when that is a valid id of a request, else null.

A blank line is not a message and is skipped. A valid notification still gets no answer.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any, BinaryIO, cast

import anyio
import anyio.to_thread
import mcp_types as types
from anyio.abc import ObjectSendStream
from mcp.server.stdio import _claim_fd, _open_stdin_diversion, stdio_server
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

logger = logging.getLogger(__name__)


class _NotJson(ValueError):
    pass


def _not_json(constant: str) -> Any:
    raise _NotJson(f"{constant} is not JSON")


def check_line(raw: bytes) -> str | types.JSONRPCError | None:
    """The line to hand to the SDK, the error to answer instead, or None for a blank line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return _error(types.PARSE_ERROR, "Parse error: the line is not UTF-8")
    text = text.strip()
    if not text:
        return None
    try:
        # Python's parser first: stricter than the SDK's (NaN and Infinity are not JSON), and it
        # gives the id to answer an invalid request with.
        document = json.loads(text, parse_constant=_not_json)
    except RecursionError:
        return _error(types.PARSE_ERROR, "Parse error: nested too deeply")
    except (json.JSONDecodeError, _NotJson) as exc:
        return _error(types.PARSE_ERROR, f"Parse error: {exc}")
    except ValueError:  # int(): Python refuses to read longer integers (a guard against slow parsing)
        digits = sys.get_int_max_str_digits()
        return _error(types.PARSE_ERROR, f"Parse error: an integer of more than {digits} digits")
    try:
        message = types.jsonrpc_message_adapter.validate_json(text, by_name=False)
    except ValidationError as exc:
        if any(error["type"] == "json_invalid" for error in exc.errors()):  # e.g. its depth limit
            return _error(types.PARSE_ERROR, "Parse error: nested too deeply or too large")
        return _invalid(document)
    if isinstance(message, types.JSONRPCNotification) and isinstance(document, dict) and "id" in document:
        # An id the SDK cannot use (null, 1.5) makes it read a request as a notification: no
        # answer would ever come.
        return _invalid(document)
    return text


def _invalid(document: Any) -> types.JSONRPCError:
    if not isinstance(document, dict):
        what = "a batch (MCP has none)" if isinstance(document, list) else "not a JSON object"
        return _error(types.INVALID_REQUEST, f"Invalid Request: {what}")
    id_ = document.get("id")
    valid_id = isinstance(id_, str) or (isinstance(id_, int) and not isinstance(id_, bool))
    request_id = id_ if valid_id and "method" in document else None
    return _error(types.INVALID_REQUEST, "Invalid Request: not a JSON-RPC 2.0 message of MCP", request_id)


def _error(code: int, message: str, request_id: str | int | None = None) -> types.JSONRPCError:
    return types.JSONRPCError(jsonrpc="2.0", id=request_id, error=types.ErrorData(code=code, message=message))


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
            verdict = check_line(raw)
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
