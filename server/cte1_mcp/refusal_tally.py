"""Refusals anybody can cause, bounded in the log: the first after a quiet interval is reported in
full, the rest counted and reported together, once per interval, so a sender's rate never becomes
the rate of log or audit lines (a server stopping gracefully reports what it counted; one killed,
or stopped by a second Ctrl-C, may not).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

import anyio


@dataclass(frozen=True, slots=True)
class Summary:
    """The refusals counted since ``since`` (local time), by code."""

    counts: Counter[str]
    since: datetime

    @property
    def total(self) -> int:
        return self.counts.total()


class RefusalTally:
    """``admit`` says whether to report a refusal; the others reach ``report`` as one ``Summary``
    at the end of the interval that counted them (in a task of the running event loop)."""

    def __init__(self, interval: float, report: Callable[[Summary], Awaitable[None]]) -> None:
        self.interval = interval
        self._report = report
        self._quiet_until = float("-inf")  # time.monotonic(): until then, refusals are counted
        self._counts: Counter[str] = Counter()
        self._since = datetime.now().astimezone()
        self._flush: asyncio.Task[None] | None = None  # held: the loop keeps only a weak reference
        self._stopping: asyncio.Event | None = None  # the pending flush's, made in its loop

    def admit(self, code: str) -> bool:
        now = time.monotonic()
        if not self._counts and now >= self._quiet_until:
            self._quiet_until = now + self.interval
            return True
        if not self._counts:
            self._since = datetime.now().astimezone()
            self._stopping = asyncio.Event()
            self._flush = asyncio.get_running_loop().create_task(self._flush_later(self._stopping))
        self._counts[code] += 1
        return False

    async def close(self) -> None:
        """Report what is counted now (the server is stopping gracefully): the pending flush is woken,
        not cancelled, so a report already being written is finished, never cut."""
        if self._stopping is not None:
            self._stopping.set()
        if self._flush is not None:
            await asyncio.wait([self._flush])
        await self._report_counted()

    async def _flush_later(self, stopping: asyncio.Event) -> None:
        with anyio.move_on_after(self._quiet_until - time.monotonic()):
            await stopping.wait()
        await self._report_counted()

    async def _report_counted(self) -> None:
        if self._counts:
            summary = Summary(self._counts, self._since)
            self._counts = Counter()
            self._quiet_until = time.monotonic() + self.interval  # the next interval counts again
            await self._report(summary)
