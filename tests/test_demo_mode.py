"""Demo mode as a client meets it: started exactly as ``config --demo`` prints it, it labels the
simulator's channels and names its sample calls (instructions, resources/list) with no README."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters

from cte1_mcp.demo_mode import demo_calls
from cte1_mcp.mcp_server import INSTRUCTIONS
from cte1_mcp.simulator import SAMPLE_CALLS
from tests.mcp_harness import IN_PROGRESS, server_env, stdio_server, structured, text

pytestmark = pytest.mark.anyio

CLI = [sys.executable, "-m", "cte1_mcp"]
#: The shortest two-channel sample (45 s): the first recording of the transferred call.
TRANSFERRED_1 = {"tenantId": "05053698341", "sessionId": 942130, "recordId": 1}


def printed_demo_entry() -> dict[str, Any]:
    done = subprocess.run(
        [*CLI, "config", "--demo"], capture_output=True, text=True, timeout=30, check=True, env=_no_cte1()
    )
    entry: dict[str, Any] = json.loads(done.stdout)["mcpServers"]["cte1-demo"]
    return entry


def _no_cte1() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CTE1_")}


def _ids(call: dict[str, Any]) -> str:
    return f"tenantId {call['tenantId']!r}, sessionId {call['sessionId']}, recordId {call['recordId']}"


async def test_the_printed_demo_entry_names_customer_and_agent_and_its_samples(tmp_path: Path) -> None:
    # Before: `serve --demo` ran without CTE1_CHANNEL_ROLES (only the walkthrough set it): analytics
    # said "channel 0/1", a clip of channel "agent" was [invalid_parameter], and the instructions
    # and an empty resources/list named no call.
    entry = printed_demo_entry()
    params = StdioServerParameters(
        command=entry["command"],
        args=entry["args"],
        # As a desktop client starts it: only the entry's env, no CTE1_* from a shell.
        env={**entry.get("env", {}), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TMPDIR": str(tmp_path)},
    )
    async with Client(params, read_timeout_seconds=60) as client:
        instructions = client.instructions or ""
        listed = [str(r.uri) for r in (await client.list_resources()).resources]
        analytics = structured(
            await client.call_tool("get_call_analytics", {**TRANSFERRED_1, "timeline": False})
        )["analytics"]
        clip = await client.call_tool("get_call_clip", {**TRANSFERRED_1, "endSeconds": 5, "channel": "agent"})
        in_progress = await client.call_tool("get_call_metadata", IN_PROGRESS)
    assert [p["label"] for p in analytics["parties"]] == ["customer", "agent"]
    assert not clip.is_error, text(clip)
    assert instructions.startswith(INSTRUCTIONS)
    assert "DEMO MODE" in instructions
    for call in (TRANSFERRED_1, IN_PROGRESS):
        assert _ids(call) in instructions
    assert f"{_ids(IN_PROGRESS)}: Call still in progress" in instructions
    assert "answers [call_in_progress]" in instructions
    assert text(in_progress).startswith("[call_in_progress]")  # as the instructions say
    # Before anything was stored: the readable samples' metadata.
    assert "cte1://calls/05053698341/942125/1/metadata" in listed
    assert "cte1://calls/05053698341/942130/2/metadata" in listed
    assert "cte1://calls/05053698341/942140/1/metadata" not in listed  # answers an error
    assert all(uri.endswith("/metadata") for uri in listed)


async def test_every_sample_answers_as_the_instructions_say(simulator: Any, tmp_path: Path) -> None:
    """The outcome each line announces is the one the tools give (the shared simulator has no
    spacing, so every sample is asked at once)."""
    env = {
        **_no_cte1(),
        "CTE1_MIN_INTERVAL_SECONDS": "0",
        "TMPDIR": str(tmp_path),
        "CTE1_LOG_LEVEL": "WARNING",
    }
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "cte1_mcp", "serve", "--demo", "--simulator", simulator.url],
        env=env,
    )
    calls = demo_calls()
    assert [c.key.request_body() for c in calls] == [
        {"tenantId": s.tenant_id, "sessionId": s.session_id, "recordId": s.record_id} for s in SAMPLE_CALLS
    ]
    async with Client(params, read_timeout_seconds=60) as client:
        instructions = client.instructions or ""
        listed = {str(r.uri) for r in (await client.list_resources()).resources}
        for call in calls:
            assert call.line() in instructions
            result = await client.call_tool("get_call_metadata", call.key.request_body())
            if call.answers is None:
                assert not result.is_error, (call.key, text(result))
            else:
                assert text(result).startswith(f"[{call.answers}]"), (call.key, text(result))
            assert (call.key.uri("metadata") in listed) == (call.answers is None and call.listed)
        assert sum(c.listed for c in calls) >= 5
        # Once stored, a sample is listed by the store: audio and metadata, no duplicate.
        after = [str(r.uri) for r in (await client.list_resources()).resources]
    assert len(after) == len(set(after))
    assert "cte1://calls/05053698341/942125/1/audio" in after


async def test_outside_demo_mode_nothing_is_added(simulator: Any, tmp_path: Path) -> None:
    async with stdio_server(server_env(simulator.url, tmp_path / "cache")) as client:
        assert client.instructions == INSTRUCTIONS
        assert (await client.list_resources()).resources == []
