"""Checks on what an engine heard in one piece, against the engines' known failure modes.

Applied to every engine's output, before the sentences are placed in the call:

- **Repetition loops.** A decoder that loses track repeats a phrase (「はいはいはいはい…」, or the
  same sentence over and over). A unit repeated ``LOOP_REPEATS`` times or more in a row, in one
  sentence or across consecutive sentences, is kept once: people do say 「はいはいはい」 (three), but
  not one phrase four times running. Numbers are never a loop, in digits, kanji or read out:
  「10000円」, 「一〇〇〇〇円」, 「090-1111-2222」 and a PIN 「0000」 or 「ゼロゼロゼロゼロ」 are what a
  reviewer checks.
- **Text invented for non-speech.** Whisper learnt from subtitled videos and writes their closing
  lines (「ご視聴ありがとうございました」, 「チャンネル登録お願いします」) or captions (「(音楽)」, 「♪」) when
  it hears breath, noise or nothing. A sentence made only of such lines is dropped (the pieces are
  a party's detected talk already: a test on the piece being short or quiet would only let some
  through). Only whole lines count, never a word in a sentence: a pay-TV line's customer says
  「ご視聴契約を解約したいです」 and 「字幕が出ません」. Phrases a call does contain
  (「ありがとうございました」, 「お疲れ様です」) are not on the list.
- **The other party's echo** (two-channel calls). A line echo delayed more than the analyser's
  crosstalk rule reaches (it matches copies up to 8 ms late; the corpus's line echo is 40-60 ms)
  leaves the other party's words on a channel, and the engine hears them there too. A sentence is
  dropped when the other channel says the same words at the same time (``ECHO_MAX_DIFFERENCE``)
  and its own talk there is mostly a delayed copy of the other channel (``echo.EchoTest``). Both
  tests are needed: overtalk has different words, and two people saying 「はい」 together are
  different voices, which do not correlate. Loudness alone was the second test before, and dropped
  genuine replies: a quiet line, or a reply timed beside its talk, looks "quieter".
- **More text than the audio could hold.** Japanese speech runs at about 6-10 characters a second
  (measured on the labelled corpus: see ``MAX_CHARS_PER_SECOND``); a sentence over the bound is an
  invented or looping tail, so it is cut to what its time could hold, at its last sentence-internal
  punctuation mark when there is one (the words an engine gets right come first).
"""

from __future__ import annotations

import bisect
import math
import re
import unicodedata
from collections.abc import Callable

from cte1_mcp.transcribe.base import Recognised
from cte1_mcp.transcribe.cer import edit_distance, normalise
from cte1_mcp.transcribe.transcript import Heard

#: A unit (1-30 characters) repeated this many times in a row is a loop.
LOOP_REPEATS = 4
_LOOP = re.compile(rf"(.{{1,30}}?)\1{{{LOOP_REPEATS - 1},}}", re.DOTALL)
#: The subtitle and video lines Whisper writes for non-speech, whole (NFKC, casefolded, without
#: punctuation and spaces); a sentence made only of these is dropped.
INVENTED = (
    "ご視聴ありがとうございました",
    "ご視聴いただきありがとうございました",
    "ご清聴ありがとうございました",
    "最後までご視聴いただきありがとうございました",
    "最後までご覧いただきありがとうございました",
    "チャンネル登録お願いします",
    "チャンネル登録をお願いします",
    "チャンネル登録よろしくお願いします",
    "高評価お願いします",
    "高評価よろしくお願いします",
    "次回もお楽しみに",
    "thankyouforwatching",
    "thanksforwatching",
    "pleasesubscribe",
)
_INVENTED = re.compile("(?:" + "|".join(map(re.escape, INVENTED)) + ")+")
#: Whisper's subtitle credits, a label then a name: 「字幕作成者 山田」, 「字幕：山田」, "Subtitles by
#: the Amara.org community" (NFKC, casefolded); 「字幕作成の依頼です」 is a caller's sentence.
_CREDIT = re.compile(r"^(?:字幕(?:作成者|制作者|作成|制作|提供)?\s*:|字幕(?:作成者|制作者)\s|subtitles by\s)")
#: A caption for a sound rather than words: (音楽) [拍手] ♪ …
_CAPTION = re.compile(r"^[\s\W]*[(\[（【《〈][^)\]）】》〉]*[)\]）】》〉][\s\W]*$|^[\s♪♫♬〜~ー…・.。、]*$")
#: Upper bound on characters a second of Japanese speech (NFKC, punctuation and spaces removed).
MAX_CHARS_PER_SECOND = 15.0
#: Times shorter than this are not trusted for the rate: an engine may give a short sentence almost
#: no duration (「はい。」 at 0.1 s).
MIN_RATE_SECONDS = 1.0
_INNER_BREAK = re.compile(r"[、。，,？！?!\s]")


def apply(recognised: list[Recognised], piece_seconds: float) -> list[Recognised]:
    """The sentences worth keeping from one piece, in their order."""
    kept: list[Recognised] = []
    for item in recognised:
        text = collapse_loops(item.text.strip())
        if not text or is_invented(text):
            continue
        text = within_rate(text, min(item.end, piece_seconds) - item.start)
        kept.append(Recognised(item.start, item.end, text))
    return _without_repeated_sentences(kept)


