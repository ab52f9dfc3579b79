"""The sherpa-onnx engine: offline (non-streaming) transducers such as ReazonSpeech-k2-v2.

A model is a folder with ``encoder*.onnx``, ``decoder*.onnx``, ``joiner*.onnx`` and ``tokens.txt``
(icefall's export, as sherpa-onnx and ReazonSpeech publish it). Where a part comes both quantised
(``*.int8.onnx``) and not, the encoder and joiner are taken in int8 (they are nearly all of the
weights and the compute) and the decoder in float32: sherpa-onnx's own packaging of ReazonSpeech
ships exactly that set (it deletes the int8 decoder, which saves nothing on a small network).

sherpa-onnx ends the whole process (``_Exit``), rather than raising, on many bad models: a missing
metadata key, a malformed tokens.txt, a tensor of the wrong type. Nothing it could end the server
with is left to it: the cheap checks (files, tokens.txt, the decoder's metadata) run here, and the
model is then loaded once in a child process (``sherpa_onnx_probe``) before this process loads it.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cte1_mcp.transcribe.base import (
    ENGINE_SAMPLE_RATE,
    EngineInfo,
    ModelUnusable,
    Recognised,
    Word,
    cached_fingerprint,
)
from cte1_mcp.transcribe.engines import child_probe
from cte1_mcp.transcribe.engines.onnx_metadata import NotOnnx, read_metadata

NAME = "sherpa-onnx"

#: A sentence ends after one of these (ReazonSpeech-k2 writes none; other transducers do).
SENTENCE_END = frozenset(
    "\N{IDEOGRAPHIC FULL STOP}\N{FULLWIDTH QUESTION MARK}\N{FULLWIDTH EXCLAMATION MARK}?!"
)
#: With no punctuation, a gap this long between two emitted tokens ends a sentence. Inside a
#: phrase a token (a character, for the Japanese models) follows the last within ~0.05-0.3 s; the
#: pipeline already cuts pieces at pauses of 1 s; a breath pause of 0.6-1 s between them falls, in
#: conversational Japanese, mostly where a sentence or clause ends.
PAUSE_SECONDS = 0.6
#: A transducer times each token where it emits it, at or just after the token's onset; the last
#: token of a sentence is given this long (at most up to the next sentence and the piece's end).
LAST_TOKEN_SECONDS = 0.2
#: Character models have a few thousand tokens (ReazonSpeech-k2 about five), BPE ones a few hundred;
#: a larger value is a damaged file, and tokens.txt is checked against it id by id.
MAX_VOCAB_SIZE = 1_000_000
#: Shorter audio holds no word (and gives the encoder no frame to work on).
MIN_AUDIO_SECONDS = 0.1
#: Loading ReazonSpeech-k2 (int8, ~170 MB) takes seconds; this bounds a child stuck on a bad file.
PROBE_TIMEOUT_SECONDS = 300.0

_PARTS = ("encoder", "decoder", "joiner")
_COMPUTE_TYPES = {None: None, "auto": None, "default": None, "int8": "int8", "float32": "float32"}
_DEVICES = {"cpu": "cpu", "auto": "cpu", "cuda": "cuda"}
_NEXT_STEP = (
    "a sherpa-onnx transducer is a folder with encoder*.onnx, decoder*.onnx, joiner*.onnx and "
    "tokens.txt from one export; install it again (cte1-mcp models pull or import)"
)


@dataclass(frozen=True, slots=True)
class ModelFiles:
    """The files a transducer is loaded from, and the precision its encoder runs in."""

    encoder: Path
    decoder: Path
    joiner: Path
    tokens: Path

    @property
    def compute_type(self) -> str:
        return "int8" if _is_int8(self.encoder) else "float32"


def matches(model_dir: Path) -> bool:
    """A transducer folder: it holds a ``joiner*.onnx`` (only transducers have one), or an
    ``encoder*.onnx`` beside ``tokens.txt``; a part missing is then ``load``'s to name."""
    names = _file_names(model_dir)
    has = {part: any(_is_part(name, part) for name in names) for part in _PARTS}
    return has["joiner"] or (has["encoder"] and "tokens.txt" in names)


