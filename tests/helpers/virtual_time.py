"""Virtual monotonic time for asyncio tests: sleeps jump to their deadline once every task is blocked.

So spacing of seconds is tested in microseconds, exactly, and a hang is a failure after 10 real
seconds rather than a stuck suite.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.lowlevel

#: Tasks that only move virtual time; a test waiting for "everything blocked" does not wait for them.
_CLOCK_TASKS: set[asyncio.Task[object]] = set()


async def all_tasks_blocked() -> None:
    """Return once every other task waits on something (anyio's own helper polls every 0.1 s).

    A clock's autojump task counts as blocked here, while a task spinning in this function counts
    as busy to the autojump: so virtual time never moves while a test waits for things to settle.
    """
    this = asyncio.current_task()
    while True:
        await anyio.lowlevel.checkpoint()
        others = (task for task in asyncio.all_tasks() if task is not this and task not in _CLOCK_TASKS)
        if all(_blocked(task) for task in others):
            return


async def _everything_else_blocked() -> None:
    this = asyncio.current_task()
    while True:
        await anyio.lowlevel.checkpoint()
        if all(_blocked(task) for task in asyncio.all_tasks() if task is not this):
            return


def _blocked(task: asyncio.Task[object]) -> bool:
    waiter = getattr(task, "_fut_waiter", None)
    return waiter is not None and not waiter.done()


class FakeClock:
    """Virtual monotonic seconds that jump to the next deadline whenever every task is blocked."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._order = itertools.count()
        self._new_sleeper = anyio.Event()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        event = anyio.Event()
        heapq.heappush(self._sleepers, (self._now + max(seconds, 0.0), next(self._order), event))
        self._new_sleeper.set()
        await event.wait()

    async def autojump(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        _CLOCK_TASKS.add(task)
        try:
            await self._jump_forever()
        finally:
            _CLOCK_TASKS.discard(task)

    async def _jump_forever(self) -> None:
        while True:
            await _everything_else_blocked()
            if not self._sleepers:
                self._new_sleeper = anyio.Event()
                await self._new_sleeper.wait()
                continue
            deadline, _, event = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            event.set()


@asynccontextmanager
async def virtual_time() -> AsyncIterator[FakeClock]:
    clock = FakeClock()
    with anyio.fail_after(10):  # real seconds: a hang is a failure, not a stuck suite
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            yield clock
            tg.cancel_scope.cancel()
