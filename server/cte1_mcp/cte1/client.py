"""What every CT-e1 General API endpoint shares: the URL out of the settings, the authentication
header, the TLS trust, one watched worker thread per request, and every way a request can fail
(HTTP status, transport, deadline) turned into a coded, redacted error.

An endpoint module (``audio_data``) only builds its request body and reads its answer.
"""

from __future__ import annotations

import logging
import math
import re
import ssl
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

import httpx

from cte1_mcp import __version__
from cte1_mcp.cte1.answers import Said, interpret, short
from cte1_mcp.cte1.redaction import Redactor
from cte1_mcp.cte1.transport import DownloadTransport, Wire
from cte1_mcp.cte1.worker import DEADLINE, ByteProgress, Counter, run_watched
from cte1_mcp.errors import (
    Cte1Error,
    DownloadTimedOut,
    RateLimited,
    UpstreamAuthFailed,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamIpNotAllowed,
    UpstreamRejected,
    UpstreamTlsError,
    UpstreamUnavailable,
)
from cte1_mcp.settings import Settings
from cte1_mcp.units import KiB

logger = logging.getLogger(__name__)

T = TypeVar("T")
E = TypeVar("E", bound=Cte1Error)

USER_AGENT = f"cte1-mcp/{__version__}"
#: How much of an error body is read to find the platform's words.
ERROR_BODY_MAX_BYTES = 64 * KiB
#: Content codings this client accepts: none. A compressed answer would be expanded before any
#: size limit could apply (a 1 MB gzip bomb is a gigabyte).
ACCEPT_ENCODING = "identity"

_TIMEOUT_PHASES: dict[type[httpx.TimeoutException], str] = {
    httpx.ConnectTimeout: "connect",
    httpx.ReadTimeout: "read",
    httpx.WriteTimeout: "write",
    httpx.PoolTimeout: "connection pool",
}
#: A connection that did not speak what the URL promises: a TLS failure or an answer that is not HTTP.
_TLS_TROUBLE = re.compile(r"SSL|TLS|certificate|WRONG_VERSION_NUMBER|handshake", re.IGNORECASE)
_NOT_HTTP = re.compile(r"illegal (?:status|request) line|invalid HTTP", re.IGNORECASE)
#: h11's words for a response head it refused as malformed (over its size limit, a header line or
#: framing header it cannot read): the same request would get the same head, so it is not retried.
_MALFORMED_HEAD = re.compile(
    r"Receive buffer too long|illegal header line|continuation line|malformed data"
    r"|Content-Length|Transfer-Encoding",
    re.IGNORECASE,
)


