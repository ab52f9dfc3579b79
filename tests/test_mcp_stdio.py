"""End to end: the official MCP client ↔ the server as a subprocess over stdio ↔ the simulator on loopback."""

from __future__ import annotations

import base64
import hashlib
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp_types import AudioContent, BlobResourceContents, ResourceLink, TextResourceContents

from cte1_mcp.simulator import DEFAULT_API_KEY, Fault, SimulatorConfig, SimulatorState, run_in_thread
from tests.mcp_harness import EXAMPLE, server_env, stdio_server, structured, text

pytestmark = pytest.mark.anyio

# Sample calls of the simulator's catalogue (see README "Sample calls").
SMALL = {"tenantId": "05053698341", "sessionId": 942126, "recordId": 1}  # ~156 KiB: under 512 KiB
LARGE = EXAMPLE  # ~4.3 MiB: over 512 KiB
TRANSFERRED_2 = {"tenantId": "05053698341", "sessionId": 942130, "recordId": 2}
IN_PROGRESS = {"tenantId": "05053698341", "sessionId": 942140, "recordId": 1}
OLD = {"tenantId": "05058085500", "sessionId": 35080001, "recordId": 1}
PCM_STEREO = {"tenantId": "05058085500", "sessionId": 35087858, "recordId": 1}  # ~2.3 MiB 16-bit PCM
FOREIGN = {"tenantId": "0120000000", "sessionId": 1, "recordId": 1}
UNKNOWN = {"tenantId": "05053698341", "sessionId": 999999, "recordId": 1}


def audio_requests(simulator: Any) -> int:
    """Requests that reached the platform's endpoint, whatever it answered."""
    return len(simulator.state.requests)


@pytest.fixture
def env(simulator: Any, tmp_path: Path) -> dict[str, str]:
    return server_env(simulator.url, tmp_path / "cache")


# --- discovery --------------------------------------------------------------------------------


async def test_tools_are_listed_with_strict_schemas_and_annotations(env: dict[str, str]) -> None:
    async with stdio_server(env) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        assert set(tools) == {"get_call_metadata", "get_call_audio"}
        for name, tool in tools.items():
            schema = tool.input_schema
            assert schema["additionalProperties"] is False
            assert set(schema["required"]) == {"tenantId", "sessionId", "recordId"}
            for prop in schema["properties"]:
                assert re.fullmatch(r"^[a-zA-Z0-9_.-]{1,64}$", prop)
            assert schema["properties"]["tenantId"]["type"] == "string"
            assert schema["properties"]["sessionId"]["type"] == "integer"
            assert schema["properties"]["sessionId"]["minimum"] == 1
            assert all(p.get("description") for p in schema["properties"].values())
            assert tool.annotations is not None
            assert tool.annotations.title
            assert tool.annotations.read_only_hint is True
            assert tool.annotations.idempotent_hint is True
            assert tool.annotations.open_world_hint is True
            assert tool.output_schema is not None, name
        assert set(tools["get_call_audio"].input_schema["properties"]) == {
            "tenantId",
            "sessionId",
            "recordId",
            "inline",
        }
        assert tools["get_call_audio"].input_schema["properties"]["inline"]["default"] is False
        audio_out = tools["get_call_audio"].output_schema
        assert audio_out is not None
        assert set(audio_out["required"]) >= {"call", "audio"}
        assert "5 seconds" in (client.instructions or "")


# --- the tools ----------------------------------------------------------------------------------


async def test_metadata_has_platform_fields_and_derived_ones(env: dict[str, str]) -> None:
    async with stdio_server(env) as client:
        result = await client.call_tool("get_call_metadata", EXAMPLE)
    call = structured(result)
    assert call["status"] == "complete"
    assert call["tenantId"] == "05053698341"
    assert call["sessionId"] == 942125
    assert call["recordId"] == 1
    assert call["direction"] in (0, 1)
    assert call["directionLabel"] == ("inbound" if call["direction"] == 0 else "outbound")
    for field in ("ani", "dnis", "agentId", "agentName", "skillName", "groupId", "groupName"):
        assert isinstance(call[field], str)
    connected = datetime.fromisoformat(call["connectTime"])
    disconnected = datetime.fromisoformat(call["disconnectTime"])
    assert call["durationSeconds"] == pytest.approx((disconnected - connected).total_seconds())
    assert datetime.fromisoformat(call["availableUntil"]) == connected + timedelta(days=31)
    assert call["audioUri"] == "cte1://calls/05053698341/942125/1/audio"
    assert call["connectTime"].endswith("Z")  # the platform's own string, untouched
    assert "942125" in text(result)


