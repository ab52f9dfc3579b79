"""``GET /calls/…/audio``: stored recordings over plain HTTP, beside ``/mcp`` (issue 14, item 2).

The real server process with a token and an audit log; the official client names the URL, a plain
HTTP client fetches it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.helpers.servers import http_process
from tests.mcp_harness import OLD, SMALL, TRANSFERRED_2, server_env, structured, text

pytestmark = pytest.mark.anyio

TOKEN = "download-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def base_of(mcp_url: str) -> str:
    return mcp_url.removesuffix("/mcp")


async def fetch_audio(url: str, mode: str) -> dict[str, Any]:
    """get_call_audio through the official client with the token; the result's structuredContent."""
    async with (
        httpx2.AsyncClient(headers=AUTH, timeout=60) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        result = await client.call_tool("get_call_audio", TRANSFERRED_2)
    payload = structured(result)
    assert payload["summary"] == text(result)
    return payload


@pytest.mark.parametrize("stateless", [False, True], ids=["stateful", "stateless"])
@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
async def test_get_call_audio_names_a_download_url_that_serves_the_recording(
    simulator: Any, tmp_path: Path, mode: str, stateless: bool
) -> None:
    env = server_env(simulator.url, tmp_path / "cache", CTE1_HTTP_TOKEN=TOKEN)
    with http_process(env, *(["--stateless"] if stateless else [])) as server:
        payload = await fetch_audio(server.url, mode)
        audio = payload["audio"]
        url = audio["downloadUrl"]
        assert url == base_of(server.url) + "/calls/05053698341/942130/2/audio"
        assert f"Download: {url}" in payload["summary"]
        async with httpx.AsyncClient() as http:
            got = await http.get(url, headers=AUTH)
    assert got.status_code == 200
    assert len(got.content) == audio["sizeBytes"] == int(got.headers["content-length"])
    assert hashlib.sha256(got.content).hexdigest() == audio["sha256"]
    assert got.headers["content-type"] == audio["mimeType"] == "audio/wav"
    assert got.headers["etag"] == f'"{audio["sha256"]}"'
    assert got.headers["cache-control"] == "private, no-store"
    assert got.headers["accept-ranges"] == "bytes"
    assert got.headers["content-disposition"] == 'attachment; filename="call-05053698341-942130-2.wav"'


async def test_ranges_etag_token_host_and_what_is_not_served(simulator: Any, tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    env = server_env(
        simulator.url,
        tmp_path / "cache",
        CTE1_HTTP_TOKEN=TOKEN,
        CTE1_AUDIT_LOG=str(audit),
        CTE1_ALLOWED_TENANTS="05053698341",
    )
    with http_process(env) as server:
        audio = (await fetch_audio(server.url, "legacy"))["audio"]
        url, size, etag = audio["downloadUrl"], audio["sizeBytes"], f'"{audio["sha256"]}"'
        base = base_of(server.url)
        upstream_before = len(simulator.state.requests)
        async with httpx.AsyncClient() as http:
            whole = (await http.get(url, headers=AUTH)).content

            async def get(path_or_url: str, **headers: str) -> httpx.Response:
                target = path_or_url if path_or_url.startswith("http") else base + path_or_url
                return await http.get(target, headers={**AUTH, **headers})

            first = await get(url, Range="bytes=0-99")
            tail = await get(url, Range="bytes=-10")
            rest = await get(url, Range=f"bytes={size - 1000}-")
            past = await get(url, Range=f"bytes={size}-")
            several = await get(url, Range="bytes=0-1,5-6")  # not read: the whole recording
            stale_if_range = await get(url, Range="bytes=0-99", **{"If-Range": '"another"'})
            fresh_if_range = await get(url, Range="bytes=0-99", **{"If-Range": etag})
            not_modified = await get(url, **{"If-None-Match": f'"x", W/{etag}'})
            head = await http.head(url, headers=AUTH)
            missing = await http.get(url)
            wrong = await http.get(url, headers={"Authorization": "Bearer nope"})
            evil_host = await get(url, Host="evil.example:80")
            not_stored = await get("/calls/05053698341/942126/1/audio")
            bad_id = await get("/calls/05053698341/0/1/audio")
            not_allowed = await get(f"/calls/{OLD['tenantId']}/{OLD['sessionId']}/1/audio")
    assert (first.status_code, first.content) == (206, whole[:100])
    assert first.headers["content-range"] == f"bytes 0-99/{size}"
    assert first.headers["content-length"] == "100"
    assert (tail.status_code, tail.content) == (206, whole[-10:])
    assert (rest.status_code, rest.content) == (206, whole[-1000:])
    assert (past.status_code, past.content) == (416, b"")
    assert past.headers["content-range"] == f"bytes */{size}"
    assert (several.status_code, several.content) == (200, whole)
    assert (stale_if_range.status_code, stale_if_range.content) == (200, whole)
    assert (fresh_if_range.status_code, fresh_if_range.content) == (206, whole[:100])
    assert (not_modified.status_code, not_modified.content) == (304, b"")
    assert not_modified.headers["etag"] == etag
    assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", str(size))
    assert missing.status_code == wrong.status_code == 401
    assert evil_host.status_code == 421
    for response, status, code in [
        (not_stored, 404, "not_stored"),
        (bad_id, 400, "invalid_parameter"),
        (not_allowed, 403, "tenant_not_allowed"),
    ]:
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["code"] == code
        assert error["message"].startswith(f"[{code}]")
        assert "Next:" in error["message"]
    assert "get_call_audio" in not_stored.json()["error"]["message"]
    assert len(simulator.state.requests) == upstream_before  # a GET never asks the platform

    lines = [json.loads(line) for line in audit.read_text().splitlines()]
    gets = [line for line in lines if line["operation"] == "http/get"]
    identity = lines[0]["identity"]  # the tools/call line: the token's fingerprint
    assert identity.startswith("token-sha256:")
    assert TOKEN not in audit.read_text()
    assert gets[0] == {
        **gets[0],
        "transport": "http",
        "identity": identity,
        "call": "05053698341/942130/2",
        "resource": "/calls/05053698341/942130/2/audio",
        "outcome": "ok",
        "bytesServed": size,
        "upstreamRequest": False,
    }
    # what each answer above handed over, in order; before: the HEAD was audited as the whole
    # recording, though it sends no body
    served = [size, 100, 10, 1000, 0, size, size, 100, 0, 0]
    assert [line["bytesServed"] for line in gets[: len(served)]] == served
    outcomes = [(line["call"], line["outcome"], line["bytesServed"]) for line in gets]
    assert ("05053698341/942130/2", "ok", 100) in outcomes
    assert ("05053698341/942126/1", "not_stored", 0) in outcomes
    assert (f"{OLD['tenantId']}/{OLD['sessionId']}/1", "tenant_not_allowed", 0) in outcomes
    assert SMALL["sessionId"] == 942126  # the call asked for above, never fetched


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-99", (0, 99)),
        ("bytes=100-", (100, 999)),
        ("bytes=990-5000", (990, 999)),  # past the end: up to the end
        ("bytes=-10", (990, 999)),
        ("bytes=-5000", (0, 999)),
        ("bytes = 0 - 9", (0, 9)),
        ("bytes=1000-", "unsatisfiable"),
        ("bytes=-0", "unsatisfiable"),
        ("bytes=5-2", None),  # invalid: ignored, the whole recording
        ("bytes=0-1,5-6", None),  # several ranges: the whole recording
        ("items=0-1", None),
        ("bytes=-", None),
        ("bytes=" + "9" * 30 + "-", None),  # no 30-digit offsets parsed
    ],
)
def test_byte_ranges(header: str, expected: object) -> None:
    from cte1_mcp.http_download import _byte_range

    assert _byte_range(header, 1000) == expected


