"""Whisper models in CTranslate2's layout, through faster-whisper (the optional extra ``whisper``).

Decoding is made deterministic and call-shaped: temperature 0 only (Whisper's default falls back to
sampling at higher temperatures, which gives different text run to run), beam search, no
conditioning on the previous window (the main cause of Whisper's repetition loops), and no VAD of
its own (the pipeline hands it only a party's own talk, cut by this server's analyser). The model is
read from its folder only (``local_files_only``): the server never downloads at transcription time.

What faster-whisper reads beside model.bin is checked against it before the model is used:
CTranslate2 faults (ending the whole process) in word alignment when config.json's
``alignment_heads`` are of another Whisper, and a tokenizer.json or preprocessor_config.json of
another model fails on every recording. The cheap checks run here; then the model is loaded and
made to decode and align once in a child process (``faster_whisper_probe``) before this process
loads it. Alignment heads that are missing or not model.bin's are the one thing fixed rather than
refused, and only in an install's own copy (``fit_alignment_heads``): a published model has them
wrong (kotoba-whisper-v2.0), and word timestamps need some.
"""

from __future__ import annotations

import json
import re
import secrets
import stat
import struct
import subprocess
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
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
from cte1_mcp.transcribe.engines import child_probe

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
#: Loading large-v3 on a CPU and encoding one window takes tens of seconds; this bounds a stuck child.
PROBE_TIMEOUT_SECONDS = 300.0
#: What the probe child runs (``python -m``).
PROBE_MODULE = "cte1_mcp.transcribe.engines.faster_whisper_probe"
#: The special tokens faster-whisper builds every prompt and suppression list from.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|startoftranscript|>",
    "<|translate|>",
    "<|transcribe|>",
    "<|startoflm|>",
    "<|startofprev|>",
    "<|notimestamps|>",
)
#: Without a preprocessor_config.json faster-whisper computes this many mel bins.
DEFAULT_FEATURE_SIZE = 80
_NEXT_STEP = (
    "use the files published together with this model.bin (cte1-mcp models pull, or models import "
    "from an untouched copy)"
)


def matches(model_dir: Path) -> bool:
    """A CTranslate2 Whisper conversion: all of its files are there (names only, nothing read)."""
    return all((model_dir / name).is_file() for name in REQUIRED_FILES) and any(
        path.is_file() for path in model_dir.glob(VOCABULARY_GLOB)
    )


def load(model_dir: Path, *, device: str, compute_type: str | None, threads: int) -> Transcriber:
    """The model in ``model_dir`` on ``device`` (``cpu``, ``cuda``, ``auto``: CUDA when CTranslate2
    sees a device, else the CPU); ``compute_type`` None means int8 on CPU (Whisper-base: 2-3x faster
    than float32 for the same text) and the model's own precision elsewhere."""
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
    device = _resolve_device(device)
    chosen = compute_type or ("int8" if device == "cpu" else "default")
    try:
        check_config(model_dir)
        _probe(model_dir, device, chosen, threads)
    except OSError as exc:  # a file went away or became unreadable while it was checked
        raise ModelUnusable(f"{exc.filename or model_dir} cannot be read: {exc.strerror}") from None
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
    try:
        check_loaded(model, model_dir)  # the probe did; the files may have changed since
    except ModelUnusable:
        model.model.unload_model()
        raise
    info = EngineInfo(
        name=NAME,
        model=model_dir.name,
        modelSha256=cached_fingerprint(model_dir),
        device=device,
        # what CTranslate2 chose when left to it, not "default"
        computeType=chosen if chosen not in ("default", "auto") else str(model.model.compute_type),
    )
    return FasterWhisper(model, info)


def _resolve_device(device: str) -> str:
    """``auto`` as the device it means here, so the CPU's int8 rule applies to it and a transcript
    names the device that made it; ``cuda`` refused at once where there is none."""
    if device not in ("auto", "cuda"):
        return device
    import ctranslate2  # type: ignore[import-untyped]  # installed with faster-whisper

    try:
        gpus = int(ctranslate2.get_cuda_device_count())
    except Exception:  # a CUDA runtime that fails to initialise counts as none
        gpus = 0
    if gpus:
        return "cuda"
    if device == "cuda":
        raise ModelUnusable(
            "device cuda was asked, but CTranslate2 sees no CUDA device here (no GPU, no driver, or a "
            "build without CUDA): set CTE1_ASR_DEVICE=cpu, or auto to use a GPU only when there is one"
        )
    return "cpu"


