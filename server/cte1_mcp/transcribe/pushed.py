"""CT-e1's own transcripts, as its speech-recognition push (音声認識結果一括送信API) delivers them.

The push body's models (what the page's example shows is accepted: ``status``, ``completed``,
``description`` beside the schema's ``discription``, ids as integers or digit strings), the
document stored per recording, and its conversion to this server's ``Transcript``: the platform's
``startTime``/``endTime`` as UTC with milliseconds (the form of CT-e1's example and of local
transcripts, whatever zone the push wrote them in), offsets counted from the recording's
``connectTime``.
Assumptions about the page's inconsistent example are listed in the README (push section).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cte1_mcp.models import MAX_ID, PLATFORM_RETENTION, CallKey, Recording, is_tenant_id
from cte1_mcp.repository.base import RecordingRepository
from cte1_mcp.settings import Settings
from cte1_mcp.transcribe.base import EngineInfo
from cte1_mcp.transcribe.transcript import CTE1_SPEAKER_IDS, Sentence, Speaker, Transcript, utc_text

logger = logging.getLogger(__name__)

#: The engine a pushed transcript names: the platform's recogniser (its model is not public).
CTE1_ENGINE = EngineInfo(name="cte1", model="CT-e1 speech recognition", modelSha256=None)
_LABELS = {speaker_id: label for label, speaker_id in CTE1_SPEAKER_IDS.items()}
#: Records in one push: a call has a handful of legs (transfers, holds); each record is a file, so
#: a body of thousands would hold the request open for minutes and crowd the store.
MAX_RECORDS = 100
#: How far a sentence may fall outside its call (clocks of the recogniser and the switch differ).
CLOCK_SKEW = timedelta(seconds=60)
#: How long after connectTime a pushed sentence may end (a call's legs together, holds included).
LONGEST_CALL = timedelta(hours=24)
#: The years a pushed time may fall in: a call's, with room for arithmetic on it (31 days of
#: retention added, a zone taken off) that a year 1 or 9999 would overflow.
FIRST_YEAR, LAST_YEAR = 1970, 9998


def parse_instant(value: str) -> datetime:
    """ISO 8601 with a zone, as the platform writes it (``2024-06-21T08:27:38.444Z``)."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:  # its own message quotes the value: the push's text stays out of errors and logs
        raise ValueError("must be an ISO 8601 time such as 2024-06-21T08:27:38.444Z") from None
    if parsed.tzinfo is None:
        raise ValueError("must carry a time zone (the platform sends UTC with Z)")
    try:
        year = parsed.astimezone(UTC).year
    except OverflowError:  # 0001-01-01T00:00+09:00 is in the year 0 in UTC
        year = 0
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise ValueError(f"must be a time between the years {FIRST_YEAR} and {LAST_YEAR}")
    return parsed


def _call_id(value: Any) -> Any:
    # The page's example sends integers; CT-e1's WebSocket APIs send the same ids as strings.
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 20:
        return int(value)
    return value


