"""``get_call_metadata``: who called whom, when, for how long, which agent and skill."""

from __future__ import annotations

from mcp_types import CallToolResult

from cte1_mcp.tools.arguments import CallArguments
from cte1_mcp.tools.base import Tool, ToolContext, success
from cte1_mcp.views import CallView, MetadataResult

DESCRIPTION = """\
Metadata of one call recording: status, direction, caller (ani), called number (dnis), agent,
skill, number group, connect/disconnect times, duration and until when the platform keeps the
audio. Fetching it also stores the audio, so a later get_call_audio costs no platform request."""


Arguments = CallArguments


async def run(arguments: Arguments, context: ToolContext) -> CallToolResult:
    recording = await context.service.get(arguments.key, context.progress)
    view = CallView.of(recording, mask_numbers=context.mask_numbers)
    return success(MetadataResult.of_view(view).model_dump(mode="json"))


TOOL = Tool(
    name="get_call_metadata",
    title="Get call metadata",
    description=DESCRIPTION,
    arguments=Arguments,
    result=lambda: MetadataResult,
    run=run,
)
