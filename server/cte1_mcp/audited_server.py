"""The MCP server with an audit line per tool call and resource read (``CTE1_AUDIT_LOG``).

A subclass, so the audit is one hook around the two entry points every client request goes
through, and the MCP surface itself knows nothing of it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError
from mcp_types import AudioContent, CallToolResult, EmbeddedResource, ImageContent, TextContent
from pydantic import AnyUrl

from cte1_mcp.audit import AuditEntry, AuditLog, bounded, call_of_arguments, call_of_uri, watching_upstream
from cte1_mcp.errors import StorageError
from cte1_mcp.mcp_server import Cte1MCPServer, Transport
from cte1_mcp.resources import protocol_error
from cte1_mcp.service import RecordingService
from cte1_mcp.tools.base import error_result

logger = logging.getLogger(__name__)

_CODE = re.compile(r"^\[([a-z_]{1,64})\]")


class AuditedMCPServer(Cte1MCPServer):
    """Writes the line after the call and before the answer leaves: if it cannot be written, the
    client gets ``[storage_error]`` instead of the recording (an unrecorded access must not happen)."""

    def __init__(
        self, service: RecordingService, transport: Transport, *, audit: AuditLog, **kwargs: Any
    ) -> None:
        super().__init__(service, transport, **kwargs)
        self.audit = audit

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult:
        def entry(outcome: str, bytes_served: int) -> AuditEntry:
            return self._entry(
                "tools/call",
                context,
                tool=bounded(name),
                call=call_of_arguments(arguments) if isinstance(arguments, dict) else None,
                outcome=outcome,
                bytes_served=bytes_served,
                upstream=upstream.requested,
            )

        with watching_upstream() as upstream:
            try:
                result = await super().call_tool(name, arguments, context)
            except BaseException:  # cancelled by the client (errors are results, never raised)
                await self._record(entry("cancelled", 0))
                raise
        line = entry(_code_of(result), 0) if result.is_error else entry("ok", _tool_bytes(result))
        error = await self._record(line)
        return result if error is None else error_result(error)

    async def read_resource(
        self, uri: AnyUrl | str, context: Context[Any, Any] | None = None
    ) -> Iterable[ReadResourceContents]:
        text = str(uri)
        outcome, contents = "ok", None
        with watching_upstream() as upstream:
            try:
                contents = list(await super().read_resource(uri, context))
            except MCPError as error:
                data = error.data if isinstance(error.data, dict) else {}
                outcome = str(data.get("code", "internal_error"))
                raise
            except Exception:
                outcome = "internal_error"
                raise
            except BaseException:
                outcome = "cancelled"
                raise
            finally:
                entry = self._entry(
                    "resources/read",
                    context,
                    resource=bounded(text),
                    call=call_of_uri(text),
                    outcome=outcome,
                    bytes_served=sum(_size(c.content) for c in contents or []),
                    upstream=upstream.requested,
                )
                unrecorded = await self._record(entry)
                if unrecorded is not None and contents is not None:  # else the read's own error is answered
                    raise protocol_error(unrecorded, text) from None
        return contents

    async def _record(self, entry: AuditEntry) -> StorageError | None:
        """Write the line; a failure is logged and returned, for the caller to answer instead."""
        try:
            await self.audit.append(entry)
        except StorageError as error:
            logger.error("audit log: %s", error.message)  # noqa: TRY400 (no traceback: the cause is said)
            return error
        return None

    def _entry(
        self,
        operation: str,
        context: Context[Any, Any] | None,
        *,
        tool: str | None = None,
        resource: str | None = None,
        call: str | None,
        outcome: str,
        bytes_served: int,
        upstream: bool,
    ) -> AuditEntry:
        identity, client_name = _who(context)
        return AuditEntry(
            operation=operation,
            transport=self.transport,
            identity=identity,
            client_name=client_name,
            tool=tool,
            resource=resource,
            call=call,
            outcome=outcome,
            bytes_served=bytes_served,
            upstream_request=upstream,
        )


def _who(context: Context[Any, Any] | None) -> tuple[str | None, str | None]:
    """The authenticated client (the token verifier's client_id: a fingerprint, never the token)
    and the name the client gave itself, each where the transport has it."""
    if context is None:
        return None, None
    try:
        request_context = context.request_context
    except (ValueError, AttributeError):
        return None, None
    request = request_context.request
    user = getattr(request, "scope", {}).get("user") if request is not None else None
    access = getattr(user, "access_token", None)
    identity = getattr(access, "client_id", None)
    params = getattr(request_context.session, "client_params", None)
    info = getattr(params, "client_info", None)
    name = getattr(info, "name", None)
    return (
        identity if isinstance(identity, str) else None,
        bounded(name) if isinstance(name, str) else None,
    )


def _code_of(result: CallToolResult) -> str:
    first = next((c.text for c in result.content if isinstance(c, TextContent)), "")
    match = _CODE.match(first)
    return match[1] if match else "internal_error"


def _tool_bytes(result: CallToolResult) -> int:
    """Bytes of recording data (or data derived from it) in the result: inline audio, images, blobs."""
    total = 0
    for block in result.content:
        if isinstance(block, AudioContent | ImageContent):
            total += _b64_size(block.data)
        elif isinstance(block, EmbeddedResource):
            resource = block.resource
            blob = getattr(resource, "blob", None)
            total += _b64_size(blob) if isinstance(blob, str) else _size(getattr(resource, "text", ""))
    return total


def _b64_size(data: str) -> int:
    """Decoded size, counted without decoding (inline audio can be half a megabyte)."""
    return len(data.rstrip("=")) * 3 // 4


def _size(content: str | bytes) -> int:
    return len(content) if isinstance(content, bytes) else len(content.encode())
