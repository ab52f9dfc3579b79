"""The simulated ``POST /general/{apiVersion}/{sourceUuid}/call/audio_data`` as a Starlette app.

It answers like the documentation says (and, where the documentation is silent, like the
project's spec assumes): 404 for a wrong path, 401/403 for the key, 429 under the 5-second rule,
HTTP 200 with a JSON ``{"status": "error"}`` body for the five documented errors, and a
streamed multipart (metadata JSON + WAV) with an exact Content-Length on success. It parses and
builds everything itself; it shares no code with the client it is there to test.
"""

from __future__ import annotations

import hmac
import json
import math
import secrets
import time
from collections.abc import AsyncGenerator, Mapping
from datetime import datetime, timedelta
from typing import Any

import anyio
import anyio.lowlevel
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from cte1_mcp.simulator.calls import SampleCall, find_call
from cte1_mcp.simulator.config import SimulatorConfig
from cte1_mcp.simulator.state import Fault, Outcome, RequestRecord, SimulatorState
from cte1_mcp.simulator.wav import WavSpec, iter_wav

#: 31日以上前の音声データは取得できない (counted from the recording's connectTime).
RETENTION = timedelta(days=31)
FIELDS = ("tenantId", "sessionId", "recordId")
ENDPOINT_ROUTE = "/general/{api_version}/{source_uuid}/call/audio_data"

# The platform's error texts are Japanese; each carries a short English gloss for readers.
MSG_INVALID_JSON = "リクエストボディが不正です (request body is not a JSON object)"
MSG_UNKNOWN_PARAMETER = "存在しないリクエストパラメータです (unknown request parameter: {})"
MSG_MISSING_PARAMETER = "リクエストパラメータが不足しています (missing request parameter: {})"
MSG_INVALID_PARAMETER = "リクエストパラメータの形式が不正です ({})"
MSG_TENANT_NOT_ALLOWED = "許可されていないテナントの情報要求です (tenant not allowed for this API key)"
MSG_NO_SUCH_CALL = "存在しないリクエストパラメータです (no such call: {})"
MSG_EXPIRED = "31日以上前の音声データを要求しています (recording is older than 31 days)"
MSG_IN_PROGRESS = "未完了の通話に対する取得要求です (call not finished)"
MSG_RATE_LIMITED = (
    "リクエストが多すぎます。リクエスト間隔は5秒以上としてください (too many requests; retry after {} s)"
)
MSG_UNAUTHORIZED = "認証情報がありません (missing Authorization header)"
MSG_FORBIDDEN = "認証に失敗しました (invalid API key)"
MSG_NOT_FOUND = "Not Found"


