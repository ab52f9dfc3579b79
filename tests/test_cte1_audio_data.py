"""The audio_data endpoint against a raw loopback server: multipart receive, metadata acceptance,
and the documented "200 失敗" answers."""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cte1_mcp.errors import (
    AudioTooLarge,
    CallInProgress,
    RateLimited,
    UpstreamBadResponse,
    UpstreamRejected,
    UpstreamTruncated,
    UpstreamUnavailable,
)
from tests.helpers.raw_upstream import (
    API_KEY,
    METADATA,
    TRICKY_AUDIO,
    RawServer,
    Reply,
    Run,
    assert_success,
    audio_part,
    failed,
    fetch,
    metadata_part,
    multipart_body,
    multipart_reply,
    part,
    raw_metadata_part,
    raw_server,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def server() -> AsyncIterator[RawServer]:
    async with raw_server() as raw:
        yield raw


# --- successes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subtype", "named", "chunks", "content_length"),
    [
        ("form-data", True, [1], True),
        ("form-data", True, [1, 2, 3, 5, 7, 11, 13], False),
        ("mixed", False, [7, 1, 1, 1, 64], True),
        ("mixed", True, [4096, 1, 3], False),
        ("form-data", False, None, True),
    ],
)
async def test_tricky_audio_arrives_byte_exact_whatever_the_chunking(
    server: RawServer,
    tmp_path: Path,
    subtype: str,
    named: bool,
    chunks: list[int] | None,
    content_length: bool,
) -> None:
    body = multipart_body(metadata_part(named=named), audio_part(TRICKY_AUDIO, named=named))
    server.reply(multipart_reply(body, subtype=subtype, chunks=chunks, content_length=content_length))
    assert_success(await fetch(server, tmp_path), TRICKY_AUDIO)


async def test_preamble_epilogue_and_quoted_boundary(server: RawServer, tmp_path: Path) -> None:
    boundary = "=_part 0'9:+(x)?,./"  # legal boundary characters that need quoting
    body = multipart_body(
        metadata_part(),
        audio_part(TRICKY_AUDIO),
        boundary=boundary,
        preamble=b"This is a multi-part message in MIME format.",
        epilogue=b"\r\nthe end\r\n",
    )
    headers = [("Content-Type", f'multipart/mixed; charset=utf-8; boundary="{boundary}"')]
    server.reply(Reply(headers=headers, body=body, chunks=[3, 17]))
    assert_success(await fetch(server, tmp_path), TRICKY_AUDIO)


async def test_dispositions_other_than_form_data_are_accepted(server: RawServer, tmp_path: Path) -> None:
    meta = part(json.dumps(METADATA).encode(), 'Content-Disposition: inline; name="metadata"')
    audio = part(TRICKY_AUDIO, 'Content-Disposition: attachment; name="audioFile"; filename="a.wav"')
    server.reply(multipart_reply(multipart_body(meta, audio), subtype="mixed"))
    assert_success(await fetch(server, tmp_path), TRICKY_AUDIO, content_type=None)


async def test_parts_identified_by_content_type_when_unnamed_and_out_of_the_usual_headers(
    server: RawServer, tmp_path: Path
) -> None:
    meta = part(json.dumps(METADATA).encode(), "Content-Type: application/vnd.cte1+json")
    audio = part(TRICKY_AUDIO, "Content-Type: application/octet-stream", "X-Whatever: 1")
    server.reply(multipart_reply(multipart_body(meta, audio), subtype="mixed"))
    assert_success(await fetch(server, tmp_path), TRICKY_AUDIO, content_type="application/octet-stream")


async def test_extra_non_audio_part_is_ignored(server: RawServer, tmp_path: Path) -> None:
    extra = part(
        b'{"transcript": null}', 'Content-Disposition: form-data; name="notes"', "Content-Type: text/plain"
    )
    body = multipart_body(metadata_part(), audio_part(TRICKY_AUDIO), extra)
    server.reply(multipart_reply(body))
    assert_success(await fetch(server, tmp_path), TRICKY_AUDIO)


