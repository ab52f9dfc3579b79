"""The local store meeting bad state on disk: one bad entry is logged and skipped, retention is
still enforced on everything else, and a lookup never raises a raw OSError nor blocks.

Tests run as root, so damage is planted as things root cannot open as files either: a directory
or a FIFO where a file belongs, a symbolic link where a directory belongs, a read-only mount.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cte1_mcp.errors import StorageError
from cte1_mcp.models import PLATFORM_RETENTION, CallKey
from cte1_mcp.repository.local import LocalRepository
from tests.helpers.namespaces import needs_mounts
from tests.helpers.repository import HOUR, KEY, OTHER, START, Clock, files_under, record_dir, save

pytestmark = pytest.mark.anyio
pytest_plugins = ["tests.helpers.store_fixtures"]  # clock, make_store, store

UNTIL = START + PLATFORM_RETENTION - HOUR


def on_disk(store: LocalRepository, key: CallKey) -> bool:
    return (record_dir(store, key) / "meta.json").exists()


# --- a sweep goes on past one bad entry ----------------------------------------------------------


async def test_an_unreadable_pushed_entry_does_not_stop_retention(
    store: LocalRepository, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: the pushed sweep's StorageError aborted every sweep before the retention plan."""
    await save(store, KEY)
    await store.write_pushed_transcript(OTHER, b'{"x": 1}', available_until=UNTIL)
    (store.root / "pushed" / KEY.tenant_id / str(KEY.session_id) / "7.json").mkdir(mode=0o700)
    clock.advance(25 * HOUR)

    store.sweep()

    assert not on_disk(store, KEY)
    assert "pushed transcript of 05053698341/942125/7" in caplog.text


async def test_a_directory_in_place_of_a_tombstone_does_not_stop_the_store(
    store: LocalRepository, make_store: Callable[..., LocalRepository], clock: Clock
) -> None:
    """Regression: IsADirectoryError from the tombstone clean-up stopped every sweep, so the store
    was never indexed and every new download was refused."""
    await save(store, KEY)
    (store.root / "expired" / KEY.tenant_id / str(KEY.session_id) / "9.json").mkdir(parents=True)
    clock.advance(25 * HOUR)
    restarted = make_store()

    restarted.sweep()

    assert not on_disk(restarted, KEY)
    assert (await save(restarted, OTHER)).key == OTHER


async def test_a_removed_tmp_directory_is_made_again(store: LocalRepository, clock: Clock) -> None:
    await save(store, KEY)
    (store.root / "tmp").rmdir()
    clock.advance(25 * HOUR)

    store.sweep()

    assert not on_disk(store, KEY)
    assert (store.root / "tmp").stat().st_mode & 0o777 == 0o700
    assert (await save(store, OTHER)).key == OTHER


async def test_a_journal_that_cannot_be_written_stops_neither_a_lookup_nor_the_sweep(
    store: LocalRepository, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: get() raised IsADirectoryError (an [internal_error]) and each sweep stopped
    after its first removal."""
    keys = [CallKey(KEY.tenant_id, KEY.session_id, record) for record in range(1, 5)]
    for key in keys:
        await save(store, key)
    (store.root / "journal").unlink()
    (store.root / "journal").mkdir()
    clock.advance(25 * HOUR)

    assert store.get(KEY) is None
    assert not on_disk(store, KEY)
    store.sweep()

    assert [key for key in keys if on_disk(store, key)] == []
    assert "journal" in caplog.text


# --- an expired recording on a store that refuses writes -----------------------------------------

READ_ONLY_LOOKUP = """
import sys
from datetime import datetime, timedelta
from pathlib import Path
from cte1_mcp.models import CallKey
from cte1_mcp.repository.local import LocalRepository

now = datetime.fromisoformat(sys.argv[2])
store = LocalRepository(Path(sys.argv[1]), max_age=timedelta(hours=24), max_bytes=1 << 30, clock=lambda: now)
key = CallKey("05053698341", 942125, 1)
print(store.get(key), store.expired_at(key) is not None)
"""


@needs_mounts
async def test_an_expired_recording_on_a_read_only_store_is_not_kept_and_no_error(
    store: LocalRepository, clock: Clock
) -> None:
    """Regression: the removal's EROFS escaped get()/expired_at() (an [internal_error])."""
    await save(store, KEY)
    clock.advance(PLATFORM_RETENTION)  # past both its maximum age and its 31 days
    root = store.root
    script = (
        f"mount --bind {root} {root} && mount -o remount,bind,ro {root} && "
        f"exec \"$0\" -c '{READ_ONLY_LOOKUP}' {root} {clock.now.isoformat()}"
    )
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, sys.executable],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "True"]  # not served; known expired
    assert "Read-only file system" in done.stderr  # logged, for the operator
    assert on_disk(store, KEY)  # the disk refused: the next sweep tries again


