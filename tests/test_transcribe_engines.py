"""The engine registry: an engine found by its model's files, loaded only when asked, and a missing
module or package a sentence naming what to install.

The real engines' own tests live with them; here a tiny engine module, written to a temporary
directory and registered like the built-in ones, exercises the registry's own logic.
"""

from __future__ import annotations

import re
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from cte1_mcp.errors import ConfigurationError, TranscriptionUnavailable
from cte1_mcp.settings import AsrSettings, load_settings
from cte1_mcp.transcribe import engines
from cte1_mcp.transcribe.base import ModelUnusable, fingerprint
from cte1_mcp.transcribe.catalog import CATALOG, CatalogEntry, PinnedFile
from cte1_mcp.transcribe.configured import describe, load_model, resolve, resolve_model
from cte1_mcp.transcribe.engines import Engine, detect, load_transcriber, missing_package

TINY_ENGINE = """
from pathlib import Path

from cte1_mcp.transcribe.base import EngineInfo, ModelUnusable, Recognised

NAME = "tiny"


def matches(model_dir: Path) -> bool:
    return (model_dir / "tiny.bin").is_file()


class Tiny:
    def __init__(self, model_dir: Path, device: str, compute_type: str | None, threads: int) -> None:
        self.info = EngineInfo(name=NAME, model=model_dir.name, modelSha256=None, device=device,
                               computeType=compute_type)
        self.threads = threads

    def transcribe(self, audio, language):
        return [Recognised(0.0, 1.0, "tiny")]

    def cannot_hear(self, language):
        return None

    def close(self) -> None:
        pass


def load(model_dir: Path, *, device: str, compute_type: str | None, threads: int) -> Tiny:
    if (model_dir / "tiny.bin").read_bytes() == b"broken":
        raise ModelUnusable("tiny.bin does not load: it says it is broken")
    return Tiny(model_dir, device, compute_type, threads)
"""


