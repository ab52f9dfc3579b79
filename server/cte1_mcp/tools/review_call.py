"""``review_call``: one call for a person to review, as an MCP App view (timeline, transcript,
playback) where the host renders apps, and as text everywhere else (an extension degrades)."""

from __future__ import annotations

from functools import cache
from typing import Any

from mcp_types import CallToolResult, ContentBlock, TextContent
from pydantic import BaseModel, Field, create_model

from cte1_mcp.app_view import REVIEW_URI, tool_meta
from cte1_mcp.errors import Cte1Error, TranscriptionUnavailable
from cte1_mcp.models import CallKey
from cte1_mcp.tools import call_analytics
from cte1_mcp.tools.arguments import CallArguments
from cte1_mcp.tools.base import Tool, ToolContext

DESCRIPTION = """\
Opens one call for the user to review: in hosts that render MCP Apps (Claude, ChatGPT, VS Code,
Goose, ...) an interactive view with the call's details, its timeline (each party's talk,
overtalk, long silences), the transcript and playback (clips fetched on demand, by party, at
1x/1.5x/2x). Use it when the user wants to see or listen to a call, not to answer questions
yourself (get_call_analytics, get_call_transcript and get_call_clip are for that). Hosts without
apps get text: the get_call_analytics summary and the transcript's first lines."""

#: Sentences of the transcript shown in the text answer; the rest is a get_call_transcript away.
FIRST_LINES = 10
TRANSCRIPT_TOOL = "get_call_transcript"
#: Said (in the text and the view) when this server has no transcript to give.
HOW_TO_TRANSCRIBE = (
    "No transcript: this server has no speech-recognition model configured. To enable transcripts, "
    "set CTE1_ASR_MODEL (see `cte1-mcp models`) and restart the server."
)


class Arguments(CallArguments):
    """The three ids, nothing else."""


class TranscriptStart(BaseModel):
    available: bool = Field(description="Whether this server can transcribe the call")
    lines: list[str] = Field(description=f"The first {FIRST_LINES} sentences, one line each")
    sentenceCount: int | None = Field(None, description="Sentences in the whole transcript")
    note: str = Field(description="How to get the rest, or how to enable transcripts")


@cache
def result_model() -> type[BaseModel]:
    """``get_call_analytics``' result (timeline picture left out) plus the transcript's start."""
    return create_model(
        "ReviewResult",
        __base__=call_analytics.result_model(),
        transcript=(TranscriptStart | None, Field(None, description="Null when the view shows it")),
        view=(str, Field(description="The ui:// resource of the review view")),
    )


async def run(arguments: Arguments, context: ToolContext) -> CallToolResult:
    ids = arguments.model_dump()
    analytics = await call_analytics.run(call_analytics.Arguments(**ids, timeline=False), context)
    structured: dict[str, Any] = dict(analytics.structured_content or {})
    lines = [structured["summary"]]
    transcript: TranscriptStart | None = None
    if context.client_renders_apps:
        lines.append(
            f"The review view shows the call, its transcript and playback ({TRANSCRIPT_TOOL} gives you the words)."
        )
    else:
        transcript = await _transcript_start(arguments.key, context)
        lines.extend(
            ["Transcript:", *transcript.lines, transcript.note] if transcript.lines else [transcript.note]
        )
    structured["summary"] = "\n".join(lines)
    structured["transcript"] = transcript.model_dump() if transcript is not None else None
    structured["view"] = REVIEW_URI
    result = result_model().model_validate(structured)
    blocks: list[ContentBlock] = [TextContent(text=structured["summary"])]
    blocks += [block for block in analytics.content if not isinstance(block, TextContent)]
    return CallToolResult(content=blocks, structured_content=result.model_dump(mode="json"))


async def _transcript_start(key: CallKey, context: ToolContext) -> TranscriptStart:
    """The transcript's first lines (as get_call_transcript's text writes them), or how to enable
    transcripts when this server has no model ([transcription_unavailable])."""
    try:
        _, transcript = await context.transcription.transcript(key, context.progress)
    except TranscriptionUnavailable:
        return TranscriptStart(available=False, lines=[], note=HOW_TO_TRANSCRIBE)
    except Cte1Error as error:
        return TranscriptStart(available=True, lines=[], note=f"The transcript failed: {error.render()}")
    lines = transcript.lines()
    shown = lines[:FIRST_LINES]
    rest = len(lines) - len(shown)
    note = (
        f"{rest} more sentence{'s' if rest > 1 else ''}: call {TRANSCRIPT_TOOL} with the same ids for the "
        "whole transcript."
        if rest > 0
        else "That is the whole transcript."
    )
    return TranscriptStart(available=True, lines=shown, sentenceCount=len(lines), note=note)


TOOL = Tool(
    name="review_call",
    title="Review a call",
    description=DESCRIPTION,
    arguments=Arguments,
    result=result_model,
    run=run,
    meta=tool_meta(),
)
