"""Malformed JSON-RPC bodies POSTed to /mcp: the verdicts stdio gives (``message_check``), as an
HTTP 400 with the JSON-RPC error, in stateful and stateless mode; authentication still first.
Raw HTTP against the real server process, since the SDK's client never sends such bodies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.servers import http_process
from tests.mcp_harness import EXAMPLE, server_env
from tests.test_mcp_stdio_edge import INVALID_REQUEST, MALFORMED, PARSE_ERROR, REQUEST

MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
INITIALIZE = {
    "protocolVersion": "2025-06-18",
    "capabilities": {},
    "clientInfo": {"name": "raw-http", "version": "0"},
}
#: What stdio answers; a blank line it skips is, as an HTTP body, the SDK's own parse error.
ANSWERED = [m for m in MALFORMED if m[2] is not None]


class RawHttp:
    """One MCP session on raw HTTP: bodies as given, answers as they come (JSON or one SSE event)."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.url = url
        self.headers = dict(MCP_HEADERS)
        if token is not None:
            self.headers["Authorization"] = f"Bearer {token}"
        self.http = httpx.Client(timeout=60)

    def open(self) -> None:
        opened = self.post(
            json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INITIALIZE})
        )
        assert opened.status_code == 200, opened.text
        if "mcp-session-id" in opened.headers:  # none in stateless mode
            self.headers["mcp-session-id"] = opened.headers["mcp-session-id"]
        self.headers["mcp-protocol-version"] = "2025-06-18"
        initialized = self.post('{"jsonrpc":"2.0","method":"notifications/initialized"}')
        assert initialized.status_code == 202

    def post(self, body: str | bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        return self.http.post(self.url, content=body, headers=headers or self.headers)

    def request(self, method: str, params: dict[str, Any], request_id: int | str = 1) -> dict[str, Any]:
        """The JSON-RPC answer to one request."""
        message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        return answer_of(self.post(json.dumps(message)))


def answer_of(response: httpx.Response) -> dict[str, Any]:
    if response.headers["content-type"].startswith("text/event-stream"):
        data = [line[5:] for line in response.text.splitlines() if line.startswith("data:")]
        events = [json.loads(d) for d in data if d.strip()]
        answers = [e for e in events if "result" in e or "error" in e]
        assert len(answers) == 1, response.text
        return dict(answers[0])
    parsed: dict[str, Any] = response.json()
    return parsed


@contextmanager
def raw_session(simulator: Any, tmp_path: Path, *extra: str, **env: str) -> Iterator[RawHttp]:
    settings = server_env(simulator.url, tmp_path / "cache", CTE1_LOG_LEVEL="ERROR", **env)
    with http_process(settings, *extra) as server:
        session = RawHttp(server.url, env.get("CTE1_HTTP_TOKEN"))
        try:
            session.open()
            yield session
        finally:
            session.http.close()


@pytest.mark.parametrize("mode", [(), ("--stateless",)], ids=["stateful", "stateless"])
def test_every_malformed_body_gets_the_answer_stdio_gives(simulator: Any, tmp_path: Path, mode: Any) -> None:
    # Before: a request whose id was null, 1.5, true or an object got 202 and no answer ever; a
    # batch, a bare value, "jsonrpc": "1.0" or a numeric method got -32602 with pydantic's dump;
    # Infinity was accepted.
    with raw_session(simulator, tmp_path, *mode) as session:
        for n, (kind, line, code, answered_id) in enumerate(ANSWERED):
            response = session.post(line)
            assert response.status_code == 400, (kind, response.status_code, response.text[:300])
            assert response.headers["content-type"] == "application/json", kind
            answer = response.json()
            assert answer["jsonrpc"] == "2.0" and "result" not in answer, kind
            assert (answer["error"]["code"], answer["id"]) == (code, answered_id), (kind, answer)
            assert "pydantic" not in response.text, kind
            after = session.post((REQUEST % f'"after-{n}"').encode())  # and the server goes on
            assert answer_of(after) == {"jsonrpc": "2.0", "id": f"after-{n}", "result": {}}, kind
        blank = session.post(b"  ")
        assert (blank.status_code, blank.json()["error"]["code"]) == (400, PARSE_ERROR)
        heard = session.post(b'{"jsonrpc":"2.0","method":"notifications/unheard-of"}')
        assert heard.status_code == 202  # a valid notification is still accepted, unanswered
        call = session.request("tools/call", {"name": "get_call_metadata", "arguments": EXAMPLE}, "last")
        assert call["id"] == "last" and not call["result"]["isError"]


def test_a_token_is_checked_before_the_body_is_read(simulator: Any, tmp_path: Path) -> None:
    token = "malformed-test-token-0123456789"
    with raw_session(simulator, tmp_path, CTE1_HTTP_TOKEN=token) as session:
        null_id = (REQUEST % "null").encode()
        for wrong in ({**session.headers, "Authorization": "Bearer nope"}, MCP_HEADERS):
            refused = session.post(null_id, headers=wrong)
            assert refused.status_code == 401, refused.text
            assert "jsonrpc" not in refused.text  # refused for the token, not for the body
        answered = session.post(null_id)
        assert answered.status_code == 400
        assert answered.json()["error"]["code"] == INVALID_REQUEST


def test_a_body_past_the_limit_is_refused_unread(simulator: Any, tmp_path: Path) -> None:
    with raw_session(simulator, tmp_path) as session:
        params = '{"x":"' + "a" * (4 * 1024 * 1024) + '"}'
        response = session.post('{"jsonrpc":"2.0","id":null,"method":"ping","params":' + params + "}")
        assert response.status_code == 413  # the SDK's limit (4 MiB), before any check
        assert answer_of(session.post((REQUEST % 1).encode()))["result"] == {}


def test_a_refused_host_is_still_refused_by_the_sdk(simulator: Any, tmp_path: Path) -> None:
    with raw_session(simulator, tmp_path) as session:
        evil = session.post((REQUEST % "null").encode(), headers={**session.headers, "Host": "evil.example"})
        assert evil.status_code == 421  # DNS-rebinding protection answers, as before
