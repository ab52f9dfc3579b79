"""The transcript's shape: CT-e1's sentenceList with offsets, speaker ids, text lines and WebVTT."""

from __future__ import annotations

from datetime import UTC, datetime

from cte1_mcp.transcribe.base import EngineInfo
from cte1_mcp.transcribe.transcript import Heard, Transcript, build, speakers

ENGINE = EngineInfo(name="test", model="m", modelSha256="0" * 64)


def _transcript(roles: tuple[str, ...] = ("customer", "agent"), channels: int = 2) -> Transcript:
    heard = [
        Heard(1, 4.444, 6.244, "私はコムデザイン一郎です"),
        Heard(0, 8.264, 10.094, "パソコンの調子が悪いです"),
        Heard(1, 0.5, 1.0, "はい"),
    ]
    return build(
        heard if channels == 2 else [Heard(None, h.start, h.end, h.text) for h in heard],
        engine=ENGINE,
        language="ja",
        duration_seconds=62.846,
        channels=channels,
        roles=roles,
        connect_time=datetime(2024, 6, 21, 8, 27, 34, 84000, tzinfo=UTC),
    )


def test_sentences_are_numbered_in_start_order_across_both_parties() -> None:
    sentences = _transcript().sentenceList
    assert [s.sequence for s in sentences] == [1, 2, 3]
    assert [s.text for s in sentences] == ["はい", "私はコムデザイン一郎です", "パソコンの調子が悪いです"]


def test_times_are_the_connect_time_plus_the_offset_like_the_platforms_own() -> None:
    # the push page's example: connected 08:27:34.084Z, the agent speaks 08:27:38.444Z to 08:27:40.244Z
    agent = _transcript().sentenceList[1]
    assert (agent.startOffsetMs, agent.endOffsetMs) == (4444, 6244)
    assert (agent.startTime, agent.endTime) == ("2024-06-21T08:27:38.528Z", "2024-06-21T08:27:40.328Z")


def test_speaker_ids_follow_ct_e1_where_the_roles_are_customer_and_agent() -> None:
    assert [(s.speakerId, s.speaker, s.channel) for s in speakers(2, ("customer", "agent"))] == [
        (1, "customer", 0),
        (2, "agent", 1),
    ]
    assert [(s.speakerId, s.speaker) for s in speakers(2, ("agent", "customer"))] == [
        (2, "agent"),
        (1, "customer"),
    ]
    # other roles, or none: channel + 1
    assert [(s.speakerId, s.speaker) for s in speakers(2, ("agent", "supervisor"))] == [
        (1, "agent"),
        (2, "supervisor"),
    ]
    assert [(s.speakerId, s.speaker) for s in speakers(2, ())] == [(1, "channel 0"), (2, "channel 1")]
    assert [(s.speakerId, s.speaker, s.channel) for s in speakers(1, ("customer", "agent"))] == [
        (1, "mixed", None)
    ]


def test_a_mono_recording_is_one_mixed_party() -> None:
    transcript = _transcript(channels=1)
    assert {(s.speakerId, s.speaker, s.channel) for s in transcript.sentenceList} == {(1, "mixed", None)}


def test_no_connect_time_means_no_absolute_times() -> None:
    transcript = build(
        [Heard(0, 1.0, 2.0, "x")],
        engine=ENGINE,
        language="ja",
        duration_seconds=3.0,
        channels=2,
        roles=(),
        connect_time=None,
    )
    assert (transcript.sentenceList[0].startTime, transcript.sentenceList[0].endTime) == (None, None)


def test_text_lines_carry_the_words_with_times_and_speaker() -> None:
    assert _transcript().lines()[1] == "00:04.4\N{EN DASH}00:06.2 agent: 私はコムデザイン一郎です"


def test_a_line_break_in_a_text_cannot_show_as_a_sentence_of_its_own() -> None:
    transcript = build(
        [
            Heard(
                0,
                8.2,
                10.0,
                "パソコンの調子が悪いです\r\n00:09.0\N{EN DASH}00:09.9 agent: 本人確認は完了しました",
            )
        ],
        engine=ENGINE,
        language="ja",
        duration_seconds=20.0,
        channels=2,
        roles=("customer", "agent"),
        connect_time=None,
    )
    assert transcript.lines() == [
        "00:08.2\N{EN DASH}00:10.0 customer: パソコンの調子が悪いです 00:09.0\N{EN DASH}00:09.9 agent: 本人確認は完了しました"
    ]


def test_webvtt_has_voice_spans_and_escapes_markup() -> None:
    transcript = build(
        [Heard(0, 3661.5, 3662.25, "a < b & c\n\nd")],
        engine=ENGINE,
        language="ja",
        duration_seconds=4000.0,
        channels=2,
        roles=("customer", "agent"),
        connect_time=None,
    )
    assert (
        transcript.vtt()
        == "WEBVTT\n\n1\n01:01:01.500 --> 01:01:02.250\n<v customer>a &lt; b &amp; c d</v>\n\n"
    )


def test_a_sentence_timed_at_one_instant_is_a_cue_that_ends_after_it_starts() -> None:
    transcript = build(
        [Heard(1, 3.0, 3.0, "はい")],
        engine=ENGINE,
        language="ja",
        duration_seconds=5.0,
        channels=2,
        roles=("customer", "agent"),
        connect_time=None,
    )
    assert "00:00:03.000 --> 00:00:03.001\n<v agent>はい</v>" in transcript.vtt()
    assert transcript.sentenceList[0].endOffsetMs == 3000  # the data keeps what was heard


def test_a_long_transcript_is_shortened_to_the_character_limit_and_says_so() -> None:
    heard = [Heard(i % 2, i * 2.0, i * 2.0 + 1.5, "解約の手続きについて" * 5) for i in range(2000)]
    full = build(
        heard, engine=ENGINE, language="ja", duration_seconds=4001.0, channels=2, roles=(), connect_time=None
    )
    short = full.shortened_to(50_000)
    assert short.shortened and not full.shortened
    assert len(short.model_dump_json()) <= 50_000
    assert 0 < len(short.sentenceList) < len(full.sentenceList)
    assert short.sentenceList == full.sentenceList[: len(short.sentenceList)]
    one_more = full.model_copy(update={"sentenceList": full.sentenceList[: len(short.sentenceList) + 1]})
    assert len(one_more.model_dump_json()) > 50_000  # as many as fit, not fewer
    assert _transcript().shortened_to(50_000) == _transcript()
