"""The Streamable HTTP transport's edge: a POST to ``/mcp`` that holds no JSON-RPC message of MCP
gets the answer a stdio line would get.

The SDK's transport (``mcp/server/streamable_http.py``, mcp 2.3) reads a request whose id is null,
1.5, true or an object as a notification and answers ``202`` with no body, so its client waits for
an answer that never comes; a batch, a bare value or ``"jsonrpc": "1.0"`` gets ``-32602`` with
pydantic's whole validation dump. Each body is checked first by ``message_check``, the checker
stdio lines go through, and what fails is answered ``400`` with its JSON-RPC error (``-32700`` or
``-32600``, the request's id when usable), as the SDK answers a body it cannot parse.

The check runs inside the session manager's request handling, so in stateful and stateless mode
alike, and after authentication (the SDK checks the token in the route, before the manager):
a request without a valid token is refused before its body is read. The body is read behind the
SDK's own size limit (``max_request_body_size``, ``413`` past it); a request the SDK refuses for
its headers (``Host``, ``Origin``, ``Content-Type``) is left to it, refused as before.
"""

from __future__ import annotations

import logging

from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import (
    RequestBodyLimitMiddleware,
    TransportSecurityMiddleware,
    TransportSecuritySettings,
)
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cte1_mcp.message_check import check_message

logger = logging.getLogger(__name__)


def check_posted_messages(manager: StreamableHTTPSessionManager) -> None:
    """Put the check in front of everything ``manager`` does with a request."""
    checked = CheckedBodies(manager.asgi_app, manager.security_settings)
    manager.asgi_app = RequestBodyLimitMiddleware(checked, manager.max_request_body_size)


class CheckedBodies:
    """ASGI app in front of the SDK's: only POST bodies are looked at; a good one is replayed."""

    def __init__(self, app: ASGIApp, security: TransportSecuritySettings | None) -> None:
        self.app = app
        self._security = TransportSecurityMiddleware(security)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        if await self._security.validate_request(request, is_post=True) is not None:
            await self.app(scope, receive, send)  # the SDK refuses it, with its own status
            return
        try:
            body = await request.body()  # bounded: a RequestBodyLimitMiddleware is in front
        except ClientDisconnect:
            return  # nobody is left to answer
        verdict = check_message(body)
        if verdict is None or isinstance(verdict, str):  # a message; or a blank body, the SDK's -32700
            await self.app(scope, _replay(body, receive), send)
            return
        logger.warning("answered a malformed message from an HTTP client: %s", verdict.error.message[:120])
        answer = verdict.model_dump_json(by_alias=True, exclude_unset=True)
        await Response(answer, status_code=400, media_type="application/json")(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` with the body already read handed over first, whole."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replayed() -> Message:
        return pending.pop() if pending else await receive()

    return replayed
