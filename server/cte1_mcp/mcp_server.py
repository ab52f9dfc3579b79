"""The MCP server: the tools of ``cte1_mcp.tools`` and the resources of ``cte1_mcp.resources``.

This module only routes: arguments are validated by each tool's model, results are built by the
tools and views, and every failure becomes a ``[code]`` result (tools) or a JSON-RPC error with
``data.code`` (resources) here, in one place each.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

from mcp.server.apps import client_supports_apps
from mcp.server.auth.provider import TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import Context, MCPServer
from mcp_types import CallToolResult, InputRequiredResult, ListResourcesResult, PaginatedRequestParams
from mcp_types import Resource as MCPResource
from mcp_types import ResourceTemplate as MCPResourceTemplate
from mcp_types import Tool as MCPTool
from pydantic import AnyUrl
from starlette.applications import Starlette

from cte1_mcp import __version__
from cte1_mcp.app_view import REVIEW_URI, apps_extension
from cte1_mcp.errors import Cte1Error, UnknownTool
from cte1_mcp.params_check import ParamsCheck, refused_arguments
from cte1_mcp.progress import Progress, ProgressCallback
from cte1_mcp.resources import CallResources, unexpected
from cte1_mcp.service import RecordingService
from cte1_mcp.tools import discover
from cte1_mcp.tools.arguments import parse_arguments
from cte1_mcp.tools.base import Tool, ToolContext, error_result
from cte1_mcp.views import excerpt

if TYPE_CHECKING:
    from cte1_mcp.analysis import AnalysisService
    from cte1_mcp.transcription import TranscriptionService

logger = logging.getLogger(__name__)

Transport = Literal["stdio", "http"]

INSTRUCTIONS = """\
Fetches call recordings and their metadata from the CT-e1/SaaS contact-centre platform.
- get_call_metadata: who called whom, when, how long, which agent/skill (tenantId, sessionId, recordId).
- get_call_audio: the recording itself (WAV/MP3), stored locally and offered as a resource.
- get_call_analytics: who talked how much, silences and holds, overtalk and interruptions, measured
  from the audio on this server, with a timeline picture: for assistants that cannot listen.
- get_call_clip: a stretch of one party (or both) as WAV/MP3/FLAC/OGG, for assistants that take audio.
- review_call: for the person you help: an interactive view of the call (timeline, transcript,
  playback) in hosts that render MCP Apps; elsewhere the analytics summary and the transcript's start.
