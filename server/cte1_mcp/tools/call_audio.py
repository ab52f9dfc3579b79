"""``get_call_audio``: where the recording is, what it is, and (small ones) the audio itself."""

from __future__ import annotations

from mcp_types import CallToolResult

from cte1_mcp.tools.arguments import CallArguments, Inline
from cte1_mcp.tools.base import Tool, ToolContext, audio_success
from cte1_mcp.views import AudioResult, CallView, audio_summary, audio_view

DESCRIPTION = """\
The recording of one call: where it is (resource URI; the local file path over stdio; over HTTP
a downloadUrl for a plain GET with the same bearer token, Range and ETag supported), its
format, size, duration and sha256. With inline=true a recording up to the inline limit is also
returned as an audio content block (for clients that cannot read resources)."""


class Arguments(CallArguments):
    inline: Inline = False


async def run(arguments: Arguments, context: ToolContext) -> CallToolResult:
    service, key = context.service, arguments.key
    limit = context.settings.inline_audio_max_bytes
    recording = await service.get(key, context.progress)
    data: bytes | None = None
    if arguments.inline and recording.audio.size_bytes <= limit:
        # Everything reported below comes from the recording these bytes belong to: read_audio may
        # have fetched it again (evicted in between), and that download may differ.
        recording, data = await service.read_audio(key, context.progress, max_bytes=limit)
    path = service.local_path(recording) if context.on_stdio else None
    download: str | None = None
    if context.base_url is not None:
        from cte1_mcp.http_download import download_url  # HTTP only: stdio start-up stays light

        download = download_url(context.base_url, key)
    audio = audio_view(
        recording,
        path=str(path) if path else None,
        inlined=data is not None,
        inline_max_bytes=limit,
        download_url=download,
    )
    summary = audio_summary(recording, audio, asked_inline=arguments.inline, inline_max_bytes=limit)
    result = AudioResult(
        summary=summary, call=CallView.of(recording, mask_numbers=context.mask_numbers), audio=audio
    )
    return audio_success(
        result.model_dump(mode="json"),
        "audio",
        audio,
        name=key.name,
        title=f"Recording of call {key}",
        data=data,
    )


TOOL = Tool(
    name="get_call_audio",
    title="Get call audio",
    description=DESCRIPTION,
    arguments=Arguments,
    result=lambda: AudioResult,
    run=run,
)
