"""The guards against engines' known failure modes, on crafted engine outputs (what Whisper is known
to produce: loops, subtitle lines for noise, more text than the audio could hold). The real model on
real speech is held to them in test_transcribe_whisper_corpus.py."""

from __future__ import annotations

from collections.abc import Iterator

from cte1_mcp.transcribe import guards
from cte1_mcp.transcribe.base import Recognised
from cte1_mcp.transcribe.transcript import Heard


def texts(items: list[Recognised]) -> list[str]:
    return [item.text for item in items]


def test_a_phrase_looping_inside_a_sentence_is_kept_once() -> None:
    looped = "ご確認ありがとうございます。" + "よろしくお願いします。" * 12
    [kept] = guards.apply([Recognised(0.0, 6.0, looped)], 6.0)
    assert kept.text == "ご確認ありがとうございます。よろしくお願いします。"


def test_a_word_said_three_times_is_speech_not_a_loop() -> None:
    assert texts(guards.apply([Recognised(0.0, 1.5, "はいはいはい")], 1.5)) == ["はいはいはい"]
    assert texts(guards.apply([Recognised(0.0, 1.5, "はいはいはいはい")], 1.5)) == ["はい"]


def test_the_same_sentence_repeated_across_segments_is_kept_once() -> None:
    loop = [Recognised(float(i), float(i + 1), "ありがとうございます。") for i in range(6)]
    before = [Recognised(0.0, 0.5, "はい。")]
    kept = guards.apply(before + loop + [Recognised(7.0, 8.0, "失礼します。")], 8.0)
    assert texts(kept) == ["はい。", "ありがとうございます。", "失礼します。"]
    assert kept[1].start == 0.0  # the first of the run, with its own times


def test_a_sentence_said_twice_in_a_row_stays() -> None:
    twice = [Recognised(0.0, 0.5, "はい。"), Recognised(0.6, 1.0, "はい。")]
    assert guards.apply(twice, 1.0) == twice


def test_subtitle_lines_and_sound_captions_are_dropped() -> None:
    invented = [
        "ご視聴ありがとうございました",
        "チャンネル登録お願いします!",
        "(音楽)",
        "【拍手】",
        "♪～",
        "…",
        "Thank you for watching.",
    ]
    items = [Recognised(0.0, 2.0, text) for text in invented]
    assert guards.apply([*items, Recognised(2.0, 4.0, "ありがとうございました。")], 4.0) == [
        Recognised(2.0, 4.0, "ありがとうございました。")
    ]


def test_call_phrases_that_resemble_subtitle_lines_are_kept() -> None:
    said = [
        "ありがとうございました。",
        "お疲れ様です。",
        "登録のご住所を確認します。",
        "(株)さくら通信です。",
    ]
    items = [Recognised(float(i), float(i + 2), text) for i, text in enumerate(said)]
    assert texts(guards.apply(items, 6.0)) == said


def test_more_text_than_the_audio_could_hold_is_cut_at_a_punctuation_mark() -> None:
    # 1.5 s holds at most 23 characters at 15 a second: the invented tail goes, the head stays.
    text = "本日はご連絡ありがとうございます、" + "担当者より折り返しご連絡を差し上げます。"
    [kept] = guards.apply([Recognised(0.0, 1.5, text)], 1.5)
    assert kept.text == "本日はご連絡ありがとうございます、"
    assert guards.spoken_chars(kept.text) <= guards.MAX_CHARS_PER_SECOND * 1.5


def test_a_long_sentence_without_a_pause_mark_is_cut_at_the_bound() -> None:
    [kept] = guards.apply(
        [Recognised(0.0, 2.0, "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめも")], 2.0
    )
    assert guards.spoken_chars(kept.text) == guards.MAX_CHARS_PER_SECOND * 2


def test_a_sentence_at_a_normal_pace_is_untouched() -> None:
    text = "パソコンの調子が悪いんです。"  # 13 characters in 1.8 s: 7 a second
    assert guards.apply([Recognised(0.2, 2.0, text)], 2.2) == [Recognised(0.2, 2.0, text)]


def test_a_short_reply_with_almost_no_duration_is_not_cut() -> None:
    # engines give 「はい、そうです。」 0.2 s at times: the rate is taken over a second at least
    assert texts(guards.apply([Recognised(1.0, 1.2, "はい、そうです。")], 1.5)) == ["はい、そうです。"]


def test_the_rate_uses_the_time_inside_the_piece() -> None:
    # an engine timing a sentence past the piece's end gets no extra room for it
    text = "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめも"
    [kept] = guards.apply([Recognised(0.0, 30.0, text)], 2.0)
    assert kept.text == text[:30]


def test_empty_and_blank_sentences_are_dropped() -> None:
    assert guards.apply([Recognised(0.0, 1.0, ""), Recognised(0.0, 1.0, "  ")], 1.0) == []


