"""Part 3, economy: identical concurrent calls share one upstream request; distinct ones keep the spacing."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import anyio
from mcp import Client
from mcp_types import CallToolResult

from bench.mcpstdio import Upstream, serve, server_env, structured
from bench.simlog import LoggingSimulator, logging_simulator
from bench.simproc import benchmark_key


@dataclass(frozen=True, slots=True)
class SingleFlightRun:
    mib: int
    callers: int
    upstream_requests: int
    distinct_sha256: int


@dataclass(frozen=True, slots=True)
class SpacingRun:
    keys: int
    interval: float
    starts: list[float]
    total_seconds: float

    @property
    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.starts, self.starts[1:], strict=False)]

    @property
    def smallest_gap(self) -> float:
        return min(self.gaps)

    @property
    def floor_seconds(self) -> float:
        """(n - 1) x interval: the least time n spaced requests can take."""
        return (self.keys - 1) * self.interval


@dataclass(frozen=True, slots=True)
class EconomyResult:
    single_flight: list[SingleFlightRun]
    spacing: SpacingRun


async def _all(client: Client, calls: list[dict[str, Any]]) -> list[CallToolResult]:
    results: list[CallToolResult | None] = [None] * len(calls)

    async def one(i: int, arguments: dict[str, Any]) -> None:
        results[i] = await client.call_tool("get_call_audio", arguments)

    async with anyio.create_task_group() as tg:
        for i, arguments in enumerate(calls):
            tg.start_soon(one, i, arguments)
    return [r for r in results if r is not None]


async def single_flight(
    sim: LoggingSimulator, upstream: Upstream, callers: int, sizes: list[int], workdir: Path, errlog: TextIO
) -> list[SingleFlightRun]:
    """``callers`` identical get_call_audio calls at once on a cold key; one key per repetition."""
    cache = workdir / "cache-single-flight"
    runs = []
    try:
        async with serve(server_env(upstream, cache), errlog) as served:
            for mib in sizes:
                key = benchmark_key(mib)
                results = await _all(served.client, [{**key, "inline": False}] * callers)
                digests = {structured(r)["audio"]["sha256"] for r in results}
                upstream_requests = sum(1 for r in sim.requests() if r.is_for(key))
                runs.append(SingleFlightRun(mib, len(results), upstream_requests, len(digests)))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return runs


async def spacing(
    sim: LoggingSimulator, upstream: Upstream, keys: int, interval: float, workdir: Path, errlog: TextIO
) -> SpacingRun:
    """``keys`` distinct cold keys at once, with CTE1_MIN_INTERVAL_SECONDS=interval: request start times."""
    cache = workdir / "cache-spacing"
    env = server_env(upstream, cache, CTE1_MIN_INTERVAL_SECONDS=f"{interval:g}")
    calls = [{**benchmark_key(mib), "inline": False} for mib in range(1, keys + 1)]
    try:
        async with serve(env, errlog) as served:
            sim.reset()
            start = time.perf_counter()
            results = await _all(served.client, calls)
            total = time.perf_counter() - start
            for result in results:
                structured(result)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    starts = sorted(r.monotonic for r in sim.requests())
    if len(starts) != keys:
        raise RuntimeError(f"{keys} distinct keys made {len(starts)} upstream requests")
    return SpacingRun(keys, interval, starts, total)


async def run(
    callers: int,
    single_flight_sizes: list[int],
    keys: int,
    interval: float,
    workdir: Path,
    errlog: TextIO,
) -> EconomyResult:
    with logging_simulator(min_interval=0) as sim:
        upstream = Upstream(sim.url, sim.api_key, sim.source_uuid)
        flights = await single_flight(sim, upstream, callers, single_flight_sizes, workdir, errlog)
        spaced = await spacing(sim, upstream, keys, interval, workdir, errlog)
    return EconomyResult(flights, spaced)
