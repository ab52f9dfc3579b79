"""Transcripts CT-e1 pushed, in the local store: private, atomic, and bounded like recordings."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from cte1_mcp.errors import ConfigurationError, RecordingExpired
from cte1_mcp.models import PLATFORM_RETENTION, CallKey
from cte1_mcp.repository.local import LocalRepository
from tests.helpers.repository import DAY, HOUR, KEY, OTHER, START, Clock, files_under, save

pytestmark = pytest.mark.anyio
pytest_plugins = ["tests.helpers.store_fixtures"]  # clock, make_store, store

DOCUMENT = '{"sentenceList": [{"text": "パソコンの調子が悪いです"}]}'.encode()
UNTIL = START + PLATFORM_RETENTION - HOUR  # connected an hour before the clock's start


def pushed(store: LocalRepository) -> list[Path]:
    return files_under(store.root / "pushed")


async def test_written_privately_and_read_back(store: LocalRepository) -> None:
    await store.write_pushed_transcript(KEY, DOCUMENT, available_until=UNTIL)
    assert await store.read_pushed_transcript(KEY) == DOCUMENT
    assert await store.read_pushed_transcript(OTHER) is None
    [path] = pushed(store)
    assert path.relative_to(store.root).parts == ("pushed", "05053698341", "942125", "1.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for directory in (store.root / "pushed", path.parent, path.parent.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert files_under(store.root / "tmp") == []  # the temporary file was renamed into place


async def test_a_later_push_replaces_the_earlier_whole(store: LocalRepository) -> None:
    await store.write_pushed_transcript(KEY, DOCUMENT, available_until=UNTIL)
    await store.write_pushed_transcript(KEY, b'{"second": true}', available_until=UNTIL)
    assert await store.read_pushed_transcript(KEY) == b'{"second": true}'
    assert len(pushed(store)) == 1


async def test_no_recording_is_needed_and_a_sweep_keeps_it(store: LocalRepository) -> None:
    await store.write_pushed_transcript(KEY, DOCUMENT, available_until=UNTIL)
    store.sweep()  # a pushed transcript without its recording is not a crash's leftover
    assert await store.read_pushed_transcript(KEY) == DOCUMENT


async def test_kept_no_longer_than_the_stores_maximum_age(store: LocalRepository, clock: Clock) -> None:
    await store.write_pushed_transcript(KEY, DOCUMENT, available_until=None)
    clock.advance(24 * HOUR - HOUR)
    assert await store.read_pushed_transcript(KEY) == DOCUMENT
    clock.advance(HOUR)
    assert await store.read_pushed_transcript(KEY) is None
    assert pushed(store) == []


async def test_the_sweep_deletes_them_past_the_platforms_31_days(
    make_store: Callable[..., LocalRepository], clock: Clock
) -> None:
    store = make_store(max_age=40 * DAY)
    await store.write_pushed_transcript(KEY, DOCUMENT, available_until=START + DAY)
    await store.write_pushed_transcript(OTHER, DOCUMENT, available_until=START + 3 * DAY)
    clock.advance(2 * DAY)
    store.sweep()  # with no request to notice it
    assert [p.name for p in pushed(store)] == ["2.json"]


async def test_a_push_for_a_call_past_31_days_is_refused(store: LocalRepository) -> None:
    with pytest.raises(RecordingExpired):
        await store.write_pushed_transcript(KEY, DOCUMENT, available_until=START)
    assert pushed(store) == []


async def test_they_count_in_the_size_bound_and_recordings_make_room(
    make_store: Callable[..., LocalRepository], clock: Clock
) -> None:
    store = make_store(max_bytes=3000)
    recording = await save(store, KEY, b"a" * 2000)
    clock.advance(HOUR)
    big = b'{"text": "' + b"x" * 1500 + b'"}'
    await store.write_pushed_transcript(OTHER, big, available_until=UNTIL)
    assert store.get(recording.key) is None  # 2000 + ~1.6 KiB > 3000: the recording went
    assert await store.read_pushed_transcript(OTHER) == big


async def test_the_oldest_go_when_pushes_alone_exceed_the_bound(
    make_store: Callable[..., LocalRepository], clock: Clock
) -> None:
    store = make_store(max_bytes=2000)  # each file is ~1.15 KiB: only the newest fits
    big = b'{"text": "' + b"x" * 1000 + b'"}'
    for record in (1, 2, 3):
        await store.write_pushed_transcript(
            CallKey("05053698341", 942125, record), big, available_until=UNTIL
        )
        clock.advance(HOUR)
    store.sweep()
    assert [p.name for p in pushed(store)] == ["3.json"]


async def test_a_link_in_place_of_a_pushed_file_is_not_followed(
    store: LocalRepository, tmp_path: Path
) -> None:
    secret = tmp_path / "elsewhere.json"
    secret.write_text('{"not": "ours"}')
    await store.write_pushed_transcript(KEY, DOCUMENT, available_until=UNTIL)
    [path] = pushed(store)
    path.unlink()
    path.symlink_to(secret)
    assert await store.read_pushed_transcript(KEY) is None
    assert secret.read_text() == '{"not": "ours"}'


async def test_survives_a_restart(make_store: Callable[..., LocalRepository]) -> None:
    await make_store().write_pushed_transcript(KEY, DOCUMENT, available_until=UNTIL)
    assert await make_store().read_pushed_transcript(KEY) == DOCUMENT


async def test_a_sweep_counts_pushes_another_process_stored(
    make_store: Callable[..., LocalRepository], clock: Clock
) -> None:
    store = make_store(max_bytes=3000)
    recording = await save(store, KEY, b"a" * 2000)
    clock.advance(HOUR)
    other_process = make_store(max_bytes=1 << 30)  # its own bound is larger: it evicts nothing
    await other_process.write_pushed_transcript(
        OTHER, b'{"text": "' + b"x" * 1500 + b'"}', available_until=UNTIL
    )
    assert store.get(recording.key) is not None
    store.sweep()
    assert store.get(recording.key) is None
    assert await store.read_pushed_transcript(OTHER) is not None


async def test_a_commit_counts_pushes_another_process_stored(
    make_store: Callable[..., LocalRepository], clock: Clock
) -> None:
    """Regression: pushes were counted only by the process that received them (and by a sweep),
    so a commit in another process could leave the store over its bound."""
    store = make_store(max_bytes=3000)
    older = await save(store, KEY, b"a" * 1000)
    clock.advance(HOUR)
    other_process = make_store(max_bytes=1 << 30)  # its own bound is larger: it evicts nothing
    await other_process.write_pushed_transcript(
        OTHER, b'{"text": "' + b"x" * 1500 + b'"}', available_until=UNTIL
    )
    clock.advance(HOUR)

    await save(store, CallKey("05053698341", 942125, 3), b"b" * 1000)  # ~3.6 KiB in all

    assert store.get(older.key) is None
    assert await store.read_pushed_transcript(OTHER) is not None


async def test_a_push_counts_recordings_another_process_stored(
    make_store: Callable[..., LocalRepository], clock: Clock
) -> None:
    """Regression: a push's size check did not read the journal first."""
    store = make_store(max_bytes=3000)
    store.sweep()  # indexed before the other process stores anything
    await save(make_store(max_bytes=1 << 30), KEY, b"a" * 2000)
    clock.advance(HOUR)

    await store.write_pushed_transcript(OTHER, b'{"text": "' + b"x" * 1500 + b'"}', available_until=UNTIL)

    assert store.get(KEY) is None
    assert await store.read_pushed_transcript(OTHER) is not None


async def test_the_directory_is_made_at_the_first_push(store: LocalRepository) -> None:
    # Not at start-up: a store an older version made, then mounted read-only, still starts.
    assert not (store.root / "pushed").exists()
    assert await store.read_pushed_transcript(KEY) is None
    store.sweep()
    await store.write_pushed_transcript(KEY, DOCUMENT, available_until=UNTIL)
    assert stat.S_IMODE((store.root / "pushed").stat().st_mode) == 0o700


async def test_a_loose_pushed_directory_is_refused_at_start_up(
    make_store: Callable[..., LocalRepository], tmp_path: Path
) -> None:
    make_store()
    (tmp_path / "cache" / "pushed").mkdir(mode=0o755)
    (tmp_path / "cache" / "pushed").chmod(0o755)
    with pytest.raises(ConfigurationError, match="open to other users"):
        make_store()
