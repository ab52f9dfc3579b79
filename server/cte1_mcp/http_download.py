"""``GET /calls/{tenantId}/{sessionId}/{recordId}/audio``: a stored recording over plain HTTP.

For HTTP clients that cannot take a large recording in one MCP message (a client's SSE event
limit, a proxy's body limit) or want to resume a download: the same bearer token and Host checks
as ``/mcp``, the tools' argument rules, ``Range`` and an ``ETag`` that is the recording's sha256.

Only recordings already stored are served: a GET never starts a platform request (it is not an
MCP call, has no progress to show, and must not spend the platform's 5-second spacing behind a
client's back); ``get_call_audio`` names this URL once it has stored the recording. Written by
hand rather than with Starlette's ``FileResponse``: that opens a path again, which may by then be
another version of the recording than the one whose sha256 is the ETag; this streams from the
descriptor the store opened for exactly that version, a bounded piece at a time.
"""

from __future__ import annotations

import logging
import re
from typing import BinaryIO

import anyio
import anyio.to_thread
from mcp.server.auth.middleware.bearer_auth import RequireAuthMiddleware
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from cte1_mcp.audit import AuditEntry, AuditLog, call_of_uri
from cte1_mcp.errors import (
    Cte1Error,
    InputError,
    NotStored,
    RecordingExpired,
    RecordingGone,
    StorageError,
    TenantNotAllowed,
)
from cte1_mcp.models import CallKey, Recording
from cte1_mcp.resources import unexpected
from cte1_mcp.service import RecordingService
from cte1_mcp.tools.arguments import CallArguments, parse_arguments
from cte1_mcp.units import KiB

logger = logging.getLogger(__name__)

PATH = "/calls/{tenantId}/{sessionId}/{recordId}/audio"
#: One read from the file and one write to the socket; the socket's back-pressure bounds the rest.
CHUNK_BYTES = 256 * KiB
_CACHE = "private, no-store"  # personal data: no shared cache, nothing kept on disk by a browser
_RANGE = re.compile(r"bytes=([0-9]{0,19})-([0-9]{0,19})")
_STATUS = {TenantNotAllowed: 403, NotStored: 404, RecordingExpired: 410}


def download_url(base_url: str, key: CallKey) -> str:
    """The URL of ``key``'s audio on the server ``base_url`` names (the client's own view of it)."""
    tenant, session, record = key.path_parts
    return base_url.rstrip("/") + PATH.format(tenantId=tenant, sessionId=session, recordId=record)


def download_route(
    service: RecordingService,
    security: TransportSecuritySettings,
    audit: AuditLog | None,
    *,
    token_required: bool,
) -> Route:
    """The route, behind the SDK's own bearer check when a token is configured (the app's
    authentication middleware has already verified the header with the same verifier as /mcp)."""
    endpoint = _Download(service, TransportSecurityMiddleware(security), audit)
    app = RequireAuthMiddleware(endpoint, required_scopes=[]) if token_required else endpoint
    return Route(PATH, endpoint=app, methods=["GET", "HEAD"])


class _Download:
    def __init__(
        self, service: RecordingService, security: TransportSecurityMiddleware, audit: AuditLog | None
    ):
        self.service = service
        self.security = security
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        refused = await self.security.validate_request(request, is_post=False)
        if refused is not None:
            await refused(scope, receive, send)
            return
        opened: tuple[Recording, BinaryIO] | None = None
        try:
            try:
                opened = await self._open(request)
                recording, file = opened
                plan = _plan(request, recording)
                size = plan.length if plan.sends_body and not plan.head_only else 0
                await self._record(request, str(recording.key), plan.outcome, size)
            except Cte1Error:
                raise
            except Exception:
                logger.exception("serving %s failed", request.url.path[:200])
                raise unexpected() from None
        except Cte1Error as error:
            if opened is not None:
                opened[1].close()
            await self._record(request, _call_of(request), error.code, 0)
            await _error(error)(scope, receive, send)
            return
        except BaseException:
            if opened is not None:
                opened[1].close()
            raise
        await _respond(plan, file, scope, receive, send)

    async def _open(self, request: Request) -> tuple[Recording, BinaryIO]:
        params = request.path_params
        arguments = parse_arguments(
            CallArguments,
            {name: params[name] for name in ("tenantId", "sessionId", "recordId")},
            where="In the download URL: ",
        )
        recording = self.service.stored(arguments.key)  # the tenant allow-list, the 31 days
        if recording is None:
            raise _not_stored(arguments.key)
        try:
            file = await anyio.to_thread.run_sync(self.service.repository.open_audio, recording)
        except RecordingGone:  # evicted between the lookup and the open
            raise _not_stored(arguments.key) from None
        return recording, file

    async def _record(self, request: Request, call: str | None, outcome: str, size: int) -> None:
        """One audit line per GET, written before any byte leaves (as for resource reads): a GET
        that cannot be recorded is refused with [storage_error]."""
        if self.audit is None:
            return
        user = request.scope.get("user")
        identity = getattr(getattr(user, "access_token", None), "client_id", None)
        entry = AuditEntry(
            operation="http/get",
            transport="http",
            identity=identity if isinstance(identity, str) else None,
            client_name=None,
            tool=None,
            resource=request.url.path[:200],
            call=call,
            outcome=outcome,
            bytes_served=size,
            upstream_request=False,
        )
        try:
            await self.audit.append(entry)
        except StorageError as error:
            logger.error("audit log: %s", error.message)  # noqa: TRY400 (no traceback: the cause is said)
            if outcome == "ok":  # else the request's own error is answered
                raise


