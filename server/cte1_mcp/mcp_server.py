"""The MCP surface: two tools, two resource templates, the argument guard and progress.

Everything here translates between MCP and ``RecordingService``; nothing here talks to CT-e1
or touches files directly. Errors are rendered in one place (``Cte1Error.render``).
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Iterable
from typing import Annotated, Any, Literal

from mcp.server.auth.provider import TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.tools import Tool
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    AudioContent,
    CallToolResult,
    ContentBlock,
    ResourceLink,
    TextContent,
    ToolAnnotations,
)
from mcp_types import Resource as MCPResource
from mcp_types import ResourceTemplate as MCPResourceTemplate
from pydantic import AnyUrl, BaseModel, ConfigDict, Field

from cte1_mcp import __version__
from cte1_mcp.arguments import CALL_PARAMETERS, ToolArguments, boolean, call_key, check_names
from cte1_mcp.errors import Cte1Error, InputError, InvalidParameter
from cte1_mcp.models import CallKey, Recording
from cte1_mcp.progress import Progress, ProgressCallback
from cte1_mcp.service import RecordingService

logger = logging.getLogger(__name__)

Transport = Literal["stdio", "http"]

INSTRUCTIONS = """\
Fetches call recordings and their metadata from the CT-e1/SaaS contact-centre platform.
- get_call_metadata: who called whom, when, how long, which agent/skill (tenantId, sessionId, recordId).
- get_call_audio: the recording itself (WAV/MP3), stored locally and offered as a resource.
A call is named by tenantId (digits, as a string), sessionId and recordId (a transferred call has
recordId 1, 2, ...). The platform allows one request every 5 seconds: the first fetch of a call may
wait; later calls for the same recording are served from the local store at once.
If your client cannot read resources, call get_call_audio with inline=true (small recordings are
returned inline as audio), or, over stdio, open the local file given as audio.path.
Errors start with a [code] and say what to do next."""

AUDIO_TEMPLATE = "cte1://calls/{tenantId}/{sessionId}/{recordId}/audio"
METADATA_TEMPLATE = "cte1://calls/{tenantId}/{sessionId}/{recordId}/metadata"
_CALL_URI = re.compile(
    r"^cte1://calls/(?P<tenantId>[^/]+)/(?P<sessionId>[^/]+)/(?P<recordId>[^/]+)/(?P<kind>audio|metadata)$"
)

_READ_ONLY = {
    "read_only_hint": True,
    "destructive_hint": False,
    "idempotent_hint": True,
    "open_world_hint": True,
}

TenantId = Annotated[
    str,
    Field(
        description='Tenant id: a string of digits (the tenant\'s representative number), "05053698341".',
        pattern=r"^[0-9]{1,32}$",
    ),
]
SessionId = Annotated[
    int, Field(description="Per-tenant call id (unchanged across transfers), from 1.", ge=1)
]
RecordId = Annotated[
    int, Field(description="Which recording of the call, from 1 (transfers add 2, 3, ...).", ge=1)
]
Inline = Annotated[
    bool,
    Field(
        description="Also return the audio inline as an audio content block when it is at most the "
        "server's inline limit (default 512 KiB). For clients that cannot read resources."
    ),
]


class CallView(BaseModel):
    """The platform's metadata, names and types as it sent them, plus fields derived for convenience."""

    model_config = ConfigDict(extra="allow")

    status: str = Field(description='"complete" for a finished call')
    tenantId: str
    sessionId: int
    recordId: int
    direction: int | None = Field(None, description="0 inbound, 1 outbound")
    ani: str | None = Field(None, description='Caller number; "anonymous" when withheld')
    dnis: str | None = Field(None, description="Called number")
    agentId: str | None = None
    agentName: str | None = None
    skillName: str | None = None
    groupId: str | None = None
    groupName: str | None = None
    connectTime: str | None = Field(None, description="ISO 8601 UTC")
    disconnectTime: str | None = Field(None, description="ISO 8601 UTC")
    directionLabel: Literal["inbound", "outbound"] | None = None
    durationSeconds: float | None = Field(None, description="disconnectTime - connectTime")
    availableUntil: str | None = Field(None, description="connectTime + 31 days: the platform's retention")
    audioUri: str = Field(description="Resource URI of the recording")

    @classmethod
    def of(cls, recording: Recording) -> CallView:
        metadata = recording.metadata
        until = metadata.available_until
        return cls.model_validate(
            {
                **metadata.platform_json(),
                "directionLabel": metadata.direction_label,
                "durationSeconds": metadata.duration_seconds,
                "availableUntil": until.isoformat(timespec="milliseconds").replace("+00:00", "Z")
                if until
                else None,
                "audioUri": recording.key.uri("audio"),
            }
        )


