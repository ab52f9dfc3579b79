"""RecordingService in process, with fakes at its seams and virtual time: no subprocess, no real waits.

Single flight, retries, Retry-After (and its cap), progress across retries, eviction races,
abandoned flights and an unavailable coordinator, each through the service's public API.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from cte1_mcp.coordination.base import Coordination, OnWait
from cte1_mcp.coordination.local import LocalFlights, RequestSpacer
from cte1_mcp.coordination.lockfiles import FileFlights, FileSpacer
from cte1_mcp.coordination.single_flight import SingleFlight
from cte1_mcp.errors import (
    AudioTooLarge,
    CoordinationUnavailable,
    RateLimited,
    RecordingExpired,
    RecordingGone,
    TenantNotAllowed,
    UpstreamTruncated,
)
from cte1_mcp.models import CallKey, Recording
from cte1_mcp.progress import Progress
from cte1_mcp.repository.local.posix import private_dir
from cte1_mcp.service import RecordingService
from cte1_mcp.settings import Settings
from cte1_mcp.simulator import DEFAULT_API_KEY, DEFAULT_SOURCE_UUID
from tests.helpers.service_fakes import Answer, MemoryRepository, ScriptedEndpoint, metadata_for
from tests.helpers.virtual_time import FakeClock, all_tasks_blocked, virtual_time

pytestmark = pytest.mark.anyio

KEY = CallKey("05053698341", 942125, 1)
OTHER = CallKey("05053698341", 942125, 2)
THIRD = CallKey("05053698341", 942125, 3)
INTERVAL = 5.0


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "base_url": "http://127.0.0.1:9",
        "source_uuid": DEFAULT_SOURCE_UUID,
        "api_key": DEFAULT_API_KEY,
        "cache_dir": tmp_path / "cache",
        "min_interval_seconds": INTERVAL,
        **overrides,
    }
    return Settings(**values)


@dataclass
class Rig:
    service: RecordingService
    repository: MemoryRepository
    endpoint: ScriptedEndpoint
    clock: FakeClock

    def starts(self) -> list[float]:
        return [at for _, at in self.endpoint.requests]


@asynccontextmanager
async def rig(tmp_path: Path, *, spacer: Any = None, **overrides: Any) -> AsyncIterator[Rig]:
    async with virtual_time() as clock, SingleFlight[CallKey, Recording, Progress]() as flights:
        repository = MemoryRepository()
        endpoint = ScriptedEndpoint(clock=clock.now)
        coordination = Coordination("test", spacer or RequestSpacer(INTERVAL, clock), LocalFlights())
        service = RecordingService(
            settings(tmp_path, **overrides),
            repository=repository,
            endpoint=endpoint,
            coordination=coordination,
            flights=flights,
        )
        yield Rig(service, repository, endpoint, clock)


def collect(into: list[Progress]) -> Callable[[Progress], Awaitable[None]]:
    async def on_progress(progress: Progress) -> None:
        into.append(progress)

    return on_progress


# --- single flight and the store ------------------------------------------------------------


async def test_fifty_concurrent_gets_make_one_request_and_share_the_recording(tmp_path: Path) -> None:
    results: list[Recording] = []
    async with rig(tmp_path) as r:
        gate = anyio.Event()
        r.endpoint.script = [Answer(gate=gate)]

        async def get() -> None:
            results.append(await r.service.get(KEY))

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(get)
            await all_tasks_blocked()
            gate.set()
        assert await r.service.get(KEY) == results[0]  # stored: no request
    assert len(r.endpoint.requests) == 1
    assert len(results) == 50
    assert {result.audio.sha256 for result in results} == {results[0].audio.sha256}


async def test_rules_that_need_no_request_are_checked_first(tmp_path: Path) -> None:
    async with rig(tmp_path, allowed_tenants=("111",)) as r:
        with pytest.raises(TenantNotAllowed):
            await r.service.get(KEY)
    async with rig(tmp_path) as r:
        r.repository.expired[KEY] = datetime(2020, 1, 1, tzinfo=UTC)
        with pytest.raises(RecordingExpired, match="2020-01-01"):
            await r.service.get(KEY)
    assert r.endpoint.requests == []


async def test_distinct_keys_are_spaced_in_arrival_order(tmp_path: Path) -> None:
    async with rig(tmp_path) as r, anyio.create_task_group() as tg:
        for key in (KEY, OTHER, THIRD):
            tg.start_soon(r.service.get, key)
            await all_tasks_blocked()
    assert r.endpoint.requests == [(KEY, 1000.0), (OTHER, 1005.0), (THIRD, 1010.0)]


# --- retries and Retry-After ----------------------------------------------------------------


async def test_a_cut_off_answer_is_retried_and_progress_counts_on_with_messages_that_agree(
    tmp_path: Path,
) -> None:
    events: list[Progress] = []
    async with rig(tmp_path) as r:
        body = b"RIFF" + bytes(996)
        r.endpoint.script = [
            Answer(body=body[:600], chunks=3, error=UpstreamTruncated("cut off")),
            Answer(body=body, chunks=4),
        ]
        recording = await r.service.get(KEY, collect(events))
    assert recording.audio.size_bytes == 1000
    assert r.starts() == [1000.0, 1005.0]  # the retry is spaced like any request
    downloading = [e for e in events if e.stage == "downloading"]
    dones = [e.done for e in downloading]
    assert dones == sorted(set(dones)), "progress must only grow, across the retry too"
    assert dones[-1] == 600 + 1000 and downloading[-1].total == 600 + 1000
    for event in downloading:
        assert f"{event.done:,.0f}" in event.message, event  # the message states its own number
        if event.total is not None:
            assert f"{event.total:,.0f}" in event.message, event
    assert any(e.stage == "waiting" for e in events[events.index(downloading[2]) :])


async def test_a_429_defers_every_request_for_its_retry_after_then_retries(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        r.endpoint.script = [Answer(error=RateLimited("slow down", retry_after_seconds=20))]
        async with anyio.create_task_group() as tg:
            tg.start_soon(r.service.get, KEY)
            await all_tasks_blocked()
            tg.start_soon(r.service.get, OTHER)
    # The platform's pause holds for every request, not only the refused one.
    assert r.endpoint.requests == [(KEY, 1000.0), (KEY, 1020.0), (OTHER, 1025.0)]


async def test_a_429_without_retry_after_waits_the_spacing(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        r.endpoint.script = [Answer(error=RateLimited("slow down"))]
        await r.service.get(KEY)
    assert r.starts() == [1000.0, 1005.0]


async def test_a_retry_after_beyond_30_s_is_returned_at_once_and_holds_later_calls(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        r.endpoint.script = [Answer(error=RateLimited("slow down", retry_after_seconds=45))]
        with pytest.raises(RateLimited) as first:
            await r.service.get(KEY)
        assert first.value.retry_after_seconds == 45
        assert r.clock.now() == 1000.0  # not waited out
        with pytest.raises(RateLimited) as second:
            await r.service.get(OTHER)  # no wasted request while the pause holds
        assert second.value.retry_after_seconds == pytest.approx(45)
        assert "[rate_limited]" in second.value.render() and "Retry after 45 s" in second.value.render()
        await r.clock.sleep(16)  # 29 s of the pause left: waited out
        await r.service.get(OTHER)
    assert r.endpoint.requests == [(KEY, 1000.0), (OTHER, 1045.0)]


async def test_a_huge_retry_after_is_capped_by_max_retry_after_seconds(tmp_path: Path) -> None:
    async with rig(tmp_path, max_retry_after_seconds=120) as r:
        r.endpoint.script = [Answer(error=RateLimited("slow down", retry_after_seconds=999_999_999))]
        with pytest.raises(RateLimited) as refused:
            await r.service.get(KEY)
        assert refused.value.retry_after_seconds == 120
        assert "Retry after 120 s" in refused.value.render()
        await r.clock.sleep(120)
        await r.service.get(KEY)  # the process is not blocked beyond the cap
    assert r.starts() == [1000.0, 1120.0]


async def test_a_capped_retry_after_within_30_s_is_waited_out(tmp_path: Path) -> None:
    async with rig(tmp_path, max_retry_after_seconds=10) as r:
        r.endpoint.script = [Answer(error=RateLimited("slow down", retry_after_seconds=1e308))]
        await r.service.get(KEY)
    assert r.starts() == [1000.0, 1010.0]


async def test_every_retry_looks_at_the_store_first(tmp_path: Path) -> None:
    """A second server sharing the store stores the recording while this one waits to retry a 429:
    the retry must serve it from the store, not download it again."""
    async with rig(tmp_path) as r:

        def other_server_stores_it() -> None:
            r.repository.put(KEY, b"RIFF stored by the other server", metadata_for(KEY), "audio/wav")

        r.endpoint.script = [
            Answer(error=RateLimited("slow down", retry_after_seconds=5), on_request=other_server_stores_it)
        ]
        recording = await r.service.get(KEY)
    assert len(r.endpoint.requests) == 1
    assert recording.audio.sha256 == hashlib.sha256(b"RIFF stored by the other server").hexdigest()


async def test_failures_not_worth_retrying_reach_every_caller_once(tmp_path: Path) -> None:
    caught: list[BaseException] = []
    async with rig(tmp_path) as r:
        r.endpoint.script = [Answer(error=UpstreamTruncated("cut")) for _ in range(3)]

        async def get() -> None:
            try:
                await r.service.get(KEY)
            except UpstreamTruncated as exc:
                caught.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(get)
            tg.start_soon(get)
    assert len(r.endpoint.requests) == 3  # MAX_ATTEMPTS, shared by both callers
    assert len(caught) == 2
    assert r.repository.discarded == 3  # nothing partial was kept


# --- abandoned flights ----------------------------------------------------------------------


async def test_a_download_whose_callers_all_left_while_queued_is_never_requested(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        await r.service.get(KEY)  # t=1000
        leaving = anyio.CancelScope()

        async def impatient() -> None:
            with leaving:
                await r.service.get(OTHER)

        async with anyio.create_task_group() as tg:
            tg.start_soon(impatient)  # queued: due at 1005
            await all_tasks_blocked()
            tg.start_soon(r.service.get, THIRD)  # queued behind it: due at 1010
            await all_tasks_blocked()
            await r.clock.sleep(2)
            leaving.cancel()
    assert r.endpoint.requests == [(KEY, 1000.0), (THIRD, 1005.0)]


# --- reading the bytes: the same stored version ---------------------------------------------


async def test_read_audio_after_an_eviction_fetches_again_and_returns_one_version(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        first = await r.service.get(KEY)
        r.repository.before_read = lambda recording: r.repository.evict(recording.key)
        recording, data = await r.service.read_audio(KEY)
    assert len(r.endpoint.requests) == 2
    assert recording.audio.sha256 != first.audio.sha256  # a new download ...
    assert hashlib.sha256(data).hexdigest() == recording.audio.sha256  # ... and its own bytes


async def test_read_audio_of_a_recording_replaced_meanwhile_returns_the_replacement(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        await r.service.get(KEY)

        def replaced(recording: Recording) -> None:
            r.repository.put(KEY, b"RIFF a newer download", metadata_for(KEY), "audio/wav")

        r.repository.before_read = replaced
        recording, data = await r.service.read_audio(KEY)
    assert data == b"RIFF a newer download"
    assert recording.audio.sha256 == hashlib.sha256(data).hexdigest()


async def test_read_audio_gone_twice_is_reported(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        await r.service.get(KEY)

        def evict_always(recording: Recording) -> None:
            r.repository.evict(recording.key)
            r.repository.before_read = evict_always

        r.repository.before_read = evict_always
        with pytest.raises(RecordingGone):
            await r.service.read_audio(KEY)


async def test_read_audio_refuses_what_is_above_max_bytes(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        with pytest.raises(AudioTooLarge, match="more than this server returns"):
            await r.service.read_audio(KEY, max_bytes=3)


async def test_list_and_local_path_come_from_the_repository(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        recording = await r.service.get(KEY)
        assert await r.service.list_recordings() == [recording]
        assert r.service.local_path(recording) is None
        assert r.service.repository is r.repository


# --- coordination unavailable ---------------------------------------------------------------


class DownSpacer:
    """A shared spacer whose backend cannot be reached (what the Redis spacer raises then)."""

    interval = INTERVAL

    async def acquire(self, on_wait: OnWait | None = None) -> None:
        raise CoordinationUnavailable("down")

    async def defer(self, seconds: float) -> None:
        raise CoordinationUnavailable("down")

    async def deferred_for(self) -> float:
        raise CoordinationUnavailable("down")


async def test_without_coordination_stored_recordings_are_served_and_nothing_is_requested(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path, spacer=DownSpacer()) as r:
        stored = r.repository.put(KEY, b"RIFF stored", metadata_for(KEY), "audio/wav")
        assert await r.service.get(KEY) == stored
        assert (await r.service.read_audio(KEY))[1] == b"RIFF stored"
        with pytest.raises(CoordinationUnavailable) as refused:
            await r.service.get(OTHER)
    assert r.endpoint.requests == []
    assert refused.value.render().startswith("[coordination_unavailable]")


# --- two services sharing a store and the cache directory's lock files -----------------------


async def test_two_services_sharing_a_store_download_a_recording_once(tmp_path: Path) -> None:
    """As two server processes on one cache directory: the second waits for the first's download
    (hearing its progress) and then serves the stored recording."""
    repository = MemoryRepository()
    endpoint = ScriptedEndpoint()
    gate = anyio.Event()
    endpoint.script = [Answer(body=b"RIFF" + bytes(4000), chunks=4, gate=gate)]
    root = tmp_path / "cache" / "coordination"
    heard: list[Progress] = []
    results: list[Recording] = []
    async with AsyncExitStack() as stack:
        services = []
        for _ in range(2):
            flights = await stack.enter_async_context(SingleFlight[CallKey, Recording, Progress]())
            coordination = Coordination(
                "cache directory",
                FileSpacer(private_dir(root) / "spacing-test", 0.0),
                FileFlights(private_dir(root / "flights")),
            )
            services.append(
                RecordingService(
                    settings(tmp_path, min_interval_seconds=0),
                    repository=repository,
                    endpoint=endpoint,
                    coordination=coordination,
                    flights=flights,
                )
            )

        async def get(service: RecordingService, on_progress: Any = None) -> None:
            results.append(await service.get(KEY, on_progress))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(get, services[0])
                while not endpoint.requests:
                    await anyio.sleep(0.01)
                tg.start_soon(get, services[1], collect(heard))
                while not heard:
                    await anyio.sleep(0.01)
                gate.set()
    assert len(endpoint.requests) == 1
    assert results[0] == results[1]
    assert "another server process is fetching it" in heard[0].message
