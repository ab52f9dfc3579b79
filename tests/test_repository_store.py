"""The local store: atomic, private, indexed, shared safely between processes, and never keeping
personal data longer than allowed."""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import wave
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import pytest

from cte1_mcp.errors import (
    ConfigurationError,
    RecordingExpired,
    RecordingGone,
    StorageError,
    UnsupportedAudio,
)
from cte1_mcp.models import AudioFormat, CallKey, Recording
from cte1_mcp.repository.local import LocalRepository
from cte1_mcp.repository.local.records import ORPHAN_GRACE_SECONDS
from cte1_mcp.repository.local.staging import BATCH_BYTES
from cte1_mcp.repository.local.tombstones import TOMBSTONE_TTL
from tests.helpers.repository import (
    DAY,
    HOUR,
    KEY,
    OTHER,
    START,
    Clock,
    files_under,
    leftovers,
    metadata,
    path_of,
    record_dir,
    save,
)

pytestmark = pytest.mark.anyio
pytest_plugins = ["tests.helpers.store_fixtures"]  # clock, make_store, store


# --- writing and reading ----------------------------------------------------------------------


async def test_commit_stores_exact_bytes_hash_and_metadata(store: LocalRepository, clock: Clock) -> None:
    data = os.urandom(3 * BATCH_BYTES + 17)
    meta = metadata(agentName="コムデザイン一郎", newFieldFromPlatform={"x": 1})

    recording = await save(store, data=data, meta=meta)

    assert recording.key == KEY
    assert recording.audio.size_bytes == len(data)
    assert recording.audio.sha256 == hashlib.sha256(data).hexdigest()
    assert isinstance(recording.audio.format, AudioFormat)
    assert path_of(store, recording) == record_dir(store, KEY) / "audio.bin"  # random bytes: unknown format
    assert path_of(store, recording).read_bytes() == data
    assert recording.fetched_at == clock.now
    assert recording.metadata.platform_json() == meta.platform_json()
    assert store.get(KEY) == recording


async def test_recordings_survive_a_restart(
    store: LocalRepository, make_store: Callable[..., LocalRepository]
) -> None:
    recording = await save(store)
    assert make_store().get(KEY) == recording


async def test_paths_come_only_from_the_key_parts_and_name_the_container(store: LocalRepository) -> None:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(b"\x00\x01" * 8000)
    recording = await save(store, data=buffer.getvalue())
    first = path_of(store, recording)
    assert first == store.root / "recordings" / "05053698341" / "942125" / "1" / "audio.wav"
    assert recording.audio.format.container == "wav"
    # a later commit of another container replaces the file; no stale audio is left beside it
    replaced = path_of(store, await save(store, data=b"ID3" + os.urandom(2048)))
    assert store.local_path(recording) is None  # that version is gone
    assert replaced.parent == first.parent
    assert sorted(p.name for p in replaced.parent.iterdir()) == sorted([replaced.name, "meta.json"])


async def test_list_shows_committed_recordings_oldest_first(store: LocalRepository, clock: Clock) -> None:
    assert store.list_blocking() == []
    second = CallKey("0311112222", 5, 1)
    await save(store, KEY)
    clock.advance(HOUR)
    await save(store, second)

    assert [recording.key for recording in store.list_blocking()] == [KEY, second]


async def test_the_later_of_two_racing_commits_wins_whole(store: LocalRepository) -> None:
    first, second = os.urandom(BATCH_BYTES + 5), os.urandom(2 * BATCH_BYTES + 9)
    async with store.staging(KEY) as a, store.staging(KEY) as b:
        await a.write(first)
        await b.write(second)
        await a.commit(metadata(), None)
        recording = await b.commit(metadata(), None)

    assert store.get(KEY) == recording
    assert path_of(store, recording).read_bytes() == second
    assert recording.audio.sha256 == hashlib.sha256(second).hexdigest()
    assert files_under(store.root / "tmp") == []


