"""Recordings on disk: private to this user, written atomically, kept no longer than allowed.

Recordings are personal data. Layout under the root (directories 0700, files 0600, every path
built only from ``CallKey.path_parts``)::

    recordings/<tenant>/<session>/<record>/audio.wav  the audio bytes exactly as received
                                                      (audio.mp3, or audio.bin when unknown)
    recordings/<tenant>/<session>/<record>/meta.json  platform metadata, AudioInfo, fetched_at
    tmp/<random>.part                                 writes in progress, flock-ed by their writer
    expired/<tenant>/<session>/<record>.json          tombstone: available_until, nothing personal

A ``meta.json`` only ever exists beside its complete audio: a commit renames the audio into place
first and the ``meta.json`` last; a removal deletes the ``meta.json`` first; ``get`` also checks
the size. The last use (for LRU eviction) is the ``meta.json``'s mtime, set by every ``get``: one
syscall, and it survives restarts. The store is POSIX-only (modes, owners, ``flock``).

Directories the store creates are made 0700. One that already exists (the root, or one of its
three subdirectories) is used only if it is a real directory of this user closed to everyone
else; it is never chmod-ed, since it may be ``$HOME`` or ``/tmp``. Several servers may share one
root: walks skip what another process removed meanwhile.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup
from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from cte1_mcp.audio.sniff import sniff_format
from cte1_mcp.errors import ConfigurationError, RecordingExpired, StorageError
from cte1_mcp.models import PLATFORM_RETENTION, AudioInfo, CallKey, CallMetadata, Recording

logger = logging.getLogger(__name__)

#: The first bytes of a download, kept in memory for format sniffing.
HEAD_BYTES = 64 * 1024
#: Chunks are gathered to this size before one worker-thread hop writes and hashes them.
BATCH_BYTES = 1024 * 1024
#: A tombstone outlives the recording it stands for by this long; after that, "expired" is old news.
TOMBSTONE_TTL = PLATFORM_RETENTION
#: Audio without a meta.json younger than this may be another process's commit in progress.
ORPHAN_GRACE_SECONDS = 60.0

_DIR_MODE = 0o700
_FILE_MODE = 0o600
#: A rename into a directory that a concurrent sweep keeps pruning is given up after this many tries.
_RENAME_ATTEMPTS = 5
#: The audio file's name carries its container's extension, so players and tools opening
#: ``Recording.path`` know what it is; the other names are removed when a commit replaces it.
_AUDIO_NAMES = {"wav": "audio.wav", "mp3": "audio.mp3", "unknown": "audio.bin"}
_META = "meta.json"
_PART = ".part"
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

Expiry = Literal["max_age", "platform"]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _StoredMeta(BaseModel):
    """The meta.json document; ``metadata`` is the platform's JSON verbatim (extra fields included)."""

    model_config = ConfigDict(frozen=True)

    version: Literal[1] = 1
    tenant_id: str
    session_id: int
    record_id: int
    metadata: dict[str, Any]
    audio: AudioInfo
    fetched_at: AwareDatetime


class _Tombstone(BaseModel):
    model_config = ConfigDict(frozen=True)

    available_until: AwareDatetime


@dataclass(frozen=True, slots=True)
class _Entry:
    recording: Recording
    last_used: float  # POSIX timestamp of the last get (or the commit)