async def test_large_audio_with_progress_read_from_a_counter(server: RawServer, tmp_path: Path) -> None:
    audio = bytes(range(256)) * (3 * 4096 + 7)  # ~3 MiB
    body = multipart_body(metadata_part(), audio_part(audio))
    server.reply(multipart_reply(body, chunks=[256 * 1024], pause=0.05))
    run = await fetch(server, tmp_path)
    assert_success(run, audio)
    received = [done for done, _ in run.progress]
    assert received == sorted(set(received))  # strictly increasing, as MCP progress must be
    assert run.progress[-1] == (len(body), len(body))
    assert all(total == len(body) for _, total in run.progress)
    assert len(run.progress) >= 2  # read while it arrived, not only at the end


async def test_a_compressed_answer_is_refused_not_expanded(server: RawServer, tmp_path: Path) -> None:
    """The client asks for identity; a server sending gzip anyway is not decoded (no bomb can go off)."""
    body = gzip.compress(multipart_body(metadata_part(), audio_part(TRICKY_AUDIO * 50)))
    reply = multipart_reply(body, chunks=[999])
    reply.headers = [*reply.headers, ("Content-Encoding", "gzip")]
    server.reply(reply)
    run = await fetch(server, tmp_path)
    exc = failed(run, UpstreamBadResponse, "upstream_bad_response")
    assert not isinstance(exc, UpstreamTruncated)
    assert "content coding 'gzip'" in exc.message and "identity" in exc.message
    assert run.sink.data == b""
    assert server.requests[0].headers["accept-encoding"] == "identity"


# --- malformed multipart ----------------------------------------------------------------------------


def bad(run: Run, *fragments: str) -> UpstreamBadResponse:
    """Malformed: the plain class, not retried (the same request would get the same answer)."""
    exc = failed(run, UpstreamBadResponse, "upstream_bad_response")
    assert isinstance(exc, UpstreamBadResponse) and not isinstance(exc, UpstreamTruncated), repr(exc)
    assert exc.retryable is False
    assert "HTTP 200" in exc.message
    for fragment in fragments:
        assert fragment in exc.message
    return exc


def truncated(run: Run, *fragments: str) -> UpstreamTruncated:
    """Cut off: same code as a malformed answer, but retried."""
    exc = failed(run, UpstreamTruncated, "upstream_bad_response")
    assert isinstance(exc, UpstreamTruncated) and isinstance(exc, UpstreamBadResponse)
    assert exc.retryable is True
    assert "HTTP 200" in exc.message
    for fragment in fragments:
        assert fragment in exc.message
    assert run.result is None
    return exc


async def test_truncated_mid_audio_with_content_length(server: RawServer, tmp_path: Path) -> None:
    body = multipart_body(metadata_part(), audio_part(TRICKY_AUDIO))
    server.reply(multipart_reply(body, cut_after=len(body) - 600))
    run = await fetch(server, tmp_path)
    truncated(run, "broke off", f"of {len(body):,} bytes")


async def test_complete_multipart_short_of_its_content_length_is_truncated(
    server: RawServer, tmp_path: Path
) -> None:
    """Every part and the closing boundary arrived, but not every announced byte."""
    body = multipart_body(metadata_part(), audio_part(TRICKY_AUDIO), epilogue=b"x" * 100)
    server.reply(multipart_reply(body, cut_after=len(body) - 50))
    truncated(await fetch(server, tmp_path), "broke off", f"of {len(body):,} bytes")


async def test_truncated_mid_audio_without_content_length(server: RawServer, tmp_path: Path) -> None:
    body = multipart_body(metadata_part(), audio_part(TRICKY_AUDIO))
    server.reply(multipart_reply(body, content_length=False, cut_after=len(body) - 600))
    truncated(await fetch(server, tmp_path), "closing multipart boundary", "truncated")