async def test_audio_result_link_path_and_exact_bytes(env: dict[str, str], simulator: Any) -> None:
    async with stdio_server(env) as client:
        result = await client.call_tool("get_call_audio", EXAMPLE)
        payload = structured(result)
        audio = payload["audio"]
        assert payload["call"]["sessionId"] == 942125
        assert audio["uri"] == "cte1://calls/05053698341/942125/1/audio"
        assert audio["mimeType"] == "audio/wav"
        assert audio["sampleRate"] == 8000
        assert audio["channels"] in (1, 2)
        assert audio["encoding"] in ("pcm", "mulaw")
        assert audio["durationSeconds"] > 0
        assert audio["inlined"] is False
        links = [c for c in result.content if isinstance(c, ResourceLink)]
        assert len(links) == 1
        assert str(links[0].uri) == audio["uri"]
        assert links[0].mime_type == "audio/wav"
        assert links[0].size == audio["sizeBytes"]
        assert not [c for c in result.content if isinstance(c, AudioContent)]
        assert "inline=true" not in text(result)  # 4.3 MiB: asking for it inline would be a wasted call
        # over stdio the local file is named, complete and private
        path = Path(audio["path"])
        assert path.is_absolute()
        data = path.read_bytes()
        assert len(data) == audio["sizeBytes"]
        assert hashlib.sha256(data).hexdigest() == audio["sha256"]
        assert path.stat().st_mode & 0o077 == 0
        # the resource carries exactly the same bytes
        read = await client.read_resource(audio["uri"])
        blob = read.contents[0]
        assert isinstance(blob, BlobResourceContents)
        assert blob.mime_type == "audio/wav"
        assert hashlib.sha256(base64.b64decode(blob.blob)).hexdigest() == audio["sha256"]
        assert data[:4] == b"RIFF"


async def test_inline_under_the_limit_carries_the_audio(env: dict[str, str]) -> None:
    async with stdio_server(env) as client:
        plain = await client.call_tool("get_call_audio", SMALL)
        result = await client.call_tool("get_call_audio", {**SMALL, "inline": True})
    assert "call again with inline=true" in text(plain)  # the hint for clients that ignore links
    audio = structured(result)["audio"]
    assert audio["sizeBytes"] <= 512 * 1024
    assert audio["inlined"] is True
    blocks = [c for c in result.content if isinstance(c, AudioContent)]
    assert len(blocks) == 1
    assert blocks[0].mime_type == "audio/wav"
    assert hashlib.sha256(base64.b64decode(blocks[0].data)).hexdigest() == audio["sha256"]


async def test_inline_over_the_limit_is_not_an_error(env: dict[str, str]) -> None:
    async with stdio_server(env) as client:
        result = await client.call_tool("get_call_audio", {**LARGE, "inline": True})
    audio = structured(result)["audio"]
    assert audio["sizeBytes"] > 512 * 1024
    assert audio["inlined"] is False
    assert not [c for c in result.content if isinstance(c, AudioContent)]
    assert "inline limit" in text(result)
    assert audio["uri"] in text(result)


async def test_inline_limit_is_configurable_and_inclusive(simulator: Any, tmp_path: Path) -> None:
    async with stdio_server(server_env(simulator.url, tmp_path)) as client:
        size = structured(await client.call_tool("get_call_audio", SMALL))["audio"]["sizeBytes"]
    exact = server_env(simulator.url, tmp_path, CTE1_INLINE_AUDIO_MAX_BYTES=str(size))
    async with stdio_server(exact) as client:
        assert structured(await client.call_tool("get_call_audio", {**SMALL, "inline": True}))["audio"][
            "inlined"
        ]
    below = server_env(simulator.url, tmp_path, CTE1_INLINE_AUDIO_MAX_BYTES=str(size - 1))
    async with stdio_server(below) as client:
        result = await client.call_tool("get_call_audio", {**SMALL, "inline": True})
        assert structured(result)["audio"]["inlined"] is False


# --- resources ---------------------------------------------------------------------------------


