"""The receiver of CT-e1's speech-recognition push (音声認識結果一括送信API), over HTTP only.

CT-e1 POSTs one call's recognition results with a pre-shared key in ``Authorization``; each
record's sentences are stored as that recording's transcript from the platform. The checks run
cheapest first and before anything is read that need not be: Host/Origin (the MCP endpoint's
DNS-rebinding rule), method, key (constant time), content type, declared length, then the body,
read only up to ``CTE1_PUSH_MAX_BYTES``, parsed as strict UTF-8 JSON (one leading byte-order mark
ignored, no NaN, nesting bounded by the parser) and validated whole. Anything wrong is a 4xx with ``{"error": {"code", "message"}}``
and nothing stored. The platform's expected answer is not public: 200 with a small JSON body is
our assumption.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass, field
from typing import Any

import anyio.to_thread
import pydantic_core
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cte1_mcp.app_lifespan import on_shutdown
from cte1_mcp.audit import AuditEntry, AuditLog
from cte1_mcp.errors import RecordingExpired, StorageError
from cte1_mcp.http_auth import fingerprint
from cte1_mcp.refusal_tally import RefusalTally, Summary
from cte1_mcp.repository.base import RecordingRepository
from cte1_mcp.settings import Settings, bare_secret
from cte1_mcp.transcribe.pushed import PushBody, PushedConversation, StoredPush

logger = logging.getLogger(__name__)

_ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
#: At most this many validation problems are listed in one answer.
_MAX_PROBLEMS = 5
#: Pushes refused before their key was checked (Host/Origin, method, key) may come from anybody,
#: at any rate: the first after a quiet minute is logged and audited, the rest of each minute as
#: one line with their count. The log and the audit file then grow by at most a line a minute
#: (per code in the audit file) whatever the rate, and a misconfigured CT-e1 is still seen at once.
UNAUTHENTICATED_REPORT_SECONDS = 60.0


class Refusal(Exception):
    """A request answered with a 4xx/5xx and a JSON error; nothing was stored."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        call: str | None = None,
        audited: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        #: The call it concerns, for the audit line (None before the body is known to name one).
        self.call = call
        #: The audit log already failed: no line is attempted for the refusal itself.
        self.audited = audited

    def response(self) -> Response:
        body = {"error": {"code": self.code, "message": self.message}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


@dataclass
class PushReceiver:
    """One route's worth of state: the key (bytes, for ``hmac.compare_digest``), limits, store, audit."""

    key: bytes
    path: str
    max_bytes: int
    allowed_tenants: tuple[str, ...]
    repository: RecordingRepository
    security: TransportSecurityMiddleware
    audit: AuditLog | None = None
    identity: str = field(init=False)
    unauthenticated: RefusalTally = field(init=False)

    def __post_init__(self) -> None:
        # What the audit log names the pusher by: the key's fingerprint, never the key.
        self.identity = fingerprint(self.key).replace("token-sha256:", "push-key-sha256:")
        self.unauthenticated = RefusalTally(UNAUTHENTICATED_REPORT_SECONDS, self._report_unauthenticated)

    async def handle(self, request: Request) -> Response:
        authenticated = False
        try:
            await self._check_host(request)
            _check_method(request)
            self._authenticate(request)
            authenticated = True
            _check_content_type(request)
            body = await self._read_body(request)
            # In a worker thread: a body at CTE1_PUSH_MAX_BYTES's upper bound takes seconds to
            # validate, and the MCP requests on this event loop would wait that long.
            conversation = await anyio.to_thread.run_sync(_parse, body)
            self._check_tenant(conversation)
            return await self._store(conversation)
        except Refusal as refusal:
            # Refused with the key: one line each (the key holder's rate); without: bounded.
            if authenticated or self.unauthenticated.admit(refusal.code):
                logger.warning("refused a push to %s: [%s] %s", self.path, refusal.code, refusal.message)
                if self.audit is not None and not refusal.audited:
                    await self._audit(refusal.code, refusal.call, authenticated)
            return refusal.response()
        except Exception:
            # A fault of this server's, not of the body: still an answer in this route's form, and a
            # line in the audit log, never Starlette's bare text 500.
            logger.exception("a push to %s failed", self.path)
            if self.audit is not None:
                await self._audit("internal_error", None, authenticated)
            return Refusal(
                500, "internal_error", "The push could not be handled; send it again later."
            ).response()

    async def _check_host(self, request: Request) -> None:
        # The MCP endpoint's own check (its settings, its messages), answered in this route's form.
        refused = await self.security.validate_request(request, is_post=False)
        if refused is not None:
            code = "host_not_allowed" if refused.status_code == 421 else "origin_not_allowed"
            raise Refusal(
                refused.status_code,
                code,
                "The Host or Origin header is not one this server accepts (CTE1_HTTP_ALLOWED_HOSTS).",
            )

    def _authenticate(self, request: Request) -> None:
        """The pre-shared key, as given or as ``Bearer <key>`` (the page says only "the API key")."""
        header = request.headers.get("authorization")
        if header is None:
            raise Refusal(
                401,
                "unauthorized",
                "The Authorization header with the pre-shared push key is missing.",
                headers={"WWW-Authenticate": "Bearer"},
            )
        presented = bare_secret(header)  # "Bearer" alone is empty, never the configured key
        if not hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), self.key):
            raise Refusal(
                401,
                "unauthorized",
                "The push key in the Authorization header is not the one configured.",
                headers={"WWW-Authenticate": "Bearer"},
            )

    async def _read_body(self, request: Request) -> bytes:
        """The body, never read past ``max_bytes``: a larger declared length is refused unread, a
        longer stream (chunked, or lying about its length) as soon as it passes the bound."""
        too_large = Refusal(
            413,
            "payload_too_large",
            f"The push body is larger than this server accepts ({self.max_bytes:,} bytes, CTE1_PUSH_MAX_BYTES).",
            headers={"Connection": "close"},  # the rest of the body is not read: the connection ends
        )
        declared = request.headers.get("content-length")
        if declared is not None:
            if not (declared.isascii() and declared.isdigit()):
                raise Refusal(400, "bad_request", "The Content-Length header is not a number.")
            if int(declared) > self.max_bytes:
                raise too_large
        body = bytearray()
        try:
            async for chunk in request.stream():
                if len(body) + len(chunk) > self.max_bytes:
                    raise too_large
                body += chunk
        except ClientDisconnect:
            raise Refusal(400, "bad_request", "The push body ended before it was complete.") from None
        return bytes(body)

    def _check_tenant(self, conversation: PushedConversation) -> None:
        allowed = self.allowed_tenants
        if allowed and conversation.tenantId not in allowed:
            raise Refusal(
                403,
                "tenant_not_allowed",
                f"Tenant {conversation.tenantId} is not one this server keeps (CTE1_ALLOWED_TENANTS).",
            )

    async def _store(self, conversation: PushedConversation) -> Response:
        """Each record under its key, then one audit line per record; a recordId seen earlier in
        the same push is not stored again but reported (the page's own example repeats recordId 1
        for a transfer's second call). A record with no sentence is reported, not stored: an
        empty pushed transcript would stop local transcription serving the call, and would
        replace one pushed earlier. A push stored again replaces what it stored before, so the
        platform may retry any push this answered with an error."""
        available_until = conversation.available_until  # the same for every record: the first
        # write refuses an expired call (RecordingExpired) before anything is stored
        chosen: dict[int, StoredPush] = {}
        seen: set[int] = set()  # the first record with an id decides, even an empty one
        skipped: list[dict[str, Any]] = []
        for index, record in enumerate(conversation.recordList):
            if record.recordId in seen:
                skipped.append({"recordId": record.recordId, "index": index, "reason": "duplicate_record_id"})
            elif not record.sentenceList:
                skipped.append({"recordId": record.recordId, "index": index, "reason": "empty_sentence_list"})
            else:
                chosen[record.recordId] = StoredPush.of(conversation, record)
            seen.add(record.recordId)
        for stored in chosen.values():
            try:
                await self.repository.write_pushed_transcript(
                    stored.key, stored.model_dump_json().encode(), available_until=available_until
                )
            except RecordingExpired as exc:
                raise Refusal(422, "recording_expired", exc.message, call=str(stored.key)) from None
            except StorageError as exc:
                logger.error("a pushed transcript of %s could not be stored: %s", stored.key, exc.message)  # noqa: TRY400
                raise Refusal(
                    500,
                    "storage_error",
                    "The transcript could not be stored; try again.",
                    call=str(stored.key),
                ) from None
            logger.info(
                "stored CT-e1's transcript of %s (%d sentences)", stored.key, len(stored.sentenceList)
            )
        prefix = f"{conversation.tenantId}/{conversation.sessionId}"
        for skip in skipped:
            if skip["reason"] == "duplicate_record_id":
                logger.warning(
                    "push for %s: recordList[%d] repeats recordId %d; the first was kept",
                    prefix,
                    skip["index"],
                    skip["recordId"],
                )
            else:
                logger.info(
                    "push for %s: recordList[%d] (recordId %d) has no sentences; not stored",
                    prefix,
                    skip["index"],
                    skip["recordId"],
                )
        if self.audit is not None:
            lines = [("ok", str(s.key)) for s in chosen.values()]
            lines += [(skip["reason"], f"{prefix}/{skip['recordId']}") for skip in skipped]
            for outcome, call in lines:
                if not await self._audit(outcome, call, True):
                    # The records are stored by now (a push is audited once it is kept, as a tool
                    # call is once it is served); sending it again replaces them and is recorded.
                    raise Refusal(
                        503,
                        "storage_error",
                        "The transcript was stored, but the audit log (CTE1_AUDIT_LOG) could not "
                        "record it; send the push again once the audit log can be written.",
                        audited=True,
                    )
        stored_list = [
            {
                "tenantId": s.tenantId,
                "sessionId": s.sessionId,
                "recordId": s.recordId,
                "sentences": len(s.sentenceList),
            }
            for s in chosen.values()
        ]
        return JSONResponse({"status": "ok", "stored": stored_list, "skipped": skipped})

    async def _report_unauthenticated(self, summary: Summary) -> None:
        """The unauthenticated refusals a minute counted: one log line, one audit line per code."""
        logger.warning(
            "refused %d more unauthenticated pushes to %s since %s (%s)",
            summary.total,
            self.path,
            summary.since.strftime("%H:%M:%S"),
            ", ".join(f"[{code}] {count}" for code, count in summary.counts.items()),
        )
        if self.audit is not None:
            for code, count in summary.counts.items():
                await self._audit(code, None, False, count=count)

    async def _audit(
        self, outcome: str, call: str | None, authenticated: bool, *, count: int | None = None
    ) -> bool:
        """One line (who and which call, never the body); False if it could not be written."""
        assert self.audit is not None
        entry = AuditEntry(
            operation="push",
            transport="http",
            identity=self.identity if authenticated else None,
            client_name=None,
            tool=None,
            resource=self.path,
            call=call,
            outcome=outcome,
            bytes_served=0,
            upstream_request=False,
            count=count,
        )
        try:
            await self.audit.append(entry)
        except StorageError:
            logger.exception("the audit line of a push could not be written")
            return False
        return True


