"""The local store: recordings on this machine's disk, private, atomic, within their retention.

It ties the parts together: ``layout`` (where), ``records`` (one record directory: load, commit
renames, removal), ``staging`` (downloads in progress), ``index`` (what is stored, and the
journal shared with other processes), ``retention`` (what must go), ``tombstones``, ``posix``.
The last use (for LRU eviction) is the ``meta.json``'s mtime, set by every use: one syscall,
seen by every process, and it survives restarts. POSIX-only (modes, ``flock``, ``openat``).

Lookups come from the in-memory index after two ``lstat`` calls that prove the audio and its
meta.json are still the ones indexed; a file another process removed or replaced is re-read
from disk, and a key the index lacks is looked for on disk, so several servers can share one root.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import json
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

import anyio
import anyio.to_thread

from cte1_mcp.errors import ConfigurationError, RecordingExpired, RecordingGone, StorageError
from cte1_mcp.models import AudioInfo, CallKey, CallMetadata, Recording
from cte1_mcp.repository.local import records
from cte1_mcp.repository.local.index import FileId, Index, Indexed, Journal
from cte1_mcp.repository.local.layout import (
    AUDIO_NAMES,
    META,
    Layout,
    check_artifact_name,
)
from cte1_mcp.repository.local.posix import (
    PART_SUFFIX,
    LinkInStore,
    NotAFile,
    create_locked_temp,
    fsync_dir,
    open_dir,
    open_regular,
    private_dir,
    read_fd,
    read_file,
    remove_if_unlocked,
    sha256_fd,
    unlink_quietly,
    write_all,
)
from cte1_mcp.repository.local.pushed import PushedTranscripts
from cte1_mcp.repository.local.records import StoredMeta
from cte1_mcp.repository.local.retention import Entry, Limits, Removal, evict_to_fit, expiry, plan
from cte1_mcp.repository.local.staging import LocalStaging
from cte1_mcp.repository.local.tombstones import TOMBSTONE_TTL, Tombstones
from cte1_mcp.settings import Settings

logger = logging.getLogger(__name__)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class LocalRepository:
    """The local ``RecordingRepository``, bounded by age, by the platform's 31 days, and by size.

    Thread-safe: mutations (commit, removal, sweep, artefact writes) hold one lock; lookups take
    none (they rely on atomic renames and try the lock only to tidy up). ``get``, ``expired_at``
    and ``local_path`` are cheap enough for the event loop; the rest runs in worker threads.
    """

    def __init__(
        self,
        root: Path,
        *,
        max_age: timedelta,
        max_bytes: int,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        """Check (or make) the private directories and clear crash leftovers; configuration
        problems raise ConfigurationError here. Indexing (a walk of the store) is left to the
        first sweep, so start-up does not grow with the store: until then, lookups read the disk
        and a listing or a commit runs that sweep first."""
        self.limits = Limits(max_age, max_bytes)
        self._clock = clock
        self.layout = Layout(private_dir(Path(root).expanduser().absolute()))
        for directory in (self.layout.recordings, self.layout.tmp, self.layout.expired):
            private_dir(directory)
        if os.path.lexists(self.layout.pushed):  # made at the first push: a store made read-only
            private_dir(self.layout.pushed)  # by an older version still starts
        self._lock = threading.RLock()
        #: Held for a whole sweep; taken before ``_lock``, never while holding it.
        self._sweeping = threading.Lock()
        self._index = Index(max_bytes)
        self._journal = Journal(self.layout.journal)
        self._tombstones = Tombstones(self.layout)
        self._pushed = PushedTranscripts(self.layout, on_change=self._pushed_changed)
        self._indexed = False
        self._walking = False
        self._clean_tmp()

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalRepository:
        return cls(
            settings.cache_dir,
            max_age=timedelta(hours=settings.retention_hours),
            max_bytes=settings.cache_max_bytes,
        )

    @property
    def root(self) -> Path:
        return self.layout.root

    # --- lookups (event loop) --------------------------------------------------------------

    def get(self, key: CallKey) -> Recording | None:
        indexed = self._current(key)
        if indexed is None:
            return None
        now = self._clock()
        if expiry(indexed.entry(), now, self.limits.max_age) is not None:
            self._remove_if_idle(indexed, now)
            return None
        self._touch(indexed, now)
        return indexed.recording

    def expired_at(self, key: CallKey) -> datetime | None:
        now = self._clock()
        tombstone = self._tombstones.read(key)
        if tombstone is not None:
            if now < tombstone + TOMBSTONE_TTL:
                return tombstone
            self._tombstones.forget(key)
        indexed = self._current(key)
        if indexed is not None:
            entry = indexed.entry()
            if expiry(entry, now, self.limits.max_age) == "platform":
                self._remove_if_idle(indexed, now)
                return entry.available_until
        return None

    def local_path(self, recording: Recording) -> Path | None:
        indexed = self._index.get(recording.key)
        if indexed is None or indexed.recording.audio.sha256 != recording.audio.sha256:
            return None
        return self.layout.audio_path(recording.key, recording.audio.format.container)

    # --- reading (worker threads) ----------------------------------------------------------

    async def read_audio(self, recording: Recording) -> bytes:
        return await anyio.to_thread.run_sync(self._read_audio, recording)

    def open_audio(self, recording: Recording) -> BinaryIO:
        return os.fdopen(self._open_audio(recording), "rb")

    async def list(self) -> builtins.list[Recording]:
        return await anyio.to_thread.run_sync(self.list_blocking)

    def list_blocking(self) -> builtins.list[Recording]:
        """Every live recording, oldest fetch first: the index, brought up to date by the journal."""
        self._ensure_indexed()
        with self._lock:
            self._sync()
            now = self._clock()
            live = [
                indexed.recording
                for indexed in self._index.values()
                if expiry(indexed.entry(), now, self.limits.max_age) is None
            ]
        return sorted(live, key=lambda recording: recording.fetched_at)

    def _read_audio(self, recording: Recording) -> bytes:
        fd = self._open_audio(recording)
        try:
            data = read_fd(fd, recording.audio.size_bytes + 1)
        except OSError as exc:
            raise StorageError(f"The stored recording could not be read ({exc.strerror}).") from exc
        finally:
            os.close(fd)
        if len(data) != recording.audio.size_bytes:
            raise _gone(recording.key)
        return data

    def _open_audio(self, recording: Recording) -> int:
        """A descriptor of exactly ``recording``'s audio file, or RecordingGone."""
        key = recording.key
        indexed = self._current(key)
        if indexed is None or indexed.recording.audio.sha256 != recording.audio.sha256:
            raise _gone(key)
        try:  # a link on the way raises LinkInStore: fetching it again could not store it either
            dir_fd = open_dir(self.layout.recordings, key.path_parts, create=False)
        except OSError as exc:
            raise StorageError(f"The stored recording could not be read ({exc.strerror}).") from exc
        if dir_fd is None:
            raise _gone(key)
        try:
            fd = open_regular(AUDIO_NAMES[recording.audio.format.container], dir_fd=dir_fd)
        except OSError as exc:
            if isinstance(exc, FileNotFoundError | NotAFile) or exc.errno == errno.ELOOP:  # not ours
                raise _gone(key) from None
            raise StorageError(f"The stored recording could not be read ({exc.strerror}).") from exc
        finally:
            os.close(dir_fd)
        if FileId.of(os.fstat(fd)) != indexed.audio_id:
            os.close(fd)
            raise _gone(key)
        self._touch(indexed, self._clock())
        return fd

    # --- writing ---------------------------------------------------------------------------

    def staging(self, key: CallKey) -> LocalStaging:
        """A private temporary file for one download of ``key``; use it as an async context manager."""
        return LocalStaging(key, tmp=self.layout.tmp, commit=self._commit)

    def _commit(self, key: CallKey, part: Path, metadata: CallMetadata, audio: AudioInfo) -> Recording:
        """Move a complete, fsync-ed download into place (worker thread); see the module docstring."""
        now = self._clock()
        with self._lock:
            self._refuse_expired(key, metadata, now)
        document = StoredMeta(
            tenant_id=key.tenant_id,
            session_id=key.session_id,
            record_id=key.record_id,
            metadata=metadata.platform_json(),
            audio=audio,
            fetched_at=now,
        )
        recording = document.recording()
        meta_fd, meta_part = create_locked_temp(self.layout.tmp)
        try:
            write_all(meta_fd, document.model_dump_json().encode())
            os.fsync(meta_fd)
            os.utime(meta_fd, (now.timestamp(), now.timestamp()))
            self._ensure_indexed()
            with self._lock:
                audio_id, meta_id, artifact_bytes = records.move_into_place(
                    self.layout, key, part, meta_part, audio
                )
                self._index.put(Indexed(recording, audio_id, meta_id, artifact_bytes, now.timestamp()))
                try:
                    self._journal.append(key, skip_own=not self._walking)
                    self._sync()
                    self._evict_to_fit(protect=key)
                except (OSError, StorageError):  # the recording is stored: the next sweep does the rest
                    logger.warning("tidying the store after storing %s failed", key, exc_info=True)
        finally:
            os.close(meta_fd)
            unlink_quietly(meta_part)
        return recording

    def _refuse_expired(self, key: CallKey, metadata: CallMetadata, now: datetime) -> None:
        """A call past the platform's 31 days is not stored at all: remembered, then refused."""
        until = metadata.available_until
        if until is None or now < until:
            return
        self._remove(key)
        self._tombstones.write(key, until)
        raise RecordingExpired(
            f"Call {key} connected more than 31 days ago; the platform kept its audio only until "
            f"{until.isoformat(timespec='seconds')}, so this server does not keep it either."
        )

    # --- artefacts -------------------------------------------------------------------------

    async def read_artifact(self, recording: Recording, name: str) -> bytes | None:
        return await anyio.to_thread.run_sync(self._read_artifact, recording, check_artifact_name(name))

    async def write_artifact(self, recording: Recording, name: str, data: bytes) -> None:
        def fill(file: BinaryIO) -> None:
            file.write(data)

        await self.write_artifact_from(recording, name, fill)

    async def write_artifact_from(
        self, recording: Recording, name: str, fill: Callable[[BinaryIO], None]
    ) -> None:
        await anyio.to_thread.run_sync(self._write_artifact, recording, check_artifact_name(name), fill)

    def artifact_path(self, recording: Recording, name: str) -> Path | None:
        path = self.layout.artifact_path(recording.key, recording.audio.sha256, name)
        if self.local_path(recording) is None:
            return None
        try:
            return path if stat.S_ISREG(os.lstat(path).st_mode) else None
        except OSError:
            return None

    def _read_artifact(self, recording: Recording, name: str) -> bytes | None:
        file = self.open_artifact(recording, name)
        if file is None:
            return None
        with file:
            try:
                return file.read()
            except OSError as exc:
                raise StorageError(f"A stored analysis could not be read ({exc.strerror}).") from exc

    def open_artifact(self, recording: Recording, name: str) -> BinaryIO | None:
        """The artefact, or None when there is none, or when it is damaged (not a regular file,
        or not the length and sha256 recorded when it was stored: cut short or changed on disk):
        it is made again. Read from its start (the check hashes it whole, once per open)."""
        indexed = self._current_version(recording)
        parts = self.layout.artifact_parts(recording.key, recording.audio.sha256)
        try:
            dir_fd = open_dir(self.layout.recordings, parts, create=False)
        except LinkInStore:
            return None
        except OSError as exc:
            raise StorageError(f"A stored analysis could not be read ({exc.strerror}).") from exc
        if dir_fd is None:
            return None
        try:
            fd = open_regular(check_artifact_name(name), dir_fd=dir_fd)
            damage = _damage(fd, name, dir_fd)
        except FileNotFoundError:
            return None
        except NotAFile:
            fd, damage = None, "it is not a regular file"
        except OSError as exc:
            raise StorageError(f"A stored analysis could not be read ({exc.strerror}).") from exc
        finally:
            os.close(dir_fd)
        if damage is None and fd is not None:
            self._touch(indexed, self._clock())
            return os.fdopen(fd, "rb")
        if fd is not None:
            os.close(fd)
        logger.warning("the stored %s of %s is damaged (%s); making it again", name, recording.key, damage)
        return None

    def _write_artifact(self, recording: Recording, name: str, fill: Callable[[BinaryIO], None]) -> None:
        try:
            fd, part = create_locked_temp(self.layout.tmp, readable=True)
        except OSError as exc:
            raise StorageError(f"A derived file could not be saved ({exc.strerror}).") from exc
        try:
            with os.fdopen(fd, "w+b", closefd=False) as file:  # the fd keeps its flock until the end
                fill(file)
            size = os.fstat(fd).st_size
            # Hashed from the file once ``fill`` is done, not from its writes: an encoder may seek
            # back and rewrite its header.
            digest = sha256_fd(fd)
            os.fsync(fd)
            self._ensure_indexed()
            with self._lock:
                self._current_version(recording)  # evicted or replaced meanwhile: not stored
                parts = self.layout.artifact_parts(recording.key, recording.audio.sha256)
                dir_fd = open_dir(self.layout.recordings, parts, create=True)
                assert dir_fd is not None
                try:
                    before = _size_of(name, dir_fd) + _size_of(_record_name(name), dir_fd)
                    # first: see _write_record
                    length = _write_record(self.layout.tmp, dir_fd, name, size, digest)
                    os.replace(part, name, dst_dir_fd=dir_fd)
                    with contextlib.suppress(OSError):
                        fsync_dir(dir_fd)
                finally:
                    os.close(dir_fd)
                self._index.grow(recording.key, size + length - before)
                try:
                    self._journal.append(recording.key, skip_own=not self._walking)
                    self._sync()  # other processes' commits count too
                    self._evict_to_fit(protect=recording.key)
                except (OSError, StorageError):
                    logger.warning(
                        "tidying the store after an artefact of %s failed", recording.key, exc_info=True
                    )
        except OSError as exc:
            raise StorageError(f"A derived file could not be saved ({exc.strerror or exc}).") from exc
        finally:
            os.close(fd)
            unlink_quietly(part)

    def _current_version(self, recording: Recording) -> Indexed:
        indexed = self._current(recording.key)
        if indexed is None or indexed.recording.audio.sha256 != recording.audio.sha256:
            raise _gone(recording.key)
        return indexed

    # --- transcripts CT-e1 pushed ------------------------------------------------------------

    async def write_pushed_transcript(
        self, key: CallKey, document: bytes, *, available_until: datetime | None
    ) -> None:
        await anyio.to_thread.run_sync(self._write_pushed, key, document, available_until)

    async def read_pushed_transcript(self, key: CallKey) -> bytes | None:
        return await anyio.to_thread.run_sync(self._read_pushed, key)

    def _write_pushed(self, key: CallKey, document: bytes, available_until: datetime | None) -> None:
        now = self._clock()
        if available_until is not None and now >= available_until:
            raise RecordingExpired(
                f"Call {key} connected more than 31 days ago (the platform keeps it until "
                f"{available_until.isoformat(timespec='seconds')}); its transcript is not kept either."
            )
        self._ensure_indexed()
        with self._lock:
            try:
                self._pushed.write(key, document, received_at=now, available_until=available_until)
            except OSError as exc:
                raise StorageError(
                    f"A pushed transcript could not be saved ({exc.strerror or exc})."
                ) from exc
            try:
                self._sync()  # other processes' commits and pushes count too
                self._evict_to_fit(protect=None)
            except (OSError, StorageError):  # stored: the next sweep does the rest
                logger.warning("tidying the store after a pushed transcript of %s failed", key, exc_info=True)

    def _read_pushed(self, key: CallKey) -> bytes | None:
        with self._lock:  # a removal of an expired one is a mutation
            return self._pushed.read(key, self._clock(), self.limits.max_age)

    # --- retention -------------------------------------------------------------------------

    def sweep(self) -> None:
        """Enforce retention now (blocking): walk the store, then max_age, 31 days, size (LRU).

        The walk itself runs without the lock, so commits go on meanwhile; what changed during it
        is read back from the journal before the index is trusted.
        """
        with self._sweeping:
            self._sweep()

    def _sweep(self) -> None:
        """Each step, and each entry, on its own: one that fails (a directory where a file belongs,
        an unreadable file, a journal that cannot be written) is logged and skipped, so retention
        is still enforced on everything else."""
        with self._lock:
            with _skipped("clearing tmp/"):
                self._clean_tmp()
            with _skipped("clearing old tombstones"):
                self._tombstones.clean(self._clock())
            self._journal.start()
            self._walking = True
        try:
            entries, orphans = records.walk(self.layout)
        finally:
            with self._lock:
                self._walking = False
        with self._lock:
            self._index.replace_all(entries)
            self._indexed = True
            self._sync()
            for key in orphans:
                if self._index.get(key) is None:
                    with _skipped(f"removing the incomplete recording {key}"):
                        self._remove_orphan(key)
            for indexed in [i for i in self._index.values() if i.stale_artifacts]:
                with _skipped(f"removing stale artefacts of {indexed.key}"):
                    records.tidy_artifacts(self.layout, indexed.key, indexed.recording.audio.sha256)
                    indexed.stale_artifacts = False
            now = self._clock()
            with _skipped("sweeping pushed transcripts"):
                self._pushed.sweep(now, self.limits.max_age, self.limits.max_bytes)
            # Pushed transcripts count towards the size bound; recordings make room for them.
            room = Limits(self.limits.max_age, max(1, self.limits.max_bytes - self._pushed.total_bytes))
            for removal in plan((i.entry() for i in self._index.values()), now, room):
                with _skipped(f"removing {removal.entry.key} ({removal.reason})"):
                    self._carry_out(removal)
            with _skipped("starting a fresh journal"):
                self._journal.restart_if_large()

    async def run_sweeper(self, every_seconds: float) -> None:
        """Sweep in a worker thread now (the start-up sweep, which builds the index) and then every
        ``every_seconds``, until cancelled: expired personal data is deleted on time even when no
        request comes to notice it."""
        while True:
            try:
                await anyio.to_thread.run_sync(self.sweep)
            except (OSError, StorageError):
                logger.warning("sweeping the recording store failed; trying again later", exc_info=True)
            await anyio.sleep(every_seconds)

    def _ensure_indexed(self) -> None:
        """Before the first sweep has built the index, build it now, or wait for the sweep that is
        building it (called without ``_lock``: the sweep needs it to finish)."""
        if self._indexed:
            return
        with self._sweeping:
            if not self._indexed:
                self._sweep()

    def _evict_to_fit(self, protect: CallKey | None) -> None:
        """Size only, from the index (lock held): O(1) amortised, unlike a walk of the store.
        Pushed transcripts count, but only recordings are evicted here (see pushed.py)."""
        total = self._index.total_bytes + self._pushed.total_bytes
        if total <= self.limits.max_bytes:
            return
        chosen = evict_to_fit(
            self._unused_elsewhere(self._index.eviction_candidates()),
            total,
            self.limits.max_bytes,
            protect,
        )
        for entry in chosen:
            self._carry_out(Removal(entry, "size"))

    def _unused_elsewhere(self, candidates: Iterator[Entry]) -> Iterator[Entry]:
        """Candidates whose meta.json says no other process has used them since we indexed them."""
        for entry in candidates:
            indexed = self._index.get(entry.key)
            try:
                used = os.lstat(self.layout.record_dir(entry.key) / META).st_mtime
            except OSError:
                used = entry.last_used
            if indexed is not None and used > entry.last_used:
                indexed.last_used = used  # back in its place when the queue is rebuilt
                continue
            yield entry

    def _carry_out(self, removal: Removal) -> None:
        self._remove(removal.entry.key)
        if removal.reason == "size":
            logger.info(
                "evicted %s to keep the store under %d bytes", removal.entry.key, self.limits.max_bytes
            )
        else:
            logger.info("removed %s (%s retention)", removal.entry.key, removal.reason)
        if removal.tombstone is not None:
            self._tombstones.write(removal.entry.key, removal.tombstone)

    def _remove_if_idle(self, indexed: Indexed, now: datetime) -> None:
        """Expire from the event loop without waiting for the lock: if it is busy, a sweep is on it."""
        if not self._lock.acquire(blocking=False):
            return
        try:
            current = self._current(indexed.recording.key)
            if current is not None and current.recording.audio.sha256 == indexed.recording.audio.sha256:
                reason = expiry(current.entry(), now, self.limits.max_age)
                if reason is not None:
                    # A store that refuses (read-only, full): the caller is told "not kept" all
                    # the same, and the next sweep tries again.
                    with _skipped(f"removing the expired recording {current.key}"):
                        self._carry_out(Removal(current.entry(), reason))
        finally:
            self._lock.release()

    def _remove(self, key: CallKey) -> None:
        """Delete a recording and its artefacts (lock held), and tell the other processes."""
        existed = records.remove(self.layout, key)
        if self._index.drop(key) is not None or existed:
            try:
                self._journal.append(key, skip_own=not self._walking)
            except OSError as exc:  # removed all the same: other processes find it gone when they look
                logger.warning("the store journal could not record the removal of %s: %s", key, exc)

    def _pushed_changed(self, key: CallKey) -> None:
        """A pushed transcript was written or removed: journalled, so every process counts it."""
        try:
            self._journal.append(key, pushed=True)
        except OSError as exc:
            logger.warning("the store journal could not record the push of %s: %s", key, exc)

    def _remove_orphan(self, key: CallKey) -> None:
        """A record directory without a valid meta.json: a crash's leftover, or a commit in progress."""
        if records.is_abandoned(self.layout, key):
            logger.info("removing the incomplete recording %s", key)
            self._remove(key)

    # --- the index -------------------------------------------------------------------------

    def _current(self, key: CallKey) -> Indexed | None:
        """The index's entry if its audio file is still the one indexed; else what the disk says."""
        indexed = self._index.get(key)
        if indexed is not None:
            path = self.layout.audio_path(key, indexed.recording.audio.format.container)
            try:
                if (
                    FileId.of(os.lstat(path)) == indexed.audio_id
                    and FileId.of_meta(os.lstat(path.with_name(META))) == indexed.meta_id
                ):
                    return indexed
            except OSError:
                pass
        loaded = records.load(self.layout, key)
        if (loaded is not None or indexed is not None) and self._lock.acquire(blocking=False):
            try:
                if loaded is None:
                    self._index.drop(key)
                else:
                    self._index.put(loaded)
            finally:
                self._lock.release()
        return loaded

    def _rescan(self) -> None:
        """Rebuild the index from a walk of the store with the lock held (when the journal cannot
        tell what changed); orphans are removed when old."""
        self._journal.start()
        entries, orphans = records.walk(self.layout)
        self._index.replace_all(entries)
        self._pushed.recount_all()
        for key in orphans:
            with _skipped(f"removing the incomplete recording {key}"):
                self._remove_orphan(key)

    def _sync(self) -> None:
        """Apply what other processes changed since the last look (lock held): O(changes)."""
        changed = self._journal.changes()
        if changed is None:
            self._rescan()
            return
        for key in changed.recordings:
            loaded = records.load(self.layout, key)
            if loaded is None:
                self._index.drop(key)
            else:
                self._index.put(loaded)
        for key in changed.pushed:
            self._pushed.recount(key)

    def _touch(self, indexed: Indexed, now: datetime) -> None:
        """Record a use: the meta.json's mtime (seen by every process) and the index's copy."""
        stamp = now.timestamp()
        indexed.last_used = stamp
        with contextlib.suppress(OSError):
            os.utime(
                self.layout.record_dir(indexed.recording.key) / META, (stamp, stamp), follow_symlinks=False
            )

    # --- tombstones and temporary files ----------------------------------------------------

    def _clean_tmp(self) -> None:
        """Remove temporary files nobody holds: left by a crash, or by a download that was dropped.
        A tmp/ removed while serving (someone tidying the cache directory) is made again."""
        try:
            with os.scandir(self.layout.tmp) as entries:
                names = [entry.name for entry in entries if entry.name.endswith(PART_SUFFIX)]
        except FileNotFoundError:
            logger.warning("the store's tmp/ directory %s had gone; making it again", self.layout.tmp)
            try:
                private_dir(self.layout.tmp)
            except ConfigurationError as exc:
                raise StorageError(exc.message, next_step=exc.next_step) from None
            return
        for name in names:
            if remove_if_unlocked(self.layout.tmp / name):
                logger.info("removed the leftover temporary file %s", name)