async def test_resources_templates_list_and_metadata_read(env: dict[str, str]) -> None:
    async with stdio_server(env) as client:
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        assert templates == {
            "cte1://calls/{tenantId}/{sessionId}/{recordId}/audio",
            "cte1://calls/{tenantId}/{sessionId}/{recordId}/metadata",
        }
        assert (await client.list_resources()).resources == []
        # a resource read fetches on demand, under the same rules
        read = await client.read_resource("cte1://calls/05053698341/942125/1/metadata")
        content = read.contents[0]
        assert isinstance(content, TextResourceContents)
        assert content.mime_type == "application/json"
        assert '"sessionId":942125' in content.text.replace(" ", "")
        listed = {str(r.uri): r for r in (await client.list_resources()).resources}
        audio = listed["cte1://calls/05053698341/942125/1/audio"]
        assert audio.mime_type == "audio/wav"
        assert audio.size and audio.size > 0
        assert "cte1://calls/05053698341/942125/1/metadata" in listed


async def test_resource_read_errors_carry_the_code(env: dict[str, str], simulator: Any) -> None:
    async with stdio_server(env) as client:
        with pytest.raises(MCPError, match=r"\[invalid_parameter\]"):
            await client.read_resource("cte1://calls/abc/942125/1/audio")
        with pytest.raises(MCPError, match=r"\[invalid_parameter\]"):
            await client.read_resource("cte1://calls/05053698341/0/1/audio")
        with pytest.raises(MCPError, match=r"\[call_in_progress\]"):
            await client.read_resource(_uri(IN_PROGRESS))
    assert audio_requests(simulator) == 1  # only the in-progress call reached the platform


# --- economy ------------------------------------------------------------------------------------


async def test_metadata_then_audio_then_resource_costs_one_request(
    env: dict[str, str], simulator: Any
) -> None:
    async with stdio_server(env) as client:
        structured(await client.call_tool("get_call_metadata", EXAMPLE))
        structured(await client.call_tool("get_call_audio", EXAMPLE))
        await client.read_resource(_uri(EXAMPLE))
        await client.read_resource(_uri(EXAMPLE, "metadata"))
    assert audio_requests(simulator) == 1


async def test_concurrent_identical_calls_share_one_request(env: dict[str, str], simulator: Any) -> None:
    results: list[dict[str, Any]] = []
    async with stdio_server(env) as client:

        async def one() -> None:
            results.append(structured(await client.call_tool("get_call_audio", LARGE)))

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(one)
    assert len({r["audio"]["sha256"] for r in results}) == 1
    assert len(results) == 8
    assert audio_requests(simulator) == 1


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
    assert downloading[-1][0] <= downloading[-1][1]  # bytes of a known total
    values = [e[0] for e in events]
    assert values == sorted(values)
    assert len(set(values)) == len(values)  # strictly increasing, as the protocol requires


# --- documented errors, before any upstream request ---------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "code", "named"),
    [
        ({"sessionId": 942125, "recordId": 1}, "missing_parameter", ["tenantId"]),
        ({"tenantId": "05053698341"}, "missing_parameter", ["sessionId", "recordId"]),
        ({**EXAMPLE, "callId": 7, "foo": 1}, "unknown_parameter", ["callId", "foo"]),
        ({**EXAMPLE, "tenantId": 5053698341}, "invalid_parameter", ["tenantId", "leading zeros"]),
        ({**EXAMPLE, "tenantId": "05-053"}, "invalid_parameter", ["tenantId"]),
        ({**EXAMPLE, "sessionId": 0}, "invalid_parameter", ["sessionId"]),
        ({**EXAMPLE, "recordId": "one"}, "invalid_parameter", ["recordId"]),
        ({**EXAMPLE, "sessionId": True}, "invalid_parameter", ["sessionId"]),
        ({**EXAMPLE, "inline": "yes"}, "invalid_parameter", ["inline"]),
    ],
)
async def test_bad_arguments_are_refused_before_the_platform(
    env: dict[str, str], simulator: Any, arguments: dict[str, Any], code: str, named: list[str]
) -> None:
    async with stdio_server(env) as client:
        result = await client.call_tool("get_call_audio", arguments)
    assert result.is_error
    message = text(result)
    assert f"[{code}]" in message
    for name in named:
        assert name in message
    assert "Next:" in message
    assert simulator.state.requests == []


async def test_unknown_argument_is_refused_on_metadata_too(env: dict[str, str], simulator: Any) -> None:
    async with stdio_server(env) as client:
        result = await client.call_tool("get_call_metadata", {**EXAMPLE, "inline": True})
    assert result.is_error
    assert "[unknown_parameter]" in text(result)
    assert "inline" in text(result)
    assert simulator.state.requests == []


