"""Identical concurrent requests inside one process share one execution of the work.

It is not a limiter: it decides *who* does the work, never *when*. Across processes the same job is
done by a ``Flights`` backend (see ``coordination.base``); this in-process layer comes first, so a
process asks its backend once per key however many of its own callers wait.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Generic, Self, TypeAlias, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel

from cte1_mcp.errors import Cte1Error

logger = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")
E = TypeVar("E")

#: How shared work reports an event, and how a caller receives it: one name for one thing.
OnEvent: TypeAlias = Callable[[E], Awaitable[None]]


class FlightAbandoned(Cte1Error):
    """Every caller left while the work could still be given up (it never reaches a caller)."""


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


class Flight(Generic[T, E]):
    """One running piece of shared work, as the work sees it: ``emit`` and ``abandonable``."""

    def __init__(self, on_abandon: Callable[[], None]) -> None:
        self.subscribers: list[_Subscriber[E]] = []
        self.finished = False
        self.result: tuple[T] | None = None  # a 1-tuple, so a result of None is told from "no result"
        self.error: BaseException | None = None
        self.traceback: TracebackType | None = None  # the work's own, so every raise starts from it
        self._abandonable: anyio.CancelScope | None = None
        self._on_abandon = on_abandon

    async def emit(self, event: E) -> None:
        """Queue ``event`` for every caller; never blocks on (or fails because of) any of them."""
        for subscriber in self.subscribers:
            if subscriber.on_event is not None:
                subscriber.pending.append(event)
                subscriber.wake.set()
        await anyio.lowlevel.checkpoint()

    @contextmanager
    def abandonable(self) -> Iterator[None]:
        """Inside this block the work is given up (``FlightAbandoned``) once its last caller has left.

        For a part that only waits (a queue place): work nobody waits for any more must not keep
        its place ahead of callers who do. For a computation (an analysis): it must not keep a core
        and a thread busy for nobody. Outside it (a download under way) the work goes on, so a
        caller that gives up does not waste a request already made.
        """
        with anyio.CancelScope() as scope:
            self._abandonable = scope
            if not self.subscribers:
                self._abandon(scope)
            try:
                yield
            finally:
                self._abandonable = None
        if scope.cancelled_caught:
            raise FlightAbandoned("Every caller left while the request was still queued.")

    def leave(self, subscriber: _Subscriber[E]) -> None:
        self.subscribers.remove(subscriber)
        if not self.subscribers and self._abandonable is not None and not self.finished:
            self._abandon(self._abandonable)

    def _abandon(self, scope: anyio.CancelScope) -> None:
        self._on_abandon()  # new callers start afresh instead of joining work that is being dropped
        scope.cancel()

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
        self._flights: dict[K, Flight[T, E]] = {}
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
        self, key: K, work: Callable[[Flight[T, E]], Awaitable[T]], *, on_event: OnEvent[E] | None = None
    ) -> T:
        """The outcome of ``work`` for ``key``: started now, or joined if already running.

        Every caller gets the same result or the same exception. ``work`` receives its ``Flight``,
        whose ``emit`` passes each event to every joined caller's ``on_event`` (from the moment it
        joined).
        """
        flight = self._flights.get(key)
        if flight is None:
            if self._task_group is None:
                raise RuntimeError("use SingleFlight inside 'async with'")
            flight = Flight(lambda: self._forget(key, flight))
            self._flights[key] = flight
            self._task_group.start_soon(self._fly, key, flight, work, name=f"single-flight {key}")
        subscriber = _Subscriber(on_event)
        flight.subscribers.append(subscriber)
        try:
            await subscriber.deliver_until(flight.is_finished)
        finally:
            flight.leave(subscriber)
        if flight.error is not None:
            raise flight.error.with_traceback(flight.traceback)
        assert flight.result is not None, "a finished flight has a result or an error"
        return flight.result[0]

    def _forget(self, key: K, flight: Flight[T, E] | None) -> None:
        if flight is not None and self._flights.get(key) is flight:
            del self._flights[key]

    async def _fly(self, key: K, flight: Flight[T, E], work: Callable[[Flight[T, E]], Awaitable[T]]) -> None:
        try:
            flight.result = (await work(flight),)
        except Exception as exc:
            flight.error, flight.traceback = exc, exc.__traceback__
        except BaseException:
            flight.error = Cte1Error(
                "The server stopped the shared request before it finished.", next_step="Call again."
            )
            raise
        finally:
            self._forget(key, flight)
            flight.finish()