@contextlib.contextmanager
def _skipped(what: str) -> Iterator[None]:
    """One step of a sweep or tidy-up: a failure is logged (keys and paths, nothing personal) and
    the caller goes on with the rest."""
    try:
        yield
    except (OSError, StorageError) as exc:
        logger.warning("%s failed, skipped until the next sweep: %s", what, exc)


def _record_name(name: str) -> str:
    """Where an artefact's length and sha256 are recorded: a dot name no artefact can have."""
    return f".{name}.json"


def _size_of(name: str, dir_fd: int) -> int:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_size
    except FileNotFoundError:
        return 0


def _write_record(tmp: Path, dir_fd: int, name: str, size: int, sha256: str) -> int:
    """Record, atomically, the length and sha256 of the artefact about to be renamed into place
    (before it: a crash in between leaves a record the old file does not match, so that one is
    made again; so does a reader in another process that opens the old file in that moment, once)."""
    data = json.dumps({"size_bytes": size, "sha256": sha256}).encode()
    fd, part = create_locked_temp(tmp)
    try:
        write_all(fd, data)
        os.fsync(fd)
        os.replace(part, _record_name(name), dst_dir_fd=dir_fd)
    finally:
        os.close(fd)
        unlink_quietly(part)
    return len(data)


def _damage(fd: int, name: str, dir_fd: int) -> str | None:
    """What is wrong with the artefact open as ``fd``, if its length or its sha256 is not the one
    recorded when it was stored (none is recorded for those an older version stored: they are
    trusted). The caller's ``fd`` is closed here when an error is raised."""
    try:
        try:
            raw = read_file(_record_name(name), dir_fd=dir_fd, limit=4096)
        except FileNotFoundError:
            return None
        except NotAFile:
            return "its record is not a file"
        try:
            record = json.loads(raw)
            recorded_size, recorded_sha256 = record["size_bytes"], record.get("sha256")
        except (ValueError, TypeError, KeyError, AttributeError):
            return "its record is unreadable"
        if not isinstance(recorded_sha256, str | None):
            return "its record is unreadable"
        size = os.fstat(fd).st_size
        if size != recorded_size:
            return f"{size} bytes where {recorded_size} were stored"
        # A record an older version wrote has the length alone: still checked by that alone, so
        # an upgrade does not make every stored artefact again.
        if recorded_sha256 is not None and sha256_fd(fd) != recorded_sha256:
            return f"its {size} bytes are not the ones stored (another sha256)"
    except BaseException:
        os.close(fd)
        raise
    return None


def _gone(key: CallKey) -> RecordingGone:
    return RecordingGone(
        f"The stored recording of call {key} was removed or replaced before it could be read."
    )