def model_files(model_dir: Path, compute_type: str | None = None) -> ModelFiles:
    """The files ``load`` would use: int8 encoder and joiner and a float32 decoder where both
    forms are there (``compute_type`` ``"int8"`` or ``"float32"`` insists on one for the encoder
    and joiner)."""
    if compute_type not in _COMPUTE_TYPES:
        raise ModelUnusable(
            f"compute type {compute_type!r} does not apply to sherpa-onnx models, which run in the "
            "precision of their files: int8 or float32 (or leave it unset)"
        )
    wanted = _COMPUTE_TYPES[compute_type]
    names = _file_names(model_dir)
    if "tokens.txt" not in names:
        raise ModelUnusable(f"{model_dir} has no tokens.txt: {_NEXT_STEP}")
    return ModelFiles(
        encoder=model_dir / _choose(model_dir, names, "encoder", int8=wanted != "float32", strict=wanted),
        decoder=model_dir / _choose(model_dir, names, "decoder", int8=False, strict=None),
        joiner=model_dir / _choose(model_dir, names, "joiner", int8=wanted != "float32", strict=wanted),
        tokens=model_dir / "tokens.txt",
    )


def load(model_dir: Path, *, device: str, compute_type: str | None, threads: int) -> SherpaOnnxTranscriber:
    """The model in ``model_dir``, ready to transcribe; ``ModelUnusable`` with the reason when the
    files, the package or the device cannot do it."""
    try:
        import sherpa_onnx
    except (ImportError, OSError) as error:
        raise ModelUnusable(
            f"the sherpa-onnx package is not installed or does not load ({error}): "
            "install cte1-mcp's dependencies again (pip install sherpa-onnx)"
        ) from None
    if device not in _DEVICES:
        raise ModelUnusable(f"device {device!r} is not one sherpa-onnx runs on: use cpu or cuda")
    provider = _DEVICES[device]
    files = model_files(model_dir, compute_type)
    try:
        vocab_size = _check_decoder(files.decoder)
        _check_tokens(files.tokens, vocab_size)
        _probe(model_dir, files, provider)
        model_sha256 = cached_fingerprint(model_dir)
    except OSError as error:  # a file went away or became unreadable while it was checked
        raise ModelUnusable(f"{error.filename or model_dir} cannot be read: {error.strerror}") from None
    try:
        recognizer = sherpa_onnx.OfflineRecognizer.from_transducer(
            encoder=str(files.encoder),
            decoder=str(files.decoder),
            joiner=str(files.joiner),
            tokens=str(files.tokens),
            num_threads=max(1, threads),
            sample_rate=ENGINE_SAMPLE_RATE,
            feature_dim=80,
            dither=0.0,  # no random noise added to the features: the same audio, the same text
            decoding_method="greedy_search",  # deterministic, and sherpa-onnx's default
            provider=provider,
            model_type="transducer",  # icefall's transducers (zipformer, zipformer2, conformer)
        )
    except (RuntimeError, ValueError) as error:  # the files changed since the probe
        raise ModelUnusable(f"the sherpa-onnx model in {model_dir} does not load: {error}") from None
    info = EngineInfo(
        name=NAME,
        model=model_dir.name,
        modelSha256=model_sha256,
        device=provider,
        computeType=files.compute_type,
    )
    return SherpaOnnxTranscriber(recognizer, info)


class SherpaOnnxTranscriber:
    """A loaded transducer; one piece at a time (the decoder releases the GIL while it runs)."""

    def __init__(self, recognizer: Any, info: EngineInfo) -> None:
        self._recognizer: Any = recognizer
        self._info = info

    @property
    def info(self) -> EngineInfo:
        return self._info

    def transcribe(self, audio: npt.NDArray[np.float32], language: str) -> list[Recognised]:
        """Sentences in ``audio`` (16 kHz mono). ``language`` is not asked: a transducer knows one
        language, its training's. ``ModelUnusable`` when the model fails on it (a tokens.txt that
        does not cover what the model emits, for one)."""
        recognizer = self._recognizer
        if recognizer is None:
            raise RuntimeError("the transcriber is closed")
        samples = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
        duration = len(samples) / ENGINE_SAMPLE_RATE
        if duration < MIN_AUDIO_SECONDS:
            return []
        stream = recognizer.create_stream()
        stream.accept_waveform(ENGINE_SAMPLE_RATE, samples)
        try:
            recognizer.decode_stream(stream)
        except (RuntimeError, IndexError) as error:
            raise ModelUnusable(
                f"the sherpa-onnx model {self._info.model} failed while decoding ({type(error).__name__}: "
                f"{error}): {_NEXT_STEP}"
            ) from None
        result = stream.result
        return sentences(list(result.tokens), list(result.timestamps), result.text, duration)

    def cannot_hear(self, language: str) -> str | None:
        return None  # a transducer's language is its training's and is not recorded in its files

    def close(self) -> None:
        self._recognizer = None


