"""Coordination through the cache directory: every process sharing ``CTE1_CACHE_DIR`` on one machine.

Files under ``<cache>/coordination/`` (0700, checked like the store's own directories; files 0600),
all guarded by ``flock``, which the kernel releases when its holder dies, however it dies
(kill -9 included)::

    spacing-<platform>        the next free start, the Retry-After and the latest start, in
                              CLOCK_MONOTONIC seconds
    flights/<call>.lock       held (flock) by the one process downloading that recording
    flights/<call>.progress   that download's latest progress, for the processes waiting on it

Spacing is a reservation: under the lock a caller takes the next free start time, writes the one
after it, and sleeps until its own, so callers start in the order they asked (first come, first
served, no starvation) and nothing is held while they sleep. A process killed before its start
only leaves its slot unused: the others are delayed by at most that one interval.

Woken at its slot, a caller confirms it under the lock before it starts, and records its start: a
Retry-After that arrived while it slept (another process's 429) gives it a new slot after the
pause, and a start made late by the one before it (a busy machine) makes it wait the interval
after that start. So every start honours the latest Retry-After and the interval, not merely the
state as it was at the reservation.

Any other error from these files (a read-only or full file system, lost permissions) is a
``StorageError`` naming the directory (its path in the log): a new recording cannot be fetched, stored ones are still served.

Valid on local filesystems (ext4, xfs, btrfs, tmpfs, APFS). Not on network filesystems: NFS
emulates ``flock`` with byte-range locks whose behaviour depends on the server, and
``CLOCK_MONOTONIC`` is per machine; several machines must use Redis (``CTE1_REDIS_URL``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import json
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

from cte1_mcp.coordination.base import OnWait, call_id
from cte1_mcp.errors import StorageError
from cte1_mcp.models import CallKey
from cte1_mcp.progress import Progress, ProgressCallback

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: How often a process waiting for another's download looks at its lock and progress file.
POLL_SECONDS = 0.05
#: Progress written for other processes at most this often (a stage change is always written).
PUBLISH_EVERY_SECONDS = 0.2
#: A state more than this far ahead of now is not a real queue (a corrupt file): start afresh.
STATE_HORIZON_SECONDS = 24 * 3600.0

_FILE_MODE = 0o600
#: The spacing state's fixed size on disk (its JSON is about 160 bytes).
_STATE_BYTES = 256
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC


def _boot_id() -> str:
    """Names this boot: CLOCK_MONOTONIC values are comparable only between processes of one boot."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return f"booted-{round(time.time() - time.monotonic(), -1):.0f}"


@dataclass(slots=True)
class _SpacingState:
    next_free: float
    not_before: float
    #: The latest confirmed start (0: none known).
    last_start: float = 0.0


