"""POSIX file-system primitives the local store is built from: private, atomic, link-free.

Recordings are personal data, so everything here creates 0700 directories and 0600 files
whatever the umask, never follows a symbolic link inside the store (a linked tenant directory
would put recordings where retention never looks), and makes renames durable.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path

from cte1_mcp.errors import ConfigurationError, StorageError

logger = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
PART_SUFFIX = ".part"
_NEW_FILE_FLAGS = os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: A directory that a concurrent sweep keeps pruning (it removes empty ones) is made again this often.
_MAKE_ATTEMPTS = 5


class LinkInStore(StorageError):
    """A symbolic link (or a non-directory) where the store expects one of its own directories."""

    default_next_step = (
        "Ask the operator to remove the symbolic link inside the cache directory (CTE1_CACHE_DIR): "
        "the store keeps recordings only in directories it made itself."
    )


# --- the root and its subdirectories ---------------------------------------------------------


def private_dir(path: Path) -> Path:
    """``path`` as a private directory of this user: created 0700 (missing parents too), or accepted.

    An existing directory is never changed, only checked: it may be anything (``$HOME``, ``/tmp``)
    and its mode is not the store's to decide. One that is a symbolic link, belongs to another
    user or is open to other users is refused, as is a path that cannot be made at all (a parent
    that is a dangling link, a file, or a pseudo file system such as /proc).
    """
    try:
        _make_missing(path)
        info = os.lstat(path)
    except OSError as exc:
        raise ConfigurationError(
            f"The recording store {path} cannot be created ({exc.strerror or exc}{_why_not(path)}).",
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


def _why_not(path: Path) -> str:
    """What stands in the way of creating ``path``, when it is a link to nowhere."""
    for ancestor in path.parents:
        if os.path.lexists(ancestor):
            if ancestor.is_symlink() and not ancestor.exists():
                return f"; {ancestor} is a symbolic link to something that does not exist"
            return ""
    return ""


def _make_missing(path: Path) -> None:
    """Create ``path`` and its missing ancestors, top down, each exactly 0700 (iterative: a parent
    that is a dangling link or refuses mkdir ends in one OSError, never in endless recursion)."""
    missing: list[Path] = []
    current = path
    while not os.path.lexists(current):
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(DIR_MODE)
        except FileExistsError:
            continue  # made meanwhile by another process: checked by the caller like any other
        directory.chmod(DIR_MODE)  # made by this call: the umask may have taken bits away


# --- directories inside the store --------------------------------------------------------------


def open_dir(top: Path, parts: Sequence[str], *, create: bool) -> int | None:
    """A file descriptor of ``top/parts…``, each component opened without following links.

    Missing components are made 0700 when ``create`` (again, if a concurrent sweep prunes one
    meanwhile); otherwise None. A component that is a link or not a directory raises LinkInStore
    (and is logged): the store never writes or reads through one.
    """
    for _ in range(_MAKE_ATTEMPTS):
        try:
            return _walk(top, parts, create=create)
        except FileNotFoundError:
            if not create:
                return None
    raise StorageError(f"The directory for {'/'.join(parts)} kept vanishing while it was being made.")


def _walk(top: Path, parts: Sequence[str], *, create: bool) -> int:
    fd = _open_own_dir(top, None, top, ())  # ``top`` itself (say recordings/) may be a link too
    try:
        for index, name in enumerate(parts):
            if create:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, DIR_MODE, dir_fd=fd)
                    os.chmod(name, DIR_MODE, dir_fd=fd, follow_symlinks=False)
            child = _open_own_dir(name, fd, top, parts[: index + 1])
            os.close(fd)
            fd = child
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_own_dir(name: str | Path, dir_fd: int | None, top: Path, below: Sequence[str]) -> int:
    """``top/below…`` (``name`` relative to ``dir_fd``); the client is told only its place in the
    store, the operator's log the full path."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            where = top.joinpath(*below)
            logger.warning("refusing %s inside the store: it is a link or not a directory", where)
            raise LinkInStore(
                f"The store's directory {Path(top.name, *below)} (in CTE1_CACHE_DIR) is a symbolic "
                "link or not a directory; nothing is stored or read through it."
            ) from None
        raise


