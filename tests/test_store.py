"""The recording store: atomic, private, and never keeping personal data longer than allowed."""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import resource
import stat
import wave
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from cte1_mcp import store as store_module
from cte1_mcp.errors import ConfigurationError, RecordingExpired, StorageError
from cte1_mcp.models import AudioFormat, CallKey, CallMetadata, Recording
from cte1_mcp.store import BATCH_BYTES, HEAD_BYTES, TOMBSTONE_TTL, RecordingStore

pytestmark = pytest.mark.anyio

KEY = CallKey("05053698341", 942125, 1)
OTHER = CallKey("05053698341", 942125, 2)
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


class Clock:
    """The store's wall clock, moved by hand."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_store(tmp_path: Path, clock: Clock) -> Callable[..., RecordingStore]:
    def make(**overrides: Any) -> RecordingStore:
        options: dict[str, Any] = {"max_age": 24 * HOUR, "max_bytes": 1 << 30, "clock": clock}
        return RecordingStore(tmp_path / "cache", **(options | overrides))

    return make


@pytest.fixture
def store(make_store: Callable[..., RecordingStore]) -> RecordingStore:
    return make_store()


def metadata(key: CallKey = KEY, *, connected: datetime | None = START - HOUR, **extra: Any) -> CallMetadata:
    fields: dict[str, Any] = {
        "status": "complete",
        "tenantId": key.tenant_id,
        "sessionId": key.session_id,
        "recordId": key.record_id,
        "ani": "08075082398",
        **extra,
    }
    if connected is not None:
        fields["connectTime"] = connected.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return CallMetadata.model_validate(fields)


async def save(
    store: RecordingStore,
    key: CallKey = KEY,
    data: bytes = b"RIFF-not-really-audio",
    *,
    meta: CallMetadata | None = None,
    chunk: int = 8192,
) -> Recording:
    async with store.staging(key) as staging:
        for start in range(0, len(data), chunk):
            await staging.write(data[start : start + chunk])
        return await staging.commit(meta or metadata(key), "audio/wav")


def files_under(path: Path) -> list[Path]:
    """Every file below ``path``; a directory a sweeper removes mid-walk is simply not there."""
    return sorted(Path(directory) / name for directory, _, names in os.walk(path) for name in names)


def leftovers(store: RecordingStore) -> list[Path]:
    """Everything that would be personal data or a trace of it: recordings and temporary files."""
    return files_under(store.root / "recordings") + files_under(store.root / "tmp")


# --- writing and reading ----------------------------------------------------------------------


async def test_commit_stores_exact_bytes_hash_and_metadata(store: RecordingStore, clock: Clock) -> None:
    data = os.urandom(3 * BATCH_BYTES + 17)
    meta = metadata(agentName="コムデザイン一郎", newFieldFromPlatform={"x": 1})

    recording = await save(store, data=data, meta=meta)

    assert recording.key == KEY
    assert recording.audio.size_bytes == len(data)
    assert recording.audio.sha256 == hashlib.sha256(data).hexdigest()
    assert isinstance(recording.audio.format, AudioFormat)
    assert recording.path == record_dir(store, KEY) / "audio.bin"  # random bytes: unknown format
    assert recording.path.read_bytes() == data
    assert recording.fetched_at == clock.now
    assert recording.metadata.platform_json() == meta.platform_json()
    assert store.get(KEY) == recording


async def test_recordings_survive_a_restart(
    store: RecordingStore, make_store: Callable[..., RecordingStore]
) -> None:
    recording = await save(store)
    assert make_store().get(KEY) == recording


async def test_paths_come_only_from_the_key_parts_and_name_the_container(store: RecordingStore) -> None:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(b"\x00\x01" * 8000)
    recording = await save(store, data=buffer.getvalue())
    assert recording.path == store.root / "recordings" / "05053698341" / "942125" / "1" / "audio.wav"
    assert recording.audio.format.container == "wav"
    # a later commit of another container replaces the file; no stale audio is left beside it
    replaced = await save(store, data=b"ID3" + os.urandom(2048))
    assert replaced.path.parent == recording.path.parent
    assert sorted(p.name for p in replaced.path.parent.iterdir()) == sorted([replaced.path.name, "meta.json"])


def record_dir(store: RecordingStore, key: CallKey) -> Path:
    return store.root / "recordings" / key.tenant_id / str(key.session_id) / str(key.record_id)


async def test_sniffer_gets_the_head_the_content_type_and_the_total_size(
    store: RecordingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[bytes, str | None, int]] = []

    def sniff(head: bytes, content_type: str | None, total_size: int) -> AudioFormat:
        seen.append((head, content_type, total_size))
        return AudioFormat(mime_type="audio/x-test")

    monkeypatch.setattr(store_module, "sniff_format", sniff)
    data = os.urandom(HEAD_BYTES * 3)
    recording = await save(store, data=data, chunk=1000)

    assert seen == [(data[:HEAD_BYTES], "audio/wav", len(data))]
    assert recording.audio.format.mime_type == "audio/x-test"


async def test_small_chunks_are_batched_into_few_thread_hops(
    store: RecordingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    hops = 0
    real_run_sync = anyio.to_thread.run_sync

    async def counting_run_sync(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        nonlocal hops
        hops += 1
        return await real_run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting_run_sync)
    await save(store, data=os.urandom(4 * BATCH_BYTES), chunk=4096)

    assert hops <= 4 + 1  # one per full batch, one for the commit


async def test_an_empty_download_is_stored_as_empty(store: RecordingStore) -> None:
    recording = await save(store, data=b"")
    assert recording.audio.size_bytes == 0
    assert recording.audio.sha256 == hashlib.sha256(b"").hexdigest()
    assert recording.path.read_bytes() == b""


async def test_list_shows_committed_recordings_oldest_first(store: RecordingStore, clock: Clock) -> None:
    assert store.list() == []
    second = CallKey("0311112222", 5, 1)
    await save(store, KEY)
    clock.advance(HOUR)
    await save(store, second)

    assert [recording.key for recording in store.list()] == [KEY, second]


async def test_the_later_of_two_racing_commits_wins_whole(store: RecordingStore) -> None:
    first, second = os.urandom(BATCH_BYTES + 5), os.urandom(2 * BATCH_BYTES + 9)
    async with store.staging(KEY) as a, store.staging(KEY) as b:
        await a.write(first)
        await b.write(second)
        await a.commit(metadata(), None)
        recording = await b.commit(metadata(), None)

    assert store.get(KEY) == recording
    assert recording.path.read_bytes() == second
    assert recording.audio.sha256 == hashlib.sha256(second).hexdigest()
    assert files_under(store.root / "tmp") == []


async def test_a_reader_never_sees_metadata_that_does_not_describe_the_audio(
    store: RecordingStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    await save(store, data=b"A" * 100)
    seen: list[Recording | None] = []
    real_replace = Path.replace

    def replace_and_look(self: Path, target: Any) -> Path:
        if Path(target).name == "meta.json":  # the audio is in place; the meta.json not yet
            seen.append(store.get(KEY))
        return real_replace(self, target)

    monkeypatch.setattr(Path, "replace", replace_and_look)
    await save(store, data=b"B" * 100)  # same size: only the hash could tell them apart

    assert seen == [None]
    recording = store.get(KEY)
    assert recording is not None
    assert recording.audio.sha256 == hashlib.sha256(b"B" * 100).hexdigest()


async def test_a_staging_is_single_use(store: RecordingStore) -> None:
    async with store.staging(KEY) as staging:
        await staging.write(b"abc")
        await staging.commit(metadata(), None)
        with pytest.raises(RuntimeError):
            await staging.write(b"more")
        with pytest.raises(RuntimeError):
            await staging.commit(metadata(), None)
    assert store.get(KEY) is not None  # leaving the block after commit keeps it


# --- atomicity --------------------------------------------------------------------------------


async def test_a_reader_sees_nothing_while_a_download_is_staged(store: RecordingStore) -> None:
    async with store.staging(KEY) as staging:
        await staging.write(os.urandom(2 * BATCH_BYTES))
        assert store.get(KEY) is None
        assert store.list() == []
        assert store.expired_until(KEY) is None
        assert files_under(store.root / "recordings") == []
        assert len(files_under(store.root / "tmp")) == 1
        await staging.commit(metadata(), None)
    assert store.get(KEY) is not None


async def test_an_exception_mid_download_leaves_nothing(store: RecordingStore) -> None:
    with pytest.raises(ConnectionError):
        async with store.staging(KEY) as staging:
            await staging.write(os.urandom(2 * BATCH_BYTES))
            raise ConnectionError("the platform hung up")
    assert leftovers(store) == []
    assert store.get(KEY) is None


async def test_a_cancellation_mid_write_leaves_nothing(store: RecordingStore) -> None:
    with anyio.CancelScope() as scope:
        async with store.staging(KEY) as staging:
            for index in range(10):
                await staging.write(os.urandom(BATCH_BYTES // 2))
                if index == 4:
                    scope.cancel()  # lands in the next write's disk hop
    assert scope.cancelled_caught
    assert leftovers(store) == []


async def test_a_cancellation_while_waiting_for_the_network_leaves_nothing(store: RecordingStore) -> None:
    with anyio.move_on_after(0.05):
        async with store.staging(KEY) as staging:
            await staging.write(os.urandom(BATCH_BYTES + 1))
            await anyio.sleep_forever()
    assert leftovers(store) == []


async def test_a_download_never_committed_is_dropped(store: RecordingStore) -> None:
    async with store.staging(KEY) as staging:
        await staging.write(os.urandom(BATCH_BYTES + 1))
    assert leftovers(store) == []


async def test_a_failed_commit_leaves_nothing(store: RecordingStore, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_sniffer(head: bytes, content_type: str | None, total_size: int) -> AudioFormat:
        raise ValueError("cannot tell")

    monkeypatch.setattr(store_module, "sniff_format", broken_sniffer)
    with pytest.raises(ValueError, match="cannot tell"):
        await save(store, data=os.urandom(BATCH_BYTES + 3))
    assert leftovers(store) == []


async def test_crash_leftovers_are_cleaned_at_start_up_but_live_writes_are_not(
    store: RecordingStore, make_store: Callable[..., RecordingStore]
) -> None:
    crashed = store.root / "tmp" / "0123abcd.part"
    crashed.write_bytes(b"half a recording")
    live = store.root / "tmp" / "4567ef01.part"
    live.write_bytes(b"another process is writing this")
    with live.open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as the other process's staging holds it
        make_store()
        assert not crashed.exists()
        assert live.exists()
    make_store()
    assert not live.exists()


async def test_a_store_sweep_leaves_its_own_staging_alone(store: RecordingStore) -> None:
    async with store.staging(KEY) as staging:
        await staging.write(os.urandom(BATCH_BYTES))
        store.sweep()
        await anyio.to_thread.run_sync(store.list)
        recording = await staging.commit(metadata(), None)
    assert recording.audio.size_bytes == BATCH_BYTES


async def test_meta_without_complete_audio_is_not_a_recording(store: RecordingStore) -> None:
    recording = await save(store, data=b"0123456789")
    recording.path.write_bytes(b"01234")  # e.g. truncated behind the store's back
    assert store.get(KEY) is None
    recording.path.unlink()
    assert store.get(KEY) is None


async def test_corrupt_metadata_is_not_a_recording_and_is_swept(store: RecordingStore) -> None:
    recording = await save(store)
    meta_file = recording.path.with_name("meta.json")
    meta_file.write_text("{not json")
    assert store.get(KEY) is None
    assert store.list() == []
    assert recording.path.exists()  # possibly another process's commit in progress: not yet
    old = recording.path.stat().st_mtime - store_module.ORPHAN_GRACE_SECONDS - 1
    os.utime(recording.path, (old, old))
    store.sweep()
    assert leftovers(store) == []


async def test_metadata_of_another_key_is_not_trusted(store: RecordingStore) -> None:
    recording = await save(store, OTHER)
    target = record_dir(store, KEY)
    target.mkdir(parents=True)
    for name in (recording.path.name, "meta.json"):
        (target / name).write_bytes(recording.path.with_name(name).read_bytes())
    assert store.get(KEY) is None


async def test_a_discard_mid_download_waits_for_the_batch_in_flight(store: RecordingStore) -> None:
    async with store.staging(KEY) as staging:
        await staging.write(os.urandom(BATCH_BYTES))  # handed to a background write
        await staging.discard()  # must not close the file under that write
        assert leftovers(store) == []
    assert leftovers(store) == []


async def test_a_batch_cancelled_before_it_was_written_is_never_committed(store: RecordingStore) -> None:
    with anyio.CancelScope() as scope:
        async with store.staging(KEY) as staging:
            await staging.write(os.urandom(BATCH_BYTES))  # its background write has not started yet
            scope.cancel()
            with anyio.CancelScope(shield=True), pytest.raises(StorageError, match="nothing was stored"):
                await staging.commit(metadata(), None)  # e.g. finishing what was downloaded
    assert store.get(KEY) is None
    assert leftovers(store) == []


@pytest.fixture
def file_size_limit() -> Iterator[Callable[[int], None]]:
    """RLIMIT_FSIZE: writes past it are cut short, then fail with EFBIG (Python ignores SIGXFSZ)."""
    previous = resource.getrlimit(resource.RLIMIT_FSIZE)
    try:
        yield lambda limit: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, previous[1]))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, previous)


async def test_a_disk_error_in_a_background_write_surfaces_and_leaves_nothing(
    store: RecordingStore, file_size_limit: Callable[[int], None]
) -> None:
    file_size_limit(BATCH_BYTES + BATCH_BYTES // 2)  # the second batch's write is short, then fails
    with pytest.raises(StorageError, match="nothing was stored"):
        await save(store, data=os.urandom(4 * BATCH_BYTES), chunk=64 * 1024)
    assert store.get(KEY) is None
    assert leftovers(store) == []


@pytest.mark.parametrize("most", [1, 7, 4096])
def test_short_writes_resume_where_they_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, most: int
) -> None:
    """A disk cannot be made to write short on demand: write here writes at most ``most`` bytes."""
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:most])))
    data = os.urandom(70_000)
    path = tmp_path / "out"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        store_module._write_all(fd, data)
    finally:
        os.close(fd)
    assert path.read_bytes() == data


def test_a_write_that_writes_nothing_is_an_error_not_a_busy_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "write", lambda fd, data: 0)
    fd = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with pytest.raises(OSError, match="wrote nothing"):
            store_module._write_all(fd, b"abc")
    finally:
        os.close(fd)


# --- two servers on one store (two MCP clients, each starting a server on the default dir) ------


class _Listed:
    """What ``os.scandir`` gives a ``with`` statement, from entries read beforehand."""

    def __init__(self, entries: list[os.DirEntry[str]]) -> None:
        self._entries = entries

    def __enter__(self) -> Iterator[os.DirEntry[str]]:
        return iter(self._entries)

    def __exit__(self, *exc_info: object) -> None:
        return None


async def test_listing_while_another_process_removes_recordings(
    make_store: Callable[..., RecordingStore], clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours = make_store(max_age=24 * HOUR)
    theirs = make_store(max_age=HOUR)  # another server, with a shorter retention
    await save(ours, KEY)
    clock.advance(2 * HOUR)
    kept = await save(ours, CallKey("0311112222", 5, 1))
    recordings = ours.root / "recordings"
    real_scandir = os.scandir
    removed = False

    def scandir(path: Any) -> Any:
        nonlocal removed
        if removed or Path(path) != recordings:
            return real_scandir(path)
        removed = True
        with real_scandir(path) as listing:
            entries = list(listing)
        theirs.sweep()  # between our listing of recordings/ and our walk into KEY's tenant
        return _Listed(entries)

    monkeypatch.setattr(os, "scandir", scandir)
    assert ours.list() == [kept]
    assert removed
    assert not (recordings / KEY.tenant_id).exists()


async def test_a_commit_while_another_process_prunes_its_new_directory(
    make_store: Callable[..., RecordingStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    ours, theirs = make_store(), make_store()
    await save(ours, OTHER)  # KEY's tenant and session directories exist; its own does not
    real_make_dirs = store_module._make_private_dirs
    swept = False

    def make_dirs_then_sweep_elsewhere(*args: Any, **kwargs: Any) -> None:
        nonlocal swept
        real_make_dirs(*args, **kwargs)
        if not swept:
            swept = True
            theirs.sweep()  # sees an empty record directory: a crash's leftover to it, so pruned

    monkeypatch.setattr(store_module, "_make_private_dirs", make_dirs_then_sweep_elsewhere)
    recording = await save(ours, KEY, b"fresh audio")
    assert swept
    assert ours.get(KEY) == recording
    assert recording.path.read_bytes() == b"fresh audio"


async def test_a_failing_sweep_after_a_commit_does_not_unstore_it(
    store: RecordingStore, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    connected = START - 31 * DAY + HOUR
    await save(store, KEY, meta=metadata(KEY, connected=connected))
    # Where KEY's tombstone directory goes, a file: writing it fails as a full disk would.
    (store.root / "expired" / KEY.tenant_id).write_text("")
    clock.advance(2 * HOUR)  # KEY passes the platform's 31 days: the commit's sweep removes it

    recording = await save(store, OTHER, b"stored")

    assert store.get(OTHER) == recording
    assert recording.path.read_bytes() == b"stored"
    assert store.get(KEY) is None
    assert "sweeping the recording store" in caplog.text


# --- privacy ----------------------------------------------------------------------------------


@pytest.fixture(params=[0o000, 0o277], ids=["umask-000", "umask-277"])
def umask(request: pytest.FixtureRequest) -> Iterator[None]:
    previous = os.umask(request.param)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.mark.usefixtures("umask")
async def test_directories_are_0700_and_files_0600_whatever_the_umask(
    make_store: Callable[..., RecordingStore], clock: Clock
) -> None:
    store = make_store()
    await save(store, KEY, meta=metadata(connected=START - 30 * DAY - 23 * HOUR))
    await save(store, OTHER)
    async with store.staging(CallKey("1", 1, 1)) as staging:
        await staging.write(os.urandom(BATCH_BYTES))
        clock.advance(2 * HOUR)  # KEY passes the 31 days: a tombstone is written
        assert store.expired_until(KEY) is not None

        modes = {path: stat.S_IMODE(path.stat().st_mode) for path in [store.root, *store.root.rglob("*")]}
    assert any(path.name.endswith(".part") for path in modes)
    assert any(path.parent.name == "942125" and path.suffix == ".json" for path in modes)  # tombstone
    for path, mode in modes.items():
        assert mode == (0o700 if path.is_dir() else 0o600), path


@pytest.mark.usefixtures("umask")
async def test_missing_parents_of_the_root_are_created_private(tmp_path: Path) -> None:
    root = tmp_path / "home" / ".cache" / "cte1-mcp"  # like the default, on a fresh account
    RecordingStore(root, max_age=HOUR, max_bytes=1000)
    for path in (tmp_path / "home", tmp_path / "home" / ".cache", root, root / "recordings"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    RecordingStore(root, max_age=HOUR, max_bytes=1000)  # and it is accepted at the next start


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o701, 0o1777], ids=oct)
async def test_a_loose_existing_root_is_refused_and_left_as_it_is(tmp_path: Path, mode: int) -> None:
    root = tmp_path / "shared"  # e.g. CTE1_CACHE_DIR=$HOME, or /tmp
    root.mkdir()
    root.chmod(mode)
    (root / "theirs.txt").write_text("not the store's")
    with pytest.raises(ConfigurationError, match="open to other users") as refused:
        RecordingStore(root, max_age=HOUR, max_bytes=1000)
    assert stat.S_IMODE(root.stat().st_mode) == mode
    assert [path.name for path in root.iterdir()] == ["theirs.txt"]  # nothing created inside
    rendered = refused.value.render()
    assert "CTE1_CACHE_DIR" in rendered
    assert f"chmod 700 {root}" in rendered


async def test_a_private_existing_root_is_used_as_it_is(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    root.mkdir()
    root.chmod(0o1700)  # private; the sticky bit is not the store's business
    RecordingStore(root, max_age=HOUR, max_bytes=1000)
    assert stat.S_IMODE(root.stat().st_mode) == 0o1700


async def test_the_root_directory_of_the_filesystem_is_refused_and_its_tmp_left_alone(
    tmp_path: Path,
) -> None:
    """CTE1_CACHE_DIR=/ (as root): / is 0755 and /tmp 1777, holding other programs' *.part files."""
    fake_slash = tmp_path / "slash"
    fake_slash.mkdir()
    fake_slash.chmod(0o755)
    shared_tmp = fake_slash / "tmp"
    shared_tmp.mkdir()
    shared_tmp.chmod(0o1777)
    theirs = shared_tmp / "download.part"
    theirs.write_bytes(b"another program's download")
    with pytest.raises(ConfigurationError):
        RecordingStore(fake_slash, max_age=HOUR, max_bytes=1000)
    fake_slash.chmod(0o700)  # even a private root does not make a loose tmp/ its own
    with pytest.raises(ConfigurationError, match="open to other users") as refused:
        RecordingStore(fake_slash, max_age=HOUR, max_bytes=1000)
    assert f"chmod 700 {shared_tmp}" in refused.value.render()
    assert stat.S_IMODE(shared_tmp.stat().st_mode) == 0o1777
    assert theirs.read_bytes() == b"another program's download"


