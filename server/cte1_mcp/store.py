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
"""

from __future__ import annotations

import builtins
import contextlib
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

from cte1_mcp.audio import sniff_format
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
#: writev(2) takes at most this many buffers (IOV_MAX on Linux).
_IOV_MAX = 1024
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
        self.root = _private_root(Path(root).expanduser().absolute())
        self._recordings = _private_root(self.root / "recordings")
        self._tmp = _private_root(self.root / "tmp")
        self._expired = _private_root(self.root / "expired")
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
                self._make_record_dir(key)
                _unlink_quietly(directory / _META)  # from here until the end, readers see "absent"
                audio_file = directory / _AUDIO_NAMES[audio.format.container]
                for other in _AUDIO_NAMES.values():
                    if other != audio_file.name:
                        _unlink_quietly(directory / other)
                part.replace(audio_file)
                try:
                    meta_part.replace(directory / _META)
                except OSError:
                    _unlink_quietly(audio_file)
                    raise
                _fsync_dir(directory)
                self._sweep(protect=key)
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
        _make_private_dirs(self._expired, path.parent)
        self._write_atomically(path, _Tombstone(available_until=until).model_dump_json().encode())

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

    def _make_record_dir(self, key: CallKey) -> None:
        _make_private_dirs(self._recordings, self._record_dir(key))

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

    def _write_atomically(self, target: Path, data: bytes) -> None:
        fd, part = self._create_temp()
        try:
            _write_all(fd, data)
            os.fsync(fd)
            part.replace(target)
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
    an interrupted download leaves nothing behind.
    """

    def __init__(self, store: RecordingStore, key: CallKey) -> None:
        self.key = key
        self._store = store
        self._fd: int | None = None
        self._part: Path | None = None
        self._sha256 = hashlib.sha256()
        self._size = 0
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
        """Drop the download (nothing of it remains); a no-op after ``commit``. Never waits."""
        self._closed = True
        self._batch, self._batch_bytes = [], 0
        fd, part = self._fd, self._part
        self._fd = self._part = None
        if part is not None:
            _unlink_quietly(part)
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
        for chunk in chunks:
            self._sha256.update(chunk)  # releases the GIL for chunks this size
        _write_all_vectored(self._fd, chunks)

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


def _private_root(path: Path) -> Path:
    """Create ``path`` 0700, or accept an existing one only if it is a real directory of ours."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            path.mkdir(_DIR_MODE)
        info = os.lstat(path)
    except OSError as exc:
        raise ConfigurationError(
            f"The recording store {path} cannot be created ({exc.strerror}).",
            next_step="Set CTE1_CACHE_DIR to a directory this user can create and write.",
        ) from None
    problem = None
    if stat.S_ISLNK(info.st_mode):
        problem = "is a symbolic link"
    elif not stat.S_ISDIR(info.st_mode):
        problem = "is not a directory"
    elif info.st_uid != os.getuid():
        problem = "belongs to another user"
    if problem is not None:
        raise ConfigurationError(
            f"The recording store {path} {problem}; recordings are personal data and are kept only "
            "in a private directory of the user running this server.",
            next_step="Set CTE1_CACHE_DIR to a real directory owned by this user (or a new path).",
        )
    if stat.S_IMODE(info.st_mode) != _DIR_MODE:
        path.chmod(_DIR_MODE)
    return path


def _make_private_dirs(top: Path, directory: Path) -> None:
    """Create the directories from ``top`` (exclusive) down to ``directory``, each 0700."""
    for level in reversed([directory, *directory.parents]):
        if level == top or not level.is_relative_to(top):
            continue
        try:
            level.mkdir(_DIR_MODE)
        except FileExistsError:
            continue
        level.chmod(_DIR_MODE)  # the umask may have taken bits away


def _keys_under(top: Path, *, suffix: str) -> Iterator[CallKey]:
    """Keys stored as ``top/<tenant>/<session>/<record><suffix>``; anything else is not ours to read."""
    for path in top.glob(f"*/*/*{suffix}"):
        tenant, session, record = path.parent.parent.name, path.parent.name, path.name.removesuffix(suffix)
        if not (session.isascii() and session.isdigit() and record.isascii() and record.isdigit()):
            continue
        try:
            key = CallKey(tenant, int(session), int(record))
        except ValueError:
            continue
        if key.path_parts == (tenant, session, record):
            yield key


def _write_all(fd: int, data: bytes | bytearray) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_all_vectored(fd: int, chunks: list[bytes]) -> None:
    """One writev(2) per batch (no joining copy), resumed where a short write stopped."""
    views = [memoryview(chunk) for chunk in chunks if chunk]
    while views:
        written = os.writev(fd, views[:_IOV_MAX])
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if written:
            views[0] = views[0][written:]


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
