"""A pushed record as this server's Transcript: offsets, parties, channels, duration."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cte1_mcp.models import AudioFormat, AudioInfo, CallMetadata, Recording
from cte1_mcp.transcribe.pushed import PushBody, StoredPush, to_transcript
from tests.helpers.push_server import example


def stored(record: int = 0, **conversation: Any) -> StoredPush:
    body = example()
    body["conversation"].update(conversation)
    parsed = PushBody.model_validate(body).conversation
    return StoredPush.of(parsed, parsed.recordList[record])


def recording(connect: str, disconnect: str, channels: int = 2) -> Recording:
    metadata = CallMetadata.model_validate(
        {
            "status": "complete",
            "tenantId": "05053698333",
            "sessionId": 942125,
            "recordId": 2,
            "connectTime": connect,
            "disconnectTime": disconnect,
        }
    )
    audio = AudioInfo(
        format=AudioFormat(mime_type="audio/wav", container="wav", channels=channels),
        size_bytes=1,
        sha256="0" * 64,
    )
    return Recording(
        tenant_id="05053698333",
        session_id=942125,
        record_id=2,
        metadata=metadata,
        audio=audio,
        fetched_at=datetime(2024, 6, 21, 9, tzinfo=UTC),
    )


def test_offsets_count_from_the_conversations_connect_time() -> None:
    transcript = to_transcript(stored())
    assert [(s.startOffsetMs, s.endOffsetMs) for s in transcript.sentenceList] == [
        (4360, 6160),
        (8180, 10010),
    ]
    assert transcript.channels == 2
    assert transcript.language == "ja"
    assert [(p.speakerId, p.speaker, p.channel) for p in transcript.speakers] == [
        (1, "customer", None),
        (2, "agent", None),
    ]


def test_a_transferred_calls_later_record_counts_from_its_own_recording() -> None:
    """The second individual call starts after the conversation's connectTime: its recording's
    metadata says when, and its duration."""
    later = recording("2024-06-21T08:28:36.444Z", "2024-06-21T08:28:50.000Z")
    transcript = to_transcript(stored(1), recording=later)
    assert [(s.startOffsetMs, s.endOffsetMs) for s in transcript.sentenceList] == [(2000, 3800), (5820, 7650)]
    assert transcript.durationSeconds == 13.556


def test_roles_give_the_parties_their_channels() -> None:
    transcript = to_transcript(stored(), roles=("customer", "agent"))
    assert [(p.speaker, p.channel) for p in transcript.speakers] == [("customer", 0), ("agent", 1)]
    assert [s.channel for s in transcript.sentenceList] == [1, 0]
    flipped = to_transcript(stored(), roles=("agent", "customer"))
    assert [s.channel for s in flipped.sentenceList] == [0, 1]
    other_names = to_transcript(stored(), roles=("caller", "operator"))
    assert [s.channel for s in other_names.sentenceList] == [None, None]
    mono = to_transcript(
        stored(),
        roles=("customer", "agent"),
        recording=recording("2024-06-21T08:27:34.084Z", "2024-06-21T08:28:36.930Z", 1),
    )
    assert [s.channel for s in mono.sentenceList] == [None, None]


def test_an_unknown_speaker_id_is_named_by_its_number() -> None:
    body = example()
    body["conversation"]["recordList"][0]["sentenceList"][0]["speakerId"] = 3
    parsed = PushBody.model_validate(body).conversation
    transcript = to_transcript(StoredPush.of(parsed, parsed.recordList[0]))
    assert [(p.speakerId, p.speaker) for p in transcript.speakers] == [
        (1, "customer"),
        (2, "agent"),
        (3, "speaker 3"),
    ]
    assert transcript.sentenceList[0].speaker == "speaker 3"


def test_sentences_are_put_in_start_order_and_numbered_again() -> None:
    body = example()
    first, second = body["conversation"]["recordList"][0]["sentenceList"]
    first["sequence"], second["sequence"] = 7, 3
    body["conversation"]["recordList"][0]["sentenceList"] = [second, first]
    parsed = PushBody.model_validate(body).conversation
    transcript = to_transcript(StoredPush.of(parsed, parsed.recordList[0]))
    assert [(s.sequence, s.text) for s in transcript.sentenceList] == [
        (1, "私はコムデザイン一郎です"),
        (2, "パソコンの調子が悪いです"),
    ]


def test_without_connect_time_offsets_count_from_the_first_sentence() -> None:
    transcript = to_transcript(stored(connectTime=None, disconnectTime=None))
    assert [(s.startOffsetMs, s.endOffsetMs) for s in transcript.sentenceList] == [(0, 1800), (3820, 5650)]
    assert transcript.durationSeconds == 5.65  # up to the last sentence's end
    assert transcript.sentenceList[0].startTime == "2024-06-21T08:27:38.444Z"


def test_ids_sent_as_strings_like_the_websocket_apis_are_accepted() -> None:
    body = example()
    body["conversation"]["sessionId"] = "942125"
    body["conversation"]["recordList"][0]["recordId"] = "1"
    parsed = PushBody.model_validate(body).conversation
    assert StoredPush.of(parsed, parsed.recordList[0]).key.session_id == 942125


def test_times_written_in_another_zone_are_served_in_utc_like_the_platforms_example() -> None:
    body = example()
    first = body["conversation"]["recordList"][0]["sentenceList"][0]
    first["startTime"], first["endTime"] = "2024-06-21T17:27:38.444+09:00", "2024-06-21T17:27:40.2+09:00"
    parsed = PushBody.model_validate(body).conversation
    transcript = to_transcript(StoredPush.of(parsed, parsed.recordList[0]))
    sentence = transcript.sentenceList[0]
    assert (sentence.startTime, sentence.endTime) == ("2024-06-21T08:27:38.444Z", "2024-06-21T08:27:40.200Z")
    assert (sentence.startOffsetMs, sentence.endOffsetMs) == (4360, 6116)


def test_fields_used_for_nothing_are_accepted_whatever_their_type() -> None:
    # The page is marked 開発中 and the platform pushes once: a type it changes in a field this
    # server does not use must not cost the call its sentences.
    body = example()
    conversation = body["conversation"]
    conversation.update(status=1, completed=True, direction="1", discription={"note": "x"}, description=None)
    conversation["recordList"][0].update(agentId=83330001, ani=None, dnis=["05053698333"])
    parsed = PushBody.model_validate(body).conversation
    kept = StoredPush.of(parsed, parsed.recordList[0])
    assert (kept.direction, kept.agentId, kept.ani, kept.dnis) == (1, "83330001", None, None)
    assert len(to_transcript(kept).sentenceList) == 2