class RecordingStore:
    """The local copy of recordings, bounded by age, by the platform's 31 days, and by total size.

    Thread-safe: mutations (commit, removal, sweep) hold one lock; reads take none and rely on the
    atomic renames. ``get`` and ``expired_until`` are cheap enough for the event
    loop; ``list`` and ``sweep`` walk the whole store and belong in a worker thread.
    """

    def __init__(
        self,
        root: Path,
        *,
        max_age: timedelta,
        max_bytes: int,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        if max_age <= timedelta(0):
            raise ValueError("max_age must be positive")
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        self.max_age = max_age
        self.max_bytes = max_bytes
        self._clock = clock
        self.root = _private_dir(Path(root).expanduser().absolute())
        self._recordings = _private_dir(self.root / "recordings")
        self._tmp = _private_dir(self.root / "tmp")
        self._expired = _private_dir(self.root / "expired")
        self._lock = threading.RLock()
        self._clean_tmp()

    # --- reading ---------------------------------------------------------------------------

    def get(self, key: CallKey) -> Recording | None:
        """The committed, unexpired recording of ``key`` (and it counts as used now), or None."""
        entry = self._entry(key)
        if entry is None:
            return None
        now = self._clock()
        if self._expiry(entry.recording, now) is not None:
            self._remove_if_idle(entry.recording, now)
            return None
        stamp = now.timestamp()
        with contextlib.suppress(OSError):
            os.utime(self._record_dir(key) / _META, (stamp, stamp))
        return entry.recording

    def list(self) -> list[Recording]:
        """Every live recording, oldest fetch first (sweeping first, so nothing expired is listed)."""
        with self._lock:
            live = self._sweep(protect=None)
        return sorted((entry.recording for entry in live), key=lambda rec: rec.fetched_at)

    def expired_until(self, key: CallKey) -> datetime | None:
        """When the platform stopped keeping this call's audio, if it has; known without a request."""
        now = self._clock()
        tombstone = self._read_tombstone(key)
        if tombstone is not None:
            if now < tombstone + TOMBSTONE_TTL:
                return tombstone
            with contextlib.suppress(OSError):
                self._tombstone_path(key).unlink()
        entry = self._entry(key)
        if entry is not None and self._expiry(entry.recording, now) == "platform":
            self._remove_if_idle(entry.recording, now)
            return entry.recording.metadata.available_until
        return None

    # --- writing ---------------------------------------------------------------------------

    def staging(self, key: CallKey) -> Staging:
        """A private temporary file for one download of ``key``; use it as an async context manager."""
        return Staging(self, key)

    def sweep(self) -> None:
        """Enforce retention now: max_age, the platform's 31 days, then total size (LRU)."""
        with self._lock:
            self._sweep(protect=None)

    async def sweep_every(self, seconds: float) -> None:
        """Sweep in a worker thread every ``seconds``, until cancelled: expired personal data is
        deleted on time even when no request comes to notice it."""
        while True:
            await anyio.sleep(seconds)
            try:
                await anyio.to_thread.run_sync(self.sweep)
            except OSError:
                logger.warning("sweeping the recording store failed; trying again later", exc_info=True)

    def _commit(self, key: CallKey, part: Path, metadata: CallMetadata, audio: AudioInfo) -> Recording:
        """Move a complete, fsync-ed download into place (worker thread); see the module docstring."""
        now = self._clock()
        with self._lock:
            self._refuse_expired(key, metadata, now)
        document = _StoredMeta(
            tenant_id=key.tenant_id,
            session_id=key.session_id,
            record_id=key.record_id,
            metadata=metadata.platform_json(),
            audio=audio,
            fetched_at=now,
        )
        directory = self._record_dir(key)
        meta_fd, meta_part = self._create_temp()
        try:
            _write_all(meta_fd, document.model_dump_json().encode())
            os.fsync(meta_fd)
            os.utime(meta_fd, (now.timestamp(), now.timestamp()))
            with self._lock:
                _unlink_quietly(directory / _META)  # from here until the end, readers see "absent"
                audio_file = directory / _AUDIO_NAMES[audio.format.container]
                for other in _AUDIO_NAMES.values():
                    if other != audio_file.name:
                        _unlink_quietly(directory / other)
                _replace_into(part, audio_file, top=self._recordings)
                try:
                    meta_part.replace(directory / _META)
                except OSError:
                    _unlink_quietly(audio_file)
                    raise
                _fsync_dir(directory)
                try:
                    self._sweep(protect=key)
                except OSError:  # the recording is stored: the next sweep does the rest
                    logger.warning("sweeping the recording store after storing %s failed", key, exc_info=True)
        finally:
            os.close(meta_fd)
            _unlink_quietly(meta_part)
        return _recording(document, directory)

    def _refuse_expired(self, key: CallKey, metadata: CallMetadata, now: datetime) -> None:
        """A call past the platform's 31 days is not stored at all: remembered, then refused."""
        until = metadata.available_until
        if until is None or now < until:
            return
        self._remove(key)
        self._write_tombstone(key, until)
        raise RecordingExpired(
            f"Call {key} connected more than 31 days ago; the platform kept its audio only until "
            f"{until.isoformat(timespec='seconds')}, so this server does not keep it either."
        )

    # --- retention -------------------------------------------------------------------------

    def _expiry(self, recording: Recording, now: datetime) -> Expiry | None:
        until = recording.metadata.available_until
        if until is not None and now >= until:
            return "platform"
        if now >= recording.fetched_at + self.max_age:
            return "max_age"
        return None

    def _sweep(self, protect: CallKey | None) -> builtins.list[_Entry]:
        """Remove what must go (lock held); returns what stays. ``protect`` is a fresh commit."""
        now = self._clock()
        self._clean_tmp()
        self._clean_tombstones(now)
        live: builtins.list[_Entry] = []
        for key in self._stored_keys():
            entry = self._entry(key)
            if entry is None:
                self._remove_orphan(key)
            elif self._expiry(entry.recording, now) is not None:
                self._expire(entry.recording, now)
            else:
                live.append(entry)
        return self._evict_to_fit(live, protect)

    def _evict_to_fit(self, live: builtins.list[_Entry], protect: CallKey | None) -> builtins.list[_Entry]:
        """Least recently used first; a recording that alone exceeds the bound goes before all others.

        A fresh commit (``protect``) is kept even if it alone exceeds ``max_bytes``: its caller is
        about to read it. It is then first to go at the next sweep or commit.
        """
        total = sum(entry.recording.audio.size_bytes for entry in live)
        kept = list(live)
        for entry in sorted(
            live, key=lambda e: (e.recording.audio.size_bytes <= self.max_bytes, e.last_used)
        ):
            if total <= self.max_bytes:
                break
            if entry.recording.key == protect:
                continue
            self._remove(entry.recording.key)
            total -= entry.recording.audio.size_bytes
            kept.remove(entry)
            logger.info("evicted %s to keep the store under %d bytes", entry.recording.key, self.max_bytes)
        return kept

    def _expire(self, recording: Recording, now: datetime) -> None:
        """Remove an expired recording; past the platform's limit, leave a tombstone behind."""
        reason = self._expiry(recording, now)
        self._remove(recording.key)
        until = recording.metadata.available_until
        if reason == "platform" and until is not None:
            self._write_tombstone(recording.key, until)
        logger.info("removed %s (%s retention)", recording.key, reason)

    def _remove_if_idle(self, recording: Recording, now: datetime) -> None:
        """Expire from the event loop without waiting for the lock: if it is busy, a sweep is on it."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            current = self._entry(recording.key)
            if current is not None and current.recording.audio.sha256 == recording.audio.sha256:
                self._expire(recording, now)
        finally:
            self._lock.release()

    def _remove(self, key: CallKey) -> None:
        directory = self._record_dir(key)
        _unlink_quietly(directory / _META)
        for name in _AUDIO_NAMES.values():
            _unlink_quietly(directory / name)
        self._prune(directory, self._recordings)

    def _remove_orphan(self, key: CallKey) -> None:
        """A record directory without a valid meta.json: a crash's leftover, or a commit in progress."""
        for name in _AUDIO_NAMES.values():
            with contextlib.suppress(FileNotFoundError):
                if time.time() - (self._record_dir(key) / name).stat().st_mtime < ORPHAN_GRACE_SECONDS:
                    return
        logger.info("removing the incomplete recording %s", key)
        self._remove(key)

    def _prune(self, directory: Path, top: Path) -> None:
        """Remove now-empty directories from ``directory`` up to (not including) ``top``."""
        while directory != top:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    # --- tombstones ------------------------------------------------------------------------

    def _tombstone_path(self, key: CallKey) -> Path:
        tenant, session, record = key.path_parts
        return self._expired / tenant / session / f"{record}.json"

    def _write_tombstone(self, key: CallKey, until: datetime) -> None:
        path = self._tombstone_path(key)
        self._write_atomically(
            path, _Tombstone(available_until=until).model_dump_json().encode(), self._expired
        )

    def _read_tombstone(self, key: CallKey) -> datetime | None:
        try:
            return _Tombstone.model_validate_json(self._tombstone_path(key).read_bytes()).available_until
        except (OSError, ValidationError):
            return None

    def _clean_tombstones(self, now: datetime) -> None:
        for key in _keys_under(self._expired, suffix=".json"):
            until = self._read_tombstone(key)
            if until is None or now >= until + TOMBSTONE_TTL:
                path = self._tombstone_path(key)
                _unlink_quietly(path)
                self._prune(path.parent, self._expired)

    # --- files -----------------------------------------------------------------------------

    def _record_dir(self, key: CallKey) -> Path:
        return self._recordings.joinpath(*key.path_parts)

    def _stored_keys(self) -> Iterator[CallKey]:
        return _keys_under(self._recordings, suffix="")

    def _entry(self, key: CallKey) -> _Entry | None:
        """The recording if its meta.json is valid, belongs to ``key`` and its audio is complete."""
        directory = self._record_dir(key)
        try:
            raw = (directory / _META).read_bytes()
            last_used = (directory / _META).stat().st_mtime
            document = _StoredMeta.model_validate_json(raw)
            recording = _recording(document, directory)
            audio_size = recording.path.stat().st_size
        except (OSError, ValidationError, ValueError):
            return None
        if recording.key != key or audio_size != recording.audio.size_bytes:
            return None
        return _Entry(recording, last_used)

    def _create_temp(self) -> tuple[int, Path]:
        """A new 0600 file in tmp/, flock-ed so no store (in any process) cleans it while in use."""
        while True:
            path = self._tmp / f"{secrets.token_hex(16)}{_PART}"
            fd = os.open(path, _NEW_FILE_FLAGS, _FILE_MODE)
            try:
                os.fchmod(fd, _FILE_MODE)  # the umask may have taken bits away
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if path.stat().st_ino == os.fstat(fd).st_ino:
                    return fd, path
            except (BlockingIOError, FileNotFoundError):
                pass  # a cleaner took it between open and flock: try another name
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)

    def _write_atomically(self, target: Path, data: bytes, top: Path) -> None:
        """Write ``target`` (below ``top``, making its directories) whole or not at all."""
        fd, part = self._create_temp()
        try:
            _write_all(fd, data)
            os.fsync(fd)
            _replace_into(part, target, top=top)
        finally:
            os.close(fd)
            _unlink_quietly(part)
        _fsync_dir(target.parent)

    def _clean_tmp(self) -> None:
        """Remove temporary files nobody holds: left by a crash, or by a download that was dropped."""
        for path in self._tmp.iterdir():
            if path.name.endswith(_PART) and _unlink_if_unlocked(path):
                logger.info("removed the leftover temporary file %s", path.name)


