"""``cte1-mcp models`` and the server's model check where something else is going on: a ``verify``
racing an install, a read-only models directory whose stamps are stale, a full disk, a dangling link
under a model's name, a FIFO for a manifest, a hub whose download never ends. Real processes, real
files, real locks and mounts.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import struct
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from cte1_mcp.transcribe import configured, models
from cte1_mcp.transcribe.configured import resolve
from cte1_mcp.transcribe.models import installed_models, is_verified
from tests.helpers.fake_hub import FakeHub, Fault, HubFile, running_hub
from tests.helpers.namespaces import needs_mounts
from tests.test_transcribe_models import (
    REPO,
    REVISION,
    ROOT,
    cli,
    environment,
    failed_with,
    nothing_installed,
    tiny_bytes,
    tiny_files,
    unprivileged,
    write_catalog,
    write_model,
)


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """``tiny-hub``, pinned to the fake hub's files (as in test_transcribe_models)."""
    return write_catalog(tmp_path / "catalog.json", tiny_files())


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with running_hub(FakeHub(REPO, REVISION, tiny_files())) as running:
        yield running


def child(argv: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``argv`` run from the checkout, its output captured, no stdin."""
    return subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def command(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return child([sys.executable, "-m", "cte1_mcp", *args], env, timeout)


def padded(folder: Path, pad: bytes) -> Path:
    """The tiny model plus ``pad.bin``: two installs of it differ only there."""
    return write_model(folder, {**tiny_bytes(), "pad.bin": pad})


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def manifest_of(models_dir: Path, name: str) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((models_dir / name / "manifest.json").read_text())
    return loaded


# --- 1. `verify` and an install: one at a time -------------------------------------------------

#: ``models verify m``, paused (until a line on stdin) at the first call of ``models.<point>``:
#: ``hash_file`` (manifests read, nothing re-hashed yet) or ``mark_verified`` (re-hashed, stamp
#: not yet written). It says "paused" on stderr once there.
PAUSED_VERIFY = """
import sys
import cte1_mcp.transcribe.models as models
from cte1_mcp.cli import main

point = sys.argv[1]
real = getattr(models, point)
paused = []

def hook(*args, **kwargs):
    if not paused:
        paused.append(True)
        print("paused", file=sys.stderr, flush=True)
        sys.stdin.readline()
    return real(*args, **kwargs)

setattr(models, point, hook)
main(args=["models", "verify", "m"], prog_name="cte1-mcp")
"""


class Lines:
    """A child's stream read line by line in a thread, to wait for a line without a fixed sleep."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.ended = False
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            with self.changed:
                self.lines.append(line)
                self.changed.notify_all()
        with self.changed:
            self.ended = True
            self.changed.notify_all()

    def wait_for(self, text: str, timeout: float = 60) -> bool:
        """Whether a line holding ``text`` came before the stream ended (or ``timeout``)."""
        with self.changed:
            self.changed.wait_for(lambda: self.ended or any(text in line for line in self.lines), timeout)
            return any(text in line for line in self.lines)

    @property
    def text(self) -> str:
        with self.changed:
            return "".join(self.lines)


@pytest.mark.parametrize("point", ["hash_file", "mark_verified"])
def test_an_install_waits_for_a_running_verify_and_keeps_its_own_manifest(
    tmp_path: Path, models_dir: Path, point: str
) -> None:
    # Before: verify took no lock. An install committing after verify read the old manifest got it
    # written back over its own (hash_file: the new model then refused as failing its checks;
    # mark_verified: the old manifest stamped verified on the new files).
    env = environment(models_dir)
    old, new = b"A" * 1000, b"B" * 1000
    assert command(env, "models", "import", "m", str(padded(tmp_path / "a", old))).returncode == 0
    verify = subprocess.Popen(
        [sys.executable, "-c", PAUSED_VERIFY, point],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    install = None
    try:
        assert verify.stderr is not None and verify.stdin is not None
        verify_err = Lines(verify.stderr)
        assert verify_err.wait_for("paused"), verify_err.text
        install = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cte1_mcp",
                "models",
                "import",
                "m",
                str(padded(tmp_path / "b", new)),
                "--force",
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert install.stderr is not None
        install_err = Lines(install.stderr)
        waited = install_err.wait_for("waiting for another `cte1-mcp models` command to finish")
        assert waited, f"the install went ahead while verify held the model: {install_err.text}"
        assert install.poll() is None
        verify.stdin.write("\n")
        verify.stdin.close()
        assert verify.wait(timeout=60) == 0, verify_err.text
        assert install.wait(timeout=120) == 0, install_err.text
    finally:
        for process in (verify, install):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    manifest = manifest_of(models_dir, "m")
    files = manifest["files"]
    assert isinstance(files, dict)
    assert files["pad.bin"]["sha256"] == sha256(new)
    assert (models_dir / "m" / "files" / "pad.bin").read_bytes() == new
    assert str(tmp_path / "b") in json.dumps(manifest["source"])
    assert command(env, "models", "verify", "m").returncode == 0


def test_the_servers_stamp_never_waits_for_a_models_command(tmp_path: Path, models_dir: Path) -> None:
    # Before: the server's re-stamp took no lock: it wrote the manifest while `verify` or an
    # install held the models directory.
    env = environment(models_dir)
    assert command(env, "models", "import", "m", str(padded(tmp_path / "a", b"A" * 1000))).returncode == 0
    pad = models_dir / "m" / "files" / "pad.bin"
    os.utime(pad, ns=(pad.stat().st_atime_ns, pad.stat().st_mtime_ns + 10**9))  # a stale stamp
    before = (models_dir / "m" / "manifest.json").read_bytes()
    fd = os.open(models_dir / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as `models verify` or an install holds it
        outcome: list[object] = []
        worker = threading.Thread(target=lambda: outcome.append(resolve("m", models_dir)), daemon=True)
        worker.start()
        worker.join(timeout=60)
        assert not worker.is_alive(), "the server waited for the install lock"
        assert outcome, "resolve failed"
        assert (models_dir / "m" / "manifest.json").read_bytes() == before  # not written meanwhile
    finally:
        os.close(fd)
    resolved = resolve("m", models_dir)  # the lock is free: the stamp is renewed
    assert resolved.manifest is not None
    assert (models_dir / "m" / "manifest.json").read_bytes() != before
    [model] = [m for m in installed_models(models_dir) if m.name == "m"]
    assert is_verified(model)


def test_the_servers_stamp_is_not_written_over_a_model_installed_meanwhile(
    tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: a model installed between the server's check and its stamp got the old manifest
    # back, stamped verified on the new files.
    env = environment(models_dir)
    new = b"B" * 1000
    assert command(env, "models", "import", "m", str(padded(tmp_path / "a", b"A" * 1000))).returncode == 0
    pad = models_dir / "m" / "files" / "pad.bin"
    os.utime(pad, ns=(pad.stat().st_atime_ns, pad.stat().st_mtime_ns + 10**9))  # a stale stamp
    real_is_verified = configured.is_verified
    installed: list[bytes] = []

    def install_meanwhile(model: configured.Installed) -> bool:
        """Called after the files were checked, before the stamp: the install commits here."""
        done = command(env, "models", "import", "m", str(padded(tmp_path / "b", new)), "--force")
        assert done.returncode == 0, done.stderr
        installed.append((models_dir / "m" / "manifest.json").read_bytes())
        return real_is_verified(model)

    monkeypatch.setattr(configured, "is_verified", install_meanwhile)
    resolve("m", models_dir)
    assert installed
    assert (models_dir / "m" / "manifest.json").read_bytes() == installed[0]
    monkeypatch.setattr(configured, "is_verified", real_is_verified)
    assert command(env, "models", "verify", "m").returncode == 0


#: Whether another process can take ``$1`` (the install lock) now: held, free or absent.
PROBE_LOCK = """
import fcntl, os, sys
try:
    fd = os.open(sys.argv[1], os.O_RDONLY)
except FileNotFoundError:
    print("absent")
    raise SystemExit
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("free")
except BlockingIOError:
    print("held")
"""


def test_the_servers_stamp_creates_the_missing_lock_file_and_holds_it_while_writing(
    tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: without a .lock the stamp was written unlocked, so an install starting meanwhile
    # could get the old model's manifest written into the new one.
    env = environment(models_dir)
    assert command(env, "models", "import", "m", str(padded(tmp_path / "a", b"A" * 1000))).returncode == 0
    (models_dir / ".lock").unlink()  # a models directory made by hand, or an older version
    pad = models_dir / "m" / "files" / "pad.bin"
    os.utime(pad, ns=(pad.stat().st_atime_ns, pad.stat().st_mtime_ns + 10**9))  # a stale stamp
    real_write = models.write_manifest
    probed: list[str] = []

    def probing_write(root: Path, manifest: models.Manifest) -> None:
        probe = [sys.executable, "-c", PROBE_LOCK, str(models_dir / ".lock")]
        probed.append(subprocess.run(probe, capture_output=True, text=True, timeout=60).stdout.strip())
        real_write(root, manifest)

    monkeypatch.setattr(models, "write_manifest", probing_write)
    resolve("m", models_dir)
    assert probed == ["held"]  # another process's flock fails while the stamp is written
    [model] = [m for m in installed_models(models_dir) if m.name == "m"]
    assert is_verified(model)


#: ``fcntl.flock`` refused on the install lock (only there) with EBADF, as NFS refuses a file
#: opened read-only: no NFS mount can be made here, so this corner is reached by replacing flock.
REFUSING_FLOCK = """
import errno, fcntl, os, sys

real_flock = fcntl.flock

def flock(fd, operation):
    if os.readlink(f"/proc/self/fd/{fd}") == sys.argv[1]:
        raise OSError(errno.EBADF, os.strerror(errno.EBADF))
    return real_flock(fd, operation)

fcntl.flock = flock
"""


def with_lock_refused(env: dict[str, str], models_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``cte1-mcp ARGS`` in a child whose flock on the models directory's lock file fails (EBADF)."""
    script = (
        REFUSING_FLOCK + f"from cte1_mcp.cli import main\nmain(args={list(args)!r}, prog_name='cte1-mcp')\n"
    )
    return child([sys.executable, "-c", script, str(models_dir / ".lock")], env)


def test_a_lock_refused_by_the_file_system_is_remembered_and_never_written_unlocked(
    tmp_path: Path, models_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An NFS mount refuses flock (EBADF) on a lock file opened read-only; flock is replaced here
    (only for the lock file) because no NFS mount can be made in the tests.

    Before: any refusal counted as "held", so the stamp was never written nor the files remembered:
    every transcription hashed the whole model again."""
    env = environment(models_dir)
    assert command(env, "models", "import", "m", str(padded(tmp_path / "a", b"A" * 1000))).returncode == 0
    pad = models_dir / "m" / "files" / "pad.bin"
    os.utime(pad, ns=(pad.stat().st_atime_ns, pad.stat().st_mtime_ns + 10**9))  # a stale stamp
    before = (models_dir / "m" / "manifest.json").read_bytes()
    real_flock = fcntl.flock
    lock = str(models_dir / ".lock")

    def refusing_flock(fd: int, operation: int) -> None:
        if isinstance(fd, int) and str(Path(f"/proc/self/fd/{fd}").readlink()) == lock:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", refusing_flock)
    hashed: list[Path] = []
    real_hash = models.hash_file

    def counting_hash(path: Path) -> tuple[int, str]:
        hashed.append(path)
        return real_hash(path)

    monkeypatch.setattr(models, "hash_file", counting_hash)
    with caplog.at_level(logging.WARNING, logger=models.__name__):
        for _ in range(3):
            resolve("m", models_dir)
    assert (models_dir / "m" / "manifest.json").read_bytes() == before  # never written unlocked
    assert [p.name for p in hashed] == ["pad.bin"]  # the first time only: remembered since
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert f"{models_dir / '.lock'} cannot be locked (Bad file descriptor)" in warnings[0]
    assert "`cte1-mcp models verify m`" in warnings[0]


def test_verify_where_the_file_system_refuses_the_lock_says_so_and_verifies(
    tmp_path: Path, models_dir: Path
) -> None:
    """flock refused (EBADF, as on a read-only NFS mount) is reached by replacing flock for the
    lock file only: no NFS mount can be made in the tests.

    Before: a traceback (only BlockingIOError was expected from flock)."""
    env = environment(models_dir)
    assert command(env, "models", "import", "m", str(padded(tmp_path / "a", b"A" * 1000))).returncode == 0
    done = with_lock_refused(env, models_dir, "models", "verify", "m")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    said = (
        f"{models_dir / '.lock'} cannot be locked (Bad file descriptor): verifying without the install lock"
    )
    assert [line for line in done.stderr.splitlines() if said in line], done.stderr
    assert "m: ok" in done.stdout


def test_an_install_where_the_file_system_refuses_the_lock_is_refused_saying_so(
    tmp_path: Path, models_dir: Path
) -> None:
    """flock refused (EBADF), reached by replacing flock for the lock file only, as above.

    Before: a traceback, and nothing said about why."""
    env = environment(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    source = padded(tmp_path / "a", b"A" * 1000)
    done = with_lock_refused(env, models_dir, "models", "import", "m", str(source))
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert f"[model_invalid] {models_dir / '.lock'} cannot be locked (Bad file descriptor)" in done.stderr
    assert "local disk" in done.stderr
    assert not (models_dir / "m").exists()


# --- 2. a read-only models directory with stale stamps ------------------------------------------

#: Resolves the model three times; prints the bytes this process read (/proc/self/io's rchar)
#: during each: hashing the model reads all of it.
RESOLVE_THRICE = """
import logging, sys
from pathlib import Path
from cte1_mcp.transcribe.configured import resolve

logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s")

def rchar():
    with open("/proc/self/io") as io:
        return int(next(line for line in io if line.startswith("rchar:")).split()[1])

for _ in range(3):
    before = rchar()
    resolve(sys.argv[2], Path(sys.argv[1]))
    print(rchar() - before, flush=True)
"""


def test_a_read_only_copy_with_stale_stamps_is_hashed_once_per_process(
    tmp_path: Path, models_dir: Path
) -> None:
    # Before: the stamp could not be written, silently, so every resolve (start-up, then before
    # each get_call_transcript) hashed the whole model again.
    env = environment(models_dir)
    pad = os.urandom(4 << 20)
    assert command(env, "models", "import", "m", str(padded(tmp_path / "a", pad))).returncode == 0
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(models_dir), str(copy)], check=True)  # new mtimes: stamps stale
    (copy / "m").chmod(0o555)
    try:
        done = child(unprivileged([sys.executable, "-c", RESOLVE_THRICE, str(copy), "m"]), env)
    finally:
        (copy / "m").chmod(0o755)
    assert done.returncode == 0, done.stderr
    first, second, third = (int(n) for n in done.stdout.split())
    assert first >= len(pad)  # hashed once
    assert second < len(pad) // 4 and third < len(pad) // 4, (first, second, third)
    warnings = [line for line in done.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, done.stderr
    assert "cannot be written" in warnings[0]
    assert "`cte1-mcp models verify m` where the models directory is writable" in warnings[0]


# --- 3. the install's last steps: a full disk, a dangling link ----------------------------------


@pytest.mark.parametrize("force", [False, True])
def test_a_dangling_link_under_the_name_is_said_so_and_force_replaces_it(
    tmp_path: Path, models_dir: Path, force: bool
) -> None:
    # Before: a NotADirectoryError traceback from the final rename (exists() is False for a
    # dangling link), with or without --force.
    env = environment(models_dir)
    models_dir.mkdir()
    link = models_dir / "big"
    link.symlink_to(tmp_path / "unmounted-disk" / "big")
    source = write_model(tmp_path / "tiny", tiny_bytes())
    done = command(env, "models", "import", "big", str(source), *(["--force"] if force else []))
    if not force:
        failed_with(done, "model_exists")
        assert (
            f"{link} is a symbolic link to {tmp_path / 'unmounted-disk' / 'big'}, which does not exist"
            in done.stderr
        )
        assert "--force" in done.stderr
        assert link.is_symlink()
        assert sorted(p.name for p in models_dir.iterdir()) == [".lock", "big"]
        return
    assert done.returncode == 0, done.stderr
    assert not link.is_symlink() and (link / "manifest.json").is_file()
    assert sorted(p.name for p in models_dir.iterdir()) == [".lock", "big"]  # no trash left
    assert command(env, "models", "verify", "big").returncode == 0


def test_pull_replaces_a_dangling_link_under_the_name(
    hub: FakeHub, tmp_path: Path, models_dir: Path, catalog: Path
) -> None:
    # Before: a NotADirectoryError traceback from the final rename.
    env = environment(models_dir, hub.url)
    models_dir.mkdir()
    (models_dir / "tiny-hub").symlink_to(tmp_path / "unmounted-disk" / "tiny-hub")
    done = cli(catalog, env, "models", "pull", "tiny-hub")
    assert done.returncode == 0, done.stderr
    assert not (models_dir / "tiny-hub").is_symlink()
    assert sorted(p.name for p in models_dir.iterdir()) == [".lock", "tiny-hub"]


#: ``$0``: the models directory, a tmpfs of its own in a private mount namespace (``$1``: its
#: options); then the command; then what is left in it, after a line ``LEFT``.
ON_SMALL_TMPFS = (
    'mount -t tmpfs -o "$1" tmpfs "$0" && shift && "$@"; status=$?; echo LEFT; ls -A "$0"; exit $status'
)


def on_tmpfs(
    models_dir: Path, options: str, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """``args`` (a command) with ``models_dir`` a small tmpfs; what it left there."""
    argv = [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        ON_SMALL_TMPFS,
        str(models_dir),
        options,
        *args,
    ]
    done = child(argv, environment(models_dir) if env is None else env)
    left = done.stdout.split("LEFT\n", 1)[1].split()
    return done, left


def import_on_tmpfs(
    models_dir: Path, options: str, source: Path
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    return on_tmpfs(
        models_dir, options, sys.executable, "-m", "cte1_mcp", "models", "import", "m", str(source)
    )


def not_refused_as_full(
    done: subprocess.CompletedProcess[str], models_dir: Path, source: Path, left: list[str]
) -> str | None:
    """What is wrong with how the install said the disk was full, if anything."""
    said = (
        f"[model_invalid] {models_dir} cannot be written (No space left on device) (CTE1_ASR_MODELS_DIR); "
        "nothing was installed"
    )
    last_lines = " | ".join(done.stderr.strip().splitlines()[-2:])
    if (
        done.returncode != 1
        or "Traceback" in done.stderr
        or said not in done.stderr
        or str(source) in done.stderr
    ):
        return f"exit {done.returncode}: {last_lines}"
    if "Next: Free some space there" not in done.stderr:
        return f"another next step: {last_lines}"
    if left not in ([], [".lock"]):  # no staging folder, no model
        return f"left behind: {left}"
    return None


@needs_mounts
def test_a_full_models_directory_at_any_step_of_an_install_is_said_so(
    tmp_path: Path, models_dir: Path
) -> None:
    # Before: ENOSPC creating the manifest was a traceback (exit 1, no [code]); creating a copied
    # file blamed the source ("<source file> cannot be copied") with a next step about model files.
    source = padded(tmp_path / "src", b"P" * 1000)
    models_dir.mkdir()
    wrong: dict[int, str] = {}
    refusals = 0
    for inodes in range(2, 30):  # the disk runs out of inodes one step later each time
        done, left = import_on_tmpfs(models_dir, f"size=4m,nr_inodes={inodes}", source)
        if done.returncode == 0:
            break
        refusals += 1
        problem = not_refused_as_full(done, models_dir, source, left)
        if problem is not None:
            wrong[inodes] = problem
    else:
        pytest.fail("the import never fitted")
    assert wrong == {}
    assert refusals >= 6  # the lock, the staging folders, each of the 5 files, the manifest
    assert sorted(left) == [".lock", "m"]


@needs_mounts
def test_a_disk_that_fills_while_a_file_is_copied_blames_the_models_directory(
    tmp_path: Path, models_dir: Path
) -> None:
    # Before: "[model_invalid] <source>/pad.bin cannot be copied (No space left on device)".
    source = padded(tmp_path / "src", os.urandom(1 << 20))
    models_dir.mkdir()
    done, left = import_on_tmpfs(models_dir, "size=256k", source)
    assert not_refused_as_full(done, models_dir, source, left) is None


@needs_mounts
def test_a_disk_that_fills_while_an_archive_is_extracted_blames_the_models_directory(
    tmp_path: Path, models_dir: Path
) -> None:
    # Before: "[model_invalid] extracting src.tar failed (No space left on device)", with a next
    # step about free space and permissions.
    folder = padded(tmp_path / "src", os.urandom(1 << 20))
    source = tmp_path / "src.tar"
    with tarfile.open(source, "w") as tar:
        tar.add(folder, arcname="src")
    models_dir.mkdir()
    done, left = import_on_tmpfs(models_dir, "size=256k", source)
    assert not_refused_as_full(done, models_dir, source, left) is None
    assert "extracting src.tar" in done.stderr  # it failed there, not before


def whisper_header(layers: int, heads: int) -> bytes:
    """A CTranslate2 model.bin (format 6) holding only what its header says of the decoder: enough
    for an install to fit config.json's alignment_heads to it; it does not load."""

    def text(value: str) -> bytes:
        encoded = value.encode() + b"\0"
        return struct.pack("<H", len(encoded)) + encoded

    def variable(name: str, shape: list[int], kind: int, data: bytes) -> bytes:
        dims = b"".join(struct.pack("<I", n) for n in shape)
        return text(name) + struct.pack("<B", len(shape)) + dims + struct.pack("<BI", kind, len(data)) + data

    found = [
        variable("decoder/num_heads", [], 3, struct.pack("<i", heads)),  # 3: int32
        variable("decoder/embeddings/weight", [100, 8], 0, b""),
        *(variable(f"decoder/layer_{n}/x", [1], 0, b"") for n in range(layers)),
    ]
    return struct.pack("<I", 6) + text("WhisperSpec") + struct.pack("<II", 1, len(found)) + b"".join(found)


@needs_mounts
def test_a_full_models_directory_while_config_json_is_rewritten_is_said_so(
    tmp_path: Path, models_dir: Path
) -> None:
    # Before: "[model_invalid] config.json of m cannot be rewritten (No space left on device);
    # nothing was installed", with no next step.
    source = write_model(
        tmp_path / "whisper",
        {
            "model.bin": whisper_header(layers=2, heads=4),
            "config.json": json.dumps({"alignment_heads": [[16, 0]]}).encode(),  # not this decoder's
            "tokenizer.json": b"{}",
            "vocabulary.json": b"[]",
        },
    )
    models_dir.mkdir()
    wrong: dict[int, str] = {}
    for inodes in range(2, 30):  # the disk runs out of inodes one step later each time
        done, left = import_on_tmpfs(models_dir, f"size=4m,nr_inodes={inodes}", source)
        if done.returncode == 0 or "do not load with faster-whisper" in done.stderr:
            break  # past the rewrite: installed, or refused by the test load (model.bin is a header)
        problem = not_refused_as_full(done, models_dir, source, left)
        if problem is not None:
            wrong[inodes] = problem
    else:
        pytest.fail("the import never got past the rewrite")
    assert "its alignment_heads were set to" in done.stderr  # the rewrite was among the steps
    assert wrong == {}


@needs_mounts
def test_a_disk_that_fills_during_a_pull_blames_the_models_directory(
    tmp_path: Path, models_dir: Path
) -> None:
    # Before: "[model_download_failed] downloading pad.bin ... failed (OSError: [Errno 28] No space
    # left on device)", with a next step about the network.
    files = {**tiny_files(), "pad.bin": HubFile(os.urandom(1 << 20))}
    catalog = write_catalog(tmp_path / "catalog.json", files)
    models_dir.mkdir()
    with running_hub(FakeHub(REPO, REVISION, files)) as hub:
        args = [
            sys.executable,
            "-m",
            "tests.helpers.models_child",
            str(catalog),
            "models",
            "pull",
            "tiny-hub",
        ]
        done, left = on_tmpfs(models_dir, "size=256k", *args, env=environment(models_dir, hub.url))
    assert not_refused_as_full(done, models_dir, tmp_path / "nothing", left) is None
    assert "[model_download_failed]" not in done.stderr


# --- 4. a manifest that is not a regular file ---------------------------------------------------


def test_a_fifo_for_a_manifest_makes_the_model_unusable_without_waiting(
    tmp_path: Path, models_dir: Path
) -> None:
    # Before: `models list`, `models verify` and `asr eval` hung reading the FIFO.
    env = environment(models_dir, CTE1_ASR_MODEL="m")
    assert (
        command(env, "models", "import", "m", str(write_model(tmp_path / "a", tiny_bytes()))).returncode == 0
    )
    manifest = models_dir / "m" / "manifest.json"
    manifest.unlink()
    os.mkfifo(manifest)
    said = f"{manifest} is not a model manifest this version understands (it is not a regular file)"
    listed = command(env, "models", "list", timeout=30)
    assert listed.returncode == 0, listed.stderr
    [row] = [line for line in listed.stdout.splitlines() if line.split()[:2] == ["*", "m"]]
    assert f"unusable: {said}" in row
    verified = command(env, "models", "verify", "m", timeout=30)
    failed_with(verified, "model_checksum_mismatch")
    assert said in verified.stdout
    evaluated = command(env, "asr", "eval", str(tmp_path), timeout=30)
    assert evaluated.returncode == 2, evaluated.stderr
    assert "[transcription_unavailable]" in evaluated.stderr and said in evaluated.stderr
    assert sorted(p.name for p in models_dir.iterdir()) == [".lock", "m"]


def test_a_manifest_larger_than_any_is_not_read_whole(tmp_path: Path, models_dir: Path) -> None:
    env = environment(models_dir)
    assert (
        command(env, "models", "import", "m", str(write_model(tmp_path / "a", tiny_bytes()))).returncode == 0
    )
    manifest = models_dir / "m" / "manifest.json"
    with manifest.open("ab") as grown:
        grown.truncate(17 << 20)  # sparse: 17 MiB of zeros after the JSON
    listed = command(env, "models", "list", timeout=30)
    assert (
        f"unusable: {manifest} is not a model manifest this version understands (it is larger than 16 MiB)"
        in listed.stdout
    )


# --- 5. a download that never ends ------------------------------------------------------------

#: ``cte1-mcp models pull`` (``tests.helpers.models_child``, same arguments) with its stall window
#: shrunk from minutes to ``{stall}`` seconds.
SHRUNK_PULL = (
    "import runpy; from cte1_mcp.transcribe import model_sources; model_sources.STALL_SECONDS = {stall}; "
    "runpy.run_module('tests.helpers.models_child', run_name='__main__', alter_sys=True)"
)


def pull_bounded(
    catalog: Path, env: dict[str, str], stall: float, limit: float = 60
) -> subprocess.CompletedProcess[str]:
    """``models pull tiny-hub``, a test failure (not a hung test) if it is still going after ``limit`` s."""
    try:
        return child(
            [
                sys.executable,
                "-c",
                SHRUNK_PULL.format(stall=stall),
                str(catalog),
                "models",
                "pull",
                "tiny-hub",
            ],
            env,
            limit,
        )
    except subprocess.TimeoutExpired as hung:
        said = hung.stderr.decode(errors="replace") if isinstance(hung.stderr, bytes) else hung.stderr
        pytest.fail(f"`models pull` still going after {limit:g} s (a hang); it said: {(said or '')[-600:]}")


def stopped_for_no_progress(
    done: subprocess.CompletedProcess[str], models_dir: Path, name: str, stall: float
) -> None:
    failed_with(done, "model_download_failed")
    said = f"downloading {name} from {REPO} at revision {REVISION} was stopped: no progress for {stall:g} s"
    assert said in done.stderr
    assert "Try again later" in done.stderr.split("Next:")[1]
    nothing_installed(models_dir)


@pytest.mark.parametrize("fault", ["busy", "ratelimited", "trickle"])
def test_a_download_that_gets_no_further_is_stopped(
    hub: FakeHub, models_dir: Path, catalog: Path, fault: Fault
) -> None:
    # Before: huggingface_hub waited out the hub's "Retry-After: 999999" (HTTP 503 to the HEAD,
    # or 429 to the GET: "Waiting 1000000.0s before retry", up to 5 times), and took a body sent a
    # byte a second (no read timed out) to its end: a 75 MB model in 2.4 years.
    name = "decoder-epoch-1.onnx"
    hub.faults[name] = fault
    done = pull_bounded(catalog, environment(models_dir, hub.url), stall=2)
    stopped_for_no_progress(done, models_dir, name, stall=2)


def test_a_body_sent_again_from_its_start_on_every_resume_is_stopped(
    tmp_path: Path, models_dir: Path
) -> None:
    # Before: a hub (or a proxy) that answers each resume with the same first 10 MiB from byte 0,
    # then stalls, was resumed forever: huggingface_hub gives up after 5 resumes without data, and
    # counts again from 0 each time data arrives (40 GETs in 120 s here, with no end).
    name = "big.bin"
    files = {**tiny_files(), name: HubFile(os.urandom(20 << 20))}
    catalog = write_catalog(tmp_path / "catalog.json", files)
    with running_hub(FakeHub(REPO, REVISION, files, faults={name: "stall"})) as hub:
        # huggingface_hub's read timeout (10 s) shortened, as a user may: a resume every 2 s (its
        # timeout, then its 1 s pause), each sending the same 10 MiB again, none of it progress
        env = environment(models_dir, hub.url, HF_HUB_DOWNLOAD_TIMEOUT="1")
        done = pull_bounded(catalog, env, stall=5)
        resumed = [r for r in hub.requests if r.startswith("GET") and name in r and "bytes=" in r]
    stopped_for_no_progress(done, models_dir, name, stall=5)
    assert len(resumed) >= 2, hub.requests  # stopped while huggingface_hub was resuming it
