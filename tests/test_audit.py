"""``CTE1_AUDIT_LOG``: who fetched what, one intact JSON line per tool call and resource read."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from cte1_mcp.audit import AuditEntry, AuditLog
from cte1_mcp.simulator import DEFAULT_API_KEY
from tests.helpers.namespaces import namespaced_server, needs_mounts
from tests.helpers.servers import http_process
from tests.mcp_harness import EXAMPLE, server_env, stdio_server, structured, text

pytestmark = pytest.mark.anyio

SHORT = {"tenantId": "05053698341", "sessionId": 942126, "recordId": 1}  # 20 s, under the inline limit
TOKEN = "audit-test-token-0123456789abcdef"


def lines(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


async def test_one_line_per_tool_call_and_resource_read(simulator: Any, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    env = server_env(simulator.url, tmp_path / "cache", CTE1_AUDIT_LOG=str(log))
    async with stdio_server(env) as client:
        structured(await client.call_tool("get_call_metadata", EXAMPLE))  # downloads
        structured(await client.call_tool("get_call_audio", EXAMPLE))  # from the store
        inline = structured(await client.call_tool("get_call_audio", {**SHORT, "inline": True}))
        refused = await client.call_tool("get_call_metadata", {**EXAMPLE, "callId": 1})
        metadata = await client.read_resource("cte1://calls/05053698341/942125/1/metadata")
        with pytest.raises(MCPError):
            await client.read_resource("cte1://calls/05053698341/x/1/audio")
    assert refused.is_error
    tool_call, stored, inlined, bad, read, bad_read = lines(log)
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    assert (tool_call["operation"], tool_call["tool"], tool_call["call"]) == (
        "tools/call",
        "get_call_metadata",
        "05053698341/942125/1",
    )
    assert (tool_call["outcome"], tool_call["upstreamRequest"], tool_call["bytesServed"]) == ("ok", True, 0)
    assert (stored["outcome"], stored["upstreamRequest"], stored["bytesServed"]) == ("ok", False, 0)
    assert inlined["upstreamRequest"] is True
    assert inlined["bytesServed"] == inline["audio"]["sizeBytes"]  # the audio went to the client
    assert (bad["outcome"], bad["upstreamRequest"]) == ("unknown_parameter", False)
    assert read["operation"] == "resources/read"
    assert read["resource"] == "cte1://calls/05053698341/942125/1/metadata"
    assert read["call"] == "05053698341/942125/1"
    assert read["bytesServed"] == len(metadata.contents[0].text.encode())  # type: ignore[union-attr]
    assert (read["outcome"], read["upstreamRequest"]) == ("ok", False)
    assert (bad_read["outcome"], bad_read["call"]) == ("invalid_parameter", None)
    for line in lines(log):
        assert line["transport"] == "stdio"
        assert line["identity"] is None  # stdio has no client identity: the local user runs it
        assert line["clientName"] == "mcp"  # what the official SDK's client calls itself
        assert line["time"].endswith("Z")
        assert line["server"]["pid"] > 0
    assert DEFAULT_API_KEY not in log.read_text()


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
@pytest.mark.parametrize("stateless", [False, True])
async def test_http_lines_name_the_token_by_fingerprint_only(
    simulator: Any, tmp_path: Path, mode: str, stateless: bool
) -> None:
    log = tmp_path / "audit.jsonl"
    env = server_env(simulator.url, tmp_path / "cache", CTE1_AUDIT_LOG=str(log), CTE1_HTTP_TOKEN=TOKEN)
    with http_process(env, *(["--stateless"] if stateless else [])) as server:
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}) as http,
            Client(streamable_http_client(server.url, http_client=http), mode=mode) as client,
        ):
            structured(await client.call_tool("get_call_metadata", EXAMPLE))
    (line,) = lines(log)
    assert line["transport"] == "http"
    assert line["identity"].startswith("token-sha256:")
    assert len(line["identity"]) == len("token-sha256:") + 16
    assert TOKEN not in log.read_text()


async def test_two_processes_append_intact_lines(simulator: Any, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    calls = 150

    async def burst(n: int) -> None:
        env = server_env(
            simulator.url, tmp_path / f"cache-{n}", CTE1_AUDIT_LOG=str(log), CTE1_LOG_LEVEL="WARNING"
        )
        async with stdio_server(env) as client:
            structured(await client.call_tool("get_call_metadata", EXAMPLE))
            async with anyio.create_task_group() as group:
                for _ in range(calls):
                    group.start_soon(client.call_tool, "get_call_metadata", EXAMPLE)

    async with anyio.create_task_group() as group:
        group.start_soon(burst, 1)
        group.start_soon(burst, 2)
    raw = log.read_bytes()
    assert raw.endswith(b"\n")
    entries = lines(log)  # every line parses: none was cut or interleaved
    assert len(entries) == 2 * (calls + 1)
    assert len({e["server"]["pid"] for e in entries}) == 2
    assert all(e["outcome"] == "ok" for e in entries)


@pytest.mark.parametrize(
    "problem", ["open", "symlink", "missing_dir", "directory", "fifo", "socket", "device"]
)
def test_a_bad_audit_log_stops_start_up(simulator: Any, tmp_path: Path, problem: str) -> None:
    # Before: a FIFO (no reader) made the server wait in open(2) for ever, with no message.
    log = tmp_path / "audit.jsonl"
    listener = socket.socket(socket.AF_UNIX)
    if problem == "fifo":
        os.mkfifo(log, 0o600)
    elif problem == "socket":
        listener.bind(str(log))
        log.chmod(0o600)
    elif problem == "device":
        os.mknod(log, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers
    elif problem == "open":
        log.write_text("")
        log.chmod(0o644)
    elif problem == "symlink":
        log.symlink_to(tmp_path / "elsewhere.jsonl")
    elif problem == "missing_dir":
        log = tmp_path / "no-such-dir" / "audit.jsonl"
    else:
        log.mkdir()
    env = server_env(simulator.url, tmp_path / "cache", CTE1_AUDIT_LOG=str(log))
    done = subprocess.run(
        [sys.executable, "-m", "cte1_mcp"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    listener.close()
    assert done.returncode == 2, done.stderr
    assert "CTE1_AUDIT_LOG" in done.stderr
    assert "Traceback" not in done.stderr
    if problem == "open":
        assert f"chmod 600 {log}" in done.stderr
    if problem in ("fifo", "socket", "device", "directory"):
        assert "is not a regular file" in done.stderr


async def test_a_fifo_swapped_in_refuses_the_call_without_blocking(simulator: Any, tmp_path: Path) -> None:
    # Before: the line's open(2) waited for a reader of the FIFO: the call never returned.
    log = tmp_path / "audit.jsonl"
    env = server_env(simulator.url, tmp_path / "cache", CTE1_AUDIT_LOG=str(log))
    async with stdio_server(env) as client:
        structured(await client.call_tool("get_call_metadata", EXAMPLE))
        log.unlink()
        os.mkfifo(log, 0o600)
        with anyio.fail_after(30):  # a bound on a hang, not a timing: the answer takes milliseconds
            result = await client.call_tool("get_call_metadata", EXAMPLE)
        assert text(result).startswith("[storage_error]")
        assert "is not a regular file" in text(result)
        assert str(tmp_path) not in text(result)  # no server paths in client texts
        log.unlink()  # a regular file again: the server goes on
        structured(await client.call_tool("get_call_metadata", EXAMPLE))
    assert [line["outcome"] for line in lines(log)] == ["ok"]


@needs_mounts
async def test_a_full_disk_leaves_whole_lines_only(simulator: Any, tmp_path: Path) -> None:
    # Before: the line that did not fit stayed cut, and the next one was glued onto it.
    disk = tmp_path / "disk"  # an 8 KiB tmpfs in the server's own mount namespace
    disk.mkdir()
    log = disk / "audit.jsonl"
    env = server_env(simulator.url, tmp_path / "cache", CTE1_AUDIT_LOG=str(log))
    async with namespaced_server(
        env, f"mount -t tmpfs -o size=8k,mode=0700 tmpfs {disk}", tmp_path
    ) as server:
        server.inside(disk / "ballast").write_bytes(b"\0" * 4096)
        outcomes = []
        while len(outcomes) < 40 and "storage_error" not in outcomes[-1:]:
            result = await server.client.call_tool("get_call_metadata", EXAMPLE)
            outcomes.append("storage_error" if text(result).startswith("[storage_error]") else "ok")
        again = await server.client.call_tool("get_call_metadata", EXAMPLE)  # the disk is full to the byte
        assert text(again).startswith("[storage_error]")
        full = lines(server.inside(log))  # every line parses
        assert outcomes[-1] == "storage_error" and len(full) == len(outcomes) - 1 > 5
        server.inside(disk / "ballast").unlink()  # the operator makes room
        structured(await server.client.call_tool("get_call_metadata", EXAMPLE))
        raw = server.inside(log).read_bytes()
    assert raw.endswith(b"\n")
    entries = [json.loads(line) for line in raw.splitlines()]
    assert [e["outcome"] for e in entries] == ["ok"] * len(entries) and len(entries) == len(full) + 1


async def test_a_cut_tail_is_removed_before_the_next_line(simulator: Any, tmp_path: Path) -> None:
    # Before: the next line was appended to the cut one: one unreadable line, one record lost.
    log = tmp_path / "audit.jsonl"
    whole = json.dumps({"time": "2026-12-01T00:00:00.000Z", "outcome": "ok"})
    cut = '{"time":"2026-12-01T00:00:01.0'  # a crash mid-write
    log.write_text(whole + "\n" + cut)
    log.chmod(0o600)
    env = server_env(simulator.url, tmp_path / "cache", CTE1_AUDIT_LOG=str(log))
    with (tmp_path / "stderr").open("w") as errlog:
        async with stdio_server(env, errlog) as client:
            structured(await client.call_tool("get_call_metadata", EXAMPLE))
    first, second = lines(log)
    assert first == json.loads(whole)
    assert (second["tool"], second["outcome"]) == ("get_call_metadata", "ok")
    assert f"ended in a cut line; removed its {len(cut)} bytes" in (tmp_path / "stderr").read_text()


async def test_nothing_is_served_when_the_line_cannot_be_written(simulator: Any, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    env = server_env(simulator.url, tmp_path / "cache", CTE1_AUDIT_LOG=str(log))
    async with stdio_server(env) as client:
        structured(await client.call_tool("get_call_metadata", EXAMPLE))
        log.unlink()
        log.mkdir()  # the path can no longer be appended to
        result = await client.call_tool("get_call_metadata", EXAMPLE)
        with pytest.raises(MCPError) as caught:
            await client.read_resource("cte1://calls/05053698341/942125/1/metadata")
    assert result.is_error
    assert text(result).startswith("[storage_error]")
    assert "CTE1_AUDIT_LOG" in text(result)
    assert "08075082398" not in text(result)  # no metadata leaked with the refusal
    assert caught.value.data["code"] == "storage_error"


async def test_only_the_call_that_caused_the_request_is_marked(simulator: Any, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    env = server_env(simulator.url, tmp_path / "cache", CTE1_AUDIT_LOG=str(log))
    async with stdio_server(env) as client, anyio.create_task_group() as group:
        for _ in range(5):  # joined to one download, or served from the store after it
            group.start_soon(client.call_tool, "get_call_audio", EXAMPLE)
    entries = lines(log)
    assert len(entries) == 5
    assert [e["upstreamRequest"] for e in entries].count(True) == 1 == len(simulator.state.requests)


async def test_a_call_the_client_cancels_is_recorded(simulator: Any, tmp_path: Path) -> None:
    log = tmp_path / "audit.jsonl"
    env = server_env(
        simulator.url, tmp_path / "cache", CTE1_AUDIT_LOG=str(log), CTE1_MIN_INTERVAL_SECONDS="30"
    )
    async with stdio_server(env) as client:
        structured(await client.call_tool("get_call_metadata", EXAMPLE))
        with anyio.CancelScope() as scope:

            async def cancel_once_waiting(progress: float, total: float | None, message: str | None) -> None:
                scope.cancel()  # the second call waits 30 s for the spacing: give up on it

            await client.call_tool("get_call_metadata", SHORT, progress_callback=cancel_once_waiting)
        structured(await client.call_tool("get_call_audio", EXAMPLE))  # the server goes on
    outcomes = [(e["call"], e["outcome"]) for e in lines(log)]
    assert ("05053698341/942126/1", "cancelled") in outcomes, outcomes
    assert len(simulator.state.requests) == 1


async def test_a_line_is_written_off_the_event_loop_even_for_a_cancelled_caller(tmp_path: Path) -> None:
    # Before: the line was written with blocking calls on the event loop (a slow disk held every
    # session), and an await there would have been cancelled with the call it records.
    log = AuditLog(tmp_path / "audit.jsonl")
    loop_thread = threading.get_ident()
    writers: list[int] = []
    write = log.write

    def spy(entry: AuditEntry) -> None:
        writers.append(threading.get_ident())
        write(entry)

    log.write = spy  # type: ignore[method-assign]
    entry = AuditEntry(
        operation="tools/call",
        transport="stdio",
        identity=None,
        client_name=None,
        tool="get_call_audio",
        resource=None,
        call="05053698341/942125/1",
        outcome="cancelled",
        bytes_served=0,
        upstream_request=False,
    )
    with anyio.CancelScope() as scope:
        scope.cancel()
        await log.append(entry)
    assert writers and writers[0] != loop_thread
    assert [line["outcome"] for line in lines(tmp_path / "audit.jsonl")] == ["cancelled"]