async def test_truncated_before_the_final_boundary_dashes(server: RawServer, tmp_path: Path) -> None:
    body = multipart_body(metadata_part(), audio_part(TRICKY_AUDIO), close=False) + b"\r\n--BOUNDARY"
    server.reply(multipart_reply(body, content_length=False))
    truncated(await fetch(server, tmp_path), "truncated")


async def test_truncated_mid_part_headers(server: RawServer, tmp_path: Path) -> None:
    body = multipart_body(metadata_part(), close=False) + b"\r\n--BOUNDARY\r\nContent-Disposition: form-da"
    server.reply(multipart_reply(body, content_length=False))
    run = await fetch(server, tmp_path)
    truncated(run, "truncated")
    assert run.sink.data == b""


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"--BOUND",
        b"--BOUNDARY\r\nContent-Disposition: form-da",
        b"preamble\r\n--BOUNDARY\r\nContent-Type: applica",
    ],
    ids=["empty", "mid-delimiter", "mid-first-headers", "after-preamble"],
)
async def test_truncated_before_the_first_part_began(server: RawServer, tmp_path: Path, body: bytes) -> None:
    """What arrived is the start of a multipart body, so no part yet is a cut, not a malformed answer."""
    server.reply(multipart_reply(body, content_length=False))
    run = await fetch(server, tmp_path)
    truncated(run, "closing multipart boundary")
    assert run.sink.data == b""


@pytest.mark.parametrize("reset", [False, True], ids=["closed", "reset"])
async def test_connection_dropped_mid_body_is_a_truncation(
    server: RawServer, tmp_path: Path, reset: bool
) -> None:
    """Both ways a connection goes away while the body streams: closed early and reset (RST)."""
    body = multipart_body(metadata_part(), audio_part(TRICKY_AUDIO))
    server.reply(multipart_reply(body, content_length=True, cut_after=500, reset=reset))
    exc = truncated(await fetch(server, tmp_path), "broke off after 500 of")
    assert "nothing was stored" in exc.message


async def test_truncated_response_head(server: RawServer, tmp_path: Path) -> None:
    """Before any body: CT-e1 failed, not the body (retried as unavailable)."""
    server.reply(multipart_reply(b"", cut_head=True))
    exc = failed(await fetch(server, tmp_path), UpstreamUnavailable, "upstream_unavailable")
    assert exc.retryable is True
    assert "The connection to CT-e1 failed" in exc.message


async def test_missing_audio_part(server: RawServer, tmp_path: Path) -> None:
    server.reply(multipart_reply(multipart_body(metadata_part())))
    bad(await fetch(server, tmp_path), "no audio part")


async def test_missing_metadata_part(server: RawServer, tmp_path: Path) -> None:
    server.reply(multipart_reply(multipart_body(audio_part(TRICKY_AUDIO))))
    run = await fetch(server, tmp_path)
    bad(run, "audio part comes before the metadata")
    assert run.sink.data == b""


async def test_audio_before_metadata(server: RawServer, tmp_path: Path) -> None:
    server.reply(multipart_reply(multipart_body(audio_part(TRICKY_AUDIO), metadata_part())))
    bad(await fetch(server, tmp_path), "before the metadata")


async def test_empty_audio_part(server: RawServer, tmp_path: Path) -> None:
    server.reply(multipart_reply(multipart_body(metadata_part(), audio_part(b""))))
    bad(await fetch(server, tmp_path), "audio part is empty")


async def test_two_audio_parts_are_ambiguous(server: RawServer, tmp_path: Path) -> None:
    body = multipart_body(metadata_part(), audio_part(b"left"), audio_part(b"right"))
    server.reply(multipart_reply(body))
    bad(await fetch(server, tmp_path), "more than one audio part")