class Cte1Client:
    """Built once per server from the settings; each request runs in its own worker thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redactor = Redactor(settings)
        self._host = settings.base_url.host or ""
        self._base = str(settings.base_url).rstrip("/")
        # Loading the CA store takes ~50 ms: done once, in the first download's worker thread
        # (not at start-up, on the event loop), and shared by every connection after it; never
        # for plain http:// (the simulator on loopback), which has no use for it.
        self._https = settings.base_url.scheme == "https"
        self._ssl_context: ssl.SSLContext | None = None
        self._ssl_lock = threading.Lock()

    # --- the request ---------------------------------------------------------------------------

    def url(self, path: str) -> str:
        """``{base}/general/{apiVersion}/{sourceUuid}/{path}``, the documented General API layout."""
        settings = self.settings
        return f"{self._base}/general/{settings.api_version}/{settings.source_uuid}/{path.lstrip('/')}"

    def headers(self, accept: str) -> dict[str, str]:
        """The headers of every General API request (the key as ``Authorization: Bearer <key>``)."""
        return {
            "Authorization": self.settings.authorization,
            "Content-Type": "application/json",
            "Accept": accept,
            "Accept-Encoding": ACCEPT_ENCODING,
            "User-Agent": USER_AGENT,
        }

    async def run(
        self, job: Callable[[httpx.Client, Counter], T], *, on_progress: ByteProgress | None = None
    ) -> T:
        """``job`` in one worker thread with its own connection; httpx failures become coded errors,
        every upstream failure leaves it redacted (:meth:`redacted`), and a request past
        ``CTE1_DOWNLOAD_TIMEOUT_SECONDS`` is abandoned as :class:`DownloadTimedOut`."""
        wire, counter = Wire(), Counter()

        def work() -> T:
            with httpx.Client(
                transport=DownloadTransport(wire, self._tls() if self._https else None),
                # One value for connect, read (per read, so long downloads are fine), write and pool.
                timeout=httpx.Timeout(self.settings.timeout_seconds),
                follow_redirects=False,
                trust_env=False,  # the transport speaks to CT-e1 directly; no proxy variables
            ) as http:
                try:
                    return job(http, counter)
                except httpx.HTTPError as exc:
                    raise self.redacted(self.transport_error(exc)) from exc
                except UpstreamError as exc:
                    self.redacted(exc)
                    raise

        deadline = self.settings.download_timeout_seconds
        try:
            return await run_watched(work, wire, counter, deadline_seconds=deadline, on_progress=on_progress)
        except Exception as exc:
            if wire.reason != DEADLINE:
                raise
            logger.warning(
                "CT-e1 at %s had not finished its answer after %g s (%s of %s bytes); abandoned",
                self._host,
                deadline,
                f"{counter.received:,}",
                f"{counter.total:,}" if counter.total is not None else "unknown",
            )
            raise DownloadTimedOut(
                f"CT-e1 had not finished its answer after {deadline:g} s (CTE1_DOWNLOAD_TIMEOUT_SECONDS; "
                f"{counter.received:,} bytes received); the download was abandoned and nothing was stored."
            ) from exc

    def _tls(self) -> ssl.SSLContext:
        with self._ssl_lock:
            if self._ssl_context is None:
                try:
                    self._ssl_context = tls_context(self.settings)
                except OSError as exc:  # ssl.SSLError included; checked at start-up, but files change
                    raise UpstreamTlsError(
                        f"The CA certificates of CTE1_CA_BUNDLE could not be loaded ({short(str(exc), 120)})."
                    ) from exc
            return self._ssl_context

    # --- failures -----------------------------------------------------------------------------------

    def redacted(self, exc: E) -> E:
        """``exc`` with the key and CT-e1's host blanked from every text a client may read.

        The one seam every endpoint's failure passes through (:meth:`run`): texts built from header
        values (a media type, a content or transfer coding, a boundary) are quoted where they are
        found, and redacting here rather than at each quote means none can be missed.
        """
        clean = self.redactor.for_client
        exc.message = clean(exc.message)
        exc.args = (exc.message,)
        exc.next_step = clean(exc.next_step)
        if exc.platform_message is not None:
            exc.platform_message = clean(exc.platform_message)
        return exc

    def read_error_body(self, response: httpx.Response) -> bytes:
        """At most :data:`ERROR_BODY_MAX_BYTES` of a failure's body, never decoded (a coded body is
        not read at all); a failure while reading it keeps what arrived."""
        if content_coding(response):
            return b""
        data = bytearray()
        try:
            for chunk in response.iter_raw():
                data += chunk
                if len(data) >= ERROR_BODY_MAX_BYTES:
                    break
        except httpx.HTTPError:
            pass
        return bytes(data[:ERROR_BODY_MAX_BYTES])

    def said(self, response: httpx.Response, body: bytes) -> Said:
        """What the body said, redacted; a body in a content coding is described, not read."""
        coding = content_coding(response)
        if coding:
            return Said(None, f"; a {short(coding, 40)}-coded body, not read", False)
        return interpret(body, response.headers.get("content-type"), self.redactor)

    def retry_after(self, response: httpx.Response) -> float | None:
        return retry_after_seconds(
            response.headers.get("retry-after"), cap=self.settings.max_retry_after_seconds
        )

    def status_error(self, response: httpx.Response) -> Cte1Error:
        """A non-2xx answer as its coded error, with the platform's words (redacted)."""
        status = response.status_code
        said = self.said(response, self.read_error_body(response))
        words, answered = said.platform_message, f"(HTTP {status}{said.detail})"
        retry_after = self.retry_after(response)
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
            return self._redirect(response, answered, words)
        if 400 <= status < 500:
            return UpstreamRejected(f"CT-e1 refused the request {answered}.", platform_message=words)
        return UpstreamBadResponse(f"CT-e1 answered with an unexpected status {answered}.")

    def _redirect(self, response: httpx.Response, answered: str, words: str | None) -> Cte1Error:
        location = response.headers.get("location")
        logger.warning(
            "CT-e1 at %s redirected the request to %s (HTTP %d); redirects are not followed",
            self._host,
            self.redactor.secrets(location) if location else "nowhere given",
            response.status_code,
        )
        target = _url_host(location)  # the target may be private too
        hide = self.redactor.hosts
        return UpstreamRejected(
            hide(f"CT-e1 redirected the request {answered}; redirects are not followed.", also=target),
            platform_message=hide(words, also=target) if words else None,
            next_step=(
                "Check CTE1_BASE_URL (for example https:// rather than http://); "
                "the server's log names the redirect target."
            ),
        )

    def transport_error(self, exc: httpx.HTTPError) -> Cte1Error:
        """Names no host: CT-e1's domain is customer configuration; the log names it instead."""
        timeout = self.settings.timeout_seconds
        if isinstance(exc, httpx.TimeoutException):
            phase = _TIMEOUT_PHASES.get(type(exc), "request")
            logger.warning(
                "CT-e1 at %s did not answer in time (%s timeout, %g s)", self._host, phase, timeout
            )
            return UpstreamUnavailable(f"CT-e1 did not answer in time ({phase} timeout, {timeout:g} s).")
        reason = short(self.redactor.for_client(str(exc))) or type(exc).__name__
        logged = short(self.redactor.secrets(str(exc))) or type(exc).__name__
        if isinstance(exc, httpx.ConnectError) and _TLS_TROUBLE.search(str(exc)):
            logger.warning("the TLS connection to CT-e1 at %s failed: %s", self._host, logged)
            return UpstreamTlsError(f"The TLS connection to CT-e1 could not be set up: {reason}.")
        if isinstance(exc, httpx.RemoteProtocolError) and _NOT_HTTP.search(str(exc)):
            logger.warning("CT-e1 at %s did not answer in HTTP: %s", self._host, logged)
            return UpstreamTlsError(
                f"CT-e1's port did not answer in HTTP ({reason}); it may expect TLS (https://)."
            )
        if isinstance(exc, httpx.RemoteProtocolError) and _MALFORMED_HEAD.search(str(exc)):
            logger.warning("CT-e1 at %s sent a response head that cannot be read: %s", self._host, logged)
            return UpstreamBadResponse(f"CT-e1 answered with a response head that cannot be read ({reason}).")
        if isinstance(exc, httpx.ConnectError):
            logger.warning("could not connect to CT-e1 at %s: %s", self._host, logged)
            return UpstreamUnavailable(f"Could not connect to CT-e1: {reason}.")
        logger.warning("the connection to CT-e1 at %s failed: %s", self._host, logged)
        return UpstreamUnavailable(f"The connection to CT-e1 failed: {reason}.")


