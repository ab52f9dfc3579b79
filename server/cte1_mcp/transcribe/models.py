"""Installed speech-recognition models: where they live, what each holds, whether its files are intact.

Layout of ``CTE1_ASR_MODELS_DIR``::

    <name>/manifest.json      engine, source, revision, every file's size and sha256, installed-at,
                              and the size and mtime of each file when it was last fully verified;
                              for a file the install rewrote, also its published size and sha256
                              and why (``ManifestFile.published``)
    <name>/files/             the model's files, exactly those the manifest lists (what the engine loads)
    .staging-<name>-<random>/ an install in progress: never read; removed by the next install
    .trash-<name>-<random>/   a replaced install being removed
    .lock                     held (flock) by the one install at a time

An install is built in a staging directory beside its destination and renamed into place, so a
model directory is either absent or complete. The manifest sits beside ``files/`` rather than
in it, so what an engine fingerprints is the model alone.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import secrets
import shutil
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cte1_mcp.errors import ModelExists, ModelInvalid

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FILES = "files"
LOCK = ".lock"
STAGING_PREFIX = ".staging-"
TRASH_PREFIX = ".trash-"
#: A model's name: a directory name on every platform, never a path.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
CHUNK = 1 << 20


# --- the manifest ----------------------------------------------------------------------------


class Published(BaseModel):
    """A file as its publisher made it, before the install changed it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int
    sha256: str
    #: What the install changed, and why (for a person reading the manifest).
    changed: str


class ManifestFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: The installed bytes' (what ``verify``, start-up and a transcript's fingerprint check).
    size: int
    sha256: str
    #: Set when the install rewrote the file (a Whisper config.json whose alignment_heads do not fit
    #: its model.bin): the publisher's bytes, which the catalog pins and ``pull`` compares.
    published: Published | None = Field(default=None, exclude_if=lambda value: value is None)

    @property
    def as_published(self) -> tuple[int, str]:
        """Size and sha256 of the file as published (the installed ones unless it was rewritten)."""
        if self.published is not None:
            return self.published.size, self.published.sha256
        return self.size, self.sha256