class Staging:
    """One download on its way into the store: a sink for the upstream client, then ``commit``.

    Bytes are gathered into batches of ``BATCH_BYTES`` and written and hashed in a worker thread.
    Inside ``async with``, one batch is written while the next one is received (at most one in
    flight, so memory stays at two batches): the network and the disk work at the same time.
    As an async context manager it also discards the temporary file unless ``commit`` succeeded:
    an interrupted download leaves nothing behind. A staging belongs to the one task that uses it.
    """

    def __init__(self, store: RecordingStore, key: CallKey) -> None:
        self.key = key
        self._store = store
        self._fd: int | None = None
        self._part: Path | None = None
        self._sha256 = hashlib.sha256()
        self._size = 0
        self._written = 0  # bytes hashed and written to the file: all of ``_size`` before a commit
        self._head = bytearray()
        self._batch: list[bytes] = []  # chunks as received: no copy on the event loop
        self._batch_bytes = 0
        self._closed = False
        self._writers = AsyncExitStack()
        self._tasks: TaskGroup | None = None
        self._in_flight: anyio.Event | None = None
        self._write_error: OSError | None = None

    @property
    def size(self) -> int:
        """Bytes received so far."""
        return self._size

    async def __aenter__(self) -> Self:
        self._tasks = await self._writers.enter_async_context(anyio.create_task_group())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            await self._writers.aclose()  # the write in flight, if any, ends before the file goes
        finally:
            self._tasks = None
            await self.discard()

    async def write(self, chunk: bytes) -> None:
        """Take the next chunk of audio (the upstream client's sink protocol)."""
        self._check_open()
        if len(self._head) < HEAD_BYTES:
            self._head += chunk[: HEAD_BYTES - len(self._head)]
        self._batch.append(chunk)
        self._batch_bytes += len(chunk)
        self._size += len(chunk)
        if self._batch_bytes >= BATCH_BYTES:
            await self._flush(wait=False)

    async def commit(self, metadata: CallMetadata, content_type: str | None) -> Recording:
        """Make the download a stored recording, atomically; RecordingExpired past the 31 days."""
        self._check_open()
        if self._batch or self._fd is None:
            await self._flush()
        else:
            await self._drain()  # the last batch may still be in flight
        if self._written != self._size:  # a batch was dropped: its write was cancelled before it ran
            raise StorageError(
                "The recording could not be saved locally (a write was cancelled); nothing was stored."
            )
        audio = AudioInfo(
            format=sniff_format(bytes(self._head), content_type, self._size),
            size_bytes=self._size,
            sha256=self._sha256.hexdigest(),
        )
        try:
            recording = await anyio.to_thread.run_sync(self._commit_blocking, metadata, audio)
        except OSError as exc:
            raise _not_saved(exc) from exc
        self._closed = True
        return recording

    async def discard(self) -> None:
        """Drop the download (nothing of it remains); a no-op after ``commit``.

        Waits only for a batch write in flight (even when cancelled: one batch, not the network),
        so its file descriptor is never closed, and its number reused, under the writing thread.
        """
        self._closed = True
        self._batch, self._batch_bytes = [], 0
        part, self._part = self._part, None
        if part is not None:
            _unlink_quietly(part)
        if self._in_flight is not None:
            with anyio.CancelScope(shield=True):
                await self._in_flight.wait()
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this staging was already committed or discarded")

    async def _flush(self, *, wait: bool = True) -> None:
        """Hand the buffer to the worker thread; ``wait=False`` returns once the previous batch is done."""
        await self._drain()
        data, self._batch, self._batch_bytes = self._batch, [], 0
        if self._fd is None:  # one open(2), here so the temporary file exists as soon as bytes do
            try:
                self._fd, self._part = self._store._create_temp()
            except OSError as exc:
                raise _not_saved(exc) from exc
        if self._tasks is None or wait:
            try:
                await anyio.to_thread.run_sync(self._write_blocking, data)
            except OSError as exc:
                raise _not_saved(exc) from exc
            return
        self._in_flight = done = anyio.Event()
        self._tasks.start_soon(self._write_in_background, data, done)

    async def _write_in_background(self, data: list[bytes], done: anyio.Event) -> None:
        try:
            await anyio.to_thread.run_sync(self._write_blocking, data)
        except OSError as exc:
            self._write_error = exc
        finally:
            done.set()

    async def _drain(self) -> None:
        """Wait for the batch in flight; its disk error, if any, surfaces here."""
        if self._in_flight is not None:
            await self._in_flight.wait()
            self._in_flight = None
        if self._write_error is not None:
            raise _not_saved(self._write_error) from self._write_error

    def _write_blocking(self, chunks: list[bytes]) -> None:
        assert self._fd is not None
        # One hash and one write per batch: each releases the GIL once, where hashing chunk by
        # chunk handed it back and forth with the event loop dozens of times per batch (profiled).
        data = b"".join(chunks)
        self._sha256.update(data)
        _write_all(self._fd, data)
        self._written += len(data)

    def _commit_blocking(self, metadata: CallMetadata, audio: AudioInfo) -> Recording:
        assert self._fd is not None and self._part is not None
        os.fsync(self._fd)
        recording = self._store._commit(self.key, self._part, metadata, audio)
        self._part = None  # it is the stored audio now, not ours to delete
        os.close(self._fd)
        self._fd = None
        return recording


