"""Part 5, coordination: one platform limit across processes, and what sharing it costs.

* 4 server processes x 10 distinct cold keys, all asked at once by every process: upstream
  requests (should be 10), the smallest start-to-start gap at the simulator (which answers 429 to
  any request closer than the interval), and the total time against (n - 1) x interval; once
  through the cache directory (lock files) and once through one Redis;
* a warm call (get_call_metadata on a stored recording) with each backend: it never reaches
  coordination, so it should cost the same;
* one slot reservation and one claim (taken and released), in process, per backend.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import anyio
from mcp import Client
from tests.helpers.redis_server import RedisServer, running_redis

from bench.mcpstdio import Upstream, serve, server_env, structured, timed_call
from bench.simlog import logging_simulator
from bench.simproc import benchmark_key
from bench.stats import Summary, percentile
from cte1_mcp.coordination.base import Flights, Spacer
from cte1_mcp.coordination.local import LocalFlights, RequestSpacer
from cte1_mcp.coordination.lockfiles import FileFlights, FileSpacer
from cte1_mcp.coordination.redis_backend import RedisFlights, RedisLink, RedisSpacer
from cte1_mcp.models import CallKey
from cte1_mcp.repository.local.posix import private_dir

BACKENDS = ("in-process", "cache directory", "redis")
STORED = {"tenantId": "05053698341", "sessionId": 942125, "recordId": 1}
#: An interval small enough never to be waited for: what is measured is the reservation itself.
NO_WAIT = 1e-6


@dataclass(frozen=True, slots=True)
class FleetRun:
    backend: str
    processes: int
    keys: int
    interval: float
    arrivals: list[float]
    statuses: list[int]
    total_seconds: float

    @property
    def gaps(self) -> list[float]:
        return [b - a for a, b in itertools.pairwise(self.arrivals)]

    @property
    def smallest_gap(self) -> float:
        return min(self.gaps)

    @property
    def floor_seconds(self) -> float:
        return (self.keys - 1) * self.interval

    @property
    def refused(self) -> int:
        return sum(1 for status in self.statuses if status != 200)


@dataclass(frozen=True, slots=True)
class CoordinationResult:
    fleets: list[FleetRun]
    #: Per backend: median (and min-max over repetitions) of one call, in microseconds.
    reservation_us: dict[str, Summary]
    claim_us: dict[str, Summary]
    #: Per backend: p50 of warm get_call_metadata per repetition, in milliseconds (stdio servers).
    warm_ms: dict[str, Summary]


async def fleet(
    backend: str,
    processes: int,
    keys: int,
    interval: float,
    redis_url: str | None,
    workdir: Path,
    errlog: TextIO,
) -> FleetRun:
    """``processes`` servers sharing one cache directory, each asking for all ``keys`` at once."""
    cache = workdir / f"cache-fleet-{backend.replace(' ', '-')}"
    with logging_simulator(min_interval=interval) as sim:
        upstream = Upstream(sim.url, sim.api_key, sim.source_uuid)
        extra = {"CTE1_REDIS_URL": redis_url} if redis_url else {}
        env = server_env(upstream, cache, CTE1_MIN_INTERVAL_SECONDS=f"{interval:g}", **extra)
        calls = [{**benchmark_key(mib), "inline": False} for mib in range(1, keys + 1)]
        try:
            async with AsyncExitStack() as stack:
                clients = [
                    (await stack.enter_async_context(serve(env, errlog))).client for _ in range(processes)
                ]
                start = time.perf_counter()
                async with anyio.create_task_group() as tg:
                    for client, arguments in itertools.product(clients, calls):
                        tg.start_soon(_ok, client, arguments)
                total = time.perf_counter() - start
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        logged = sim.requests()
    return FleetRun(
        backend,
        processes,
        keys,
        interval,
        sorted(r.monotonic for r in logged),
        [r.status for r in logged],
        total,
    )


async def _ok(client: Client, arguments: dict[str, Any]) -> None:
    structured(await client.call_tool("get_call_audio", arguments))


async def warm(redis_url: str | None, repetitions: int, calls: int, workdir: Path, errlog: TextIO) -> Summary:
    cache = workdir / "cache-coordination-warm"
    p50s = []
    with logging_simulator() as sim:
        upstream = Upstream(sim.url, sim.api_key, sim.source_uuid)
        extra = {"CTE1_REDIS_URL": redis_url} if redis_url else {}
        try:
            async with serve(server_env(upstream, cache, **extra), errlog) as served:
                structured(
                    (await timed_call(served.client, "get_call_audio", {**STORED, "inline": False}))[1]
                )
                for _ in range(repetitions):
                    latencies = []
                    for _ in range(calls):
                        seconds, result = await timed_call(served.client, "get_call_metadata", STORED)
                        structured(result)
                        latencies.append(seconds)
                    p50s.append(percentile(latencies, 50) * 1e3)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    return Summary.of(p50s)


@asynccontextmanager
async def backend_parts(
    backend: str, redis: RedisServer, workdir: Path
) -> AsyncIterator[tuple[Spacer, Flights]]:
    if backend == "in-process":
        yield RequestSpacer(NO_WAIT), LocalFlights()
    elif backend == "cache directory":
        root = private_dir(workdir / "cache-reservations" / "coordination")
        yield FileSpacer(root / "spacing-bench", NO_WAIT), FileFlights(private_dir(root / "flights"))
    else:
        link = RedisLink(redis.url, "bench")
        try:
            async with RedisFlights(link) as flights:
                yield RedisSpacer(link, NO_WAIT), flights
        finally:
            await link.aclose()


async def per_call_us(repetitions: int, calls: int, action: Callable[[], Awaitable[None]]) -> Summary:
    """Median over repetitions of the mean time of one ``action``, in microseconds."""
    means = []
    for _ in range(repetitions):
        start = time.perf_counter()
        for _ in range(calls):
            await action()
        means.append((time.perf_counter() - start) / calls * 1e6)
    return Summary.of(means)


async def run(
    processes: int, keys: int, interval: float, repetitions: int, errlog: TextIO, say: TextIO
) -> CoordinationResult:
    workdir = Path(tempfile.mkdtemp(prefix="cte1-bench-coordination-"))
    try:
        with running_redis(workdir) as redis:
            fleets = []
            for backend, url in (("cache directory", None), ("redis", redis.url)):
                run_ = await fleet(backend, processes, keys, interval, url, workdir, errlog)
                print(
                    f"  {backend}: {processes} processes x {keys} keys -> {len(run_.arrivals)} requests, "
                    f"smallest gap {run_.smallest_gap:.3f} s, {run_.total_seconds:.2f} s",
                    file=say,
                    flush=True,
                )
                fleets.append(run_)
            reservation: dict[str, Summary] = {}
            claim: dict[str, Summary] = {}
            for backend in BACKENDS:
                async with backend_parts(backend, redis, workdir) as (spacer, flights):
                    reservation[backend] = await per_call_us(repetitions, 500, spacer.acquire)

                    async def claim_and_release(flights: Flights = flights) -> None:
                        async with flights.claim(CallKey("1", 1, 1)):
                            pass

                    claim[backend] = await per_call_us(repetitions, 500, claim_and_release)
            warm_ms = {
                "cache directory": await warm(None, repetitions, 100, workdir, errlog),
                "redis": await warm(redis.url, repetitions, 100, workdir, errlog),
            }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return CoordinationResult(fleets, reservation, claim, warm_ms)
