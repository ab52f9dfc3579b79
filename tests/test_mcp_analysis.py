"""get_call_analytics, get_call_clip and their resources in detail, through the official client in
this process (in-memory transport); test_mcp_stdio/test_mcp_http run the same surface end to end."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
import soundfile
from mcp.shared.exceptions import MCPError
from mcp_types import AudioContent, BlobResourceContents, ImageContent

from cte1_mcp.audio import clips
from cte1_mcp.tools.call_clip import ClipArguments
from tests.mcp_harness import EXAMPLE, SMALL, call_uri, in_process, structured, text

pytestmark = pytest.mark.anyio


def test_clip_formats_and_rates_are_the_encoders() -> None:
    """The argument model lists them without importing the audio stack at start-up."""
    schema = ClipArguments.model_json_schema()["properties"]
    assert tuple(schema["format"]["enum"]) == clips.FORMATS
    assert tuple(schema["sampleRate"]["enum"]) == clips.RATES


async def test_descriptions_state_the_definitions_and_formats(simulator: Any, tmp_path: Path) -> None:
    async with in_process(simulator.url, tmp_path) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
    analytics = tools["get_call_analytics"].description or ""
    for term in (
        "turn",
        "longestMonologue",
        "Non-talk",
        "longestSilence",
        "Overtalk",
        "overtalkCount",
        "interruptions",
        "0.5 s",
        "Percentages are of durationSeconds",
        "Crosstalk",
        "mono",
        "CTE1_CHANNEL_ROLES",
    ):
        assert term in analytics, term
    clip = tools["get_call_clip"].description or ""
    for term in ("OpenAI", "WAV, MP3", "Gemini", "FLAC, OGG", "Claude", "[invalid_parameter]"):
        assert term in clip, term
    assert tools["get_call_analytics"].input_schema["properties"]["timeline"]["default"] is True
    assert {
        "cte1://calls/{tenantId}/{sessionId}/{recordId}/timeline",
        "cte1://calls/{tenantId}/{sessionId}/{recordId}/analytics",
        "cte1://calls/{tenantId}/{sessionId}/{recordId}/clip{?start,end,channel,format,rate}",
    } <= templates


async def test_analysed_once_stored_and_small(simulator: Any, tmp_path: Path) -> None:
    messages: list[str | None] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        messages.append(message)

    async with in_process(simulator.url, tmp_path) as client:
        first = await client.call_tool("get_call_analytics", EXAMPLE, progress_callback=progress)
        analysed = [m for m in messages if m and m.startswith("Analysing")]
        messages.clear()
        second = await client.call_tool("get_call_analytics", EXAMPLE, progress_callback=progress)
    assert analysed  # the first call analysed ...
    assert not [m for m in messages if m and m.startswith("Analysing")]  # ... the second did not
    assert len(simulator.state.requests) == 1
    assert structured(first)["analytics"] == structured(second)["analytics"]
    # Under 50,000 characters apart from the picture the caller asked for (timeline=true)
    without_image = first.model_copy(
        update={"content": [c for c in first.content if not isinstance(c, ImageContent)]}
    )
    assert len(without_image.model_dump_json(by_alias=True)) < 50_000
    labels = [p["label"] for p in structured(first)["analytics"]["parties"]]
    assert labels == ["channel 0", "channel 1"]  # CTE1_CHANNEL_ROLES unset: roles are never guessed


async def test_a_mono_call_has_one_mixed_party_and_no_overtalk(simulator: Any, tmp_path: Path) -> None:
    async with in_process(simulator.url, tmp_path, channel_roles=("customer", "agent")) as client:
        result = await client.call_tool("get_call_analytics", {**SMALL, "timeline": False})
    analytics = structured(result)["analytics"]
    assert analytics["channels"] == 1
    assert [p["label"] for p in analytics["parties"]] == ["mixed"]
    assert analytics["parties"][0]["interruptions"] is None
    assert analytics["overtalkSeconds"] is None
    assert analytics["overtalkCount"] is None
    assert "mono" in text(result)


async def test_numbers_are_masked_in_analytics_and_clips(simulator: Any, tmp_path: Path) -> None:
    async with in_process(simulator.url, tmp_path, mask_numbers=True) as client:
        analytics = await client.call_tool("get_call_analytics", {**EXAMPLE, "timeline": False})
        clip = await client.call_tool("get_call_clip", {**EXAMPLE, "endSeconds": 5})
    for result in (analytics, clip):
        assert structured(result)["call"]["ani"] == "*******2398"
        assert "08075082398" not in result.model_dump_json()


@pytest.mark.parametrize(
    ("fmt", "rate", "mime", "magic"),
    [
        ("wav", 8000, "audio/wav", b"RIFF"),
        ("flac", 16000, "audio/flac", b"fLaC"),
        ("ogg", 8000, "audio/ogg", b"OggS"),
    ],
)
async def test_clip_formats(
    simulator: Any, tmp_path: Path, fmt: str, rate: int, mime: str, magic: bytes
) -> None:
    async with in_process(simulator.url, tmp_path, transport="http") as client:
        result = await client.call_tool(
            "get_call_clip",
            {
                **EXAMPLE,
                "startSeconds": 1,
                "endSeconds": 4,
                "format": fmt,
                "sampleRate": rate,
                "inline": True,
            },
        )
    clip = structured(result)["clip"]
    assert (clip["mimeType"], clip["sampleRate"], clip["channel"]) == (mime, rate, "mix")
    assert "path" not in clip  # over HTTP
    block = next(c for c in result.content if isinstance(c, AudioContent))
    assert base64.b64decode(block.data)[:4] == magic


async def test_clip_argument_errors_need_no_request(simulator: Any, tmp_path: Path) -> None:
    async with in_process(simulator.url, tmp_path) as client:
        for arguments in (
            {**EXAMPLE, "channel": "agent"},  # no roles configured
            {**EXAMPLE, "format": "aac"},
            {**EXAMPLE, "startSeconds": -1},
            {**EXAMPLE, "startSeconds": "soon"},
            {**EXAMPLE, "endSeconds": True},
            {**EXAMPLE, "sampleRate": 22050},
            {**EXAMPLE, "inline": "yes"},
        ):
            result = await client.call_tool("get_call_clip", arguments)
            assert text(result).startswith("[invalid_parameter]"), (arguments, text(result))
    assert simulator.state.requests == []


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("?foo=1", "unknown_parameter"),
        ("?start=1&start=2", "invalid_parameter"),
        ("?start", "invalid_parameter"),
        ("?format=aac", "invalid_parameter"),
        ("?channel=9", "invalid_parameter"),
    ],
)
async def test_clip_uri_errors(simulator: Any, tmp_path: Path, query: str, code: str) -> None:
    async with in_process(simulator.url, tmp_path) as client:
        with pytest.raises(MCPError) as caught:
            await client.read_resource(call_uri(EXAMPLE, "clip") + query)
    assert caught.value.error.data["code"] == code
    assert simulator.state.requests == []


FULL_CLIP_QUERY = "?start=1&end=2&channel=mix&format=wav&rate=8000"


@pytest.mark.parametrize(
    ("query", "code", "says"),
    [
        (FULL_CLIP_QUERY + "&x=1", "unknown_parameter", "unknown query name(s): 'x'"),
        (FULL_CLIP_QUERY + "&rate=16000", "invalid_parameter", "rate given more than once"),
        ("?start=1" + "&start=1" * 40, "invalid_parameter", "has 41 name=value pairs"),
    ],
)
async def test_a_full_clip_uri_with_one_pair_more_is_told_what_is_wrong(
    simulator: Any, tmp_path: Path, query: str, code: str, says: str
) -> None:
    """Regression: the 5-pair URI get_call_clip returns plus one more pair (unknown or repeated)
    was "not name=value pairs (at most 5)", while ?start=1&x=1 named x. A hostile number of pairs
    is still refused before parsing, saying how many there are."""
    async with in_process(simulator.url, tmp_path) as client:
        with pytest.raises(MCPError) as caught:
            await client.read_resource(call_uri(SMALL, "clip") + query)
    assert caught.value.error.data["code"] == code
    assert says in caught.value.error.message
    assert simulator.state.requests == []


@pytest.mark.parametrize(
    "arguments",
    [
        {"startSeconds": 0, "endSeconds": 0.00001},
        {"startSeconds": 19.99995},  # SMALL is 20.0 s long
        {"startSeconds": 0, "endSeconds": 5e-324},
        {"startSeconds": 1, "endSeconds": 1.0004},
    ],
)
async def test_a_clip_under_a_millisecond_is_an_invalid_range(
    simulator: Any, tmp_path: Path, arguments: dict[str, float]
) -> None:
    """Regression: these were refused as [unsupported_audio] blaming the recording ("shorter than
    its header says"), or (1 to 1.0004 s) cut, then named by a URI that could not be read back."""
    async with in_process(simulator.url, tmp_path) as client:
        result = await client.call_tool("get_call_clip", {**SMALL, **arguments})
    assert result.is_error
    assert text(result).startswith("[invalid_parameter] A clip holds at least 1 ms of audio"), text(result)
    assert "use 0 <= startSeconds < endSeconds <= 20.00, at least 0.001 s apart" in text(result)


async def test_a_sub_millisecond_range_is_the_clip_its_uri_reads_back(simulator: Any, tmp_path: Path) -> None:
    """Regression: the clip's URI and artefact name were rounded to the millisecond, the cut was
    not: 0-0.0001 and 0-0.0004 shared one file, and a URI's clip was not the tool's. Now the plan
    rounds once, and the URI returned reads back the very bytes the tool stored."""
    async with in_process(simulator.url, tmp_path) as client:
        result = await client.call_tool(
            "get_call_clip", {**SMALL, "startSeconds": 1.0004, "endSeconds": 1.0016, "inline": True}
        )
        clip = structured(result)["clip"]
        read = await client.read_resource(clip["uri"])
    assert (clip["startSeconds"], clip["endSeconds"], clip["durationSeconds"]) == (1.0, 1.002, 0.002)
    assert clip["uri"].endswith("/clip?start=1&end=1.002&channel=mix&format=wav&rate=8000")
    tool_bytes = base64.b64decode(next(c for c in result.content if isinstance(c, AudioContent)).data)
    blob = read.contents[0]
    assert isinstance(blob, BlobResourceContents)
    assert base64.b64decode(blob.blob) == tool_bytes
    assert soundfile.info(io.BytesIO(tool_bytes)).frames == 16  # 2 ms at 8 kHz


async def test_the_clip_length_error_shows_it_is_over_the_limit(simulator: Any, tmp_path: Path) -> None:
    """Regression: 10.001 s over a 10 s limit read "this one would be 10.00 s"."""
    async with in_process(simulator.url, tmp_path, clip_max_seconds=10) as client:
        result = await client.call_tool("get_call_clip", {**SMALL, "startSeconds": 0, "endSeconds": 10.001})
    assert text(result).startswith("[invalid_parameter] A clip is at most 10 s long")
    assert "this one would be 10.001 s" in text(result)


async def test_timeline_and_analytics_take_no_query(simulator: Any, tmp_path: Path) -> None:
    async with in_process(simulator.url, tmp_path) as client:
        for kind in ("timeline", "analytics"):
            with pytest.raises(MCPError) as caught:
                await client.read_resource(call_uri(EXAMPLE, kind) + "?x=1")
            assert caught.value.error.data["code"] == "invalid_parameter"
        full = json.loads((await client.read_resource(call_uri(EXAMPLE, "analytics"))).contents[0].text)  # type: ignore[union-attr]
    assert full["timelineUri"] == call_uri(EXAMPLE, "timeline")


async def test_every_blob_resource_keeps_to_the_resource_limit(simulator: Any, tmp_path: Path) -> None:
    """One rule (CTE1_RESOURCE_MAX_BYTES) for the recording and a clip: the same code and next step."""
    limit = 1024 * 1024
    async with in_process(simulator.url, tmp_path, resource_max_bytes=limit) as client:
        refused: list[MCPError] = []
        big_clip = call_uri(EXAMPLE, "clip") + "?start=0&end=60&rate=16000"  # 1.92 MB of WAV
        for uri in (call_uri(EXAMPLE), big_clip):  # the recording is 4.3 MiB
            with pytest.raises(MCPError) as caught:
                await client.read_resource(uri)
            refused.append(caught.value)
        small = (await client.read_resource(call_uri(EXAMPLE, "clip") + "?start=0&end=10")).contents[0]
    audio, clip = refused
    assert audio.error.code == clip.error.code
    assert audio.error.data["code"] == clip.error.data["code"] == "audio_too_large"
    assert clip.error.message.startswith(
        f"[audio_too_large] The clip is {44 + 2 * 16000 * 60:,} bytes, more than"
    )
    next_steps = [error.error.message.split("\nNext: ")[1] for error in refused]
    assert next_steps == [
        "Over stdio, open the local file named by get_call_audio's audio.path; or over HTTP, GET its "
        "audio.downloadUrl; or ask the operator to raise CTE1_RESOURCE_MAX_BYTES.",
        "Over stdio, open the local file named by get_call_clip's clip.path; or ask the operator to raise "
        "CTE1_RESOURCE_MAX_BYTES.",
    ]
    assert isinstance(small, BlobResourceContents) and len(base64.b64decode(small.blob)) == 44 + 2 * 8000 * 10


async def test_the_timeline_picture_keeps_to_the_resource_limit_too(simulator: Any, tmp_path: Path) -> None:
    async with in_process(simulator.url, tmp_path, resource_max_bytes=1000) as client:
        with pytest.raises(MCPError) as caught:
            await client.read_resource(call_uri(SMALL, "timeline"))
    assert caught.value.error.data["code"] == "audio_too_large"
    assert caught.value.error.message.endswith("Next: Ask the operator to raise CTE1_RESOURCE_MAX_BYTES.")
