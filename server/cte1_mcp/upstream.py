"""The one upstream request, ``POST …/call/audio_data``, streamed, and every way it can fail classified.

The body is never held in memory: the metadata part is buffered (it is small and bounded), the
audio part goes chunk by chunk to the caller's sink. A result is returned only once the body
ended with its closing boundary, so the caller may commit what the sink received.
"""

from __future__ import annotations

import html
import json
import logging
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Protocol

import httpx
import multipart

from cte1_mcp import __version__
from cte1_mcp.errors import (
    AudioTooLarge,
    CallInProgress,
    Cte1Error,
    RateLimited,
    UpstreamAuthFailed,
    UpstreamBadResponse,
    UpstreamIpNotAllowed,
    UpstreamRejected,
    UpstreamTruncated,
    UpstreamUnavailable,
)
from cte1_mcp.models import CallKey, CallMetadata
from cte1_mcp.multipart_stream import NON_AUDIO_MAX_BYTES, RecordingPartsReader
from cte1_mcp.settings import Settings

logger = logging.getLogger(__name__)

USER_AGENT = f"cte1-mcp/{__version__}"
ACCEPT = "multipart/form-data, multipart/mixed, application/json"
#: Decoded body bytes per read, or None for whatever each network read brings (<= 64 KiB). None is
#: fastest: httpx's re-chunking to a fixed size copies every byte once more (measured on loopback,
#: 256 MiB: ~540 MB/s with None vs ~300 MB/s with 512 KiB pieces).
READ_CHUNK_BYTES: int | None = None
#: ``on_progress`` is called for the first chunk, then after at least this many more bytes, then at the end.
PROGRESS_STEP_BYTES = 1024 * 1024
#: How much of an error body is read to find the platform's words.
ERROR_BODY_MAX_BYTES = 64 * 1024
#: Longest excerpt quoted from a body that is not the platform's JSON (an HTML page, say).
EXCERPT_MAX_CHARS = 200
#: Longest plain-text answer passed on verbatim as the platform's message.
PLATFORM_TEXT_MAX_CHARS = 1000
#: What stands in for CT-e1's host name (customer configuration) in texts that reach clients.
HOST_PLACEHOLDER = "[CT-e1 host]"

#: Phrases that mark a rate-limit refusal in a 200 failure's text. Deliberately narrow: a bare
#: "429" or "制限" (limit) could be part of an id or of the 31-day retention message.
_RATE_LIMIT_TEXT = re.compile(
    r"too[ _-]?many[ _-]?requests|rate[ _-]?limit|throttl"
    r"|\b(?:HTTP|status)\W{0,3}429\b"
    r"|リクエスト間隔|リクエストが多すぎ|リクエスト過多|アクセス過多|回数制限|頻度制限",
    re.IGNORECASE,
)
#: The documented error 5 (未完了の通話に対する取得要求) when it comes as a 200 failure.
_IN_PROGRESS_TEXT = re.compile(
    r"未完了の通話|通話が(?:まだ)?(?:終了|完了)していません|call (?:is )?(?:still )?in progress",
    re.IGNORECASE,
)
#: ``status``/``code`` values that mean "too many requests".
_RATE_LIMIT_CODE = re.compile(r"429|too[ _-]?many[ _-]?requests|rate[ _-]?limit\w*|throttl\w*", re.IGNORECASE)
_MESSAGE_FIELDS = ("description", "message", "errorMessage", "detail", "error")
_CODE_FIELDS = ("errorCode", "code", "error_code")
_HTML_DROP = re.compile(r"<(script|style)\b.*?</\1\s*>|<!--.*?-->", re.IGNORECASE | re.DOTALL)
_HTML_TAG = re.compile(r"<[^>]*>")
_TIMEOUT_PHASES: dict[type[httpx.TimeoutException], str] = {
    httpx.ConnectTimeout: "connect",
    httpx.ReadTimeout: "read",
    httpx.WriteTimeout: "write",
    httpx.PoolTimeout: "connection pool",
}


class AudioSink(Protocol):
    """Where the audio part's bytes go, in order, as they arrive (a staging file of the store)."""

    async def write(self, chunk: bytes) -> None: ...


@dataclass(frozen=True, slots=True)
class FetchedCall:
    """A complete answer: the sink holds exactly ``audio_bytes`` bytes and may be committed."""

    metadata: CallMetadata
    audio_content_type: str | None  # the audio part's Content-Type header
    audio_bytes: int  # bytes written to the sink


ProgressCallback = Callable[[int, int | None], Awaitable[None]]


