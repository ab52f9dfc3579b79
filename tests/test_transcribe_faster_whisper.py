"""The faster-whisper engine: which folders it claims, why a model does not load (in words), and
real decoding with Whisper-base (deterministic, sentences cut at their full stops)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

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


# --- files beside model.bin that do not fit it: refused when loaded, never a crash later ---------

#: Whisper large-v3's alignment_heads (decoder layers up to 25; base has 6 of 8 heads): a config.json
#: of another size beside base's model.bin. Before, it loaded, and the first transcription of speech
#: killed the server with SIGSEGV inside CTranslate2's word alignment; [[99, 0]] with SIGABRT.
LARGE_V3_HEADS = [
    [7, 0],
    [10, 17],
    [12, 18],
    [13, 12],
    [16, 1],
    [17, 14],
    [19, 11],
    [21, 4],
    [24, 1],
    [25, 6],
]


def with_file(source: Path, target: Path, name: str, content: object) -> Path:
    """``source``'s files linked into ``target``, ``name`` written anew (JSON unless bytes)."""
    folder = model_copy(source, target, without=name)
    data = content if isinstance(content, bytes) else json.dumps(content).encode()
    (folder / name).write_bytes(data)
    return folder


def with_config(source: Path, target: Path, **changes: object) -> Path:
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    return with_file(source, target, "config.json", {**config, **changes})


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"alignment_heads": LARGE_V3_HEADS}, "alignment_heads [7, 0]"),
        ({"alignment_heads": [[99, 0]]}, "alignment_heads [99, 0]"),
        # a head past base's 8: no crash, CTranslate2 reads past the attention it has
        ({"alignment_heads": [[3, 1], [5, 8]]}, "alignment_heads [5, 8]"),
        ({"suppress_ids": [1, 10**9]}, "suppress_ids 1000000000"),
    ],
)
def test_a_config_json_that_does_not_fit_model_bin_is_refused_naming_it(
    tmp_path: Path, whisper_base_dir: Path, changes: dict[str, object], named: str
) -> None:
    folder = with_config(whisper_base_dir, tmp_path / "mixed", **changes)
    with pytest.raises(ModelUnusable) as raised:
        faster_whisper.load(folder, device="cpu", compute_type=None, threads=1)
    reason = str(raised.value)
    assert f"config.json in {folder}" in reason and named in reason
    assert "6 layers of 8 heads" in reason or "vocabulary of 51865 tokens" in reason
    assert "\n" not in reason


@pytest.mark.parametrize("heads", [LARGE_V3_HEADS, [[99, 0]], [[-1, 0]]])
def test_what_ends_ctranslate2_in_word_alignment_ends_the_probe_child_not_this_process(
    tmp_path: Path, whisper_base_dir: Path, monkeypatch: pytest.MonkeyPatch, heads: list[list[int]]
) -> None:
    """The child process tries what can crash natively (decoding, then aligning a real sentence: a
    transcription of silence never aligns): shown here with config.json's check out of the way, as
    for a model.bin whose header this server cannot read."""
    monkeypatch.setattr(faster_whisper, "read_shape", lambda model_bin: None)
    folder = with_config(whisper_base_dir, tmp_path / "mixed", alignment_heads=heads)
    with pytest.raises(
        ModelUnusable, match=r"does not work: word alignment (failed|ended the process)"
    ) as raised:
        faster_whisper.load(folder, device="cpu", compute_type=None, threads=1)
    assert "config.json's alignment_heads do not fit model.bin" in str(raised.value)


def test_models_import_refuses_a_config_json_whose_token_ids_do_not_fit_and_installs_nothing(
    tmp_path: Path, whisper_base_dir: Path
) -> None:
    # alignment_heads alone are fixed at install (test_transcribe_models.py); other numbers refuse
    from cte1_mcp.errors import ModelInvalid
    from cte1_mcp.transcribe.model_sources import import_model

    folder = with_config(whisper_base_dir, tmp_path / "mixed", suppress_ids=[1, 10**9])
    said: list[str] = []
    with pytest.raises(ModelInvalid, match=r"do not load with faster-whisper: config.json in the files has "):
        import_model("base-misconfigured", folder, tmp_path / "models", force=False, say=said.append)
    assert not (tmp_path / "models" / "base-misconfigured").exists()