A call is named by tenantId (digits, as a string), sessionId and recordId (a transferred call has
recordId 1, 2, ...). The platform allows one request every 5 seconds: the first fetch of a call may
wait; later calls for the same recording are served from the local store at once.
If your client cannot read resources, call get_call_audio with inline=true (small recordings are
returned inline as audio), or, over stdio, open the local file given as audio.path, or, over
HTTP, GET audio.downloadUrl with the same bearer token (any size; Range supported).
Every result's structuredContent has a summary sentence. Errors start with a [code] and say what
to do next."""


class Cte1MCPServer(MCPServer):
    """``MCPServer`` serving our own tool registry and dynamic resources, without prompts."""

    def __init__(
        self,
        service: RecordingService,
        transport: Transport,
        *,
        token_verifier: TokenVerifier | None = None,
        auth: AuthSettings | None = None,
        demo: bool = False,
    ) -> None:
        """``demo``: served against the embedded simulator (``serve --demo``): the instructions name
        its sample calls and resources/list offers them, so an assistant needs no README."""
        instructions = INSTRUCTIONS
        samples: tuple[MCPResource, ...] = ()
        if demo:  # imported only here: the simulator's catalogue is no concern of a real server
            from cte1_mcp.demo_mode import demo_instructions, demo_resources

            instructions += "\n\n" + demo_instructions()
            samples = demo_resources()
        super().__init__(
            name="cte1-mcp",
            title="CT-e1 call recordings",
            instructions=instructions,
            version=__version__,
            token_verifier=token_verifier,
            auth=auth,
            log_level=service.settings.log_level,
            extensions=[apps_extension()],
        )
        self.service = service
        self.transport = transport
        self.tools = discover()
        self.resources = CallResources(service, self.analysis, self.transcription, samples)
        self._analysis: AnalysisService | None = None
        self._transcription: TranscriptionService | None = None
        self._drop_prompts()
        self._paginate_resources()
        # Before the SDK's own params validation: its failures get a [code] and a next step.
        self._lowlevel_server.middleware.append(ParamsCheck(self._tool))

    def analysis(self) -> AnalysisService:
        """The analytics and clip use cases, imported and built on first use (start-up stays fast)."""
        if self._analysis is None:
            from cte1_mcp.analysis import AnalysisService

            self._analysis = AnalysisService(self.service)
        return self._analysis

    def transcription(self) -> TranscriptionService:
        """The transcript use case, built on first use like the analysis."""
        if self._transcription is None:
            from cte1_mcp.transcription import TranscriptionService

            self._transcription = TranscriptionService(self.analysis())
        return self._transcription

    def _drop_prompts(self) -> None:
        """MCPServer always registers prompts/list and prompts/get, so initialize would advertise a
        ``prompts`` capability this server does not have. The SDK offers no public way to leave
        them out (its own Client reaches ``_lowlevel_server`` the same way)."""
        handlers: dict[str, Any] = self._lowlevel_server._request_handlers
        for method in ("prompts/list", "prompts/get"):
            handlers.pop(method, None)

    # --- tools -------------------------------------------------------------------------------

    async def run_stdio_async(self) -> None:
        """The SDK's stdio transport with every client line checked first: a malformed one gets
        its JSON-RPC error instead of silence (see ``stdio_edge``)."""
        from cte1_mcp.stdio_edge import serve

        lowlevel = self._lowlevel_server
        await serve(lambda read, write: lowlevel.run(read, write, lowlevel.create_initialization_options()))

    def streamable_http_app(self, **options: Any) -> Starlette:
        """The SDK's Streamable HTTP app with every POSTed body checked first, as stdio lines are:
        a malformed one gets its JSON-RPC error instead of a silent 202 (see ``http_edge``)."""
        from cte1_mcp.http_edge import check_posted_messages

        app = super().streamable_http_app(**options)
        check_posted_messages(self.session_manager)
        return app

    async def list_tools(self) -> list[MCPTool]:
        return [tool.definition() for tool in self.tools.values()]

    async def call_tool(
        self, name: str, arguments: dict[str, Any], context: Context[Any, Any] | None = None
    ) -> CallToolResult:
        """Arguments are validated by the tool's own model before anything else runs."""
        try:
            tool = self._tool(name)
            parsed = _parsed(tool, arguments)
            progress = _progress_reporter(context) if context is not None else None
            tool_context = ToolContext(
                self.service,
                self.transport == "stdio",
                progress,
                self.analysis,
                self.transcription,
                base_url=_base_url(context) if self.transport == "http" and context is not None else None,
                client_renders_apps=context is not None and client_supports_apps(context),
            )
            return await tool.run(parsed, tool_context)
        except Cte1Error as error:
            logger.info("tool %s: %s", excerpt(name), error.code)
            return error_result(error)
        except Exception:
            logger.exception("tool %s failed", excerpt(name))
            return error_result(unexpected())

    def _tool(self, name: str) -> Tool[Any]:
        tool = self.tools.get(name)
        if tool is None:
            raise UnknownTool(
                f"There is no tool {excerpt(name)}. This server's tools: {', '.join(self.tools)}."
            )
        return tool

    # --- resources ---------------------------------------------------------------------------

    def _paginate_resources(self) -> None:
        """MCPServer answers resources/list from ``list_resources()``, a whole list with no cursor.
        The lowlevel server's public ``add_request_handler`` replaces that with our paged one."""
        self._lowlevel_server.add_request_handler("resources/list", PaginatedRequestParams, self._list_page)

    async def _list_page(
        self, ctx: ServerRequestContext[Any], params: PaginatedRequestParams
    ) -> ListResourcesResult:
        return await self.resources.page(params.cursor)

    async def list_resource_templates(self) -> list[MCPResourceTemplate]:
        return self.resources.templates

    async def read_resource(
        self, uri: AnyUrl | str, context: Context[Any, Any] | None = None
    ) -> Iterable[ReadResourceContents]:
        if str(uri) == REVIEW_URI:  # the view, registered by the Apps extension (app_view)
            contents = await super().read_resource(uri, context)
            if isinstance(contents, InputRequiredResult):  # a static resource never asks for input
                raise unexpected()
            return contents
        progress = _progress_reporter(context) if context is not None else None
        return await self.resources.read(str(uri), progress)


def _parsed(tool: Tool[Any], arguments: dict[str, Any]) -> Any:
    """The tool's arguments validated, or the fault ``params_check`` found in them before the SDK
    saw them (no JSON object: the call came without them)."""
    refused = refused_arguments()
    if refused is not None:
        raise refused
    return parse_arguments(tool.arguments, arguments)


def _base_url(ctx: Context[Any, Any]) -> str | None:
    """The server's URL as the client asked for it (its Host header, already checked against
    CTE1_HTTP_ALLOWED_HOSTS), so a URL built on it reaches this server from that client."""
    try:
        request = ctx.request_context.request
    except (ValueError, AttributeError):
        return None
    base_url = getattr(request, "base_url", None)
    return str(base_url) if base_url is not None else None


def _progress_reporter(ctx: Context[Any, Any]) -> ProgressCallback:
    """Progress notifications must increase strictly; waiting ticks count up, then bytes, then
    seconds of audio analysed. An event's ``total`` (bytes, or seconds of audio, as its message
    says) is sent only while its own ``done`` is the value sent: when analysis follows a download
    in the same request, its seconds cannot go on from the bytes, so it counts up without a total."""
    last: float | None = None

    async def report(event: Progress) -> None:
        nonlocal last
        value = event.done if last is None or event.done > last else last + 1
        last = value
        total = event.total if value == event.done else None
        await ctx.report_progress(value, total, event.message)

    return report
