"""Extracting a model archive without trusting it: every member is checked before anything is written.

``tarfile``'s ``data`` filter would do part of this, but it tolerates links inside the tree and
differs between Python patch releases; a model is a handful of regular files, so anything else
(an absolute name, ``..``, a link of either kind, a device, a name twice) refuses the whole archive.
"""

from __future__ import annotations

import lzma
import os
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO

from cte1_mcp.errors import ModelArchiveUnsafe, ModelInvalid
from cte1_mcp.transcribe.models import not_writable
from cte1_mcp.units import GiB

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
SUFFIXES = (*TAR_SUFFIXES, ".zip")
#: More than the largest model in the catalog many times over; a bigger archive is a mistake or a bomb.
MAX_EXTRACTED_BYTES = 64 * GiB
CHUNK = 1 << 20


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(SUFFIXES)


def extract(archive: Path, into: Path, *, models_dir: Path) -> None:
    """Extract ``archive`` into the empty directory ``into`` (in ``models_dir``), or raise
    ``ModelArchiveUnsafe`` having written nothing; ``ModelInvalid`` for a damaged archive, or for
    ``models_dir`` when a write fails (a full disk: ``models.not_writable``); the caller removes
    what was written."""
    with _members(archive) as members:
        plan = _plan(archive, members)
        for relative, opener in plan:
            target = into.joinpath(*relative.parts)
            with _reading(archive):
                source = opener()
            with source, _writing(models_dir):
                target.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                with os.fdopen(fd, "wb") as out:
                    while True:
                        with _reading(archive):
                            block = source.read(CHUNK)
                        if not block:
                            break
                        out.write(block)


def _plan(archive: Path, members: Iterator[Member]) -> list[tuple[PurePosixPath, Callable[[], IO[bytes]]]]:
    """Every regular file to extract, or a refusal before anything is written."""
    plan = []
    files: set[str] = set()
    #: Every folder the extraction makes (named, or holding a file), and the member that made it.
    folders: dict[str, str] = {}
    total = 0
    for name, kind, size, opener in members:
        relative = _safe_name(name, archive)
        if relative == PurePosixPath("."):
            if kind == "dir":
                continue
            raise ModelArchiveUnsafe(f"{archive.name}: member {name[:200]!r} has no file name")
        if kind not in ("file", "dir"):
            raise ModelArchiveUnsafe(f"{archive.name}: member {name[:200]!r} is a {kind}, not a regular file")
        key = relative.as_posix()
        # `x` a file and `x/y` a member: one name cannot be both (extracting would fail half-way).
        for parent in (p.as_posix() for p in relative.parents if p != PurePosixPath(".")):
            if parent in files:
                raise _both(archive, name, parent)
            folders.setdefault(parent, name)
        if kind == "dir":
            if key in files:
                raise _both(archive, name, key)
            folders.setdefault(key, name)
            continue
        if key in folders:
            raise _both(archive, name, folders[key])
        if key in files:
            raise ModelArchiveUnsafe(f"{archive.name}: member {name[:200]!r} appears twice")
        files.add(key)
        total += size
        if total > MAX_EXTRACTED_BYTES:
            raise ModelArchiveUnsafe(
                f"{archive.name} would extract to more than {MAX_EXTRACTED_BYTES // GiB} GiB"
            )
        plan.append((relative, opener))
    return plan


def _both(archive: Path, name: str, other: str) -> ModelArchiveUnsafe:
    return ModelArchiveUnsafe(
        f"{archive.name}: member {name[:200]!r} and {other[:200]!r} make one name both a file and a folder"
    )


#: What reading a damaged or unsupported archive raises, beyond ``tarfile``'s and ``zipfile``'s own
#: errors: the decompressors' (gzip's CRC check is an ``OSError``), a stream cut short, and
#: ``zipfile``'s refusals of a method or an encryption it cannot extract.
_UNREADABLE = (
    tarfile.TarError,
    zipfile.BadZipFile,
    EOFError,
    OSError,
    zlib.error,
    lzma.LZMAError,
    NotImplementedError,
    RuntimeError,
)
_DAMAGED_NEXT = (
    "The archive is damaged or cut short: get a fresh copy (download it again and compare it with "
    "the publisher's checksum), or import the unpacked model folder."
)
_UNEXTRACTABLE_NEXT = (
    "Re-create the archive with ordinary deflate and no password (`zip -r`, or `tar czf`), or import "
    "the unpacked model folder."
)


def _unreadable(archive: Path, exc: BaseException) -> ModelInvalid:
    if isinstance(exc, OSError) and exc.errno is not None:  # the file system's, not the content's
        return ModelInvalid(
            f"{archive} cannot be read ({exc.strerror or exc})",
            next_step="Check that the archive can be read (permissions, the disk), then run the command again.",
        )
    if isinstance(exc, NotImplementedError | RuntimeError):  # a method or encryption zipfile lacks
        return ModelInvalid(f"{archive} cannot be extracted ({exc})", next_step=_UNEXTRACTABLE_NEXT)
    return ModelInvalid(f"{archive} is not a readable archive ({exc})", next_step=_DAMAGED_NEXT)