async def test_a_reader_never_sees_metadata_that_does_not_describe_the_audio(
    store: LocalRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    await save(store, data=b"A" * 100)
    seen: list[Recording | None] = []
    real_replace = os.replace

    def replace_and_look(src: Any, dst: Any, **kwargs: Any) -> None:
        if Path(dst).name == "meta.json":  # the audio is in place; the meta.json not yet
            seen.append(store.get(KEY))
        real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", replace_and_look)
    await save(store, data=b"B" * 100)  # same size: only the hash could tell them apart

    assert seen == [None]
    recording = store.get(KEY)
    assert recording is not None
    assert recording.audio.sha256 == hashlib.sha256(b"B" * 100).hexdigest()


# --- atomicity --------------------------------------------------------------------------------


async def test_a_reader_sees_nothing_while_a_download_is_staged(store: LocalRepository) -> None:
    async with store.staging(KEY) as staging:
        await staging.write(os.urandom(2 * BATCH_BYTES))
        assert store.get(KEY) is None
        assert store.list_blocking() == []
        assert store.expired_at(KEY) is None
        assert files_under(store.root / "recordings") == []
        assert len(files_under(store.root / "tmp")) == 1
        await staging.commit(metadata(), None)
    assert store.get(KEY) is not None


async def test_crash_leftovers_are_cleaned_at_start_up_but_live_writes_are_not(
    store: LocalRepository, make_store: Callable[..., LocalRepository]
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


async def test_a_store_sweep_leaves_its_own_staging_alone(store: LocalRepository) -> None:
    async with store.staging(KEY) as staging:
        await staging.write(os.urandom(BATCH_BYTES))
        store.sweep()
        await store.list()
        recording = await staging.commit(metadata(), None)
    assert recording.audio.size_bytes == BATCH_BYTES


async def test_meta_without_complete_audio_is_not_a_recording(store: LocalRepository) -> None:
    audio = path_of(store, await save(store, data=b"0123456789"))
    audio.write_bytes(b"01234")  # e.g. truncated behind the store's back
    assert store.get(KEY) is None
    audio.unlink()
    assert store.get(KEY) is None


async def test_corrupt_metadata_is_not_a_recording_and_is_swept(store: LocalRepository) -> None:
    audio = path_of(store, await save(store))
    meta_file = audio.with_name("meta.json")
    meta_file.write_text("{not json")
    assert store.get(KEY) is None
    assert store.list_blocking() == []
    assert audio.exists()  # possibly another process's commit in progress: not yet
    old = audio.stat().st_mtime - ORPHAN_GRACE_SECONDS - 1
    os.utime(audio, (old, old))
    store.sweep()
    assert leftovers(store) == []


async def test_metadata_of_another_key_is_not_trusted(store: LocalRepository) -> None:
    recording = await save(store, OTHER)
    target = record_dir(store, KEY)
    target.mkdir(parents=True)
    for name in (path_of(store, recording).name, "meta.json"):
        (target / name).write_bytes(path_of(store, recording).with_name(name).read_bytes())
    assert store.get(KEY) is None


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
    make_store: Callable[..., LocalRepository], clock: Clock, monkeypatch: pytest.MonkeyPatch
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
    ours.sweep()  # its walk of the store meets what the other process removed meanwhile
    assert ours.list_blocking() == [kept]
    assert removed
    assert not (recordings / KEY.tenant_id).exists()


async def test_a_commit_while_another_process_prunes_its_new_directory(
    make_store: Callable[..., LocalRepository], monkeypatch: pytest.MonkeyPatch
) -> None:
    ours, theirs = make_store(), make_store()
    await save(ours, OTHER)  # KEY's tenant and session directories exist; its own does not
    real_replace = os.replace
    swept = False

    def sweep_elsewhere_then_replace(src: Any, dst: Any, **kwargs: Any) -> None:
        nonlocal swept
        if not swept and str(dst).startswith("audio"):
            swept = True
            theirs.sweep()  # sees an empty record directory: a crash's leftover to it, so pruned
        real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "replace", sweep_elsewhere_then_replace)
    recording = await save(ours, KEY, b"fresh audio")
    assert swept
    assert ours.get(KEY) == recording
    assert path_of(ours, recording).read_bytes() == b"fresh audio"


async def test_a_failing_tidy_after_a_commit_does_not_unstore_it(
    store: LocalRepository, caplog: pytest.LogCaptureFixture
) -> None:
    journal = store.root / "journal"
    journal.unlink(missing_ok=True)
    journal.mkdir(mode=0o700)  # appending to it fails as a full or broken disk would

    recording = await save(store, OTHER, b"stored")

    assert store.get(OTHER) == recording
    assert path_of(store, recording).read_bytes() == b"stored"
    assert "tidying the store after storing" in caplog.text


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
    make_store: Callable[..., LocalRepository], clock: Clock
) -> None:
    store = make_store()
    await save(store, KEY, meta=metadata(connected=START - 30 * DAY - 23 * HOUR))
    await save(store, OTHER)
    async with store.staging(CallKey("1", 1, 1)) as staging:
        await staging.write(os.urandom(BATCH_BYTES))
        clock.advance(2 * HOUR)  # KEY passes the 31 days: a tombstone is written
        assert store.expired_at(KEY) is not None

        modes = {path: stat.S_IMODE(path.stat().st_mode) for path in [store.root, *store.root.rglob("*")]}
    assert any(path.name.endswith(".part") for path in modes)
    assert any(path.parent.name == "942125" and path.suffix == ".json" for path in modes)  # tombstone
    for path, mode in modes.items():
        assert mode == (0o700 if path.is_dir() else 0o600), path