# --- helpers -----------------------------------------------------------------------------------


def _recording(document: _StoredMeta, directory: Path) -> Recording:
    return Recording(
        tenant_id=document.tenant_id,
        session_id=document.session_id,
        record_id=document.record_id,
        metadata=CallMetadata.model_validate(document.metadata),
        audio=document.audio,
        path=directory / _AUDIO_NAMES[document.audio.format.container],
        fetched_at=document.fetched_at,
    )


def _private_dir(path: Path) -> Path:
    """``path`` as a private directory of this user: created 0700 (missing parents too), or accepted.

    An existing directory is never changed, only checked: it may be anything (``$HOME``, ``/tmp``)
    and its mode is not the store's to decide. One that is a symbolic link, belongs to another
    user or is open to other users is refused.
    """
    try:
        _make_private_dirs(path)
        info = os.lstat(path)
    except OSError as exc:
        raise ConfigurationError(
            f"The recording store {path} cannot be created ({exc.strerror or exc}).",
            next_step="Set CTE1_CACHE_DIR to a directory this user can create and write.",
        ) from None
    next_step = "Set CTE1_CACHE_DIR to a real directory owned by this user (or a new path)."
    problem = None
    if stat.S_ISLNK(info.st_mode):
        problem = "is a symbolic link"
    elif not stat.S_ISDIR(info.st_mode):
        problem = "is not a directory"
    elif info.st_uid != os.geteuid():
        problem = "belongs to another user"
    elif info.st_mode & 0o077:
        problem = f"is open to other users (mode {stat.S_IMODE(info.st_mode):04o})"
        next_step = (
            f"If it holds nothing but this server's store, run `chmod 700 {path}`; otherwise set "
            "CTE1_CACHE_DIR to a new path (the server creates it private)."
        )
    if problem is not None:
        raise ConfigurationError(
            f"The recording store {path} {problem}; recordings are personal data and are kept only "
            "in a private directory of the user running this server.",
            next_step=next_step,
        )
    return path


