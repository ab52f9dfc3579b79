"""The sherpa-onnx engine with sherpa-onnx's real loader and decoder, on a tiny transducer built here
whose output is known by construction (tests/helpers/tiny_transducer.py): each 40-ms frame of a
burst of sound reads as the next character of the model's cycle, silence as nothing."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from cte1_mcp.audio.clips import resample
from cte1_mcp.transcribe.base import (
    ENGINE_SAMPLE_RATE,
    ModelUnusable,
    Recognised,
    cached_fingerprint,
    fingerprint,
)
from cte1_mcp.transcribe.engines import sherpa_onnx as engine
from tests.helpers import tiny_transducer
from tests.helpers.tiny_transducer import FRAME_SECONDS, TinyTransducer

#: ReazonSpeech-k2 writes no punctuation: a cycle without any, so sentences end at pauses only.
PLAIN_CYCLE = "あいうえおかきくけこ"


def bursts(
    layout: list[tuple[float, float]], duration: float, rate: int = ENGINE_SAMPLE_RATE
) -> npt.NDArray[np.float32]:
    """Digital silence with white-noise bursts (0.1 amplitude) from ``start`` to ``end`` seconds."""
    audio = np.zeros(round(duration * rate), dtype=np.float32)
    rng = np.random.default_rng(7)
    for start, end in layout:
        first, last = round(start * rate), round(end * rate)
        audio[first:last] = rng.standard_normal(last - first).astype(np.float32) * 0.1
    return audio


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory: pytest.TempPathFactory) -> TinyTransducer:
    return tiny_transducer.build(tmp_path_factory.mktemp("plain"), cycle=PLAIN_CYCLE)


@pytest.fixture(scope="module")
def plain(plain_model: TinyTransducer) -> Iterator[engine.SherpaOnnxTranscriber]:
    transcriber = engine.load(plain_model.directory, device="cpu", compute_type=None, threads=1)
    yield transcriber
    transcriber.close()


@pytest.fixture(scope="module")
def punctuated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[engine.SherpaOnnxTranscriber]:
    model = tiny_transducer.build(tmp_path_factory.mktemp("punctuated"), cycle="こんにちは。")
    transcriber = engine.load(model.directory, device="cpu", compute_type=None, threads=1)
    yield transcriber
    transcriber.close()


def assert_inside_and_in_order(sentences: list[Recognised], duration: float) -> None:
    for sentence in sentences:
        assert 0.0 <= sentence.start < sentence.end <= duration
    starts = [sentence.start for sentence in sentences]
    assert starts == sorted(starts)
    for before, after in itertools.pairwise(sentences):
        assert before.end <= after.start


# --- choosing the engine and the files ---------------------------------------------------------


def test_a_transducer_folder_is_recognised_by_its_file_names_only(tmp_path: Path) -> None:
    model = tiny_transducer.build(tmp_path / "tiny")
    assert engine.matches(model.directory)
    model.joiner.unlink()  # still a transducer (encoder beside tokens.txt): load names what is missing
    assert engine.matches(model.directory)
    whisper = tmp_path / "whisper"
    whisper.mkdir()
    for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.json"):
        (whisper / name).write_bytes(b"x")
    assert not engine.matches(whisper)
    assert not engine.matches(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    assert not engine.matches(tmp_path / "empty")


def test_int8_encoder_and_joiner_with_the_float_decoder_where_both_forms_are_there(tmp_path: Path) -> None:
    model = tiny_transducer.build(tmp_path)
    for path in (model.encoder, model.decoder, model.joiner):
        shutil.copy(path, path.with_suffix(".int8.onnx"))
    files = engine.model_files(tmp_path)
    assert (files.encoder.name, files.decoder.name, files.joiner.name) == (
        "encoder-tiny.int8.onnx",
        "decoder-tiny.onnx",
        "joiner-tiny.int8.onnx",
    )
    assert files.compute_type == "int8"
    float32 = engine.model_files(tmp_path, "float32")
    assert (float32.encoder, float32.decoder, float32.joiner) == (model.encoder, model.decoder, model.joiner)
    assert float32.compute_type == "float32"


def test_the_engine_reports_itself_and_the_precision_of_the_files_it_took(tmp_path: Path) -> None:
    model = tiny_transducer.build(tmp_path / "reazonspeech-tiny", int8_names=True)
    transcriber = engine.load(model.directory, device="cpu", compute_type=None, threads=2)
    try:
        info = transcriber.info
        assert (info.name, info.model, info.device, info.computeType) == (
            "sherpa-onnx",
            "reazonspeech-tiny",
            "cpu",
            "int8",
        )
        assert info.modelSha256 == fingerprint(model.directory)
    finally:
        transcriber.close()


# --- decoding -----------------------------------------------------------------------------------


def test_bursts_read_as_the_models_tokens_timed_where_they_sound(
    plain: engine.SherpaOnnxTranscriber, plain_model: TinyTransducer
) -> None:
    # Two bursts 0.2 s apart (one sentence), then one after a pause of 0.8 s (a second sentence).
    layout = [(0.3, 0.9), (1.1, 1.5), (2.3, 2.8)]
    duration = 3.2
    sentences = plain.transcribe(bursts(layout, duration), "ja")
    assert len(sentences) == 2
    assert_inside_and_in_order(sentences, duration)
    text = "".join(sentence.text for sentence in sentences)
    assert text == plain_model.expected_text(len(text))  # the cycle, continued across the pause
    frames = sum(end - start for start, end in layout) / FRAME_SECONDS
    assert abs(len(text) - frames) <= len(layout)  # one character per loud 40-ms frame
    first, second = sentences
    assert layout[0][0] <= first.start <= layout[0][0] + 2 * FRAME_SECONDS
    assert layout[1][1] - FRAME_SECONDS <= first.end <= layout[1][1] + engine.LAST_TOKEN_SECONDS
    assert layout[2][0] <= second.start <= layout[2][0] + 2 * FRAME_SECONDS
    assert second.end <= duration


def test_a_full_stop_ends_a_sentence(punctuated: engine.SherpaOnnxTranscriber) -> None:
    duration = 1.5
    sentences = punctuated.transcribe(bursts([(0.2, 1.2)], duration), "ja")  # 25 frames: 4 sentences
    assert [sentence.text for sentence in sentences[:-1]] == ["こんにちは。"] * (len(sentences) - 1)
    assert len(sentences) >= 4
    assert "こんにちは。".startswith(sentences[-1].text)
    assert_inside_and_in_order(sentences, duration)


def test_8khz_call_audio_upsampled_reads_as_the_same_sentences(
    plain: engine.SherpaOnnxTranscriber,
) -> None:
    layout, duration = [(0.4, 1.0), (2.0, 2.4)], 2.8
    wideband = plain.transcribe(bursts(layout, duration), "ja")
    telephone = plain.transcribe(
        resample(bursts(layout, duration, rate=8000), 8000, ENGINE_SAMPLE_RATE), "ja"
    )
    assert len(telephone) == len(wideband) == 2
    for narrow, wide in zip(telephone, wideband, strict=True):
        assert abs(len(narrow.text) - len(wide.text)) <= 1
        assert abs(narrow.start - wide.start) <= FRAME_SECONDS
        assert abs(narrow.end - wide.end) <= FRAME_SECONDS
    assert_inside_and_in_order(telephone, duration)


def test_the_same_audio_gives_the_same_sentences_again_and_after_a_reload(
    plain: engine.SherpaOnnxTranscriber, plain_model: TinyTransducer
) -> None:
    audio = bursts([(0.1, 0.7), (1.6, 2.0)], 2.5)
    first = plain.transcribe(audio, "ja")
    assert first and plain.transcribe(audio.copy(), "ja") == first
    again = engine.load(plain_model.directory, device="cpu", compute_type=None, threads=2)
    try:
        assert again.transcribe(audio, "ja") == first
        assert again.info == plain.info
    finally:
        again.close()


def test_silence_and_a_too_short_piece_read_as_nothing(plain: engine.SherpaOnnxTranscriber) -> None:
    assert plain.transcribe(np.zeros(2 * ENGINE_SAMPLE_RATE, dtype=np.float32), "ja") == []
    assert plain.transcribe(bursts([(0.0, 0.05)], 0.05), "ja") == []
    assert plain.transcribe(np.zeros(0, dtype=np.float32), "ja") == []


def test_a_burst_to_the_end_of_the_piece_ends_inside_it(plain: engine.SherpaOnnxTranscriber) -> None:
    sentences = plain.transcribe(bursts([(0.5, 1.0)], 1.0), "ja")
    assert len(sentences) == 1
    assert_inside_and_in_order(sentences, 1.0)


# --- splitting tokens into sentences (a transducer's output, laid out by hand) ------------------


def test_a_pause_splits_and_lone_punctuation_stays_with_the_sentence_before() -> None:
    tokens = ["は", "い", "。", "そ", "う", "で", "す", "ね"]
    times = [0.10, 0.20, 0.30, 0.50, 0.60, 1.40, 1.50, 1.60]
    assert engine.sentences(tokens, times, "はい。そうですね", 2.0) == [
        Recognised(0.1, 0.5, "はい。"),
        Recognised(0.5, 0.8, "そう"),
        Recognised(1.4, 1.8, "ですね"),
    ]
    # a full stop after a pause is the end of the sentence before it, not a sentence of its own
    assert engine.sentences(["は", "い", "。"], [0.1, 0.2, 1.2], "はい。", 1.3) == [
        Recognised(0.1, 1.3, "はい。")
    ]


def test_bpe_word_pieces_keep_their_spaces_and_unspellable_tokens_give_one_sentence() -> None:
    tokens = [" HELLO", " WOR", "LD", " AGAIN"]
    assert engine.sentences(tokens, [0.2, 0.5, 0.6, 1.6], " HELLO WORLD AGAIN", 2.0) == [
        Recognised(0.2, 0.8, "HELLO WORLD"),
        Recognised(1.6, 1.8, "AGAIN"),
    ]
    # tokens that do not spell the text: one sentence over the tokens' span
    assert engine.sentences(["X", "Y"], [0.2, 0.4], "Z", 1.0) == [Recognised(0.2, 0.6, "Z")]
    assert engine.sentences([], [], "", 1.0) == []


def test_byte_fallback_tokens_are_the_characters_they_spell() -> None:
    # sherpa-onnx leaves a BPE model's byte-fallback bytes in its text as it found them; before,
    # 「あ<0xE3><0x81><0x84>」 went into the transcript and the whole call became one sentence.
    tokens = ["あ", "<0xE3>", "<0x81>", "<0x84>", "う", "<0xE3>", "<0x81>", "<0x88>"]
    times = [0.20, 0.28, 0.30, 0.32, 0.40, 1.40, 1.42, 1.44]
    text = "あ<0xE3><0x81><0x84>う<0xE3><0x81><0x88>"
    assert engine.sentences(tokens, times, text, 2.0) == [
        Recognised(0.2, 0.6, "あいう"),
        Recognised(1.4, 1.6, "え"),
    ]
    # a sequence the model cut off spells nothing, rather than a broken character
    assert engine.sentences(["か", "<0xE3>"], [0.2, 0.3], "か<0xE3>", 1.0) == [Recognised(0.2, 0.5, "か")]


def test_each_sentence_carries_its_tokens_as_timed_words_that_spell_it() -> None:
    tokens = ["は", "い", "。", " HEL", "LO"]
    times = [0.10, 0.20, 0.30, 1.50, 1.60]
    first, second = engine.sentences(tokens, times, "はい。 HELLO", 2.0)
    assert [(w.start, w.end, w.text) for w in first.words] == [
        (0.1, 0.2, "は"),
        (0.2, 0.3, "い"),
        (0.3, 0.5, "。"),
    ]
    assert "".join(w.text for w in second.words).strip() == second.text == "HELLO"
    for sentence in (first, second):
        assert all(sentence.start <= w.start <= w.end <= sentence.end for w in sentence.words)


def test_a_sentence_across_two_packed_pieces_is_split_between_them(
    plain: engine.SherpaOnnxTranscriber, plain_model: TinyTransducer
) -> None:
    """Talk that fills a piece's pads leaves less than PAUSE_SECONDS between two pieces packed into
    one engine call, so the transducer gives one sentence for both; its tokens' times split it back.
    Before, it went whole to one piece (19 s from where half of it was said) and was cut there."""
    import io

    import soundfile

    from cte1_mcp.transcribe.pipeline import transcribe_file
    from tests.test_transcribe_pipeline import analysis as pipeline_analysis

    rate, duration = 8000, 22.0
    sound = [(0, 0.8, 1.4), (1, 5.0, 8.0), (0, 20.0, 20.6)]  # what is audible
    talk = [(0, 1.0, 1.2), (1, 5.0, 8.0), (0, 20.2, 20.4)]  # the analyser's talk, trimmed
    samples = np.zeros((round(duration * rate), 2), np.float32)
    rng = np.random.default_rng(1)
    for channel, start, end in sound:
        samples[round(start * rate) : round(end * rate), channel] = (
            rng.standard_normal(round(end * rate) - round(start * rate)) * 0.3
        )
    file = io.BytesIO()
    soundfile.write(file, np.clip(samples, -1, 1), rate, format="WAV", subtype="PCM_16")
    file.seek(0)
    analysis = pipeline_analysis(talk, 2, duration)
    heard = transcribe_file(file, analysis, plain, language="ja")
    customer = [h for h in heard if h.channel == 0]
    assert len(customer) == 2
    for sentence, (_, start, end) in zip(customer, [sound[0], sound[2]], strict=True):
        assert start - 0.05 <= sentence.start < sentence.end <= end + 0.05  # where it was said
    # each keeps its own characters (the tiny model reads 25 a second, so the rate guard cuts the
    # first, 0.6 s long, to 15)
    assert [len(h.text) for h in customer] == [15, 15]
    assert customer[0].text == plain_model.expected_text(15)


# --- models it cannot use: a reason, never a crash ----------------------------------------------


def _unusable(directory: Path, *, device: str = "cpu", compute_type: str | None = None) -> str:
    with pytest.raises(ModelUnusable) as caught:
        engine.load(directory, device=device, compute_type=compute_type, threads=1)
    return str(caught.value)


@pytest.mark.parametrize("part", ["encoder", "decoder", "joiner", "tokens"])
def test_a_missing_file_is_named(tmp_path: Path, part: str) -> None:
    model = tiny_transducer.build(tmp_path)
    getattr(model, part).unlink()
    reason = _unusable(tmp_path)
    assert ("tokens.txt" if part == "tokens" else f"{part}*.onnx") in reason
    assert "encoder*.onnx, decoder*.onnx, joiner*.onnx and tokens.txt" in reason


@pytest.mark.parametrize("part", ["encoder", "decoder", "joiner"])
@pytest.mark.parametrize("content", ["random", "empty", "cut"])
def test_a_damaged_model_file_is_named(tmp_path: Path, part: str, content: str) -> None:
    model = tiny_transducer.build(tmp_path)
    path: Path = getattr(model, part)
    whole = path.read_bytes()
    damaged = {"random": os.urandom(4096), "empty": b"", "cut": whole[: len(whole) // 2]}[content]
    path.write_bytes(damaged)
    reason = _unusable(tmp_path)
    assert path.name in reason
    assert "damaged or incomplete" in reason


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"context_size": "2"}, "lacks the metadata sherpa-onnx needs ('vocab_size' is missing"),
        ({"vocab_size": "11"}, "lacks the metadata sherpa-onnx needs ('context_size' is missing"),
        ({"vocab_size": "eleven", "context_size": "2"}, "('vocab_size' is 'eleven'"),
        ({"vocab_size": "99999999999", "context_size": "2"}, "says vocab_size 99999999999, more than any"),
        # str.isdigit() takes superscripts, int() does not: a ValueError and a traceback before
        ({"vocab_size": "\u00b2", "context_size": "2"}, "('vocab_size' is '\u00b2'"),
        ({"vocab_size": "11", "context_size": "2\u00b9"}, "('context_size' is '2\u00b9'"),
    ],
)
def test_a_decoder_without_the_metadata_sherpa_onnx_needs_is_refused(
    tmp_path: Path, metadata: dict[str, str], expected: str
) -> None:
    tiny_transducer.build(tmp_path, cycle=PLAIN_CYCLE, decoder_metadata=metadata)
    reason = _unusable(tmp_path)
    assert expected in reason
    assert "decoder-tiny.onnx" in reason


def test_sherpa_onnx_itself_ends_the_process_on_such_a_decoder(tmp_path: Path) -> None:
    """Why the engine checks first: loaded directly, the model takes the whole process with it."""
    model = tiny_transducer.build(tmp_path, decoder_metadata={"context_size": "2"})
    code = (
        "import sys, sherpa_onnx\n"
        "sherpa_onnx.OfflineRecognizer.from_transducer(*sys.argv[1:])\n"
        "print('survived')\n"
    )
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(model.encoder),
            str(model.decoder),
            str(model.joiner),
            str(model.tokens),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode != 0
    assert "survived" not in child.stdout
    assert "vocab_size" in child.stderr


def test_a_model_sherpa_onnx_exits_on_is_refused_with_its_reason(tmp_path: Path) -> None:
    """Only a real load finds this one (an encoder taking float lengths): the child it ends is
    the probe, not this process."""
    tiny_transducer.build(tmp_path, float_lengths=True)
    reason = _unusable(tmp_path)
    assert "does not load" in reason
    assert "encoder input 1 should be int32 or int64" in reason


@pytest.mark.parametrize(
    ("tokens", "expected"),
    [
        ("<blk> 0 extra\n", "line 1 is not 'symbol id'"),
        ("<blk> 0\nあ 1\n", "names 2 of the 11 tokens"),
        ("<blk> zero\n", "line 1 is not 'symbol id'"),
        ("<blk> 0\nx \u00b3\n", "line 2 is not 'symbol id'"),  # before, a ValueError from int()
        ("<blk> 0\nx --5\n", "line 2 is not 'symbol id'"),
    ],
)
def test_a_tokens_file_that_does_not_fit_the_model_is_refused(
    tmp_path: Path, tokens: str, expected: str
) -> None:
    model = tiny_transducer.build(tmp_path, cycle=PLAIN_CYCLE)
    model.tokens.write_text(tokens, encoding="utf-8")
    assert expected in _unusable(tmp_path)


def test_two_encoders_of_one_precision_are_ambiguous(tmp_path: Path) -> None:
    model = tiny_transducer.build(tmp_path)
    shutil.copy(model.encoder, tmp_path / "encoder-epoch-30-avg-5.onnx")
    reason = _unusable(tmp_path)
    assert "several encoder files (encoder-epoch-30-avg-5.onnx, encoder-tiny.onnx)" in reason


def test_a_precision_the_files_do_not_have_is_refused(tmp_path: Path) -> None:
    tiny_transducer.build(tmp_path)
    assert "has no int8 encoder" in _unusable(tmp_path, compute_type="int8")
    assert "int8 or float32" in _unusable(tmp_path, compute_type="float16")


def test_cuda_without_a_cuda_build_of_sherpa_onnx_is_refused_not_run_on_the_cpu(tmp_path: Path) -> None:
    """The PyPI wheel has only the CPU provider; sherpa-onnx would fall back to it quietly."""
    tiny_transducer.build(tmp_path)
    assert "no CUDA support" in _unusable(tmp_path, device="cuda")
    assert "use cpu or cuda" in _unusable(tmp_path, device="mps")


def test_without_the_sherpa_onnx_package_the_model_is_unusable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny_transducer.build(tmp_path)
    monkeypatch.setitem(sys.modules, "sherpa_onnx", None)  # what `import` sees when it is not installed
    assert "sherpa-onnx package is not installed" in _unusable(tmp_path)


def test_a_model_that_fails_on_a_piece_says_so_instead_of_raising_its_own_error(tmp_path: Path) -> None:
    """An export with static shapes runs on one input length only: the probe's second of silence
    passes, a piece of another length fails in onnxruntime."""
    tiny_transducer.build(tmp_path, fixed_frames=100)
    transcriber = engine.load(tmp_path, device="cpu", compute_type=None, threads=1)
    try:
        with pytest.raises(ModelUnusable, match="failed while decoding"):
            transcriber.transcribe(bursts([(0.5, 1.0)], 2.0), "ja")
    finally:
        transcriber.close()


# --- the model's fingerprint --------------------------------------------------------------------


def test_the_fingerprint_is_computed_again_only_when_a_file_changes(tmp_path: Path) -> None:
    model = tiny_transducer.build(tmp_path)
    first = cached_fingerprint(tmp_path)
    assert first == fingerprint(tmp_path)
    # same size, same modification time, other bytes: the cached value stands (nothing re-read)
    stat = model.tokens.stat()
    model.tokens.write_bytes(model.tokens.read_bytes().replace(b"<blk>", b"<BLK>"))
    os.utime(model.tokens, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cached_fingerprint(tmp_path) == first
    # a new modification time: hashed again
    os.utime(model.tokens, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert cached_fingerprint(tmp_path) == fingerprint(tmp_path) != first
