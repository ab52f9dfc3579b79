"""Extracting a model archive without trusting it: every member is checked before anything is written.

``tarfile``'s ``data`` filter would do part of this, but it tolerates links inside the tree and
differs between Python patch releases; a model is a handful of regular files, so anything else
(an absolute name, ``..``, a link of either kind, a device, a name twice) refuses the whole archive.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO

from cte1_mcp.errors import ModelArchiveUnsafe, ModelInvalid
from cte1_mcp.units import GiB

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
SUFFIXES = (*TAR_SUFFIXES, ".zip")
#: More than the largest model in the catalog many times over; a bigger archive is a mistake or a bomb.
MAX_EXTRACTED_BYTES = 64 * GiB


def is_archive(path: Path) -> bool:
    return path.name.lower().endswith(SUFFIXES)


def extract(archive: Path, into: Path) -> None:
    """Extract ``archive`` into the empty directory ``into``, or raise ``ModelArchiveUnsafe`` having
    written nothing."""
    with _members(archive) as members:
        plan = []
        seen: set[str] = set()
        total = 0
        for name, kind, size, opener in members:
            relative = _safe_name(name, archive)
            if kind == "dir":
                continue
            if relative == PurePosixPath("."):
                raise ModelArchiveUnsafe(f"{archive.name}: member {name[:200]!r} has no file name")
            if kind != "file":
                raise ModelArchiveUnsafe(
                    f"{archive.name}: member {name[:200]!r} is a {kind}, not a regular file"
                )
            key = relative.as_posix()
            if key in seen:
                raise ModelArchiveUnsafe(f"{archive.name}: member {name[:200]!r} appears twice")
            seen.add(key)
            total += size
            if total > MAX_EXTRACTED_BYTES:
                raise ModelArchiveUnsafe(
                    f"{archive.name} would extract to more than {MAX_EXTRACTED_BYTES // GiB} GiB"
                )
            plan.append((relative, opener))
        try:
            for relative, opener in plan:
                target = into.joinpath(*relative.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                with os.fdopen(fd, "wb") as out, opener() as source:
                    shutil.copyfileobj(source, out, 1 << 20)
        except OSError as exc:  # a full disk, say: not the archive's fault
            raise ModelInvalid(f"extracting {archive.name} failed ({exc.strerror or exc})") from None


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
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zipped:
                yield _zip_members(zipped)
        else:
            with tarfile.open(archive, mode="r:*") as tarred:
                yield _tar_members(tarred)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelInvalid(f"{archive} is not a readable archive ({exc})") from None
    except OSError as exc:
        raise ModelInvalid(f"{archive} cannot be read ({exc.strerror or exc})") from None


def _tar_members(tarred: tarfile.TarFile) -> Iterator[Member]:
    for info in tarred.getmembers():
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


def _zip_members(zipped: zipfile.ZipFile) -> Iterator[Member]:
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

        def opener(info: zipfile.ZipInfo = info) -> IO[bytes]:
            return zipped.open(info)

        yield info.filename, kind, info.file_size, opener


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
