"""The engines, chosen by a model's files: ``detect`` names the engine, ``load_transcriber`` loads it.

Each engine is a module here with ``NAME``, ``matches(model_dir)`` (file names only) and
``load(model_dir, *, device, compute_type, threads)``. They are imported only when asked for, so
the server starts without the engines' (large) packages, and a missing package is a sentence
naming what to install, not an ImportError. Each engine is also declared below with the file
names its models have: detection then still works when its module or package is not installed,
so a user is told "install faster-whisper" rather than "no engine knows these files".
"""

from __future__ import annotations

import fnmatch
import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

from cte1_mcp.transcribe.base import ModelUnusable, Transcriber


@dataclass(frozen=True, slots=True)
class Engine:
    name: str
    #: The module implementing it (``NAME``, ``matches``, ``load``).
    module: str
    #: Python packages it imports (checked by ``find_spec``, which imports nothing).
    requires: tuple[str, ...]
    #: What to run when one is missing.
    install: str
    #: Each entry: glob patterns of which one file must be present. Used when the module cannot be
    #: imported; the module's own ``matches`` decides otherwise.
    files: tuple[tuple[str, ...], ...]


ENGINES: dict[str, Engine] = {}


def register(engine: Engine) -> None:
    """Add an engine (the built-in ones below; tests add a small one of their own)."""
    ENGINES[engine.name] = engine


register(
    Engine(
        name="faster-whisper",
        module="cte1_mcp.transcribe.engines.faster_whisper",
        requires=("faster_whisper", "ctranslate2"),
        install="pip install 'cte1-mcp[whisper]'",
        files=(("model.bin",), ("config.json",), ("tokenizer.json",), ("vocabulary.*",)),
    )
)
register(
    Engine(
        name="sherpa-onnx",
        module="cte1_mcp.transcribe.engines.sherpa_onnx",
        requires=("sherpa_onnx",),
        install="pip install sherpa-onnx",
        files=(("encoder*.onnx",), ("decoder*.onnx",), ("joiner*.onnx",), ("tokens.txt",)),
    )
)


class _EngineModule(Protocol):
    NAME: str

    def matches(self, model_dir: Path) -> bool: ...

    load: Callable[..., Transcriber]


def detect(model_dir: Path) -> str | None:
    """The engine whose files ``model_dir`` holds (names only: cheap), or None."""
    for engine in ENGINES.values():
        module = _module(engine)
        if module is not None:
            if module.matches(model_dir):
                return engine.name
        elif declared_match(engine, model_dir):
            return engine.name
    return None


def declared_match(engine: Engine, model_dir: Path) -> bool:
    try:
        names = [p.name for p in model_dir.iterdir() if p.is_file()]
    except OSError:
        return False
    return all(any(fnmatch.filter(names, pattern) for pattern in group) for group in engine.files)


def missing_package(engine_name: str) -> str | None:
    """Why ``engine_name`` cannot load here (its module or a package it needs is not installed, with
    the command that installs it), or None. Imports nothing, so start-up can ask it cheaply."""
    engine = ENGINES[engine_name]
    for name in (engine.module, *engine.requires):
        try:
            found = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            found = None
        if found is None and name == engine.module:
            return f"this installation has no {engine.name} engine (module {name} is missing): reinstall cte1-mcp"
        if found is None:
            return f"the {engine.name} engine needs the package {name!r}, which is not installed: {engine.install}"
    return None


def load_transcriber(
    model_dir: Path,
    *,
    device: str,
    compute_type: str | None,
    threads: int,
    engine: str | None = None,
) -> Transcriber:
    """Load the model in ``model_dir`` with its engine (``engine`` if already detected).

    Raises ``ModelUnusable`` for every way it can fail, in words a user can act on.
    """
    name = engine or detect(model_dir)
    if name is None:
        raise ModelUnusable(f"no engine recognises the files in {model_dir}")
    problem = missing_package(name)
    if problem is not None:
        raise ModelUnusable(problem)
    module = _module(ENGINES[name])
    if module is None:  # found by find_spec but failed to import (a broken installation)
        raise ModelUnusable(f"the {name} engine failed to import: reinstall it ({ENGINES[name].install})")
    return module.load(model_dir, device=device, compute_type=compute_type, threads=threads)


def _module(engine: Engine) -> _EngineModule | None:
    try:
        return cast(_EngineModule, importlib.import_module(engine.module))
    except ImportError:
        return None