class AudioView(BaseModel):
    uri: str
    mimeType: str
    sizeBytes: int
    sha256: str
    encoding: str = Field(description="pcm, mulaw, alaw, mp3 or unknown")
    sampleRate: int | None
    channels: int | None
    durationSeconds: float | None
    path: str | None = Field(None, description="Absolute local file; only when the server runs over stdio")
    inlined: bool = Field(description="Whether an audio content block carries the recording")


class AudioResult(BaseModel):
    call: CallView
    audio: AudioView


class Cte1MCPServer(MCPServer):
    """``MCPServer`` plus what the SDK leaves to us: unknown-argument rejection and dynamic resources."""

    def __init__(
        self,
        service: RecordingService,
        transport: Transport,
        *,
        token_verifier: TokenVerifier | None = None,
        auth: AuthSettings | None = None,
    ) -> None:
        tools, self._arguments = _tools(service, transport)
        super().__init__(
            name="cte1-mcp",
            title="CT-e1 call recordings",
            instructions=INSTRUCTIONS,
            version=__version__,
            tools=tools,
            token_verifier=token_verifier,
            auth=auth,
            log_level=service.settings.log_level,
        )
        self.service = service
        self.transport = transport

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> Any:
        """Apply the documented rules first, so a bad call never reaches the SDK's validation or CT-e1."""
        spec = self._arguments.get(name)
        if spec is None:
            return await super().call_tool(name, arguments, context)
        try:
            check_names(spec, arguments)
            key = call_key(arguments)
            normalised: dict[str, Any] = {
                "tenantId": key.tenant_id,
                "sessionId": key.session_id,
                "recordId": key.record_id,
            }
            if "inline" in spec.optional and arguments.get("inline") is not None:
                normalised["inline"] = boolean("inline", arguments["inline"])
            return await super().call_tool(name, normalised, context)
        except Cte1Error as error:
            return _error_result(error)
        except Exception:
            logger.exception("tool %s failed", name)
            return _error_result(_unexpected())

    # --- resources -------------------------------------------------------------------------

    async def list_resources(self) -> list[MCPResource]:
        """Recordings already in the store: reading them costs no platform request."""
        listed: list[MCPResource] = []
        for recording in await self.service.list_recordings():
            key = recording.key
            listed.append(
                MCPResource(
                    uri=key.uri("audio"),
                    name=f"call-{key.tenant_id}-{key.session_id}-{key.record_id}-audio",
                    title=f"Recording of call {key}",
                    description=_call_summary(recording),
                    mime_type=recording.audio.format.mime_type,
                    size=recording.audio.size_bytes,
                )
            )
            listed.append(
                MCPResource(
                    uri=key.uri("metadata"),
                    name=f"call-{key.tenant_id}-{key.session_id}-{key.record_id}-metadata",
                    title=f"Metadata of call {key}",
                    mime_type="application/json",
                )
            )
        return listed

    async def list_resource_templates(self) -> list[MCPResourceTemplate]:
        return [
            MCPResourceTemplate(
                uri_template=AUDIO_TEMPLATE,
                name="call-audio",
                title="Call recording",
                description="The recording of a call as a blob with its real mimeType (fetched on demand).",
            ),
            MCPResourceTemplate(
                uri_template=METADATA_TEMPLATE,
                name="call-metadata",
                title="Call metadata",
                description="The call's metadata as JSON, as get_call_metadata returns it.",
                mime_type="application/json",
            ),
        ]

    async def read_resource(
        self, uri: AnyUrl | str, context: Context[Any, Any] | None = None
    ) -> Iterable[ReadResourceContents]:
        match = _CALL_URI.match(str(uri))
        if match is None:
            raise MCPError(
                code=INVALID_PARAMS,
                message=f"[invalid_parameter] Unknown resource {uri}.\n"
                f"Next: use {AUDIO_TEMPLATE} or {METADATA_TEMPLATE}.",
            )
        progress = _progress_reporter(context) if context is not None else None
        try:
            key = _key_from_uri(match)
            if match["kind"] == "metadata":
                recording = await self.service.get(key, progress)
                view = CallView.of(recording).model_dump_json()
                return [ReadResourceContents(content=view, mime_type="application/json")]
            limit = self.service.settings.resource_max_bytes
            recording, data = await self.service.read_audio(key, progress, max_bytes=limit)
        except Cte1Error as error:
            raise _protocol_error(error, uri) from None
        except Exception:
            logger.exception("reading %s failed", uri)
            raise _protocol_error(_unexpected(), uri) from None
        return [ReadResourceContents(content=data, mime_type=recording.audio.format.mime_type)]


