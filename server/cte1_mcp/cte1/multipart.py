"""The platform's multipart answer read as it arrives: metadata part first, audio part streamed on.

Framing is left to the maintained sans-IO parser ``multipart.PushMultipartParser``; this module
only decides which part is which, bounds what it buffers, and hands audio bytes straight on.
It is synchronous: it runs in the download's worker thread, beside the HTTP client and the writer.

A body that merely stops early is :class:`UpstreamTruncated` (retryable); everything else that
is wrong with it is :class:`UpstreamBadResponse`: asking again would get the same answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import multipart

from cte1_mcp.errors import AudioTooLarge, UpstreamBadResponse, UpstreamTruncated
from cte1_mcp.models import CallMetadata
from cte1_mcp.units import KiB, MiB

#: The metadata is a small JSON object; anything larger is not what the docs describe.
METADATA_MAX_BYTES = 1 * MiB
#: Parts beyond metadata and audio (a later platform version may add some) are skipped, up to this much.
EXTRA_PARTS_MAX_BYTES = 1 * MiB
#: Boundaries, part headers, preamble and epilogue.
FRAMING_MAX_BYTES = 64 * KiB
#: Everything in a body that is not audio; a body larger than audio limit + this is refused.
NON_AUDIO_MAX_BYTES = METADATA_MAX_BYTES + EXTRA_PARTS_MAX_BYTES + FRAMING_MAX_BYTES
#: How much of a body with no part at all is kept, to report what the platform said instead.
HEAD_SAMPLE_BYTES = 64 * KiB

_MAX_PARTS = 16
_MAX_PART_HEADERS = 16
_MAX_PART_HEADER_LINE = 8 * KiB
_IDENTITY_TRANSFER_ENCODINGS = frozenset({"binary", "8bit", "7bit"})

Role = Literal["metadata", "audio", "extra"]


class AnyMultipartParser(multipart.PushMultipartParser):  # type: ignore[misc]  # untyped library
    """``PushMultipartParser`` for any multipart subtype, not only ``form-data``.

    The stock parser refuses parts without ``Content-Disposition: form-data``; the platform's
    subtype and part headers are undocumented (``multipart/mixed`` parts need no disposition).
    Overriding ``_create_segment`` is the library's documented extension point for this.
    """

    def _create_segment(self, headerlist: list[tuple[str, str]]) -> multipart.MultipartSegment:
        return multipart.MultipartSegment(headerlist)


def part_role(segment: Any, *, metadata_seen: bool, audio_seen: bool) -> Role:
    """Which part this is: by name when named, else by Content-Type, else by order."""
    name = (segment.name or "").lower()
    if "meta" in name or "json" in name:
        return "metadata"
    if "audio" in name or "file" in name:
        return "audio"
    content_type = segment.content_type or ""
    if content_type == "application/json" or content_type.endswith("+json"):
        return "metadata"
    if content_type.startswith("audio/") or content_type == "application/octet-stream" or segment.filename:
        return "audio"
    if not metadata_seen:
        return "metadata"
    return "extra" if audio_seen else "audio"


class RecordingPartsReader:
    """Feeds body chunks to the parser; buffers the metadata, streams the audio to ``write_audio``.

    ``read_metadata`` turns the metadata part's bytes into the accepted metadata (or raises) as
    soon as that part ends, before any audio byte is written, so a call that is not complete is
    refused without downloading its audio.
    """

    def __init__(
        self,
        boundary: str,
        write_audio: Callable[[bytes], None],
        read_metadata: Callable[[bytes], CallMetadata],
        *,
        max_audio_bytes: int,
        status: int,
    ) -> None:
        self._write_audio = write_audio
        self._read_metadata = read_metadata
        self._max_audio_bytes = max_audio_bytes
        self._max_body_bytes = max_audio_bytes + NON_AUDIO_MAX_BYTES
        self._status = status
        try:
            self._parser = AnyMultipartParser(
                boundary,
                max_header_size=_MAX_PART_HEADER_LINE,
                max_header_count=_MAX_PART_HEADERS,
                max_segment_count=_MAX_PARTS,
            )
        except multipart.MultipartError as exc:
            raise self._bad(f"its multipart boundary is unusable ({exc})") from exc
        self._opening = b"--" + self._parser.boundary
        self._role: Role | None = None
        self._metadata_buffer = bytearray()
        self._extra_bytes = 0
        self.body_bytes = 0
        self.parts = 0
        #: The first bytes of the body, kept only while no part has been found.
        self.head = b""
        self.metadata: CallMetadata | None = None
        self.audio_content_type: str | None = None
        self.audio_bytes = 0
        self._audio_seen = False

    def feed(self, chunk: bytes) -> None:
        self.body_bytes += len(chunk)
        if not self.parts and len(self.head) < HEAD_SAMPLE_BYTES:
            self.head += chunk[: HEAD_SAMPLE_BYTES - len(self.head)]
        try:
            for event in self._parser.parse(chunk):
                if isinstance(event, bytes):
                    self._on_bytes(event)
                elif event is None:
                    self._on_part_end()
                else:
                    self._on_part_start(event)
        except multipart.MultipartError as exc:
            raise self._bad(f"its multipart body is malformed ({exc})") from exc
        if self.body_bytes > self._max_body_bytes:
            raise self._bad(f"its body exceeds {self._max_body_bytes:,} bytes outside the audio part")

    def finish(self) -> CallMetadata:
        """Check the body ended with its closing boundary and held both parts; the metadata."""
        try:
            self._parser.close()
        except multipart.MultipartError as exc:
            if not self.parts and not self._cut_before_first_part():
                raise self._bad("its body holds no part delimited by the announced boundary") from exc
            raise self._truncated(
                f"its body ended before the closing multipart boundary after {self.body_bytes:,} bytes "
                "(truncated)"
            ) from exc
        if self.metadata is None:
            raise self._bad("it has no metadata part")
        if not self._audio_seen:
            raise self._bad("it has no audio part")
        return self.metadata

    # --- parser events -------------------------------------------------------------------------

    def _on_part_start(self, segment: Any) -> None:
        self.parts += 1
        encoding = (segment.header("Content-Transfer-Encoding") or "binary").strip().lower()
        if encoding not in _IDENTITY_TRANSFER_ENCODINGS:
            raise self._bad(f"a part uses Content-Transfer-Encoding {encoding!r}, which is not supported")
        role = part_role(segment, metadata_seen=self.metadata is not None, audio_seen=self._audio_seen)
        if role == "metadata" and self.metadata is not None:
            role = "extra"  # a second JSON part: not ours to interpret
        if role == "audio":
            if self.metadata is None:
                raise self._bad("its audio part comes before the metadata part")
            if self._audio_seen:
                raise self._bad("it has more than one audio part")
            self._audio_seen = True
            self.audio_content_type = segment.header("Content-Type")
        self._role = role

    def _on_bytes(self, data: bytes) -> None:
        if self._role == "audio":
            # Checked before writing: the sink never holds more than the limit.
            if self.audio_bytes + len(data) > self._max_audio_bytes:
                raise AudioTooLarge(
                    f"CT-e1's recording (HTTP {self._status}) is larger than this server's limit of "
                    f"{self._max_audio_bytes:,} bytes; the download was stopped."
                )
            # Passed on as parsed (up to a network read, no copy).
            self._write_audio(data)
            self.audio_bytes += len(data)
        elif self._role == "metadata":
            if len(self._metadata_buffer) + len(data) > METADATA_MAX_BYTES:
                raise self._bad(f"its metadata part is larger than {METADATA_MAX_BYTES:,} bytes")
            self._metadata_buffer += data
        else:
            self._extra_bytes += len(data)
            if self._extra_bytes > EXTRA_PARTS_MAX_BYTES:
                raise self._bad(f"its extra parts are larger than {EXTRA_PARTS_MAX_BYTES:,} bytes")

    def _on_part_end(self) -> None:
        if self._role == "metadata":
            self.metadata = self._read_metadata(bytes(self._metadata_buffer))
            self._metadata_buffer.clear()
        elif self._role == "audio" and self.audio_bytes == 0:
            raise self._bad("its audio part is empty")
        self._role = None

    def _cut_before_first_part(self) -> bool:
        """No part began, yet what arrived is the start of a multipart body: nothing, part of the
        opening delimiter, or the delimiter and the first part's unfinished headers."""
        head, opening = self.head, self._opening
        return opening.startswith(head) or head.startswith(opening) or b"\r\n" + opening in head

    def _bad(self, what: str) -> UpstreamBadResponse:
        """Malformed: the same request would get the same answer, so it is not retried."""
        return UpstreamBadResponse(f"CT-e1 answered HTTP {self._status}, but {what}.")

    def _truncated(self, what: str) -> UpstreamTruncated:
        """The body stopped early: worth asking again."""
        return UpstreamTruncated(f"CT-e1 answered HTTP {self._status}, but {what}.")
