"""Malformed JSON-RPC lines over stdio: each gets its JSON-RPC error (or, for what is no request,
nothing), and the server goes on serving. Raw pipes, not the SDK's client, which never sends them."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from cte1_mcp.message_check import check_message
from tests.mcp_harness import EXAMPLE, server_env

PARSE_ERROR, INVALID_REQUEST = -32700, -32600
REQUEST = '{"jsonrpc":"2.0","id":%s,"method":"ping"}'

# (kind, line, the error code answered or None for no answer, the id answered)
MALFORMED: list[tuple[str, bytes, int | None, Any]] = [
    ("an id of 4,301 digits", (REQUEST % ("1" * 4301)).encode(), PARSE_ERROR, None),
    (
        "a 5,000-digit parameter",
        b'{"jsonrpc":"2.0","id":2,"method":"ping","params":{"n":' + b"7" * 5000 + b"}}",
        PARSE_ERROR,
        None,
    ),
    (
        "invalid UTF-8",
        b'{"jsonrpc":"2.0","id":3,"method":"ping","params":{"s":"\xff\xfe"}}',
        PARSE_ERROR,
        None,
    ),
    ("100,000 nested arrays", b"[" * 100_000 + b"]" * 100_000, PARSE_ERROR, None),
    (
        "300 nested arrays in params",
        b'{"jsonrpc":"2.0","id":4,"method":"ping","params":{"a":' + b"[" * 300 + b"]" * 300 + b"}}",
        PARSE_ERROR,
        None,
    ),
    ("a NaN id", (REQUEST % "NaN").encode(), PARSE_ERROR, None),
    (
        "Infinity in params",
        b'{"jsonrpc":"2.0","id":5,"method":"ping","params":{"x":-Infinity}}',
        PARSE_ERROR,
        None,
    ),
    ("not JSON", b"hello", PARSE_ERROR, None),
    ("cut JSON", b'{"jsonrpc":"2.0","id":6,', PARSE_ERROR, None),
    ("a bare number", b"42", INVALID_REQUEST, None),
    ("a batch", b"[" + (REQUEST % 7).encode() + b"]", INVALID_REQUEST, None),
    ("an empty batch", b"[]", INVALID_REQUEST, None),
    ("no jsonrpc member", b'{"id":8,"method":"ping"}', INVALID_REQUEST, 8),
    ("JSON-RPC 1.0", b'{"jsonrpc":"1.0","id":9,"method":"ping"}', INVALID_REQUEST, 9),
    ("a method that is a number", b'{"jsonrpc":"2.0","id":10,"method":5}', INVALID_REQUEST, 10),
    (
        "params that are a number",
        b'{"jsonrpc":"2.0","id":11,"method":"ping","params":5}',
        INVALID_REQUEST,
        11,
    ),
    ("an object id", (REQUEST % '{"a":1}').encode(), INVALID_REQUEST, None),
    ("a boolean id", (REQUEST % "true").encode(), INVALID_REQUEST, None),
    ("a null id", (REQUEST % "null").encode(), INVALID_REQUEST, None),
    ("a fractional id", (REQUEST % "1.5").encode(), INVALID_REQUEST, None),
    ("a notification with a numeric method", b'{"jsonrpc":"2.0","method":5}', INVALID_REQUEST, None),
    ("a blank line", b"   ", None, None),
    ("a notification nobody handles", b'{"jsonrpc":"2.0","method":"notifications/unheard-of"}', None, None),
]


class RawServer:
    """``cte1-mcp`` on raw pipes; every wait is bounded, so a line left unanswered fails the test."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.replies: queue.Queue[bytes] = queue.Queue()
        assert process.stdout is not None
        threading.Thread(target=self._read, args=(process.stdout,), daemon=True).start()

    def _read(self, stdout: IO[bytes]) -> None:
        for line in stdout:
            self.replies.put(line)

    def send(self, line: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + b"\n")
        self.process.stdin.flush()

    def reply(self) -> dict[str, Any]:
        try:
            line = self.replies.get(timeout=60)  # a bound on a hang, not a timing
        except queue.Empty:
            pytest.fail("no reply within 60 s")
        document: dict[str, Any] = json.loads(line)
        return document


@pytest.fixture
def raw_server(simulator: Any, tmp_path: Path) -> Iterator[RawServer]:
    env = server_env(simulator.url, tmp_path / "cache", CTE1_LOG_LEVEL="ERROR")
    with (tmp_path / "stderr").open("wb") as errlog:
        process = subprocess.Popen(
            [sys.executable, "-m", "cte1_mcp"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errlog,
        )
        server = RawServer(process)
        try:
            initialize = {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "0"},
            }
            server.send(
                json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": initialize}).encode()
            )
            assert "result" in server.reply()
            server.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
            yield server
        finally:
            assert process.stdin is not None
            process.stdin.close()
            try:
                process.wait(timeout=30)
            finally:
                process.kill()


def test_every_malformed_line_is_answered_and_the_server_goes_on(raw_server: RawServer) -> None:
    # Before: the SDK's reader dropped every one of these (logged at debug level): no answer at
    # all, the client waited for its timeout; invalid UTF-8 was read with U+FFFD in its place.
    for n, (kind, line, code, answered_id) in enumerate(MALFORMED):
        raw_server.send(line)
        raw_server.send((REQUEST % f'"after-{n}"').encode())  # answered after the line's own answer
        first = raw_server.reply()
        if code is None:
            assert first == {"jsonrpc": "2.0", "id": f"after-{n}", "result": {}}, kind
            continue
        assert first["id"] == answered_id and first["error"]["code"] == code, (kind, first)
        assert raw_server.reply()["id"] == f"after-{n}", kind
    call = {"name": "get_call_metadata", "arguments": EXAMPLE}
    raw_server.send(
        json.dumps({"jsonrpc": "2.0", "id": "last", "method": "tools/call", "params": call}).encode()
    )
    last = raw_server.reply()
    assert last["id"] == "last" and not last["result"]["isError"]
    # stdin is still claimed as the SDK claims it: a child process reads nothing of the client's
    assert str(Path(f"/proc/{raw_server.process.pid}/fd/0").readlink()) == os.devnull


@pytest.mark.parametrize(("kind", "line", "code", "answered_id"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_each_kind_is_answered_as_json_rpc_asks(
    kind: str, line: bytes, code: int | None, answered_id: Any
) -> None:
    verdict = check_message(line)
    if code is None:
        assert verdict is None or isinstance(verdict, str)
    else:
        assert not isinstance(verdict, str | None)
        assert (verdict.error.code, verdict.id) == (code, answered_id)


@pytest.mark.parametrize(
    "message",
    [
        REQUEST % 1,
        REQUEST % '"a"',
        '{"jsonrpc":"2.0","method":"notifications/initialized"}',
        '{"jsonrpc":"2.0","id":3,"result":{}}',
        '{"jsonrpc":"2.0","id":4,"error":{"code":-32601,"message":"no"}}',
        '{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{"name":"x","arguments":{"n":1e400}}}',
    ],
)
def test_a_valid_message_passes_unchanged(message: str) -> None:
    assert check_message(f"  {message}\r\n".encode()) == message
