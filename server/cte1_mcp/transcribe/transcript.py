"""A call's transcript in CT-e1's own shape (``sentenceList`` of the speech-recognition push), plus
offsets from the start of the recording, which the platform's absolute times cannot give without
the call's ``connectTime``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict

from cte1_mcp.transcribe.base import EngineInfo

#: CT-e1's speakerId convention (the push page's one example: 2 speaks the agent's line, 1 the
#: customer's), used only when CTE1_CHANNEL_ROLES names exactly these two roles.
CTE1_SPEAKER_IDS = {"customer": 1, "agent": 2}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Speaker(_Model):
    speakerId: int
    speaker: str
    channel: int | None


class Sentence(_Model):
    sequence: int
    speakerId: int
    speaker: str
    channel: int | None
    startOffsetMs: int
    endOffsetMs: int
    startTime: str | None
    endTime: str | None
    text: str


class Transcript(_Model):
    """The ``transcript`` object of get_call_transcript and the whole ``…/transcript`` resource."""

    language: str
    engine: EngineInfo
    durationSeconds: float
    channels: int
    speakers: list[Speaker]
    sentenceList: list[Sentence]
    shortened: bool = False

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()

    def shortened_to(self, max_chars: int, size: Callable[[Transcript], int] | None = None) -> Transcript:
        """The first sentences that keep ``size`` (by default the transcript's JSON; a tool passes
        the size of its whole result) under ``max_chars``, ``shortened`` set when cut."""
        measure = size or (lambda transcript: len(transcript.model_dump_json()))
        if measure(self) <= max_chars:
            return self
        low, high = 0, len(self.sentenceList)
        while low < high:  # the most sentences that fit
            middle = (low + high + 1) // 2
            candidate = self.model_copy(
                update={"sentenceList": self.sentenceList[:middle], "shortened": True}
            )
            if measure(candidate) <= max_chars:
                low = middle
            else:
                high = middle - 1
        return self.model_copy(update={"sentenceList": self.sentenceList[:low], "shortened": True})

    def lines(self) -> list[str]:
        """One line a sentence, ``00:06.1`` en dash ``00:08.4 customer: …`` (the issue's form): the words
        for clients that show text."""
        # Whitespace runs, line breaks included, become one space: a text with a line break (a
        # pushed one may hold any) would otherwise show a line that looks like another sentence.
        return [
            f"{_clock(s.startOffsetMs)}\N{EN DASH}{_clock(s.endOffsetMs)} {s.speaker}: {' '.join(s.text.split())}"
            for s in self.sentenceList
        ]

    def vtt(self) -> str:
        """WebVTT with a ``<v speaker>`` voice span per cue, for players and subtitle tools."""
        # A cue must end after it starts: a sentence the engine (or the platform) timed at one
        # instant gets a millisecond.
        cues = [
            f"{index}\n{_vtt_time(s.startOffsetMs)} --> {_vtt_time(max(s.endOffsetMs, s.startOffsetMs + 1))}\n"
            f"<v {_vtt_annotation(s.speaker)}>{_vtt_text(s.text)}</v>"
            for index, s in enumerate(self.sentenceList, start=1)
        ]
        return "WEBVTT\n\n" + "".join(cue + "\n\n" for cue in cues)


@dataclass(frozen=True, slots=True)
class Heard:
    """One sentence as the pipeline (or the platform) gives it: channel (None for mono) and seconds
    from the start of the recording."""

    channel: int | None
    start: float
    end: float
    text: str


def speakers(channels: int, roles: tuple[str, ...], *, mixed: bool = False) -> list[Speaker]:
    """One party per channel; CT-e1's ids where the roles are exactly customer and agent, else
    channel + 1; a mono recording (or a ``mixed`` one: dual mono) is one party, ``mixed`` (no
    diarization)."""
    if channels == 1 or mixed:
        return [Speaker(speakerId=1, speaker="mixed", channel=None)]
    labels = list(roles) if len(roles) == 2 else [f"channel {index}" for index in range(channels)]
    platform_ids = set(labels) == set(CTE1_SPEAKER_IDS)
    return [
        Speaker(
            speakerId=CTE1_SPEAKER_IDS[label] if platform_ids else index + 1, speaker=label, channel=index
        )
        for index, label in enumerate(labels)
    ]


def build(
    heard: Iterable[Heard],
    *,
    engine: EngineInfo,
    language: str,
    duration_seconds: float,
    channels: int,
    roles: tuple[str, ...],
    connect_time: datetime | None,
    mixed: bool = False,
) -> Transcript:
    """The transcript: sentences in start order across both parties, numbered 1..n (``mixed``: both
    channels carry the same mixed call, so there is one party, as for mono)."""
    parties = speakers(channels, roles, mixed=mixed)
    by_channel = {party.channel: party for party in parties}
    ordered = sorted(heard, key=lambda h: (h.start, h.end, -1 if h.channel is None else h.channel))
    sentences = []
    for sequence, item in enumerate(ordered, start=1):
        party = by_channel[None if channels == 1 or mixed else item.channel]
        start_ms, end_ms = round(item.start * 1000), round(item.end * 1000)
        sentences.append(
            Sentence(
                sequence=sequence,
                speakerId=party.speakerId,
                speaker=party.speaker,
                channel=party.channel,
                startOffsetMs=start_ms,
                endOffsetMs=end_ms,
                startTime=_instant(connect_time, start_ms),
                endTime=_instant(connect_time, end_ms),
                text=item.text,
            )
        )
    return Transcript(
        language=language,
        engine=engine,
        durationSeconds=round(duration_seconds, 3),
        channels=channels,
        speakers=parties,
        sentenceList=sentences,
    )


def _instant(connect_time: datetime | None, offset_ms: int) -> str | None:
    if connect_time is None:
        return None
    return utc_text(connect_time + timedelta(milliseconds=offset_ms))


def utc_text(moment: datetime) -> str:
    """CT-e1's form: ISO-8601 UTC with milliseconds and ``Z`` (``moment`` carries a zone)."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _clock(ms: int) -> str:
    """``mm:ss.d``: minutes run past 59 rather than adding an hour field (rows stay aligned)."""
    tenths = round(ms / 100)
    return f"{tenths // 600:02d}:{tenths % 600 / 10:04.1f}"


def _vtt_time(ms: int) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


def _vtt_text(text: str) -> str:
    """A cue's payload: ``&``, ``<`` and ``>`` escaped, and no blank line (which would end the cue)."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return " ".join(escaped.split())


def _vtt_annotation(label: str) -> str:
    """A voice span's annotation may not hold ``>`` or a line break."""
    return " ".join(label.replace(">", " ").replace("&", "&amp;").split()) or "speaker"