#: A sentence at most this far (edit distance over its length) from words the other party says at
#: the same time is their echo, when the audio says its channel carries the other's copy there.
ECHO_MAX_DIFFERENCE = 0.5
#: ``echo(channel, start, end)``: whether the channel's talk there is the other channel's delayed
#: copy (:class:`~cte1_mcp.transcribe.echo.EchoTest`).
Echo = Callable[[int, float, float], bool]


def drop_echoes(heard: list[Heard], echo: Echo) -> list[Heard]:
    """``heard`` without the sentences that are the other party's words leaking onto a channel.

    Each sentence is compared with the other party's sentences that overlap it, found by bisecting
    their start times (a 2-hour call has thousands of sentences: not a scan of all of them each)."""
    sentences = list(heard)
    by_channel: dict[int, _Starts] = {}
    for h in sorted(sentences, key=lambda h: h.start):  # stable: a tie keeps the call's order
        if h.channel is not None:
            by_channel.setdefault(h.channel, _Starts()).add(h)
    kept = []
    for sentence in sentences:
        if sentence.channel is None:
            kept.append(sentence)
            continue
        said = normalise(sentence.text)
        other = normalise(
            "".join(
                h.text
                for channel, starts in by_channel.items()
                if channel != sentence.channel
                for h in starts.overlapping(sentence.start, sentence.end)
            )
        )
        if (
            said
            and other
            and edit_distance(said, other, within=True) <= ECHO_MAX_DIFFERENCE * len(said)
            and echo(sentence.channel, sentence.start, sentence.end)
        ):
            continue
        kept.append(sentence)
    return kept


class _Starts:
    """One channel's sentences in start order, and the longest of them: every sentence overlapping
    ``start``-``end`` begins within ``longest`` before ``start`` and before ``end``."""

    def __init__(self) -> None:
        self.sentences: list[Heard] = []
        self.starts: list[float] = []
        self.longest = 0.0

    def add(self, sentence: Heard) -> None:
        self.sentences.append(sentence)
        self.starts.append(sentence.start)
        self.longest = max(self.longest, sentence.end - sentence.start)

    def overlapping(self, start: float, end: float) -> list[Heard]:
        first = bisect.bisect_left(self.starts, start - self.longest)
        last = bisect.bisect_left(self.starts, end)
        return [h for h in self.sentences[first:last] if h.start < end and start < h.end]


#: Digits as they are read out, in katakana (hiragana is folded to it first), the long vowels of a
#: phone number read aloud (ニー, ゴー, キュー) included: 「ゼロゼロゼロゼロ」 or 「イチニイチニ…」 is
#: a number, not a loop.
_READ_OUT = re.compile(
    "(?:ゼロ|レイ|マル|イチ|ニー?|サン|ヨン|シ|ゴー?|ロク|ナナ|シチ|ハチ|キュ[ウー]|ク|ジュウ)+"
)


def collapse_loops(text: str) -> str:
    """A unit repeated ``LOOP_REPEATS`` times or more in a row, kept once (numbers never)."""
    return _LOOP.sub(_once_unless_number, text)


def _once_unless_number(match: re.Match[str]) -> str:
    unit = match.group(1)
    return match.group(0) if is_number(unit) else unit


def is_number(unit: str) -> bool:
    """Digits in any script (ASCII, full-width, kanji numerals such as 一 and 万) or a digit's kana
    reading (ゼロ, いち)."""
    folded = unicodedata.normalize("NFKC", unit)
    if all(unicodedata.numeric(char, None) is not None for char in folded):
        return True
    katakana = "".join(chr(ord(char) + 0x60) if "ぁ" <= char <= "ゖ" else char for char in folded)
    return _READ_OUT.fullmatch(katakana) is not None


def is_invented(text: str) -> bool:
    """A subtitle line or a caption for a sound: not words anyone said in the call."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    if _CAPTION.match(folded) is not None:
        return True
    spoken = "".join(char for char in folded if _spoken(char))
    return _INVENTED.fullmatch(spoken) is not None or _CREDIT.match(folded.strip()) is not None


def spoken_chars(text: str) -> int:
    """Characters that take time to say: NFKC, without punctuation, symbols and spaces."""
    return sum(1 for char in unicodedata.normalize("NFKC", text) if _spoken(char))


def within_rate(text: str, seconds: float) -> str:
    """``text`` cut to what ``seconds`` of speech could hold (unchanged when it fits)."""
    limit = math.ceil(MAX_CHARS_PER_SECOND * max(seconds, MIN_RATE_SECONDS))
    if spoken_chars(text) <= limit:
        return text
    count, cut = 0, len(text)
    for index, char in enumerate(text):
        count += spoken_chars(char)
        if count > limit:
            cut = index
            break
    head = text[:cut]
    breaks = [match.end() for match in _INNER_BREAK.finditer(head)]
    # at a punctuation mark when one falls in the second half, else where the bound falls
    return head[: breaks[-1]].rstrip() if breaks and breaks[-1] > len(head) // 2 else head


def _spoken(char: str) -> bool:
    return unicodedata.category(char)[0] in "LN"


def _without_repeated_sentences(sentences: list[Recognised]) -> list[Recognised]:
    """The same sentence ``LOOP_REPEATS`` times or more in a row (a loop across sentences), kept once."""
    kept: list[Recognised] = []
    index = 0
    while index < len(sentences):
        run_end = index + 1
        while run_end < len(sentences) and sentences[run_end].text == sentences[index].text:
            run_end += 1
        run = sentences[index:run_end]
        kept.extend(run[:1] if len(run) >= LOOP_REPEATS else run)
        index = run_end
    return kept
