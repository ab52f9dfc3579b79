"""Staging a download: batched from the event loop or written from one thread, never half kept."""

from __future__ import annotations

import ctypes
import hashlib
import os
import resource
import sys
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.to_thread
import pytest

from cte1_mcp.errors import StorageError
from cte1_mcp.models import AudioFormat
from cte1_mcp.repository.local import LocalRepository
from cte1_mcp.repository.local import staging as staging_module
from cte1_mcp.repository.local.staging import BATCH_BYTES, HEAD_BYTES, WRITEBACK_BYTES
from tests.helpers.repository import KEY, leftovers, metadata, path_of, save

pytestmark = pytest.mark.anyio
pytest_plugins = ["tests.helpers.store_fixtures"]  # clock, make_store, store


async def test_sniffer_gets_the_head_the_content_type_and_the_total_size(
    store: LocalRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[bytes, str | None, int]] = []

    def sniff(head: bytes, content_type: str | None, total_size: int) -> AudioFormat:
        seen.append((head, content_type, total_size))
        return AudioFormat(mime_type="audio/x-test")

    monkeypatch.setattr(staging_module, "sniff_format", sniff)
    data = os.urandom(HEAD_BYTES * 3)
    recording = await save(store, data=data, chunk=1000)

    assert seen == [(data[:HEAD_BYTES], "audio/wav", len(data))]
    assert recording.audio.format.mime_type == "audio/x-test"


