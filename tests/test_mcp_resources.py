"""The call resources through the official MCP client in this process (in-memory transport)."""

from __future__ import annotations

import base64
import hashlib
import logging
import shutil
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS, BlobResourceContents, Resource, TextResourceContents

from cte1_mcp.models import AudioFormat, AudioInfo, CallKey, CallMetadata, Recording
from cte1_mcp.repository.local import LocalRepository
from cte1_mcp.resource_pages import PAGE_RECORDINGS
from cte1_mcp.views import CallView, call_sentence
from tests.mcp_harness import EXAMPLE, IN_PROGRESS, call_uri, in_process, structured

pytestmark = pytest.mark.anyio


async def test_templates_list_and_metadata_read(simulator: Any, tmp_path: Path) -> None:
    async with in_process(simulator.url, tmp_path) as client:
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        assert {
            "cte1://calls/{tenantId}/{sessionId}/{recordId}/audio",
            "cte1://calls/{tenantId}/{sessionId}/{recordId}/metadata",
        } <= templates
        assert (await client.list_resources()).resources == []
        read = await client.read_resource(call_uri(EXAMPLE, "metadata"))  # fetched on demand
        content = read.contents[0]
        assert isinstance(content, TextResourceContents)
        assert content.mime_type == "application/json"
        assert '"sessionId":942125' in content.text.replace(" ", "")
        assert '"summary":' in content.text
        listed = {str(r.uri): r for r in (await client.list_resources()).resources}
        audio = listed[call_uri(EXAMPLE)]
        assert audio.mime_type == "audio/wav"
        assert audio.size and audio.size > 0
        assert audio.description and "942125" in audio.description
        assert call_uri(EXAMPLE, "metadata") in listed


async def test_every_template_has_a_mime_type_and_reads_the_real_one(simulator: Any, tmp_path: Path) -> None:
    # Before: the audio and clip templates had mimeType null.
    async with in_process(simulator.url, tmp_path) as client:
        templates = {t.name: t for t in (await client.list_resource_templates()).resource_templates}
        audio = (await client.read_resource(call_uri(EXAMPLE))).contents[0]
        mp3 = (await client.read_resource(call_uri(EXAMPLE, "clip") + "?end=2&format=mp3")).contents[0]
    assert all(template.mime_type for template in templates.values()), templates
    # Their formats vary, so the generic type (true of all) and the real one on each read:
    assert templates["call-audio"].mime_type == templates["call-clip"].mime_type == "application/octet-stream"
    assert (audio.mime_type, mp3.mime_type) == ("audio/wav", "audio/mpeg")
    assert templates["call-timeline"].mime_type == "image/png"


async def test_audio_read_is_the_stored_bytes_for_one_request(simulator: Any, tmp_path: Path) -> None:
    async with in_process(simulator.url, tmp_path) as client:
        audio = structured(await client.call_tool("get_call_audio", EXAMPLE))["audio"]
        read = await client.read_resource(audio["uri"])
        await client.read_resource(call_uri(EXAMPLE, "metadata"))
    blob = read.contents[0]
    assert isinstance(blob, BlobResourceContents)
    assert blob.mime_type == "audio/wav"
    assert hashlib.sha256(base64.b64decode(blob.blob)).hexdigest() == audio["sha256"]
    assert len(simulator.state.requests) == 1


async def error_of(client: Any, uri: str) -> Any:
    with pytest.raises(MCPError) as caught:
        await client.read_resource(uri)
    return caught.value.error


@pytest.mark.parametrize(
    "uri",
    [
        "cte1://calls/abc/942125/1/audio",
        "cte1://calls/05053698341/0/1/audio",
        "cte1://calls/05053698341/942125/1/audio\n",  # `$` matched before a final newline
        "cte1://calls/05053698341/942125/1/metadata\n",
        "cte1://calls/05053698341/942125/1/audio?x=1",
        "cte1://calls/05053698341/942125/1/video",
        "cte1://calls/05053698341/942125/audio",
        "https://example.com/x",
        "cte1://calls/05053698341/" + "9" * 4301 + "/1/audio",  # past Python's int() digit limit
        "cte1://calls/05053698341/1/" + "1" * 5000 + "/metadata",
    ],
)
async def test_malformed_uris_are_invalid_params_with_a_code(
    simulator: Any, tmp_path: Path, uri: str
) -> None:
    """Regressions: a trailing newline was accepted (and cost an upstream request), a long digit
    string gave -32603, and an unknown URI answered with data=None."""
    async with in_process(simulator.url, tmp_path) as client:
        error = await error_of(client, uri)
    assert error.code == INVALID_PARAMS
    assert error.message.startswith("[invalid_parameter]"), error.message
    assert "Next:" in error.message
    assert isinstance(error.data, dict)
    assert error.data["code"] == "invalid_parameter"
    assert len(error.message) < 1000
    assert simulator.state.requests == []