class _Refusal(Exception):
    """A request the platform answers with an error; carries the answer."""

    def __init__(
        self, outcome: Outcome, description: str, status: int = 200, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(description)
        self.outcome: Outcome = outcome
        self.description = description
        self.status = status
        self.headers = headers


def create_app(config: SimulatorConfig, state: SimulatorState | None = None) -> Starlette:
    """The simulator as an ASGI app; ``app.state.simulator`` is its :class:`SimulatorState`."""
    simulator = _Simulator(config, state if state is not None else SimulatorState())
    app = Starlette(
        routes=[
            Route(ENDPOINT_ROUTE, simulator.audio_data, methods=["POST"]),
            Route("/_simulator/stats", simulator.stats, methods=["GET"]),
        ],
        exception_handlers={HTTPException: simulator.http_error},
    )
    app.state.simulator = simulator.state
    return app


def error_json(description: str, status: int = 200, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The error shape of the platform's other General APIs."""
    return JSONResponse({"status": "error", "description": description}, status_code=status, headers=headers)


class _Simulator:
    def __init__(self, config: SimulatorConfig, state: SimulatorState) -> None:
        self.config = config
        self.state = state

    async def audio_data(self, request: Request) -> Response:
        started = time.monotonic()
        record = RequestRecord(
            monotonic=started,
            at=self.state.now(),
            method=request.method,
            path=request.url.path,
            body=None,
            status=200,
            outcome="ok",
        )
        try:
            self._check_gate(request, started)
            fault = self.state.take_fault()
            raw = await request.body()
            record.body = _try_json(raw)
            if fault is not None and fault.delay > 0:
                await anyio.sleep(fault.delay)
            if fault is not None and fault.body is not None:
                return self._finish(record, _fault_response(fault), "fault")
            tenant_id, session_id, record_id = _parse_body(raw)
            now = self.state.now()  # one instant for every check and for the metadata
            call = self._find_readable(tenant_id, session_id, record_id, now)
        except _Refusal as refusal:
            response = error_json(refusal.description, refusal.status, refusal.headers)
            return self._finish(record, response, refusal.outcome)
        return self._success(record, call, now, fault)

    def _check_gate(self, request: Request, started: float) -> None:
        """Path (404), then key (401/403), then the 5-second rule (429): the platform's front door."""
        config = self.config
        if (
            request.path_params["api_version"] != config.api_version
            or request.path_params["source_uuid"].lower() != config.source_uuid.lower()
        ):
            raise _Refusal("not_found", MSG_NOT_FOUND, 404)
        authorization = request.headers.get("authorization", "").strip()
        if not authorization:
            raise _Refusal("unauthorized", MSG_UNAUTHORIZED, 401)
        scheme, _, credentials = authorization.partition(" ")
        token = credentials.strip() if scheme.lower() == "bearer" and credentials else authorization
        if not hmac.compare_digest(token.encode(), config.api_key.encode()):
            raise _Refusal("forbidden", MSG_FORBIDDEN, 403)
        wait = self.state.admit(started, config.min_interval)
        if wait is not None:
            seconds = str(max(1, math.ceil(wait)))
            raise _Refusal("rate_limited", MSG_RATE_LIMITED.format(seconds), 429, {"Retry-After": seconds})

    def _find_readable(self, tenant_id: str, session_id: int, record_id: int, now: datetime) -> SampleCall:
        """Documented errors 3, 1, 4, 5 in that order: a foreign tenant's calls are not even looked up."""
        if tenant_id not in self.config.readable_tenants:
            raise _Refusal("tenant_not_allowed", MSG_TENANT_NOT_ALLOWED)
        call = find_call(tenant_id, session_id, record_id)
        epoch = self.state.epoch
        ids = f"tenantId={tenant_id}, sessionId={session_id}, recordId={record_id}"
        if call is None or now < call.connect_time(epoch):  # not (yet) in existence at the simulated time
            raise _Refusal("no_such_call", MSG_NO_SUCH_CALL.format(ids))
        if now - call.connect_time(epoch) >= RETENTION:
            raise _Refusal("expired", MSG_EXPIRED)
        if call.status(epoch, now) != "complete":
            raise _Refusal("in_progress", MSG_IN_PROGRESS)
        return call

    def _success(
        self, record: RequestRecord, call: SampleCall, now: datetime, fault: Fault | None
    ) -> Response:
        metadata = call.metadata(self.state.epoch, now)
        spec = call.wav_spec()
        boundary = "cte1sim-" + secrets.token_hex(16)
        prefix, suffix = _multipart_frame(
            boundary, metadata, call.filename(), self.config.multipart_subtype, self.config.named_parts
        )
        length = len(prefix) + spec.file_size + len(suffix)
        headers = {
            "Content-Type": f"multipart/{self.config.multipart_subtype}; boundary={boundary}",
            "Content-Length": str(length),
        }
        body = _stream(record, prefix, spec, suffix, self.config.chunk_size)
        if fault is not None and fault.truncate_after is not None:
            response: Response = _TruncatedResponse(record, body, headers, fault.truncate_after)
            return self._finish(record, response, "fault", completed=False)
        if fault is not None and fault.stall_after is not None:
            response = _TruncatedResponse(record, body, headers, fault.stall_after, stall=True)
            return self._finish(record, response, "fault", completed=False)
        if fault is not None and fault.drip_interval is not None:
            response = _DrippingResponse(record, body, headers, fault.drip_interval)
            return self._finish(record, response, "fault", completed=False)
        return self._finish(record, StreamingResponse(body, headers=headers), "ok", completed=False)

    def _finish(
        self, record: RequestRecord, response: Response, outcome: Outcome, *, completed: bool = True
    ) -> Response:
        """Log the request with its answer (records appear in the order answers are decided)."""
        record.status = response.status_code
        record.outcome = outcome
        if completed:
            record.bytes_sent = len(response.body)
            record.completed = True
        self.state.log(record)
        return response

    async def stats(self, request: Request) -> Response:
        """Read-only counts, for people watching a demo or a benchmark."""
        return JSONResponse({**self.state.stats(), "now": self.state.now().isoformat()})

    async def http_error(self, request: Request, exc: Exception) -> Response:
        """Unknown paths and methods: logged like any request, answered in the platform's JSON shape."""
        if not isinstance(exc, HTTPException):  # registered for HTTPException only
            raise exc
        outcome: Outcome = "method_not_allowed" if exc.status_code == 405 else "not_found"
        status = exc.status_code
        record = RequestRecord(
            time.monotonic(), self.state.now(), request.method, request.url.path, None, status, outcome
        )
        response = error_json(exc.detail, status, exc.headers)  # a 405 keeps its Allow header
        return self._finish(record, response, outcome)


def _try_json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        return None


def _parse_body(raw: bytes) -> tuple[str, int, int]:
    """Documented errors 1 (unknown field) and 2 (missing field), plus malformed bodies and types."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _Refusal("invalid_json", MSG_INVALID_JSON) from None
    if not isinstance(body, dict):
        raise _Refusal("invalid_json", MSG_INVALID_JSON)
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise _Refusal("unknown_parameter", MSG_UNKNOWN_PARAMETER.format(", ".join(unknown)))
    missing = [name for name in FIELDS if name not in body]
    if missing:
        raise _Refusal("missing_parameter", MSG_MISSING_PARAMETER.format(", ".join(missing)))
    tenant_id, session_id, record_id = body["tenantId"], body["sessionId"], body["recordId"]
    if not (isinstance(tenant_id, str) and tenant_id.isascii() and tenant_id.isdigit()):
        message = MSG_INVALID_PARAMETER.format("tenantId must be a string of digits")
        raise _Refusal("invalid_parameter", message)
    for name, value in (("sessionId", session_id), ("recordId", record_id)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Refusal("invalid_parameter", MSG_INVALID_PARAMETER.format(f"{name} must be an integer"))
    return tenant_id, session_id, record_id


def _multipart_frame(
    boundary: str, metadata: dict[str, Any], filename: str, subtype: str, named: bool
) -> tuple[bytes, bytes]:
    """Everything of the body but the WAV bytes: (metadata part + audio part headers, closing boundary)."""
    if not named:
        meta_disposition = audio_disposition = ""
    elif subtype == "form-data":
        meta_disposition = 'Content-Disposition: form-data; name="metadata"\r\n'
        audio_disposition = f'Content-Disposition: form-data; name="audioFile"; filename="{filename}"\r\n'
    else:
        meta_disposition = 'Content-Disposition: inline; name="metadata"\r\n'
        audio_disposition = f'Content-Disposition: attachment; name="audioFile"; filename="{filename}"\r\n'
    metadata_json = json.dumps(metadata, ensure_ascii=False).encode()
    prefix = (
        f"--{boundary}\r\n{meta_disposition}Content-Type: application/json; charset=utf-8\r\n\r\n".encode()
        + metadata_json
        + f"\r\n--{boundary}\r\n{audio_disposition}Content-Type: audio/wav\r\n\r\n".encode()
    )
    return prefix, f"\r\n--{boundary}--\r\n".encode()


async def _stream(
    record: RequestRecord, prefix: bytes, spec: WavSpec, suffix: bytes, chunk_size: int
) -> AsyncGenerator[bytes, None]:
    """The multipart body, chunk by chunk; yields to the event loop after each so nothing starves."""
    yield prefix
    record.bytes_sent = len(prefix)
    for chunk in iter_wav(spec, chunk_size):
        yield chunk
        record.bytes_sent += len(chunk)
        await anyio.lowlevel.checkpoint()
    yield suffix
    record.bytes_sent += len(suffix)
    record.completed = True


def _fault_response(fault: Fault) -> Response:
    assert fault.body is not None
    headers = dict(fault.headers)
    return Response(fault.body, status_code=fault.status, headers=headers, media_type=fault.content_type)


class _FaultyResponse(Response):
    """A successful answer's status and headers, with a body sent wrong by the subclass."""

    def __init__(
        self, record: RequestRecord, body: AsyncGenerator[bytes, None], headers: dict[str, str]
    ) -> None:
        self.status_code = 200
        self.background = None
        self._record = record
        self._chunks = body
        self.init_headers(headers)

    async def _start(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})


class _TruncatedResponse(_FaultyResponse):
    """Announces the full Content-Length and sends ``limit`` bytes; then the server drops the
    connection or, ``stall``, the connection stays open with nothing more sent until the client leaves."""

    def __init__(
        self,
        record: RequestRecord,
        body: AsyncGenerator[bytes, None],
        headers: dict[str, str],
        limit: int,
        *,
        stall: bool = False,
    ) -> None:
        super().__init__(record, body, headers)
        self._limit = limit
        self._stall = stall

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._start(send)
        sent = 0
        try:
            async for chunk in self._chunks:
                piece = chunk[: self._limit - sent]
                await send({"type": "http.response.body", "body": piece, "more_body": True})
                sent += len(piece)
                if sent >= self._limit:
                    break
        finally:
            await self._chunks.aclose()
            self._record.bytes_sent = sent
        while self._stall and (await receive())["type"] != "http.disconnect":
            pass


class _DrippingResponse(_FaultyResponse):
    """The whole body, one byte every ``interval`` seconds: no read ever times out, yet it never
    ends. Stops when the client leaves (sending to a gone client raises nothing)."""

    def __init__(
        self,
        record: RequestRecord,
        body: AsyncGenerator[bytes, None],
        headers: dict[str, str],
        interval: float,
    ) -> None:
        super().__init__(record, body, headers)
        self._interval = interval

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(self._drip, send)
            while (await receive())["type"] != "http.disconnect":
                pass
            group.cancel_scope.cancel()

    async def _drip(self, send: Send) -> None:
        await self._start(send)
        sent = 0
        try:
            async for chunk in self._chunks:
                for i in range(len(chunk)):
                    await send({"type": "http.response.body", "body": chunk[i : i + 1], "more_body": True})
                    sent += 1
                    self._record.bytes_sent = sent  # what was sent, not what the body generator made
                    await anyio.sleep(self._interval)
        finally:
            await self._chunks.aclose()
            self._record.bytes_sent = sent