@pytest.mark.parametrize("name", ["recordings", "tmp", "expired"])
async def test_a_loose_existing_subdirectory_is_refused_and_left_as_it_is(tmp_path: Path, name: str) -> None:
    root = tmp_path / "cache"
    root.mkdir(mode=0o700)
    (root / name).mkdir()
    (root / name).chmod(0o755)
    with pytest.raises(ConfigurationError, match="open to other users"):
        RecordingStore(root, max_age=HOUR, max_bytes=1000)
    assert stat.S_IMODE((root / name).stat().st_mode) == 0o755


async def test_a_symlinked_subdirectory_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    root.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (root / "recordings").symlink_to(elsewhere)
    with pytest.raises(ConfigurationError, match="symbolic link"):
        RecordingStore(root, max_age=HOUR, max_bytes=1000)
    assert list(elsewhere.iterdir()) == []


async def test_a_symlinked_root_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(ConfigurationError, match="symbolic link") as refused:
        RecordingStore(link, max_age=HOUR, max_bytes=1000)
    assert "CTE1_CACHE_DIR" in refused.value.render()
    assert list(real.iterdir()) == []


async def test_a_root_that_is_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(ConfigurationError, match="not a directory"):
        RecordingStore(path, max_age=HOUR, max_bytes=1000)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory away needs root")
