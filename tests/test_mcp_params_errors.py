"""Params the protocol refuses (``arguments`` that are no object, a tool name that is no string, a
bad ``uri`` or ``progressToken``) get a ``[code]`` and a next step, over stdio and HTTP alike, not
the SDK's bare "Invalid request parameters". Raw messages: the SDK's client never sends them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests import test_mcp_stdio_edge
from tests.mcp_harness import EXAMPLE
from tests.test_mcp_http_malformed import raw_session
from tests.test_mcp_stdio_edge import RawServer

INVALID_PARAMS = -32602
raw_server = test_mcp_stdio_edge.raw_server  # the stdio server on raw pipes, initialized
METADATA = "get_call_metadata"

# (kind, method, params, answered as: "result" (isError) or "error" (-32602), its [code], more text)
CASES: list[tuple[str, str, dict[str, Any], str, str, list[str]]] = [
    (
        "arguments as a JSON-encoded string",
        "tools/call",
        {"name": METADATA, "arguments": json.dumps(EXAMPLE)},
        "result",
        "invalid_parameter",
        ["arguments must be a JSON object of the tool's parameters, not a string", "the object itself"],
    ),
    (
        "arguments as an array",
        "tools/call",
        {"name": METADATA, "arguments": [1, 2]},
        "result",
        "invalid_parameter",
        ["arguments must be a JSON object", "not a JSON array of 2 item(s)", "tenantId"],
    ),
    (
        "a tool name that is a number",
        "tools/call",
        {"name": 5, "arguments": EXAMPLE},
        "error",
        "invalid_parameter",
        ["name must be the name of one of this server's tools", "the number 5", "tools/list"],
    ),
    ("no tool name", "tools/call", {"arguments": EXAMPLE}, "error", "missing_parameter", ["needs name"]),
    (
        "an unknown tool with arguments as a string",
        "tools/call",
        {"name": "no_such_tool", "arguments": "{}"},
        "error",
        "unknown_tool",
        ["no_such_tool", METADATA],
    ),
    (
        "a progressToken that is an object",
        "tools/call",
        {"name": METADATA, "arguments": EXAMPLE, "_meta": {"progressToken": {"a": 1}}},
        "error",
        "invalid_parameter",
        ["_meta.progressToken must be a string or an integer", "a JSON object of 1 item(s)"],
    ),
    (
        "a fractional progressToken",
        "tools/call",
        {"name": METADATA, "arguments": EXAMPLE, "_meta": {"progressToken": 1.5}},
        "error",
        "invalid_parameter",
        ["_meta.progressToken must be a string or an integer, not the number 1.5"],
    ),
    (
        "a uri that is a number",
        "resources/read",
        {"uri": 5},
        "error",
        "invalid_parameter",
        ["uri must be a resource URI", "resources/templates/list"],
    ),
    ("no uri", "resources/read", {}, "error", "missing_parameter", ["resources/read needs uri"]),
    # What already had its own answer keeps it:
    (
        "arguments null",
        "tools/call",
        {"name": METADATA, "arguments": None},
        "result",
        "missing_parameter",
        [],
    ),
    (
        "an unknown tool",
        "tools/call",
        {"name": "no_such_tool", "arguments": {}},
        "result",
        "unknown_tool",
        [],
    ),
]


def check(kind: str, answer: dict[str, Any], expected: str, code: str, fragments: list[str]) -> None:
    if expected == "result":
        assert "result" in answer, (kind, answer)
        result = answer["result"]
        assert result["isError"] is True, kind
        text = "\n".join(block["text"] for block in result["content"])
    else:
        assert "error" in answer, (kind, answer)
        error = answer["error"]
        assert error["code"] == INVALID_PARAMS and error["data"] == {"code": code}, (kind, error)
        text = error["message"]
    assert text.startswith(f"[{code}] "), (kind, text)
    assert "\nNext: " in text and "Invalid request parameters" not in text, (kind, text)
    for fragment in fragments:
        assert fragment in text, (kind, fragment, text)


def test_each_over_stdio(raw_server: RawServer) -> None:
    # Before: every "error" case and the first two "result" ones got
    # {"code": -32602, "message": "Invalid request parameters", "data": ""}.
    for n, (kind, method, params, expected, code, fragments) in enumerate(CASES):
        raw_server.send(json.dumps({"jsonrpc": "2.0", "id": n, "method": method, "params": params}).encode())
        answer = raw_server.reply()
        assert answer["id"] == n, kind
        check(kind, answer, expected, code, fragments)


@pytest.mark.parametrize("mode", [(), ("--stateless",)], ids=["stateful", "stateless"])
def test_each_over_http(simulator: Any, tmp_path: Path, mode: Any) -> None:
    log = tmp_path / "audit.jsonl"
    with raw_session(simulator, tmp_path, *mode, CTE1_AUDIT_LOG=str(log)) as session:
        for n, (kind, method, params, expected, code, fragments) in enumerate(CASES):
            check(kind, session.request(method, params, n), expected, code, fragments)
    # A tool's argument error is a tool call like any other: audited with its code.
    audited = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    assert [(a["tool"], a["outcome"]) for a in audited if a["tool"] == METADATA] == [
        (METADATA, "invalid_parameter"),
        (METADATA, "invalid_parameter"),
        (METADATA, "missing_parameter"),
    ]
