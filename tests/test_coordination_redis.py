"""The Redis backend against a real redis-server on loopback: spacing, Retry-After, claims, outages."""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from cte1_mcp.coordination import open_coordination
from cte1_mcp.coordination.redis_backend import RedisFlights, RedisLink, RedisSpacer
from cte1_mcp.errors import ConfigurationError, CoordinationUnavailable
from cte1_mcp.models import CallKey
from cte1_mcp.progress import Progress
from cte1_mcp.settings import Settings, load_settings
from cte1_mcp.simulator import DEFAULT_API_KEY, DEFAULT_SOURCE_UUID
from tests.helpers.coordination_child import KEY, PLATFORM, child
from tests.helpers.recorder import Recorder
from tests.helpers.redis_server import RedisServer
from tests.test_mcp_http import free_port

pytestmark = pytest.mark.anyio

INTERVAL = 0.3


@asynccontextmanager
async def machine(
    redis_server: RedisServer, interval: float = INTERVAL
) -> AsyncIterator[tuple[RedisSpacer, RedisFlights]]:
    """One process's (or machine's) view: its own client and connections."""
    link = RedisLink(redis_server.url, PLATFORM)
    try:
        async with RedisFlights(link, lease_seconds=1.0) as flights:
            yield RedisSpacer(link, interval), flights
    finally:
        await link.aclose()


async def test_two_machines_share_the_spacing_in_arrival_order(redis_server: RedisServer) -> None:
    scheduled: dict[int, float] = {}
    async with machine(redis_server) as (a, _), machine(redis_server) as (b, _):
        spacers = [a, b]

        async def caller(index: int) -> None:
            async def on_wait(seconds: float) -> None:
                # The start the script handed out, on this process's clock (wake-ups may be late).
                scheduled.setdefault(index, time.monotonic() + seconds)

            await spacers[index % 2].acquire(on_wait)

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for index in range(6):
                    tg.start_soon(caller, index)
                    await anyio.sleep(0.05)  # arrival order 0..5
    # On a fresh Redis even the first start waits one interval, so every caller was scheduled.
    starts = [scheduled[index] for index in range(6)]
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert min(gaps) >= INTERVAL - 0.01, gaps  # a round trip of noise in reading the clock


async def test_waiting_for_a_slot_costs_two_commands_not_a_polling_storm(redis_server: RedisServer) -> None:
    client = redis_server.client()
    link = RedisLink(redis_server.url, PLATFORM)
    try:
        spacer = RedisSpacer(link, 1.0, notify_every=0.1)
        await spacer.acquire()
        client.config_resetstat()
        await spacer.acquire()  # waits about a second, told the wait ten times
        stats = client.info("commandstats")
    finally:
        await link.aclose()
    client.close()
    calls = {name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in stats.items()}
    # The reservation and its confirmation at the slot; what they run inside (TIME, HGET, HSET)
    # is no round trip. Polling at each notification would make ten.
    assert calls.pop("evalsha") == 2
    assert set(calls) <= {"time", "hget", "hset", "config"}, calls


async def test_retry_after_holds_back_every_machine(redis_server: RedisServer) -> None:
    async with machine(redis_server) as (a, _), machine(redis_server) as (b, _):
        await a.defer(30)
        await a.defer(5)
        assert 29 < await b.deferred_for() <= 30
        reports: Recorder[float] = Recorder()

        with anyio.move_on_after(0.3):
            await b.acquire(reports)
    assert reports and reports[0] > 29


async def test_a_cancelled_waiter_at_the_end_of_the_queue_frees_its_slot(redis_server: RedisServer) -> None:
    async with machine(redis_server, interval=5.0) as (spacer, _):
        with anyio.move_on_after(0.1):
            await spacer.acquire()  # a fresh server: the first start waits one interval too
        reports: Recorder[float] = Recorder()

        with anyio.move_on_after(0.1):
            await spacer.acquire(reports)
    assert 4.0 < reports[0] <= 5.0, reports  # not 10: the cancelled slot was given back


async def test_a_claim_is_exclusive_and_its_progress_reaches_the_other_machine(
    redis_server: RedisServer,
) -> None:
    heard: list[Progress] = []
    order: list[str] = []

    async def on_progress(progress: Progress) -> None:
        heard.append(progress)

    async with machine(redis_server) as (_, holder), machine(redis_server) as (_, waiter):

        async def wait_for_it() -> None:
            async with waiter.claim(KEY, on_progress):
                order.append("waiter")

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg, holder.claim(KEY) as claim:
                tg.start_soon(wait_for_it)
                while not heard:
                    await claim.publish(Progress("downloading", 10, 100, "received 10 of 100 bytes"))
                    await anyio.sleep(0.25)
                order.append("holder")
    assert order == ["holder", "waiter"]
    assert heard[0].done == 10 and heard[0].total == 100 and "received 10 of 100" in heard[0].message


async def test_a_holder_that_keeps_streaming_keeps_its_lease(redis_server: RedisServer) -> None:
    async with machine(redis_server) as (_, holder), machine(redis_server) as (_, other), holder.claim(KEY):
        with anyio.move_on_after(2.5) as blocked:  # 2.5 leases of 1 s: renewed meanwhile
            async with other.claim(KEY):
                pass
        assert blocked.cancelled_caught


