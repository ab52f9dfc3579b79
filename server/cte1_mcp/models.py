"""The shapes every module shares: which call, what the platform said of it, what the audio is."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

#: The platform keeps audio this long after the call connected (31日以上前の音声データは取得不可).
PLATFORM_RETENTION = timedelta(days=31)


def _parse_instant(value: str) -> datetime:
    """ISO 8601 with a zone (the platform sends UTC with "Z"); naive times are refused, not guessed."""
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("timestamp has no time zone")
    return parsed


#: The one tenant-id rule (CallKey, tool arguments, resource URIs, CTE1_ALLOWED_TENANTS): the tenant's
#: representative number, ASCII digits only (``[0-9]``, unlike ``\d``), so safe in paths and URIs.
TENANT_ID_PATTERN = re.compile(r"[0-9]{1,32}")
#: Largest sessionId/recordId: the platform's integer ids fit a signed 64-bit integer.
MAX_ID = 2**63 - 1


def is_tenant_id(value: str) -> bool:
    return TENANT_ID_PATTERN.fullmatch(value) is not None


def is_call_id(value: int) -> bool:
    return 1 <= value <= MAX_ID


@dataclass(frozen=True, slots=True)
class CallKey:
    """One recording: ids already validated (digits / positive integers), so safe in paths and URIs."""

    tenant_id: str
    session_id: int
    record_id: int

    def __post_init__(self) -> None:
        if not is_tenant_id(self.tenant_id):
            raise ValueError("tenant_id must be 1 to 32 ASCII digits")
        if not (is_call_id(self.session_id) and is_call_id(self.record_id)):
            raise ValueError(f"session_id and record_id must be from 1 to {MAX_ID}")

    def request_body(self) -> dict[str, Any]:
        """The documented JSON body of ``call/audio_data``."""
        return {"tenantId": self.tenant_id, "sessionId": self.session_id, "recordId": self.record_id}

    @property
    def path_parts(self) -> tuple[str, str, str]:
        return (self.tenant_id, str(self.session_id), str(self.record_id))

    def uri(
        self,
        kind: Literal["audio", "metadata", "timeline", "analytics", "clip", "transcript", "transcript.vtt"],
    ) -> str:
        """The call's resource URIs (a clip's adds its query: analysis.clip_uri)."""
        return f"cte1://calls/{self.tenant_id}/{self.session_id}/{self.record_id}/{kind}"

    @property
    def name(self) -> str:
        """``call-<tenant>-<session>-<record>``: the name of its resource links and saved files."""
        return f"call-{self.tenant_id}-{self.session_id}-{self.record_id}"

    def __str__(self) -> str:
        return f"{self.tenant_id}/{self.session_id}/{self.record_id}"


class CallMetadata(BaseModel):
    """Part 1 of the platform's answer, with its own field names and types.

    The page is marked 開発中 (under development): fields the platform adds later are kept
    (``extra="allow"``) and passed on unchanged.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    # Descriptions from the API page; they reach clients in the tools' output schemas.
    status: str = Field(description='"complete" for a finished call')
    tenantId: str
    sessionId: int
    recordId: int
    direction: int | None = Field(None, description="0 inbound (着信), 1 outbound (発信)")
    ani: str | None = Field(None, description='Caller number; "anonymous" when withheld')
    dnis: str | None = Field(None, description="Called number")
    agentId: str | None = Field(None, description="The agent who handled the recording")
    agentName: str | None = None
    skillName: str | None = Field(None, description="The skill (routing queue)")
    groupId: str | None = Field(None, description="The number group (局番), like number@number")
    groupName: str | None = None
    # Kept as the platform's strings (e.g. "2023-01-04T11:22:33.123Z") so they are passed on exactly;
    # validated as ISO 8601 with a zone, and read as datetimes through the properties below.
    connectTime: str | None = Field(None, description="ISO 8601 UTC with milliseconds")
    disconnectTime: str | None = Field(None, description="ISO 8601 UTC with milliseconds")

    @field_validator("connectTime", "disconnectTime")
    @classmethod
    def _iso_8601_with_zone(cls, value: str | None) -> str | None:
        if value is not None:
            _parse_instant(value)
        return value

    @property
    def connected_at(self) -> datetime | None:
        return _parse_instant(self.connectTime) if self.connectTime else None

    @property
    def disconnected_at(self) -> datetime | None:
        return _parse_instant(self.disconnectTime) if self.disconnectTime else None

    @property
    def is_complete(self) -> bool:
        return self.status == "complete"

    @property
    def available_until(self) -> datetime | None:
        connected = self.connected_at
        return connected + PLATFORM_RETENTION if connected else None

    @property
    def duration_seconds(self) -> float | None:
        connected, disconnected = self.connected_at, self.disconnected_at
        if connected is None or disconnected is None:
            return None
        return round((disconnected - connected).total_seconds(), 3)

    @property
    def direction_label(self) -> Literal["inbound", "outbound"] | None:
        if self.direction == 0:
            return "inbound"
        if self.direction == 1:
            return "outbound"
        return None

    def platform_json(self) -> dict[str, Any]:
        """Exactly what the platform sent (its names, its types, extra fields included)."""
        return self.model_dump(mode="json", exclude_unset=True)


Container = Literal["wav", "mp3", "unknown"]
Encoding = Literal["pcm", "mulaw", "alaw", "mp3", "unknown"]


class AudioFormat(BaseModel):
    """What the bytes are, sniffed, never guessed: unknown stays unknown."""

    model_config = ConfigDict(frozen=True)

    mime_type: str = Field(description="Content type to serve the audio with")
    container: Container = "unknown"
    encoding: Encoding = "unknown"
    sample_rate: int | None = None
    channels: int | None = None
    bits_per_sample: int | None = None
    duration_seconds: float | None = None
    #: Where the header disagreed with the bytes and what was trusted instead (shown to clients).
    warnings: tuple[str, ...] = ()


class AudioInfo(BaseModel):
    """A stored recording's audio: its format plus the integrity facts measured while streaming."""

    model_config = ConfigDict(frozen=True)

    format: AudioFormat
    size_bytes: int
    sha256: str


class Recording(BaseModel):
    """A recording fully downloaded and committed to a repository (where it lives is the
    repository's business: a local path is something the local store may offer)."""

    model_config = ConfigDict(frozen=True)

    tenant_id: str
    session_id: int
    record_id: int
    metadata: CallMetadata
    audio: AudioInfo
    fetched_at: AwareDatetime

    @property
    def key(self) -> CallKey:
        return CallKey(self.tenant_id, self.session_id, self.record_id)