class FileSpacer:
    """Start-to-start spacing shared by every process whose spacer uses the same state file."""

    def __init__(self, state_file: Path, interval: float, *, notify_every: float = 1.0) -> None:
        if interval < 0:
            raise ValueError("interval must be >= 0")
        self._path = state_file
        self._interval = interval
        self._notify_every = notify_every
        self._boot = _boot_id()

    @property
    def interval(self) -> float:
        return self._interval

    async def acquire(self, on_wait: OnWait | None = None) -> None:
        slot = await self._under_lock(self._reserve)
        wake: float | None = slot
        try:
            while wake is not None:
                while (remaining := wake - time.monotonic()) > 0:
                    if on_wait is not None:
                        await on_wait(remaining)
                    await anyio.sleep(min(remaining, self._notify_every))
                slot, wake = await self._under_lock(functools.partial(self._confirm, slot))
        except BaseException:
            with anyio.CancelScope(shield=True):
                try:
                    await anyio.to_thread.run_sync(self._give_back, slot)
                except OSError as exc:  # the slot stays taken: the others wait one interval more
                    logger.warning("could not give back a spacing slot in %s: %s", self._path, exc)
            raise

    async def defer(self, seconds: float) -> None:
        await self._under_lock(lambda wait=True: self._defer(max(seconds, 0.0), wait=wait))

    async def deferred_for(self) -> float:
        state = await self._under_lock(self._read)
        return max(0.0, state.not_before - time.monotonic())

    async def _under_lock(self, action: Callable[..., T]) -> T:
        """``action`` on the event loop if the lock is free (microseconds: the usual case), else in
        a worker thread that waits for it (another process holds it, for microseconds too)."""
        await anyio.lowlevel.checkpoint_if_cancelled()
        try:
            try:
                result: T = action(wait=False)
            except BlockingIOError:
                return await anyio.to_thread.run_sync(action)
        except OSError as exc:
            raise unusable(exc, self._path.parent) from exc
        await anyio.lowlevel.cancel_shielded_checkpoint()  # let others run; what was done stays done
        return result

    # --- under the lock -----------------------------------------------------------------------

    def _reserve(self, *, wait: bool = True) -> float:
        with self._locked(wait=wait) as (fd, state):
            now = time.monotonic()
            start = max(now, state.next_free, state.not_before)
            self._write(fd, _SpacingState(start + self._interval, state.not_before, state.last_start))
            return start

    def _confirm(self, slot: float, *, wait: bool = True) -> tuple[float, float | None]:
        """At ``slot``'s time: ``(slot, None)`` and the start recorded if it may start now, else the
        slot it holds and when to confirm again.

        A Retry-After recorded since the reservation moves it to a new slot after the pause (this
        one, pushed, if nobody queued behind it); a start made later than its own slot (the one
        before woke late) keeps the slot and waits the interval after that start.
        """
        with self._locked(wait=wait) as (fd, state):
            now = time.monotonic()
            if state.not_before > now:
                base = slot if state.next_free == slot + self._interval else state.next_free
                start = max(now, base, state.not_before)
                self._write(fd, _SpacingState(start + self._interval, state.not_before, state.last_start))
                return start, start
            spaced = state.last_start + self._interval
            if state.last_start and now < spaced:
                return slot, spaced
            # Started late (a busy machine): the next reservation is spaced from the start itself.
            next_free = max(state.next_free, now + self._interval)
            self._write(fd, _SpacingState(next_free, state.not_before, now))
            return slot, None

    def _give_back(self, start: float) -> None:
        """A caller that will not start after all: if nobody queued behind it, its slot is free again."""
        with self._locked() as (fd, state):
            if state.next_free == start + self._interval:
                self._write(fd, _SpacingState(start, state.not_before, state.last_start))

    def _defer(self, seconds: float, *, wait: bool = True) -> None:
        with self._locked(wait=wait) as (fd, state):
            due = time.monotonic() + seconds
            if due > state.not_before:
                self._write(fd, _SpacingState(state.next_free, due, state.last_start))

    def _read(self, *, wait: bool = True) -> _SpacingState:
        with self._locked(shared=True, wait=wait) as (_, state):
            return state

    @contextlib.contextmanager
    def _locked(self, *, shared: bool = False, wait: bool = True) -> Iterator[tuple[int, _SpacingState]]:
        """The state under the lock; without ``wait``, BlockingIOError if another holds it."""
        fd = os.open(self._path, _OPEN_FLAGS, _FILE_MODE)
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if wait else fcntl.LOCK_NB))
            yield fd, self._parse(os.pread(fd, _STATE_BYTES, 0))
        finally:
            os.close(fd)  # releases the lock

    def _parse(self, raw: bytes) -> _SpacingState:
        now = time.monotonic()
        if not raw.strip():
            return _SpacingState(now, 0.0)  # first use on this machine
        try:
            document = json.loads(raw)
            if document["boot"] != self._boot:
                # Written before a reboot (its clock readings mean nothing now), or by a process
                # whose boot name differs (the fallback is approximate): wait one interval, the
                # cautious reading, rather than risk two starts too close.
                return _SpacingState(now + self._interval, 0.0)
            state = _SpacingState(
                float(document["next"]), float(document["not_before"]), float(document.get("last", 0.0))
            )
        except (ValueError, KeyError, TypeError):
            # Half-written by a process that died mid-write: a request may just have started.
            logger.warning("the spacing state in %s was unreadable; waiting one interval", self._path)
            return _SpacingState(now + self._interval, 0.0)
        if max(state.next_free, state.not_before) > now + STATE_HORIZON_SECONDS:
            return _SpacingState(now + self._interval, 0.0)
        return state

    def _write(self, fd: int, state: _SpacingState) -> None:
        data = json.dumps(
            {
                "boot": self._boot,
                "next": state.next_free,
                "not_before": state.not_before,
                "last": state.last_start,
            }
        )
        # Always the same length, overwritten in place: no truncation (a metadata update that
        # costs more than everything else here); JSON ignores the trailing spaces.
        os.pwrite(fd, data.encode().ljust(_STATE_BYTES), 0)