@dataclass(frozen=True, slots=True)
class ModelShape:
    """What config.json's numbers must fit, read from model.bin's table of variables."""

    decoder_layers: int
    decoder_heads: int
    vocabulary_size: int


#: Whisper-base's table has 214 variables, large-v3's about a thousand: more is not such a table.
MAX_VARIABLES = 100_000
_DECODER_LAYER = re.compile(r"decoder/layer_(\d+)/")
#: CTranslate2's integer types (``DataType``: float32, int8, int16, int32, float16, bfloat16).
_INTEGER_TYPES = (1, 2, 3)


def read_shape(model_bin: Path) -> ModelShape | None:
    """The decoder's layers and heads and the vocabulary's size from model.bin's header (CTranslate2's
    binary format 4-6: each variable's name, shape, type and size before its bytes, which are
    skipped: about a millisecond). None when the file is not in a form this reads: the probe then
    checks alone."""
    layers: set[int] = set()
    heads = vocabulary = None
    try:
        with model_bin.open("rb") as file:

            def number(fmt: str) -> int:
                value: int = struct.unpack(f"<{fmt}", file.read(struct.calcsize(fmt)))[0]
                return value

            def text() -> str:
                return file.read(number("H")).rstrip(b"\0").decode("utf-8")

            if not 4 <= number("I") <= 6 or text() != "WhisperSpec":
                return None
            number("I")  # the spec's revision
            count = number("I")
            if count > MAX_VARIABLES:
                return None
            for _ in range(count):
                name = text()
                shape = [number("I") for _ in range(number("B"))]
                kind, size = number("B"), number("I")
                if name == "decoder/num_heads" and kind in _INTEGER_TYPES and not shape:
                    heads = int.from_bytes(file.read(size), "little", signed=True)
                else:
                    file.seek(size, 1)
                if name == "decoder/embeddings/weight" and len(shape) == 2:
                    vocabulary = shape[0]
                if layer := _DECODER_LAYER.match(name):
                    layers.add(int(layer[1]))
    except (struct.error, UnicodeDecodeError, ValueError):
        return None
    if not layers or heads is None or vocabulary is None:
        return None
    return ModelShape(max(layers) + 1, heads, vocabulary)


def check_config(model_dir: Path) -> None:
    """config.json's numbers against model.bin: ``alignment_heads`` (``[decoder layer, head]``, which
    CTranslate2 indexes without a bound check: a large model's beside base's model.bin faults the
    process; and has no default for: word alignment fails without them) within the decoder, and the
    token ids it suppresses or takes for languages within the vocabulary. A config.json that is not
    JSON is left to the load, which names it."""
    shape = read_shape(model_dir / "model.bin")
    config = _read_config(model_dir)
    if shape is None or config is None:
        return
    where = f"config.json in {model_dir}"
    misfit = misfit_heads(config, shape)
    if misfit is not None:
        # Never edited here (the folder is the user's); an install copies it and sets default heads.
        install = f"`cte1-mcp models import NAME {model_dir}`"
        raise HeadsDoNotFit(
            f"{where} has {misfit}; this folder is used as it is: {install} installs a copy of it with "
            "default alignment heads (every head of the decoder's second half)",
            next_step=f"Ask the operator to run {install}, which installs a copy of the model with "
            "default alignment heads (the folder itself is left as it is), set CTE1_ASR_MODEL to that "
            "NAME and restart the server.",
        )
    for key in ("suppress_ids", "suppress_ids_begin", "lang_ids"):
        ids = config.get(key) or []
        wrong = (
            [n for n in ids if type(n) is not int or not 0 <= n < shape.vocabulary_size]
            if isinstance(ids, list)
            else [ids]
        )
        if wrong:
            raise ModelUnusable(
                f"{where} has {key} {json.dumps(wrong[0])[:40]}, outside model.bin's vocabulary of "
                f"{shape.vocabulary_size} tokens: config.json is of another model; {_NEXT_STEP}"
            )


class HeadsDoNotFit(ModelUnusable):
    """config.json's alignment_heads are missing or not model.bin's, in a folder the server uses as
    it is; ``next_step`` is the install that fixes them (``fit_alignment_heads``)."""

    def __init__(self, message: str, *, next_step: str) -> None:
        super().__init__(message)
        self.next_step = next_step


