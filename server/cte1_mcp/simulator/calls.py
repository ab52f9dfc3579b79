"""The simulator's call catalogue: seeded sample calls plus on-demand benchmark recordings.

Every recording is a scripted conversation of synthesised speech (see ``conversation.py``; the
documentation's example, the transferred call and 7001 speak written Japanese dialogues, see
``dialogues.py``): the
customer on channel 0, the agent on channel 1, or both mixed on a mono call; ``wav_spec().truth()``
is its ground truth. Times are offsets before the simulator's *epoch* (the instant its state was
created), not before "now": moving the simulated clock forward therefore ages every call, which is
how the 31-day rule and the "not finished yet" rule are exercised. Every sample exists to show one
documented case.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from cte1_mcp.simulator.conversation import Acoustics, Style, scripted
from cte1_mcp.simulator.dialogues import spoken
from cte1_mcp.simulator.wav import Encoding, WavSpec
from cte1_mcp.units import MiB

#: The tenant of the documentation's request example.
DOC_TENANT = "05053698341"
#: The tenant of the documentation's metadata example.
DOC_METADATA_TENANT = "05058085500"
#: A third, ordinary tenant.
OTHER_TENANT = "0312345678"
#: Seeded, but not readable with the default key: answers 許可されていないテナントの情報要求.
FOREIGN_TENANT = "0120000000"
#: Session N, record 1 is a finished call whose WAV is exactly N MiB (2-channel 16-bit PCM).
BENCHMARK_TENANT = "0399999999"
BENCHMARK_MAX_MIB = 4096


@dataclass(frozen=True, slots=True)
class SampleCall:
    """One recording the simulator can serve, with the metadata fields of the documentation's example."""

    tenant_id: str
    session_id: int
    record_id: int
    description: str
    direction: Literal[0, 1]
    ani: str
    dnis: str
    agent_id: str
    agent_name: str
    skill_name: str
    group_id: str
    group_name: str
    #: How long before the simulator's epoch the recording started.
    connected_before_epoch: timedelta
    #: The recording's length; None for a call that never finishes (status "connected").
    duration: timedelta | None
    channels: Literal[1, 2] = 2
    encoding: Encoding = "mulaw"
    #: Overrides the seeded WAV length (benchmark calls are sized in bytes, not seconds).
    wav: WavSpec | None = field(default=None, compare=False)
    #: What the scripted conversation contains (a hold, overtalk) and how the line sounds.
    style: Style = field(default=Style(), compare=False)
    acoustics: Acoustics = field(default=Acoustics(), compare=False)
    #: A written dialogue of natural Japanese sentences it speaks (``simulator.dialogues``), or None
    #: for random phrases of the espeak bank.
    dialogue: str | None = field(default=None, compare=False)

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.tenant_id, self.session_id, self.record_id)

    def connect_time(self, epoch: datetime) -> datetime:
        return epoch - self.connected_before_epoch

    def disconnect_time(self, epoch: datetime) -> datetime | None:
        return None if self.duration is None else self.connect_time(epoch) + self.duration

    def status(self, epoch: datetime, now: datetime) -> str:
        """``complete`` once the simulated clock has passed the end of the recording, else ``connected``."""
        end = self.disconnect_time(epoch)
        return "complete" if end is not None and now >= end else "connected"

    def metadata(self, epoch: datetime, now: datetime) -> dict[str, Any]:
        """Part 1, in the documentation's field order."""
        status = self.status(epoch, now)
        end = self.disconnect_time(epoch)
        return {
            "status": status,
            "tenantId": self.tenant_id,
            "sessionId": self.session_id,
            "recordId": self.record_id,
            "direction": self.direction,
            "ani": self.ani,
            "dnis": self.dnis,
            "agentId": self.agent_id,
            "agentName": self.agent_name,
            "skillName": self.skill_name,
            "groupId": self.group_id,
            "groupName": self.group_name,
            "connectTime": iso_millis(self.connect_time(epoch)),
            "disconnectTime": iso_millis(end) if end is not None and status == "complete" else None,
        }

    def wav_spec(self) -> WavSpec:
        if self.wav is not None:
            return self.wav
        seconds = (self.duration or timedelta(seconds=30)).total_seconds()
        seed = call_seed(*self.key)
        if self.dialogue is not None:
            conversation = spoken(self.dialogue, seconds, seed, self.style, self.acoustics)
        else:
            conversation = scripted(seconds, seed, self.style, self.acoustics)
        return WavSpec.for_duration(
            seconds, channels=self.channels, encoding=self.encoding, seed=seed, conversation=conversation
        )

    def filename(self) -> str:
        return f"{self.tenant_id}_{self.session_id}_{self.record_id}.wav"


