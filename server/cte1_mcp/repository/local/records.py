"""One record directory on disk: its meta.json document, and reading, filling and emptying it.

A ``meta.json`` only ever exists beside its complete audio: a commit renames the audio into place
first and the ``meta.json`` last; a removal deletes the ``meta.json`` first; a load checks the
audio's size. Every directory is opened without following links (``posix.open_dir``). No locking
here: the store serialises what needs it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from cte1_mcp.models import AudioInfo, CallKey, CallMetadata, Recording
from cte1_mcp.repository.local.index import FileId, Indexed
from cte1_mcp.repository.local.layout import ARTIFACTS, AUDIO_NAMES, META, Layout, keys_under
from cte1_mcp.repository.local.posix import (
    LinkInStore,
    fsync_dir,
    open_dir,
    open_regular,
    prune,
    read_fd,
    remove_tree,
    unlink_quietly,
)

logger = logging.getLogger(__name__)

#: Audio without a meta.json younger than this may be another process's commit in progress.
ORPHAN_GRACE_SECONDS = 60.0
#: A meta.json is a few KiB; anything far larger is not one of ours.
_META_LIMIT = 4 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: A rename into a directory that a concurrent sweep keeps pruning is given up after this many tries.
_RENAME_ATTEMPTS = 5


class StoredMeta(BaseModel):
    """The meta.json document; ``metadata`` is the platform's JSON verbatim (extra fields included)."""

    model_config = ConfigDict(frozen=True)

    version: Literal[1] = 1
    tenant_id: str
    session_id: int
    record_id: int
    metadata: dict[str, Any]
    audio: AudioInfo
    fetched_at: AwareDatetime

    def recording(self) -> Recording:
        return Recording(
            tenant_id=self.tenant_id,
            session_id=self.session_id,
            record_id=self.record_id,
            metadata=CallMetadata.model_validate(self.metadata),
            audio=self.audio,
            fetched_at=self.fetched_at,
        )


def load(layout: Layout, key: CallKey, *, walking: bool = False) -> Indexed | None:
    """The recording on disk if its meta.json is valid, belongs to ``key`` and its audio is
    complete. ``walking``: its tenant and session directories were just listed as real
    directories, so only the record directory itself is opened (still without following a link)."""
    try:
        if walking:
            dir_fd: int | None = os.open(layout.record_dir(key), _DIR_FLAGS)
        else:
            dir_fd = open_dir(layout.recordings, key.path_parts, create=False)
    except (LinkInStore, OSError):
        return None
    if dir_fd is None:
        return None
    try:
        meta_fd = open_regular(META, dir_fd=dir_fd)  # a FIFO there must not block the lookup
        try:
            meta_info = os.fstat(meta_fd)
            document = StoredMeta.model_validate_json(read_fd(meta_fd, _META_LIMIT))
        finally:
            os.close(meta_fd)
        recording = document.recording()
        info = os.stat(AUDIO_NAMES[recording.audio.format.container], dir_fd=dir_fd, follow_symlinks=False)
        if (
            recording.key != key
            or not stat.S_ISREG(info.st_mode)
            or info.st_size != recording.audio.size_bytes
        ):
            return None
        artifact_bytes, stale = _artifacts(dir_fd, recording.audio.sha256)
    except (OSError, ValidationError, ValueError, OverflowError):
        return None
    finally:
        os.close(dir_fd)
    return Indexed(
        recording, FileId.of(info), FileId.of_meta(meta_info), artifact_bytes, meta_info.st_mtime, stale
    )


def walk(layout: Layout) -> tuple[list[Indexed], list[CallKey]]:
    """Every recording on disk, and the record directories without one (safe without a lock:
    what another process removes meanwhile is simply not there)."""
    entries: list[Indexed] = []
    orphans: list[CallKey] = []
    for key in keys_under(layout.recordings, suffix=""):
        loaded = load(layout, key, walking=True)
        if loaded is None:
            orphans.append(key)
        else:
            entries.append(loaded)
    return entries, orphans


