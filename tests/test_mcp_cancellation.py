"""A client that cancels get_call_analytics: the work stops, its worker thread is given back, and a
caller still waiting for the same analysis gets it. Through the official MCP client: in this
process (a spy counts what the analysis reads), over Streamable HTTP and over stdio (subprocesses
whose threads psutil counts). Every wait is bounded, so a hang fails the test instead of blocking it.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import psutil
import pytest
from mcp import Client

from cte1_mcp.models import Recording
from cte1_mcp.simulator import BENCHMARK_TENANT, RunningSimulator
from tests.mcp_harness import in_process, server_env, stdio_server, structured
from tests.test_mcp_http import http_server

pytestmark = pytest.mark.anyio

#: A 22-minute two-channel recording (40 MiB): its analysis takes seconds, a cancel arrives within one.
LONG = {"tenantId": BENCHMARK_TENANT, "sessionId": 40, "recordId": 1}
ANALYSE = {**LONG, "timeline": False}
#: More than anyio's default thread limit (40): one leaked thread each would exhaust it.
CANCELS = 45
#: Threads a run of cancels may add to anyio's pool (idle, reused): far below one per cancel.
LEEWAY = 3
#: The whole run of cancels takes about 20 s; a hung server is killed after this.
WATCHDOG_SECONDS = 180


async def until(condition: Any, what: str, seconds: float = 60) -> None:
    """Wait for ``condition()`` (polled), failing after ``seconds`` instead of hanging."""
    with anyio.move_on_after(seconds):
        while not condition():
            await anyio.sleep(0.01)
        return
    raise AssertionError(f"waited {seconds} s for {what}")


class _CountingFile:
    def __init__(self, file: BinaryIO, spy: ReadSpy) -> None:
        self._file, self._spy = file, spy

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        self._spy.bytes_read += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        count: int = self._file.readinto(buffer)  # type: ignore[attr-defined]
        self._spy.bytes_read += count or 0
        return count

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)

    def __enter__(self) -> _CountingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._spy.open_now -= 1
        self._file.close()


class ReadSpy:
    """The real repository; counts the audio files the analysis opens (each is one computation),
    those still open (a computation under way) and the bytes read from them."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.opened = 0
        self.open_now = 0
        self.bytes_read = 0

    def open_audio(self, recording: Recording) -> _CountingFile:
        self.opened += 1
        self.open_now += 1
        return _CountingFile(self._real.open_audio(recording), self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class Spied:
    """The real recording service, whose repository the analysis reaches through a ReadSpy."""

    def __init__(self, service: Any) -> None:
        self._service = service
        self.repository = ReadSpy(service.repository)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._service, name)


@asynccontextmanager
async def spied(simulator: RunningSimulator, cache: Path) -> AsyncIterator[tuple[Client, ReadSpy]]:
    services: list[Spied] = []

    def wrap(service: Any) -> Spied:
        services.append(Spied(service))
        return services[0]

    async with in_process(simulator.url, cache, wrap=wrap) as client:
        structured(await client.call_tool("get_call_metadata", LONG))
        await client.call_tool("get_call_audio", LONG)  # stored: what follows is analysis only
        yield client, services[0].repository


def size_of(cache: Path) -> int:
    return max(p.stat().st_size for p in cache.rglob("*") if p.is_file())