@pytest.mark.usefixtures("umask")
async def test_missing_parents_of_the_root_are_created_private(tmp_path: Path) -> None:
    root = tmp_path / "home" / ".cache" / "cte1-mcp"  # like the default, on a fresh account
    LocalRepository(root, max_age=HOUR, max_bytes=1000)
    for path in (tmp_path / "home", tmp_path / "home" / ".cache", root, root / "recordings"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    LocalRepository(root, max_age=HOUR, max_bytes=1000)  # and it is accepted at the next start


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o701, 0o1777], ids=oct)
async def test_a_loose_existing_root_is_refused_and_left_as_it_is(tmp_path: Path, mode: int) -> None:
    root = tmp_path / "shared"  # e.g. CTE1_CACHE_DIR=$HOME, or /tmp
    root.mkdir()
    root.chmod(mode)
    (root / "theirs.txt").write_text("not the store's")
    with pytest.raises(ConfigurationError, match="open to other users") as refused:
        LocalRepository(root, max_age=HOUR, max_bytes=1000)
    assert stat.S_IMODE(root.stat().st_mode) == mode
    assert [path.name for path in root.iterdir()] == ["theirs.txt"]  # nothing created inside
    rendered = refused.value.render()
    assert "CTE1_CACHE_DIR" in rendered
    assert f"chmod 700 {root}" in rendered


async def test_a_private_existing_root_is_used_as_it_is(tmp_path: Path) -> None:
    root = tmp_path / "mine"
    root.mkdir()
    root.chmod(0o1700)  # private; the sticky bit is not the store's business
    LocalRepository(root, max_age=HOUR, max_bytes=1000)
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
        LocalRepository(fake_slash, max_age=HOUR, max_bytes=1000)
    fake_slash.chmod(0o700)  # even a private root does not make a loose tmp/ its own
    with pytest.raises(ConfigurationError, match="open to other users") as refused:
        LocalRepository(fake_slash, max_age=HOUR, max_bytes=1000)
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
        LocalRepository(root, max_age=HOUR, max_bytes=1000)
    assert stat.S_IMODE((root / name).stat().st_mode) == 0o755


async def test_a_symlinked_subdirectory_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    root.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (root / "recordings").symlink_to(elsewhere)
    with pytest.raises(ConfigurationError, match="symbolic link"):
        LocalRepository(root, max_age=HOUR, max_bytes=1000)
    assert list(elsewhere.iterdir()) == []


async def test_a_symlinked_root_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(ConfigurationError, match="symbolic link") as refused:
        LocalRepository(link, max_age=HOUR, max_bytes=1000)
    assert "CTE1_CACHE_DIR" in refused.value.render()
    assert list(real.iterdir()) == []


async def test_a_root_that_cannot_be_created_is_one_configuration_error(tmp_path: Path) -> None:
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")  # e.g. a moved home directory
    with pytest.raises(ConfigurationError, match="cannot be created") as refused:
        LocalRepository(tmp_path / "gone" / "cte1-mcp", max_age=HOUR, max_bytes=1000)
    assert "CTE1_CACHE_DIR" in refused.value.render()


async def test_a_root_that_is_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(ConfigurationError, match="not a directory"):
        LocalRepository(path, max_age=HOUR, max_bytes=1000)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory away needs root")
async def test_a_root_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "theirs"
    root.mkdir(mode=0o700)
    os.chown(root, 4242, 4242)
    with pytest.raises(ConfigurationError, match="another user"):
        LocalRepository(root, max_age=HOUR, max_bytes=1000)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory away needs root")
async def test_a_subdirectory_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    root.mkdir(mode=0o700)
    (root / "tmp").mkdir(mode=0o700)
    os.chown(root / "tmp", 4242, 4242)
    with pytest.raises(ConfigurationError, match="another user"):
        LocalRepository(root, max_age=HOUR, max_bytes=1000)


# --- retention --------------------------------------------------------------------------------


async def test_nothing_is_kept_longer_than_max_age(store: LocalRepository, clock: Clock) -> None:
    await save(store)
    clock.advance(24 * HOUR - timedelta(seconds=1))
    assert store.get(KEY) is not None
    clock.advance(timedelta(seconds=1))

    assert store.get(KEY) is None
    assert leftovers(store) == []
    assert store.expired_at(KEY) is None  # our own limit: the platform still has it


async def test_max_age_counts_from_the_fetch_not_the_last_use(store: LocalRepository, clock: Clock) -> None:
    await save(store)
    for _ in range(23):
        clock.advance(HOUR)
        assert store.get(KEY) is not None
    clock.advance(HOUR)
    assert store.get(KEY) is None


async def test_sweep_removes_what_aged_out(store: LocalRepository, clock: Clock) -> None:
    await save(store, KEY)
    clock.advance(12 * HOUR)
    await save(store, OTHER)
    clock.advance(12 * HOUR)
    store.sweep()
    assert [path.parent.name for path in files_under(store.root / "recordings")] == ["2", "2"]


