"""Coordination inside one process: the FIFO spacer, and flights that need no cross-process claim.

The in-process ``SingleFlight`` already makes one download per key in a process, so the local
``Flights`` only has to grant the claim. The spacer queues its waiters as tickets: only the head
may start, and only once ``interval`` has passed since the previous start.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

import anyio
import anyio.lowlevel

from cte1_mcp.coordination.base import OnWait
from cte1_mcp.models import CallKey
from cte1_mcp.progress import Progress, ProgressCallback


class Clock(Protocol):
    """Monotonic time and sleeping, injectable so the spacing can be tested without real waits."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class MonotonicClock:
    """The real clock: immune to wall-clock jumps, which must never shorten the spacing."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class RequestSpacer:
    """Upstream requests of this process start at least ``interval`` seconds apart, in arrival order.

    A waiter that is cancelled simply leaves the queue: nobody's start is consumed, and the ones
    behind it move up (no gap is left in the schedule).
    """

    def __init__(self, interval: float, clock: Clock | None = None, *, notify_every: float = 1.0) -> None:
        if interval < 0:
            raise ValueError("interval must be >= 0")
        if notify_every <= 0:
            raise ValueError("notify_every must be > 0")
        self._interval = interval
        self._clock: Clock = clock or MonotonicClock()
        self._notify_every = notify_every
        self._last_start: float | None = None
        self._not_before: float | None = None
        self._queue: deque[object] = deque()

    @property
    def interval(self) -> float:
        return self._interval

    async def defer(self, seconds: float) -> None:
        due = self._clock.now() + max(seconds, 0.0)
        self._not_before = due if self._not_before is None else max(self._not_before, due)
        await anyio.lowlevel.checkpoint()

    async def deferred_for(self) -> float:
        await anyio.lowlevel.checkpoint()
        if self._not_before is None:
            return 0.0
        return max(0.0, self._not_before - self._clock.now())

    async def acquire(self, on_wait: OnWait | None = None) -> None:
        """Return when the caller may start; ``on_wait(seconds_left)`` is called before each sleep,
        at least every ``notify_every`` seconds. It should be quick: the caller's turn waits for it."""
        if self._interval == 0 and (self._not_before is None or self._not_before <= self._clock.now()):
            await anyio.lowlevel.checkpoint()
            return
        ticket = object()
        self._queue.append(ticket)
        try:
            while (remaining := self._remaining(ticket)) > 0:
                if on_wait is not None:
                    await on_wait(remaining)
                await self._clock.sleep(min(remaining, self._notify_every))
            self._last_start = self._clock.now()
        finally:
            self._queue.remove(ticket)

    def _remaining(self, ticket: object) -> float:
        """Seconds until ``ticket`` may start: its place in the queue times the interval, at least."""
        now = self._clock.now()
        head_due = now if self._last_start is None else max(now, self._last_start + self._interval)
        if self._not_before is not None:
            head_due = max(head_due, self._not_before)
        return head_due + self._queue.index(ticket) * self._interval - now


class _LocalClaim:
    async def publish(self, progress: Progress) -> None:
        """Nobody outside this process waits: its own callers hear the flight's events directly."""
        await anyio.lowlevel.checkpoint()


class LocalFlights:
    """The claim is always free: the process's ``SingleFlight`` already runs one download per key."""

    @asynccontextmanager
    async def claim(
        self, key: CallKey, on_progress: ProgressCallback | None = None
    ) -> AsyncIterator[_LocalClaim]:
        await anyio.lowlevel.checkpoint()
        yield _LocalClaim()
