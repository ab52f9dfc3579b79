"""The one endpoint used today, ``POST …/call/audio_data``: request body, multipart receive, and
what metadata is accepted.

The body is never held in memory: the metadata part is buffered (small and bounded), the audio
part goes to the sink's ``write_blocking`` in the download's worker thread. A result is returned
only once the body ended with its closing boundary, so the caller may commit what the sink holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC
from types import TracebackType
from typing import Any, Protocol

import httpx
import multipart
from pydantic import ValidationError

from cte1_mcp.cte1.answers import json_object, short
from cte1_mcp.cte1.client import Cte1Client, content_coding
from cte1_mcp.cte1.multipart import NON_AUDIO_MAX_BYTES, RecordingPartsReader
from cte1_mcp.cte1.worker import ByteProgress, Counter
from cte1_mcp.errors import (
    AudioTooLarge,
    CallInProgress,
    Cte1Error,
    RateLimited,
    UpstreamBadResponse,
    UpstreamRejected,
    UpstreamTruncated,
)
from cte1_mcp.models import PLATFORM_RETENTION, CallKey, CallMetadata
from cte1_mcp.settings import Settings

PATH = "call/audio_data"
ACCEPT = "multipart/form-data, multipart/mixed, application/json"
#: Deepest nesting accepted in the metadata JSON (the documented object is flat; a later field
#: may nest a little). Deeper structures break serialisation further on, so they are refused here.
METADATA_MAX_DEPTH = 32

#: The documented refusals of a "200 失敗", each with what to do about it (checked in this order).
_REFUSALS: tuple[tuple[tuple[str, ...], str], ...] = (
    (
        ("31日", "31 days", "31-day"),
        "The platform keeps audio for 31 days after the call; this recording can no longer be fetched.",
    ),
    (
        ("許可されていないテナント", "tenant not allowed", "tenant is not permitted", "not permitted"),
        "This server's API key may not read that tenant. Ask for a call of a permitted tenant, or ask "
        "the operator to have the tenant added to the General API application (汎用API申込書).",
    ),
    (
        ("不足", "missing"),
        "The platform found a request parameter missing although this server sends all three; the API "
        "may have changed. Ask the operator to report it with the server's log.",
    ),
    (
        ("存在しない", "no such", "not found", "does not exist", "形式が不正", "invalid"),
        "The call may not exist, or the ids may be wrong. Check tenantId, sessionId and recordId.",
    ),
)


class AudioSink(Protocol):
    """Where the audio part's bytes go, in order, from the download's worker thread (the
    repository's ``Staging``: it hashes and writes them)."""

    def write_blocking(self, chunk: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class FetchedCall:
    """A complete answer: the sink holds exactly ``audio_bytes`` bytes and may be committed."""

    metadata: CallMetadata
    audio_content_type: str | None  # the audio part's Content-Type header
    audio_bytes: int  # bytes written to the sink


class AudioDataEndpoint:
    """Fetches one recording per call to :meth:`fetch`."""

    def __init__(self, settings: Settings) -> None:
        self._client = Cte1Client(settings)

    async def __aenter__(self) -> AudioDataEndpoint:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None  # each download owns (and closes) its connection

    async def fetch(
        self, key: CallKey, sink: AudioSink, *, on_progress: ByteProgress | None = None
    ) -> FetchedCall:
        """Download ``key``'s recording into ``sink``; any failure is an :class:`UpstreamError`.

        Errors raised by ``sink`` or ``on_progress`` propagate unchanged. Cancelled, it stops
        within tens of milliseconds, and nothing writes to ``sink`` after it returned or raised.
        """
        body = json.dumps(key.request_body(), separators=(",", ":")).encode()
        url, headers = self._client.url(PATH), self._client.headers(ACCEPT)

        def download(http: httpx.Client, counter: Counter) -> FetchedCall:
            with http.stream("POST", url, headers=headers, content=body) as response:
                return _Receiver(self._client, key, response, sink, counter).receive()

        return await self._client.run(download, on_progress=on_progress)


class _Receiver:
    """One answer, read in the worker thread."""

    def __init__(
        self, client: Cte1Client, key: CallKey, response: httpx.Response, sink: AudioSink, counter: Counter
    ) -> None:
        self._client = client
        self._key = key
        self._response = response
        self._sink = sink
        self._counter = counter
        self._status = response.status_code

    def receive(self) -> FetchedCall:
        response, status = self._response, self._status
        if not 200 <= status < 300:
            raise self._client.status_error(response)
        coding = content_coding(response)
        if coding:
            raise UpstreamBadResponse(
                f"CT-e1 answered HTTP {status} in the content coding {short(coding, 40)!r} although this "
                "server asks for none (identity); it was not decoded, so no size limit could be bypassed."
            )
        media_type, options = multipart.parse_options_header(response.headers.get("content-type", ""))
        if not media_type.startswith("multipart/"):
            raise self._refusal(self._client.read_error_body(response))
        boundary = options.get("boundary")
        if not boundary:
            raise UpstreamBadResponse(
                f"CT-e1 answered HTTP {status} with {short(media_type, 80)} but no boundary."
            )
        total = _content_length(response)
        self._counter.total = total
        limit = self._client.settings.max_audio_bytes
        if total is not None and total > limit + NON_AUDIO_MAX_BYTES:
            raise AudioTooLarge(
                f"CT-e1 announced a {total:,}-byte answer (HTTP {status}); this server accepts "
                f"recordings up to {limit:,} bytes, so it was not downloaded."
            )
        reader = RecordingPartsReader(
            boundary, self._sink.write_blocking, self._read_metadata, max_audio_bytes=limit, status=status
        )
        self._pump(reader, total)
        if reader.parts == 0 and json_object(reader.head.decode("utf-8", errors="replace")) is not None:
            # Labelled multipart, yet a JSON object and no part: a "200 失敗" with the wrong label.
            raise self._refusal(reader.head)
        metadata = reader.finish()
        # A header value, kept with the recording and shown to clients: redacted like its metadata.
        content_type = reader.audio_content_type
        if content_type is not None:
            content_type = self._client.redactor.secrets(content_type)
        return FetchedCall(metadata, content_type, reader.audio_bytes)

    def _pump(self, reader: RecordingPartsReader, total: int | None) -> None:
        """Body chunks into the reader; a dropped connection mid-body is a truncation."""
        counter, response = self._counter, self._response
        try:
            for chunk in response.iter_raw():
                counter.received += len(chunk)
                reader.feed(chunk)
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            # Mid-body: the connection dropped or the body fell short of its Content-Length. Retryable.
            of_total = f" of {total:,}" if total is not None else ""
            reason = short(self._client.redactor.for_client(str(exc)))
            raise UpstreamTruncated(
                f"CT-e1's answer (HTTP {self._status}) broke off after {counter.received:,}{of_total} "
                f"bytes ({reason}); nothing was stored."
            ) from exc

    def _refusal(self, body: bytes) -> Cte1Error:
        """The documented "200 失敗": an answer without a recording.

        Rate-limit wording makes it retryable; the documented "call not finished" wording gets its
        own code; each other documented refusal its own next step.
        """
        said = self._client.said(self._response, body)
        answered = f"(HTTP {self._status}{said.detail})"
        if said.rate_limited:
            return RateLimited(
                f"CT-e1 refused the request as too frequent {answered}.",
                platform_message=said.platform_message,
                retry_after_seconds=self._client.retry_after(self._response),
            )
        if said.call_in_progress:
            return CallInProgress(
                f"CT-e1 refused the request because the call has not finished {answered}.",
                platform_message=said.platform_message,
            )
        return UpstreamRejected(
            f"CT-e1 answered without a recording {answered}.",
            platform_message=said.platform_message,
            next_step=_refusal_next_step(said.platform_message or said.detail),
        )

    # --- metadata acceptance ---------------------------------------------------------------------

    def _read_metadata(self, raw: bytes) -> CallMetadata:
        """The metadata part as accepted metadata: JSON, bounded in depth, valid UTF-8 text, the
        documented fields, the key redacted from every string, of this call, finished."""
        try:
            data = json.loads(raw)
        except RecursionError:
            raise self._bad(f"its metadata part is nested deeper than {METADATA_MAX_DEPTH} levels") from None
        except ValueError:
            raise self._bad("its metadata part is not JSON") from None
        if not isinstance(data, dict):
            raise self._bad(f"its metadata part is JSON but not an object ({type(data).__name__})")
        data = self._clean(data, 0)
        try:
            metadata = CallMetadata.model_validate(data)
        except ValidationError as exc:
            raise self._bad(f"its metadata does not have the documented fields: {_summary(exc)}") from None
        self._check_times(metadata)
        self._accept(metadata)
        return metadata

    def _clean(self, value: Any, depth: int) -> Any:
        """``value`` with the key redacted from every string (and object key); refuses what cannot
        be stored or sent on: nesting beyond :data:`METADATA_MAX_DEPTH`, lone surrogates."""
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise self._bad(
                    "its metadata holds text that is not valid Unicode (a lone surrogate)"
                ) from None
            return self._client.redactor.secrets(value)
        if isinstance(value, dict | list):
            if depth >= METADATA_MAX_DEPTH:
                raise self._bad(f"its metadata part is nested deeper than {METADATA_MAX_DEPTH} levels")
            if isinstance(value, list):
                return [self._clean(item, depth + 1) for item in value]
            return {self._clean(k, depth + 1): self._clean(v, depth + 1) for k, v in value.items()}
        return value

    def _check_times(self, metadata: CallMetadata) -> None:
        """Instants whose retention date cannot be computed (year 9999 + 31 days) are malformed."""
        for name, instant in (("connectTime", "connected_at"), ("disconnectTime", "disconnected_at")):
            try:
                moment = getattr(metadata, instant)
                if moment is not None:
                    moment.astimezone(UTC)
                    _ = (moment + PLATFORM_RETENTION, moment - PLATFORM_RETENTION)
            except (OverflowError, ValueError):
                raise self._bad(f"its metadata's {name} is out of the range of dates") from None

    def _accept(self, metadata: CallMetadata) -> None:
        """Refuse metadata of another call (it would be stored under the wrong key) or of a live call."""
        key = self._key
        asked = (key.tenant_id, key.session_id, key.record_id)
        got = (metadata.tenantId, metadata.sessionId, metadata.recordId)
        if asked != got:
            named = short("/".join(map(str, got)), 120)
            raise self._bad(f"its metadata is that of call {named} instead of {key}")
        if not metadata.is_complete:
            raise CallInProgress(
                f"Call {key} has not finished: the platform reports status {short(repr(metadata.status), 80)} "
                f"(HTTP {self._status}); no audio was downloaded."
            )

    def _bad(self, what: str) -> UpstreamBadResponse:
        return UpstreamBadResponse(f"CT-e1 answered HTTP {self._status}, but {what}.")


def _refusal_next_step(words: str) -> str | None:
    lowered = words.lower()
    for markers, next_step in _REFUSALS:
        if any(marker.lower() in lowered for marker in markers):
            return next_step
    return None


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length", "").strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) < 20 else None


def _summary(exc: ValidationError) -> str:
    """Which fields are wrong and why, without echoing the values."""
    problems = exc.errors(include_input=False, include_url=False)
    text = "; ".join(f"{'.'.join(map(str, p['loc'])) or 'metadata'}: {p['msg']}" for p in problems[:3])
    text = short(text, 500)
    return text + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