@pytest.mark.parametrize(
    ("metadata", "fragment"),
    [
        (b"<xml>not json</xml>", "not JSON"),
        (b'{"status": "complete", "tenantId": "05053698341"', "not JSON"),
        (b'["complete"]', "not an object"),
        (b'{"status": "complete", "tenantId": "05053698341", "sessionId": "x", "recordId": 1}', "sessionId"),
        (b'{"tenantId": "05053698341", "sessionId": 942125, "recordId": 1}', "status"),
        (
            b'{"status": "complete", "tenantId": "05053698341", "sessionId": 942125, "recordId": 1, '
            b'"connectTime": "2023-01-04 11:22:33"}',
            "connectTime",
        ),
    ],
)
async def test_metadata_that_is_not_the_documented_json(
    server: RawServer, tmp_path: Path, metadata: bytes, fragment: str
) -> None:
    meta = part(metadata, 'Content-Disposition: form-data; name="metadata"', "Content-Type: application/json")
    server.reply(multipart_reply(multipart_body(meta, audio_part(TRICKY_AUDIO))))
    run = await fetch(server, tmp_path)
    bad(run, fragment)
    assert run.sink.data == b""


async def test_metadata_of_another_call_is_refused(server: RawServer, tmp_path: Path) -> None:
    body = multipart_body(metadata_part(METADATA | {"sessionId": 942126}), audio_part(TRICKY_AUDIO))
    server.reply(multipart_reply(body))
    run = await fetch(server, tmp_path)
    bad(run, "05053698341/942126/1", "instead of 05053698341/942125/1")
    assert run.sink.data == b""


async def test_oversized_metadata_part(server: RawServer, tmp_path: Path) -> None:
    huge = METADATA | {"padding": "x" * (1024 * 1024)}
    server.reply(multipart_reply(multipart_body(metadata_part(huge), audio_part(TRICKY_AUDIO))))
    bad(await fetch(server, tmp_path), "metadata part is larger")


async def test_boundary_inside_the_audio_is_malformed(server: RawServer, tmp_path: Path) -> None:
    audio = b"abc\r\n--BOUNDARYxyz"
    server.reply(multipart_reply(multipart_body(metadata_part(), audio_part(audio))))
    bad(await fetch(server, tmp_path), "malformed")


async def test_base64_transfer_encoding_is_refused_not_stored_encoded(
    server: RawServer, tmp_path: Path
) -> None:
    audio = part(b"UklGRg==", "Content-Type: audio/wav", "Content-Transfer-Encoding: base64")
    server.reply(multipart_reply(multipart_body(metadata_part(), audio), subtype="mixed"))
    bad(await fetch(server, tmp_path), "base64")


async def test_multipart_without_boundary(server: RawServer, tmp_path: Path) -> None:
    server.reply(Reply(headers=[("Content-Type", "multipart/form-data")], body=b"--x\r\n"))
    bad(await fetch(server, tmp_path), "no boundary")


async def test_oversized_part_header_line(server: RawServer, tmp_path: Path) -> None:
    header = "X-Long: " + "a" * 20000
    body = multipart_body(part(json.dumps(METADATA).encode(), header), audio_part(b"x"))
    server.reply(multipart_reply(body))
    bad(await fetch(server, tmp_path), "malformed")


async def test_endless_epilogue_is_cut_off(server: RawServer, tmp_path: Path) -> None:
    body = multipart_body(metadata_part(), audio_part(b"x" * 1000), epilogue=b"z" * (3 * 1024 * 1024))
    server.reply(multipart_reply(body, content_length=False))
    bad(await fetch(server, tmp_path, max_audio_bytes=1000), "outside the audio part")


# --- call in progress, too large ----------------------------------------------------------------------


async def test_call_in_progress_writes_no_audio_and_stops_reading(server: RawServer, tmp_path: Path) -> None:
    audio = b"\x55" * (32 * 1024 * 1024)
    body = multipart_body(metadata_part(METADATA | {"status": "connected"}), audio_part(audio))
    server.reply(multipart_reply(body, chunks=[256 * 1024], pause=0.001))
    run = await fetch(server, tmp_path)
    exc = failed(run, CallInProgress, "call_in_progress")
    assert "'connected'" in exc.message and "05053698341/942125/1" in exc.message
    assert run.sink.data == b""
    await asyncio.wait_for(server.served[0].done.wait(), 5)
    assert not server.served[0].completed
    assert server.served[0].body_bytes_sent < len(body) // 2


