"""The key echoed in the upstream's header values (not its body) never reaches a client's text.

Media types, content and transfer codings and part headers are quoted in error texts and kept
with a recording; a platform (or a proxy) that reflects the ``Authorization`` header into them
must find it blanked, in whatever letter case it comes back (parsers lower-case some of them).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cte1_mcp.errors import RateLimited, UpstreamBadResponse, UpstreamError, UpstreamUnavailable
from tests.helpers.raw_upstream import (
    API_KEY,
    BOUNDARY,
    METADATA,
    RawServer,
    Reply,
    audio_part,
    failed,
    fetch,
    metadata_part,
    multipart_body,
    multipart_reply,
    part,
    raw_server,
)

pytestmark = pytest.mark.anyio

#: How a reflecting proxy may send the key back: as sent, upper-cased, mixed.
SHOUTED = API_KEY.upper()
MIXED = API_KEY[:8].upper() + API_KEY[8:]
OK_BODY = multipart_body(metadata_part(), audio_part(b"RIFF audio"))


@pytest.fixture
async def server() -> AsyncIterator[RawServer]:
    async with raw_server() as raw:
        yield raw


def assert_no_key(exc: UpstreamError) -> str:
    """Every client-visible text of ``exc``, checked for the key in any case; the rendered text."""
    rendered = exc.render()
    for text in (rendered, str(exc), exc.message, exc.platform_message or "", exc.next_step):
        assert API_KEY not in text.lower(), text
    assert "[redacted]" in rendered, rendered
    return rendered


@pytest.mark.parametrize(
    ("reply", "kind", "code"),
    [
        pytest.param(
            multipart_reply(
                multipart_body(
                    part(
                        json.dumps(METADATA).encode(),
                        'Content-Disposition: form-data; name="metadata"',
                        "Content-Type: application/json",
                        f"Content-Transfer-Encoding: {SHOUTED}",
                    ),
                    audio_part(b"RIFF"),
                )
            ),
            UpstreamBadResponse,
            "upstream_bad_response",
            id="part-content-transfer-encoding",
        ),
        pytest.param(
            Reply(headers=[("Content-Type", f"multipart/x-{MIXED}")], body=OK_BODY),
            UpstreamBadResponse,
            "upstream_bad_response",
            id="multipart-media-type-without-boundary",
        ),
        pytest.param(
            Reply(
                headers=[
                    ("Content-Type", f"multipart/form-data; boundary={BOUNDARY}"),
                    ("Content-Encoding", SHOUTED),
                ],
                body=OK_BODY,
            ),
            UpstreamBadResponse,
            "upstream_bad_response",
            id="content-coding-of-a-200",
        ),
        pytest.param(
            Reply(status=500, headers=[("Content-Type", f"text/x-{SHOUTED}")], body=b"oops"),
            UpstreamUnavailable,
            "upstream_unavailable",
            id="media-type-of-a-500",
        ),
        pytest.param(
            Reply(status=500, headers=[("Content-Type", f"text/x-{MIXED}")]),
            UpstreamUnavailable,
            "upstream_unavailable",
            id="empty-body-media-type-of-a-500",
        ),
        pytest.param(
            Reply(status=429, headers=[("Content-Encoding", f"x-{SHOUTED}")], body=b"zz"),
            RateLimited,
            "rate_limited",
            id="content-coding-of-a-429",
        ),
        pytest.param(
            Reply(status=200, headers=[("Content-Type", f"text/x-{SHOUTED}")], body=b"refused"),
            UpstreamError,
            "upstream_rejected",
            id="media-type-of-a-200-refusal",
        ),
    ],
)
async def test_a_key_reflected_in_a_header_value_is_redacted(
    server: RawServer, tmp_path: Path, reply: Reply, kind: type[UpstreamError], code: str
) -> None:
    server.reply(reply)
    assert_no_key(failed(await fetch(server, tmp_path), kind, code))


async def test_a_key_reflected_in_the_audio_parts_content_type_is_not_kept(
    server: RawServer, tmp_path: Path
) -> None:
    """The audio part's Content-Type is stored with the recording and shown to clients."""
    body = multipart_body(metadata_part(), audio_part(b"RIFF audio", content_type=f"audio/x-{SHOUTED}"))
    server.reply(multipart_reply(body))
    run = await fetch(server, tmp_path)
    assert run.error is None and run.result is not None
    assert run.result.audio_content_type == "audio/x-[redacted]"