class CallAudioClient:
    """Fetches one recording per call to :meth:`fetch`; owns the HTTP connection pool."""

    def __init__(self, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._settings = settings
        self._secrets = _secret_forms(settings)
        self._host = settings.base_url.host or ""
        self._http = httpx.AsyncClient(
            transport=transport,
            # One value for connect, read (per chunk, so long downloads are fine), write and pool.
            timeout=httpx.Timeout(settings.timeout_seconds),
            follow_redirects=False,
            headers={"User-Agent": USER_AGENT},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> CallAudioClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def fetch(
        self, key: CallKey, sink: AudioSink, *, on_progress: ProgressCallback | None = None
    ) -> FetchedCall:
        """Download ``key``'s recording into ``sink``; any failure is a :class:`UpstreamError`.

        Errors raised by ``sink`` or ``on_progress`` propagate unchanged.
        """
        headers = {
            "Authorization": self._settings.authorization,
            "Content-Type": "application/json",
            "Accept": ACCEPT,
        }
        body = json.dumps(key.request_body(), separators=(",", ":")).encode()
        try:
            async with self._http.stream(
                "POST", self._settings.audio_data_url, headers=headers, content=body
            ) as response:
                return await self._receive(key, response, sink, on_progress)
        except Cte1Error as exc:
            self._redact_in_place(exc)
            raise
        except httpx.HTTPError as exc:
            raise self._redacted(self._transport_error(exc)) from exc

    # --- success path -----------------------------------------------------------------------------

    async def _receive(
        self, key: CallKey, response: httpx.Response, sink: AudioSink, on_progress: ProgressCallback | None
    ) -> FetchedCall:
        status = response.status_code
        if not 200 <= status < 300:
            raise await self._status_error(response)
        media_type, options = multipart.parse_options_header(response.headers.get("content-type", ""))
        if not media_type.startswith("multipart/"):
            raise _refusal(response, await _read_bounded(response))
        boundary = options.get("boundary")
        if not boundary:
            raise UpstreamBadResponse(f"CT-e1 answered HTTP {status} with {media_type} but no boundary.")
        total = _content_length(response)
        limit = self._settings.max_audio_bytes
        if total is not None and total > limit + NON_AUDIO_MAX_BYTES:
            raise AudioTooLarge(
                f"CT-e1 announced a {total:,}-byte answer (HTTP {status}); this server accepts "
                f"recordings up to {limit:,} bytes, so it was not downloaded."
            )
        reader = RecordingPartsReader(
            boundary,
            sink.write,
            lambda metadata: _accept_metadata(key, metadata, status),
            max_audio_bytes=limit,
            status=status,
        )
        await _pump(response, reader, on_progress, total)
        if reader.parts == 0 and _json_object(_decode(reader.head, None)) is not None:
            # Labelled multipart, yet a JSON object and no part: a "200 失敗" with the wrong label.
            raise _refusal(response, reader.head)
        metadata = reader.finish()
        return FetchedCall(metadata, reader.audio_content_type, reader.audio_bytes)

    # --- failures -----------------------------------------------------------------------------------

    async def _status_error(self, response: httpx.Response) -> Cte1Error:
        status = response.status_code
        said = _interpret(await _read_bounded(response), response.headers.get("content-type"))
        words, answered = said.platform_message, f"(HTTP {status}{said.detail})"
        retry_after = retry_after_seconds(response.headers.get("retry-after"))
        if status in (401, 402, 403):
            return UpstreamAuthFailed(f"CT-e1 refused the credentials {answered}.", platform_message=words)
        if status == 404:
            return UpstreamIpNotAllowed(
                f"CT-e1 answered Not Found {answered}, which its common spec uses for a caller IP "
                "that is not allow-listed.",
                platform_message=words,
            )
        if status == 429:
            return RateLimited(
                f"CT-e1 refused the request as too frequent {answered}.",
                platform_message=words,
                retry_after_seconds=retry_after,
            )
        if status >= 500 or status == 408:
            return UpstreamUnavailable(
                f"CT-e1 failed to answer {answered}.", platform_message=words, retry_after_seconds=retry_after
            )
        if 300 <= status < 400:
            location = response.headers.get("location")
            logger.warning(
                "CT-e1 at %s redirected the request to %s (HTTP %d); redirects are not followed",
                self._host,
                _redact(location, self._secrets) if location else "nowhere given",
                status,
            )
            redirect = UpstreamRejected(
                f"CT-e1 redirected the request {answered}; redirects are not followed.",
                platform_message=words,
                next_step=(
                    "Check CTE1_BASE_URL (for example https:// rather than http://); "
                    "the server's log names the redirect target."
                ),
            )
            _hide_host(redirect, _url_host(location))  # the target may be private too
            return redirect
        if 400 <= status < 500:
            return UpstreamRejected(f"CT-e1 refused the request {answered}.", platform_message=words)
        return UpstreamBadResponse(f"CT-e1 answered with an unexpected status {answered}.")

    def _transport_error(self, exc: httpx.HTTPError) -> Cte1Error:
        """Names no host: CT-e1's domain is customer configuration; the log names it instead."""
        timeout = self._settings.timeout_seconds
        if isinstance(exc, httpx.TimeoutException):
            phase = _TIMEOUT_PHASES.get(type(exc), "request")
            logger.warning(
                "CT-e1 at %s did not answer in time (%s timeout, %g s)", self._host, phase, timeout
            )
            return UpstreamUnavailable(f"CT-e1 did not answer in time ({phase} timeout, {timeout:g} s).")
        if isinstance(exc, httpx.DecodingError):
            # Corrupt compressed data (a cut-off stream merely ends early): malformed, not retried.
            return UpstreamBadResponse(f"CT-e1's answer could not be decoded ({_short(str(exc))}).")
        reason = _short(_redact(str(exc), self._secrets)) or type(exc).__name__
        if isinstance(exc, httpx.ConnectError):
            logger.warning("could not connect to CT-e1 at %s: %s", self._host, reason)
            return UpstreamUnavailable(f"Could not connect to CT-e1: {reason}.")
        logger.warning("the connection to CT-e1 at %s failed: %s", self._host, reason)
        return UpstreamUnavailable(f"The connection to CT-e1 failed: {reason}.")

    def _redacted(self, exc: Cte1Error) -> Cte1Error:
        self._redact_in_place(exc)
        return exc

    def _redact_in_place(self, exc: Cte1Error) -> None:
        """Blank out every form of the API key (a platform or proxy may echo it back), and CT-e1's
        host name (a proxy's error page may quote it: "Apache Server at <host> Port 443")."""
        exc.message = _redact(exc.message, self._secrets)
        exc.args = (exc.message,)
        if exc.platform_message is not None:
            exc.platform_message = _redact(exc.platform_message, self._secrets)
        _hide_host(exc, self._host)


async def _pump(
    response: httpx.Response,
    reader: RecordingPartsReader,
    on_progress: ProgressCallback | None,
    total: int | None,
) -> None:
    """Body chunks into the reader, with throttled progress; a dropped connection is a truncation."""
    reported = -1
    try:
        async for chunk in response.aiter_bytes(READ_CHUNK_BYTES):
            await reader.feed(chunk)
            received = response.num_bytes_downloaded
            if on_progress is not None and (reported < 0 or received - reported >= PROGRESS_STEP_BYTES):
                await on_progress(received, total)
                reported = received
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
        # Mid-body: the connection dropped or the body fell short of its Content-Length. Retryable.
        of_total = f" of {total:,}" if total is not None else ""
        raise UpstreamTruncated(
            f"CT-e1's answer (HTTP {response.status_code}) broke off after "
            f"{response.num_bytes_downloaded:,}{of_total} bytes ({_short(str(exc))}); nothing was stored."
        ) from exc
    if on_progress is not None and response.num_bytes_downloaded != reported:
        await on_progress(response.num_bytes_downloaded, total)


def _accept_metadata(key: CallKey, metadata: CallMetadata, status: int) -> None:
    """Refuse metadata of another call (it would be stored under the wrong key) or of a live call."""
    asked = (key.tenant_id, key.session_id, key.record_id)
    got = (metadata.tenantId, metadata.sessionId, metadata.recordId)
    if asked != got:
        raise UpstreamBadResponse(
            f"CT-e1 answered HTTP {status} with the metadata of call {'/'.join(map(str, got))} "
            f"instead of {key}."
        )
    if not metadata.is_complete:
        raise CallInProgress(
            f"Call {key} has not finished: the platform reports status {metadata.status!r} "
            f"(HTTP {status}); no audio was downloaded."
        )


# --- what a failed answer said ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Said:
    #: The platform's own words, verbatim (JSON message fields, or a short plain-text body).
    platform_message: str | None
    #: What to add to "(HTTP 200": '; status "error"', '; text/html: “Bad Gateway”', or "".
    detail: str
    rate_limited: bool

    @property
    def call_in_progress(self) -> bool:
        return bool(self.platform_message and _IN_PROGRESS_TEXT.search(self.platform_message))


def _refusal(response: httpx.Response, body: bytes) -> Cte1Error:
    """The documented "200 失敗": an answer without a recording.

    Rate-limit wording makes it retryable; the documented "call not finished" wording gets its own code.
    """
    status = response.status_code
    said = _interpret(body, response.headers.get("content-type"))
    answered = f"(HTTP {status}{said.detail})"
    if said.rate_limited:
        return RateLimited(
            f"CT-e1 refused the request as too frequent {answered}.",
            platform_message=said.platform_message,
            retry_after_seconds=retry_after_seconds(response.headers.get("retry-after")),
        )
    if said.call_in_progress:
        return CallInProgress(
            f"CT-e1 refused the request because the call has not finished {answered}.",
            platform_message=said.platform_message,
        )
    return UpstreamRejected(
        f"CT-e1 answered without a recording {answered}.", platform_message=said.platform_message
    )


def _interpret(body: bytes, content_type: str | None) -> _Said:
    media_type, options = multipart.parse_options_header(content_type or "")
    text = _decode(body, options.get("charset"))
    data = _json_object(text)
    if data is not None:
        return _interpret_json(data)
    if not text.strip():
        return _Said(None, f"; empty {media_type} body" if media_type else "; empty body", False)
    described = media_type or "no content type"
    if "html" in media_type or text.lstrip()[:1] == "<":
        excerpt = _excerpt(_html_text(text))
        return _Said(None, f"; {described}: “{excerpt}”", bool(_RATE_LIMIT_TEXT.search(excerpt)))
    words = text.strip()
    if len(words) > PLATFORM_TEXT_MAX_CHARS:
        words = words[:PLATFORM_TEXT_MAX_CHARS] + "…"
    return _Said(words, f"; {described}", bool(_RATE_LIMIT_TEXT.search(words)))


def _interpret_json(data: dict[str, Any]) -> _Said:
    """The shape of the platform's other APIs, ``{"status": "error", "description": …}``, and kin."""
    nested = data.get("error")
    fields = {**nested, **data} if isinstance(nested, dict) else data
    texts = [v.strip() for k in _MESSAGE_FIELDS if isinstance(v := fields.get(k), str) and v.strip()]
    words = " / ".join(dict.fromkeys(texts)) or _short(json.dumps(data, ensure_ascii=False), 500)
    code = next((fields[k] for k in _CODE_FIELDS if fields.get(k) is not None), None)
    labels = {"status": fields.get("status"), "code": code}
    shown = {k: v for k, v in labels.items() if isinstance(v, str | int) and not isinstance(v, bool)}
    detail = "".join(f"; {k} {json.dumps(v, ensure_ascii=False)}" for k, v in shown.items())
    rate_limited = any(_RATE_LIMIT_CODE.fullmatch(str(v)) for v in shown.values()) or bool(
        _RATE_LIMIT_TEXT.search(" ".join(texts))
    )
    return _Said(words, detail, rate_limited)


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _decode(body: bytes, charset: str | None) -> str:
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def _html_text(text: str) -> str:
    return html.unescape(_HTML_TAG.sub(" ", _HTML_DROP.sub(" ", text)))


def _excerpt(text: str, limit: int = EXCERPT_MAX_CHARS) -> str:
    return _short(text, limit) or "no readable text"


def _short(text: str, limit: int = EXCERPT_MAX_CHARS) -> str:
    """Whitespace collapsed, cut to ``limit`` characters."""
    collapsed = " ".join(text.split())
    return collapsed if len(collapsed) <= limit else collapsed[: limit - 1] + "…"


async def _read_bounded(response: httpx.Response, limit: int = ERROR_BODY_MAX_BYTES) -> bytes:
    """At most ``limit`` bytes of a failure's body; a failure while reading it keeps what arrived."""
    data = bytearray()
    try:
        async for chunk in response.aiter_bytes():
            data += chunk
            if len(data) >= limit:
                break
    except httpx.HTTPError:
        pass
    return bytes(data[:limit])


# --- small parsers ------------------------------------------------------------------------------


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delay-seconds or an HTTP date; None if absent or unreadable."""
    if not value or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("content-length", "").strip()
    return int(value) if value.isascii() and value.isdigit() else None


def _secret_forms(settings: Settings) -> tuple[str, ...]:
    if settings.api_key is None:
        return ()
    key = settings.api_key.get_secret_value().strip()
    bare = key.removeprefix("Bearer ").strip()
    # Longest first, so "Bearer <key>" is blanked whole rather than leaving "Bearer ".
    return tuple(sorted({s for s in (settings.authorization, key, bare) if s}, key=len, reverse=True))


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        text = text.replace(secret, "[redacted]")
    return text


def _url_host(url: str | None) -> str:
    if not url:
        return ""
    try:
        return httpx.URL(url.strip()).host
    except (httpx.InvalidURL, ValueError, TypeError):
        return ""


def _hide_host(exc: Cte1Error, host: str) -> None:
    """Replace ``host`` (whole names only: not ``ct-e1.example`` inside ``api.ct-e1.example.net``)."""
    host = host.strip("[]")
    if not host:
        return
    pattern = re.compile(rf"(?<![\w.-]){re.escape(host)}(?![\w-]|\.[\w-])", re.IGNORECASE)
    exc.message = pattern.sub(HOST_PLACEHOLDER, exc.message)
    exc.args = (exc.message,)
    if exc.platform_message is not None:
        exc.platform_message = pattern.sub(HOST_PLACEHOLDER, exc.platform_message)