async def test_audio_too_large_stops_at_the_limit(server: RawServer, tmp_path: Path) -> None:
    limit = 100_000
    audio = b"\x01" * (16 * 1024 * 1024)
    body = multipart_body(metadata_part(), audio_part(audio))
    server.reply(multipart_reply(body, content_length=False, chunks=[16 * 1024], pause=0.0005))
    run = await fetch(server, tmp_path, max_audio_bytes=limit)
    exc = failed(run, AudioTooLarge, "audio_too_large")
    assert f"{limit:,}" in exc.message
    assert limit - 65536 <= len(run.sink.data) <= limit
    await asyncio.wait_for(server.served[0].done.wait(), 5)
    assert not server.served[0].completed


async def test_audio_exactly_at_the_limit_is_fine(server: RawServer, tmp_path: Path) -> None:
    server.reply(multipart_reply(multipart_body(metadata_part(), audio_part(TRICKY_AUDIO))))
    assert_success(await fetch(server, tmp_path, max_audio_bytes=len(TRICKY_AUDIO)), TRICKY_AUDIO)


async def test_announced_content_length_over_the_limit_fails_before_reading(
    server: RawServer, tmp_path: Path
) -> None:
    audio = b"\x01" * (4 * 1024 * 1024)
    server.reply(multipart_reply(multipart_body(metadata_part(), audio_part(audio))))
    run = await fetch(server, tmp_path, max_audio_bytes=1024)
    exc = failed(run, AudioTooLarge, "audio_too_large")
    assert "announced" in exc.message
    assert run.sink.data == b""


# --- HTTP 200 without a recording (the documented "200 失敗") --------------------------------------------


async def test_200_json_failure_keeps_the_japanese_description_verbatim(
    server: RawServer, tmp_path: Path
) -> None:
    description = "31日以上前の音声データを要求しています"
    body = json.dumps(
        {"status": "error", "description": description, "errorCode": "E4004"}, ensure_ascii=False
    )
    server.reply(Reply(headers=[("Content-Type", "application/json; charset=utf-8")], body=body.encode()))
    exc = failed(await fetch(server, tmp_path), UpstreamRejected, "upstream_rejected")
    assert exc.platform_message == description
    assert exc.message == 'CT-e1 answered without a recording (HTTP 200; status "error"; code "E4004").'
    assert f"Platform said: {description}" in exc.render()


async def test_200_json_with_message_and_nested_error(server: RawServer, tmp_path: Path) -> None:
    body = {"error": {"code": 17, "message": "tenant mismatch"}, "message": "request failed"}
    server.reply(Reply(headers=[("Content-Type", "application/json")], body=json.dumps(body).encode()))
    exc = failed(await fetch(server, tmp_path), UpstreamRejected, "upstream_rejected")
    assert exc.platform_message == "request failed"
    assert "code 17" in exc.message


async def test_200_json_without_any_message_field_is_quoted_whole(server: RawServer, tmp_path: Path) -> None:
    server.reply(Reply(headers=[("Content-Type", "application/json")], body=b'{"result": false, "id": 3}'))
    exc = failed(await fetch(server, tmp_path), UpstreamRejected, "upstream_rejected")
    assert exc.platform_message == '{"result": false, "id": 3}'


async def test_200_plain_text_is_the_platforms_words(server: RawServer, tmp_path: Path) -> None:
    server.reply(Reply(headers=[("Content-Type", "text/plain")], body="  通話が見つかりません\n".encode()))
    exc = failed(await fetch(server, tmp_path), UpstreamRejected, "upstream_rejected")
    assert exc.platform_message == "通話が見つかりません"
    assert "HTTP 200; text/plain" in exc.message