async def test_tenant_allow_list(simulator: Any, tmp_path: Path) -> None:
    env = server_env(simulator.url, tmp_path, CTE1_ALLOWED_TENANTS="0312345678,0399999999")
    async with stdio_server(env) as client:
        result = await client.call_tool("get_call_metadata", EXAMPLE)
        with pytest.raises(MCPError, match=r"\[tenant_not_allowed\]"):
            await client.read_resource(_uri(EXAMPLE))
    assert result.is_error
    assert "[tenant_not_allowed]" in text(result)
    assert "05053698341" in text(result)
    assert simulator.state.requests == []


async def test_recording_expired_without_spending_another_request(tmp_path: Path) -> None:
    # A simulator whose sample calls were placed 40 days ago and whose clock stands then: it serves
    # the example call as fresh, but by the server's clock the call is more than 31 days old.
    past = datetime.now(UTC) - timedelta(days=40)
    state = SimulatorState(epoch=past)
    state.set_now(past + timedelta(hours=3))
    with run_in_thread(SimulatorConfig(port=0, min_interval=0), state=state) as simulator:
        async with stdio_server(server_env(simulator.url, tmp_path)) as client:
            first = await client.call_tool("get_call_metadata", EXAMPLE)
            second = await client.call_tool("get_call_audio", EXAMPLE)
            with pytest.raises(MCPError, match=r"\[recording_expired\]"):
                await client.read_resource(_uri(EXAMPLE))
            assert (await client.list_resources()).resources == []
        assert audio_requests(simulator) == 1  # the later calls were refused from what was stored
    for result in (first, second):
        assert result.is_error
        assert "[recording_expired]" in text(result)
        assert "31 days" in text(result)
    assert not list(tmp_path.rglob("audio*"))


# --- upstream failures, in the platform's own words ---------------------------------------------


async def test_call_in_progress(env: dict[str, str]) -> None:
    async with stdio_server(env) as client:
        result = await client.call_tool("get_call_audio", IN_PROGRESS)
    assert result.is_error
    assert "[call_in_progress]" in text(result)
    assert "after" in text(result)


@pytest.mark.parametrize(
    ("call", "platform_words"),
    [(UNKNOWN, "存在しない"), (OLD, "31日以上前"), (FOREIGN, "許可されていないテナント")],
)
async def test_platform_refusals_are_passed_on_verbatim(
    env: dict[str, str], simulator: Any, call: dict[str, Any], platform_words: str
) -> None:
    async with stdio_server(env) as client:
        result = await client.call_tool("get_call_metadata", call)
    assert result.is_error
    assert "[upstream_rejected]" in text(result)
    assert "Platform said: " in text(result)
    assert platform_words in text(result)
    assert audio_requests(simulator) == 1


async def test_wrong_key_and_wrong_source(simulator: Any, tmp_path: Path) -> None:
    wrong_key = server_env(simulator.url, tmp_path, CTE1_API_KEY="not-the-key-0123456789")
    async with stdio_server(wrong_key) as client:
        result = await client.call_tool("get_call_metadata", EXAMPLE)
    assert "[upstream_auth_failed]" in text(result)
    assert "not-the-key-0123456789" not in text(result)
    assert DEFAULT_API_KEY not in text(result)
    wrong_source = server_env(
        simulator.url, tmp_path, CTE1_SOURCE_UUID="00000000-0000-4000-8000-000000000000"
    )
    async with stdio_server(wrong_source) as client:
        result = await client.call_tool("get_call_metadata", EXAMPLE)
    assert "[upstream_ip_not_allowed]" in text(result)


async def test_rate_limited_with_retry_hint(make_simulator: Any, tmp_path: Path) -> None:
    simulator = make_simulator(min_interval=120)
    async with stdio_server(server_env(simulator.url, tmp_path)) as client:
        structured(await client.call_tool("get_call_metadata", EXAMPLE))
        result = await client.call_tool("get_call_metadata", TRANSFERRED_2)
        # The platform asked for a pause longer than is worth waiting out: a third call is told
        # so at once, without spending (and wasting) another request.
        third = await client.call_tool("get_call_metadata", SMALL)
    for refused in (result, third):
        assert refused.is_error
        assert "[rate_limited]" in text(refused)
        assert re.search(r"Retry after 1[12][0-9] s", text(refused))
    assert [r.outcome for r in simulator.state.requests] == ["ok", "rate_limited"]