async def test_a_root_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "theirs"
    root.mkdir(mode=0o700)
    os.chown(root, 4242, 4242)
    with pytest.raises(ConfigurationError, match="another user"):
        RecordingStore(root, max_age=HOUR, max_bytes=1000)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory away needs root")
async def test_a_subdirectory_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    root.mkdir(mode=0o700)
    (root / "tmp").mkdir(mode=0o700)
    os.chown(root / "tmp", 4242, 4242)
    with pytest.raises(ConfigurationError, match="another user"):
        RecordingStore(root, max_age=HOUR, max_bytes=1000)


# --- retention --------------------------------------------------------------------------------


async def test_nothing_is_kept_longer_than_max_age(store: RecordingStore, clock: Clock) -> None:
    await save(store)
    clock.advance(24 * HOUR - timedelta(seconds=1))
    assert store.get(KEY) is not None
    clock.advance(timedelta(seconds=1))

    assert store.get(KEY) is None
    assert leftovers(store) == []
    assert store.expired_until(KEY) is None  # our own limit: the platform still has it


async def test_max_age_counts_from_the_fetch_not_the_last_use(store: RecordingStore, clock: Clock) -> None:
    await save(store)
    for _ in range(23):
        clock.advance(HOUR)
        assert store.get(KEY) is not None
    clock.advance(HOUR)
    assert store.get(KEY) is None


