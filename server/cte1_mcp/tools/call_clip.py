"""``get_call_clip``: a stretch of one party (or the mix), re-encoded for audio-capable assistants."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from mcp_types import CallToolResult
from pydantic import BeforeValidator, Field

from cte1_mcp.errors import InvalidParameter
from cte1_mcp.tools.arguments import CallArguments, Inline, lenient_number
from cte1_mcp.tools.base import Tool, ToolContext, audio_success
from cte1_mcp.views import CallView, ClipResult, ClipView, clip_summary

if TYPE_CHECKING:
    from cte1_mcp.audio.clips import ClipRequest

#: What cte1_mcp.audio.clips encodes (kept here so start-up need not import the audio stack;
#: tests/test_mcp_analysis.py holds the two lists equal).
ClipFormat = Literal["wav", "mp3", "flac", "ogg"]
ClipRate = Literal[8000, 16000]

DESCRIPTION = """\
A clip of one call's recording, cut from the stored recording (no platform request once it is
stored), converted to mono and stored beside the recording: for assistants that take audio
(OpenAI's audio models: WAV, MP3; Gemini: WAV, MP3, FLAC, OGG; Claude takes no audio: use
get_call_analytics instead). Give startSeconds/endSeconds (default: the whole call; a call longer
than the server's maximum clip length is then refused: give endSeconds), channel ("mix", "0", "1" or a role of CTE1_CHANNEL_ROLES such as
"agent"), format and sampleRate. Returned like get_call_audio: a resource URI, the local path over
stdio, sha256, size and duration, and with inline=true the clip itself as an audio block when it
fits the inline limit. A range outside the call, endSeconds <= startSeconds, a clip over the
maximum length, an unknown channel or format, or channel 1 of a mono recording is refused with
[invalid_parameter] naming what is valid."""

Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False), BeforeValidator(lenient_number)]


def _channel_name(value: Any) -> Any:
    """0 and 1 as JSON numbers are the channels "0" and "1"."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


class ClipArguments(CallArguments):
    """What to cut; shared by the tool and the clip resource (``…/clip?start=&end=…``)."""

    startSeconds: Seconds = Field(0.0, description="Start of the clip in seconds from the call's start")
    endSeconds: Seconds | None = Field(
        None, description="End of the clip in seconds (default: the end of the call); must be > startSeconds"
    )
    channel: Annotated[str, BeforeValidator(_channel_name)] = Field(
        "mix",
        max_length=64,
        description='"mix" (both parties), "0", "1", or a role name of CTE1_CHANNEL_ROLES (e.g. "agent")',
    )
    format: ClipFormat = Field("wav", description="wav, mp3, flac or ogg")
    sampleRate: Annotated[ClipRate, BeforeValidator(lenient_number)] = Field(
        8000, description="Output sample rate in Hz: 8000 or 16000"
    )

    def clip_request(self, roles: tuple[str, ...]) -> ClipRequest:
        """The analysis' request, after the checks that need no recording (a channel name)."""
        from cte1_mcp.audio.clips import ClipRequest

        self._check_channel(roles)
        return ClipRequest.of(
            start_seconds=self.startSeconds,
            end_seconds=self.endSeconds,
            channel=self.channel,
            format=self.format,
            sample_rate=self.sampleRate,
        )

    def _check_channel(self, roles: tuple[str, ...]) -> None:
        """An unknown channel name is refused before any request; whether the recording has a
        channel 1 is known only once it is stored."""
        valid = ["mix", "0", "1", *roles]
        if self.channel.strip().casefold() not in {name.casefold() for name in valid}:
            roles_hint = "" if roles else " (no role names: CTE1_CHANNEL_ROLES is not set)"
            raise InvalidParameter(
                f"channel {self.channel!r} is not one of {', '.join(valid)}{roles_hint}.",
                next_step='Call again with channel "mix", "0" or "1"'
                + (f" or one of {', '.join(roles)}." if roles else "."),
            )


class Arguments(ClipArguments):
    inline: Inline = False


async def run(arguments: Arguments, context: ToolContext) -> CallToolResult:
    settings = context.settings
    request = arguments.clip_request(settings.channel_roles)
    limit = settings.inline_audio_max_bytes
    recording, clip = await context.analysis.clip(
        arguments.key, request, context.progress, data_max_bytes=limit if arguments.inline else None
    )
    inlined = clip.data is not None
    path = str(clip.path) if context.on_stdio and clip.path is not None else None
    view = ClipView.of(clip, path=path, inlined=inlined, inline_max_bytes=limit, roles=settings.channel_roles)
    result = ClipResult(
        summary=clip_summary(recording, view, asked_inline=arguments.inline, inline_max_bytes=limit),
        call=CallView.of(recording, mask_numbers=context.mask_numbers),
        clip=view,
    )
    key = arguments.key
    return audio_success(
        result.model_dump(mode="json"),
        "clip",
        view,
        name=f"{key.name}-clip",
        title=f"Clip of call {key}",
        data=clip.data if inlined else None,
    )


TOOL = Tool(
    name="get_call_clip",
    title="Get a clip of a call",
    description=DESCRIPTION,
    arguments=Arguments,
    result=lambda: ClipResult,
    run=run,
)