# --- FIFOs: never waited on ----------------------------------------------------------------------

FIFO_LOOKUPS = """
import sys, anyio
from datetime import datetime, timedelta
from pathlib import Path
from cte1_mcp.models import CallKey
from cte1_mcp.repository.local import LocalRepository

now = datetime.fromisoformat(sys.argv[2])
store = LocalRepository(Path(sys.argv[1]), max_age=timedelta(hours=24), max_bytes=1 << 30, clock=lambda: now)
stored, fifo_meta, tombstoned, pushed = (CallKey("05053698341", 942125, n) for n in (1, 5, 6, 7))
print(store.get(fifo_meta), store.expired_at(tombstoned))
print(anyio.run(store.read_pushed_transcript, pushed))
print(store.open_artifact(store.get(stored), "clip.wav"))
store.sweep()
print(store.get(stored) is not None)
"""


async def test_a_fifo_planted_in_the_store_never_blocks_it(store: LocalRepository, clock: Clock) -> None:
    """Regression: open(2) of a FIFO (a meta.json, a tombstone, a pushed file, an artefact, the
    journal) waited forever for a writer, on the event loop: the server froze, even to SIGTERM."""
    recording = await save(store, KEY)
    await store.write_artifact(recording, "clip.wav", b"RIFF a clip")
    artefact = store.artifact_path(recording, "clip.wav")
    assert artefact is not None
    artefact.unlink()
    os.mkfifo(artefact, 0o600)
    session = (KEY.tenant_id, str(KEY.session_id))
    (store.root.joinpath("recordings", *session, "5")).mkdir()
    os.mkfifo(store.root.joinpath("recordings", *session, "5", "meta.json"), 0o600)
    store.root.joinpath("expired", *session).mkdir(parents=True)
    os.mkfifo(store.root.joinpath("expired", *session, "6.json"), 0o600)
    store.root.joinpath("pushed", *session).mkdir(parents=True)
    store.root.joinpath("pushed").chmod(0o700)
    os.mkfifo(store.root.joinpath("pushed", *session, "7.json"), 0o600)
    (store.root / "journal").unlink()
    os.mkfifo(store.root / "journal", 0o600)

    done = subprocess.run(  # another process: a regression hangs there, not in this test run
        [sys.executable, "-c", FIFO_LOOKUPS, str(store.root), clock.now.isoformat()],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["None", "None", "None", "None", "True"]
    await store.write_artifact(recording, "clip.wav", b"RIFF made again")  # replaces the FIFO
    assert await store.read_artifact(recording, "clip.wav") == b"RIFF made again"


# --- recordings/ or pushed/ replaced by a link while serving ------------------------------------


async def test_a_linked_recordings_or_pushed_directory_is_a_storage_error(
    store: LocalRepository, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Regression: opening the linked top directory raised a raw NotADirectoryError
    ([internal_error]), from reads and from every sweep."""
    recording = await save(store, KEY)
    await store.write_pushed_transcript(OTHER, b'{"x": 1}', available_until=UNTIL)
    store.sweep()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("recordings", "pushed"):
        (store.root / name).rename(elsewhere / name)
        (store.root / name).symlink_to(elsewhere / name)

    with pytest.raises(StorageError, match="symbolic link") as refused:
        await store.read_audio(recording)
    assert str(tmp_path) not in refused.value.render()  # the path is for the operator's log
    assert "refusing" in caplog.text and str(store.root / "recordings") in caplog.text
    assert await store.read_pushed_transcript(OTHER) is None
    with pytest.raises(StorageError, match="symbolic link"):
        await store.write_pushed_transcript(KEY, b"{}", available_until=UNTIL)
    store.sweep()  # neither fails nor deletes through the links
    assert store.list_blocking() == []
    assert len(files_under(elsewhere / "recordings")) == 2
    assert len(files_under(elsewhere / "pushed")) == 1