class _FileClaim:
    """The held claim: its progress goes to a file the waiting processes read."""

    def __init__(self, progress_file: Path) -> None:
        self._path = progress_file
        self._last_stage: str | None = None
        self._last_write = 0.0

    async def publish(self, progress: Progress) -> None:
        now = time.monotonic()
        if progress.stage == self._last_stage and now - self._last_write < PUBLISH_EVERY_SECONDS:
            return
        self._last_stage, self._last_write = progress.stage, now
        document = {
            "stage": progress.stage,
            "done": progress.done,
            "total": progress.total,
            "message": progress.message,
        }
        try:
            await anyio.to_thread.run_sync(_write_atomically, self._path, json.dumps(document).encode())
        except OSError as exc:
            logger.debug("could not share progress in %s: %s", self._path, exc)

    def latest(self) -> bytes | None:
        """What the holder last published (read by the waiting processes), or None."""
        try:
            return self._path.read_bytes()
        except OSError:
            return None

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()


class FileFlights:
    """One download per recording among the processes sharing the directory."""

    def __init__(self, directory: Path) -> None:
        self._dir = directory

    @asynccontextmanager
    async def claim(
        self, key: CallKey, on_progress: ProgressCallback | None = None
    ) -> AsyncIterator[_FileClaim]:
        name = call_id(key)
        lock_path = self._dir / f"{name}.lock"
        claim = _FileClaim(self._dir / f"{name}.progress")
        try:
            fd = await self._lock(lock_path, claim, on_progress)
        except OSError as exc:
            raise unusable(exc, self._dir) from exc
        try:
            yield claim
        finally:
            # Unlinked while still held: a waiter that opened this inode sees it is gone and reopens.
            # A file that cannot be removed (the directory turned read-only) is left behind: the
            # next holder reuses it, and the error of the download itself is what the caller sees.
            try:
                claim.discard()
                with contextlib.suppress(FileNotFoundError):
                    lock_path.unlink()
            except OSError as exc:
                logger.warning("could not remove the download lock %s: %s", lock_path, exc)
            finally:
                os.close(fd)

    async def _lock(self, path: Path, claim: _FileClaim, on_progress: ProgressCallback | None) -> int:
        seen: bytes | None = None
        # In a worker thread, not cancellable (a descriptor it opened is never lost): the file
        # system may be slow, the event loop serves every session.
        while (fd := await anyio.to_thread.run_sync(_try_lock, path)) is None:
            seen = await _relay(claim, seen, on_progress)
            await anyio.sleep(POLL_SECONDS)
        return fd


def _try_lock(path: Path) -> int | None:
    """The lock file, open and held exclusively; None while another process holds it."""
    while True:
        fd = os.open(path, _OPEN_FLAGS, _FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            return fd
        os.close(fd)  # its holder finished and removed it; take the current file


def unusable(exc: OSError, directory: Path) -> StorageError:
    """The cache directory's coordination files fail: the client is told which directory under
    CTE1_CACHE_DIR and what still works; the absolute path goes to the operator's log only (no
    server internals in client texts)."""
    logger.error("the coordination files in %s cannot be used: %s", directory, exc.strerror or exc)
    return StorageError(
        f"A new recording cannot be fetched: the cache directory's lock files cannot be used "
        f"({exc.strerror or exc}).",
        next_step="Ask the operator to make CTE1_CACHE_DIR and its coordination/ directory writable by "
        "the server (space, permissions, a read-only mount; the server's log names the path). "
        "Recordings already stored are still served.",
    )


async def _relay(claim: _FileClaim, seen: bytes | None, on_progress: ProgressCallback | None) -> bytes | None:
    """Pass on the other process's latest progress, once per change."""
    if on_progress is None:
        return seen
    raw = await anyio.to_thread.run_sync(claim.latest)
    if raw is None or raw == seen:
        return seen
    try:
        document = json.loads(raw)
        progress = Progress(
            stage=document["stage"],
            done=float(document["done"]),
            total=None if document["total"] is None else float(document["total"]),
            message=f"another server process is fetching it: {document['message']}",
        )
    except (ValueError, KeyError, TypeError):
        return seen
    await on_progress(progress)
    return raw


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == path.stat().st_ino
    except FileNotFoundError:
        return False


def _write_atomically(path: Path, data: bytes) -> None:
    temp = path.with_name(f".{path.name}.{secrets.token_hex(6)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, _FILE_MODE)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    try:
        temp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink()
        if exc.errno != errno.ENOENT:
            raise
