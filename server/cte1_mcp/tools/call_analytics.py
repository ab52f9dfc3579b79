"""``get_call_analytics``: the shape of a conversation from its audio, computed locally."""

from __future__ import annotations

import base64
from functools import cache
from typing import TYPE_CHECKING

from mcp_types import CallToolResult, ContentBlock, ImageContent, ResourceLink
from pydantic import BaseModel, Field, StrictBool, create_model

from cte1_mcp.tools.arguments import CallArguments
from cte1_mcp.tools.base import Tool, ToolContext, success
from cte1_mcp.views import CallView

if TYPE_CHECKING:
    from cte1_mcp.audio.analytics import CallAnalytics

DESCRIPTION = """\
Conversation analytics of one call, measured from its audio on this server (no audio leaves it):
for each party (channel 0 and 1, labelled by CTE1_CHANNEL_ROLES, e.g. customer/agent, else
"channel 0"/"channel 1") talk time and percentage, turns, longest monologue, interruptions,
speech level and clipping; non-talk time, the longest silence and long silences; overtalk time,
percentage and count; the talk segments; and (timeline=true, the default) a timeline picture.
Definitions: talk = speech on that party's channel, pauses under 0.5 s inside it included; a turn
= a maximal run of a party's talk; longestMonologue = its longest turn. Non-talk = neither party
talking (holds included); longestSilence = its longest interval; longSilences = those of 5 s or
more. Overtalk = both talking at once; overtalkCount counts overlaps of at least 0.5 s; a party's
interruptions = times it started talking while the other was already talking, overlaps under
0.5 s (backchannels) excluded. Percentages are of durationSeconds. Crosstalk (the other party's
voice leaking into a channel: line echo, stereo bleed) is not counted as that party's talk: both
channels are compared. A mono recording, or a dual-mono one (the same mixed call on both
channels: dualMono true), has one party labelled "mixed": talk, non-talk and silences are
measured, overtalk and interruptions are null. The recording is fetched like
get_call_audio does; the analysis is computed once and stored beside it, so asking again costs
nothing. segments are capped at 500 here; the analytics resource has them all."""


class Arguments(CallArguments):
    timeline: StrictBool = Field(
        True, description="Attach the timeline picture (PNG: talk per party, long silences, overtalk)"
    )


@cache
def result_model() -> type[BaseModel]:
    """``get_call_analytics``'s structuredContent, built on first use: the analytics model lives
    with the analyser (numpy and the detectors), which start-up does not import."""
    from cte1_mcp.audio.analytics import CallAnalytics

    return create_model(
        "AnalyticsResult",
        summary=(
            str,
            Field(description="The text block's paragraph: talk shares, non-talk, silences, overtalk"),
        ),
        call=(CallView, ...),
        analytics=(CallAnalytics, ...),
        analyticsUri=(str, Field(description="Resource with the whole analysis as JSON, every segment")),
    )


async def run(arguments: Arguments, context: ToolContext) -> CallToolResult:
    key = arguments.key
    recording, analytics = await context.analysis.analytics(key, context.progress)
    blocks: list[ContentBlock] = []
    lines = [f"Call {key}: {analytics.summary}"]
    if arguments.timeline:
        _, png = await context.analysis.timeline_png(key, context.progress)
        blocks.append(ImageContent(data=base64.b64encode(png).decode("ascii"), mime_type="image/png"))
        lines.append("The timeline picture is attached below.")
    capped: CallAnalytics = analytics.capped()
    lines.append(f"Timeline picture: {key.uri('timeline')} (image/png).")
    lines.append(
        f"Whole analysis as JSON: {key.uri('analytics')}"
        + (
            f" (this result shows {len(capped.segments)} of {len(analytics.segments)} segments)."
            if capped.segmentsTruncated
            else "."
        )
    )
    blocks.insert(
        0,
        ResourceLink(
            uri=key.uri("timeline"),
            name=f"{key.name}-timeline",
            title=f"Timeline of call {key}",
            mime_type="image/png",
        ),
    )
    result = result_model().model_validate(
        {
            "summary": "\n".join(lines),
            "call": CallView.of(recording, mask_numbers=context.mask_numbers),
            "analytics": capped,
            "analyticsUri": key.uri("analytics"),
        }
    )
    return success(result.model_dump(mode="json"), *blocks)


TOOL = Tool(
    name="get_call_analytics",
    title="Get call analytics",
    description=DESCRIPTION,
    arguments=Arguments,
    result=result_model,
    run=run,
)
