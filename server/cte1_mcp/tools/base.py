"""What a tool module provides (``Tool``) and what a tool is given to run (``ToolContext``).

A tool is its argument model (input schema and validation at once), its result model (output
schema), a description, and an async handler from validated arguments to a ``CallToolResult``.
"""

from __future__ import annotations

import base64
import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic

from mcp_types import AudioContent, CallToolResult, ContentBlock, ResourceLink, TextContent, ToolAnnotations
from mcp_types import Tool as MCPTool
from pydantic import BaseModel

from cte1_mcp.errors import Cte1Error
from cte1_mcp.progress import ProgressCallback
from cte1_mcp.service import RecordingService
from cte1_mcp.settings import Settings
from cte1_mcp.tools.arguments import ArgumentsT

if TYPE_CHECKING:
    from cte1_mcp.analysis import AnalysisService
    from cte1_mcp.transcription import TranscriptionService
    from cte1_mcp.views import AudioView, ClipView

#: Every tool's result (structuredContent's JSON and the text block) stays under this many
#: characters, unless audio was asked for inline or the timeline picture attached (docs/tools.md).
RESULT_MAX_CHARS = 50_000


def result_chars(structured: dict[str, Any], text: str) -> int:
    """A result's characters as the client gets them: structuredContent's JSON and the text."""
    return len(json.dumps(structured, ensure_ascii=False, separators=(",", ":"))) + len(text)


@dataclass(frozen=True, slots=True)
class ToolContext:
    """What a handler may use: the use cases, the settings, the transport and the caller's progress."""

    service: RecordingService
    on_stdio: bool
    progress: ProgressCallback | None
    #: Built on first use: the analysis stack (numpy, the detectors) stays out of start-up.
    analysis_factory: Callable[[], AnalysisService]
    #: Built on first use, like the analysis (the engines are imported when a model is loaded).
    transcription_factory: Callable[[], TranscriptionService]
    #: Over HTTP, the server as this request reached it (``http://host:port/``): what a download
    #: URL is built on, so it names a host this client can reach. None over stdio.
    base_url: str | None = None
    #: The client negotiated MCP Apps (it renders a tool's ``ui://`` view): a tool with a view
    #: may then leave to the view what it would otherwise have to put in text.
    client_renders_apps: bool = False

    @property
    def analysis(self) -> AnalysisService:
        return self.analysis_factory()

    @property
    def transcription(self) -> TranscriptionService:
        return self.transcription_factory()

    @property
    def settings(self) -> Settings:
        return self.service.settings

    @property
    def mask_numbers(self) -> bool:
        return self.settings.mask_numbers


@dataclass(frozen=True, slots=True)
class Tool(Generic[ArgumentsT]):
    name: str
    title: str
    description: str
    arguments: type[ArgumentsT]
    #: The result model (output schema), as a function: a model built on heavy types (the
    #: analytics) is then imported at the first tools/list, not at start-up.
    result: Callable[[], type[BaseModel]]
    run: Callable[[ArgumentsT, ToolContext], Awaitable[CallToolResult]]
    #: The tool's ``_meta`` (e.g. MCP Apps' ``ui.resourceUri`` naming its view), None for most.
    meta: dict[str, Any] | None = None

    def definition(self) -> MCPTool:
        """What tools/list shows: the argument model's schema (all ids required, no extras) and
        the result model's; annotated read-only (nothing here changes the platform)."""
        return MCPTool(
            name=self.name,
            title=self.title,
            description=inspect.cleandoc(self.description),
            input_schema=self.arguments.model_json_schema(),
            output_schema=self.result().model_json_schema(mode="serialization"),
            annotations=ToolAnnotations(
                title=self.title,
                read_only_hint=True,
                destructive_hint=False,
                idempotent_hint=True,
                open_world_hint=True,
            ),
            meta=self.meta,
        )


def success(structured: dict[str, Any], *extra: Any) -> CallToolResult:
    """The text block is ``structured``'s summary (some clients show only one of the two); extra
    content blocks (a resource link, inline audio, a picture) follow it."""
    return CallToolResult(
        content=[TextContent(text=structured["summary"]), *extra], structured_content=structured
    )


def audio_success(
    structured: dict[str, Any],
    part: str,
    view: AudioView | ClipView,
    *,
    name: str,
    title: str,
    data: bytes | None,
) -> CallToolResult:
    """A result that delivers audio (``structured[part]`` is ``view``): a resource link to it, and
    the bytes as an audio block when inlined. ``path`` is left out unless the file is on the
    client's machine (stdio), and ``downloadUrl`` unless served over HTTP, where a null would only
    invite a guess."""
    for only_sometimes in ("path", "downloadUrl"):
        if getattr(view, only_sometimes, None) is None:
            structured[part].pop(only_sometimes, None)
    blocks: list[ContentBlock] = [
        ResourceLink(uri=view.uri, name=name, title=title, mime_type=view.mimeType, size=view.sizeBytes)
    ]
    if data is not None:
        blocks.append(AudioContent(data=base64.b64encode(data).decode("ascii"), mime_type=view.mimeType))
    return success(structured, *blocks)


def error_result(error: Cte1Error) -> CallToolResult:
    return CallToolResult(content=[TextContent(text=error.render())], is_error=True)
