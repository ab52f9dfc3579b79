"""A second process for the coordination tests: takes a slot or a claim, says so, then waits to be killed.

    python -m tests.helpers.coordination_child slot  <cache-dir | redis-url> <interval>
    python -m tests.helpers.coordination_child claim <cache-dir | redis-url> <lease-seconds>

``slot`` takes one start (now) and queues for the next, printing ``queued`` once it waits for it
and ``started <CLOCK_MONOTONIC seconds>`` when it may start; ``claim`` holds the claim of ``KEY`` and prints ``claimed``. Either then sleeps until killed.
Tests start it with ``child(...)``, which returns once it said so.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import anyio

from cte1_mcp.coordination.base import Flights, Spacer
from cte1_mcp.coordination.lockfiles import FileFlights, FileSpacer
from cte1_mcp.models import CallKey
from cte1_mcp.repository.local.posix import private_dir

KEY = CallKey("05053698341", 942125, 1)
PLATFORM = "test-platform"


@asynccontextmanager
async def backend(where: str, number: float) -> AsyncIterator[tuple[Spacer, Flights]]:
    if where.startswith(("redis://", "unix://")):
        from cte1_mcp.coordination.redis_backend import RedisFlights, RedisLink, RedisSpacer

        link = RedisLink(where, PLATFORM)
        try:
            async with RedisFlights(link, lease_seconds=number) as flights:
                yield RedisSpacer(link, number), flights
        finally:
            await link.aclose()
        return
    root = private_dir(Path(where) / "coordination")
    yield FileSpacer(root / f"spacing-{PLATFORM}", number), FileFlights(private_dir(root / "flights"))


@contextmanager
def child(mode: str, where: str, number: float, ready: str) -> Iterator[subprocess.Popen[str]]:
    """The helper process, once it has printed ``ready``; killed with SIGKILL at the end if still alive."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.helpers.coordination_child", mode, where, str(number)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent.parent,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line == ready, f"child said {line!r}"
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


async def main(mode: str, where: str, number: float) -> None:
    async with backend(where, number) as (spacer, flights):
        if mode == "slot":
            await spacer.acquire()
            told = False

            async def queued(seconds: float) -> None:
                nonlocal told
                if not told:
                    told = True
                    print("queued", flush=True)

            await spacer.acquire(queued)
            print(f"started {time.monotonic():.6f}", flush=True)
        else:
            async with flights.claim(KEY):
                print("claimed", flush=True)
                await anyio.sleep_forever()
        await anyio.sleep_forever()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], float(sys.argv[3]))
