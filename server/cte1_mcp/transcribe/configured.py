"""Which model the server uses: CTE1_ASR_MODEL resolved and checked, once at start-up (a broken one
is a configuration problem) and again before each transcription (``resolve_model``, which answers
``[transcription_unavailable]`` before any upstream request is spent).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from cte1_mcp.errors import ModelInvalid, TranscriptionUnavailable
from cte1_mcp.transcribe import engines
from cte1_mcp.transcribe.base import EngineInfo, ModelUnusable, Recognised, Transcriber
from cte1_mcp.transcribe.catalog import CATALOG
from cte1_mcp.transcribe.models import (
    MANIFEST,
    NAME,
    Installed,
    Manifest,
    file_problems,
    fingerprint_of,
    installed_models,
    is_verified,
    read_manifest,
    restamp,
)

if TYPE_CHECKING:
    from cte1_mcp.settings import AsrSettings

#: What a user runs to get a model, in every message that says there is none.
PULL_HINT = "`cte1-mcp models pull reazonspeech-k2-v2` (or `cte1-mcp models import NAME PATH` offline)"


class Unusable(Exception):
    """Why the configured model cannot be used, naming CTE1_ASR_MODEL and what fixes it."""


@dataclass(frozen=True, slots=True)
class ResolvedModel:
    #: The installed name, or the directory's own name.
    name: str
    #: What the engine loads.
    files_dir: Path
    engine: str
    manifest: Manifest | None

    @property
    def fingerprint(self) -> str | None:
        """The model files' ``base.fingerprint`` when a manifest records their digests."""
        return fingerprint_of(self.manifest) if self.manifest is not None else None


def is_path(value: str) -> bool:
    """A value naming a directory rather than an installed model: it has a path separator or ``~``."""
    return "/" in value or os.sep in value or value.startswith("~") or value in (".", "..")


def resolve(value: str, models_dir: Path) -> ResolvedModel:
    """The model CTE1_ASR_MODEL names, checked: its engine found and installed, its files intact.

    Raises ``Unusable`` with a sentence for the operator.
    """
    if is_path(value):
        root = Path(value).expanduser()
        if not root.is_dir():
            raise Unusable(
                f"{root} is not a directory (a model directory, or the name of an installed model)"
            )
        if (root / MANIFEST).is_file():  # an installed model given by its path
            return _checked(Installed(root.name, root, *_manifest_or_problem(root)))
        return _engine_of(root.name, root, None)
    if not NAME.fullmatch(value):
        raise Unusable(f"{value[:80]!r} is neither a model name nor a directory")
    root = models_dir / value
    if not root.is_dir():
        try:
            known = ", ".join(m.name for m in installed_models(models_dir)) or "none"
        except ModelInvalid as exc:
            raise Unusable(exc.message) from None
        fix = (
            f"`cte1-mcp models pull {value}`"
            if value in CATALOG
            else f"`cte1-mcp models import {value} PATH`, or {PULL_HINT}"
        )
        raise Unusable(
            f"no model named {value!r} is installed in {models_dir} (installed: {known}); install it with {fix}"
        )
    return _checked(Installed(value, root, *_manifest_or_problem(root)))


def _manifest_or_problem(root: Path) -> tuple[Manifest | None, str | None]:
    try:
        return read_manifest(root), None
    except ModelInvalid as exc:
        return None, exc.message


def _checked(model: Installed) -> ResolvedModel:
    if model.manifest is None:
        raise Unusable(f"{model.problem}; install the model again ({PULL_HINT})")
    seen: dict[str, tuple[int, int]] = {}
    problems = file_problems(
        model.files_dir, model.manifest.files, rehash=False, verified=model.manifest.verified, seen=seen
    )
    if problems:
        name = model.manifest.name
        again = (
            f"`cte1-mcp models pull {name}`"
            if name in CATALOG
            else f"`cte1-mcp models import {name} PATH --force` from an untouched copy"
        )
        raise Unusable(
            f"the files of model {model.name!r} fail their recorded checks ({'; '.join(problems[:3])}); "
            f"install it again with {again}"
        )
    if not is_verified(model):  # never waits for a `models` command; a read-only one is remembered
        restamp(model, seen)
    return _engine_of(model.name, model.files_dir, model.manifest)


