"""Whisper models in CTranslate2's layout, through faster-whisper (the optional extra ``whisper``).

Decoding is made deterministic and call-shaped: temperature 0 only (Whisper's default falls back to
sampling at higher temperatures, which gives different text run to run), beam search, no
conditioning on the previous window (the main cause of Whisper's repetition loops), and no VAD of
its own (the pipeline hands it only a party's own talk, cut by this server's analyser). The model is
read from its folder only (``local_files_only``): the server never downloads at transcription time.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cte1_mcp.transcribe.base import (
    EngineInfo,
    ModelUnusable,
    Recognised,
    Transcriber,
    Word,
    cached_fingerprint,
)

NAME = "faster-whisper"
#: What a CTranslate2 Whisper conversion holds (``vocabulary.json`` or ``vocabulary.txt``);
#: ``preprocessor_config.json`` is optional (large-v3's 128 mel bins are read from it).
REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")
VOCABULARY_GLOB = "vocabulary.*"
BEAM_SIZE = 5
#: A window Whisper judges more likely than this not to be speech is skipped. Measured with
#: Whisper-base: 3 s of digital silence 0.75; the corpus's speech pieces at most 0.02.
NO_SPEECH_THRESHOLD = 0.6
#: Word timestamps (an alignment pass over the decoder's attention) time each sentence of a segment
#: by its own words. Measured on the corpus's 5-minute call with Whisper-base int8: 103.5 s of CPU
#: against 97.1 s without (+6.6 %), the same text. Without them a segment's time is shared among its
#: sentences by their spoken length (``_shared``), which engines without word times also use.
#: The words go with each sentence: the pipeline splits one that runs across two packed pieces.
WORD_TIMESTAMPS = True
#: A sentence ends at these (Japanese and ASCII full stops, question and exclamation marks).
SENTENCE_ENDS = "。？！?!"
_SENTENCE = re.compile(f"[^{SENTENCE_ENDS}]+(?:[{SENTENCE_ENDS}]+|$)")
#: Languages written without spaces between words: a space Whisper writes there ends a sentence.
UNSPACED_LANGUAGES = frozenset({"ja", "zh", "yue"})
_UNSPACED_SENTENCE = re.compile(rf"[^{SENTENCE_ENDS}\s]+(?:[{SENTENCE_ENDS}]+|\s+|$)")
#: Morae a kanji takes to say, on average (for sharing a segment's time among its sentences).
KANJI_MORAE = 2.0
_KANJI = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff々]")


def matches(model_dir: Path) -> bool:
    """A CTranslate2 Whisper conversion: all of its files are there (names only, nothing read)."""
    return all((model_dir / name).is_file() for name in REQUIRED_FILES) and any(
        path.is_file() for path in model_dir.glob(VOCABULARY_GLOB)
    )


def load(model_dir: Path, *, device: str, compute_type: str | None, threads: int) -> Transcriber:
    """The model in ``model_dir`` on ``device`` (``cpu``, ``cuda``, ``auto``); ``compute_type`` None
    means int8 on CPU (Whisper-base: 2-3x faster than float32 for the same text) and the model's own
    precision elsewhere."""
    missing = [name for name in REQUIRED_FILES if not (model_dir / name).is_file()]
    if not any(model_dir.glob(VOCABULARY_GLOB)):
        missing.append("vocabulary.json (or .txt)")
    if missing:
        raise ModelUnusable(
            f"The Whisper model folder {model_dir} lacks {', '.join(missing)} "
            "(a CTranslate2 conversion has model.bin, config.json, tokenizer.json and vocabulary.*)"
        )
    try:
        from faster_whisper import WhisperModel
    except ImportError:
        raise ModelUnusable(
            "The model is a Whisper model, but faster-whisper is not installed: "
            "pip install 'cte1-mcp[whisper]'"
        ) from None
    chosen = compute_type or ("int8" if device == "cpu" else "default")
    try:
        model = WhisperModel(
            str(model_dir),
            device=device,
            compute_type=chosen,
            cpu_threads=threads,
            num_workers=1,
            local_files_only=True,
        )
    except Exception as exc:  # CTranslate2 and tokenizers raise plain RuntimeError/ValueError/Exception
        raise ModelUnusable(f"The Whisper model in {model_dir} does not load: {_first_line(exc)}") from None
    info = EngineInfo(
        name=NAME,
        model=model_dir.name,
        modelSha256=cached_fingerprint(model_dir),
        device=device,
        computeType=chosen,
    )
    return FasterWhisper(model, info)


class FasterWhisper:
    """A loaded Whisper model (see :class:`~cte1_mcp.transcribe.base.Transcriber`)."""

    def __init__(self, model: Any, info: EngineInfo) -> None:
        self._model = model
        self._info = info

    @property
    def info(self) -> EngineInfo:
        return self._info

    def cannot_hear(self, language: str) -> str | None:
        if not self._model.model.is_multilingual and language != "en":
            return f"{self._info.model} is an English-only Whisper model; it cannot hear {language!r}"
        return None

    def transcribe(self, audio: npt.NDArray[np.float32], language: str) -> list[Recognised]:
        refused = self.cannot_hear(language)
        if refused is not None:
            raise ModelUnusable(refused)
        segments, _ = self._model.transcribe(
            audio,
            language=language,
            task="transcribe",
            beam_size=BEAM_SIZE,
            temperature=0.0,
            condition_on_previous_text=False,
            vad_filter=False,
            word_timestamps=WORD_TIMESTAMPS,
            without_timestamps=False,
            no_speech_threshold=NO_SPEECH_THRESHOLD,
            # Whisper keeps a window it thinks is not speech when its text is confident; that is
            # how digital silence became 「スタッフを見ることができます」 nine times (log-prob -0.31)
            log_prob_threshold=None,
        )
        sentences: list[Recognised] = []
        for segment in segments:  # a generator: decoding happens while it is read
            sentences.extend(
                split_sentences(
                    segment.words or (),
                    segment.start,
                    segment.end,
                    segment.text,
                    unspaced=language in UNSPACED_LANGUAGES,
                )
            )
        return sentences

    def close(self) -> None:
        model, self._model = self._model, None
        if model is not None:
            model.model.unload_model()


def split_sentences(
    words: Iterable[Any], start: float, end: float, text: str, *, unspaced: bool = False
) -> list[Recognised]:
    """One Whisper segment as sentences, cut after 。？！?! (Whisper's segments often hold two or
    three short sentences, 「はい。承知しました。」) and, in a language written without spaces, at a
    space (where Whisper-base marks the end of a sentence it did not punctuate: 「もしもしすみません
    料金のことで…」). With word timestamps each sentence is timed by its first and last word; without,
    the segment's time is shared by the sentences' spoken length."""
    timed = [Word(float(w.start), float(w.end), str(w.word)) for w in words]
    if not timed:
        pattern = _UNSPACED_SENTENCE if unspaced else _SENTENCE
        return _shared(start, end, [match.group().strip() for match in pattern.finditer(text)])
    sentences: list[Recognised] = []
    current: list[Word] = []
    for word in timed:
        if unspaced and current and word.text[:1].isspace():
            sentences.extend(_sentence(current))
            current = []
        current.append(word)
        if word.text.rstrip().endswith(tuple(SENTENCE_ENDS)):
            sentences.extend(_sentence(current))
            current = []
    sentences.extend(_sentence(current))
    return sentences


def _sentence(words: Sequence[Word]) -> list[Recognised]:
    text = "".join(word.text for word in words).strip()
    if not text:
        return []
    return [Recognised(words[0].start, max(words[0].start, words[-1].end), text, tuple(words))]


def _shared(start: float, end: float, texts: list[str]) -> list[Recognised]:
    """``start``-``end`` divided among ``texts`` in proportion to how long each takes to say."""
    texts = [text for text in texts if text]
    weights = [max(spoken_length(text), 1.0) for text in texts]
    total, elapsed, sentences = sum(weights), 0.0, []
    for text, weight in zip(texts, weights, strict=True):
        begin = start + (end - start) * elapsed / total
        elapsed += weight
        sentences.append(Recognised(round(begin, 3), round(start + (end - start) * elapsed / total, 3), text))
    return sentences


def spoken_length(text: str) -> float:
    """About how many morae ``text`` takes to say: a kanji is read with about two (「電話」 でんわ,
    「確認」 かくにん), kana, letters and digits with one; punctuation and spaces with none."""
    length = 0.0
    for char in unicodedata.normalize("NFKC", text):
        if _KANJI.match(char):
            length += KANJI_MORAE
        elif unicodedata.category(char)[0] in "LN":
            length += 1.0
    return length


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