def sentences(tokens: list[str], times: list[float], text: str, duration: float) -> list[Recognised]:
    """A transducer's tokens (each timed where it was emitted, seconds into the piece) as sentences:
    one ends after a ``SENTENCE_END`` mark and before a gap of ``PAUSE_SECONDS``; a token that is
    only punctuation stays with the sentence before it. Each sentence carries its tokens as timed
    words, so the pipeline can split one that runs across two packed pieces. A BPE model's
    byte-fallback tokens (``<0xE3>``, ``<0x81>``, …, which sherpa-onnx leaves in its text as they
    are) are decoded into the characters they spell. Where the tokens still do not spell ``text``,
    the whole text is one sentence over the tokens' span."""
    text = _decoded_text(text)
    if not text.strip() or not tokens or len(tokens) != len(times):
        return [Recognised(0.0, round(duration, 3), text.strip())] if text.strip() else []
    pieces, times = _decoded_tokens(tokens, times)
    if _squash("".join(pieces)) != _squash(text):
        return [_sentence(text, times[0], times[-1], duration, duration)]
    groups: list[list[int]] = []
    for index, piece in enumerate(pieces):
        after_end = bool(groups) and _ends_sentence(pieces[groups[-1][-1]])
        paused = bool(groups) and times[index] - times[groups[-1][-1]] >= PAUSE_SECONDS
        if groups and (_is_punctuation(piece) or not (after_end or paused)):
            groups[-1].append(index)
        else:
            groups.append([index])
    found = []
    for number, group in enumerate(groups):
        following = times[groups[number + 1][0]] if number + 1 < len(groups) else duration
        words = "".join(pieces[index] for index in group)
        if not _squash(words) or all(_is_punctuation(pieces[index]) for index in group):
            continue
        sentence = _sentence(words, times[group[0]], times[group[-1]], following, duration)
        found.append(replace(sentence, words=_timed(sentence, [(pieces[i], times[i]) for i in group])))
    return found


def _sentence(words: str, first: float, last: float, following: float, duration: float) -> Recognised:
    start = min(max(first, 0.0), duration)
    end = min(last + LAST_TOKEN_SECONDS, following, duration)
    return Recognised(round(start, 3), round(max(end, start), 3), _tidy(words))


def _timed(sentence: Recognised, tokens: list[tuple[str, float]]) -> tuple[Word, ...]:
    """The sentence's tokens as words, each from where it was emitted until the next (at most
    ``LAST_TOKEN_SECONDS``, within the sentence), spelling the sentence's text: a CJK token loses
    the spaces ``_tidy`` removes from the text."""
    words = []
    for index, (piece, at) in enumerate(tokens):
        following = tokens[index + 1][1] if index + 1 < len(tokens) else sentence.end
        start = min(max(at, sentence.start), sentence.end)
        end = min(max(start, min(following, at + LAST_TOKEN_SECONDS)), sentence.end)
        shown = "".join(piece.split()) if _CJK_ONLY.fullmatch(piece.strip() or " ") else piece
        words.append(Word(round(start, 3), round(end, 3), shown))
    return tuple(words)


_BYTE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_BYTES = re.compile(r"(?:<0x[0-9A-Fa-f]{2}>)+")
_CJK = r"\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef"
_SPACE_IN_CJK = re.compile(rf"(?<=[{_CJK}])\s+(?=[{_CJK}])")
_CJK_ONLY = re.compile(rf"[{_CJK}\s]+")