def _kept_number(value: Any) -> int | None:
    """A field kept but used for nothing (``direction``): an integer or digit string, else None.
    Its type on the real platform is not public, and the push is sent once: refusing the whole
    body over it would lose every record's sentences."""
    value = _call_id(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _kept_text(value: Any) -> str | None:
    """A field kept but used for nothing (``ani``, ``agentId``, …): a number becomes its digits;
    anything but text or a number is dropped (see ``_kept_number``)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(value)
    return value if isinstance(value, str) else None


class _Strict(BaseModel):
    # Fields the page may add later are ignored, never an error (the page is marked 開発中).
    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)


class PushedSentence(_Strict):
    sequence: int = Field(ge=0, le=MAX_ID)
    speakerId: int = Field(ge=0, le=MAX_ID)
    startTime: str = Field(max_length=64)
    endTime: str = Field(max_length=64)
    text: str

    @field_validator("startTime", "endTime")
    @classmethod
    def _instant(cls, value: str) -> str:
        parse_instant(value)
        return value

    @model_validator(mode="after")
    def _ordered(self) -> PushedSentence:
        if self.end < self.start:
            raise ValueError(f"sentence {self.sequence}: endTime is before startTime")
        return self

    @property
    def start(self) -> datetime:
        return parse_instant(self.startTime)

    @property
    def end(self) -> datetime:
        return parse_instant(self.endTime)


class PushedRecord(_Strict):
    """One individual call (a transfer or hold makes several) of the pushed conversation."""

    recordId: int = Field(ge=1, le=MAX_ID)
    ani: str | None = None
    dnis: str | None = None
    agentId: str | None = None
    agentName: str | None = None
    sentenceList: list[PushedSentence]

    @field_validator("recordId", mode="before")
    @classmethod
    def _record_id(cls, value: Any) -> Any:
        return _call_id(value)

    @field_validator("ani", "dnis", "agentId", "agentName", mode="before")
    @classmethod
    def _kept(cls, value: Any) -> str | None:
        return _kept_text(value)


class PushedConversation(_Strict):
    # ``status`` and ``completed`` (only in the example) and ``description``/``discription`` (the
    # example's and the schema's spelling) are used for nothing: not declared, so ignored whatever
    # their value (``extra="ignore"``), never an error.
    tenantId: str
    sessionId: int = Field(ge=1, le=MAX_ID)
    direction: int | None = None
    connectTime: str | None = Field(None, max_length=64)
    disconnectTime: str | None = Field(None, max_length=64)
    recordList: list[PushedRecord] = Field(min_length=1)

    @field_validator("sessionId", mode="before")
    @classmethod
    def _session_id(cls, value: Any) -> Any:
        return _call_id(value)

    @field_validator("recordList", mode="before")
    @classmethod
    def _few_records(cls, value: Any) -> Any:
        # Before the records are validated: a body of thousands is refused without that cost.
        if isinstance(value, list) and len(value) > MAX_RECORDS:
            raise ValueError(
                f"has {len(value):,} records; one push accepts at most {MAX_RECORDS} (a call has a "
                "handful of legs): send the calls in separate pushes"
            )
        return value

    @field_validator("direction", mode="before")
    @classmethod
    def _direction(cls, value: Any) -> int | None:
        return _kept_number(value)

    @field_validator("tenantId")
    @classmethod
    def _tenant(cls, value: str) -> str:
        if not is_tenant_id(value):
            raise ValueError("must be 1 to 32 digits (0-9), the tenant's representative number")
        return value

    @field_validator("connectTime", "disconnectTime")
    @classmethod
    def _instant(cls, value: str | None) -> str | None:
        if value is not None:
            parse_instant(value)
        return value

    @model_validator(mode="after")
    def _within_the_call(self) -> PushedConversation:
        """Each sentence within [connectTime - ``CLOCK_SKEW``, connectTime + ``LONGEST_CALL``]: a time
        outside it would be served as offset 0 or as an offset of centuries. Not bounded by
        disconnectTime: in the page's own example a transferred call's second leg talks after it
        (disconnectTime looks like the first leg's end), and a refused push is lost (the platform
        sends it once). No connectTime: nothing to check against."""
        if self.connectTime is None:
            return self
        connected = parse_instant(self.connectTime)
        earliest, latest = connected - CLOCK_SKEW, connected + LONGEST_CALL
        skew = f"{CLOCK_SKEW.total_seconds():.0f} s"
        hours = f"{LONGEST_CALL.total_seconds() / 3600:.0f} h"
        for index, record in enumerate(self.recordList):
            for sentence in record.sentenceList:
                where = f"recordList.{index} (recordId {record.recordId}) sentence {sentence.sequence}"
                if sentence.start < earliest:
                    raise ValueError(f"{where}: startTime is more than {skew} before connectTime")
                if sentence.end > latest:
                    raise ValueError(f"{where}: endTime is more than {hours} after connectTime")
        return self

    @property
    def available_until(self) -> datetime | None:
        """The platform's 31 days, from the call's connectTime (unknown without it)."""
        return parse_instant(self.connectTime) + PLATFORM_RETENTION if self.connectTime else None


class PushBody(_Strict):
    conversation: PushedConversation


class StoredPush(BaseModel):
    """What is stored per recording: that record's sentences and the conversation's times."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    tenantId: str
    sessionId: int
    recordId: int
    direction: int | None
    connectTime: str | None
    disconnectTime: str | None
    ani: str | None
    dnis: str | None
    agentId: str | None
    agentName: str | None
    sentenceList: list[PushedSentence]

    @classmethod
    def of(cls, conversation: PushedConversation, record: PushedRecord) -> StoredPush:
        return cls(
            tenantId=conversation.tenantId,
            sessionId=conversation.sessionId,
            recordId=record.recordId,
            direction=conversation.direction,
            connectTime=conversation.connectTime,
            disconnectTime=conversation.disconnectTime,
            ani=record.ani,
            dnis=record.dnis,
            agentId=record.agentId,
            agentName=record.agentName,
            sentenceList=record.sentenceList,
        )

    @property
    def key(self) -> CallKey:
        return CallKey(self.tenantId, self.sessionId, self.recordId)


def speaker_label(speaker_id: int) -> str:
    """CT-e1's convention as inferred from the page's example (1 the customer, 2 the agent)."""
    return _LABELS.get(speaker_id, f"speaker {speaker_id}")


def to_transcript(
    stored: StoredPush,
    *,
    roles: tuple[str, ...] = (),
    language: str = "ja",
    recording: Recording | None = None,
) -> Transcript:
    """The pushed sentences as a ``Transcript``.

    Offsets count from the recording's own ``connectTime`` when ``recording`` is given (the later
    records of a transferred call start after the conversation's), else from the conversation's,
    else from the first sentence. A party gets a channel only where ``roles`` (CTE1_CHANNEL_ROLES)
    names customer and agent and the recording has two channels.
    """
    metadata = recording.metadata if recording is not None else None
    audio = recording.audio.format if recording is not None else None
    conversation_start = parse_instant(stored.connectTime) if stored.connectTime else None
    start_times = [sentence.start for sentence in stored.sentenceList]
    base = (metadata.connected_at if metadata else None) or conversation_start
    if base is None:
        base = min(start_times, default=None)
    channels = (audio.channels if audio else None) or 2
    mapped = channels == 2 and set(roles) == set(CTE1_SPEAKER_IDS)
    ids = sorted(set(CTE1_SPEAKER_IDS.values()) | {s.speakerId for s in stored.sentenceList})
    parties = {
        speaker_id: Speaker(
            speakerId=speaker_id,
            speaker=speaker_label(speaker_id),
            channel=roles.index(speaker_label(speaker_id))
            if mapped and speaker_label(speaker_id) in roles
            else None,
        )
        for speaker_id in ids
    }
    ordered = sorted(stored.sentenceList, key=lambda s: (s.start, s.end, s.sequence))
    sentences = []
    for sequence, pushed in enumerate(ordered, start=1):
        party = parties[pushed.speakerId]
        start_ms = _offset_ms(pushed.start, base)
        sentences.append(
            Sentence(
                sequence=sequence,
                speakerId=party.speakerId,
                speaker=party.speaker,
                channel=party.channel,
                startOffsetMs=start_ms,
                endOffsetMs=max(start_ms, _offset_ms(pushed.end, base)),
                startTime=utc_text(pushed.start),
                endTime=utc_text(pushed.end),
                text=pushed.text,
            )
        )
    return Transcript(
        language=language,
        engine=CTE1_ENGINE,
        durationSeconds=_duration(stored, recording, sentences),
        channels=channels,
        speakers=list(parties.values()),
        sentenceList=sentences,
    )


async def stored_push(repository: RecordingRepository, key: CallKey) -> StoredPush | None:
    """What CT-e1 pushed for ``key`` as stored, or None if nothing was (or it is past retention)."""
    document = await repository.read_pushed_transcript(key)
    if document is None:
        return None
    try:
        return StoredPush.model_validate_json(document)
    except ValidationError:  # not one this version wrote: as if none was pushed (local is the fallback)
        logger.warning("ignoring the stored push of %s: it is not in this version's form", key)
        return None


async def platform_push(
    settings: Settings, repository: RecordingRepository, key: CallKey
) -> StoredPush | None:
    """What get_call_transcript serves before transcribing: CT-e1's stored push for ``key`` when
    CTE1_TRANSCRIPT_SOURCE is ``platform`` (the default) and one was pushed; None otherwise."""
    return await stored_push(repository, key) if settings.transcript_source == "platform" else None


def _offset_ms(moment: datetime, base: datetime | None) -> int:
    if base is None:
        return 0
    return max(0, round((moment - base) / timedelta(milliseconds=1)))


def _duration(stored: StoredPush, recording: Recording | None, sentences: list[Sentence]) -> float:
    """The recording's length if known, else the conversation's (disconnect minus connect), else up to
    the last sentence's end."""
    if recording is not None:
        known = recording.metadata.duration_seconds or recording.audio.format.duration_seconds
        if known is not None:
            return round(known, 3)
    if stored.connectTime and stored.disconnectTime:
        span = parse_instant(stored.disconnectTime) - parse_instant(stored.connectTime)
        if span >= timedelta(0):
            return round(span.total_seconds(), 3)
    return max((s.endOffsetMs for s in sentences), default=0) / 1000