async def test_a_killed_holder_frees_the_recording_when_its_lease_runs_out(redis_server: RedisServer) -> None:
    with child("claim", redis_server.url, 1.0, ready="claimed") as process:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    async with machine(redis_server) as (_, flights):
        with anyio.fail_after(5):
            async with flights.claim(KEY):
                pass


async def test_redis_down_refuses_then_recovers_conservatively(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with machine(redis_server) as (spacer, flights):
        await spacer.acquire()
        redis_server.stop()
        with pytest.raises(CoordinationUnavailable) as refused:
            await spacer.acquire()
        assert refused.value.render().startswith("[coordination_unavailable]")
        with pytest.raises(CoordinationUnavailable):
            await spacer.deferred_for()
        with pytest.raises(CoordinationUnavailable):
            async with flights.claim(KEY):
                pass
        assert any("unavailable" in r.getMessage() and r.levelname == "ERROR" for r in caplog.records)
        redis_server.start()  # empty: its spacing state is lost
        before = time.monotonic()
        await spacer.acquire()
        # A start may have been made just before the restart: the first after it waits an interval.
        assert time.monotonic() - before >= INTERVAL - 0.05
        async with flights.claim(KEY):
            pass
    assert any("answers again" in r.getMessage() for r in caplog.records)


async def test_keys_name_the_hashed_platform_never_the_api_key(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    settings = Settings(
        base_url="http://127.0.0.1:9",
        source_uuid=DEFAULT_SOURCE_UUID,
        api_key=DEFAULT_API_KEY,
        cache_dir=tmp_path,
        redis_url=redis_server.url,
        min_interval_seconds=0,
    )
    async with open_coordination(settings) as coordination:
        assert coordination.name == "redis"
        await coordination.spacer.acquire()
        async with coordination.flights.claim(CallKey("1", 2, 3)):
            names = [key.decode() for key in redis_server.client().keys("*")]
    assert names and all(name.startswith("cte1-mcp:") for name in names)
    assert not any(DEFAULT_API_KEY in name or DEFAULT_SOURCE_UUID in name for name in names)
    assert not (tmp_path / "coordination").exists()  # Redis replaces the lock files


async def test_a_unix_socket_url_works(redis_server: RedisServer) -> None:
    link = RedisLink(f"unix://{redis_server.socket}", PLATFORM)
    try:
        async with RedisFlights(link) as flights:
            await RedisSpacer(link, 0).acquire()
            async with flights.claim(KEY):
                pass
    finally:
        await link.aclose()


async def test_an_unreachable_redis_never_shows_its_password(caplog: pytest.LogCaptureFixture) -> None:
    link = RedisLink(f"redis://:s3cret-pass@127.0.0.1:{free_port()}/0", PLATFORM)
    try:
        with pytest.raises(CoordinationUnavailable) as refused:
            await RedisSpacer(link, 0).acquire()
    finally:
        await link.aclose()
    assert "s3cret-pass" not in refused.value.render()
    assert caplog.records and not any("s3cret-pass" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "", "127.0.0.1:6379"])
def test_a_redis_url_of_another_scheme_is_refused_without_echoing_it(url: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as refused:
        load_settings(
            base_url="http://127.0.0.1:9",
            source_uuid=DEFAULT_SOURCE_UUID,
            api_key=DEFAULT_API_KEY,
            cache_dir=tmp_path,
            redis_url=url,
        )
    message = refused.value.render()
    assert "CTE1_REDIS_URL" in message and "redis://, rediss:// or unix://" in message
    assert not url or url not in message


async def test_a_redis_down_at_start_up_is_logged_at_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(
        base_url="http://127.0.0.1:9",
        source_uuid=DEFAULT_SOURCE_UUID,
        api_key=DEFAULT_API_KEY,
        cache_dir=tmp_path,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
    )
    async with open_coordination(settings) as coordination:
        assert [r.levelname for r in caplog.records if "unavailable" in r.getMessage()] == ["ERROR"]
        with pytest.raises(CoordinationUnavailable):
            await coordination.spacer.acquire()
    # One line per outage, not one per refused request.
    assert len([r for r in caplog.records if "unavailable" in r.getMessage()]) == 1


async def test_a_waiter_does_not_poll_for_the_end_of_a_download(redis_server: RedisServer) -> None:
    client = redis_server.client()
    async with (
        machine(redis_server) as (_, holder),
        machine(redis_server) as (_, waiter),
        holder.claim(KEY),
    ):
        client.config_resetstat()
        with anyio.move_on_after(2.0):  # two leases of 1 s: it wakes when one would have run out
            async with waiter.claim(KEY):
                pass
        stats = client.info("commandstats")
    client.close()
    calls = {name.removeprefix("cmdstat_"): int(stat["calls"]) for name, stat in stats.items()}
    # Per lease period one SET NX and one PTTL; a 50 ms poll would make 40 of each.
    assert calls.get("set", 0) + calls.get("pttl", 0) <= 8, calls


async def test_a_process_killed_while_queued_stalls_the_others_one_interval_at_most(
    redis_server: RedisServer,
) -> None:
    interval = 0.5
    with child("slot", redis_server.url, interval, ready="queued") as process:
        queued_at = time.monotonic()
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    async with machine(redis_server, interval) as (spacer, _):
        with anyio.fail_after(10):
            await spacer.acquire()
    waited = time.monotonic() - queued_at
    # Its queued slot went unused (one interval); nothing else was held by the dead process.
    assert interval <= waited < 2 * interval + 1.5, waited