@pytest.fixture
def tiny_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The ``tiny`` engine (module ``tiny_engine_<n>`` on sys.path), registered for this test."""
    package = tmp_path / "engine_modules"
    package.mkdir()
    module = f"tiny_engine_{abs(hash(tmp_path)) % 10**8}"
    (package / f"{module}.py").write_text(textwrap.dedent(TINY_ENGINE), encoding="utf-8")
    monkeypatch.syspath_prepend(str(package))
    monkeypatch.setitem(
        engines.ENGINES, "tiny", Engine("tiny", module, (), "pip install tiny-engine", (("tiny.bin",),))
    )
    yield module
    sys.modules.pop(module, None)


def model_dir(root: Path, *names: str, content: bytes = b"weights") -> Path:
    root.mkdir(parents=True)
    for name in names:
        (root / name).write_bytes(content)
    return root


def test_whisper_and_transducer_layouts_are_told_apart_by_file_names(tmp_path: Path) -> None:
    whisper = model_dir(tmp_path / "w", "model.bin", "config.json", "tokenizer.json", "vocabulary.json")
    transducer = model_dir(
        tmp_path / "t",
        "encoder-epoch-99-avg-1.int8.onnx",
        "decoder-epoch-99-avg-1.onnx",
        "joiner-x.onnx",
        "tokens.txt",
    )
    assert detect(whisper) == "faster-whisper"
    assert detect(transducer) == "sherpa-onnx"
    assert detect(model_dir(tmp_path / "half", "model.bin", "config.json")) is None
    assert detect(tmp_path / "absent") is None


def test_an_engine_whose_module_is_missing_is_still_detected_and_named_when_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(
        engines.ENGINES,
        "ghost",
        Engine(
            "ghost", "cte1_mcp.transcribe.engines.no_such_engine", (), "pip install ghost", (("ghost.bin",),)
        ),
    )
    folder = model_dir(tmp_path / "g", "ghost.bin")
    assert detect(folder) == "ghost"
    with pytest.raises(ModelUnusable, match="no ghost engine"):
        load_transcriber(folder, device="cpu", compute_type=None, threads=1)


def test_a_missing_package_is_named_with_the_command_that_installs_it(
    tmp_path: Path, tiny_engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    needy = Engine(
        "tiny", tiny_engine, ("a_package_nobody_installed_xyz",), "pip install 'cte1-mcp[tiny]'", ()
    )
    monkeypatch.setitem(engines.ENGINES, "tiny", needy)
    folder = model_dir(tmp_path / "m", "tiny.bin")
    assert detect(folder) == "tiny"  # its module imports: its own `matches` decides
    problem = missing_package("tiny")
    assert problem is not None and "a_package_nobody_installed_xyz" in problem
    with pytest.raises(ModelUnusable, match=r"pip install 'cte1-mcp\[tiny\]'"):
        load_transcriber(folder, device="cpu", compute_type=None, threads=1)


def test_load_passes_device_compute_type_and_threads(tmp_path: Path, tiny_engine: str) -> None:
    transcriber = load_transcriber(
        model_dir(tmp_path / "m", "tiny.bin"), device="cuda", compute_type="float16", threads=3
    )
    assert transcriber.info.device == "cuda"
    assert transcriber.info.computeType == "float16"
    assert transcriber.threads == 3  # type: ignore[attr-defined]


def test_nothing_recognised_is_a_model_unusable(tmp_path: Path) -> None:
    with pytest.raises(ModelUnusable, match="no engine recognises"):
        load_transcriber(model_dir(tmp_path / "m", "notes.txt"), device="cpu", compute_type=None, threads=1)


# --- resolve_model / load_model: what the service asks before any upstream request ------------


def test_no_model_configured_is_transcription_unavailable_naming_the_fix(tmp_path: Path) -> None:
    settings = AsrSettings(asr_models_dir=tmp_path)
    with pytest.raises(TranscriptionUnavailable) as caught:
        resolve_model(settings)
    rendered = caught.value.render()
    assert rendered.startswith("[transcription_unavailable]")
    assert "CTE1_ASR_MODEL" in rendered
    assert "cte1-mcp models pull" in rendered and "cte1-mcp models import" in rendered


def test_a_model_that_does_not_load_is_transcription_unavailable(tmp_path: Path, tiny_engine: str) -> None:
    folder = model_dir(tmp_path / "broken-model", "tiny.bin", content=b"broken")
    settings = AsrSettings(asr_models_dir=tmp_path, asr_model=str(folder))
    resolved = resolve_model(settings)
    assert (resolved.engine, resolved.name, resolved.manifest) == ("tiny", "broken-model", None)
    with pytest.raises(TranscriptionUnavailable, match=r"does not load: tiny\.bin does not load"):
        load_model(resolved, settings)


def test_a_directory_model_loads_with_the_configured_threads(tmp_path: Path, tiny_engine: str) -> None:
    folder = model_dir(tmp_path / "good", "tiny.bin")
    settings = AsrSettings(asr_models_dir=tmp_path, asr_model=str(folder), asr_threads=2, asr_device="auto")
    transcriber = load_model(resolve_model(settings), settings)
    assert transcriber.inner.threads == 2  # type: ignore[attr-defined]
    assert transcriber.info.device == "auto"


def test_an_installed_model_is_named_as_installed_and_fingerprinted_from_its_manifest(
    tmp_path: Path, tiny_engine: str
) -> None:
    from cte1_mcp.transcribe.model_sources import import_model

    source = model_dir(tmp_path / "src", "tiny.bin", "vocab.txt")
    installed = import_model("tiny-one", source, tmp_path / "models", force=False, say=lambda line: None)
    settings = AsrSettings(asr_models_dir=tmp_path / "models", asr_model="tiny-one")
    resolved = resolve_model(settings)
    assert resolved.fingerprint == fingerprint(installed / "files")
    transcriber = load_model(resolved, settings)
    assert transcriber.info.model == "tiny-one"  # not "files", the folder the engine was given
    assert [r.text for r in transcriber.transcribe(np.zeros(16000, np.float32), "ja")] == ["tiny"]


def test_check_describes_the_model_and_what_was_checked(tmp_path: Path, tiny_engine: str) -> None:
    from cte1_mcp.transcribe.model_sources import import_model

    folder = model_dir(tmp_path / "plain", "tiny.bin")
    assert describe(resolve(str(folder), tmp_path / "models")) == (
        f"tiny plain: directory {folder}, no recorded checksums"
    )
    import_model("tiny-one", folder, tmp_path / "models", force=False, say=lambda line: None)
    assert describe(resolve("tiny-one", tmp_path / "models")) == (
        f"tiny tiny-one: files verified against recorded sha256 ({folder.absolute()})"
    )


def test_start_up_lists_a_models_missing_engine_package_with_the_other_problems(
    tmp_path: Path, tiny_engine: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    needy = Engine(
        "tiny", tiny_engine, ("a_package_nobody_installed_xyz",), "pip install 'cte1-mcp[tiny]'", ()
    )
    monkeypatch.setitem(engines.ENGINES, "tiny", needy)
    folder = model_dir(tmp_path / "m", "tiny.bin")
    with pytest.raises(ConfigurationError) as caught:
        load_settings(
            base_url="https://cte1.example.jp",
            source_uuid="6f1c2a4e-8d3b-4e55-9a71-0c2b7d9e4f10",
            api_key="k",
            asr_models_dir=tmp_path / "models",
            asr_model=str(folder),
            asr_concurrency=0,
        )
    message = caught.value.message
    assert "CTE1_ASR_MODEL: the tiny engine needs the package 'a_package_nobody_installed_xyz'" in message
    assert "pip install 'cte1-mcp[tiny]'" in message
    assert "CTE1_ASR_CONCURRENCY" in message


# --- the catalog -------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", list(CATALOG.values()), ids=list(CATALOG))
def test_every_catalog_model_is_pinned_and_its_files_choose_its_engine(
    entry: CatalogEntry, tmp_path: Path
) -> None:
    assert re.fullmatch(r"[0-9a-f]{40}", entry.revision), "a pinned commit, never a branch"
    for index, form in enumerate(entry.forms):
        names = [f.name for f in form.files]
        assert len(set(names)) == len(names)
        assert all(re.fullmatch(r"[0-9a-f]{64}", f.sha256) and f.size > 0 for f in form.files)
        # what `pull` or `import` installs is recognised as this engine's model, by name alone
        folder = model_dir(tmp_path / f"form-{index}", *names)
        assert engines.declared_match(engines.ENGINES[entry.engine], folder)
        assert detect(folder) == entry.engine
    assert entry.pull.origin == f"{entry.repo}@{entry.revision[:7]}"


def test_the_catalog_has_the_models_the_issue_names() -> None:
    named = {
        "reazonspeech-k2-v2",
        "whisper-large-v3-turbo",
        "kotoba-whisper-v2.0",
        "whisper-small",
        "whisper-base",
    }
    assert named <= set(CATALOG)
    assert CATALOG["reazonspeech-k2-v2"].engine == "sherpa-onnx"
    # the Whisper-base the tests and the demo use, from its PyPI wheels: the sha256 the issue gives
    (wheels,) = CATALOG["whisper-base"].also
    assert wheels.by_name()["model.bin"] == PinnedFile(
        "model.bin", 145_217_607, "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
    )


def test_a_models_dir_that_is_a_file_is_a_configuration_problem_not_a_crash(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "models"
    not_a_dir.write_text("oops")
    with pytest.raises(ConfigurationError, match=r"CTE1_ASR_MODEL: .*models cannot be read"):
        load_settings(
            base_url="https://cte1.example.jp",
            source_uuid="6f1c2a4e-8d3b-4e55-9a71-0c2b7d9e4f10",
            api_key="k",
            asr_models_dir=not_a_dir,
            asr_model="whisper-small",
        )