def echo_on(*channels: int) -> guards.Echo:
    """The audio's verdict: these channels carry the other's delayed copy wherever asked."""
    return lambda channel, start, end: channel in channels


def test_the_other_partys_words_on_a_channel_carrying_its_copy_are_its_echo() -> None:
    heard = [
        Heard(1, 0.6, 6.0, "お電話ありがとうございます。さくら通信の田中でございます。"),
        Heard(0, 0.5, 2.7, "お電話ありがとうございます"),  # the echo, split and spelt otherwise
        Heard(0, 2.7, 6.6, "サクラ通信の田中でございます"),
    ]
    assert guards.drop_echoes(heard, echo_on(0)) == heard[:1]


def test_the_same_words_said_by_both_parties_at_once_are_both_kept() -> None:
    heard = [Heard(0, 1.0, 1.4, "はい。"), Heard(1, 1.1, 1.5, "はい。")]
    assert guards.drop_echoes(heard, echo_on()) == heard  # two voices: the audio says no copy


def test_other_words_are_never_an_echo_whatever_the_audio_says() -> None:
    heard = [Heard(1, 0.0, 4.0, "解約手数料はかかりません。"), Heard(0, 1.0, 2.0, "本当ですか。")]
    assert guards.drop_echoes(heard, echo_on(0, 1)) == heard


def test_a_mono_recording_has_no_echo_to_drop() -> None:
    heard = [Heard(None, 0.0, 1.0, "はい。"), Heard(None, 0.5, 1.5, "はい。")]
    assert guards.drop_echoes(heard, echo_on(0, 1)) == heard


class CountingList(list[Heard]):
    """A list that counts how often it is walked: how many passes over a call's sentences."""

    passes = 0

    def __iter__(self) -> Iterator[Heard]:
        self.passes += 1
        return super().__iter__()


def test_echo_check_walks_a_long_call_a_bounded_number_of_times() -> None:
    """A 2-hour call has thousands of sentences: each must be compared with the other party's
    sentences near it, not with every sentence of the call (that was 1 + n passes)."""
    heard = CountingList(
        Heard(index % 2, index * 1.5, index * 1.5 + 1.2, f"文{index}です") for index in range(4000)
    )
    kept = guards.drop_echoes(heard, echo_on())
    passes = heard.passes
    assert passes <= 2
    assert kept == list(heard)


def test_echo_check_finds_a_long_sentence_of_the_other_party_that_began_long_before() -> None:
    """Candidates are found by start time; one that began 25 s earlier still overlaps."""
    heard = [
        Heard(1, 0.0, 26.0, "長い説明でございます。" * 3),
        *(Heard(1, 30.0 + i, 30.5 + i, "はい") for i in range(5)),
        Heard(0, 25.0, 25.9, "長い説明でございます"),
    ]
    heard.sort(key=lambda h: h.start)
    assert guards.drop_echoes(heard, echo_on(0)) == [h for h in heard if h.channel == 1]


def test_digits_repeated_are_a_number_not_a_loop() -> None:
    said = [
        "料金は10000円です。",
        "お電話番号は090-1111-2222です。",
        "暗証番号は0000で登録されています。",
        "口座番号は１１１１２２２２です。",  # full-width, as Whisper sometimes writes them
        # in kanji or read out (before: 「一〇円」, 「〇九〇一二」, 「ゼロ」: a reviewer's number changed)
        "料金は一〇〇〇〇円です。",
        "お電話番号は〇九〇一一一一二二二二です。",
        "暗証番号はゼロゼロゼロゼロです。",
        "いちいちいちいちです。",
        # several digits repeated, and a phone number's long vowels (before: 「イチニ」, 「ゴー」)
        "イチニイチニイチニイチニです。",
        "ゼロイチゼロイチゼロイチゼロイチです。",
        "ゴーゴーゴーゴーです。",
    ]
    items = [Recognised(float(i), float(i + 3), text) for i, text in enumerate(said)]
    assert texts(guards.apply(items, len(said) + 3.0)) == said


def test_a_word_of_a_subtitle_line_inside_a_callers_sentence_is_kept() -> None:
    said = [
        "有料チャンネルのご視聴契約を解約したいです。",
        "字幕が表示されなくなりました。",
        "字幕作成の依頼です。",
        "字幕作成者を募集しています。",
        "チャンネル登録の変更をお願いします。",
        "高評価のレビューを書きました。",
    ]
    items = [Recognised(float(i), float(i + 3), text) for i, text in enumerate(said)]
    assert texts(guards.apply(items, len(said) + 3.0)) == said


def test_subtitle_lines_run_together_or_credited_are_dropped() -> None:
    invented = [
        "ご視聴ありがとうございました。チャンネル登録よろしくお願いします。",
        "字幕作成者 山田",
        "字幕：山田太郎",
        "Subtitles by the Amara.org community",
    ]
    items = [Recognised(0.0, 3.0, text) for text in invented]
    assert guards.apply(items, 3.0) == []
