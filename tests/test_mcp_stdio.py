"""What only the real subprocess over stdio shows: start-up through ``python -m cte1_mcp``, the
local file handed to the client, progress notifications on the wire, the process's own log
lines, and a disk that refuses writes. Everything else runs in-process (test_mcp_tools.py,
test_mcp_resources.py, test_mcp_upstream.py)."""

from __future__ import annotations

import base64
import hashlib
import sys
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp_types import BlobResourceContents

from tests.mcp_harness import (
    CLIP_MAX_SECONDS,
    EXAMPLE,
    PCM_STEREO,
    SMALL,
    check_analysis_surface,
    server_env,
    stdio_server,
    structured,
    text,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def env(simulator: Any, tmp_path: Path) -> dict[str, str]:
    return server_env(simulator.url, tmp_path / "cache")


async def test_stdio_end_to_end_local_file_and_resource(env: dict[str, str], simulator: Any) -> None:
    async with stdio_server(env) as client:
        assert client.server_capabilities is not None
        assert client.server_capabilities.prompts is None
        assert {"get_call_metadata", "get_call_audio"} <= {t.name for t in (await client.list_tools()).tools}
        result = await client.call_tool("get_call_audio", EXAMPLE)
        audio = structured(result)["audio"]
        # the server's file, on the client's machine: complete and private
        path = Path(audio["path"])
        assert path.is_absolute()
        data = path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == audio["sha256"]
        assert path.stat().st_mode & 0o077 == 0
        assert audio["path"] in structured(result)["summary"]
        read = await client.read_resource(audio["uri"])
        blob = read.contents[0]
        assert isinstance(blob, BlobResourceContents)
        assert base64.b64decode(blob.blob) == data
        error = await client.call_tool("no_such_tool", {})
        assert text(error).startswith("[unknown_tool]")
    assert len(simulator.state.requests) == 1


async def test_progress_while_waiting_for_spacing_and_downloading(simulator: Any, tmp_path: Path) -> None:
    env = server_env(simulator.url, tmp_path, CTE1_MIN_INTERVAL_SECONDS="1.5")
    events: list[tuple[float, float | None, str | None]] = []

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        events.append((progress, total, message))

    async with stdio_server(env) as client:
        structured(await client.call_tool("get_call_metadata", EXAMPLE))
        structured(await client.call_tool("get_call_audio", PCM_STEREO, progress_callback=progress))
    waiting = [e for e in events if e[2] and e[2].startswith("waiting")]
    downloading = [e for e in events if e[2] and e[2].startswith("received")]
    assert waiting, events
    assert downloading, events
    assert downloading[-1][1] is not None
    assert downloading[-1][0] <= downloading[-1][1]
    values = [e[0] for e in events]
    assert values == sorted(values)
    assert len(set(values)) == len(values)  # strictly increasing, as the protocol requires


async def test_analysis_progress_totals_the_seconds_its_messages_count(
    simulator: Any, tmp_path: Path
) -> None:
    # Before: analysis progress had total null while its message said "Analysed 32 of 280 s".
    events: list[tuple[float, float | None, str | None]] = []

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        events.append((progress, total, message))

    async with stdio_server(server_env(simulator.url, tmp_path)) as client:
        structured(await client.call_tool("get_call_metadata", EXAMPLE))  # stored: analysis alone
        structured(await client.call_tool("get_call_analytics", EXAMPLE, progress_callback=progress))
        analysed_alone = list(events)
        events.clear()
        # Downloaded and analysed in one request: seconds cannot go on from the bytes.
        structured(await client.call_tool("get_call_analytics", PCM_STEREO, progress_callback=progress))
    counted = [e for e in analysed_alone if e[2] and e[2].startswith("Analysed ")]
    assert counted, analysed_alone
    for done, total, message in counted:
        assert message == f"Analysed {done:.0f} of {total:.0f} s"
    assert all(total == pytest.approx(280.447, abs=0.1) for _, total, _ in analysed_alone), analysed_alone
    assert analysed_alone[-1][0] == analysed_alone[-1][1]  # "Analysis done": all of it
    values = [e[0] for e in analysed_alone]
    assert values == sorted(values) and len(set(values)) == len(values)
    received = [e for e in events if e[2] and e[2].startswith("received")]
    analysing = [e for e in events if e[2] and e[2].startswith("Analys")]
    assert received and analysing, events
    assert all(total is not None and done <= total for done, total, _ in received)
    assert all(total is None for _, total, _ in analysing)  # no total a byte count would contradict
    values = [e[0] for e in events]
    assert values == sorted(values) and len(set(values)) == len(values)


async def test_the_process_log_masks_numbers_and_bounds_client_input(simulator: Any, tmp_path: Path) -> None:
    """Everything the process writes to stderr at DEBUG (ours, the SDK's, httpx's): no full phone
    number when CTE1_MASK_NUMBERS is on, and no line holding a 1 MB URI or argument name."""
    env = server_env(simulator.url, tmp_path / "cache", CTE1_MASK_NUMBERS="true", CTE1_LOG_LEVEL="DEBUG")
    log = tmp_path / "stderr.log"
    with log.open("w") as errlog:
        async with stdio_server(env, errlog=errlog) as client:
            call = structured(await client.call_tool("get_call_metadata", EXAMPLE))
            structured(await client.call_tool("get_call_audio", {**SMALL, "inline": True}))
            await client.read_resource("cte1://calls/05053698341/942125/1/metadata")
            await client.list_resources()
            with pytest.raises(MCPError):
                await client.read_resource("cte1://calls/05053698341/" + "9" * 1_000_000 + "/1/audio")
            refused = await client.call_tool("get_call_metadata", {**EXAMPLE, "x" * 1_000_000: 1})
    assert call["ani"] == "*******2398"
    assert text(refused).startswith("[unknown_parameter]")
    written = log.read_text()
    assert "DEBUG" in written  # the level took effect: the check below means something
    assert "08075082398" not in written
    assert "05053698333" not in written
    assert max(len(line) for line in written.splitlines()) < 5000


async def test_storage_error_when_the_disk_refuses(simulator: Any, tmp_path: Path) -> None:
    env = server_env(simulator.url, tmp_path / "cache")
    # The server process may not write files over 64 KiB (RLIMIT_FSIZE): the disk-full case.
    script = (
        "import resource, runpy, signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
        "resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536)); "
        "runpy.run_module('cte1_mcp', run_name='__main__')"
    )
    params = StdioServerParameters(command=sys.executable, args=["-c", script], env=env)
    async with Client(params, read_timeout_seconds=60) as client:
        result = await client.call_tool("get_call_audio", EXAMPLE)
    assert result.is_error
    assert "[storage_error]" in text(result)
    assert "CTE1_CACHE_DIR" in text(result)
    assert str(tmp_path) not in text(result)
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and "audio" in p.name]


async def test_analytics_clips_and_their_resources_over_stdio(simulator: Any, tmp_path: Path) -> None:
    env = server_env(
        simulator.url,
        tmp_path / "cache",
        CTE1_CHANNEL_ROLES="customer,agent",
        CTE1_CLIP_MAX_SECONDS=str(CLIP_MAX_SECONDS),
    )
    async with stdio_server(env) as client:
        await check_analysis_surface(client, simulator, local=True)