def tls_context(settings: Settings) -> ssl.SSLContext:
    """httpx's default trust (certifi), or exactly the CAs of ``CTE1_CA_BUNDLE``."""
    if settings.ca_bundle is not None:
        return ssl.create_default_context(cafile=str(settings.ca_bundle))
    return httpx.create_ssl_context()


def content_coding(response: httpx.Response) -> str:
    """The answer's Content-Encoding other than identity ("" when there is none)."""
    coding = response.headers.get("content-encoding", "").strip().lower()
    return "" if coding in ("", "identity") else coding


def retry_after_seconds(value: str | None, *, cap: float, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds from now (delay-seconds or an HTTP date), at most ``cap``.

    None when absent, unreadable, negative (a date in the past included) or not finite: the
    caller then falls back to its own spacing, and never to a wait nobody asked for.
    """
    if not value or not value.strip():
        return None
    value = value.strip()
    if len(value) > 64:  # neither form is this long; do not parse a megabyte of digits
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        try:
            seconds = (when - (now or datetime.now(UTC))).total_seconds()
        except OverflowError:
            return None
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, cap)


def _url_host(url: str | None) -> str:
    if not url:
        return ""
    try:
        return httpx.URL(url.strip()).host
    except (httpx.InvalidURL, ValueError, TypeError):
        return ""
