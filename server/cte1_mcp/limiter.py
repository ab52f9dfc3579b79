"""Spending the upstream's patience carefully: start-to-start spacing, and one request per key.

CT-e1 asks for at least 5 seconds between requests (概ねリクエスト間隔は、5秒以上). The
``RequestSpacer`` enforces that process-wide, first come first served, and tells each waiter how
long it still has to wait. ``SingleFlight`` makes identical concurrent requests share one upstream
request, so ten clients asking for the same call cost one request, not ten slots of 5 seconds.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from types import TracebackType
from typing import Generic, Protocol, Self, TypeAlias, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel

from cte1_mcp.errors import Cte1Error

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
E = TypeVar("E")

#: How a waiter hears "still N seconds to go", and how shared work reports progress.
OnWait: TypeAlias = Callable[[float], Awaitable[None]]
Emit: TypeAlias = Callable[[E], Awaitable[None]]
OnEvent: TypeAlias = Callable[[E], Awaitable[None]]


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
    """Upstream requests start at least ``interval`` seconds apart, in the order callers arrived.

    Waiters queue as tickets; only the head of the queue may start, and only once ``interval`` has
    passed since the previous start. A waiter that is cancelled simply leaves the queue: nobody's
    start is consumed, and the ones behind it move up (no gap is left in the schedule).
    """

    def __init__(self, interval: float, clock: Clock | None = None, *, notify_every: float = 1.0) -> None:
        if interval < 0:
            raise ValueError("interval must be >= 0")
        if notify_every <= 0:
            raise ValueError("notify_every must be > 0")
        self.interval = interval
        self._clock: Clock = clock or MonotonicClock()
        self._notify_every = notify_every
        self._last_start: float | None = None
        self._not_before: float | None = None
        self._queue: deque[object] = deque()

    def defer(self, seconds: float) -> None:
        """Hold every start back for ``seconds`` from now: the platform said so (Retry-After)."""
        due = self._clock.now() + max(seconds, 0.0)
        self._not_before = due if self._not_before is None else max(self._not_before, due)

    def deferred_for(self) -> float:
        """Seconds the platform's last Retry-After still holds every start back (0 if none)."""
        if self._not_before is None:
            return 0.0
        return max(0.0, self._not_before - self._clock.now())

    async def acquire(self, on_wait: OnWait | None = None) -> None:
        """Return when the caller may start its request; ``on_wait(seconds_left)`` reports the wait.

        ``on_wait`` is called before each sleep, at least every ``notify_every`` seconds, so a
        client can be shown progress during a long queue. It should be quick: the caller's turn
        waits for it.
        """
        if self.interval == 0 and (self._not_before is None or self._not_before <= self._clock.now()):
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
        head_due = now if self._last_start is None else max(now, self._last_start + self.interval)
        if self._not_before is not None:
            head_due = max(head_due, self._not_before)
        return head_due + self._queue.index(ticket) * self.interval - now


class _Subscriber(Generic[E]):
    """One joined caller's mailbox: events wait here until the caller's own task delivers them."""

    #: Progress is a stream of "latest state"; a caller that falls this far behind loses the oldest.
    MAX_PENDING = 64

    def __init__(self, on_event: OnEvent[E] | None) -> None:
        self.on_event = on_event
        self.pending: deque[E] = deque(maxlen=self.MAX_PENDING)
        self.wake = anyio.Event()

    async def deliver_until(self, finished: Callable[[], bool]) -> None:
        """Hand over events as they come, until the work has ``finished`` and nothing is pending."""
        while True:
            if self.pending:
                await self._deliver(self.pending.popleft())
            elif finished():
                return
            else:
                self.wake = anyio.Event()
                await self.wake.wait()

    async def _deliver(self, event: E) -> None:
        if self.on_event is None:
            return
        try:
            await self.on_event(event)
        except Exception:
            # Its client is likely gone; the shared work and the other callers carry on.
            logger.warning("dropping events for a caller whose event handler failed", exc_info=True)
            self.on_event = None
            self.pending.clear()


class _Flight(Generic[T, E]):
    """One running piece of shared work, its joined callers and, once finished, its outcome."""

    def __init__(self) -> None:
        self.subscribers: list[_Subscriber[E]] = []
        self.finished = False
        self.result: tuple[T] | None = None  # a 1-tuple, so a result of None is told from "no result"
        self.error: BaseException | None = None
        self.traceback: TracebackType | None = None  # the work's own, so every raise starts from it

    async def emit(self, event: E) -> None:
        """Queue ``event`` for every caller; never blocks on (or fails because of) any of them."""
        for subscriber in self.subscribers:
            if subscriber.on_event is not None:
                subscriber.pending.append(event)
                subscriber.wake.set()
        await anyio.lowlevel.checkpoint()

    def finish(self) -> None:
        self.finished = True
        for subscriber in self.subscribers:
            subscriber.wake.set()

    def is_finished(self) -> bool:
        return self.finished


class SingleFlight(Generic[K, T, E]):
    """Identical concurrent requests share one execution of the work, its events and its outcome.

    The work runs in a task owned by this object (``async with SingleFlight() as flights``), not
    in the first caller's task: a caller that gives up (is cancelled) only stops waiting, and the
    others still get the result. Events are delivered in each caller's own task, so a slow or
    failing ``on_event`` holds up nobody else and runs in that caller's context (its request).
    """

    def __init__(self) -> None:
        self._flights: dict[K, _Flight[T, E]] = {}
        self._task_group: anyio.abc.TaskGroup | None = None

    async def __aenter__(self) -> Self:
        task_group = anyio.create_task_group()
        await task_group.__aenter__()
        self._task_group = task_group
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        """Stop work still running (its waiters are told) and wait for it to wind down."""
        task_group, self._task_group = self._task_group, None
        assert task_group is not None, "SingleFlight exited without being entered"
        task_group.cancel_scope.cancel()
        return await task_group.__aexit__(exc_type, exc, traceback)

    def running(self, key: K) -> bool:
        return key in self._flights

    async def run(
        self, key: K, work: Callable[[Emit[E]], Awaitable[T]], *, on_event: OnEvent[E] | None = None
    ) -> T:
        """The outcome of ``work`` for ``key``: started now, or joined if already running.

        Every caller gets the same result or the same exception. ``work`` receives ``emit``, which
        passes each event to every joined caller's ``on_event`` (from the moment it joined).
        """
        flight = self._flights.get(key)
        if flight is None:
            if self._task_group is None:
                raise RuntimeError("use SingleFlight inside 'async with'")
            flight = _Flight()
            self._flights[key] = flight
            self._task_group.start_soon(self._fly, key, flight, work, name=f"single-flight {key}")
        subscriber = _Subscriber(on_event)
        flight.subscribers.append(subscriber)
        try:
            await subscriber.deliver_until(flight.is_finished)
        finally:
            flight.subscribers.remove(subscriber)
        if flight.error is not None:
            raise flight.error.with_traceback(flight.traceback)
        assert flight.result is not None, "a finished flight has a result or an error"
        return flight.result[0]

    async def _fly(self, key: K, flight: _Flight[T, E], work: Callable[[Emit[E]], Awaitable[T]]) -> None:
        try:
            flight.result = (await work(flight.emit),)
        except Exception as exc:
            flight.error, flight.traceback = exc, exc.__traceback__
        except BaseException:
            flight.error = Cte1Error(
                "The server stopped the shared request before it finished.", next_step="Call again."
            )
            raise
        finally:
            del self._flights[key]
            flight.finish()