def _call_of(request: Request) -> str | None:
    """The call the URL names, as the audit log writes it, when its ids are plain numbers."""
    ids = [str(request.path_params.get(name, "")) for name in ("tenantId", "sessionId", "recordId")]
    return call_of_uri("cte1://calls/" + "/".join(ids) + "/")


def _not_stored(key: CallKey) -> NotStored:
    return NotStored(
        f"Call {key}'s recording is not stored on this server (not fetched yet, or no longer kept)."
    )


class _Plan:
    """What one GET answers: 200, 206, 304 or 416, and which bytes."""

    def __init__(self, recording: Recording, status: int, start: int = 0, length: int | None = None) -> None:
        self.recording = recording
        self.status = status
        self.start = start
        self.length = recording.audio.size_bytes if length is None else length
        self.sends_body = status in (200, 206)
        self.outcome = "ok" if status != 416 else "range_not_satisfiable"
        self.head_only = False

    def headers(self) -> dict[str, str]:
        audio = self.recording.audio
        headers = {
            "ETag": _etag(self.recording),
            "Cache-Control": _CACHE,
            "Accept-Ranges": "bytes",
            "X-Content-Type-Options": "nosniff",
        }
        if self.status == 416:
            headers["Content-Range"] = f"bytes */{audio.size_bytes}"
            headers["Content-Length"] = "0"
            return headers
        if self.status == 304:
            return headers
        headers["Content-Type"] = audio.format.mime_type
        headers["Content-Length"] = str(self.length)
        extension = audio.format.container if audio.format.container != "unknown" else "bin"
        headers["Content-Disposition"] = f'attachment; filename="{self.recording.key.name}.{extension}"'
        if self.status == 206:
            headers["Content-Range"] = f"bytes {self.start}-{self.start + self.length - 1}/{audio.size_bytes}"
        return headers


def _etag(recording: Recording) -> str:
    return f'"{recording.audio.sha256}"'


def _plan(request: Request, recording: Recording) -> _Plan:
    """RFC 9110: If-None-Match first (304), then one byte range (206 or 416) unless If-Range no
    longer names this version. Several ranges, or a Range header this does not read, get the
    whole recording (200), as the RFC allows."""
    etag = _etag(recording)
    plan: _Plan
    if _matches(request.headers.get("if-none-match"), etag):
        plan = _Plan(recording, 304, length=0)
    else:
        wanted = request.headers.get("range")
        if_range = request.headers.get("if-range")
        size = recording.audio.size_bytes
        chosen = _byte_range(wanted, size) if wanted and (if_range is None or if_range == etag) else None
        if isinstance(chosen, tuple):
            start, end = chosen
            plan = _Plan(recording, 206, start, end - start + 1)
        elif chosen == "unsatisfiable":
            plan = _Plan(recording, 416, length=0)
        else:
            plan = _Plan(recording, 200)
    plan.head_only = request.method == "HEAD"
    return plan


def _matches(if_none_match: str | None, etag: str) -> bool:
    """If-None-Match uses the weak comparison: W/"x" matches "x"."""
    if if_none_match is None:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


def _byte_range(header: str, size: int) -> tuple[int, int] | str | None:
    """``(first, last)`` of a single ``bytes=`` range, "unsatisfiable", or None to send it all."""
    match = _RANGE.fullmatch(header.replace(" ", ""))
    if match is None or not (match[1] or match[2]):
        return None
    if not match[1]:  # the last N bytes
        suffix = int(match[2])
        return (max(0, size - suffix), size - 1) if suffix > 0 and size > 0 else "unsatisfiable"
    first = int(match[1])
    if match[2] and int(match[2]) < first:
        return None  # not a valid range: ignored
    if first >= size:
        return "unsatisfiable"
    return first, min(int(match[2]), size - 1) if match[2] else size - 1


def _error(error: Cte1Error) -> Response:
    """``{"error": {"code", "message"}}``, the message in the tools' ``[code] … Next: …`` form."""
    status = next((s for kind, s in _STATUS.items() if isinstance(error, kind)), None)
    if status is None:
        status = 400 if isinstance(error, InputError) else 500
    return JSONResponse(
        {"error": {"code": error.code, "message": error.render()}},
        status_code=status,
        headers={"Cache-Control": _CACHE},
    )


async def _respond(plan: _Plan, file: BinaryIO, scope: Scope, receive: Receive, send: Send) -> None:
    """Head, then the planned bytes a piece at a time; stops (and closes the file) as soon as the
    client goes away, which uvicorn would otherwise hide by discarding what is sent."""
    with file:
        headers = [(name.lower().encode(), value.encode("latin-1")) for name, value in plan.headers().items()]
        await send({"type": "http.response.start", "status": plan.status, "headers": headers})
        if not plan.sends_body or plan.head_only:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        async with anyio.create_task_group() as group:

            async def watch_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()

            group.start_soon(watch_disconnect)
            await anyio.to_thread.run_sync(file.seek, plan.start)
            remaining = plan.length
            while remaining > 0:
                chunk = await anyio.to_thread.run_sync(file.read, min(CHUNK_BYTES, remaining))
                if not chunk:  # a committed recording never shrinks; end rather than hang
                    logger.error("%s ended %d bytes early", plan.recording.key, remaining)
                    break
                remaining -= len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": remaining > 0})
            if remaining:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            group.cancel_scope.cancel()