def _make_private_dirs(directory: Path, *, top: Path | None = None) -> None:
    """Create ``directory`` and its missing parents (below ``top``), each exactly 0700 whatever the umask.

    Existing directories are left as they are. A parent that another process's sweep prunes
    meanwhile (it removes empty directories) is made again.
    """
    try:
        directory.mkdir(_DIR_MODE)
    except FileExistsError:
        return
    except FileNotFoundError:
        if directory.parent in (top, directory):
            raise
        _make_private_dirs(directory.parent, top=top)
        _make_private_dirs(directory, top=top)
        return
    directory.chmod(_DIR_MODE)  # made by this call: the umask may have taken bits away


def _replace_into(source: Path, target: Path, *, top: Path) -> None:
    """Rename ``source`` to ``target``, first making ``target``'s directories below ``top``.

    Another process's sweep may prune a directory made here before the rename lands in it (to
    that sweep, an empty record directory is a crash's leftover): then it is made again.
    """
    for attempt in range(_RENAME_ATTEMPTS):
        _make_private_dirs(target.parent, top=top)
        try:
            source.replace(target)
        except FileNotFoundError:
            if attempt == _RENAME_ATTEMPTS - 1 or not source.exists():
                raise
        else:
            return


def _keys_under(top: Path, *, suffix: str) -> Iterator[CallKey]:
    """Keys stored as ``top/<tenant>/<session>/<record><suffix>``; anything else is not ours to read.

    Another process sharing the store may remove any of these directories during the walk: what
    has vanished is simply not there. Symbolic links are not followed.
    """
    for tenant in _names_in(top, directories=True):
        for session in _names_in(top / tenant, directories=True):
            if not _is_number(session):
                continue
            for name in _names_in(top / tenant / session, directories=False):
                record = name.removesuffix(suffix)
                if not (name.endswith(suffix) and _is_number(record)):
                    continue
                try:
                    key = CallKey(tenant, int(session), int(record))
                except ValueError:
                    continue
                if key.path_parts == (tenant, session, record):
                    yield key


def _names_in(directory: Path, *, directories: bool) -> builtins.list[str]:
    """The entries of ``directory`` (only real directories if asked); none if it has gone."""
    try:
        with os.scandir(directory) as entries:
            return [e.name for e in entries if not directories or e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _is_number(name: str) -> bool:
    return name.isascii() and name.isdigit()


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[_wrote(os.write(fd, view)) :]


def _wrote(count: int) -> int:
    """A write of something that wrote nothing would be retried forever: an error instead."""
    if count == 0:
        raise OSError(errno.EIO, "the write wrote nothing")
    return count


def _fsync_dir(directory: Path) -> None:
    """Make a rename durable: fsync the directory that holds the new name."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _unlink_if_unlocked(path: Path) -> bool:
    """Delete a temporary file unless its writer (in this or another process) still holds it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    try:
        _unlink_quietly(path)
    finally:
        os.close(fd)
    return True


def _not_saved(exc: OSError) -> StorageError:
    return StorageError(
        f"The recording could not be saved locally ({exc.strerror or exc}); nothing was stored."
    )