def names_in(directory: Path, *, directories: bool) -> list[str]:
    """The entries of ``directory`` (only real directories if asked, never links); none if it has
    gone, or cannot be listed (logged: one unreadable directory must not stop a sweep)."""
    try:
        with os.scandir(directory) as entries:
            names = []
            for entry in entries:
                if entry.is_symlink():
                    logger.warning("ignoring the symbolic link %s inside the store", entry.path)
                elif not directories or entry.is_dir(follow_symlinks=False):
                    names.append(entry.name)
            return names
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        logger.warning("cannot list %s inside the store: %s", directory, exc.strerror or exc)
        return []


def remove_tree(dir_fd: int) -> None:
    """Delete everything inside the directory ``dir_fd`` (files and subdirectories, links as links)."""
    with os.scandir(dir_fd) as entries:
        names = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
    for name, is_dir in names:
        if is_dir:
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            except FileNotFoundError:
                continue
            try:
                remove_tree(child)
            finally:
                os.close(child)
            with contextlib.suppress(FileNotFoundError, OSError):
                os.rmdir(name, dir_fd=dir_fd)
        else:
            unlink_quietly(name, dir_fd=dir_fd)


def prune(directory: Path, top: Path) -> None:
    """Remove now-empty directories from ``directory`` up to (not including) ``top``."""
    while directory != top and top in directory.parents:
        try:
            directory.rmdir()
        except OSError:
            return
        directory = directory.parent


# --- files -------------------------------------------------------------------------------------


def create_locked_temp(directory: Path, *, readable: bool = False) -> tuple[int, Path]:
    """A new 0600 file in ``directory``, flock-ed so no store (in any process) cleans it while in use;
    write-only unless ``readable`` (to hash what was written into it)."""
    access = os.O_RDWR if readable else os.O_WRONLY
    while True:
        path = directory / f"{secrets.token_hex(16)}{PART_SUFFIX}"
        fd = os.open(path, _NEW_FILE_FLAGS | access, FILE_MODE)
        try:
            os.fchmod(fd, FILE_MODE)  # the umask may have taken bits away
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if path.stat().st_ino == os.fstat(fd).st_ino:
                return fd, path
        except (BlockingIOError, FileNotFoundError):
            pass  # a cleaner took it between open and flock: try another name
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def remove_if_unlocked(path: Path) -> bool:
    """Delete a temporary file unless its writer (in this or another process) still holds it.

    Only regular files are touched: a directory or link that happens to carry the suffix is
    logged and left alone, and does not stop the cleaning of the others.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            logger.warning("leaving %s alone: it is not a file this store made", path)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        unlink_quietly(path)
        return True
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Write all of ``data``, resuming after short writes; a write of nothing is an error, not a loop."""
    view = memoryview(data)
    while view:
        count = os.write(fd, view)
        if count == 0:
            raise OSError(errno.EIO, "the write wrote nothing")
        view = view[count:]


def fsync_dir(dir_fd: int) -> None:
    """Make a rename durable: fsync the directory that holds the new name."""
    os.fsync(dir_fd)


def unlink_quietly(name: str | Path, *, dir_fd: int | None = None) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)


class NotAFile(OSError):
    """Something other than a regular file (a FIFO, a socket, a device, a directory) where the
    store keeps one of its files."""


def open_regular(
    name: str | Path, flags: int = os.O_RDONLY, *, dir_fd: int | None = None, mode: int = FILE_MODE
) -> int:
    """A blocking descriptor of the regular file ``name``, opened without following a link.

    Opened with O_NONBLOCK first: open(2) of a FIFO planted in the store would otherwise wait
    for a writer (or a reader) forever, and with it the event loop and even SIGTERM. Anything but
    a regular file raises NotAFile.
    """
    fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, mode, dir_fd=dir_fd)
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
        if regular:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    if not regular:
        os.close(fd)
        raise NotAFile(errno.EINVAL, "not a regular file", str(name))
    return fd


def read_file(name: str, *, dir_fd: int, limit: int) -> bytes:
    """The bytes of a regular file (at most ``limit``) opened without following a link."""
    fd = open_regular(name, dir_fd=dir_fd)
    try:
        return read_fd(fd, limit)
    finally:
        os.close(fd)


def sha256_fd(fd: int) -> str:
    """The sha256 of the whole file ``fd``, in 1 MiB blocks (bounded memory, however large the
    file). pread from its start: the descriptor's offset is left where it was, for its reader."""
    digest = hashlib.sha256()
    offset = 0
    while block := os.pread(fd, 1 << 20, offset):
        digest.update(block)
        offset += len(block)
    return digest.hexdigest()


def read_fd(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    remaining = limit
    while remaining > 0:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
