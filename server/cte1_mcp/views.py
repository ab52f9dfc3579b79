"""What an MCP client is shown of a recording: result models, the sentences that summarise them,
phone-number masking and bounded excerpts of client input.

Every successful ``structuredContent`` carries a ``summary`` because some clients (Claude Code)
show the model only ``structuredContent`` and drop the text block beside it.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from cte1_mcp.models import AudioFormat, CallMetadata, Recording

if TYPE_CHECKING:
    from cte1_mcp.analysis import Clip

#: Longest platform text kept in a tool result (the metadata resource keeps them whole).
PLATFORM_TEXT_MAX_CHARS = 1000
#: JSON characters the platform's unknown extra fields may take in a tool result, all together.
EXTRA_FIELDS_BUDGET_CHARS = 8000
#: Longest excerpt of client input (argument names and values, URIs, tool names) in a message or log line.
EXCERPT_MAX_CHARS = 60

_MASKABLE = ("ani", "dnis")


_DIGIT = re.compile(r"[0-9]")


def mask_number(number: str) -> str:
    """Every digit but the last four becomes ``*`` ("08075082398" → "*******2398"); text without
    digits ("anonymous") stays as it is, and so does the punctuation of a formatted number."""
    keep_from = len(_DIGIT.findall(number)) - 4
    seen = 0

    def star(match: re.Match[str]) -> str:
        nonlocal seen
        seen += 1
        return "*" if seen <= keep_from else match[0]

    return _DIGIT.sub(star, number)


def excerpt(value: object, limit: int = EXCERPT_MAX_CHARS) -> str:
    """A client-supplied value as a bounded, quoted, single-line excerpt (control characters
    escaped), safe to put in an error text or a log line whatever the client sent."""
    if isinstance(value, str):
        shown = repr(value[:limit])
        return shown + "…" if len(value) > limit else shown
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 4 * limit:
        return "a very large integer"  # repr() itself refuses integers past 4,300 digits
    if isinstance(value, dict | list | tuple):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'} of {len(value)} item(s)"
    shown = repr(value)
    return shown if len(shown) <= limit else shown[:limit] + "…"


def names_excerpt(names: list[str], limit: int = 10) -> str:
    """Argument names a client sent, each quoted and bounded, at most ``limit`` of them."""
    shown = ", ".join(excerpt(name) for name in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# --- call metadata ---------------------------------------------------------------------------


class CallView(CallMetadata):
    """The platform's metadata with its own names and types (fields it adds later included), plus
    fields derived from it; ``ani``/``dnis`` masked when the server is configured to."""

    directionLabel: Literal["inbound", "outbound"] | None = Field(None, description="From direction")
    durationSeconds: float | None = Field(None, description="disconnectTime - connectTime")
    availableUntil: str | None = Field(
        None, description="connectTime + 31 days: until when the platform keeps the audio"
    )
    audioUri: str = Field(description="Resource URI of the recording")
    shortened: bool = Field(
        False,
        description="Some long platform fields were shortened or left out here; "
        "the metadata resource has them whole",
    )

    @classmethod
    def of(cls, recording: Recording, *, mask_numbers: bool, bounded: bool = True) -> CallView:
        """``bounded`` keeps a tool result small whatever the platform sent; resources pass False."""
        metadata = recording.metadata
        platform = metadata.platform_json()
        shortened = False
        if bounded:
            platform, shortened = _bounded(platform)
        if mask_numbers:
            for name in _MASKABLE:
                if isinstance(platform.get(name), str):
                    platform[name] = mask_number(platform[name])
        until = metadata.available_until
        return cls.model_validate(
            {
                **platform,
                "directionLabel": metadata.direction_label,
                "durationSeconds": metadata.duration_seconds,
                "availableUntil": until.isoformat(timespec="milliseconds").replace("+00:00", "Z")
                if until
                else None,
                "audioUri": recording.key.uri("audio"),
                "shortened": shortened,
            }
        )

    def sentence(self) -> str:
        """One sentence: who called whom, when, how long, which agent, until when the audio exists."""
        return _sentence(
            f"{self.tenantId}/{self.sessionId}/{self.recordId}",
            self.status,
            self.directionLabel,
            self.ani,
            self.dnis,
            self.agentName,
            self.agentId,
            self.skillName,
            self.connectTime,
            self.durationSeconds,
            self.availableUntil,
            shortened=self.shortened,
        )


def call_sentence(recording: Recording, *, mask_numbers: bool) -> str:
    """``CallView.of(recording).sentence()`` without building the view (about 10x cheaper):
    ``resources/list`` describes every stored recording. Only the fields the sentence shows are
    bounded, so it notes "shortened" only when one of them was."""
    metadata = recording.metadata
    shown = [metadata.ani, metadata.dnis, metadata.agentName, metadata.agentId, metadata.skillName]
    shortened = any(value is not None and len(value) > PLATFORM_TEXT_MAX_CHARS for value in shown)
    if shortened:
        shown = [_shorter(value) for value in shown]
    ani, dnis, agent_name, agent_id, skill = shown
    if mask_numbers:
        ani = mask_number(ani) if ani is not None else None
        dnis = mask_number(dnis) if dnis is not None else None
    until = metadata.available_until
    return _sentence(
        f"{metadata.tenantId}/{metadata.sessionId}/{metadata.recordId}",
        metadata.status,
        metadata.direction_label,
        ani,
        dnis,
        agent_name,
        agent_id,
        skill,
        metadata.connectTime,
        metadata.duration_seconds,
        until.date().isoformat() if until else None,
        shortened=shortened,
    )


def _sentence(
    call: str,
    status: str,
    direction: str | None,
    ani: str | None,
    dnis: str | None,
    agent_name: str | None,
    agent_id: str | None,
    skill: str | None,
    connected: str | None,
    duration: float | None,
    available_until: str | None,
    *,
    shortened: bool,
) -> str:
    parts = [f"Call {call}: {status}"]
    if direction:
        parts.append(f"{direction} from {ani or '?'} to {dnis or '?'}")
    if agent_name or agent_id:
        parts.append(f"agent {agent_name or ''} ({agent_id or '?'})".replace("  ", " "))
    if skill:
        parts.append(f"skill {skill}")
    if connected:
        parts.append(f"connected {connected}")
    if duration is not None:
        parts.append(f"{duration:.1f} s")
    if available_until:
        parts.append(f"audio kept by the platform until {available_until[:10]}")
    sentence = ", ".join(parts) + "."
    if shortened:
        sentence += " Some long fields are shortened here; the metadata resource has them whole."
    return sentence


def _shorter(value: str | None) -> str | None:
    if value is None or len(value) <= PLATFORM_TEXT_MAX_CHARS:
        return value
    return value[:PLATFORM_TEXT_MAX_CHARS] + "…"


class MetadataResult(CallView):
    """``get_call_metadata``'s structuredContent: the call, flat, plus the sentence its text says."""

    summary: str = Field(description="The text block's sentence")

    @classmethod
    def of_view(cls, view: CallView) -> MetadataResult:
        return cls.model_validate({**view.model_dump(mode="json"), "summary": view.sentence()})


