"""One blocking job in one worker thread, watched from the event loop.

The thread never waits for the loop: whatever it has to tell (bytes received, analysis progress)
it leaves in plain state the loop polls (``poll``, about every 100 ms). The loop never waits for
the thread either, except at the end: on cancellation or past the deadline it calls ``abort`` (a
download shuts its socket down, a computation sets a :class:`StopFlag` it checks between blocks)
and then waits for the thread to end, so nothing runs on after ``run_watched`` returns or raises
and a cancelled job gives its thread back at once. Threads come from anyio's default pool (at most
40 at once, shared with all other blocking work): a thread blocked for good would hold one of them
for the life of the process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

T = TypeVar("T")

#: How often the loop polls the job's state (and looks at the deadline).
POLL_SECONDS = 0.1
#: How often a natively cancelled wait looks whether the aborted thread has ended.
END_POLL_SECONDS = 0.005
#: ``abort`` reasons.
CANCELLED = "cancelled"
DEADLINE = "deadline"
PROGRESS_FAILED = "progress callback failed"


class Stopped(Exception):
    """Raised in the worker thread by :meth:`StopFlag.check` once the loop asked the job to stop.

    Never reaches a caller: ``run_watched`` delivers the cancellation (or its own failure) first.
    """


class StopFlag:
    """Set from the loop (``abort``), looked at by the job between two blocks of work (``check``).

    A single attribute assignment and read: atomic under the GIL, no lock needed.
    """

    __slots__ = ("reason",)

    def __init__(self) -> None:
        self.reason: str | None = None

    def abort(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason

    def check(self) -> None:
        if self.reason is not None:
            raise Stopped(self.reason)


async def run_watched(
    job: Callable[[], T],
    abort: Callable[[str], None],
    *,
    poll: Callable[[], Awaitable[None]] | None = None,
    deadline_seconds: float | None = None,
) -> T:
    """``job()`` in a worker thread; ``poll()`` on the loop while it runs; ``abort(reason)`` when
    cancelled (:data:`CANCELLED`), past the deadline (:data:`DEADLINE`: the job then fails and the
    caller looks at its reason) or when ``poll`` raised (:data:`PROGRESS_FAILED`).

    Errors of ``job`` and of ``poll`` propagate unchanged (never as an ExceptionGroup). Returns only
    once the thread has ended, also when cancelled natively (``Task.cancel()``,
    ``asyncio.wait_for``), which anyio's thread wait does not survive: it would abandon the thread.
    ``poll`` is not called after the job has ended: the caller reads the final state itself.
    """
    ends_at = None if deadline_seconds is None else time.monotonic() + deadline_seconds
    ended = threading.Event()
    poll_failure: Exception | None = None

    def in_thread() -> T:
        try:
            return job()
        finally:
            ended.set()

    async def watch() -> None:
        nonlocal poll_failure
        try:
            while True:
                await anyio.sleep(POLL_SECONDS)
                if ends_at is not None and time.monotonic() >= ends_at:
                    abort(DEADLINE)
                    return
                if poll is not None:
                    await poll()
        except Exception as exc:  # the caller's callback: re-raised below, once the thread has ended
            poll_failure = exc
            abort(PROGRESS_FAILED)
        finally:
            if not ended.is_set():  # cancelled: stop the thread, which is waited for below
                abort(CANCELLED)

    failure: Exception | None = None
    result: T | None = None
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(watch)
            try:
                result = await anyio.to_thread.run_sync(in_thread, abandon_on_cancel=False)
            except Exception as exc:  # raised after the group, so it is not wrapped in an ExceptionGroup
                failure = exc
            finally:
                group.cancel_scope.cancel()
    finally:
        if not ended.is_set():
            abort(CANCELLED)
            with anyio.CancelScope(shield=True):
                # Polled, not an Event set from the thread: this rare path needs no loop callback.
                while not ended.is_set():  # noqa: ASYNC110 -- the aborted thread ends within milliseconds
                    await anyio.sleep(END_POLL_SECONDS)
    # A cancellation that arrived while the thread ran is delivered here, before its failure.
    await anyio.lowlevel.checkpoint()
    if poll_failure is not None:
        raise poll_failure
    if failure is not None:
        raise failure
    return result  # type: ignore[return-value]  # set whenever failure is None
