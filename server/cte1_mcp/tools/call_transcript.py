"""``get_call_transcript``: what each party said, with times, transcribed on this server."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from mcp_types import CallToolResult, ResourceLink, TextContent
from pydantic import BaseModel, Field, create_model

from cte1_mcp.tools.arguments import CallArguments
from cte1_mcp.tools.base import RESULT_MAX_CHARS, Tool, ToolContext, result_chars
from cte1_mcp.views import CallView

if TYPE_CHECKING:
    from cte1_mcp.transcribe.transcript import Transcript

DESCRIPTION = """\
Transcript of one call: each party's sentences with their times, recognised on this server (no
audio leaves it) or, where the platform pushed its own speech-recognition results, CT-e1's. The
shape is CT-e1's sentenceList ({sequence, speakerId, startTime, endTime, text}) plus speaker,
channel and startOffsetMs/endOffsetMs from the start of the recording. speakerId follows CT-e1
(customer 1, agent 2) when CTE1_CHANNEL_ROLES names customer and agent, else channel + 1; a mono
(or dual-mono) recording is one party, "mixed" (no diarization). Only each party's own speech is transcribed, as
get_call_analytics finds it: no text from the other party's echo, from silence, holds or music; a
pause of a second or more ends a sentence. startTime/endTime are UTC (connectTime + offset) when the
call's connectTime is known. The recording is fetched like get_call_audio does; the transcript is
computed once and stored beside it, so asking again costs nothing. Answers
[transcription_unavailable] (before any platform request) when no speech-recognition model is
configured. Long transcripts are shortened here (shortened: true); the transcript resource has
every sentence."""


Arguments = CallArguments


@cache
def result_model() -> type[BaseModel]:
    """Built on first use, like the analytics result: the transcript model is not needed at start-up."""
    from cte1_mcp.transcribe.transcript import Transcript

    return create_model(
        "TranscriptResult",
        summary=(
            str,
            Field(
                description="One paragraph: sentences per party, length, engine and model, where the rest is"
            ),
        ),
        call=(CallView, ...),
        transcript=(Transcript, ...),
        transcriptUri=(
            str,
            Field(description="Resource with the whole transcript as JSON (…/transcript.vtt: WebVTT)"),
        ),
    )


def summarise(key_text: str, whole: Transcript, shown: Transcript, uri: str) -> str:
    """The paragraph for clients that show only text (the sentences follow it, one line each)."""
    engine = whole.engine
    made_by = (
        "CT-e1's own speech recognition (pushed by the platform)"
        if engine.name == "cte1"
        else f"{engine.name} with the model {engine.model}"
        + (f" ({engine.computeType} on {engine.device})" if engine.computeType and engine.device else "")
        + ", on this server"
    )
    counts = [
        f"{speaker.speaker} {_sentences(sum(1 for s in whole.sentenceList if s.speakerId == speaker.speakerId))}"
        for speaker in whole.speakers
    ]
    minutes, seconds = divmod(round(whole.durationSeconds), 60)
    parts = [
        f"Call {key_text}: transcript of {minutes}:{seconds:02d} ({whole.language}) by {made_by}: "
        + ", ".join(counts)
        + "."
    ]
    if not whole.sentenceList:
        parts.append("Nobody's speech was recognised.")
    if shown.shortened:
        parts.append(
            f"Shortened: this result shows the first {len(shown.sentenceList)} of {len(whole.sentenceList)} "
            f"sentences; read {uri} for every sentence."
        )
    else:
        parts.append(f"Whole transcript: {uri} (JSON) and {uri}.vtt (WebVTT).")
    return " ".join(parts)


def _sentences(count: int) -> str:
    return "no sentences" if count == 0 else "1 sentence" if count == 1 else f"{count} sentences"


async def run(arguments: Arguments, context: ToolContext) -> CallToolResult:
    key = arguments.key
    recording, transcript = await context.transcription.transcript(key, context.progress)
    uri = key.uri("transcript")
    call = CallView.of(recording, mask_numbers=context.mask_numbers)

    def answer(shown: Transcript) -> tuple[dict[str, Any], str]:
        summary = summarise(str(key), transcript, shown, uri)
        result = result_model().model_validate(
            {"summary": summary, "call": call, "transcript": shown, "transcriptUri": uri}
        )
        # Claude Code shows the model only structuredContent, Claude Desktop only the text: both
        # carry the words (the text as one line a sentence, after the summary).
        text = "\n".join([summary, "", *shown.lines()]) if shown.sentenceList else summary
        return result.model_dump(mode="json"), text

    # as many sentences as keep the whole result under the bound; the resource has them all
    structured, text = answer(
        transcript.shortened_to(RESULT_MAX_CHARS, lambda shown: result_chars(*answer(shown)))
    )
    return CallToolResult(
        content=[
            TextContent(text=text),
            ResourceLink(
                uri=uri,
                name=f"{key.name}-transcript",
                title=f"Transcript of call {key}",
                mime_type="application/json",
            ),
        ],
        structured_content=structured,
    )


TOOL = Tool(
    name="get_call_transcript",
    title="Get call transcript",
    description=DESCRIPTION,
    arguments=Arguments,
    result=result_model,
    run=run,
)