async def test_sweep_removes_what_aged_out(store: RecordingStore, clock: Clock) -> None:
    await save(store, KEY)
    clock.advance(12 * HOUR)
    await save(store, OTHER)
    clock.advance(12 * HOUR)
    store.sweep()
    assert [path.parent.name for path in files_under(store.root / "recordings")] == ["2", "2"]


async def test_a_periodic_sweep_deletes_expired_recordings_without_any_request(
    store: RecordingStore, clock: Clock
) -> None:
    await save(store)
    clock.advance(25 * HOUR)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.sweep_every, 0.01)
            while leftovers(store):  # looks only: a get() would expire the recording itself
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()  # the exit waits for a sweep in its worker thread to end
    assert leftovers(store) == []
    assert list((store.root / "recordings").iterdir()) == []  # its directories went too


async def test_nothing_is_kept_past_the_platforms_31_days(store: RecordingStore, clock: Clock) -> None:
    connected = START - 31 * DAY + HOUR
    recording = await save(store, meta=metadata(connected=connected))
    assert recording.metadata.available_until == connected + 31 * DAY
    clock.advance(HOUR)

    assert store.get(KEY) is None
    assert leftovers(store) == []
    assert store.expired_until(KEY) == connected + 31 * DAY


async def test_expiry_is_known_from_stored_metadata_before_any_get(
    store: RecordingStore, clock: Clock
) -> None:
    connected = START - 31 * DAY + HOUR
    await save(store, meta=metadata(connected=connected))
    clock.advance(2 * HOUR)

    assert store.expired_until(KEY) == connected + 31 * DAY
    assert leftovers(store) == []
    assert store.expired_until(KEY) == connected + 31 * DAY  # now from the tombstone


