"""Where the local store keeps what: every path built only from a ``CallKey`` and fixed names.

Under the root (directories 0700, files 0600)::

    recordings/<tenant>/<session>/<record>/audio.wav     the audio bytes exactly as received
                                                         (audio.mp3, or audio.bin when unknown)
    recordings/<tenant>/<session>/<record>/meta.json     platform metadata, AudioInfo, fetched_at
    recordings/<tenant>/<session>/<record>/artifacts/<sha256>/<name>
                                                         derived artefacts of that exact audio
    tmp/<random>.part                                    writes in progress, flock-ed by their writer
    expired/<tenant>/<session>/<record>.json             tombstone: available_until, nothing personal
    pushed/<tenant>/<session>/<record>.json              a transcript CT-e1 pushed (see pushed.py)
    journal                                              keys changed by any process (see index.py)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cte1_mcp.models import CallKey, Container
from cte1_mcp.repository.local.posix import names_in

logger = logging.getLogger(__name__)

#: The audio file's name carries its container's extension, so players and tools opening the
#: local path know what it is; the other names are removed when a commit replaces it.
AUDIO_NAMES: dict[Container, str] = {"wav": "audio.wav", "mp3": "audio.mp3", "unknown": "audio.bin"}
META = "meta.json"
ARTIFACTS = "artifacts"
#: Artefact names are plain file names chosen by code (``analytics.json``, ``clip-…mp3``): no
#: separators, no leading dot, nothing a shell or a path join could misread.
_ARTIFACT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True, slots=True)
class Layout:
    root: Path

    @property
    def recordings(self) -> Path:
        return self.root / "recordings"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def expired(self) -> Path:
        return self.root / "expired"

    @property
    def pushed(self) -> Path:
        return self.root / "pushed"

    @property
    def journal(self) -> Path:
        return self.root / "journal"

    def record_dir(self, key: CallKey) -> Path:
        return self.recordings.joinpath(*key.path_parts)

    def audio_path(self, key: CallKey, container: Container) -> Path:
        return self.record_dir(key) / AUDIO_NAMES[container]

    def tombstone_parts(self, key: CallKey) -> tuple[tuple[str, str], str]:
        """The tombstone's directory parts below ``expired/`` and its file name."""
        tenant, session, record = key.path_parts
        return (tenant, session), f"{record}.json"

    def tombstone_path(self, key: CallKey) -> Path:
        (tenant, session), name = self.tombstone_parts(key)
        return self.expired / tenant / session / name

    def artifact_parts(self, key: CallKey, sha256: str) -> tuple[str, ...]:
        """Below ``recordings/``: the directory of the artefacts of one version of the audio."""
        return (*key.path_parts, ARTIFACTS, sha256)

    def artifact_path(self, key: CallKey, sha256: str, name: str) -> Path:
        return self.recordings.joinpath(*self.artifact_parts(key, sha256), check_artifact_name(name))


def check_artifact_name(name: str) -> str:
    """``name`` if it is a safe artefact file name; ValueError (a programming error) otherwise."""
    if not _ARTIFACT_NAME.fullmatch(name) or ".." in name or name.endswith(".part"):
        raise ValueError(f"not a valid artefact name: {name[:80]!r}")
    return name


def keys_under(top: Path, *, suffix: str) -> Iterator[CallKey]:
    """Keys stored as ``top/<tenant>/<session>/<record><suffix>``; anything else is not ours to read.

    Another process sharing the store may remove any of these directories during the walk: what
    has vanished is simply not there. Symbolic links are neither followed nor listed, ``top``
    included (say ``recordings/`` replaced by a link while the server runs).
    """
    if top.is_symlink():
        logger.warning("ignoring the symbolic link %s inside the store", top)
        return
    for tenant in names_in(top, directories=True):
        for session in names_in(top / tenant, directories=True):
            if not _is_number(session):
                continue
            for name in names_in(top / tenant / session, directories=not suffix):
                record = name.removesuffix(suffix) if suffix else name
                if not (name.endswith(suffix) and _is_number(record)):
                    continue
                try:
                    key = CallKey(tenant, int(session), int(record))
                except ValueError:
                    continue
                if key.path_parts == (tenant, session, record):
                    yield key


def _is_number(name: str) -> bool:
    return name.isascii() and name.isdigit() and len(name) <= 20