async def test_no_download_url_over_stdio(simulator: Any, tmp_path: Path) -> None:
    from tests.mcp_harness import in_process

    async with in_process(simulator.url, tmp_path / "cache") as client:
        result = await client.call_tool("get_call_audio", TRANSFERRED_2)
    assert "downloadUrl" not in structured(result)["audio"]
    assert "Download:" not in text(result)


async def test_a_recording_over_the_resource_limit_is_still_downloaded(
    simulator: Any, tmp_path: Path
) -> None:
    env = server_env(
        simulator.url, tmp_path / "cache", CTE1_HTTP_TOKEN=TOKEN, CTE1_RESOURCE_MAX_BYTES="1000000"
    )
    with http_process(env) as server:
        async with (
            httpx2.AsyncClient(headers=AUTH, timeout=60) as http,
            Client(streamable_http_client(server.url, http_client=http), mode="legacy") as client,
        ):
            audio = structured(await client.call_tool("get_call_audio", TRANSFERRED_2))["audio"]
            with pytest.raises(MCPError) as refused:
                await client.read_resource(audio["uri"])
            got = await http.get(audio["downloadUrl"])
    assert refused.value.error.data["code"] == "audio_too_large"
    assert "audio.downloadUrl" in refused.value.error.message
    assert audio["sizeBytes"] > 1_000_000
    assert hashlib.sha256(got.content).hexdigest() == audio["sha256"]