async def test_a_call_already_past_31_days_is_never_stored(store: RecordingStore) -> None:
    connected = START - 40 * DAY
    with pytest.raises(RecordingExpired, match="31 days"):
        await save(store, data=os.urandom(BATCH_BYTES + 1), meta=metadata(connected=connected))
    assert leftovers(store) == []
    assert store.expired_until(KEY) == connected + 31 * DAY


async def test_tombstones_hold_no_personal_data_and_expire_themselves(
    store: RecordingStore, clock: Clock
) -> None:
    connected = START - 40 * DAY
    with pytest.raises(RecordingExpired):
        await save(store, meta=metadata(connected=connected))
    [tombstone] = files_under(store.root / "expired")
    assert json.loads(tombstone.read_text()) == {"available_until": "2026-02-20T12:00:00Z"}

    clock.now = connected + 31 * DAY + TOMBSTONE_TTL - timedelta(seconds=1)
    store.sweep()
    assert store.expired_until(KEY) == connected + 31 * DAY
    clock.advance(timedelta(seconds=1))
    assert store.expired_until(KEY) is None
    store.sweep()
    assert files_under(store.root / "expired") == []


async def test_sweep_turns_platform_expiry_into_tombstones(store: RecordingStore, clock: Clock) -> None:
    connected = START - 31 * DAY + HOUR
    await save(store, KEY, meta=metadata(KEY, connected=connected))
    await save(store, OTHER, meta=metadata(OTHER, connected=None))  # no connectTime: max_age only
    clock.advance(2 * HOUR)
    store.sweep()

    assert [recording.key for recording in store.list()] == [OTHER]
    assert store.expired_until(KEY) == connected + 31 * DAY
    assert store.expired_until(OTHER) is None


