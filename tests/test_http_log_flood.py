"""Warnings anybody can cause on the HTTP server (a wrong ``Host`` or ``Origin``, bytes that are not
HTTP) do not grow its log at the sender's rate: the real ``cte1-mcp serve --transport http``,
flooded on 127.0.0.1, and the filter's counting with a clock of the test's."""

from __future__ import annotations

import logging
import re
import socket
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from cte1_mcp.log_flood import FloodFilter
from tests.mcp_harness import server_env
from tests.test_mcp_http import free_port, wait_for_port

FLOOD = 40


def test_a_flood_of_bad_hosts_and_junk_bytes_costs_a_line_each_not_a_line_a_request(
    simulator: Any, tmp_path: Path
) -> None:
    """Regression: each request with a wrong Host logged a warning (the SDK's), and so did each
    connection that sent no HTTP (uvicorn's): 2 x 40 lines for 2 x 40 junk requests."""
    port = free_port()
    argv = [sys.executable, "-m", "cte1_mcp", "serve", "--transport", "http", "--host", "127.0.0.1"]
    env = server_env(simulator.url, tmp_path / "cache")
    with (tmp_path / "stderr").open("wb") as errors:
        process = subprocess.Popen(
            [*argv, "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=errors
        )
        try:
            wait_for_port(process, port)
            with httpx.Client(trust_env=False, timeout=10) as http:
                for index in range(FLOOD):
                    refused = http.post(
                        f"http://127.0.0.1:{port}/mcp",
                        headers={"Host": f"evil{index}.example", "Content-Type": "application/json"},
                        content=b"{}",
                    )
                    assert (refused.status_code, refused.text) == (421, "Invalid Host header")
            for _ in range(FLOOD):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as junk:
                    junk.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
                    assert junk.recv(4096).startswith(b"HTTP/1.1 400")
        finally:
            process.terminate()
            process.wait(10)
    log = (tmp_path / "stderr").read_text(encoding="utf-8")
    # one of each, then (the server stopping) one line with how many more of each there were
    assert log.count("Invalid Host header: evil") == 1, log
    assert len(re.findall(r"(?m)WARNING:?\s+Invalid HTTP request received\.$", log)) == 1, log
    more = {
        words: int(count)
        for count, words in re.findall(r"(\d+) more warning\(s\) like '([^']+)' since \d\d:\d\d:\d\d", log)
    }
    # two warnings a wrong-Host request (measured: the Host is checked twice on its way in)
    assert more == {"Invalid Host header": 2 * FLOOD - 1, "Invalid HTTP request received.": FLOOD - 1}, log
    assert "Streamable HTTP on" in log  # the server did log, and start


def test_the_next_warning_after_a_quiet_interval_says_how_many_were_held_back_and_since_when() -> None:
    now = [0.0]
    flood = FloodFilter(60.0, clock=lambda: now[0], now=lambda: datetime(2026, 12, 8, 3, 4, 5, tzinfo=UTC))

    def warn(name: str, message: str, level: int = logging.WARNING) -> logging.LogRecord | None:
        record = logging.LogRecord(name, level, __file__, 1, message, None, None)
        return record if flood.filter(record) else None

    assert warn("uvicorn.error", "Invalid HTTP request received.") is not None
    held = [warn("uvicorn.error", "Invalid HTTP request received.") for _ in range(5)]
    assert held == [None] * 5
    assert warn("mcp.server.transport_security", "Invalid Host header: x") is not None  # per logger
    assert warn("uvicorn.error", "Exception in ASGI application", logging.ERROR) is not None  # errors pass
    assert (
        warn("uvicorn.error", "Invalid HTTP request received.", logging.INFO) is not None
    )  # only warnings held
    now[0] = 59.9
    assert warn("uvicorn.error", "Invalid HTTP request received.") is None
    now[0] = 60.0
    record = warn("uvicorn.error", "Invalid HTTP request received.")
    assert record is not None
    assert record.getMessage() == (
        "Invalid HTTP request received. (and 6 more like it since 03:04:05, not logged one by one)"
    )
    now[0] = 200.0
    again = warn("uvicorn.error", "Invalid HTTP request received.")
    assert again is not None and again.getMessage() == "Invalid HTTP request received."


def test_a_flood_of_one_kind_does_not_hide_another_kind_of_the_same_logger() -> None:
    """Regression (review): per logger, wrong Host headers by the thousand hid a real client's
    wrong Origin, the warning an operator needs to fix its allowed origins."""
    flood = FloodFilter(60.0, clock=lambda: 0.0)
    records = [
        logging.LogRecord("mcp.server.transport_security", logging.WARNING, __file__, 1, message, None, None)
        for message in (
            "Invalid Host header: a",
            "Invalid Host header: b",
            "Invalid Origin header: https://crm",
        )
    ]
    assert [flood.filter(r) for r in records] == [True, False, True]
