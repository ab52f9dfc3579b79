"""One exception hierarchy; every class carries the stable code an assistant sees as ``[code]``.

Each error says what happened (``message``) and what to do next (``next_step``). The MCP layer
renders them in one place; nothing else formats errors for clients.
"""

from __future__ import annotations

import math
from typing import ClassVar


class Cte1Error(Exception):
    """Base of every failure a client may be told about."""

    code: ClassVar[str] = "internal_error"
    default_next_step: ClassVar[str] = "Try again; if it keeps failing, check the server's log."

    def __init__(
        self,
        message: str,
        *,
        next_step: str | None = None,
        platform_message: str | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.next_step = next_step or self.default_next_step
        #: The platform's own words, verbatim, when it sent any.
        self.platform_message = platform_message
        self.retry_after_seconds = retry_after_seconds

    def render(self) -> str:
        """The one text form of an error: ``[code] what happened. Platform said: … Next: …``."""
        parts = [f"[{self.code}] {self.message}"]
        if self.platform_message:
            parts.append(f"Platform said: {self.platform_message}")
        next_step = self.next_step
        if self.retry_after_seconds is not None:
            next_step = f"Retry after {math.ceil(self.retry_after_seconds)} s. {next_step}"
        parts.append(f"Next: {next_step}")
        return "\n".join(parts)


# --- input errors: found before any upstream request is spent -------------------------------


class InputError(Cte1Error):
    """The caller's arguments break a documented rule; no upstream request was made."""

    default_next_step = "Correct the arguments and call again."


class MissingParameter(InputError):
    code = "missing_parameter"


class UnknownParameter(InputError):
    code = "unknown_parameter"


class InvalidParameter(InputError):
    code = "invalid_parameter"


class TenantNotAllowed(InputError):
    code = "tenant_not_allowed"
    default_next_step = "Ask for a call of a tenant this server is configured to read (CTE1_ALLOWED_TENANTS)."


class RecordingExpired(InputError):
    code = "recording_expired"
    default_next_step = (
        "The platform keeps audio for 31 days after the call; this recording can no longer be fetched."
    )


# --- upstream errors: what CT-e1 (or the way to it) answered --------------------------------


class UpstreamError(Cte1Error):
    """CT-e1 refused or failed the request."""

    #: Whether repeating the same request right away (after the spacing) may succeed.
    retryable: ClassVar[bool] = False


class UpstreamRejected(UpstreamError):
    """HTTP 200 that is not multipart: the documented "200 失敗"."""

    code = "upstream_rejected"
    default_next_step = (
        "Read the platform's message: the call may not exist, or the ids may be wrong. "
        "Check tenantId, sessionId and recordId."
    )


class UpstreamAuthFailed(UpstreamError):
    code = "upstream_auth_failed"
    default_next_step = (
        "The API key was refused. Ask the operator to check CTE1_API_KEY / CTE1_API_KEY_FILE "
        "and CTE1_SOURCE_UUID."
    )


class UpstreamIpNotAllowed(UpstreamError):
    code = "upstream_ip_not_allowed"
    default_next_step = (
        "CT-e1 answered 404, which its common spec uses for a caller IP that is not allow-listed "
        "(or a wrong CTE1_BASE_URL / CTE1_API_VERSION / CTE1_SOURCE_UUID). Ask the operator to check them."
    )


class RateLimited(UpstreamError):
    code = "rate_limited"
    retryable = True
    default_next_step = "Wait a few seconds and call again."


class UpstreamUnavailable(UpstreamError):
    code = "upstream_unavailable"
    retryable = True
    default_next_step = "CT-e1 could not be reached or failed; try again in a little while."


class UpstreamBadResponse(UpstreamError):
    """Malformed: the same request would most likely get the same answer, so it is not retried."""

    code = "upstream_bad_response"
    default_next_step = (
        "The platform's answer was malformed; nothing was stored. Try again later; if it persists, "
        "ask the operator to report it with the server's log."
    )


class UpstreamTruncated(UpstreamBadResponse):
    """The body ended early or the connection dropped mid-body: worth an immediate retry."""

    retryable = True
    default_next_step = "The platform's answer was cut off; nothing was stored. Try again."


class AudioTooLarge(UpstreamError):
    code = "audio_too_large"
    default_next_step = (
        "The recording is larger than this server accepts (CTE1_MAX_AUDIO_BYTES); "
        "ask the operator to raise the limit."
    )


class CallInProgress(UpstreamError):
    code = "call_in_progress"
    default_next_step = "The call has not finished; call again after it ends."


# --- local storage ---------------------------------------------------------------------------


class StorageError(Cte1Error):
    """The recording could not be written to or read from the local store."""

    code = "storage_error"
    default_next_step = "Ask the operator to check the cache directory (CTE1_CACHE_DIR): space, permissions."


# --- configuration ---------------------------------------------------------------------------


class ConfigurationError(Cte1Error):
    """Settings are missing or invalid; the server cannot start."""

    code = "configuration_error"
    default_next_step = "Fix the listed settings and start again."