def move_into_place(
    layout: Layout, key: CallKey, part: Path, meta_part: Path, audio: AudioInfo
) -> tuple[FileId, FileId, int]:
    """A commit's renames: the audio, then the meta.json; artefacts of other audio go. Retried
    when another process prunes the new directory meanwhile (to its sweep, an empty record
    directory is a crash's leftover). Returns both files' identities and the artefacts' size."""
    audio_name = AUDIO_NAMES[audio.format.container]
    for attempt in range(_RENAME_ATTEMPTS):
        dir_fd = open_dir(layout.recordings, key.path_parts, create=True)
        assert dir_fd is not None
        try:
            unlink_quietly(META, dir_fd=dir_fd)  # from here until the end, readers see "absent"
            for other in AUDIO_NAMES.values():
                if other != audio_name:
                    unlink_quietly(other, dir_fd=dir_fd)
            artifact_bytes = keep_artifacts_of(dir_fd, audio.sha256)
            try:
                os.replace(part, audio_name, dst_dir_fd=dir_fd)
            except FileNotFoundError:
                if attempt == _RENAME_ATTEMPTS - 1 or not part.exists():
                    raise
                continue  # our directory was pruned under us: make it again
            try:
                os.replace(meta_part, META, dst_dir_fd=dir_fd)
            except OSError:
                unlink_quietly(audio_name, dir_fd=dir_fd)
                raise
            audio_id = FileId.of(os.stat(audio_name, dir_fd=dir_fd, follow_symlinks=False))
            meta_id = FileId.of_meta(os.stat(META, dir_fd=dir_fd, follow_symlinks=False))
            try:
                fsync_dir(dir_fd)
            except OSError:  # both names are in place and visible: stored, if not yet durable
                logger.warning(
                    "fsync of %s's directory failed; it is stored but may not survive a crash", key
                )
            return audio_id, meta_id, artifact_bytes
        finally:
            os.close(dir_fd)
    raise AssertionError("unreachable")  # pragma: no cover


def remove(layout: Layout, key: CallKey) -> bool:
    """Delete a recording and its artefacts, meta.json first; whether its directory was there."""
    try:
        dir_fd = open_dir(layout.recordings, key.path_parts, create=False)
    except LinkInStore:
        return False
    if dir_fd is None:
        return False
    try:
        unlink_quietly(META, dir_fd=dir_fd)
        for name in AUDIO_NAMES.values():
            unlink_quietly(name, dir_fd=dir_fd)
        remove_tree(dir_fd)
    finally:
        os.close(dir_fd)
    prune(layout.record_dir(key), layout.recordings)
    return True


def is_abandoned(layout: Layout, key: CallKey) -> bool:
    """A directory without a valid meta.json is a crash's leftover unless its audio is recent
    (then it may be another process's commit in progress)."""
    directory = layout.record_dir(key)
    for name in AUDIO_NAMES.values():
        with contextlib.suppress(OSError):
            if time.time() - os.lstat(directory / name).st_mtime < ORPHAN_GRACE_SECONDS:
                return False
    return True


def tidy_artifacts(layout: Layout, key: CallKey, sha256: str) -> None:
    """Delete artefacts of other versions of the audio (e.g. written late by a process that
    still held the old version)."""
    try:
        dir_fd = open_dir(layout.recordings, key.path_parts, create=False)
    except LinkInStore:
        return
    if dir_fd is None:
        return
    try:
        keep_artifacts_of(dir_fd, sha256)
    finally:
        os.close(dir_fd)


def keep_artifacts_of(dir_fd: int, sha256: str) -> int:
    """Delete the artefacts of every other version of the audio; the size of those that stay."""
    try:
        fd = os.open(ARTIFACTS, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError:
        return 0
    try:
        with os.scandir(fd) as entries:
            stale = [entry.name for entry in entries if entry.name != sha256]
        for name in stale:
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError:
                unlink_quietly(name, dir_fd=fd)
                continue
            try:
                remove_tree(child)
            finally:
                os.close(child)
            with contextlib.suppress(OSError):
                os.rmdir(name, dir_fd=fd)
    finally:
        os.close(fd)
    return _artifact_bytes(dir_fd, sha256)


def _artifacts(dir_fd: int, sha256: str) -> tuple[int, bool]:
    """The size of this version's artefacts, and whether artefacts of other versions lie beside them."""
    try:
        fd = os.open(ARTIFACTS, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError:
        return 0, False
    try:
        with os.scandir(fd) as entries:
            stale = any(entry.name != sha256 for entry in entries)
    finally:
        os.close(fd)
    return _artifact_bytes(dir_fd, sha256), stale


def _artifact_bytes(dir_fd: int, sha256: str) -> int:
    """The size of the artefacts of this version of the audio (regular files only)."""
    try:
        fd = os.open(f"{ARTIFACTS}/{sha256}", _DIR_FLAGS, dir_fd=dir_fd)
    except OSError:
        return 0
    try:
        with os.scandir(fd) as entries:
            return sum(
                e.stat(follow_symlinks=False).st_size for e in entries if e.is_file(follow_symlinks=False)
            )
    finally:
        os.close(fd)