async def test_200_html_from_a_proxy_is_summarised(server: RawServer, tmp_path: Path) -> None:
    page = (
        "<!DOCTYPE html><html><head><title>Service   Unavailable</title><style>body{color:red}</style>"
        "<script>var x = '<b>';</script></head><body>\n\n<h1>Maintenance &amp; upgrade</h1>"
        + "<p>lorem ipsum</p>" * 100
        + "</body></html>"
    )
    server.reply(Reply(headers=[("Content-Type", "text/html; charset=utf-8")], body=page.encode()))
    exc = failed(await fetch(server, tmp_path), UpstreamRejected, "upstream_rejected")
    assert exc.platform_message is None
    assert "HTTP 200; text/html: “Service Unavailable Maintenance & upgrade lorem ipsum" in exc.message
    assert "<" not in exc.message and "color:red" not in exc.message and "var x" not in exc.message
    assert len(exc.message) < 300


@pytest.mark.parametrize("content_type", [None, "application/json"])
async def test_200_empty_body(server: RawServer, tmp_path: Path, content_type: str | None) -> None:
    headers = [("Content-Type", content_type)] if content_type else []
    server.reply(Reply(headers=headers, body=b""))
    exc = failed(await fetch(server, tmp_path), UpstreamRejected, "upstream_rejected")
    assert exc.message.endswith(f"(HTTP 200; empty {content_type + ' ' if content_type else ''}body).")


async def test_200_labelled_multipart_but_no_part_inside(server: RawServer, tmp_path: Path) -> None:
    server.reply(multipart_reply(b"<html>Gateway error</html>"))
    bad(await fetch(server, tmp_path), "no part delimited by the announced boundary")


async def test_200_labelled_multipart_but_json_inside(server: RawServer, tmp_path: Path) -> None:
    description = "存在しないリクエストパラメータです"
    body = json.dumps({"status": "error", "description": description}, ensure_ascii=False)
    server.reply(multipart_reply(body.encode()))
    exc = failed(await fetch(server, tmp_path), UpstreamRejected, "upstream_rejected")
    assert exc.platform_message == description


@pytest.mark.parametrize(
    "description",
    ["未完了の通話に対する取得要求です", "The call is still in progress", "通話がまだ終了していません"],
)
async def test_200_failure_for_an_unfinished_call_is_call_in_progress(
    server: RawServer, tmp_path: Path, description: str
) -> None:
    raw = json.dumps({"status": "error", "description": description}, ensure_ascii=False).encode()
    server.reply(Reply(headers=[("Content-Type", "application/json")], body=raw))
    exc = failed(await fetch(server, tmp_path), CallInProgress, "call_in_progress")
    assert exc.platform_message == description
    assert "HTTP 200" in exc.message


@pytest.mark.parametrize(
    "body",
    [
        {"status": "error", "description": "リクエストが多すぎます。リクエスト間隔は5秒以上としてください"},
        {"status": "error", "description": "Too Many Requests"},
        {"status": 429, "description": "slow down"},
        {"status": "error", "errorCode": "RATE_LIMIT_EXCEEDED", "message": "x"},
    ],
)
async def test_200_rate_limit_wording_is_retryable(
    server: RawServer, tmp_path: Path, body: dict[str, Any]
) -> None:
    raw = json.dumps(body, ensure_ascii=False).encode()
    server.reply(Reply(headers=[("Content-Type", "application/json"), ("Retry-After", "6")], body=raw))
    exc = failed(await fetch(server, tmp_path), RateLimited, "rate_limited")
    assert exc.retryable is True
    assert exc.retry_after_seconds == 6
    assert "HTTP 200" in exc.message


