"""The ``cte1://calls/...`` resources: templates, the stored recordings listed (a page at a time,
see ``resource_pages``), and reads.

A URI is matched whole (a trailing newline is not a URI) and its ids go through the same argument
models as the tools, so a resource read follows the same rules and gives the same codes. Every
JSON-RPC error carries ``data.code``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.shared.exceptions import MCPError
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS, ListResourcesResult
from mcp_types import Resource as MCPResource
from mcp_types import ResourceTemplate as MCPResourceTemplate

from cte1_mcp.errors import Cte1Error, InputError, InvalidParameter, UnknownParameter
from cte1_mcp.progress import ProgressCallback
from cte1_mcp.resource_pages import ResourcePages
from cte1_mcp.service import RecordingService, check_one_message
from cte1_mcp.tools.arguments import CallArguments, parse_arguments
from cte1_mcp.tools.call_clip import ClipArguments
from cte1_mcp.views import CallView, MetadataResult, excerpt, names_excerpt

if TYPE_CHECKING:
    from cte1_mcp.analysis import AnalysisService
    from cte1_mcp.transcription import TranscriptionService

logger = logging.getLogger(__name__)

CALL_URI_PREFIX = "cte1://calls/{tenantId}/{sessionId}/{recordId}"
AUDIO_TEMPLATE = f"{CALL_URI_PREFIX}/audio"
METADATA_TEMPLATE = f"{CALL_URI_PREFIX}/metadata"
TIMELINE_TEMPLATE = f"{CALL_URI_PREFIX}/timeline"
ANALYTICS_TEMPLATE = f"{CALL_URI_PREFIX}/analytics"
TRANSCRIPT_TEMPLATE = f"{CALL_URI_PREFIX}/transcript"
TRANSCRIPT_VTT_TEMPLATE = f"{CALL_URI_PREFIX}/transcript.vtt"
#: RFC 6570 form-style query: ``…/clip?start=60&end=120&channel=agent&format=mp3&rate=16000``.
CLIP_TEMPLATE = f"{CALL_URI_PREFIX}/clip{{?start,end,channel,format,rate}}"
#: The clip URI's query names → get_call_clip's argument names.
CLIP_QUERY = {
    "start": "startSeconds",
    "end": "endSeconds",
    "channel": "channel",
    "format": "format",
    "rate": "sampleRate",
}
#: The audio and clip templates' mimeType: their matches' formats vary (the platform's, or the
#: clip's ``format``), and a template's mimeType must hold for all of them.
GENERIC_MIME = "application/octet-stream"
_TEMPLATES_HINT = "cte1://calls/{tenantId}/{sessionId}/{recordId}/audio (or /metadata, /timeline, /analytics, /transcript, /transcript.vtt, /clip?start=&end=&channel=&format=&rate=)"
#: Longer URIs are refused before any parsing (none of ours comes near it).
MAX_URI_CHARS = 2048
#: A clip query of more pairs is refused before parsing; fewer are parsed, so that an unknown or
#: repeated name is named as such (the counting in names.count is quadratic, but over 32 at most).
MAX_QUERY_FIELDS = 32

_CALL_URI = re.compile(
    r"cte1://calls/(?P<tenantId>[^/?#]+)/(?P<sessionId>[^/?#]+)/(?P<recordId>[^/?#]+)"
    r"/(?P<kind>[a-z]+(?:\.vtt)?)(?:\?(?P<query>[^#]*))?"
)

Reader = Callable[
    ["CallResources", CallArguments, str | None, ProgressCallback | None], Awaitable[ReadResourceContents]
]


@dataclass(frozen=True, slots=True)
class CallResources:
    """Reads and lists the call resources through the use cases; renders failures as MCP errors."""

    service: RecordingService
    #: Built on first use (see Cte1MCPServer.analysis).
    analysis: Callable[[], AnalysisService]
    #: Built on first use, like the analysis.
    transcription: Callable[[], TranscriptionService]
    #: Listed on the first page besides the stored recordings (demo mode: the sample calls).
    samples: tuple[MCPResource, ...] = ()
    pages: ResourcePages = field(init=False)

    def __post_init__(self) -> None:
        listing = ResourcePages(self.service.list_recordings, self.service.settings.mask_numbers)
        object.__setattr__(self, "pages", listing)  # frozen: set once, here

    @property
    def templates(self) -> list[MCPResourceTemplate]:
        return [
            MCPResourceTemplate(
                uri_template=AUDIO_TEMPLATE,
                name="call-audio",
                title="Call recording",
                description="The recording of a call as a blob (fetched on demand). Its format is the "
                "platform's (WAV or MP3): each read and listed resource carries its real mimeType "
                "(audio/wav, audio/mpeg).",
                # The one type true of every match: "audio/*" is a range, not a media type.
                mime_type=GENERIC_MIME,
            ),
            MCPResourceTemplate(
                uri_template=METADATA_TEMPLATE,
                name="call-metadata",
                title="Call metadata",
                description="The call's metadata as JSON, as get_call_metadata returns it (no field shortened).",
                mime_type="application/json",
            ),
            MCPResourceTemplate(
                uri_template=TIMELINE_TEMPLATE,
                name="call-timeline",
                title="Call timeline picture",
                description="PNG: one lane per party with its talk, long silences and overtalk marked, "
                "time as m:ss, the key figures in a caption (analysed on demand, then stored).",
                mime_type="image/png",
            ),
            MCPResourceTemplate(
                uri_template=ANALYTICS_TEMPLATE,
                name="call-analytics",
                title="Call analytics",
                description="The whole analysis of get_call_analytics as JSON, every segment.",
                mime_type="application/json",
            ),
            MCPResourceTemplate(
                uri_template=TRANSCRIPT_TEMPLATE,
                name="call-transcript",
                title="Call transcript",
                description="The whole transcript of get_call_transcript as JSON (CT-e1's sentenceList with "
                "offsets, every sentence; transcribed on demand, then stored).",
                mime_type="application/json",
            ),
            MCPResourceTemplate(
                uri_template=TRANSCRIPT_VTT_TEMPLATE,
                name="call-transcript-vtt",
                title="Call transcript (WebVTT)",
                description="The transcript as WebVTT subtitles, one cue a sentence with a <v speaker> voice "
                "span, for players and subtitle tools.",
                mime_type="text/vtt",
            ),
            MCPResourceTemplate(
                uri_template=CLIP_TEMPLATE,
                name="call-clip",
                title="Call clip",
                description="A clip as get_call_clip cuts it: start and end in seconds (defaults: 0 and "
                "the end), channel mix|0|1|<role>, format wav|mp3|flac|ogg, rate 8000|16000. Each read "
                "carries its format's mimeType (audio/wav by default, audio/mpeg, audio/flac, audio/ogg).",
                mime_type=GENERIC_MIME,
            ),
        ]

    async def page(self, cursor: str | None) -> ListResourcesResult:
        """One page of the recordings already in the store (reading them costs no platform request)."""
        try:
            page = await self.pages.page(cursor)
        except Cte1Error as error:
            raise protocol_error(error) from None
        resources = page.resources
        if cursor is None and self.samples:
            # On the first page only; a stored sample is listed by the store (with its audio). A demo
            # store is a few recordings: those past the first page (500) would be named twice.
            listed = {str(resource.uri) for resource in resources}
            resources = [sample for sample in self.samples if str(sample.uri) not in listed] + resources
        return ListResourcesResult(resources=resources, next_cursor=page.next_cursor)

    async def read(self, uri: str, progress: ProgressCallback | None) -> list[ReadResourceContents]:
        try:
            arguments, reader, query = _route(uri)
            return [await reader(self, arguments, query, progress)]
        except Cte1Error as error:
            raise protocol_error(error, uri) from None
        except Exception:
            logger.exception("reading the resource %s failed", excerpt(uri, 200))
            raise protocol_error(unexpected(), uri) from None

    async def _metadata(
        self, arguments: CallArguments, query: str | None, progress: ProgressCallback | None
    ) -> ReadResourceContents:
        _no_query(query, "metadata")
        recording = await self.service.get(arguments.key, progress)
        view = CallView.of(recording, mask_numbers=self.service.settings.mask_numbers, bounded=False)
        return ReadResourceContents(
            content=MetadataResult.of_view(view).model_dump_json(), mime_type="application/json"
        )

    async def _audio(
        self, arguments: CallArguments, query: str | None, progress: ProgressCallback | None
    ) -> ReadResourceContents:
        _no_query(query, "audio")
        limit = self.service.settings.resource_max_bytes
        recording, data = await self.service.read_audio(arguments.key, progress, max_bytes=limit)
        return ReadResourceContents(content=data, mime_type=recording.audio.format.mime_type)

    async def _timeline(
        self, arguments: CallArguments, query: str | None, progress: ProgressCallback | None
    ) -> ReadResourceContents:
        _no_query(query, "timeline")
        _, png = await self.analysis().timeline_png(arguments.key, progress)
        check_one_message("The timeline picture", len(png), self.service.settings.resource_max_bytes)
        return ReadResourceContents(content=png, mime_type="image/png")

    async def _analytics(
        self, arguments: CallArguments, query: str | None, progress: ProgressCallback | None
    ) -> ReadResourceContents:
        _no_query(query, "analytics")
        _, analytics = await self.analysis().analytics(arguments.key, progress)
        return ReadResourceContents(content=analytics.model_dump_json(), mime_type="application/json")

    async def _transcript(
        self, arguments: CallArguments, query: str | None, progress: ProgressCallback | None
    ) -> ReadResourceContents:
        _no_query(query, "transcript")
        _, transcript = await self.transcription().transcript(arguments.key, progress)
        return ReadResourceContents(content=transcript.model_dump_json(), mime_type="application/json")

    async def _transcript_vtt(
        self, arguments: CallArguments, query: str | None, progress: ProgressCallback | None
    ) -> ReadResourceContents:
        _no_query(query, "transcript.vtt")
        _, transcript = await self.transcription().transcript(arguments.key, progress)
        return ReadResourceContents(content=transcript.vtt(), mime_type="text/vtt")

    async def _clip(
        self, arguments: CallArguments, query: str | None, progress: ProgressCallback | None
    ) -> ReadResourceContents:
        clip_arguments = parse_arguments(
            ClipArguments, {**arguments.model_dump(), **_clip_query(query)}, where="In the clip URI: "
        )
        request = clip_arguments.clip_request(self.service.settings.channel_roles)
        limit = self.service.settings.resource_max_bytes
        _, clip = await self.analysis().clip(arguments.key, request, progress, data_max_bytes=limit)
        check_one_message("The clip", clip.size_bytes, limit, "get_call_clip's clip.path")
        assert clip.data is not None  # read because it fits the limit
        return ReadResourceContents(content=clip.data, mime_type=clip.mime_type)


_READERS: dict[str, Reader] = {
    "metadata": CallResources._metadata,
    "audio": CallResources._audio,
    "timeline": CallResources._timeline,
    "analytics": CallResources._analytics,
    "clip": CallResources._clip,
    "transcript": CallResources._transcript,
    "transcript.vtt": CallResources._transcript_vtt,
}


def _clip_query(query: str | None) -> dict[str, str]:
    """The clip URI's query as get_call_clip arguments; an unknown or repeated name is refused.

    Parsing is bounded (MAX_QUERY_FIELDS) so a hostile query costs little, but generously: a
    query one pair too long is told what is wrong with it (an unknown or repeated name)."""
    if not query:
        return {}
    fields = query.count("&") + 1
    if fields > MAX_QUERY_FIELDS:
        raise InvalidParameter(
            f"The clip URI's query has {fields:,} name=value pairs; it takes at most one each of "
            f"{', '.join(CLIP_QUERY)}.",
            next_step=f"Use {CLIP_TEMPLATE}.",
        )
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True, max_num_fields=MAX_QUERY_FIELDS)
    except ValueError:
        raise InvalidParameter(
            f"The clip URI's query {excerpt(query)} is not name=value pairs joined by &.",
            next_step=f"Use {CLIP_TEMPLATE}.",
        ) from None
    names = [name for name, _ in pairs]
    unknown = sorted({name for name in names if name not in CLIP_QUERY})
    if unknown:
        raise UnknownParameter(
            f"In the clip URI: unknown query name(s): {names_excerpt(unknown)}. "
            f"It takes only: {', '.join(CLIP_QUERY)}.",
            next_step=f"Use {CLIP_TEMPLATE}.",
        )
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise InvalidParameter(
            f"In the clip URI: {', '.join(repeated)} given more than once.", next_step=f"Use {CLIP_TEMPLATE}."
        )
    return {CLIP_QUERY[name]: value for name, value in pairs}


def parse_uri(uri: str) -> tuple[CallArguments, str, str | None]:
    """The ids (validated like tool arguments), the kind and the raw query of a call URI."""
    if len(uri) > MAX_URI_CHARS:
        raise InvalidParameter(
            f"The resource URI is {len(uri):,} characters long; none of this server's is over {MAX_URI_CHARS:,}.",
            next_step=f"Use {_TEMPLATES_HINT}.",
        )
    match = _CALL_URI.fullmatch(uri)
    if match is None:
        raise _unknown_resource(uri)
    arguments = parse_arguments(
        CallArguments,
        {name: match[name] for name in ("tenantId", "sessionId", "recordId")},
        where="In the resource URI: ",
    )
    return arguments, match["kind"], match["query"]


def _route(uri: str) -> tuple[CallArguments, Reader, str | None]:
    arguments, kind, query = parse_uri(uri)
    reader = _READERS.get(kind)
    if reader is None:
        raise _unknown_resource(uri)
    return arguments, reader, query


def protocol_error(error: Cte1Error, uri: str | None = None) -> MCPError:
    """-32602 for what the client got wrong, -32603 otherwise; always ``data.code``."""
    code = INVALID_PARAMS if isinstance(error, InputError) else INTERNAL_ERROR
    data: dict[str, Any] = {"code": error.code}
    if uri is not None:
        data["uri"] = uri[:200]
    return MCPError(code=code, message=error.render(), data=data)


def unexpected() -> Cte1Error:
    """What a client is told of a failure nobody foresaw; the details stay in the server's log."""
    return Cte1Error("The server failed unexpectedly; the details are in its log.")


def _unknown_resource(uri: str) -> InvalidParameter:
    return InvalidParameter(
        f"Unknown resource {excerpt(uri, 200)}.",
        next_step=f"Use {_TEMPLATES_HINT}.",
    )


def _no_query(query: str | None, kind: str) -> None:
    if query is not None:
        raise InvalidParameter(
            f"The {kind} resource takes no query ({excerpt(query)}).",
            next_step=f"Use {CALL_URI_PREFIX}/{kind}.",
        )