def _bounded(platform: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Long texts shortened and unknown extra fields kept within a budget: the platform may send
    up to 1 MiB of metadata, a tool result must stay far below 50,000 characters."""
    known = CallMetadata.model_fields
    bounded: dict[str, Any] = {}
    shortened = False
    budget = EXTRA_FIELDS_BUDGET_CHARS
    for name, value in platform.items():
        if isinstance(value, str) and len(value) > PLATFORM_TEXT_MAX_CHARS:
            value = value[:PLATFORM_TEXT_MAX_CHARS] + "…"
            shortened = True
        if name in known:
            bounded[name] = value
            continue
        cost = len(json.dumps({name: value}, ensure_ascii=False))
        if cost > budget:
            shortened = True
            continue
        budget -= cost
        bounded[name] = value
    return bounded, shortened


# --- audio -----------------------------------------------------------------------------------


class AudioView(BaseModel):
    """Where a recording is and what it is; ``path`` only over stdio (the client's own machine)."""

    uri: str = Field(description="Resource URI: read it with resources/read")
    mimeType: str
    sizeBytes: int
    sha256: str
    encoding: str = Field(description="pcm, mulaw, alaw, mp3 or unknown")
    sampleRate: int | None
    channels: int | None
    durationSeconds: float | None
    warnings: list[str] = Field(
        default_factory=list,
        description="Where the file's header disagreed with its audio data, and what was trusted",
    )
    path: str | None = Field(
        None, description="Absolute local file; present only when the server runs over stdio"
    )
    downloadUrl: str | None = Field(
        None,
        description="Plain HTTP GET of the stored recording (same bearer token, Range, ETag = sha256); "
        "present only over HTTP",
    )
    inlined: bool = Field(description="Whether an audio content block in this result carries the recording")
    inlineAvailable: bool = Field(
        description="Whether calling again with inline=true would return the audio as a content block"
    )


class AudioResult(BaseModel):
    """``get_call_audio``'s structuredContent."""

    summary: str = Field(description="The text block's sentences: what the audio is and how to reach it")
    call: CallView
    audio: AudioView


def audio_view(
    recording: Recording,
    *,
    path: str | None,
    inlined: bool,
    inline_max_bytes: int,
    download_url: str | None = None,
) -> AudioView:
    audio = recording.audio
    fmt = audio.format
    return AudioView(
        uri=recording.key.uri("audio"),
        mimeType=fmt.mime_type,
        sizeBytes=audio.size_bytes,
        sha256=audio.sha256,
        encoding=fmt.encoding,
        sampleRate=fmt.sample_rate,
        channels=fmt.channels,
        durationSeconds=fmt.duration_seconds,
        warnings=list(fmt.warnings),
        path=path,
        downloadUrl=download_url,
        inlined=inlined,
        inlineAvailable=audio.size_bytes <= inline_max_bytes,
    )


def describe_format(fmt: AudioFormat) -> str:
    """ "WAV, mulaw, 8000 Hz, two channels"."""
    return ", ".join(
        part
        for part in (
            fmt.container.upper() if fmt.container != "unknown" else "unknown format",
            fmt.encoding if fmt.encoding != "unknown" else None,
            f"{fmt.sample_rate} Hz" if fmt.sample_rate else None,
            {1: "mono", 2: "two channels"}.get(fmt.channels or 0),
        )
        if part
    )


def _summary(
    first: str, view: AudioView | ClipView, *, what: str, asked_inline: bool, inline_max_bytes: int
) -> str:
    """``first``, then how a client reaches the audio without (or with) resources: the URI, the
    local file over stdio, and the inline option only where it would work."""
    lines = [first, f"Resource: {view.uri} (read it with resources/read; mimeType {view.mimeType})."]
    if view.path:
        lines.append(f"Local file: {view.path}")
    download = getattr(view, "downloadUrl", None)
    if download:
        lines.append(
            f"Download: {download} (HTTP GET with this server's bearer token; Range and ETag supported)."
        )
    if view.inlined:
        lines.append(f"The {what} is also attached inline below.")
    elif asked_inline:
        lines.append(
            f"Not inlined: {view.sizeBytes:,} bytes is over this server's inline limit of "
            f"{inline_max_bytes:,} bytes. Read the resource above"
            + (" or open the local file" if view.path else "")
            + (" or download it" if download else "")
            + " instead."
        )
    elif view.inlineAvailable:
        lines.append("If your client cannot read resources, call again with inline=true.")
    elif download:
        lines.append(
            f"It is over the {inline_max_bytes:,}-byte inline limit: read the resource or download it."
        )
    elif not view.path:
        lines.append(
            f"It is over the {inline_max_bytes:,}-byte inline limit, so it comes only as the resource above."
        )
    return "\n".join(lines)


def audio_summary(recording: Recording, view: AudioView, *, asked_inline: bool, inline_max_bytes: int) -> str:
    length = f"{view.durationSeconds:.1f} s" if view.durationSeconds is not None else "unknown length"
    first = (
        f"Recording of call {recording.key}: {length}, {describe_format(recording.audio.format)}, "
        f"{view.sizeBytes:,} bytes (sha256 {view.sha256[:16]}…)."
    )
    first = " ".join([first, *(f"Warning: {warning}" for warning in view.warnings)])
    return _summary(first, view, what="audio", asked_inline=asked_inline, inline_max_bytes=inline_max_bytes)


# --- clips -----------------------------------------------------------------------------------


class ClipView(BaseModel):
    """A clip as stored: where it is, what it is; ``path`` only over stdio."""

    uri: str = Field(description="Resource URI of this clip: read it with resources/read")
    mimeType: str
    format: str = Field(description="wav, mp3, flac or ogg")
    sizeBytes: int
    sha256: str
    startSeconds: float
    endSeconds: float
    durationSeconds: float
    channel: str = Field(description='"mix", "0" or "1"')
    label: str = Field(description="Whose voice: a CTE1_CHANNEL_ROLES role, channel N, or both parties")
    sampleRate: int
    channels: int = Field(description="Always 1: a clip is mono")
    path: str | None = Field(
        None, description="Absolute local file; present only when the server runs over stdio"
    )
    inlined: bool = Field(description="Whether an audio content block in this result carries the clip")
    inlineAvailable: bool = Field(
        description="Whether calling again with inline=true would return the clip as a content block"
    )

    @classmethod
    def of(
        cls, clip: Clip, *, path: str | None, inlined: bool, inline_max_bytes: int, roles: tuple[str, ...]
    ) -> ClipView:
        plan = clip.plan
        if plan.channel is None:
            label = "both parties (mix)"
        elif len(roles) == 2:
            label = roles[plan.channel]
        else:
            label = f"channel {plan.channel}"
        return cls(
            uri=clip.uri,
            mimeType=clip.mime_type,
            format=plan.format,
            sizeBytes=clip.size_bytes,
            sha256=clip.sha256,
            startSeconds=plan.start_seconds,
            endSeconds=plan.end_seconds,
            durationSeconds=round(clip.duration_seconds, 3),
            channel=plan.channel_name,
            label=label,
            sampleRate=plan.sample_rate,
            channels=1,
            path=path,
            inlined=inlined,
            inlineAvailable=clip.size_bytes <= inline_max_bytes,
        )


class ClipResult(BaseModel):
    """``get_call_clip``'s structuredContent."""

    summary: str = Field(description="The text block's sentences: what the clip is and how to reach it")
    call: CallView
    clip: ClipView


def clip_summary(recording: Recording, view: ClipView, *, asked_inline: bool, inline_max_bytes: int) -> str:
    first = (
        f"Clip of call {recording.key}, {view.label}, {view.startSeconds:g} to {view.endSeconds:g} s "
        f"({view.durationSeconds:.1f} s): {view.format.upper()}, mono, {view.sampleRate} Hz, "
        f"{view.sizeBytes:,} bytes (sha256 {view.sha256[:16]}…)."
    )
    return _summary(first, view, what="clip", asked_inline=asked_inline, inline_max_bytes=inline_max_bytes)