def _tools(service: RecordingService, transport: Transport) -> tuple[list[Tool], dict[str, ToolArguments]]:
    """The two tools, their schemas (extra arguments refused) and the argument rules the guard applies."""
    settings = service.settings
    on_stdio = transport == "stdio"

    async def get_call_metadata(
        tenantId: TenantId, sessionId: SessionId, recordId: RecordId, ctx: Context
    ) -> Annotated[CallToolResult, CallView]:
        """Metadata of one call recording: status, direction, caller (ani), called number (dnis),
        agent, skill, number group, connect/disconnect times, duration and retention date.
        Fetching it also stores the audio, so a later get_call_audio costs no platform request."""
        try:
            recording = await service.get(CallKey(tenantId, sessionId, recordId), _progress_reporter(ctx))
        except Cte1Error as error:
            return _error_result(error)
        return CallToolResult(
            content=[TextContent(text=_call_summary(recording))],
            structured_content=CallView.of(recording).model_dump(mode="json"),
        )

    async def get_call_audio(
        tenantId: TenantId,
        sessionId: SessionId,
        recordId: RecordId,
        ctx: Context,
        inline: Inline = False,
    ) -> Annotated[CallToolResult, AudioResult]:
        """The recording of one call: where it is (resource URI, and the local path over stdio),
        its format, size, duration and sha256. With inline=true a recording up to the inline limit
        is also returned as an audio content block."""
        key = CallKey(tenantId, sessionId, recordId)
        try:
            recording = await service.get(key, _progress_reporter(ctx))
        except Cte1Error as error:
            return _error_result(error)
        audio = recording.audio
        inlined = inline and audio.size_bytes <= settings.inline_audio_max_bytes
        data = b""
        if inlined:
            try:
                recording, data = await service.read_audio(key, max_bytes=settings.inline_audio_max_bytes)
            except Cte1Error as error:
                return _error_result(error)
        view = AudioResult(
            call=CallView.of(recording),
            audio=AudioView(
                uri=key.uri("audio"),
                mimeType=audio.format.mime_type,
                sizeBytes=audio.size_bytes,
                sha256=audio.sha256,
                encoding=audio.format.encoding,
                sampleRate=audio.format.sample_rate,
                channels=audio.format.channels,
                durationSeconds=audio.format.duration_seconds,
                path=str(recording.path) if on_stdio else None,
                inlined=inlined,
            ),
        )
        content: list[ContentBlock] = [
            TextContent(text=_audio_text(recording, view.audio, inline, settings.inline_audio_max_bytes)),
            ResourceLink(
                uri=key.uri("audio"),
                name=f"call-{key.tenant_id}-{key.session_id}-{key.record_id}",
                title=f"Recording of call {key}",
                mime_type=audio.format.mime_type,
                size=audio.size_bytes,
            ),
        ]
        if inlined:
            content.append(
                AudioContent(data=base64.b64encode(data).decode("ascii"), mime_type=audio.format.mime_type)
            )
        structured = view.model_dump(mode="json")
        if not on_stdio:
            del structured["audio"]["path"]  # present only where the file is on the client's machine
        return CallToolResult(content=content, structured_content=structured)

    tools = [
        _tool(get_call_metadata, "Get call metadata"),
        _tool(get_call_audio, "Get call audio"),
    ]
    arguments = {
        "get_call_metadata": ToolArguments(CALL_PARAMETERS),
        "get_call_audio": ToolArguments(CALL_PARAMETERS, ("inline",)),
    }
    return tools, arguments