async def test_a_periodic_sweep_deletes_expired_recordings_without_any_request(
    store: LocalRepository, clock: Clock
) -> None:
    await save(store)
    clock.advance(25 * HOUR)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(store.run_sweeper, 0.01)
            while leftovers(store):  # looks only: a get() would expire the recording itself
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()  # the exit waits for a sweep in its worker thread to end
    assert leftovers(store) == []
    assert list((store.root / "recordings").iterdir()) == []  # its directories went too


async def test_nothing_is_kept_past_the_platforms_31_days(store: LocalRepository, clock: Clock) -> None:
    connected = START - 31 * DAY + HOUR
    recording = await save(store, meta=metadata(connected=connected))
    assert recording.metadata.available_until == connected + 31 * DAY
    clock.advance(HOUR)

    assert store.get(KEY) is None
    assert leftovers(store) == []
    assert store.expired_at(KEY) == connected + 31 * DAY


async def test_expiry_is_known_from_stored_metadata_before_any_get(
    store: LocalRepository, clock: Clock
) -> None:
    connected = START - 31 * DAY + HOUR
    await save(store, meta=metadata(connected=connected))
    clock.advance(2 * HOUR)

    assert store.expired_at(KEY) == connected + 31 * DAY
    assert leftovers(store) == []
    assert store.expired_at(KEY) == connected + 31 * DAY  # now from the tombstone


async def test_a_call_already_past_31_days_is_never_stored(store: LocalRepository) -> None:
    connected = START - 40 * DAY
    with pytest.raises(RecordingExpired, match="31 days"):
        await save(store, data=os.urandom(BATCH_BYTES + 1), meta=metadata(connected=connected))
    assert leftovers(store) == []
    assert store.expired_at(KEY) == connected + 31 * DAY


async def test_tombstones_hold_no_personal_data_and_expire_themselves(
    store: LocalRepository, clock: Clock
) -> None:
    connected = START - 40 * DAY
    with pytest.raises(RecordingExpired):
        await save(store, meta=metadata(connected=connected))
    [tombstone] = files_under(store.root / "expired")
    assert json.loads(tombstone.read_text()) == {"available_until": "2026-02-20T12:00:00Z"}

    clock.now = connected + 31 * DAY + TOMBSTONE_TTL - timedelta(seconds=1)
    store.sweep()
    assert store.expired_at(KEY) == connected + 31 * DAY
    clock.advance(timedelta(seconds=1))
    assert store.expired_at(KEY) is None
    store.sweep()
    assert files_under(store.root / "expired") == []


async def test_sweep_turns_platform_expiry_into_tombstones(store: LocalRepository, clock: Clock) -> None:
    connected = START - 31 * DAY + HOUR
    await save(store, KEY, meta=metadata(KEY, connected=connected))
    await save(store, OTHER, meta=metadata(OTHER, connected=None))  # no connectTime: max_age only
    clock.advance(2 * HOUR)
    store.sweep()

    assert [recording.key for recording in store.list_blocking()] == [OTHER]
    assert store.expired_at(KEY) == connected + 31 * DAY
    assert store.expired_at(OTHER) is None


async def test_the_least_recently_used_goes_first_when_over_size(
    make_store: Callable[..., LocalRepository], clock: Clock
) -> None:
    store = make_store(max_bytes=3000)
    keys = [CallKey("0311112222", session, 1) for session in (1, 2, 3, 4)]
    for key in keys[:3]:
        await save(store, key, os.urandom(1000))
        clock.advance(timedelta(minutes=1))
    assert store.get(keys[0]) is not None  # used last now: keys[1] is the least recently used
    clock.advance(timedelta(minutes=1))
    await save(store, keys[3], os.urandom(1000))

    assert {recording.key for recording in store.list_blocking()} == {keys[0], keys[2], keys[3]}
    assert store.get(keys[1]) is None


async def test_a_recording_larger_than_the_bound_is_kept_for_its_use_then_goes_first(
    make_store: Callable[..., LocalRepository], clock: Clock
) -> None:
    store = make_store(max_bytes=1000)
    small, large, later = (CallKey("0311112222", session, 1) for session in (1, 2, 3))
    await save(store, small, os.urandom(500))
    clock.advance(timedelta(minutes=1))
    big = await save(store, large, os.urandom(2000))

    assert path_of(store, big).exists()
    store.sweep()
    assert [recording.key for recording in store.list_blocking()] == []  # a sweep takes it (nobody reads it)
    await save(store, large, os.urandom(2000))
    clock.advance(timedelta(minutes=1))
    assert store.get(large) is not None
    await save(store, later, os.urandom(100))
    assert [recording.key for recording in store.list_blocking()] == [later]


