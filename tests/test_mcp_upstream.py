"""How upstream answers reach an MCP client: the official client in this process (in-memory
transport) against the real service and the simulator on loopback (faults, clock, rate limit)."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from cte1_mcp.simulator import Fault, SimulatorConfig, SimulatorState, run_in_thread
from tests.mcp_harness import EXAMPLE, SMALL, TRANSFERRED_2, call_uri, in_process, structured, text

pytestmark = pytest.mark.anyio


def requests(simulator: Any) -> int:
    return len(simulator.state.requests)


async def test_metadata_then_audio_then_resources_cost_one_request(simulator: Any, tmp_path: Path) -> None:
    async with in_process(simulator.url, tmp_path) as client:
        structured(await client.call_tool("get_call_metadata", EXAMPLE))
        structured(await client.call_tool("get_call_audio", EXAMPLE))
        await client.read_resource(call_uri(EXAMPLE))
        await client.read_resource(call_uri(EXAMPLE, "metadata"))
    assert requests(simulator) == 1


async def test_recording_expired_without_spending_another_request(tmp_path: Path) -> None:
    # Sample calls placed 40 days ago, the simulator's clock then: it serves the example call as
    # fresh, but by the server's clock the call is more than 31 days old.
    past = datetime.now(UTC) - timedelta(days=40)
    state = SimulatorState(epoch=past)
    state.set_now(past + timedelta(hours=3))
    with run_in_thread(SimulatorConfig(port=0, min_interval=0), state=state) as simulator:
        async with in_process(simulator.url, tmp_path) as client:
            first = await client.call_tool("get_call_metadata", EXAMPLE)
            second = await client.call_tool("get_call_audio", EXAMPLE)
            with pytest.raises(MCPError, match=r"\[recording_expired\]"):
                await client.read_resource(call_uri(EXAMPLE))
            assert (await client.list_resources()).resources == []
        assert requests(simulator) == 1
    for result in (first, second):
        assert result.is_error
        assert "[recording_expired]" in text(result)
        assert "31 days" in text(result)
    assert not list(tmp_path.rglob("audio*"))


async def test_wrong_source_uuid(simulator: Any, tmp_path: Path) -> None:
    async with in_process(
        simulator.url, tmp_path, source_uuid="00000000-0000-4000-8000-000000000000"
    ) as client:
        result = await client.call_tool("get_call_metadata", EXAMPLE)
    assert "[upstream_ip_not_allowed]" in text(result)


async def test_rate_limited_with_retry_hint(make_simulator: Any, tmp_path: Path) -> None:
    simulator = make_simulator(min_interval=120)
    async with in_process(simulator.url, tmp_path) as client:
        structured(await client.call_tool("get_call_metadata", EXAMPLE))
        result = await client.call_tool("get_call_metadata", TRANSFERRED_2)
        # A pause longer than is worth waiting out: a third call is told so at once, without
        # spending (and wasting) another request.
        third = await client.call_tool("get_call_metadata", SMALL)
    for refused in (result, third):
        assert refused.is_error
        assert "[rate_limited]" in text(refused)
        assert re.search(r"Retry after 1[12][0-9] s", text(refused))
    assert [r.outcome for r in simulator.state.requests] == ["ok", "rate_limited"]


async def test_retry_after_holds_every_request_back_and_is_reported(simulator: Any, tmp_path: Path) -> None:
    simulator.state.fail_next(
        Fault(
            status=429,
            body=b'{"status": "error", "description": "too many requests"}',
            headers=(("Retry-After", "2"),),
        )
    )
    events: list[str | None] = []

    async def progress(progress: float, total: float | None, message: str | None) -> None:
        events.append(message)

    results: list[Any] = []
    async with in_process(simulator.url, tmp_path) as client:

        async def call(arguments: dict[str, Any], **kwargs: Any) -> None:
            results.append(await client.call_tool("get_call_metadata", arguments, **kwargs))

        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: call(EXAMPLE, progress_callback=progress))
            await anyio.sleep(0.5)  # the 429 has arrived; another call must wait for it too
            tg.start_soon(lambda: call(SMALL))
    assert all(not r.is_error for r in results), [text(r) for r in results]
    log = simulator.state.requests
    assert [r.outcome for r in log] == ["fault", "ok", "ok"]
    assert log[1].monotonic - log[0].monotonic >= 1.9
    assert log[2].monotonic - log[0].monotonic >= 1.9  # the other call was held back too
    assert any(m and m.startswith("waiting") for m in events)


async def test_a_503_with_retry_after_holds_back_its_retry_and_every_other_request(
    simulator: Any, tmp_path: Path
) -> None:
    """Retry-After on an outage is the platform's word as much as on a 429: the failed request is
    retried after it, not at the spacing, and a request queued meanwhile waits for it as well."""
    page = b"<html><body><h1>503 Service Unavailable</h1></body></html>"
    simulator.state.fail_next(
        Fault(status=503, body=page, content_type="text/html", headers=(("Retry-After", "2"),))
    )
    results: list[Any] = []
    async with in_process(simulator.url, tmp_path) as client:

        async def call(arguments: dict[str, Any]) -> None:
            results.append(await client.call_tool("get_call_metadata", arguments))

        async with anyio.create_task_group() as tg:
            tg.start_soon(call, EXAMPLE)
            with anyio.fail_after(20):
                while not simulator.state.requests:
                    await anyio.sleep(0.02)
            await anyio.sleep(0.2)  # the 503 has been answered; another call must wait for it too
            tg.start_soon(call, SMALL)
    assert all(not r.is_error for r in results), [text(r) for r in results]
    log = simulator.state.requests
    assert [r.outcome for r in log] == ["fault", "ok", "ok"]
    assert min(r.monotonic for r in log[1:]) - log[0].monotonic >= 2.0


async def test_rate_limited_without_retry_after_still_says_when(simulator: Any, tmp_path: Path) -> None:
    for _ in range(3):
        simulator.state.fail_next(
            Fault(body='{"status": "error", "description": "リクエスト間隔が短すぎます"}'.encode())
        )
    async with in_process(simulator.url, tmp_path) as client:
        result = await client.call_tool("get_call_metadata", EXAMPLE)
    assert result.is_error
    assert "[rate_limited]" in text(result)
    assert "リクエスト間隔が短すぎます" in text(result)
    assert re.search(r"Retry after \d+ s", text(result))
    assert requests(simulator) == 3


async def test_a_truncated_download_is_retried_and_nothing_partial_is_kept(
    simulator: Any, tmp_path: Path
) -> None:
    simulator.state.fail_next(Fault(truncate_after=100_000))
    async with in_process(simulator.url, tmp_path) as client:
        audio = structured(await client.call_tool("get_call_audio", EXAMPLE))["audio"]
    assert hashlib.sha256(Path(audio["path"]).read_bytes()).hexdigest() == audio["sha256"]
    assert requests(simulator) == 2


async def test_upstream_bad_response_after_every_attempt_is_cut_off(simulator: Any, tmp_path: Path) -> None:
    for _ in range(3):
        simulator.state.fail_next(Fault(truncate_after=100_000))
    async with in_process(simulator.url, tmp_path) as client:
        result = await client.call_tool("get_call_audio", EXAMPLE)
        assert (await client.list_resources()).resources == []
    assert result.is_error
    assert "[upstream_bad_response]" in text(result)
    assert requests(simulator) == 3
    assert not list(tmp_path.rglob("audio*"))


async def test_malformed_metadata_is_not_retried(simulator: Any, tmp_path: Path) -> None:
    boundary = "b0undary"
    body = (
        f"--{boundary}\r\nContent-Type: application/json\r\n\r\nnot json\r\n"
        f"--{boundary}\r\nContent-Type: audio/wav\r\n\r\nRIFF\r\n--{boundary}--\r\n"
    ).encode()
    simulator.state.fail_next(Fault(body=body, content_type=f"multipart/form-data; boundary={boundary}"))
    async with in_process(simulator.url, tmp_path) as client:
        result = await client.call_tool("get_call_metadata", EXAMPLE)
    assert "[upstream_bad_response]" in text(result)
    assert requests(simulator) == 1


async def test_unreachable_platform(tmp_path: Path) -> None:
    async with in_process("http://127.0.0.1:9", tmp_path) as client:
        result = await client.call_tool("get_call_metadata", EXAMPLE)
    assert result.is_error
    assert "[upstream_unavailable]" in text(result)
    assert "Traceback" not in text(result)


async def test_audio_too_large_keeps_nothing(simulator: Any, tmp_path: Path) -> None:
    async with in_process(simulator.url, tmp_path, max_audio_bytes=4096) as client:
        result = await client.call_tool("get_call_audio", EXAMPLE)
        assert "[audio_too_large]" in text(result)
        assert (await client.list_resources()).resources == []
    assert not list(tmp_path.rglob("audio*"))