def _tool(fn: Any, title: str) -> Tool:
    tool = Tool.from_function(fn, title=title, annotations=ToolAnnotations(title=title, **_READ_ONLY))
    # The SDK's argument model ignores extra keys; the schema says we refuse them (the guard does).
    tool.parameters["additionalProperties"] = False
    return tool


def _error_result(error: Cte1Error) -> CallToolResult:
    return CallToolResult(content=[TextContent(text=error.render())], is_error=True)


def _protocol_error(error: Cte1Error, uri: AnyUrl | str) -> MCPError:
    code = INVALID_PARAMS if isinstance(error, InputError) else INTERNAL_ERROR
    return MCPError(code=code, message=error.render(), data={"code": error.code, "uri": str(uri)})


def _unexpected() -> Cte1Error:
    """What a client is told of a failure we did not foresee; the details stay in the server's log."""
    return Cte1Error("The server failed unexpectedly; the details are in its log.")


def _key_from_uri(match: re.Match[str]) -> CallKey:
    arguments = {name: match[name] for name in CALL_PARAMETERS}
    try:
        return call_key(arguments)
    except InvalidParameter as error:
        raise InvalidParameter(f"In the resource URI: {error.message}", next_step=error.next_step) from None


def _progress_reporter(ctx: Context[Any, Any]) -> ProgressCallback:
    """Progress notifications must increase strictly; waiting ticks count up, then bytes take over."""
    last = 0.0

    async def report(event: Progress) -> None:
        nonlocal last
        value = max(last + 1, event.done)
        last = value
        await ctx.report_progress(value, event.total if event.stage == "downloading" else None, event.message)

    return report


def _call_summary(recording: Recording) -> str:
    m = recording.metadata
    parts = [f"Call {recording.key}: {m.status}"]
    if m.direction_label:
        parts.append(f"{m.direction_label} from {m.ani or '?'} to {m.dnis or '?'}")
    if m.agentName or m.agentId:
        parts.append(f"agent {m.agentName or ''} ({m.agentId or '?'})".replace("  ", " "))
    if m.skillName:
        parts.append(f"skill {m.skillName}")
    if m.connectTime:
        parts.append(f"connected {m.connectTime}")
    if m.duration_seconds is not None:
        parts.append(f"{m.duration_seconds:.1f} s")
    until = m.available_until
    if until:
        parts.append(f"audio kept by the platform until {until.date().isoformat()}")
    return ", ".join(parts) + "."


def _audio_text(recording: Recording, audio: AudioView, asked_inline: bool, inline_limit: int) -> str:
    fmt = recording.audio.format
    described = ", ".join(
        part
        for part in (
            fmt.container.upper() if fmt.container != "unknown" else "unknown format",
            fmt.encoding if fmt.encoding != "unknown" else None,
            f"{fmt.sample_rate} Hz" if fmt.sample_rate else None,
            {1: "mono", 2: "two channels"}.get(fmt.channels or 0),
        )
        if part
    )
    length = f"{audio.durationSeconds:.1f} s" if audio.durationSeconds is not None else "unknown length"
    lines = [
        f"Recording of call {recording.key}: {length}, {described}, {audio.sizeBytes:,} bytes "
        f"(sha256 {audio.sha256[:16]}…).",
        f"Resource: {audio.uri} (read it with resources/read; mimeType {audio.mimeType}).",
    ]
    if audio.path:
        lines.append(f"Local file: {audio.path}")
    if audio.inlined:
        lines.append("The audio is also attached inline below.")
    elif asked_inline:
        lines.append(
            f"Not inlined: {audio.sizeBytes:,} bytes is over this server's inline limit "
            f"of {inline_limit:,} bytes. "
            "Read the resource above" + (" or open the local file" if audio.path else "") + " instead."
        )
    elif audio.sizeBytes <= inline_limit:
        lines.append("If your client cannot read resources, call again with inline=true.")
    elif not audio.path:
        lines.append(
            f"It is over the {inline_limit:,}-byte inline limit, so it comes only as the resource above."
        )
    return "\n".join(lines)