def _bytes_text(run: str) -> str:
    """``<0xE3><0x81><0x82>`` as the UTF-8 it encodes (あ); a cut-off sequence is dropped."""
    data = bytes(int(byte, 16) for byte in _BYTE.findall(run))
    return data.decode("utf-8", errors="ignore")


def _decoded_text(text: str) -> str:
    return _BYTES.sub(lambda match: _bytes_text(match.group()), text)


def _decoded_tokens(tokens: list[str], times: list[float]) -> tuple[list[str], list[float]]:
    """Runs of byte-fallback tokens as one token each (the characters they spell), timed by the
    run's first byte: the character's onset."""
    merged: list[str] = []
    merged_times: list[float] = []
    run: list[str] = []
    for token, at in zip(tokens, times, strict=True):
        if _BYTE.fullmatch(token):
            if not run:
                merged.append("")
                merged_times.append(at)
            run.append(token)
            merged[-1] = _bytes_text("".join(run))
            continue
        run = []
        merged.append(token)
        merged_times.append(at)
    return merged, merged_times


def _tidy(words: str) -> str:
    """As sherpa-onnx writes its text: no space between CJK characters, none at the ends."""
    return _SPACE_IN_CJK.sub("", words).strip()


def _squash(text: str) -> str:
    return "".join(text.split())


def _ends_sentence(piece: str) -> bool:
    stripped = piece.strip()
    return bool(stripped) and stripped[-1] in SENTENCE_END


def _is_punctuation(piece: str) -> bool:
    stripped = piece.strip()
    return bool(stripped) and all(
        char in SENTENCE_END or char in "\N{IDEOGRAPHIC COMMA}\N{FULLWIDTH COMMA},." for char in stripped
    )


def _file_names(model_dir: Path) -> set[str]:
    try:
        return {entry.name for entry in model_dir.iterdir() if entry.is_file()}
    except OSError:
        return set()


def _is_part(name: str, part: str) -> bool:
    return name.startswith(part) and name.endswith(".onnx")


def _is_int8(path: Path) -> bool:
    return path.name.endswith(".int8.onnx")


def _choose(model_dir: Path, names: set[str], part: str, *, int8: bool, strict: str | None) -> str:
    """The one ``part*.onnx`` to use: of the preferred precision when there, else the other (unless
    ``strict`` names the precision the user asked for)."""
    candidates = sorted(name for name in names if _is_part(name, part))
    if not candidates:
        raise ModelUnusable(f"{model_dir} has no {part}*.onnx: {_NEXT_STEP}")
    quantised = [name for name in candidates if name.endswith(".int8.onnx")]
    plain = [name for name in candidates if not name.endswith(".int8.onnx")]
    preferred, other = (quantised, plain) if int8 else (plain, quantised)
    if strict is not None and not preferred:
        raise ModelUnusable(
            f"{model_dir} has no {strict} {part} ({', '.join(candidates)}): "
            "leave the compute type unset to use the files the model has"
        )
    chosen = preferred or other
    if len(chosen) > 1:
        raise ModelUnusable(
            f"{model_dir} has several {part} files ({', '.join(chosen)}): keep the one the model was "
            "exported with"
        )
    return chosen[0]


#: ASCII digits only: ``str.isdigit`` also takes ``'²'``, which ``int`` refuses.
_COUNT = re.compile(r"[0-9]+")
_TOKEN_ID = re.compile(r"-?[0-9]+")


def _check_decoder(decoder: Path) -> int:
    """The decoder's ``vocab_size``, after checking the metadata sherpa-onnx would exit without."""
    try:
        metadata = read_metadata(decoder)
    except NotOnnx as error:
        raise ModelUnusable(
            f"{decoder.name} in {decoder.parent} is not an ONNX model ({error}): the file is damaged "
            f"or incomplete; {_NEXT_STEP}"
        ) from None
    values = {}
    for key in ("vocab_size", "context_size"):
        value = metadata.get(key, "")
        if not _COUNT.fullmatch(value.strip()) or int(value) < 1:
            raise ModelUnusable(
                f"{decoder.name} in {decoder.parent} lacks the metadata sherpa-onnx needs "
                f"({key!r} is {'missing' if not value else repr(value)}; an icefall export writes "
                f"vocab_size and context_size on the decoder): use the model's published files"
            )
        values[key] = int(value)
    if values["vocab_size"] > MAX_VOCAB_SIZE:
        raise ModelUnusable(
            f"{decoder.name} in {decoder.parent} says vocab_size {values['vocab_size']}, more than any "
            f"transducer has (at most {MAX_VOCAB_SIZE}): the file is damaged or not a transducer's decoder"
        )
    return values["vocab_size"]


