"""The faster-whisper engine: which folders it claims, why a model does not load (in words), and
real decoding with Whisper-base (deterministic, sentences cut at their full stops)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from cte1_mcp.transcribe.base import EngineInfo, ModelUnusable, Recognised, Transcriber
from cte1_mcp.transcribe.engines import faster_whisper
from cte1_mcp.transcribe.engines.faster_whisper import FasterWhisper, split_sentences


def model_copy(source: Path, target: Path, *, without: str = "", model_bin: bytes | None = None) -> Path:
    """``source``'s files linked into ``target``, one left out or model.bin replaced."""
    target.mkdir()
    for file in source.iterdir():
        if file.name == without:
            continue
        if file.name == "model.bin" and model_bin is not None:
            (target / "model.bin").write_bytes(model_bin)
        else:
            (target / file.name).symlink_to(file)
    return target


def test_choosing_an_engine_imports_nothing_heavy() -> None:
    # matches() runs for every configured model, with or without the extra installed
    probe = (
        "import sys; from pathlib import Path; from cte1_mcp.transcribe.engines import faster_whisper as f; "
        "f.matches(Path('.')); print(sorted(m for m in ('faster_whisper', 'ctranslate2', 'av') if m in sys.modules))"
    )
    assert (
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
        == "[]\n"
    )


def test_a_folder_is_claimed_when_it_holds_a_whole_ctranslate2_conversion(
    tmp_path: Path, whisper_base_dir: Path
) -> None:
    assert faster_whisper.matches(whisper_base_dir)
    assert not faster_whisper.matches(
        model_copy(whisper_base_dir, tmp_path / "half", without="tokenizer.json")
    )
    (tmp_path / "tokens.txt").write_text("<blk> 0\n")
    (tmp_path / "encoder.onnx").write_bytes(b"")
    assert not faster_whisper.matches(tmp_path)  # a sherpa-onnx transducer
    assert not faster_whisper.matches(tmp_path / "absent")


@pytest.mark.parametrize("missing", ["tokenizer.json", "vocabulary.json", "config.json"])
def test_a_missing_file_is_named(tmp_path: Path, whisper_base_dir: Path, missing: str) -> None:
    folder = model_copy(whisper_base_dir, tmp_path / "m", without=missing)
    with pytest.raises(ModelUnusable, match=f"lacks {missing.split('.')[0]}"):
        faster_whisper.load(folder, device="cpu", compute_type=None, threads=1)


def test_a_model_file_that_does_not_load_is_said_so_in_one_line(
    tmp_path: Path, whisper_base_dir: Path
) -> None:
    folder = model_copy(whisper_base_dir, tmp_path / "broken", model_bin=b"\x00" * 4096)
    with pytest.raises(ModelUnusable, match=r"does not load: ") as raised:
        faster_whisper.load(folder, device="cpu", compute_type=None, threads=1)
    assert "\n" not in str(raised.value) and "Traceback" not in str(raised.value)


def test_an_engine_package_not_installed_names_the_extra(
    whisper_base_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "faster_whisper", None)  # what an install without the extra sees
    with pytest.raises(
        ModelUnusable, match=r"faster-whisper is not installed: pip install 'cte1-mcp\[whisper\]'"
    ):
        faster_whisper.load(whisper_base_dir, device="cpu", compute_type=None, threads=1)


def test_an_english_only_model_refuses_japanese() -> None:
    # no English-only conversion is installed here: the one attribute the check reads, stood in
    english_only = SimpleNamespace(model=SimpleNamespace(is_multilingual=False))
    engine = FasterWhisper(english_only, EngineInfo(name="faster-whisper", model="base.en", modelSha256=None))
    with pytest.raises(ModelUnusable, match="English-only"):
        engine.transcribe(np.zeros(16000, np.float32), "ja")


def test_an_english_only_model_is_unavailable_for_japanese_when_loaded(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Before, it loaded, the recording was fetched and analysed, and the first piece failed
    # ([transcription_failed]); now load_model, which runs before any platform request, refuses it.
    from cte1_mcp.errors import TranscriptionUnavailable
    from cte1_mcp.settings import AsrSettings
    from cte1_mcp.transcribe import configured, engines

    english_only = SimpleNamespace(model=SimpleNamespace(is_multilingual=False, unload_model=lambda: None))
    info = EngineInfo(name="faster-whisper", model="base.en", modelSha256=None)
    monkeypatch.setattr(
        engines, "load_transcriber", lambda *args, **kwargs: FasterWhisper(english_only, info)
    )
    model = configured.ResolvedModel("base.en", tmp_path, "faster-whisper", None)
    with pytest.raises(TranscriptionUnavailable, match=r"English-only.*CTE1_ASR_LANGUAGE"):
        configured.load_model(model, AsrSettings(asr_language="ja"))
    assert configured.load_model(model, AsrSettings(asr_language="en")).cannot_hear("en") is None


def test_a_segment_is_cut_into_sentences_by_its_words_times() -> None:
    words = [
        SimpleNamespace(start=0.1, end=0.4, word="はい"),
        SimpleNamespace(start=0.4, end=0.6, word="。"),
        SimpleNamespace(start=1.0, end=1.5, word="承知"),
        SimpleNamespace(start=1.5, end=2.2, word="しました？"),
        SimpleNamespace(start=2.4, end=2.9, word="では"),
    ]
    assert split_sentences(words, 0.0, 3.0, "はい。承知しました？では") == [
        Recognised(0.1, 0.6, "はい。"),
        Recognised(1.0, 2.2, "承知しました？"),
        Recognised(2.4, 2.9, "では"),
    ]


def test_without_word_times_a_segment_is_shared_by_how_long_each_sentence_takes_to_say() -> None:
    # はい (2 morae) and 確認します (kanji 2 x 2 + 3 kana = 7 morae): 2/9 and 7/9 of 0-9 s
    assert split_sentences([], 0.0, 9.0, "はい。確認します。") == [
        Recognised(0.0, 2.0, "はい。"),
        Recognised(2.0, 9.0, "確認します。"),
    ]
    assert split_sentences([], 1.0, 2.0, "  ") == []


def test_in_japanese_a_space_whisper_writes_ends_a_sentence_and_in_english_it_does_not() -> None:
    text = "もしもしすみません 料金のことで"
    assert [r.text for r in split_sentences([], 0.0, 4.0, text, unspaced=True)] == [
        "もしもしすみません",
        "料金のことで",
    ]
    assert [r.text for r in split_sentences([], 0.0, 4.0, "Hello there? Fine", unspaced=False)] == [
        "Hello there?",
        "Fine",
    ]
    words = [
        SimpleNamespace(start=0.0, end=1.0, word="もしもし"),
        SimpleNamespace(start=1.0, end=1.6, word="すみません"),
        SimpleNamespace(start=2.0, end=3.0, word=" 料金"),
        SimpleNamespace(start=3.0, end=3.5, word="のことで"),
    ]
    assert split_sentences(words, 0.0, 4.0, text, unspaced=True) == [
        Recognised(0.0, 1.6, "もしもしすみません"),
        Recognised(2.0, 3.5, "料金のことで"),
    ]


@pytest.mark.slow
def test_silence_gives_no_text_and_the_loaded_model_says_what_it_is(whisper_base: Transcriber) -> None:
    assert whisper_base.transcribe(np.zeros(3 * 16000, np.float32), "ja") == []
    info = whisper_base.info
    assert (info.name, info.model, info.device, info.computeType) == (
        "faster-whisper",
        "whisper-base",
        "cpu",
        "int8",
    )
    assert info.modelSha256 is not None and len(info.modelSha256) == 64