def _check_method(request: Request) -> None:
    if request.method != "POST":
        raise Refusal(405, "method_not_allowed", "Only POST is accepted here.", headers={"Allow": "POST"})


def _check_content_type(request: Request) -> None:
    media_type, _, parameters = request.headers.get("content-type", "").partition(";")
    charset = next(
        (
            value.strip().strip('"').lower()
            for name, _, value in (p.partition("=") for p in parameters.split(";"))
            if name.strip().lower() == "charset"
        ),
        "utf-8",
    )
    if media_type.strip().lower() != "application/json" or charset not in ("utf-8", "utf8"):
        raise Refusal(415, "unsupported_media_type", "The push body must be application/json in UTF-8.")


#: UTF-8's byte-order mark: RFC 8259 8.1 lets a parser ignore one, and a refused push is lost.
_UTF8_BOM = b"\xef\xbb\xbf"


def _parse(body: bytes) -> PushedConversation:
    # pydantic's own JSON parser (jiter): strict UTF-8, no NaN or Infinity, nesting bounded.
    try:
        data = pydantic_core.from_json(body.removeprefix(_UTF8_BOM), allow_inf_nan=False)
    except ValueError as exc:
        raise Refusal(400, "invalid_json", f"The push body is not valid JSON ({exc}).") from None
    try:
        return PushBody.model_validate(data).conversation
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg'].removeprefix('Value error, ')}"
            for error in exc.errors(include_input=False, include_url=False)
        ]
        more = f" (and {len(problems) - _MAX_PROBLEMS} more)" if len(problems) > _MAX_PROBLEMS else ""
        raise Refusal(
            422,
            "invalid_push",
            "The push body does not have the documented shape: " + "; ".join(problems[:_MAX_PROBLEMS]) + more,
        ) from None