def _check_tokens(tokens: Path, vocab_size: int) -> None:
    """tokens.txt as sherpa-onnx reads it (``symbol id``, or ``id`` alone for a space; it exits on
    any other line) and covering every id the joiner can emit."""
    try:
        lines = tokens.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ModelUnusable(f"{tokens} cannot be read as UTF-8 text: {error}") from None
    ids = set()
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) > 2 or not _TOKEN_ID.fullmatch(fields[-1]):
            raise ModelUnusable(
                f"{tokens} line {number} is not 'symbol id' ({line[:40]!r}): the file is damaged or "
                f"not a sherpa-onnx tokens.txt; {_NEXT_STEP}"
            )
        ids.add(int(fields[-1]))
    missing = [index for index in range(vocab_size) if index not in ids]
    if missing:
        raise ModelUnusable(
            f"{tokens} names {vocab_size - len(missing)} of the {vocab_size} tokens the decoder's "
            f"vocab_size says (first missing id: {missing[0]}): it belongs to another model; {_NEXT_STEP}"
        )


_probed = child_probe.Probed()
#: sherpa-onnx's log lines start with the C++ source position: "/…/file.cc:Function:123 message".
_LOG_PREFIX = re.compile(r"^\S+\.(?:cc|h|cpp):\w+:\d+\s+")


def _probe(model_dir: Path, files: ModelFiles, provider: str) -> None:
    """Load the model in a child first (once per version of its files and provider) and turn what
    ended it into a reason."""
    key = (
        provider,
        *(child_probe.stat_key(path) for path in (files.encoder, files.decoder, files.joiner, files.tokens)),
    )
    if key in _probed:
        return
    config = {
        "encoder": str(files.encoder),
        "decoder": str(files.decoder),
        "joiner": str(files.joiner),
        "tokens": str(files.tokens),
        "provider": provider,
    }
    try:
        child = child_probe.run(
            "cte1_mcp.transcribe.engines.sherpa_onnx_probe", config, timeout=PROBE_TIMEOUT_SECONDS
        )
    except subprocess.TimeoutExpired:
        raise ModelUnusable(
            f"the sherpa-onnx model in {model_dir} did not load within {PROBE_TIMEOUT_SECONDS:.0f} s"
        ) from None
    log = [_LOG_PREFIX.sub("", line).strip() for line in child.log]
    if not child.ok:
        detail = str(child.answer.get("error") or (log[-1] if log else f"exit status {child.returncode}"))
        raise ModelUnusable(
            f"the sherpa-onnx model in {model_dir} does not load: {_describe(detail)}; {_NEXT_STEP}"
        )
    if provider == "cuda" and any("fallback to cpu" in line.lower() for line in log):
        raise ModelUnusable(
            "device cuda was asked, but this sherpa-onnx has no CUDA support (the PyPI wheel runs on "
            "the CPU only): install sherpa-onnx's CUDA build, or use device cpu"
        )
    _probed.add(key)


_LOAD_FAILED = re.compile(r"Load model from (?P<path>.+?) failed:(?P<why>.*)", re.DOTALL)
#: onnxruntime puts its C++ source position and the function's signature before the message.
_ORT_POSITION = re.compile(r"\S+\.(?:cc|h):\d+ .*?\) ", re.DOTALL)


def _describe(detail: str) -> str:
    """sherpa-onnx's or onnxruntime's message, shortened to what a user can act on."""
    detail = detail.removeprefix("RuntimeError: ")
    failed = _LOAD_FAILED.search(detail)
    if failed:
        why = " ".join(_ORT_POSITION.sub("", failed["why"]).split())
        detail = (
            f"{Path(failed['path']).name} is not a loadable ONNX model ({why}): "
            "the file is damaged or incomplete"
        )
    return " ".join(detail.split())[:400]