async def test_the_least_recently_used_goes_first_when_over_size(
    make_store: Callable[..., RecordingStore], clock: Clock
) -> None:
    store = make_store(max_bytes=3000)
    keys = [CallKey("0311112222", session, 1) for session in (1, 2, 3, 4)]
    for key in keys[:3]:
        await save(store, key, os.urandom(1000))
        clock.advance(timedelta(minutes=1))
    assert store.get(keys[0]) is not None  # used last now: keys[1] is the least recently used
    clock.advance(timedelta(minutes=1))
    await save(store, keys[3], os.urandom(1000))

    assert {recording.key for recording in store.list()} == {keys[0], keys[2], keys[3]}
    assert store.get(keys[1]) is None


async def test_a_recording_larger_than_the_bound_is_kept_for_its_use_then_goes_first(
    make_store: Callable[..., RecordingStore], clock: Clock
) -> None:
    store = make_store(max_bytes=1000)
    small, large, later = (CallKey("0311112222", session, 1) for session in (1, 2, 3))
    await save(store, small, os.urandom(500))
    clock.advance(timedelta(minutes=1))
    big = await save(store, large, os.urandom(2000))

    assert big.path.exists()
    assert [recording.key for recording in store.list()] == []  # a sweep takes it (nobody reads it)
    await save(store, large, os.urandom(2000))
    clock.advance(timedelta(minutes=1))
    assert store.get(large) is not None
    await save(store, later, os.urandom(100))
    assert [recording.key for recording in store.list()] == [later]


async def test_commits_keep_the_total_under_the_bound(
    make_store: Callable[..., RecordingStore], clock: Clock
) -> None:
    store = make_store(max_bytes=10_000)
    for session in range(1, 30):
        await save(store, CallKey("0311112222", session, 1), os.urandom(1500))
        clock.advance(timedelta(seconds=10))
        audio = [path for path in files_under(store.root / "recordings") if path.name == "audio"]
        assert sum(path.stat().st_size for path in audio) <= 10_000
    assert len(store.list()) == 6


async def test_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_age"):
        RecordingStore(tmp_path, max_age=timedelta(0), max_bytes=1)
    with pytest.raises(ValueError, match="max_bytes"):
        RecordingStore(tmp_path, max_age=HOUR, max_bytes=0)