def mount_push(
    app: Starlette,
    settings: Settings,
    repository: RecordingRepository,
    audit: AuditLog | None,
    security: TransportSecuritySettings,
) -> None:
    """Add the push route to the HTTP app when CTE1_PUSH_KEY is set (otherwise there is none)."""
    if settings.push_key is None:
        return
    receiver = PushReceiver(
        key=_bare_key(settings.push_key.get_secret_value()),
        path=settings.push_path,
        max_bytes=settings.push_max_bytes,
        allowed_tenants=settings.allowed_tenants,
        repository=repository,
        security=TransportSecurityMiddleware(security),
        audit=audit,
    )
    # Every method reaches the handler, so a wrong one gets this route's JSON 405, not Starlette's text.
    app.router.routes.append(Route(settings.push_path, receiver.handle, methods=_ALL_METHODS))
    # the server stopping gracefully: what the interval counted so far is reported
    on_shutdown(app, receiver.unauthenticated.close)
    logger.info("accepting CT-e1's speech-recognition push at POST %s", settings.push_path)


def warn_if_push_on_stdio(settings: Settings) -> None:
    if settings.push_key is not None:
        logger.warning(
            "CTE1_PUSH_KEY is set, but CT-e1's push is accepted only over HTTP "
            "(serve --transport http); this stdio server has no push route"
        )


def _bare_key(key: str) -> bytes:
    return bare_secret(key).encode()
