"""``review_call``: one call for a person to review, as an MCP App view (timeline, transcript,
playback) where the host renders apps, and as text everywhere else (an extension degrades)."""

from __future__ import annotations

from functools import cache
from typing import Any

from mcp_types import CallToolResult, TextContent
from pydantic import BaseModel, Field, create_model

from cte1_mcp.app_view import REVIEW_URI, tool_meta
from cte1_mcp.cte1.answers import short
from cte1_mcp.errors import Cte1Error, TranscriptionUnavailable
from cte1_mcp.models import CallKey
from cte1_mcp.tools import call_analytics
from cte1_mcp.tools.arguments import CallArguments
from cte1_mcp.tools.base import RESULT_MAX_CHARS, Tool, ToolContext, result_chars

DESCRIPTION = """\
Opens one call for the user to review: in hosts that render MCP Apps (Claude, ChatGPT, VS Code,
Goose, ...) an interactive view with the call's details, its timeline (each party's talk,
overtalk, long silences), the transcript and playback (clips fetched on demand, by party, at
1x/1.5x/2x). Use it when the user wants to see or listen to a call, not to answer questions
yourself (get_call_analytics, get_call_transcript and get_call_clip are for that). Hosts without
apps get text: the get_call_analytics summary and the transcript's first lines."""

#: Sentences of the transcript shown in the text answer; the rest is a get_call_transcript away.
FIRST_LINES = 10
#: A sentence's line in the text answer is cut to this many characters (a pushed sentence may be
#: 100,000): the lines appear three times (text, summary, transcript.lines).
LINE_MAX_CHARS = 200
TRANSCRIPT_TOOL = "get_call_transcript"


class Arguments(CallArguments):
    """The three ids, nothing else."""


class TranscriptStart(BaseModel):
    available: bool = Field(description="Whether this server can transcribe the call")
    lines: list[str] = Field(
        description=f"The first {FIRST_LINES} sentences, one line each, shortened to {LINE_MAX_CHARS} characters"
    )
    sentenceCount: int | None = Field(None, description="Sentences in the whole transcript")
    note: str = Field(
        description="How to get the rest, or why there is no transcript (the server's error, with its next step)"
    )


@cache
def result_model() -> type[BaseModel]:
    """``get_call_analytics``' result (timeline picture left out) plus the transcript's start."""
    return create_model(
        "ReviewResult",
        __base__=call_analytics.result_model(),
        transcript=(TranscriptStart | None, Field(None, description="Null when the view shows it")),
        view=(str, Field(description="The ui:// resource of the review view")),
        clipMaxSeconds=(
            float,
            Field(
                description="Longest clip get_call_clip cuts here (CTE1_CLIP_MAX_SECONDS): the view's clips fit"
            ),
        ),
    )


async def run(arguments: Arguments, context: ToolContext) -> CallToolResult:
    ids = arguments.model_dump()
    analytics = await call_analytics.run(call_analytics.Arguments(**ids, timeline=False), context)
    base: dict[str, Any] = dict(analytics.structured_content or {})
    others = [block for block in analytics.content if not isinstance(block, TextContent)]

    def answer(shown: TranscriptStart | None) -> tuple[dict[str, Any], str]:
        lines = [base["summary"]]
        if shown is None:
            lines.append(
                f"The review view shows the call, its transcript and playback ({TRANSCRIPT_TOOL} gives you the words)."
            )
        else:
            lines.extend(["Transcript:", *shown.lines, shown.note] if shown.lines else [shown.note])
        summary = "\n".join(lines)
        structured = {
            **base,
            "summary": summary,
            "transcript": shown.model_dump() if shown is not None else None,
            "view": REVIEW_URI,
            "clipMaxSeconds": context.settings.clip_max_seconds,
        }
        return result_model().model_validate(structured).model_dump(mode="json"), summary

    if context.client_renders_apps:
        structured, text = answer(None)
    else:
        got = await _transcript_lines(arguments.key, context)
        shown = got if isinstance(got, TranscriptStart) else _first(*got, FIRST_LINES)
        structured, text = answer(shown)
        # Every tool result stays under RESULT_MAX_CHARS (docs/tools.md): fewer lines until it fits.
        while (
            not isinstance(got, TranscriptStart)
            and shown.lines
            and result_chars(structured, text) > RESULT_MAX_CHARS
        ):
            shown = _first(*got, len(shown.lines) - 1)
            structured, text = answer(shown)
    return CallToolResult(content=[TextContent(text=text), *others], structured_content=structured)


async def _transcript_lines(key: CallKey, context: ToolContext) -> tuple[list[str], int] | TranscriptStart:
    """The transcript's first lines (as get_call_transcript's text writes them) and its sentence
    count, or why there is none: the server's own error, which names the cause (no model
    configured, a configured one that does not load, ...) and the next step."""
    try:
        _, transcript = await context.transcription.transcript(key, context.progress)
    except TranscriptionUnavailable as error:
        return TranscriptStart(available=False, lines=[], note=error.render())
    except Cte1Error as error:
        return TranscriptStart(available=True, lines=[], note=f"The transcript failed: {error.render()}")
    return transcript.lines()[:FIRST_LINES], len(transcript.sentenceList)


def _first(lines: list[str], total: int, count: int) -> TranscriptStart:
    """The first ``count`` of ``lines``, each cut to LINE_MAX_CHARS, and a note on what is left out."""
    shown = [short(line, LINE_MAX_CHARS) for line in lines[:count]]
    rest = total - len(shown)
    note = (
        f"{rest} more sentence{'s' if rest > 1 else ''}: call {TRANSCRIPT_TOOL} with the same ids for the "
        "whole transcript."
        if rest > 0
        else "That is the whole transcript."
    )
    if any(len(line) > LINE_MAX_CHARS for line in lines[:count]):
        note += (
            f" Lines over {LINE_MAX_CHARS} characters are shortened (…); {TRANSCRIPT_TOOL} has them whole."
        )
    return TranscriptStart(available=True, lines=shown, sentenceCount=total, note=note)


TOOL = Tool(
    name="review_call",
    title="Review a call",
    description=DESCRIPTION,
    arguments=Arguments,
    result=result_model,
    run=run,
    meta=tool_meta(),
)
