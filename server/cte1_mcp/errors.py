"""One exception hierarchy; every class carries the stable code an assistant sees as ``[code]``.

Each error says what happened (``message``) and what to do next (``next_step``). The MCP layer
renders them in one place; nothing else formats errors for clients.
"""

from __future__ import annotations

import math
from typing import ClassVar

#: A wait longer than this (a year) is no advice a caller can act on; it is never printed.
MAX_RENDERED_WAIT_SECONDS = 366 * 24 * 3600.0


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
        wait = self.retry_after_seconds
        if wait is not None and math.isfinite(wait) and 0 <= wait < MAX_RENDERED_WAIT_SECONDS:
            next_step = f"Retry after {math.ceil(wait)} s. {next_step}"
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


class UnknownTool(InputError):
    code = "unknown_tool"
    default_next_step = "Call tools/list and use one of the tools it names."


class TenantNotAllowed(InputError):
    code = "tenant_not_allowed"
    default_next_step = "Ask for a call of a tenant this server is configured to read (CTE1_ALLOWED_TENANTS)."


class NotStored(InputError):
    """A download URL names a recording this server has not stored (or no longer keeps): a plain
    HTTP GET never starts a platform request, so it cannot spend the platform's limit."""

    code = "not_stored"
    default_next_step = (
        "Call get_call_audio for this call first (it fetches and stores it), then GET the URL again."
    )


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


class DownloadTimedOut(UpstreamUnavailable):
    """The answer took longer than CTE1_DOWNLOAD_TIMEOUT_SECONDS: abandoned, and not retried at once
    (the same slow path would most likely hold the callers as long again)."""

    retryable = False
    default_next_step = (
        "CT-e1 sent the recording too slowly; nothing was stored. Try again later, or ask the operator "
        "to raise CTE1_DOWNLOAD_TIMEOUT_SECONDS."
    )


class UpstreamTlsError(UpstreamError):
    """The connection did not speak what CTE1_BASE_URL promises (TLS to a plain port, an untrusted
    or mismatched certificate, HTTP to a TLS port): configuration, so it is not retried."""

    code = "upstream_tls_error"
    default_next_step = (
        "Ask the operator to check CTE1_BASE_URL (https:// and the port of CT-e1's TLS endpoint) and, "
        "behind a TLS-inspecting proxy or a private CA, CTE1_CA_BUNDLE."
    )


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


# --- coordination (the shared rate limit and single-flight) ---------------------------------


class CoordinationUnavailable(Cte1Error):
    """The shared limiter (Redis) cannot be reached: an upstream request could exceed the platform's limit."""

    code = "coordination_unavailable"
    default_next_step = (
        "Recordings already stored are still served; fetching a new one needs the shared rate limiter. "
        "Ask the operator to check the Redis server (CTE1_REDIS_URL), then call again."
    )


class RecordingGone(StorageError):
    """The stored recording asked for was evicted or replaced before it could be read."""

    default_next_step = "Call again: the recording will be fetched again."


# --- audio analysis (issue 8) ----------------------------------------------------------------


class UnsupportedAudio(Cte1Error):
    """The stored recording cannot be analysed or cut: not a format libsndfile decodes, or a rate or
    channel layout the analyser does not take (it takes 8 or 16 kHz, mono or two-channel)."""

    code = "unsupported_audio"
    default_next_step = "Fetch the recording with get_call_audio and inspect it instead."


# --- configuration ---------------------------------------------------------------------------


class ConfigurationError(Cte1Error):
    """Settings are missing or invalid; the server cannot start."""

    code = "configuration_error"
    default_next_step = "Fix the listed settings and start again."


# --- transcripts (issue 15) ------------------------------------------------------------------


class TranscriptionUnavailable(Cte1Error):
    """No usable speech-recognition model is configured: said before any upstream request is spent."""

    code = "transcription_unavailable"
    default_next_step = (
        "Ask the operator to install a model with `cte1-mcp models pull reazonspeech-k2-v2` (or "
        "`cte1-mcp models import NAME PATH` on a machine without internet), set CTE1_ASR_MODEL to its "
        "name and restart the server."
    )


class TranscriptionFailed(Cte1Error):
    """A transcription started and could not finish (it ran past CTE1_ASR_TIMEOUT_SECONDS, or the
    engine failed on this recording); nothing was stored."""

    code = "transcription_failed"
    default_next_step = (
        "Call again later; if it keeps failing, ask the operator to check the server's log, raise "
        "CTE1_ASR_TIMEOUT_SECONDS for long calls, or use a faster model or a GPU (CTE1_ASR_DEVICE=cuda)."
    )


class ModelError(Cte1Error):
    """``cte1-mcp models`` could not install or check a model; nothing half-installed is left.
    Only its subclasses are raised (each with its own code)."""

    default_next_step = "Run `cte1-mcp models list` to see what is installed."


class ModelNotFound(ModelError):
    """A name neither installed nor in the catalog, or a file the model's source does not have."""

    code = "model_not_found"
    default_next_step = "Run `cte1-mcp models list` for the installed and the known models."


class ModelDownloadFailed(ModelError):
    code = "model_download_failed"
    default_next_step = (
        "Nothing was installed. Run the same command again (check the network, a proxy, or HF_ENDPOINT); "
        "on a machine without internet, copy the files and use `cte1-mcp models import NAME PATH`."
    )


class ModelChecksumMismatch(ModelError):
    """A file's size or sha256 is not the one pinned (or recorded at install): it is not used."""

    code = "model_checksum_mismatch"
    default_next_step = (
        "Do not use these files: install the model again (`cte1-mcp models pull NAME`, or `models import` "
        "from an untouched copy)."
    )


class ModelArchiveUnsafe(ModelError):
    """An archive member would land outside the model (absolute path, ``..``, a link, a device)."""

    code = "model_archive_unsafe"
    default_next_step = (
        "Nothing was extracted. Use the archive from the model's publisher, or import a folder."
    )


class ModelInvalid(ModelError):
    """Files no engine recognises, a source that cannot be read, or a name that is not allowed."""

    code = "model_invalid"
    default_next_step = (
        "A faster-whisper model needs model.bin, config.json, tokenizer.json and vocabulary.*; a "
        "sherpa-onnx transducer encoder*.onnx, decoder*.onnx, joiner*.onnx and tokens.txt."
    )


class ModelExists(ModelError):
    code = "model_exists"
    default_next_step = "Add --force to replace the installed model, or import under another name."