async def test_retry_after_holds_every_request_back_and_is_reported(
    env: dict[str, str], simulator: Any
) -> None:
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

    async with stdio_server(env) as client:
        first = client.call_tool("get_call_metadata", EXAMPLE, progress_callback=progress)
        results: list[Any] = []

        async def call(coro: Any) -> None:
            results.append(await coro)

        async with anyio.create_task_group() as tg:
            tg.start_soon(call, first)
            await anyio.sleep(0.5)  # the 429 has arrived; another call must wait for it too
            tg.start_soon(call, client.call_tool("get_call_metadata", SMALL))
    assert all(not r.is_error for r in results), [text(r) for r in results]
    requests = simulator.state.requests
    assert [r.outcome for r in requests] == ["fault", "ok", "ok"]
    assert requests[1].monotonic - requests[0].monotonic >= 1.9
    assert requests[2].monotonic - requests[0].monotonic >= 1.9  # the other call was held back too
    assert any(m and m.startswith("waiting") for m in events)


async def test_rate_limited_without_retry_after_still_says_when(env: dict[str, str], simulator: Any) -> None:
    for _ in range(3):  # every attempt the server makes is refused in the platform's words
        simulator.state.fail_next(
            Fault(body='{"status": "error", "description": "リクエスト間隔が短すぎます"}'.encode())
        )
    async with stdio_server(env) as client:
        result = await client.call_tool("get_call_metadata", EXAMPLE)
    assert result.is_error
    assert "[rate_limited]" in text(result)
    assert "リクエスト間隔が短すぎます" in text(result)
    assert re.search(r"Retry after \d+ s", text(result))
    assert audio_requests(simulator) == 3


async def test_a_truncated_download_is_retried_and_nothing_partial_is_kept(
    env: dict[str, str], simulator: Any, tmp_path: Path
) -> None:
    simulator.state.fail_next(Fault(truncate_after=100_000))
    async with stdio_server(env) as client:
        result = await client.call_tool("get_call_audio", EXAMPLE)
        audio = structured(result)["audio"]
    assert hashlib.sha256(Path(audio["path"]).read_bytes()).hexdigest() == audio["sha256"]
    assert audio_requests(simulator) == 2
    assert not list((tmp_path / "cache" / "tmp").iterdir())


async def test_upstream_bad_response_after_every_attempt_is_cut_off(
    env: dict[str, str], simulator: Any, tmp_path: Path
) -> None:
    for _ in range(3):
        simulator.state.fail_next(Fault(truncate_after=100_000))
    async with stdio_server(env) as client:
        result = await client.call_tool("get_call_audio", EXAMPLE)
        assert (await client.list_resources()).resources == []
    assert result.is_error
    assert "[upstream_bad_response]" in text(result)
    assert audio_requests(simulator) == 3
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]


async def test_malformed_metadata_is_not_retried(env: dict[str, str], simulator: Any) -> None:
    boundary = "b0undary"
    body = (
        f"--{boundary}\r\nContent-Type: application/json\r\n\r\nnot json\r\n"
        f"--{boundary}\r\nContent-Type: audio/wav\r\n\r\nRIFF\r\n--{boundary}--\r\n"
    ).encode()
    simulator.state.fail_next(Fault(body=body, content_type=f"multipart/form-data; boundary={boundary}"))
    async with stdio_server(env) as client:
        result = await client.call_tool("get_call_metadata", EXAMPLE)
    assert "[upstream_bad_response]" in text(result)
    assert audio_requests(simulator) == 1


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
        small = await client.call_tool("get_call_audio", {**SMALL, "tenantId": "05053698341"})
    assert result.is_error
    assert "[storage_error]" in text(result)
    assert "CTE1_CACHE_DIR" in text(result)
    assert str(tmp_path) not in text(result)
    assert small.is_error  # 156 KiB is over the limit too; nothing partial was kept for either
    assert not [p for p in (tmp_path / "cache" / "recordings").rglob("*") if p.is_file()]


async def test_unreachable_platform(tmp_path: Path) -> None:
    env = server_env("http://127.0.0.1:9", tmp_path)
    async with stdio_server(env) as client:
        result = await client.call_tool("get_call_metadata", EXAMPLE)
    assert result.is_error
    assert "[upstream_unavailable]" in text(result)
    assert "Traceback" not in text(result)


async def test_audio_too_large_keeps_nothing(simulator: Any, tmp_path: Path) -> None:
    env = server_env(simulator.url, tmp_path, CTE1_MAX_AUDIO_BYTES="4096")
    async with stdio_server(env) as client:
        result = await client.call_tool("get_call_audio", EXAMPLE)
        assert "[audio_too_large]" in text(result)
        assert (await client.list_resources()).resources == []
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def _uri(call: dict[str, Any], kind: str = "audio") -> str:
    return f"cte1://calls/{call['tenantId']}/{call['sessionId']}/{call['recordId']}/{kind}"