def _engine_of(name: str, files_dir: Path, manifest: Manifest | None) -> ResolvedModel:
    engine = manifest.engine if manifest is not None else engines.detect(files_dir)
    if engine is None or engine not in engines.ENGINES:
        raise Unusable(
            f"no engine recognises the files in {files_dir} (faster-whisper: model.bin, config.json, "
            "tokenizer.json, vocabulary.*; sherpa-onnx: encoder*.onnx, decoder*.onnx, joiner*.onnx, tokens.txt)"
        )
    missing = engines.missing_package(engine)
    if missing is not None:
        raise Unusable(missing)
    return ResolvedModel(name, files_dir, engine, manifest)


def resolve_model(settings: AsrSettings) -> ResolvedModel:
    """The configured model, or ``TranscriptionUnavailable``: asked before any upstream request."""
    if settings.asr_model is None:
        raise TranscriptionUnavailable(
            "no speech-recognition model is configured on this server (CTE1_ASR_MODEL is not set)"
        )
    try:
        return resolve(settings.asr_model, settings.asr_models_dir)
    except Unusable as exc:
        raise TranscriptionUnavailable(f"the model CTE1_ASR_MODEL names cannot be used: {exc}") from None


def load_model(model: ResolvedModel, settings: AsrSettings) -> Transcriber:
    """Load the resolved model with the configured device, compute type and threads."""
    try:
        loaded = engines.load_transcriber(
            model.files_dir,
            device=settings.asr_device,
            compute_type=settings.asr_compute_type,
            threads=settings.asr_threads_count,
            engine=model.engine,
        )
    except ModelUnusable as exc:
        # an engine's reason may carry its own fix (faster-whisper: the install that sets its heads)
        step = getattr(exc, "next_step", None)
        if isinstance(step, str) and model.manifest is not None:
            # Installed before installs set default heads (kotoba-whisper-v2.0 as published): the
            # same name installed again, which `pull` without --force would call intact.
            source = model.manifest.source
            again = (
                f"cte1-mcp models pull {model.name} --force"
                if source.kind == "huggingface"
                else f"cte1-mcp models import {model.name} {source.origin} --force"
            )
            step = (
                f"Ask the operator to run `{again}` (installed before installs set default alignment "
                "heads) and restart the server."
            )
        raise TranscriptionUnavailable(
            f"the model CTE1_ASR_MODEL names ({model.name}, {model.engine}) does not load: {exc}",
            next_step=step if isinstance(step, str) else None,
        ) from None
    refused = loaded.cannot_hear(settings.asr_language)
    if refused is not None:
        loaded.close()
        raise TranscriptionUnavailable(
            f"the model CTE1_ASR_MODEL names cannot be used: {refused} (CTE1_ASR_LANGUAGE)",
            next_step="Ask the operator to set CTE1_ASR_LANGUAGE to the language of the calls (ja for "
            "Japanese), or CTE1_ASR_MODEL to a model that hears it, and restart the server.",
        )
    return Named(loaded, loaded.info.model_copy(update={"model": model.name}))


@dataclass(frozen=True, slots=True)
class Named:
    """A loaded model whose ``info`` names it as installed (``whisper-small``), not by the folder the
    engine was given (an installed model's files are in ``<name>/files``)."""

    inner: Transcriber
    info: EngineInfo

    def transcribe(self, audio: npt.NDArray[np.float32], language: str) -> list[Recognised]:
        return self.inner.transcribe(audio, language)

    def cannot_hear(self, language: str) -> str | None:
        return self.inner.cannot_hear(language)

    def close(self) -> None:
        self.inner.close()


def describe(model: ResolvedModel) -> str:
    """One line for ``cte1-mcp check``: engine, model, and what was checked."""
    if model.manifest is None:
        state = f"directory {model.files_dir}, no recorded checksums"
    else:
        source = model.manifest.source
        state = f"files verified against {'pinned' if source.pinned else 'recorded'} sha256 ({source.origin})"
        changed = [name for name, file in model.manifest.files.items() if file.published is not None]
        if changed:  # verified as installed; the manifest keeps the publisher's sha256 and why
            state += f"; {', '.join(changed)} changed at install"
    return f"{model.engine} {model.name}: {state}"