async def test_upstream_errors_carry_their_code(simulator: Any, tmp_path: Path) -> None:
    async with in_process(simulator.url, tmp_path) as client:
        error = await error_of(client, call_uri(IN_PROGRESS))
    assert error.code == INTERNAL_ERROR
    assert error.message.startswith("[call_in_progress]")
    assert error.data["code"] == "call_in_progress"


async def test_tenant_allow_list_applies_to_resources(simulator: Any, tmp_path: Path) -> None:
    async with in_process(simulator.url, tmp_path, allowed_tenants=("0312345678",)) as client:
        error = await error_of(client, call_uri(EXAMPLE))
    assert error.code == INVALID_PARAMS
    assert error.data["code"] == "tenant_not_allowed"
    assert simulator.state.requests == []


async def test_log_lines_carry_a_bounded_excerpt_of_the_uri(
    simulator: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: a 1 MB URI made a 1 MB log line."""
    caplog.set_level(logging.DEBUG)
    huge = [
        "cte1://calls/05053698341/" + "9" * 1_000_000 + "/1/audio",
        "cte1://calls/" + "x" * 1_000_000,
        "cte1://calls/05053698341/942125/1/audio?" + "a" * 1_000_000,
    ]
    async with in_process(simulator.url, tmp_path) as client:
        for uri in huge:
            error = await error_of(client, uri)
            assert error.data["code"] == "invalid_parameter"
            assert len(error.message) < 1000
            assert len(str(error.data)) < 1000
    longest = max((len(r.getMessage()) for r in caplog.records), default=0)
    assert longest < 2000, longest


# --- resources/list pages ------------------------------------------------------------------------

#: A tenant of its own for the recordings committed straight into the store (no simulator call).
FILLED_TENANT = "0377777777"


async def store_recordings(root: Path, sessions: Iterable[int]) -> None:
    """Small recordings committed through the repository API, as a server would after fetching."""
    repository = LocalRepository(root, max_age=timedelta(hours=24), max_bytes=1 << 30)
    connected = (datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="milliseconds")
    for session in sessions:
        key = CallKey(FILLED_TENANT, session, 1)
        metadata = CallMetadata.model_validate(
            {
                "status": "complete",
                "tenantId": key.tenant_id,
                "sessionId": session,
                "recordId": 1,
                "connectTime": connected.replace("+00:00", "Z"),
            }
        )
        async with repository.staging(key) as staging:
            await staging.write(b"RIFF" + bytes(60))
            await staging.commit(metadata, "audio/wav")


def audio_sessions(resources: Iterable[Resource]) -> list[int]:
    """The session ids of the listed audio resources, in the order listed."""
    return [int(str(r.uri).split("/")[4]) for r in resources if str(r.uri).endswith("/audio")]


async def test_resources_list_pages_walk_every_recording_once(simulator: Any, tmp_path: Path) -> None:
    """Regression: 10,000 stored recordings came as one list of 20,000 resources (seconds a call).
    Pages in key order; a cursor goes on from its key even after a restart (its walk's snapshot
    gone) with recordings added and removed meanwhile."""
    stored = PAGE_RECORDINGS * 2 + 3
    await store_recordings(tmp_path, range(1, stored + 1))
    async with in_process(simulator.url, tmp_path) as client:
        pages, cursor = [], None
        while True:
            page = await client.list_resources(cursor=cursor, cache_mode="bypass")
            pages.append(page)
            cursor = page.next_cursor
            if cursor is None:
                break
        first = await client.list_resources(cache_mode="bypass")
    assert [len(p.resources) for p in pages] == [2 * PAGE_RECORDINGS, 2 * PAGE_RECORDINGS, 6]
    sessions = [session for page in pages for session in audio_sessions(page.resources)]
    assert sessions == list(range(1, stored + 1))  # each once, in key order
    metadata = {str(r.uri) for page in pages for r in page.resources if str(r.uri).endswith("/metadata")}
    assert len(metadata) == stored
    assert first.next_cursor is not None
    resumed_after = audio_sessions(first.resources)[-1]
    assert resumed_after == PAGE_RECORDINGS

    # Between pages (server restarted): one recording past the cursor removed, two added (one
    # before the cursor, which this walk has passed, one after it).
    for directory in tmp_path.rglob(f"{FILLED_TENANT}/{PAGE_RECORDINGS + 1}/1"):
        shutil.rmtree(directory)
    await store_recordings(tmp_path, [stored + 10, stored + 11])
    shutil.rmtree(next(tmp_path.rglob(f"{FILLED_TENANT}/{stored + 10}/1")))
    await store_recordings(tmp_path, [stored + 12])
    async with in_process(simulator.url, tmp_path) as client:
        rest, cursor = [], first.next_cursor
        while cursor is not None:
            page = await client.list_resources(cursor=cursor, cache_mode="bypass")
            rest += audio_sessions(page.resources)
            cursor = page.next_cursor
    assert rest == [*range(PAGE_RECORDINGS + 2, stored + 1), stored + 11, stored + 12]


@pytest.mark.parametrize(
    "cursor",
    [
        "not-a-cursor",
        "",
        base64.urlsafe_b64encode(b"v1:abc:0377777777/1/x").decode(),
        base64.urlsafe_b64encode(b"v1:abc:" + b"1" * 40 + b"/1/1").decode(),  # tenant over 32 digits
        base64.urlsafe_b64encode(b"v1:abc:0377777777/0/1").decode(),  # sessionId 0
        base64.urlsafe_b64encode(b"v1:abc:0377777777/1/12").decode(),  # "==": not our spelling
        "x" * 100_000,
    ],
)
async def test_an_invalid_cursor_is_invalid_params_with_a_code(
    simulator: Any, tmp_path: Path, cursor: str
) -> None:
    """Regression: the cursor was ignored (the whole list came back whatever it said)."""
    async with in_process(simulator.url, tmp_path) as client:
        with pytest.raises(MCPError) as caught:
            await client.list_resources(cursor=cursor, cache_mode="bypass")
    error = caught.value.error
    assert error.code == INVALID_PARAMS
    assert error.message.startswith("[invalid_parameter] The cursor"), error.message
    assert "Next:" in error.message
    assert error.data == {"code": "invalid_parameter"}
    assert len(error.message) < 1000


@pytest.mark.parametrize("mask", [False, True])
async def test_a_small_store_is_one_page_described_as_the_metadata_tool_says(
    simulator: Any, tmp_path: Path, mask: bool
) -> None:
    async with in_process(simulator.url, tmp_path, mask_numbers=mask) as client:
        summary = structured(await client.call_tool("get_call_metadata", EXAMPLE))["summary"]
        await store_recordings(tmp_path, [5, 3])
        page = await client.list_resources(cache_mode="bypass")
    assert page.next_cursor is None
    assert audio_sessions(page.resources) == [3, 5, EXAMPLE["sessionId"]]  # by tenant, then session
    [audio] = [r for r in page.resources if str(r.uri) == call_uri(EXAMPLE)]
    assert audio.description == summary
    assert ("*******" in summary) is mask


@pytest.mark.parametrize("mask", [False, True])
def test_the_listed_description_bounds_the_fields_it_shows(mask: bool) -> None:
    """call_sentence is CallView's sentence without the view: the same text, long fields shortened."""
    metadata = CallMetadata.model_validate(
        {
            "status": "complete",
            "tenantId": "05053698341",
            "sessionId": 7,
            "recordId": 1,
            "direction": 0,
            "ani": "08075082398",
            "agentName": "A" * 5000,
            "skillName": "support",
            "connectTime": "2026-11-30T10:00:00.000Z",
            "disconnectTime": "2026-11-30T10:03:20.500Z",
        }
    )
    recording = Recording(
        tenant_id="05053698341",
        session_id=7,
        record_id=1,
        metadata=metadata,
        audio=AudioInfo(format=AudioFormat(mime_type="audio/wav"), size_bytes=64, sha256="0" * 64),
        fetched_at=datetime.now(UTC),
    )
    sentence = call_sentence(recording, mask_numbers=mask)
    assert sentence == CallView.of(recording, mask_numbers=mask).sentence()
    assert len(sentence) < 1300
    assert sentence.endswith("the metadata resource has them whole.")
    assert ("*******2398" in sentence) is mask