async def test_the_only_caller_cancelling_stops_the_analysis_and_stores_nothing(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    async def ignore(progress: float, total: float | None, message: str | None) -> None:
        pass

    async with spied(simulator, tmp_path) as (client, spy):
        audio_bytes = size_of(tmp_path)
        async with anyio.create_task_group() as group:
            group.start_soon(
                partial(client.call_tool, "get_call_analytics", ANALYSE, progress_callback=ignore)
            )
            await until(lambda: spy.bytes_read > 0, "the analysis to start")
            group.cancel_scope.cancel()
        await until(lambda: spy.open_now == 0, "the cancelled analysis to end")
        # Before: its thread blocked for good delivering progress to a request that was gone
        # (without progress: it read the whole recording, and its result was thrown away).
        assert spy.bytes_read < audio_bytes / 2, (spy.bytes_read, audio_bytes)
        assert not list(tmp_path.rglob("analytics-*.json"))  # nothing partial stored
        with anyio.fail_after(120):
            result = await client.call_tool("get_call_analytics", ANALYSE)
    assert structured(result)["analytics"]["durationSeconds"] > 1300
    assert spy.opened == 2  # computed afresh


async def test_a_caller_still_waiting_gets_the_analysis_another_cancelled(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    heard: list[str | None] = []

    async def first(progress: float, total: float | None, message: str | None) -> None:
        pass

    async def second(progress: float, total: float | None, message: str | None) -> None:
        heard.append(message)

    results: list[Any] = []

    async def joined() -> None:
        results.append(await client.call_tool("get_call_analytics", ANALYSE, progress_callback=second))

    async with spied(simulator, tmp_path) as (client, spy), anyio.create_task_group() as outer:
        with anyio.fail_after(120):
            async with anyio.create_task_group() as cancelled:
                cancelled.start_soon(
                    partial(client.call_tool, "get_call_analytics", ANALYSE, progress_callback=first)
                )
                await until(lambda: spy.bytes_read > 0, "the analysis to start")
                outer.start_soon(joined)
                await until(lambda: heard, "the second caller to hear the shared analysis")
                cancelled.cancel_scope.cancel()
            await until(lambda: results, "the second caller's result")
        again = await client.call_tool("get_call_analytics", ANALYSE)  # stored: a warm hit
    analytics = structured(results[0])["analytics"]
    assert analytics["durationSeconds"] > 1300
    assert structured(again)["analytics"] == analytics
    assert spy.opened == 1  # one analysis, kept for the caller left and for the next call


def server_process(pid: int) -> psutil.Process:
    """This test's server child (the newest process running cte1_mcp under ``pid``)."""
    children = [
        child
        for child in psutil.Process(pid).children(recursive=True)
        if "cte1_mcp" in " ".join(child.cmdline())
    ]
    return max(children, key=lambda child: child.create_time())


async def cancel_once_analysing(client: Client) -> None:
    """get_call_analytics with a progress token, cancelled on its first progress."""
    started = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        started.set()

    async with anyio.create_task_group() as group:
        group.start_soon(
            partial(client.call_tool, "get_call_analytics", ANALYSE, progress_callback=on_progress)
        )
        with anyio.fail_after(60):
            await started.wait()
        group.cancel_scope.cancel()


async def check_cancels_free_threads(client: Client) -> None:
    import os

    structured(await client.call_tool("get_call_metadata", LONG))
    await client.call_tool("get_call_audio", LONG)
    server = server_process(os.getpid())
    # A server stuck on blocked threads stops neither on its own nor on SIGTERM, and the client
    # waits for it: past the bound (or on a failure) it is killed, and the test fails instead of hanging.
    watchdog = threading.Timer(WATCHDOG_SECONDS, server.kill)
    watchdog.start()
    try:
        await cancels_free_threads(client, server)
    except BaseException:
        server.kill()
        raise
    finally:
        watchdog.cancel()
    assert server.is_running(), f"the server was killed after {WATCHDOG_SECONDS} s: it hung"


async def cancels_free_threads(client: Client, server: psutil.Process) -> None:
    baseline = server.num_threads()
    for _ in range(CANCELS):  # one after another
        await cancel_once_analysing(client)
    sequential = server.num_threads()
    async with anyio.create_task_group() as group:  # all at once
        for _ in range(CANCELS):
            group.start_soon(cancel_once_analysing, client)
    # The burst grows anyio's pool (each call reads the store in a thread of its own for a moment);
    # idle threads stay there for reuse. A leaked thread would not be reused: the count would grow
    # by one with every cancel that follows.
    burst = server.num_threads()
    for _ in range(CANCELS):
        await cancel_once_analysing(client)
    after = server.num_threads()
    print(
        f"server threads: {baseline} at first, {sequential} after {CANCELS} cancels in a row, "
        f"{burst} after {CANCELS} at once, {after} after {CANCELS} more in a row"
    )
    # Before: the first cancel left a thread blocked for good and every later analysis of the
    # recording waited for it (over stdio, 40 of them froze the server). Now a cancelled thread
    # ends within one block and goes back to the pool, where the next call reuses it.
    assert sequential <= baseline + LEEWAY, (baseline, sequential)
    assert after <= burst + LEEWAY, (burst, after)
    with anyio.fail_after(120):  # the pool is not exhausted: clips and analyses still answer
        clip = await client.call_tool("get_call_clip", {**LONG, "startSeconds": 10, "endSeconds": 12})
        assert structured(clip)["clip"]["durationSeconds"] == pytest.approx(2)
        analysis = await client.call_tool("get_call_analytics", ANALYSE)
        assert structured(analysis)["analytics"]["durationSeconds"] > 1300


async def test_cancelled_analyses_give_their_threads_back_over_http(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    with http_server(server_env(simulator.url, tmp_path / "cache")) as url:
        async with Client(url) as client:
            await check_cancels_free_threads(client)


async def test_cancelled_analyses_give_their_threads_back_over_stdio(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    async with stdio_server(server_env(simulator.url, tmp_path / "cache")) as client:
        await check_cancels_free_threads(client)