def _read_config(model_dir: Path) -> dict[str, Any] | None:
    """config.json as a JSON object, or None when it is not one (the load then names it)."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def misfit_heads(config: dict[str, Any], shape: ModelShape) -> str | None:
    """What is wrong with config.json's ``alignment_heads`` for model.bin's decoder, or None when
    every one is a ``[layer, head]`` it has."""
    heads = config.get("alignment_heads")
    if not heads:
        return "no alignment_heads, which CTranslate2 needs for word timestamps (it has no default)"
    for entry in heads if isinstance(heads, list) else [heads]:
        if not (
            isinstance(entry, list)
            and len(entry) == 2
            and all(type(n) is int for n in entry)
            and 0 <= entry[0] < shape.decoder_layers
            and 0 <= entry[1] < shape.decoder_heads
        ):
            return (
                f"alignment_heads {json.dumps(entry)[:40]}, which model.bin's decoder "
                f"({shape.decoder_layers} layers of {shape.decoder_heads} heads) does not have "
                "(another Whisper model's heads)"
            )
    return None


def default_alignment_heads(shape: ModelShape) -> list[list[int]]:
    """Every head of the second half of the decoder's layers: what openai-whisper uses for a model
    without tuned heads (``all_heads[n_text_layer // 2 :] = True``, whisper/model.py) and what
    CTranslate2's converter writes when given none. On Whisper-base its word times were within
    0.1-0.2 s of base's tuned heads."""
    return [
        [layer, head]
        for layer in range(shape.decoder_layers // 2, shape.decoder_layers)
        for head in range(shape.decoder_heads)
    ]


def fit_alignment_heads(model_dir: Path) -> str | None:
    """Give ``model_dir``'s config.json the default alignment heads when its own are missing or not
    model.bin's, for an install's own copy of the files, never a user's folder. Some conversions
    publish another model's heads: kotoba-whisper-v2.0's config.json has large-v3's (32 decoder
    layers) beside its 2-layer decoder, and CTranslate2's word alignment faults on them
    (kotoba-tech/kotoba-whisper#2). The file is replaced atomically, with the same permissions, every
    other key kept in its order. Returns what was changed, in a sentence, or None when nothing was
    (the heads fit, or model.bin's header or config.json cannot be read: the load's checks decide)."""
    shape = read_shape(model_dir / "model.bin")
    config = _read_config(model_dir)
    if shape is None or config is None:
        return None
    misfit = misfit_heads(config, shape)
    if misfit is None:
        return None
    heads = default_alignment_heads(shape)
    # an existing key keeps its place; a missing one goes first, where CTranslate2 writes it
    rewritten = (
        {**config, "alignment_heads": heads}
        if "alignment_heads" in config
        else {"alignment_heads": heads, **config}
    )
    path = model_dir / "config.json"
    temporary = model_dir / f".config.json.{secrets.token_hex(4)}"
    try:
        temporary.write_text(json.dumps(rewritten, indent=2) + "\n", encoding="utf-8")
        temporary.chmod(stat.S_IMODE(path.stat().st_mode))
        temporary.replace(path)
    finally:
        temporary.unlink(missing_ok=True)
    return (
        f"config.json had {misfit}; its alignment_heads were set to every head of the decoder's second "
        f"half ({json.dumps(heads[0])}..{json.dumps(heads[-1])}), Whisper's default for a model without "
        "tuned heads, so word timestamps work"
    )


def check_loaded(model: Any, model_dir: Path) -> None:
    """What faster-whisper reads beside model.bin against the loaded model (a WhisperModel):
    tokenizer.json must be Whisper's, with its languages where model.bin has them (another one loads,
    then fails on every recording), and preprocessor_config.json must compute the mel bins model.bin
    takes (large-v3's 128 beside an 80-bin model fail every encoding)."""
    tokenizer = model.hf_tokenizer
    ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
    no_speech = tokenizer.token_to_id("<|nospeech|>") or tokenizer.token_to_id("<|nocaptions|>")
    missing = [token for token, found in ids.items() if found is None]
    if no_speech is None:
        missing.append("<|nospeech|>")
    if missing:
        raise ModelUnusable(
            f"tokenizer.json in {model_dir} is not a Whisper tokenizer (it has no "
            f"{', '.join(missing[:3])}); {_NEXT_STEP}"
        )
    if model.model.is_multilingual:
        # Whisper's language tokens follow <|startoftranscript|>, <|translate|> right after them
        languages = int(model.model.num_languages)
        has = ids["<|translate|>"] - ids["<|startoftranscript|>"] - 1
        if has != languages:
            raise ModelUnusable(
                f"tokenizer.json in {model_dir} has {has} language tokens where model.bin has "
                f"{languages}: the tokenizer is of another Whisper model; {_NEXT_STEP}"
            )
    features = model.feat_kwargs.get("feature_size", DEFAULT_FEATURE_SIZE)
    mels = int(model.model.n_mels)
    if features != mels:
        said = (
            f"preprocessor_config.json in {model_dir} says feature_size {features!r}"
            if (model_dir / "preprocessor_config.json").is_file()
            else f"there is no preprocessor_config.json in {model_dir} saying so (faster-whisper then "
            f"computes {features})"
        )
        raise ModelUnusable(f"model.bin takes {mels} mel bins, but {said}; {_NEXT_STEP}")


def _probe(model_dir: Path, device: str, compute_type: str, threads: int) -> None:
    """Load the model, decode and align once in a child (once per version of its files, device and
    precision) and turn what ended it into a reason."""
    files = sorted(path for path in model_dir.iterdir() if path.is_file())
    key = (device, compute_type, *(child_probe.stat_key(path) for path in files))
    if key in _probed:
        return
    config = {"model_dir": str(model_dir), "device": device, "compute_type": compute_type, "threads": threads}
    try:
        child = child_probe.run(PROBE_MODULE, config, timeout=PROBE_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        raise ModelUnusable(
            f"The Whisper model in {model_dir} did not load and decode within {PROBE_TIMEOUT_SECONDS:.0f} s"
        ) from None
    if child.ok:
        _probed.add(key)
        return
    answer = child.answer
    if "unusable" in answer:  # check_loaded's own reason
        raise ModelUnusable(str(answer["unusable"]))
    step = str(answer.get("step", "load"))
    if step == "load" and "error" in answer:  # what loading it here would have said
        raise ModelUnusable(
            f"The Whisper model in {model_dir} does not load: {answer['error'] or answer.get('kind')}"
        )
    if "error" in answer:
        what = f"{_STEPS.get(step, step)} failed ({answer.get('kind')}: {answer['error']})"
    else:
        ended = child.signal or f"exit status {child.returncode}"
        last = f": {child.log[-1][:200]}" if child.log else ""
        what = f"{_STEPS.get(step, step)} ended the process ({ended}{last})"
    raise ModelUnusable(
        f"The Whisper model in {model_dir} does not work: {what}; {_CAUSES.get(step, _NEXT_STEP)}"
    )


_probed = child_probe.Probed()
#: The probe's steps, as the parent names them, and what a failure in each says about the files.
_STEPS = {"load": "loading it", "decode": "decoding", "align": "word alignment"}
_CAUSES = {
    "load": f"model.bin or config.json is damaged or not a CTranslate2 Whisper model; {_NEXT_STEP}",
    "decode": f"config.json or tokenizer.json does not belong with model.bin; {_NEXT_STEP}",
    "align": f"config.json's alignment_heads do not fit model.bin (a config.json of another Whisper size?); {_NEXT_STEP}",
}


class FasterWhisper:
    """A loaded Whisper model (see :class:`~cte1_mcp.transcribe.base.Transcriber`)."""

    def __init__(self, model: Any, info: EngineInfo) -> None:
        self._model = model
        self._info = info

    @property
    def info(self) -> EngineInfo:
        return self._info

    def cannot_hear(self, language: str) -> str | None:
        if not self._model.model.is_multilingual:
            if language != "en":
                return f"{self._info.model} is an English-only Whisper model; it cannot hear {language!r}"
            return None
        if language not in self._model.supported_languages:
            return (
                f"{language!r} is not a language Whisper knows: it takes a language code such as ja "
                "(Japanese), en, zh or ko, not a country code"
            )
        # check_loaded placed the model's languages right after <|startoftranscript|>
        token = self._model.hf_tokenizer.token_to_id(f"<|{language}|>")
        first = self._model.hf_tokenizer.token_to_id("<|startoftranscript|>") + 1
        languages = int(self._model.model.num_languages)
        if token is None or not first <= token < first + languages:
            return (
                f"{self._info.model} was not trained on {language!r} (not one of its {languages} languages)"
            )
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
