"""Transcripts CT-e1 pushed, one file per recording: ``pushed/<tenant>/<session>/<record>.json``.

Kept apart from ``recordings/``: a push may come before the recording is fetched (or without it
ever being fetched), and a record directory without its audio is a crash's leftover to the sweep.
The same rules bound them as recordings: the platform's 31 days (from the call's ``connectTime``),
this server's maximum age (from the push), and the store's size, to which their bytes count. They
are not evicted to make room for recordings: they are a few KiB, and unlike a recording they
cannot be fetched again (the platform pushes once; its pull API is not public). Only when pushed
transcripts alone exceed the whole bound do the oldest go.

Every write is atomic (a private temporary file renamed into place), every file 0600 in 0700
directories, never read or written through a link.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from cte1_mcp.errors import ConfigurationError, StorageError
from cte1_mcp.models import CallKey
from cte1_mcp.repository.local.layout import Layout, keys_under
from cte1_mcp.repository.local.posix import (
    LinkInStore,
    NotAFile,
    create_locked_temp,
    fsync_dir,
    open_dir,
    private_dir,
    prune,
    read_file,
    unlink_quietly,
    write_all,
)

logger = logging.getLogger(__name__)

#: A stored push is at most the push body (CTE1_PUSH_MAX_BYTES ≤ 256 MiB) re-serialised.
_READ_LIMIT = 1 << 30


class _Stored(BaseModel):
    """The file: when it came, until when the platform keeps the call, and the caller's document."""

    model_config = ConfigDict(frozen=True)

    version: Literal[1] = 1
    received_at: AwareDatetime
    available_until: AwareDatetime | None
    document: str


@dataclass(frozen=True, slots=True)
class _Seen:
    key: CallKey
    size_bytes: int
    received_at: datetime