@contextmanager
def _reading(archive: Path) -> Iterator[None]:
    try:
        yield
    except _UNREADABLE as exc:
        raise _unreadable(archive, exc) from None


@contextmanager
def _writing(models_dir: Path) -> Iterator[None]:
    try:
        yield
    except OSError as exc:  # a full disk, say: not the archive's fault, said as every install step says it
        raise not_writable(models_dir, exc) from None


#: What an archiver adds beside the content: macOS Finder's resource forks (``__MACOSX/``).
ARCHIVER_NOISE = frozenset({"__MACOSX"})


def is_noise(name: str) -> bool:
    """An entry no model is made of: an archiver's extra folder, or a dot-file (``.DS_Store``)."""
    return name in ARCHIVER_NOISE or name.startswith(".")


def single_folder(root: Path) -> Path:
    """The folder holding the model: ``root``, or its one subfolder when that is all it holds (the
    usual ``name/...`` archive layout), not counting what archivers and file browsers add."""
    entries = [entry for entry in root.iterdir() if not is_noise(entry.name)]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return root


#: name, kind ("file", "dir", "link", ...), size, and what opens its content (only after every
#: member was checked).
Member = tuple[str, str, int, Callable[[], IO[bytes]]]


@contextmanager
def _members(archive: Path) -> Iterator[Iterator[Member]]:
    with _reading(archive):
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zipped:
                yield _zip_members(zipped, archive)
        else:
            with tarfile.open(archive, mode="r:*") as tarred:
                yield _tar_members(tarred)


def _tar_members(tarred: tarfile.TarFile) -> Iterator[Member]:
    infos = tarred.getmembers()
    # tarfile stops at the end-of-archive block, short of the gzip/xz trailer: read on to it, so its
    # checksum is checked before anything is written (damage in stored blocks passes otherwise).
    assert tarred.fileobj is not None
    while tarred.fileobj.read(CHUNK):
        pass
    for info in infos:
        if info.isdir():
            kind = "dir"
        elif info.isreg():
            kind = "file"
        elif info.issym() or info.islnk():
            kind = "link"
        else:
            kind = "device or other special file"

        def opener(info: tarfile.TarInfo = info) -> IO[bytes]:
            content = tarred.extractfile(info)
            assert content is not None  # a regular file's
            return content

        yield info.name, kind, info.size, opener


#: The methods ``zipfile`` extracts (not Deflate64, method 9, which Windows uses for large files).
_ZIP_METHODS = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA})
_ZIP_METHOD_NAMES = {6: "implode", 9: "Deflate64", 93: "Zstandard", 98: "PPMd", 99: "AES encryption"}


def _zip_members(zipped: zipfile.ZipFile, archive: Path) -> Iterator[Member]:
    for info in zipped.infolist():
        # Unix zips keep the file type in the high bits; others (and Python's writestr) leave it 0.
        file_type = stat.S_IFMT(info.external_attr >> 16)
        if file_type == stat.S_IFLNK:
            kind = "link"
        elif info.is_dir():
            kind = "dir"
        elif file_type in (0, stat.S_IFREG):
            kind = "file"
        else:
            kind = "device or other special file"
        if kind == "file":
            _check_extractable(info, archive)

        def opener(info: zipfile.ZipInfo = info) -> IO[bytes]:
            return zipped.open(info)

        yield info.filename, kind, info.file_size, opener


def _check_extractable(info: zipfile.ZipInfo, archive: Path) -> None:
    """Refused while planning, before anything is written: ``zipfile`` would fail half-way."""
    name = info.filename[:200]
    if info.flag_bits & 0x1:
        raise ModelInvalid(
            f"{archive.name}: member {name!r} is encrypted (password-protected); it cannot be extracted",
            next_step=_UNEXTRACTABLE_NEXT,
        )
    if info.compress_type not in _ZIP_METHODS:
        method = _ZIP_METHOD_NAMES.get(info.compress_type, "not one zipfile knows")
        raise ModelInvalid(
            f"{archive.name}: member {name!r} is compressed with method {info.compress_type} ({method}), "
            "which cannot be extracted here",
            next_step=_UNEXTRACTABLE_NEXT,
        )


def _safe_name(name: str, archive: Path) -> PurePosixPath:
    """The member's path relative to the extraction root, or a refusal."""
    if not name or "\\" in name or "\0" in name:
        raise ModelArchiveUnsafe(f"{archive.name}: member name {name[:200]!r} is not a plain relative path")
    path = PurePosixPath(name)
    if path.is_absolute() or (path.parts and path.parts[0].endswith(":")):
        raise ModelArchiveUnsafe(f"{archive.name}: member {name[:200]!r} has an absolute path")
    if ".." in path.parts:
        raise ModelArchiveUnsafe(f"{archive.name}: member {name[:200]!r} climbs out of the archive ('..')")
    parts = [part for part in path.parts if part not in (".", "")]
    if not parts:
        return PurePosixPath(".")
    return PurePosixPath(*parts)