async def test_200_rate_limit_without_retry_after_invents_none(server: RawServer, tmp_path: Path) -> None:
    raw = json.dumps({"status": "error", "description": "Too Many Requests"}).encode()
    server.reply(Reply(headers=[("Content-Type", "application/json")], body=raw))
    exc = failed(await fetch(server, tmp_path), RateLimited, "rate_limited")
    assert exc.retryable is True
    assert exc.retry_after_seconds is None


async def test_200_rate_limit_labelled_multipart_keeps_retry_after(server: RawServer, tmp_path: Path) -> None:
    """A "200 失敗" JSON sent under a multipart label is still a rate limit with its Retry-After."""
    reply = multipart_reply(json.dumps({"status": 429, "description": "slow down"}).encode())
    reply.headers = [*reply.headers, ("Retry-After", "9")]
    server.reply(reply)
    exc = failed(await fetch(server, tmp_path), RateLimited, "rate_limited")
    assert (exc.retryable, exc.retry_after_seconds) == (True, 9)


@pytest.mark.parametrize(
    "description",
    [
        "存在しないリクエストパラメータです (no such call: sessionId=429)",
        "31日以上前の音声データの取得は制限されています",
        "許可されていないテナントの情報要求です",
    ],
)
async def test_200_failures_that_merely_mention_numbers_or_limits_are_not_rate_limits(
    server: RawServer, tmp_path: Path, description: str
) -> None:
    raw = json.dumps({"status": "error", "description": description}, ensure_ascii=False).encode()
    server.reply(Reply(headers=[("Content-Type", "application/json")], body=raw))
    exc = failed(await fetch(server, tmp_path), UpstreamRejected, "upstream_rejected")
    assert exc.platform_message == description


async def test_only_a_bounded_part_of_a_failure_body_is_read(server: RawServer, tmp_path: Path) -> None:
    body = b"E" * (8 * 1024 * 1024)
    server.reply(Reply(headers=[("Content-Type", "text/plain")], body=body, chunks=[65536], pause=0.001))
    exc = failed(await fetch(server, tmp_path), UpstreamRejected, "upstream_rejected")
    assert exc.platform_message is not None and len(exc.platform_message) <= 1001
    await asyncio.wait_for(server.served[0].done.wait(), 5)
    assert not server.served[0].completed


async def test_a_platform_echoing_the_key_has_it_redacted(server: RawServer, tmp_path: Path) -> None:
    raw = json.dumps({"status": "error", "description": f"invalid Authorization: Bearer {API_KEY}"}).encode()
    server.reply(Reply(status=200, headers=[("Content-Type", "application/json")], body=raw))
    exc = failed(await fetch(server, tmp_path), UpstreamRejected, "upstream_rejected")
    assert exc.platform_message == "invalid Authorization: [redacted]"


# --- what the platform sends is redacted where it is read ------------------------------------------


async def test_the_key_echoed_in_metadata_is_redacted_in_every_form(
    server: RawServer, tmp_path: Path
) -> None:
    """A key (bare, ``Bearer <key>``, any letter case) in a field, an extra field or an object key
    never reaches the accepted metadata, which is what is stored and returned."""
    echoed = METADATA | {
        "agentName": f"agent {API_KEY.upper()}",
        "skillName": f"bearer   {API_KEY}",
        "futureField": {"auth": f"BEARER {API_KEY}", API_KEY: [f"x{API_KEY.title()}y"]},
    }
    server.reply(multipart_reply(multipart_body(metadata_part(echoed), audio_part(TRICKY_AUDIO))))
    run = await fetch(server, tmp_path)
    assert run.error is None and run.result is not None
    metadata = run.result.metadata
    dumped = json.dumps(metadata.platform_json()) + metadata.model_dump_json()
    assert API_KEY not in dumped.lower()
    assert metadata.agentName == "agent [redacted]"
    assert metadata.skillName == "[redacted]"
    assert metadata.platform_json()["futureField"] == {"auth": "[redacted]", "[redacted]": ["x[redacted]y"]}