def iso_millis(moment: datetime) -> str:
    """ISO 8601 UTC with milliseconds and "Z", like the documentation's ``2023-01-04T11:22:33.123Z``."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def call_seed(tenant_id: str, session_id: int, record_id: int) -> int:
    """A stable seed (``hash()`` of a str changes per process; CRC-32 does not)."""
    return zlib.crc32(f"{tenant_id}/{session_id}/{record_id}".encode())


def _ago(days: float = 0, hours: float = 0, minutes: float = 0) -> timedelta:
    return timedelta(days=days, hours=hours, minutes=minutes)


SAMPLE_CALLS: tuple[SampleCall, ...] = (
    SampleCall(
        DOC_TENANT, 942125, 1,
        "The documentation's request example: finished inbound call, 4 min 40 s, 2-channel μ-law (~4.3 MiB)",
        0, "08075082398", "05053698333", "F99971353", "コムデザイン一郎", "着信スキル名1",
        "0368509999@0368939999", "局番スキル名1",
        _ago(hours=2), timedelta(seconds=280.447), 2, "mulaw",
        style=Style(hold_seconds=45.0, overtalks=2, backchannels=3), dialogue="example",
    ),
    SampleCall(
        DOC_TENANT, 942126, 1,
        "Short inbound call from a withheld number (ani \"anonymous\"), 20 s mono μ-law (~156 KiB)",
        0, "anonymous", "05053698333", "F99971354", "山田花子", "着信スキル名1",
        "0368509999@0368939999", "局番スキル名1",
        _ago(hours=1, minutes=30), timedelta(seconds=20), 1, "mulaw",
        style=Style(backchannels=0),
    ),
    SampleCall(
        DOC_TENANT, 942130, 1,
        "Transferred call, record 1: first agent (reception), 45 s 2-channel μ-law",
        0, "09012345678", "05053698333", "F99971355", "佐藤健太", "受付スキル",
        "0368509999@0368939999", "局番スキル名1",
        _ago(minutes=50), timedelta(seconds=45), 2, "mulaw", dialogue="transfer-reception",
    ),
    SampleCall(
        DOC_TENANT, 942130, 2,
        "Transferred call, record 2: same session, second agent (support), 2 min 2-channel μ-law",
        0, "09012345678", "05053698333", "F99971356", "鈴木美咲", "技術サポートスキル",
        "0368509999@0368939999", "局番スキル名1",
        _ago(minutes=50) - timedelta(seconds=45), timedelta(seconds=120), 2, "mulaw",
        style=Style(overtalks=4, backchannels=3), dialogue="transfer-support",
    ),
    SampleCall(
        DOC_TENANT, 942140, 1,
        "Call still in progress (status \"connected\", no disconnectTime): 未完了の通話",
        0, "08011112222", "05053698333", "F99971353", "コムデザイン一郎", "着信スキル名1",
        "0368509999@0368939999", "局番スキル名1",
        _ago(minutes=3), None, 2, "mulaw",
    ),
    SampleCall(
        DOC_METADATA_TENANT, 35087858, 1,
        "The documentation's metadata example (its agent, skill, group), 75 s 2-channel 16-bit PCM (2.3 MiB)",
        0, "08075082398", "05053698333", "F99971353", "コムデザイン一郎", "着信スキル名1",
        "0368509999@0368939999", "局番スキル名1",
        _ago(days=1, hours=4), timedelta(seconds=75), 2, "pcm16",
        acoustics=Acoustics(party_gain_db=(-18.0, 0.0)),
    ),
    SampleCall(
        DOC_METADATA_TENANT, 35087859, 1,
        "Outbound call (direction 1), 30 s mono 16-bit PCM (~469 KiB)",
        1, "05058085500", "0312349876", "F99971360", "高橋翔", "発信スキル",
        "0368509999@0368939999", "局番スキル名1",
        _ago(days=3), timedelta(seconds=30), 1, "pcm16",
        style=Style(english=True, backchannels=0),
    ),
    SampleCall(
        DOC_METADATA_TENANT, 35080001, 1,
        "Finished call connected 40 days ago: 31日以上前の音声データ (expired)",
        0, "08099990000", "05053698333", "F99971353", "コムデザイン一郎", "着信スキル名1",
        "0368509999@0368939999", "局番スキル名1",
        _ago(days=40), timedelta(seconds=60), 2, "mulaw",
    ),
    SampleCall(
        OTHER_TENANT, 7001, 1,
        "Outbound sales call (direction 1), 60 s 2-channel μ-law",
        1, "0312345678", "0667778888", "T00000101", "伊藤直樹", "営業発信スキル",
        "0312345678@0312340000", "東京営業",
        _ago(hours=6), timedelta(seconds=60), 2, "mulaw",
        style=Style(overtalks=1), acoustics=Acoustics(bleed_db=-24.0, noise_dbfs=-50.0), dialogue="outbound",
    ),
    SampleCall(
        OTHER_TENANT, 7002, 1,
        "Inbound call connected 30 days 23 hours ago: expires one hour after the simulator starts",
        0, "0422223333", "0312345678", "T00000102", "渡辺陽子", "問い合わせスキル",
        "0312345678@0312340000", "東京営業",
        _ago(days=30, hours=23), timedelta(seconds=40), 1, "mulaw",
    ),
    SampleCall(
        FOREIGN_TENANT, 1, 1,
        "Finished call of a tenant the default key may not read: 許可されていないテナントの情報要求",
        0, "0311110000", "0120000000", "X00000001", "他社太郎", "着信スキル",
        "0120000000@0120000001", "他社局番",
        _ago(hours=5), timedelta(seconds=30), 1, "mulaw",
    ),
)  # fmt: skip

_BY_KEY: dict[tuple[str, int, int], SampleCall] = {call.key: call for call in SAMPLE_CALLS}

#: Every tenant the simulator knows, the benchmark tenant included.
SEEDED_TENANTS: frozenset[str] = frozenset({call.tenant_id for call in SAMPLE_CALLS} | {BENCHMARK_TENANT})
#: What the default key may read: everything but the foreign tenant.
DEFAULT_ALLOWED_TENANTS: frozenset[str] = SEEDED_TENANTS - {FOREIGN_TENANT}


def benchmark_call(size_mib: int) -> SampleCall:
    """Record 1 of benchmark session N: a finished call whose WAV is exactly N MiB, generated on demand."""
    if not 1 <= size_mib <= BENCHMARK_MAX_MIB:
        raise ValueError(f"benchmark size must be 1..{BENCHMARK_MAX_MIB} MiB")
    spec = WavSpec.for_file_size(
        size_mib * MiB, channels=2, encoding="pcm16", seed=call_seed(BENCHMARK_TENANT, size_mib, 1)
    )
    duration = timedelta(seconds=spec.duration_seconds)
    return SampleCall(
        BENCHMARK_TENANT, size_mib, 1,
        f"Benchmark recording of {size_mib} MiB (2-channel 16-bit PCM)",
        0, "0399990000", BENCHMARK_TENANT, "B00000001", "ベンチマーク太郎", "ベンチマークスキル",
        "0399999999@0399990000", "ベンチマーク局番",
        duration + timedelta(hours=1), duration, 2, "pcm16", spec,
    )  # fmt: skip


def find_call(tenant_id: str, session_id: int, record_id: int) -> SampleCall | None:
    """The seeded or benchmark recording with these ids, or None when they refer to nothing."""
    if tenant_id == BENCHMARK_TENANT:
        if record_id == 1 and 1 <= session_id <= BENCHMARK_MAX_MIB:
            return benchmark_call(session_id)
        return None
    return _BY_KEY.get((tenant_id, session_id, record_id))