async def test_commits_keep_the_total_under_the_bound(
    make_store: Callable[..., LocalRepository], clock: Clock
) -> None:
    store = make_store(max_bytes=10_000)
    for session in range(1, 30):
        await save(store, CallKey("0311112222", session, 1), os.urandom(1500))
        clock.advance(timedelta(seconds=10))
        audio = [path for path in files_under(store.root / "recordings") if path.name == "audio"]
        assert sum(path.stat().st_size for path in audio) <= 10_000
    assert len(store.list_blocking()) == 6


async def test_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_age"):
        LocalRepository(tmp_path, max_age=timedelta(0), max_bytes=1)
    with pytest.raises(ValueError, match="max_bytes"):
        LocalRepository(tmp_path, max_age=HOUR, max_bytes=0)


# --- the index: commits and listings that do not walk the store --------------------------------


def count_scandirs(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every directory listing from now on (a walk of the store lists each tenant and session)."""
    seen: list[Any] = []
    real_scandir = os.scandir

    def scandir(path: Any = ".") -> Any:
        seen.append(path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    return seen


async def test_a_commit_does_not_walk_the_store(
    store: LocalRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: every commit swept the whole store (518 ms per cold download at 4,000 recordings)."""
    for session in range(1, 41):
        await save(store, CallKey("0311112222", session, 1))
    listings = count_scandirs(monkeypatch)
    await save(store, KEY)
    assert len(listings) <= 2  # the new recording's own directories at most, not one per recording


async def test_start_up_does_not_wait_for_a_walk_of_the_store(
    make_store: Callable[..., LocalRepository], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = make_store()
    for session in range(1, 41):
        await save(first, CallKey("0311112222", session, 1))
    listings = count_scandirs(monkeypatch)
    restarted = make_store()
    assert listings == [restarted.root / "tmp"]  # crash leftovers only; the first sweep indexes
    assert restarted.get(CallKey("0311112222", 7, 1)) is not None  # meanwhile, from the disk
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(restarted.run_sweeper, 3600)  # its first sweep runs at once
            while len(listings) < 40:
                await anyio.sleep(0.01)
            tg.cancel_scope.cancel()
    assert len(restarted.list_blocking()) == 40


async def test_a_listing_comes_from_the_index(
    store: LocalRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    for session in range(1, 41):
        await save(store, CallKey("0311112222", session, 1))
    listings = count_scandirs(monkeypatch)
    assert len(await store.list()) == 40
    assert listings == []


async def test_over_size_commits_evict_in_lru_order_across_many_commits(
    make_store: Callable[..., LocalRepository], clock: Clock
) -> None:
    store = make_store(max_bytes=5000)
    keys = [CallKey("0311112222", session, 1) for session in range(1, 21)]
    for index, key in enumerate(keys):
        await save(store, key, os.urandom(1000))
        clock.advance(timedelta(minutes=1))
        if index == 17:
            assert store.get(keys[14]) is not None  # used: it outlives keys[15], stored after it
    kept = {recording.key for recording in store.list_blocking()}
    assert kept == {keys[14], *keys[16:]}
    assert (
        sum(p.stat().st_size for p in files_under(store.root / "recordings") if p.name != "meta.json") <= 5000
    )


# --- two servers on one store: what one stores or removes, the other sees ----------------------


async def test_a_recording_another_process_stored_is_found_without_a_sweep(
    make_store: Callable[..., LocalRepository], clock: Clock
) -> None:
    ours, theirs = make_store(), make_store()
    assert ours.get(KEY) is None
    recording = await save(theirs, KEY, b"theirs")
    assert ours.get(KEY) == recording
    assert await ours.read_audio(recording) == b"theirs"
    clock.advance(timedelta(minutes=1))
    other = await save(theirs, OTHER, b"also theirs")
    assert await ours.list() == [recording, other]


async def test_a_recording_another_process_removed_is_not_served(
    make_store: Callable[..., LocalRepository], clock: Clock
) -> None:
    ours, theirs = make_store(max_age=24 * HOUR), make_store(max_age=HOUR)
    recording = await save(ours, KEY, b"ours")
    clock.advance(2 * HOUR)
    theirs.sweep()  # their shorter retention removes it

    with pytest.raises(RecordingGone):
        await ours.read_audio(recording)
    with pytest.raises(RecordingGone):
        ours.open_audio(recording)
    assert ours.get(KEY) is None
    assert await ours.list() == []


async def test_a_recording_another_process_replaced_is_read_only_in_its_new_version(
    make_store: Callable[..., LocalRepository],
) -> None:
    ours, theirs = make_store(), make_store()
    old = await save(ours, KEY, b"first download")
    new = await save(theirs, KEY, b"second, different download")

    assert ours.get(KEY) == new
    with pytest.raises(RecordingGone):
        await ours.read_audio(old)
    assert await ours.read_audio(new) == b"second, different download"
    with ours.open_audio(new) as audio:
        assert audio.read() == b"second, different download"


async def test_a_restart_indexes_what_is_on_disk(
    make_store: Callable[..., LocalRepository], clock: Clock
) -> None:
    first = make_store()
    stored = []
    for session in (3, 1, 2):
        stored.append(await save(first, CallKey("0311112222", session, 1)))
        clock.advance(timedelta(minutes=1))
    assert make_store().list_blocking() == stored


async def test_eviction_spares_what_another_process_used_since(
    make_store: Callable[..., LocalRepository], clock: Clock
) -> None:
    ours, theirs = make_store(max_bytes=2500), make_store(max_bytes=2500)
    first, second, third = (CallKey("0311112222", session, 1) for session in (1, 2, 3))
    for key in (first, second):
        await save(ours, key, os.urandom(1000))
        clock.advance(timedelta(minutes=1))
    assert theirs.get(first) is not None  # the other server's client reads it: the last use now
    clock.advance(timedelta(minutes=1))
    await save(ours, third, os.urandom(1000))
    assert {recording.key for recording in ours.list_blocking()} == {first, third}


# --- links inside the store are never followed -----------------------------------------------


@pytest.mark.parametrize("depth", [1, 2, 3], ids=["tenant", "session", "record"])
async def test_a_symlinked_directory_inside_the_store_is_refused(
    store: LocalRepository, tmp_path: Path, depth: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: a linked tenant directory stored recordings outside the cache, out of retention's reach."""
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o700)
    linked = store.root.joinpath("recordings", *KEY.path_parts[:depth])
    linked.parent.mkdir(parents=True, exist_ok=True)
    linked.symlink_to(outside)

    with pytest.raises(StorageError, match="symbolic link") as refused:
        await save(store, KEY)
    assert "CTE1_CACHE_DIR" in refused.value.render()
    assert files_under(outside) == []
    assert files_under(store.root / "tmp") == []
    assert "refusing" in caplog.text
    assert store.get(KEY) is None


async def test_a_recording_behind_a_link_is_not_served(
    make_store: Callable[..., LocalRepository], tmp_path: Path
) -> None:
    elsewhere = make_store()
    await save(elsewhere, KEY, b"kept by the store")
    moved = tmp_path / "moved"
    record_dir(elsewhere, KEY).rename(moved)
    record_dir(elsewhere, KEY).symlink_to(moved)

    store = make_store()
    assert store.get(KEY) is None
    assert store.list_blocking() == []
    assert (moved / "meta.json").exists()  # a link is neither followed nor its target deleted


# --- small defects found under faults ----------------------------------------------------------


async def test_a_stray_directory_named_like_a_temporary_file_does_not_break_the_store(
    make_store: Callable[..., LocalRepository],
) -> None:
    """Regression: removing it raised IsADirectoryError at start-up and in every sweep."""
    store = make_store()
    (store.root / "tmp" / "stray.part").mkdir()
    make_store().sweep()
    assert (await save(store)).audio.size_bytes > 0
    assert (store.root / "tmp" / "stray.part").is_dir()


async def test_a_failed_directory_fsync_after_the_renames_still_reports_the_recording_stored(
    store: LocalRepository, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: it answered "nothing was stored" although the files were in place."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(5, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    recording = await save(store, KEY, b"in place")
    assert store.get(KEY) == recording
    assert await store.read_audio(recording) == b"in place"
    assert "may not survive a crash" in caplog.text


# --- derived artefacts -------------------------------------------------------------------------


async def test_an_artefact_is_stored_privately_beside_its_recording(store: LocalRepository) -> None:
    recording = await save(store, KEY, b"audio")
    assert await store.read_artifact(recording, "analytics.json") is None
    assert store.artifact_path(recording, "analytics.json") is None

    await store.write_artifact(recording, "analytics.json", b'{"talk": 1}')

    assert await store.read_artifact(recording, "analytics.json") == b'{"talk": 1}'
    path = store.artifact_path(recording, "analytics.json")
    assert path is not None
    assert path.read_bytes() == b'{"talk": 1}'
    assert record_dir(store, KEY) in path.parents
    assert recording.audio.sha256 in path.parts
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert files_under(store.root / "tmp") == []
    await store.write_artifact(recording, "analytics.json", b'{"talk": 2}')  # replaced whole
    assert await store.read_artifact(recording, "analytics.json") == b'{"talk": 2}'


async def test_an_artefact_written_in_pieces_is_served_whole_or_not_at_all(store: LocalRepository) -> None:
    """A clip is encoded straight into a staging file: an encode that fails half-way leaves nothing
    (neither the artefact nor the staging file), one that finishes is committed whole and private."""
    recording = await save(store, KEY, b"audio")

    def half_then_fail(out: BinaryIO) -> None:
        out.write(b"RIFF half a clip")
        raise UnsupportedAudio("the stored audio ended early")

    with pytest.raises(UnsupportedAudio):
        await store.write_artifact_from(recording, "clip.wav", half_then_fail)
    assert store.open_artifact(recording, "clip.wav") is None
    assert files_under(store.root / "tmp") == []

    def whole(out: BinaryIO) -> None:
        for piece in (b"RIFF", b" whole", b" clip"):
            out.write(piece)
        out.seek(0)
        out.write(b"riff")  # encoders rewrite their header at the end

    await store.write_artifact_from(recording, "clip.wav", whole)
    opened = store.open_artifact(recording, "clip.wav")
    assert opened is not None
    with opened:
        assert opened.read() == b"riff whole clip"
    path = store.artifact_path(recording, "clip.wav")
    assert path is not None and stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_a_re_downloaded_recording_never_serves_a_stale_artefact(store: LocalRepository) -> None:
    old = await save(store, KEY, b"first download")
    await store.write_artifact(old, "clip.wav", b"cut from the first download")
    old_path = store.artifact_path(old, "clip.wav")
    same = await save(store, KEY, b"first download")  # identical bytes: the analysis still holds
    assert await store.read_artifact(same, "clip.wav") == b"cut from the first download"

    new = await save(store, KEY, b"second, different download")

    assert await store.read_artifact(new, "clip.wav") is None
    with pytest.raises(RecordingGone):
        await store.read_artifact(old, "clip.wav")
    with pytest.raises(RecordingGone):
        await store.write_artifact(old, "clip.wav", b"late analysis of the old audio")
    assert old_path is not None and not old_path.exists()
    assert store.artifact_path(new, "clip.wav") is None


async def test_artefacts_go_with_their_recording(store: LocalRepository, clock: Clock) -> None:
    recording = await save(store, KEY)
    await store.write_artifact(recording, "analytics.json", b"{}")
    clock.advance(25 * HOUR)
    assert store.get(KEY) is None
    assert leftovers(store) == []
    assert list((store.root / "recordings").iterdir()) == []


async def test_artefacts_count_towards_the_size_bound(
    make_store: Callable[..., LocalRepository], clock: Clock
) -> None:
    store = make_store(max_bytes=3000)
    older = await save(store, OTHER, os.urandom(1000))
    clock.advance(timedelta(minutes=1))
    recording = await save(store, KEY, os.urandom(1000))
    clock.advance(timedelta(minutes=1))

    await store.write_artifact(recording, "clip.mp3", os.urandom(1500))  # 3,500 bytes: over

    assert store.get(OTHER) is None
    assert older.key not in {r.key for r in store.list_blocking()}
    assert await store.read_artifact(recording, "clip.mp3") is not None
    restarted = make_store(max_bytes=3000)  # a new index counts the artefact too
    assert [r.key for r in restarted.list_blocking()] == [KEY]


async def test_an_artefact_cut_short_on_disk_is_not_served(
    store: LocalRepository, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: a PNG or clip truncated on disk (a disk fault) was served as if whole; the
    length recorded at its commit now tells, and it is made again."""
    recording = await save(store, KEY)
    whole = os.urandom(1000)
    await store.write_artifact(recording, "timeline.png", whole)
    path = store.artifact_path(recording, "timeline.png")
    assert path is not None
    os.truncate(path, 100)

    assert await store.read_artifact(recording, "timeline.png") is None
    assert store.open_artifact(recording, "timeline.png") is None
    assert "damaged (100 bytes where 1000 were stored)" in caplog.text
    await store.write_artifact(recording, "timeline.png", whole)  # made again
    assert await store.read_artifact(recording, "timeline.png") == whole


def record_of(path: Path) -> Any:
    """What the store recorded beside an artefact when it stored it."""
    return json.loads((path.parent / f".{path.name}.json").read_bytes())


@pytest.mark.parametrize("size", [1000, (5 << 20) // 2], ids=["small", "several 1-MiB blocks"])
async def test_an_artefact_changed_on_disk_without_changing_its_length_is_not_served(
    store: LocalRepository, caplog: pytest.LogCaptureFixture, size: int
) -> None:
    """Regression: a stored transcript with one digit changed on disk (same length, still valid
    JSON) was served as the server's; its sha256, recorded with its length, now tells."""
    recording = await save(store, KEY)
    whole = os.urandom(size)
    await store.write_artifact(recording, "transcript.json", whole)
    path = store.artifact_path(recording, "transcript.json")
    assert path is not None
    opened = store.open_artifact(recording, "transcript.json")
    assert opened is not None
    with opened:
        assert opened.read() == whole  # hashed on open, yet read from its first byte

    changed = bytearray(whole)
    changed[-1] ^= 0x01  # one bit of the last block: the hash covers every block
    path.write_bytes(changed)

    assert await store.read_artifact(recording, "transcript.json") is None
    assert store.open_artifact(recording, "transcript.json") is None
    assert f"damaged (its {size} bytes are not the ones stored (another sha256))" in caplog.text
    await store.write_artifact(recording, "transcript.json", whole)  # made again
    assert await store.read_artifact(recording, "transcript.json") == whole
    assert record_of(path) == {"size_bytes": size, "sha256": hashlib.sha256(whole).hexdigest()}


async def test_a_length_recorded_by_an_older_version_still_holds_alone(
    store: LocalRepository, caplog: pytest.LogCaptureFixture
) -> None:
    """Records written before the sha256 was (length only) are checked by their length alone, so
    an upgrade does not make every stored artefact again; one unreadable is damage, not trust."""
    recording = await save(store, KEY)
    await store.write_artifact(recording, "analytics.json", b"x" * 100)
    path = store.artifact_path(recording, "analytics.json")
    assert path is not None
    sidecar = path.parent / f".{path.name}.json"
    sidecar.write_bytes(b'{"size_bytes": 100}')
    path.write_bytes(b"y" * 100)  # a same-length change such a record cannot tell
    assert await store.read_artifact(recording, "analytics.json") == b"y" * 100
    os.truncate(path, 10)
    assert await store.read_artifact(recording, "analytics.json") is None
    assert "damaged (10 bytes where 100 were stored)" in caplog.text

    path.write_bytes(b"y" * 100)
    sidecar.write_bytes(b'{"size_bytes": 100, "sha256": 7}')
    assert await store.read_artifact(recording, "analytics.json") is None
    assert "damaged (its record is unreadable)" in caplog.text


async def test_another_process_reads_an_artefact_bound_to_the_same_audio(
    make_store: Callable[..., LocalRepository],
) -> None:
    ours, theirs = make_store(), make_store()
    recording = await save(ours, KEY)
    await ours.write_artifact(recording, "analytics.json", b"computed once")
    assert await theirs.read_artifact(recording, "analytics.json") == b"computed once"


@pytest.mark.parametrize(
    "name", ["", "../meta.json", "a/b", ".hidden", "x" * 200, "clip.part", "é.json", "a..b"]
)
async def test_artefact_names_are_plain_safe_file_names(store: LocalRepository, name: str) -> None:
    recording = await save(store)
    with pytest.raises(ValueError, match="artefact name"):
        await store.write_artifact(recording, name, b"x")
    with pytest.raises(ValueError, match="artefact name"):
        await store.read_artifact(recording, name)
    with pytest.raises(ValueError, match="artefact name"):
        store.artifact_path(recording, name)
    assert [p.name for p in files_under(record_dir(store, KEY))] == ["audio.bin", "meta.json"]


STORE_IN_ANOTHER_PROCESS = """
import functools, sys, anyio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from cte1_mcp.models import CallKey
from cte1_mcp.repository.local import LocalRepository
from tests.helpers.repository import metadata, save

root, session, max_bytes, data = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].encode()
store = LocalRepository(root, max_age=timedelta(hours=24), max_bytes=max_bytes)
key = CallKey("05053698341", 942125, session)
meta = metadata(key, connected=datetime.now(UTC) - timedelta(hours=1))
anyio.run(functools.partial(save, store, key, data, meta=meta))
"""


def store_in_another_process(root: Path, session: int, data: bytes, *, max_bytes: int = 1 << 30) -> None:
    subprocess.run(
        [
            sys.executable,
            "-c",
            STORE_IN_ANOTHER_PROCESS,
            str(root),
            str(session),
            str(max_bytes),
            data.decode(),
        ],
        check=True,
        cwd=Path(__file__).parent.parent,
        timeout=60,
    )


async def test_an_artefact_write_counts_what_another_process_stored(tmp_path: Path) -> None:
    """Regression: the size check of an artefact write did not read the journal, so recordings
    another process stored meanwhile were not counted and the store stayed over its bound."""
    root = tmp_path / "shared"
    ours = LocalRepository(root, max_age=24 * HOUR, max_bytes=3000)
    meta = metadata(KEY, connected=datetime.now(UTC) - HOUR)
    recording = await save(ours, KEY, os.urandom(1000), meta=meta)

    store_in_another_process(root, 2, b"x" * 1000)  # its own bound is large: it evicts nothing
    await ours.write_artifact(recording, "clip.wav", os.urandom(1500))  # 3,500 bytes in all

    assert not (record_dir(ours, CallKey("05053698341", 942125, 2)) / "meta.json").exists()
    assert ours.get(KEY) == recording


async def test_two_real_processes_see_each_others_commits_and_evictions(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    ours = LocalRepository(root, max_age=24 * HOUR, max_bytes=1 << 30)
    assert await ours.list() == []

    store_in_another_process(root, 1, b"first, stored by the other process")
    [first] = await ours.list()
    assert await ours.read_audio(first) == b"first, stored by the other process"

    store_in_another_process(root, 2, b"second", max_bytes=10)  # its bound evicts the first
    assert [recording.key.record_id for recording in await ours.list()] == [2]
    with pytest.raises(RecordingGone):
        await ours.read_audio(first)
    assert ours.get(first.key) is None