#: Heads of large-v3's size (32 decoder layers of 20 heads, the second half): what
#: kotoba-whisper-v2.0's config.json publishes beside its 2-layer decoder.
LARGE_V3_SIZED_HEADS = [[layer, head] for layer in range(16, 32) for head in range(20)]


@pytest.mark.parametrize(
    ("heads", "named"),
    [(LARGE_V3_SIZED_HEADS, "has alignment_heads [16, 0]"), (None, "has no alignment_heads")],
    ids=["large-v3-sized-heads", "no-heads"],
)
def test_a_model_folder_whose_heads_do_not_fit_is_refused_naming_the_import_that_fixes_it(
    tmp_path: Path, whisper_base_dir: Path, heads: list[list[int]] | None, named: str
) -> None:
    # Before: refused with "use the files published together with this model.bin", which for
    # kotoba-whisper-v2.0 are the misfitting ones (no heads at all: the probe's align failed).
    from cte1_mcp.errors import TranscriptionUnavailable
    from cte1_mcp.settings import AsrSettings
    from cte1_mcp.transcribe.configured import load_model, resolve_model

    config = json.loads((whisper_base_dir / "config.json").read_text(encoding="utf-8"))
    config.pop("alignment_heads")
    if heads is not None:
        config["alignment_heads"] = heads
    folder = with_file(whisper_base_dir, tmp_path / "kotoba-like", "config.json", config)
    published = (folder / "config.json").read_bytes()
    settings = AsrSettings(asr_model=str(folder), asr_models_dir=tmp_path / "models", asr_threads=1)
    with pytest.raises(TranscriptionUnavailable) as raised:
        load_model(resolve_model(settings), settings)
    message = raised.value.message
    assert f"config.json in {folder} {named}" in message
    assert (
        f"`cte1-mcp models import NAME {folder}` installs a copy of it with default alignment heads"
        in message
    )
    assert f"run `cte1-mcp models import NAME {folder}`" in raised.value.next_step
    assert (folder / "config.json").read_bytes() == published  # the server never edits a user's folder


def large_v3_layout(tokenizer: dict[str, Any]) -> dict[str, Any]:
    """Whisper-base's tokenizer.json laid out as large-v3's: its 100th language <|yue|> after the 99
    others, every special token after them one id up."""
    added = []
    for token in tokenizer["added_tokens"]:
        if token["id"] >= 50358:
            token = {**token, "id": token["id"] + 1}
        added.append(token)
        if token["content"] == "<|su|>":
            added.append({**token, "id": 50358, "content": "<|yue|>"})
    return {**tokenizer, "added_tokens": added, "post_processor": None}


def _tokenizer(whisper_base_dir: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((whisper_base_dir / "tokenizer.json").read_text(encoding="utf-8"))
    return loaded


WORD_LEVEL = {
    "version": "1.0",
    "truncation": None,
    "padding": None,
    "added_tokens": [],
    "normalizer": None,
    "pre_tokenizer": None,
    "post_processor": None,
    "decoder": None,
    "model": {"type": "WordLevel", "vocab": {"[UNK]": 0, "a": 1}, "unk_token": "[UNK]"},
}


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        # another model's tokenizer (valid JSON): before, "TypeError: '<' not supported" on every call
        (
            "tokenizer.json",
            WORD_LEVEL,
            "tokenizer.json in {} is not a Whisper tokenizer (it has no <|endoftext|>",
        ),
        ("tokenizer.json", "large-v3", "tokenizer.json in {} has 100 language tokens where model.bin has 99"),
        # large-v3's 128 mel bins: before, "Invalid input features shape" on every call
        (
            "preprocessor_config.json",
            {"feature_size": 128},
            "model.bin takes 80 mel bins, but preprocessor_config.json in {} says feature_size 128",
        ),
    ],
)
def test_a_tokenizer_or_preprocessor_config_of_another_model_is_refused_naming_the_file(
    tmp_path: Path, whisper_base_dir: Path, name: str, content: object, expected: str
) -> None:
    if content == "large-v3":
        content = large_v3_layout(_tokenizer(whisper_base_dir))
    folder = with_file(whisper_base_dir, tmp_path / "mixed", name, content)
    with pytest.raises(ModelUnusable) as raised:
        faster_whisper.load(folder, device="cpu", compute_type=None, threads=1)
    assert expected.format(folder) in str(raised.value)


