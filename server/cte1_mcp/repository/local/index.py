"""The in-memory index of the local store, and the journal that keeps it true across processes.

Walking the whole store costs a few file reads per recording; doing it at every commit made
cold downloads slow linearly with the store (518 ms at 4,000 recordings). The index is built by
one walk at start-up and at each periodic sweep; in between, every process sharing the cache
directory appends the key of each recording (and, as ``pushed <key>``, of each pushed transcript)
it stores or removes to ``journal``, and reads the lines the others appended before it lists or
evicts: keeping in step costs O(changes).
A reader that finds a file different from what its index says re-reads it from disk anyway.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

from cte1_mcp.models import CallKey, Recording
from cte1_mcp.repository.local.posix import FILE_MODE, open_regular, write_all
from cte1_mcp.repository.local.retention import Entry, eviction_order

logger = logging.getLogger(__name__)

#: Past this size the journal is started afresh at the next sweep (which walks the store anyway).
JOURNAL_MAX_BYTES = 1 << 20
#: Marks a pushed transcript's line; older versions read such a line as no key and skip it.
_PUSHED = "pushed "


class Changes(NamedTuple):
    """Keys whose recording, and keys whose pushed transcript, changed."""

    recordings: set[CallKey]
    pushed: set[CallKey]


@dataclass(frozen=True, slots=True)
class FileId:
    """Which version of a file: a replaced file has another inode or mtime, a truncated one a size."""

    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, info: os.stat_result) -> FileId:
        return cls(info.st_ino, info.st_size, info.st_mtime_ns)

    @classmethod
    def of_meta(cls, info: os.stat_result) -> FileId:
        return cls(info.st_ino, info.st_size, 0)


@dataclass(slots=True)
class Indexed:
    """One stored recording as the index knows it."""

    recording: Recording
    audio_id: FileId
    meta_id: FileId  # its mtime is the last use, so only its inode and size tell a new version
    artifact_bytes: int
    last_used: float
    #: Artefacts of another version of the audio were seen beside it (a sweep deletes them).
    stale_artifacts: bool = False
    key: CallKey = field(init=False)
    available_until: datetime | None = field(init=False)

    def __post_init__(self) -> None:
        self.key = self.recording.key
        self.available_until = _available_until(self.recording)

    @property
    def size_bytes(self) -> int:
        return self.recording.audio.size_bytes + self.artifact_bytes

    def entry(self) -> Entry:
        return Entry(
            key=self.key,
            size_bytes=self.size_bytes,
            fetched_at=self.recording.fetched_at,
            last_used=self.last_used,
            available_until=self.available_until,
        )


def _available_until(recording: Recording) -> datetime | None:
    try:
        return recording.metadata.available_until
    except OverflowError:  # a start near year 9999: the platform's 31 days never end
        return None


class Index:
    """Key → Indexed, with the running total and an eviction queue rebuilt only when used up.

    Not thread-safe by itself: the store mutates it under its lock; lookups are plain dict reads.
    """

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._entries: dict[CallKey, Indexed] = {}
        self._oversized: set[CallKey] = set()
        self._queue: list[Entry] = []  # eviction order, reversed: pop() gives the next one
        self.total_bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CallKey) -> Indexed | None:
        return self._entries.get(key)

    def values(self) -> list[Indexed]:
        return list(self._entries.values())

    def put(self, indexed: Indexed) -> None:
        key = indexed.key
        self.drop(key)
        self._entries[key] = indexed
        self.total_bytes += indexed.size_bytes
        if indexed.size_bytes > self._max_bytes:
            self._oversized.add(key)

    def drop(self, key: CallKey) -> Indexed | None:
        old = self._entries.pop(key, None)
        if old is not None:
            self.total_bytes -= old.size_bytes
            self._oversized.discard(key)
        return old

    def grow(self, key: CallKey, artifact_bytes: int) -> None:
        """An artefact of ``key`` was written (or replaced): ``artifact_bytes`` more (or fewer)."""
        indexed = self._entries.get(key)
        if indexed is not None:
            self.drop(key)
            indexed.artifact_bytes = max(0, indexed.artifact_bytes + artifact_bytes)
            self.put(indexed)

    def replace_all(self, entries: Iterable[Indexed]) -> None:
        self._entries.clear()
        self._oversized.clear()
        self._queue = []
        self.total_bytes = 0
        for indexed in entries:
            self.put(indexed)

    def eviction_candidates(self) -> Iterator[Entry]:
        """Entries in eviction order, each at most once; amortised O(log n) per entry taken.

        The queue is a snapshot: an entry used since (its ``last_used`` moved) is skipped, and
        is back in its place when the queue, used up, is rebuilt.
        """
        seen: set[CallKey] = set()
        for key in list(self._oversized):
            indexed = self._entries.get(key)
            if indexed is not None:
                seen.add(key)
                yield indexed.entry()
        for rebuild in (False, True):
            if rebuild:
                self._queue = eviction_order((i.entry() for i in self._entries.values()), self._max_bytes)
                self._queue.reverse()
            while self._queue:
                candidate = self._queue.pop()
                current = self._entries.get(candidate.key)
                if candidate.key in seen or current is None or current.entry() != candidate:
                    continue
                seen.add(candidate.key)
                yield candidate


class Journal:
    """An append-only file of changed keys, one ``tenant/session/record`` line per change.

    Appends under 4 KiB to a local file are atomic, so processes need no lock to write it. Each
    reader remembers how far it has read; a journal started afresh (another inode) or cut short
    tells the reader to walk the store instead.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._inode: int | None = None
        self._offset = 0
        self._rest = b""

    def start(self) -> None:
        """From now on, report changes appended after this point (call it before a full walk).

        A journal that cannot be opened is logged, and every later look walks the store instead:
        slower, never wrong.
        """
        try:
            fd = self._open()
        except OSError as exc:
            logger.warning(
                "the store journal %s cannot be used (%s); walking the store instead", self._path, exc
            )
            self._inode = None
            return
        try:
            info = os.fstat(fd)
        finally:
            os.close(fd)
        self._inode, self._offset, self._rest = info.st_ino, info.st_size, b""

    def append(self, key: CallKey, *, skip_own: bool = True, pushed: bool = False) -> None:
        """Tell every process ``key`` (its pushed transcript, if ``pushed``) changed;
        ``skip_own=False`` while a walk is under way, so this process re-reads its own line after
        the walk (the walk may have passed it by)."""
        line = f"{_PUSHED if pushed else ''}{key}\n".encode()
        fd = self._open()
        try:
            write_all(fd, line)
            end = os.lseek(fd, 0, os.SEEK_CUR)
            inode = os.fstat(fd).st_ino
        finally:
            os.close(fd)
        if skip_own and inode == self._inode and self._offset == end - len(line) and not self._rest:
            self._offset = end  # nobody wrote in between: our own line needs no re-reading

    def changes(self) -> Changes | None:
        """Keys changed by anyone since the last call; None when only a full walk can tell."""
        if self._inode is None:
            return None
        try:
            fd = open_regular(self._path)
        except OSError:
            return None
        try:
            info = os.fstat(fd)
            if info.st_ino != self._inode or info.st_size < self._offset:
                return None
            if info.st_size == self._offset:
                return Changes(set(), set())
            os.lseek(fd, self._offset, os.SEEK_SET)
            raw = _read_to_end(fd)
        finally:
            os.close(fd)
        self._offset += len(raw)
        *lines, self._rest = (self._rest + raw).split(b"\n")  # a line being appended waits
        changes = Changes(set(), set())
        for line in lines:
            pushed = line.startswith(_PUSHED.encode())
            key = _parse(line.removeprefix(_PUSHED.encode()) if pushed else line)
            if key is not None:
                (changes.pushed if pushed else changes.recordings).add(key)
        return changes

    def restart_if_large(self) -> None:
        """Start an empty journal when this one has grown large; every reader then walks once."""
        try:
            size = os.lstat(self._path).st_size
        except FileNotFoundError:
            size = JOURNAL_MAX_BYTES + 1
        if size <= JOURNAL_MAX_BYTES:
            return
        fresh = self._path.with_name(self._path.name + ".new")
        fd = open_regular(fresh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            os.fchmod(fd, FILE_MODE)
        finally:
            os.close(fd)
        fresh.replace(self._path)
        logger.info("started a fresh store journal")

    def _open(self) -> int:
        fd = open_regular(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            if stat.S_IMODE(os.fstat(fd).st_mode) != FILE_MODE:
                os.fchmod(fd, FILE_MODE)
        except OSError:
            os.close(fd)
            raise
        return fd


def _read_to_end(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(line: bytes) -> CallKey | None:
    try:
        tenant, session, record = line.decode("ascii").split("/")
        key = CallKey(tenant, int(session), int(record))
    except ValueError:
        return None
    return key if key.path_parts == (tenant, session, record) else None