class Source(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: ``huggingface`` (pulled), ``import`` (from a folder or archive).
    kind: Literal["huggingface", "import"]
    #: Where the bytes came from: ``repo@revision``, or the imported path.
    origin: str
    repo: str | None = None
    revision: str | None = None
    #: Whether the files were checked against the catalog's pins (False: recorded as found).
    pinned: bool


class Verified(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    at: str
    #: Each file's [size, mtime_ns] when its sha256 was last checked: unchanged since means intact
    #: (start-up then skips re-hashing gigabytes; ``models verify`` always re-hashes).
    stamp: dict[str, tuple[int, int]]


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal[1] = 1
    name: str
    engine: str
    source: Source
    files: dict[str, ManifestFile]
    installedAt: str
    verified: Verified | None = None

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files.values())


def read_manifest(root: Path) -> Manifest:
    path = root / MANIFEST
    not_understood = f"{path} is not a model manifest this version understands"
    try:
        content = _manifest_bytes(path)
    except _NotRegular as exc:
        raise ModelInvalid(f"{not_understood} ({exc})") from None
    except OSError as exc:
        raise ModelInvalid(f"{path} cannot be read ({exc.strerror or exc})") from None
    try:
        return Manifest.model_validate_json(content)
    except ValidationError:
        raise ModelInvalid(not_understood) from None


#: Far more than a manifest of thousands of files; a bigger ``manifest.json`` is not one of ours.
MAX_MANIFEST_BYTES = 16 << 20


class _NotRegular(Exception):
    """``manifest.json`` is no regular file of a manifest's size (a FIFO, a link, a device, huge)."""


def _manifest_bytes(path: Path) -> bytes:
    """The manifest's bytes, never blocking: a FIFO put in its place would hang ``open`` or
    ``read`` (and every ``models`` command, start-up and ``asr eval`` with it)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO):  # a symbolic link; a socket
            raise _NotRegular("it is not a regular file") from None
        raise
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _NotRegular("it is not a regular file")
        content = file.read(MAX_MANIFEST_BYTES + 1)
    if len(content) > MAX_MANIFEST_BYTES:
        raise _NotRegular(f"it is larger than {MAX_MANIFEST_BYTES >> 20} MiB")
    return content


def write_manifest(root: Path, manifest: Manifest) -> None:
    """Atomically: a reader sees the old manifest or the new one."""
    temporary = root / f".{MANIFEST}.{secrets.token_hex(4)}"
    try:
        temporary.write_text(manifest.model_dump_json(indent=2) + "\n", encoding="utf-8")
        temporary.replace(root / MANIFEST)
    except OSError:
        with contextlib.suppress(OSError):  # a half-written temporary is no manifest; leave none
            temporary.unlink(missing_ok=True)
        raise


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- files -----------------------------------------------------------------------------------


def hash_file(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as file:
        while block := file.read(CHUNK):
            digest.update(block)
            size += len(block)
    return size, digest.hexdigest()


def stamp_of(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_size, info.st_mtime_ns


#: Files this process found intact where their stamp could not be recorded (a read-only models
#: directory): (path, size, mtime_ns, sha256). Unchanged since, they are not hashed again.
_verified_here: set[tuple[str, int, int, str]] = set()
#: Model directories whose stale stamp was already logged.
_warned_read_only: set[str] = set()


def file_problems(
    files_dir: Path,
    expected: dict[str, ManifestFile],
    *,
    rehash: bool,
    verified: Verified | None,
    seen: dict[str, tuple[int, int]] | None = None,
) -> list[str]:
    """Every way ``files_dir`` differs from ``expected``; empty when intact.

    Sizes always; sha256 when ``rehash`` or when a file changed since it was last verified (in the
    manifest, or by this process where the manifest could not record it). ``seen`` receives each
    checked file's size and mtime as they were before it was read.
    """
    problems = []
    try:
        present = {p.name for p in files_dir.iterdir()}
    except OSError as exc:
        return [f"{files_dir} cannot be read ({exc.strerror or exc})"]
    for extra in sorted(present - set(expected)):
        problems.append(f"{extra} is not one of the model's files")
    for name, want in sorted(expected.items()):
        path = files_dir / name
        if not path.is_file() or path.is_symlink():
            problems.append(f"{name} is missing")
            continue
        try:
            size, mtime = stamp_of(path)
            if size != want.size:
                problems.append(f"{name} has {size:,} bytes, not {want.size:,}")
                continue
            if seen is not None:
                seen[name] = (size, mtime)
            if not rehash and (
                (verified is not None and verified.stamp.get(name) == (size, mtime))
                or (str(path), size, mtime, want.sha256) in _verified_here
            ):
                continue
            if hash_file(path)[1] != want.sha256:
                problems.append(f"{name} does not have its recorded sha256")
        except OSError as exc:
            problems.append(f"{name} cannot be read ({exc.strerror or exc})")
    return problems


def fingerprint_of(manifest: Manifest) -> str:
    """``base.fingerprint`` of the model's files, from the manifest's digests (no file is read)."""
    digest = hashlib.sha256()
    for name in sorted(manifest.files):
        digest.update(f"{name}\0{manifest.files[name].sha256}\n".encode())
    return digest.hexdigest()


# --- installed models ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Installed:
    name: str
    root: Path
    manifest: Manifest | None
    #: Why the manifest cannot be used, when it cannot.
    problem: str | None = None

    @property
    def files_dir(self) -> Path:
        return self.root / FILES


def installed_models(models_dir: Path) -> list[Installed]:
    """Every installed model (staging and trash directories are not models)."""
    try:
        entries = sorted(models_dir.iterdir())
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ModelInvalid(
            f"{models_dir} cannot be read ({exc.strerror or exc}) (CTE1_ASR_MODELS_DIR)"
        ) from None
    found = []
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_dir() or not NAME.fullmatch(entry.name):
            continue
        try:
            found.append(Installed(entry.name, entry, read_manifest(entry)))
        except ModelInvalid as exc:
            found.append(Installed(entry.name, entry, None, exc.message))
    return found


def is_verified(model: Installed) -> bool:
    """Whether every file is as it was when last fully verified (sizes and mtimes; reads no content)."""
    manifest = model.manifest
    if manifest is None or manifest.verified is None:
        return False
    try:
        present = {p.name for p in model.files_dir.iterdir()}
        return present == set(manifest.files) and all(
            stamp_of(model.files_dir / name) == manifest.verified.stamp.get(name) for name in manifest.files
        )
    except OSError:
        return False


@dataclass(frozen=True, slots=True)
class Verification:
    problems: list[str]
    #: False when a failure could not be written to the manifest (a read-only models directory):
    #: its old stamp stays, so a server may still trust files whose size and mtime did not change.
    recorded: bool = True


def verify(model: Installed) -> list[str]:
    """Re-hash every file against the manifest; record the result (``verify_recorded``)."""
    return verify_recorded(model).problems


def verify_recorded(model: Installed) -> Verification:
    """Re-hash every file against the manifest and record the outcome. Intact: the stamp that lets
    start-up skip re-hashing. Not: the stamp is cleared, so start-up, ``check`` and ``asr eval``
    re-hash and refuse the model (damage that keeps a file's size and mtime would pass the stamp)."""
    if model.manifest is None:
        return Verification([model.problem or "no manifest"])
    problems = file_problems(model.files_dir, model.manifest.files, rehash=True, verified=None)
    if not problems:
        mark_verified(model.root, model.manifest)
    elif model.manifest.verified is not None:
        try:
            write_manifest(model.root, model.manifest.model_copy(update={"verified": None}))
        except OSError:
            return Verification(problems, recorded=False)
    return Verification(problems)


def mark_verified(root: Path, manifest: Manifest) -> Manifest:
    updated = verified_now(root, manifest)
    # A read-only models directory: the files are intact, only the shortcut is not recorded.
    with contextlib.suppress(OSError):
        write_manifest(root, updated)
    return updated


def restamp(model: Installed, seen: dict[str, tuple[int, int]]) -> None:
    """Record that the files of ``model``, just checked against its manifest, are intact (``seen``:
    their sizes and mtimes from before they were read), so the next check skips hashing them.

    For the server (start-up and every transcription): it never waits for a ``models`` command
    holding the install lock (the stamp is left to a later check), and writes only a manifest still
    the one checked: an install may have replaced the model meanwhile, and a ``verify`` found it
    damaged. Where the manifest cannot be written (a read-only models directory), or the lock cannot
    be taken (a file system without locks), this process remembers the files instead and says once
    how to record it.
    """
    manifest = model.manifest
    if manifest is None:
        return
    remembered = {(str(model.files_dir / name), *seen[name], manifest.files[name].sha256) for name in seen}
    if remembered <= _verified_here:
        return  # checked by this process before; the manifest could not record it then
    with _lock_if_free(model.root.parent) as (lock, why):
        if lock == "held":
            return  # an install or a `verify` runs: a later check stamps the files
        if lock == "unlockable":  # no manifest is written without the lock
            _remember(model, remembered, why)
            return
        try:
            if read_manifest(model.root) != manifest:
                return
            stamp = Verified(at=now(), stamp=dict(seen))
            write_manifest(model.root, manifest.model_copy(update={"verified": stamp}))
        except ModelInvalid:
            return
        except OSError as exc:
            _remember(model, remembered, f"{model.root / MANIFEST} cannot be written ({exc.strerror or exc})")


def _remember(model: Installed, remembered: set[tuple[str, int, int, str]], why: str) -> None:
    """``model``'s files, found intact, remembered by this process where their stamp cannot be
    recorded; said once per model."""
    _verified_here.update(remembered)
    if str(model.root) in _warned_read_only:
        return
    _warned_read_only.add(str(model.root))
    logger.warning(
        "the files of model %r are intact, but %s: its record of when they were verified is stale "
        "(copied without their modification times?), so each new process hashes the whole model once. "
        "Record it with `cte1-mcp models verify %s` where the models directory is writable (before it "
        "is mounted read-only)",
        model.name,
        why,
        model.name,
    )


# --- installing ------------------------------------------------------------------------------


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise ModelInvalid(
            f"{name[:80]!r} is not a model name: letters, digits, '.', '_' and '-', at most 64, "
            "starting with a letter or digit"
        )
    return name


@contextmanager
def install_lock(models_dir: Path) -> Iterator[None]:
    """One install at a time per models directory; then leftovers of interrupted ones are removed
    (nobody else can be using them while the lock is held)."""
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(models_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise not_writable(models_dir, exc) from None
    try:
        try:
            _wait_for(fd)
        except OSError as exc:  # a file system without file locks (some network or FUSE mounts)
            raise ModelInvalid(
                f"{models_dir / LOCK} cannot be locked ({exc.strerror or exc}); nothing was installed",
                next_step="Point CTE1_ASR_MODELS_DIR at a folder on a local disk (an install takes a file "
                "lock there, so that two never write one model), and run the command again.",
            ) from None
        for leftover in models_dir.iterdir():
            if leftover.name.startswith((STAGING_PREFIX, TRASH_PREFIX)):
                remove(leftover)
        yield
    finally:
        os.close(fd)


@contextmanager
def verify_lock(models_dir: Path) -> Iterator[None]:
    """The install lock, for ``models verify``: no install commits between its reading a manifest
    and its writing it back (it would write the old model's manifest over the new one). Where no
    lock file can be opened (no models directory yet, one mounted read-only) no install can run
    either: nothing is locked. Where it cannot be locked (a file system without locks), ``verify``
    says so on one line and goes ahead."""
    try:
        fd: int | None = _open_lock(models_dir)
    except OSError:
        fd = None
    try:
        if fd is not None:
            try:
                _wait_for(fd)
            except OSError as exc:  # not held (that one waits): flock is refused here
                print(
                    f"{models_dir / LOCK} cannot be locked ({exc.strerror or exc}): verifying without "
                    "the install lock (do not install models meanwhile)",
                    file=sys.stderr,
                    flush=True,
                )
        yield
    finally:
        if fd is not None:
            os.close(fd)


LockState = Literal["locked", "held", "unlockable"]


@contextmanager
def _lock_if_free(models_dir: Path) -> Iterator[tuple[LockState, str]]:
    """The install lock if nobody holds it, never waiting, and why not: ``locked`` (held by this;
    the lock file is created where missing, so an install starting meanwhile waits), ``held`` while
    an install or a ``verify`` runs, ``unlockable`` where it cannot be taken at all (no lock file can
    be opened, or flock is refused: a file system without locks, an NFS mount's read-only file)."""
    path = models_dir / LOCK
    try:
        fd = _open_lock(models_dir)
    except OSError as exc:
        yield "unlockable", f"{path} cannot be opened ({exc.strerror or exc})"
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            state: tuple[LockState, str] = ("locked", "")
        except BlockingIOError:
            state = ("held", "")
        except OSError as exc:
            state = ("unlockable", f"{path} cannot be locked ({exc.strerror or exc})")
        yield state
    finally:
        os.close(fd)


def _open_lock(models_dir: Path) -> int:
    """The lock file, opened for writing (created where missing) if it can be, else read-only: NFS
    locks only a file open for writing, a local file system either. Raises the read-only refusal."""
    path = models_dir / LOCK
    common = os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK  # never a link, never a FIFO's wait
    for writable in (os.O_RDWR | os.O_CREAT, os.O_RDWR):
        with contextlib.suppress(OSError):
            return os.open(path, writable | common, 0o644)
    return os.open(path, os.O_RDONLY | common)


def _wait_for(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("waiting for another `cte1-mcp models` command to finish…", file=sys.stderr, flush=True)
        fcntl.flock(fd, fcntl.LOCK_EX)


def not_writable(models_dir: Path, exc: OSError) -> ModelInvalid:
    """The models directory cannot take an install (read-only, not a folder, no permission, full)."""
    why = "it is not a folder" if models_dir.exists() and not models_dir.is_dir() else exc.strerror or exc
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        step = "Free some space there (or point CTE1_ASR_MODELS_DIR at a disk with room) and run the command again."
    else:
        step = "Point CTE1_ASR_MODELS_DIR at a folder you can write, or make this one writable, and run the command again."
    return ModelInvalid(
        f"{models_dir} cannot be written ({why}) (CTE1_ASR_MODELS_DIR); nothing was installed", next_step=step
    )


@contextmanager
def writing(models_dir: Path) -> Iterator[None]:
    """An install's writes into ``models_dir`` (a folder made, a file moved): a failure is the
    directory's (full, turned read-only), said as such, never a traceback."""
    try:
        yield
    except OSError as exc:
        raise not_writable(models_dir, exc) from None


def remove(path: Path) -> None:
    """Remove ``path`` whatever it is; a link is removed, never what it points to."""
    if path.is_symlink() or not path.is_dir():
        with contextlib.suppress(OSError):
            path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


@dataclass
class Staging:
    """A model being assembled beside its destination; ``commit`` renames it into place."""

    models_dir: Path
    name: str
    root: Path

    @property
    def files(self) -> Path:
        return self.root / FILES

    def commit(self, manifest: Manifest, *, force: bool) -> Path:
        with writing(self.models_dir):  # a full disk: the manifest is the last file written
            write_manifest(self.root, verified_now(self.root, manifest))
        destination = self.models_dir / self.name
        trash = None
        # lexists: a dangling symbolic link (to an unmounted disk, say) is in the way too
        if os.path.lexists(destination):
            if not force:
                raise already_there(self.models_dir, self.name)
            trash = self.models_dir / f"{TRASH_PREFIX}{self.name}-{secrets.token_hex(4)}"
            with writing(self.models_dir):
                destination.rename(trash)
        try:
            self.root.rename(destination)
        except OSError as exc:
            if trash is not None:  # the model that was there stays installed
                with contextlib.suppress(OSError):
                    trash.rename(destination)
            raise not_writable(self.models_dir, exc) from None
        if trash is not None:
            remove(trash)
        return destination


def already_there(models_dir: Path, name: str) -> ModelExists:
    """What refuses an install under ``name`` without ``--force``: a model, or anything else."""
    destination = models_dir / name
    if destination.is_symlink() and not destination.exists():
        return ModelExists(
            f"{destination} is a symbolic link to {destination.readlink()}, which does not exist "
            "(a disk not mounted?); nothing was installed",
            next_step="Mount what it points to, or run the command again with --force to replace the link "
            "with the model.",
        )
    return ModelExists(f"a model named {name!r} is already installed in {models_dir}")


def verified_now(root: Path, manifest: Manifest) -> Manifest:
    """``manifest`` recording its files, as they are now, as verified (they were just hashed)."""
    stamp = {name: stamp_of(root / FILES / name) for name in manifest.files}
    return manifest.model_copy(update={"verified": Verified(at=now(), stamp=stamp)})


@contextmanager
def staging(models_dir: Path, name: str) -> Iterator[Staging]:
    """A staging directory for ``name``, removed unless committed (an error, Ctrl-C)."""
    root = models_dir / f"{STAGING_PREFIX}{name}-{secrets.token_hex(4)}"
    try:
        (root / FILES).mkdir(parents=True)
    except OSError as exc:  # the lock file may exist in a folder that has since turned read-only
        remove(root)  # made before a full disk refused files/
        raise not_writable(models_dir, exc) from None
    try:
        yield Staging(models_dir, name, root)
    finally:
        if root.exists():
            shutil.rmtree(root, ignore_errors=True)