@pytest.mark.slow
def test_a_language_whisper_does_not_have_is_one_it_cannot_hear(whisper_base: Transcriber) -> None:
    # jp is Japan's country code, an easy slip for ja: before, every call failed in faster-whisper
    assert "'jp' is not a language Whisper knows" in (whisper_base.cannot_hear("jp") or "")
    assert "not trained on 'yue'" in (whisper_base.cannot_hear("yue") or "")  # large-v3's, not base's
    assert whisper_base.cannot_hear("ja") is None and whisper_base.cannot_hear("en") is None


def test_the_probe_runs_once_per_version_of_the_files_and_without_the_servers_settings(
    tmp_path: Path, whisper_base_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cte1_mcp.transcribe.engines import child_probe

    runs: list[dict[str, str]] = []
    real_popen = subprocess.Popen

    def recording_popen(*args: Any, **kwargs: Any) -> Any:
        runs.append(kwargs["env"])
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(child_probe.subprocess, "Popen", recording_popen)
    monkeypatch.setenv("CTE1_API_KEY", "secret-key")
    monkeypatch.setenv("cte1_api_key", "secret-key")  # the settings take lower case too
    # a file of its own: the probe's key follows links, and whisper_base_dir may be probed already
    config = (whisper_base_dir / "config.json").read_bytes()
    folder = with_file(whisper_base_dir, tmp_path / "m", "config.json", config)
    for _ in range(2):
        faster_whisper.load(folder, device="cpu", compute_type=None, threads=1).close()
    assert len(runs) == 1 and not any(name.upper().startswith("CTE1_") for name in runs[0])
    (folder / "config.json").unlink()
    (folder / "config.json").write_bytes(config)  # the same bytes, a new file
    faster_whisper.load(folder, device="cpu", compute_type=None, threads=1).close()
    assert len(runs) == 2


def test_auto_is_the_cpu_here_with_the_cpus_int8_and_says_so(whisper_base_dir: Path) -> None:
    # before, auto ran the model's own float32 here and the transcript said device auto, compute default
    transcriber = faster_whisper.load(whisper_base_dir, device="auto", compute_type=None, threads=1)
    try:
        assert (transcriber.info.device, transcriber.info.computeType) == ("cpu", "int8")
        assert transcriber._model.model.compute_type.startswith("int8")  # type: ignore[attr-defined]
    finally:
        transcriber.close()


def test_a_model_installed_with_heads_that_do_not_fit_is_refused_naming_its_reinstall(
    tmp_path: Path, whisper_base_dir: Path
) -> None:
    # An install made before installs set default heads (kotoba-whisper-v2.0 as published) kept the
    # misfitting ones. Before: the next step named `models import NAME <its files>`, which refuses
    # an installed name without --force (and `pull` without --force calls it intact).
    from cte1_mcp.errors import TranscriptionUnavailable
    from cte1_mcp.settings import AsrSettings
    from cte1_mcp.transcribe import models
    from cte1_mcp.transcribe.configured import load_model, resolve_model
    from cte1_mcp.transcribe.model_sources import import_model

    models_dir = tmp_path / "models"
    import_model("old-install", whisper_base_dir, models_dir, force=False, say=lambda line: None)
    root = models_dir / "old-install"
    config = json.loads((root / "files" / "config.json").read_text(encoding="utf-8"))
    config["alignment_heads"] = [[16, 0], [31, 19]]  # large-v3's layers, as the published kotoba
    (root / "files" / "config.json").write_text(json.dumps(config), encoding="utf-8")
    size, sha256 = models.hash_file(root / "files" / "config.json")
    manifest = models.read_manifest(root)
    files = {**manifest.files, "config.json": models.ManifestFile(size=size, sha256=sha256)}
    models.write_manifest(root, manifest.model_copy(update={"files": files, "verified": None}))

    settings = AsrSettings(asr_model="old-install", asr_models_dir=models_dir, asr_threads=1)
    with pytest.raises(TranscriptionUnavailable) as raised:
        load_model(resolve_model(settings), settings)
    assert "alignment_heads [16, 0]" in raised.value.message
    assert raised.value.next_step is not None
    assert f"`cte1-mcp models import old-install {whisper_base_dir} --force`" in raised.value.next_step