async def test_small_chunks_are_batched_into_few_thread_hops(
    store: LocalRepository, monkeypatch: pytest.MonkeyPatch
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


async def test_an_empty_download_is_stored_as_empty(store: LocalRepository) -> None:
    recording = await save(store, data=b"")
    assert recording.audio.size_bytes == 0
    assert recording.audio.sha256 == hashlib.sha256(b"").hexdigest()
    assert path_of(store, recording).read_bytes() == b""


async def test_a_staging_is_single_use(store: LocalRepository) -> None:
    async with store.staging(KEY) as staging:
        await staging.write(b"abc")
        await staging.commit(metadata(), None)
        with pytest.raises(RuntimeError):
            await staging.write(b"more")
        with pytest.raises(RuntimeError):
            await staging.commit(metadata(), None)
    assert store.get(KEY) is not None  # leaving the block after commit keeps it


async def test_an_exception_mid_download_leaves_nothing(store: LocalRepository) -> None:
    with pytest.raises(ConnectionError):
        async with store.staging(KEY) as staging:
            await staging.write(os.urandom(2 * BATCH_BYTES))
            raise ConnectionError("the platform hung up")
    assert leftovers(store) == []
    assert store.get(KEY) is None


async def test_a_cancellation_mid_write_leaves_nothing(store: LocalRepository) -> None:
    with anyio.CancelScope() as scope:
        async with store.staging(KEY) as staging:
            for index in range(10):
                await staging.write(os.urandom(BATCH_BYTES // 2))
                if index == 4:
                    scope.cancel()  # lands in the next write's disk hop
    assert scope.cancelled_caught
    assert leftovers(store) == []


async def test_a_cancellation_while_waiting_for_the_network_leaves_nothing(store: LocalRepository) -> None:
    with anyio.move_on_after(0.05):
        async with store.staging(KEY) as staging:
            await staging.write(os.urandom(BATCH_BYTES + 1))
            await anyio.sleep_forever()
    assert leftovers(store) == []


async def test_a_download_never_committed_is_dropped(store: LocalRepository) -> None:
    async with store.staging(KEY) as staging:
        await staging.write(os.urandom(BATCH_BYTES + 1))
    assert leftovers(store) == []


async def test_a_failed_commit_leaves_nothing(
    store: LocalRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_sniffer(head: bytes, content_type: str | None, total_size: int) -> AudioFormat:
        raise ValueError("cannot tell")

    monkeypatch.setattr(staging_module, "sniff_format", broken_sniffer)
    with pytest.raises(ValueError, match="cannot tell"):
        await save(store, data=os.urandom(BATCH_BYTES + 3))
    assert leftovers(store) == []


async def test_a_discard_mid_download_waits_for_the_batch_in_flight(store: LocalRepository) -> None:
    async with store.staging(KEY) as staging:
        await staging.write(os.urandom(BATCH_BYTES))  # handed to a background write
        await staging.discard()  # must not close the file under that write
        assert leftovers(store) == []
    assert leftovers(store) == []


async def test_a_batch_cancelled_before_it_was_written_is_never_committed(store: LocalRepository) -> None:
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
    store: LocalRepository, file_size_limit: Callable[[int], None]
) -> None:
    file_size_limit(BATCH_BYTES + BATCH_BYTES // 2)  # the second batch's write is short, then fails
    with pytest.raises(StorageError, match="nothing was stored"):
        await save(store, data=os.urandom(4 * BATCH_BYTES), chunk=64 * 1024)
    assert store.get(KEY) is None
    assert leftovers(store) == []


async def test_write_blocking_from_one_worker_thread_hashes_and_writes_each_chunk(
    store: LocalRepository,
) -> None:
    data = os.urandom(3 * BATCH_BYTES + 11)

    def feed(staging: staging_module.LocalStaging) -> None:
        for start in range(0, len(data), 300_000):
            staging.write_blocking(data[start : start + 300_000])

    async with store.staging(KEY) as staging:
        await anyio.to_thread.run_sync(feed, staging)
        assert staging.size == len(data)
        recording = await staging.commit(metadata(), None)

    assert recording.audio.sha256 == hashlib.sha256(data).hexdigest()
    assert path_of(store, recording).read_bytes() == data
    assert await store.read_audio(recording) == data


async def test_one_staging_is_fed_one_way(store: LocalRepository) -> None:
    async with store.staging(KEY) as staging:
        await staging.write(b"from the loop")
        with pytest.raises(RuntimeError, match="one way"):
            staging.write_blocking(b"from a thread")
    assert leftovers(store) == []


async def test_write_blocking_leaves_nothing_when_the_download_is_dropped(store: LocalRepository) -> None:
    async with store.staging(KEY) as staging:
        await anyio.to_thread.run_sync(staging.write_blocking, os.urandom(BATCH_BYTES))
        assert leftovers(store) != []
    assert leftovers(store) == []


async def test_a_failure_other_than_a_disk_error_in_a_background_write_is_raised_as_itself(
    store: LocalRepository,
) -> None:
    """Regression: it used to escape the staging's task group as an ExceptionGroup."""
    not_bytes = "x" * BATCH_BYTES  # accepted on the loop (only its length is taken there) ...
    with pytest.raises(TypeError):  # ... and refused by the hash in the worker thread
        async with store.staging(KEY) as staging:
            await staging.write(os.urandom(HEAD_BYTES))
            await staging.write(not_bytes)  # type: ignore[arg-type]
            await staging.commit(metadata(), None)
    assert leftovers(store) == []


class _CacheStat(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_uint64) for name in ("cache", "dirty", "writeback", "evicted", "recently_evicted")
    ]


def page_cache_of(path: os.PathLike[str]) -> _CacheStat:
    """The kernel's own count of a file's cached, dirty and in-writeback pages (cachestat(2), Linux 6.5+)."""

    class Range(ctypes.Structure):
        _fields_ = [("offset", ctypes.c_uint64), ("length", ctypes.c_uint64)]  # length 0: to the end

    if sys.platform != "linux":
        pytest.skip("cachestat(2) is Linux's")
    libc = ctypes.CDLL(None, use_errno=True)
    stat = _CacheStat()
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.syscall(451, fd, ctypes.byref(Range(0, 0)), ctypes.byref(stat), 0) != 0:
            pytest.skip(f"cachestat(2) is not available here ({os.strerror(ctypes.get_errno())})")
    finally:
        os.close(fd)
    return stat


async def test_a_long_download_is_already_on_its_way_to_disk_when_it_is_committed(
    store: LocalRepository,
) -> None:
    """Regression: the whole writeback was left to the commit's fsync (~0.1 s per 256 MiB), and
    the pages whose writeback was started early stay cached for the reads that follow."""
    data = os.urandom(4 * WRITEBACK_BYTES)
    pages = len(data) // resource.getpagesize()

    def feed(staging: staging_module.LocalStaging) -> None:
        for start in range(0, len(data), BATCH_BYTES):
            staging.write_blocking(data[start : start + BATCH_BYTES])

    async with store.staging(KEY) as staging:
        await anyio.to_thread.run_sync(feed, staging)
        [part] = leftovers(store)
        stat = page_cache_of(part)
        assert stat.dirty < pages // 4  # without the early writeback: all of them (30 s before the kernel)
        assert stat.cache > pages // 2  # started, not dropped
        recording = await staging.commit(metadata(), None)

    assert path_of(store, recording).read_bytes() == data