class PushedTranscripts:
    """The files; the store calls them under its lock for writes and sweeps (reads take none).

    ``on_change`` is told of every file written or removed (the store journals it, so the other
    processes sharing the store count it at their next size check: ``recount``).
    """

    def __init__(self, layout: Layout, on_change: Callable[[CallKey], None] | None = None) -> None:
        self._layout = layout
        self._on_change = on_change
        #: Bytes of pushed transcripts on disk, as this process last knew (a sweep recounts them).
        self.total_bytes = 0
        self._sizes: dict[CallKey, int] = {}

    def write(
        self, key: CallKey, document: bytes, *, received_at: datetime, available_until: datetime | None
    ) -> None:
        """Store ``document`` as ``key``'s pushed transcript, replacing an earlier push (blocking)."""
        (tenant, session), name = self._parts(key)
        data = (
            _Stored(received_at=received_at, available_until=available_until, document=document.decode())
            .model_dump_json()
            .encode()
        )
        try:
            private_dir(self._layout.pushed)
        except ConfigurationError as exc:
            raise StorageError(exc.message, next_step=exc.next_step) from None
        fd, part = create_locked_temp(self._layout.tmp)
        try:
            write_all(fd, data)
            os.fsync(fd)
            dir_fd = open_dir(self._layout.pushed, (tenant, session), create=True)
            assert dir_fd is not None
            try:
                os.replace(part, name, dst_dir_fd=dir_fd)
                with contextlib.suppress(OSError):
                    fsync_dir(dir_fd)
            finally:
                os.close(dir_fd)
        finally:
            os.close(fd)
            unlink_quietly(part)
        self._count(key, len(data))
        self._changed(key)

    def read(self, key: CallKey, now: datetime, max_age: timedelta) -> bytes | None:
        """The document, or None if none was pushed or it is past its retention (then removed)."""
        stored = self._load(key)
        if stored is None:
            return None
        if _expired(stored, now, max_age):
            try:
                self.remove(key)
            except OSError as exc:  # never served all the same; the sweep tries again
                logger.warning("the expired pushed transcript of %s could not be removed: %s", key, exc)
            return None
        return stored.document.encode()

    def remove(self, key: CallKey) -> None:
        (tenant, session), name = self._parts(key)
        with contextlib.suppress(LinkInStore):
            dir_fd = open_dir(self._layout.pushed, (tenant, session), create=False)
            if dir_fd is not None:
                try:
                    unlink_quietly(name, dir_fd=dir_fd)
                finally:
                    os.close(dir_fd)
                prune(self._layout.pushed / tenant / session, self._layout.pushed)
        self._count(key, 0)
        self._changed(key)

    def recount(self, key: CallKey) -> None:
        """Count ``key``'s file as it is on disk now (another process wrote or removed it)."""
        (tenant, session), name = self._parts(key)
        size = 0
        with contextlib.suppress(OSError, StorageError):
            dir_fd = open_dir(self._layout.pushed, (tenant, session), create=False)
            if dir_fd is not None:
                try:
                    info = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                    size = info.st_size if stat.S_ISREG(info.st_mode) else 0
                finally:
                    os.close(dir_fd)
        self._count(key, size)

    def recount_all(self) -> None:
        """Count every file on disk afresh (when the journal cannot tell what changed)."""
        self._sizes.clear()
        self.total_bytes = 0
        for key in keys_under(self._layout.pushed, suffix=".json"):
            self.recount(key)

    def sweep(self, now: datetime, max_age: timedelta, max_bytes: int) -> None:
        """Remove what retention no longer allows, then the oldest while they alone exceed
        ``max_bytes``; recount the total (pushes of other processes included). A file that cannot
        be read or removed is logged and skipped: it must not keep the others past their time."""
        self._sizes.clear()
        self.total_bytes = 0
        live: list[_Seen] = []
        for key in keys_under(self._layout.pushed, suffix=".json"):
            try:
                stored, size = self._load_sized(key)
                if stored is None or _expired(stored, now, max_age):
                    self.remove(key)
                    if stored is not None:
                        logger.info("removed the pushed transcript of %s (retention)", key)
                    continue
            except (OSError, StorageError) as exc:
                logger.warning("skipping the pushed transcript of %s in this sweep: %s", key, exc)
                continue
            live.append(_Seen(key, size, stored.received_at))
            self._count(key, size)
        for seen in sorted(live, key=lambda s: s.received_at):
            if self.total_bytes <= max_bytes:
                break
            try:
                self.remove(seen.key)
            except OSError as exc:
                logger.warning("the pushed transcript of %s could not be evicted: %s", seen.key, exc)
                continue
            logger.info(
                "evicted the pushed transcript of %s to keep the store under %d bytes", seen.key, max_bytes
            )

    def _changed(self, key: CallKey) -> None:
        if self._on_change is not None:
            self._on_change(key)

    def _count(self, key: CallKey, size: int) -> None:
        self.total_bytes += size - self._sizes.pop(key, 0)
        if size:
            self._sizes[key] = size

    def _load(self, key: CallKey) -> _Stored | None:
        return self._load_sized(key)[0]

    def _load_sized(self, key: CallKey) -> tuple[_Stored | None, int]:
        (tenant, session), name = self._parts(key)
        try:
            dir_fd = open_dir(self._layout.pushed, (tenant, session), create=False)
            if dir_fd is None:
                return None, 0
            try:
                raw = read_file(name, dir_fd=dir_fd, limit=_READ_LIMIT)
            finally:
                os.close(dir_fd)
        except (FileNotFoundError, LinkInStore):
            return None, 0
        except NotAFile:  # a FIFO, a directory…: not ours, and never waited on
            logger.warning("ignoring what is not a file in place of the pushed transcript of %s", key)
            return None, 0
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # a link where the file should be is not ours
                logger.warning("ignoring the symbolic link in place of the pushed transcript of %s", key)
                return None, 0
            raise StorageError(f"A pushed transcript could not be read ({exc.strerror}).") from exc
        try:
            return _Stored.model_validate_json(raw), len(raw)
        except ValidationError:
            logger.warning("ignoring the unreadable pushed transcript of %s", key)
            return None, len(raw)

    def _parts(self, key: CallKey) -> tuple[tuple[str, str], str]:
        tenant, session, record = key.path_parts
        return (tenant, session), f"{record}.json"


def _expired(stored: _Stored, now: datetime, max_age: timedelta) -> bool:
    if stored.available_until is not None and now >= stored.available_until:
        return True
    return now - max_age >= stored.received_at