async def test_a_key_spelled_with_json_escapes_in_a_refusal_is_redacted(
    server: RawServer, tmp_path: Path
) -> None:
    escaped = "".join(f"\\u{ord(c):04x}" for c in API_KEY)
    raw = ('{"status": "error", "description": "bad key Bearer ' + escaped + '"}').encode()
    server.reply(Reply(headers=[("Content-Type", "application/json")], body=raw))
    exc = failed(await fetch(server, tmp_path), UpstreamRejected, "upstream_rejected")
    assert exc.platform_message == "bad key [redacted]"


# --- metadata that cannot be stored or sent on -------------------------------------------------------


def deep_list(levels: int) -> bytes:
    return b"[" * levels + b"]" * levels


def deep_object(levels: int) -> str:
    return '{"a": ' * levels + "1" + "}" * levels


def metadata_with(extra: str) -> bytes:
    base = json.dumps(METADATA, ensure_ascii=False)
    return (base[:-1] + ", " + extra + "}").encode()


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (metadata_with('"deep": ' + deep_list(5000).decode()), "nested deeper than 32 levels"),
        (metadata_with('"deep": ' + deep_object(900)), "nested deeper than 32 levels"),
        (metadata_with('"deep": ' + deep_object(40)), "nested deeper than 32 levels"),
        (metadata_with('"note": "a\\ud800b"'), "lone surrogate"),
        (
            json.dumps(METADATA | {"connectTime": "9999-12-31T23:59:59Z"}).encode(),
            "connectTime is out of the range of dates",
        ),
        (
            json.dumps(METADATA | {"disconnectTime": "0001-01-01T00:00:00+09:00"}).encode(),
            "disconnectTime is out of the range of dates",
        ),
    ],
    ids=["list-5000-deep", "object-900-deep", "object-40-deep", "lone-surrogate", "year-9999", "year-1-east"],
)
async def test_metadata_that_breaks_storage_is_a_bad_response(
    server: RawServer, tmp_path: Path, raw: bytes, fragment: str
) -> None:
    server.reply(multipart_reply(multipart_body(raw_metadata_part(raw), audio_part(TRICKY_AUDIO))))
    run = await fetch(server, tmp_path)
    bad(run, fragment)
    assert run.sink.data == b""


async def test_metadata_nested_within_the_bound_is_kept(server: RawServer, tmp_path: Path) -> None:
    raw = metadata_with('"deep": ' + deep_object(30))
    server.reply(multipart_reply(multipart_body(raw_metadata_part(raw), audio_part(TRICKY_AUDIO))))
    run = await fetch(server, tmp_path)
    assert run.result is not None, run.error
    assert run.result.metadata.model_extra is not None and "deep" in run.result.metadata.model_extra


# --- each documented refusal has its own next step ----------------------------------------------------


@pytest.mark.parametrize(
    ("description", "next_step"),
    [
        (
            "31日以上前の音声データを要求しています (recording is older than 31 days)",
            "31 days after the call",
        ),
        (
            "許可されていないテナントの情報要求です (tenant not allowed for this API key)",
            "may not read that tenant",
        ),
        ("リクエストパラメータが不足しています (missing request parameter: recordId)", "sends all three"),
        ("存在しないリクエストパラメータです (no such call: sessionId=1)", "the ids may be wrong"),
        ("something else entirely", "the ids may be wrong"),
    ],
    ids=["31-days", "tenant", "missing", "no-such-call", "unknown"],
)
async def test_each_refusal_has_its_own_next_step(
    server: RawServer, tmp_path: Path, description: str, next_step: str
) -> None:
    raw = json.dumps({"status": "error", "description": description}, ensure_ascii=False).encode()
    server.reply(Reply(headers=[("Content-Type", "application/json")], body=raw))
    exc = failed(await fetch(server, tmp_path), UpstreamRejected, "upstream_rejected")
    assert next_step in exc.next_step
    if next_step != "the ids may be wrong":
        assert "ids may be wrong" not in exc.next_step
