"""The multipart reader alone: framing, part roles and bounds, fed in every possible split."""

from __future__ import annotations

import pytest

from cte1_mcp.cte1.multipart import RecordingPartsReader
from cte1_mcp.errors import AudioTooLarge, UpstreamBadResponse, UpstreamTruncated
from cte1_mcp.models import CallMetadata
from tests.helpers.raw_upstream import (
    BOUNDARY,
    METADATA,
    TRICKY_AUDIO,
    Sink,
    audio_part,
    metadata_part,
    multipart_body,
)


def read_metadata(raw: bytes) -> CallMetadata:
    return CallMetadata.model_validate_json(raw)


def _read_split(body: bytes, pieces: list[bytes], boundary: str = BOUNDARY) -> tuple[CallMetadata, bytes]:
    sink = Sink()
    seen: list[CallMetadata] = []

    def remember(raw: bytes) -> CallMetadata:
        seen.append(read_metadata(raw))
        return seen[-1]

    reader = RecordingPartsReader(
        boundary, sink.write_blocking, remember, max_audio_bytes=1 << 20, status=200
    )
    for piece in pieces:
        reader.feed(piece)
    metadata = reader.finish()
    assert seen == [metadata]
    assert reader.audio_bytes == len(sink.data)
    return metadata, bytes(sink.data)


@pytest.mark.parametrize("named", [True, False])
def test_every_split_point_and_byte_by_byte(named: bool) -> None:
    """Deterministic chunk edges: a loopback socket may coalesce small writes, this cannot."""
    body = multipart_body(
        metadata_part(named=named),
        audio_part(TRICKY_AUDIO[:200], named=named),
        preamble=b"pre",
        epilogue=b"post",
    )
    expected = TRICKY_AUDIO[:200]
    for cut in range(len(body) + 1):
        metadata, audio = _read_split(body, [body[:cut], body[cut:]] if 0 < cut < len(body) else [body])
        assert audio == expected, cut
        assert metadata.platform_json() == METADATA
    _, audio = _read_split(body, [body[i : i + 1] for i in range(len(body))])
    assert audio == expected


def test_audio_over_the_limit_is_refused_before_it_is_written() -> None:
    sink = Sink()
    body = multipart_body(metadata_part(), audio_part(b"x" * 1001))
    reader = RecordingPartsReader(
        BOUNDARY, sink.write_blocking, read_metadata, max_audio_bytes=1000, status=200
    )
    with pytest.raises(AudioTooLarge):
        reader.feed(body)
    assert len(sink.data) <= 1000


def test_a_body_cut_before_its_closing_boundary_is_a_truncation() -> None:
    body = multipart_body(metadata_part(), audio_part(TRICKY_AUDIO))
    reader = RecordingPartsReader(
        BOUNDARY, Sink().write_blocking, read_metadata, max_audio_bytes=1 << 20, status=200
    )
    reader.feed(body[:-10])
    with pytest.raises(UpstreamTruncated):
        reader.finish()


def test_a_body_without_parts_is_malformed() -> None:
    reader = RecordingPartsReader(
        BOUNDARY, Sink().write_blocking, read_metadata, max_audio_bytes=1 << 20, status=200
    )
    reader.feed(b"<html>Gateway error</html>")
    with pytest.raises(UpstreamBadResponse) as caught:
        reader.finish()
    assert not isinstance(caught.value, UpstreamTruncated)
