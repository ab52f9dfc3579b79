"""One download in one worker thread, watched from the event loop.

The thread does all per-chunk work (HTTP, parsing, hashing, writing); the loop only polls a
counter for progress (about every 100 ms), enforces the overall deadline and, on cancellation
or deadline, shuts the download's socket down so the thread's blocked read returns at once.
The thread is always awaited to its end: nothing runs on after ``run_watched`` returns or raises.
Threads come from anyio's default pool (at most 40 at once, shared with other blocking work), so
their number is bounded; the deadline counts from the call, a wait for a free thread included.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

from cte1_mcp.cte1.transport import Wire

T = TypeVar("T")

#: How often the loop reads the download's counters.
POLL_SECONDS = 0.1
#: How often a natively cancelled wait looks whether the aborted thread has ended.
END_POLL_SECONDS = 0.005
#: ``Wire.reason`` values set from the loop side.
CANCELLED = "cancelled"
DEADLINE = "deadline"
PROGRESS_FAILED = "progress callback failed"


class Counter:
    """Bytes received so far and the announced total, written by the thread, read by the loop
    (single int/None assignments: atomic under the GIL, no lock needed)."""

    __slots__ = ("received", "total")

    def __init__(self) -> None:
        self.received = 0
        self.total: int | None = None


#: Told the bytes received so far and the announced total (not :class:`cte1_mcp.progress.Progress`:
#: the service turns these into that).
ByteProgress = Callable[[int, int | None], Awaitable[None]]


async def run_watched(
    job: Callable[[], T],
    wire: Wire,
    counter: Counter,
    *,
    deadline_seconds: float,
    on_progress: ByteProgress | None,
) -> T:
    """``job()`` in a worker thread; progress from ``counter``; past the deadline ``wire`` is
    aborted with reason :data:`DEADLINE` (the job then fails, and the caller reads the reason).

    Errors of ``job`` and of ``on_progress`` propagate unchanged (never as an ExceptionGroup).
    Returns only once the thread has ended, also when cancelled natively (``Task.cancel()``,
    ``asyncio.wait_for``), which anyio's thread wait does not survive: it would abandon the thread.
    """
    ends_at = time.monotonic() + deadline_seconds
    ended = threading.Event()
    reported = -1
    progress_failure: Exception | None = None

    def in_thread() -> T:
        try:
            return job()
        finally:
            ended.set()

    async def watch() -> None:
        nonlocal reported, progress_failure
        try:
            while True:
                await anyio.sleep(POLL_SECONDS)
                if time.monotonic() >= ends_at:
                    wire.abort(DEADLINE)
                    return
                received = counter.received
                if on_progress is not None and received != reported and received > 0:
                    reported = received
                    await on_progress(received, counter.total)
        except Exception as exc:  # the caller's callback: re-raised below, once the thread has ended
            progress_failure = exc
            wire.abort(PROGRESS_FAILED)
        finally:
            if not ended.is_set():  # cancelled: stop the thread, which is waited for below
                wire.abort(CANCELLED)

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
            wire.abort(CANCELLED)
            with anyio.CancelScope(shield=True):
                # Polled, not an Event set from the thread: this rare path needs no loop callback.
                while not ended.is_set():  # noqa: ASYNC110 -- the aborted thread ends within milliseconds
                    await anyio.sleep(END_POLL_SECONDS)
    # A cancellation that arrived while the thread ran is delivered here, before its failure.
    await anyio.lowlevel.checkpoint()
    if progress_failure is not None:
        raise progress_failure
    if failure is not None:
        raise failure
    if on_progress is not None and counter.received != reported:
        await on_progress(counter.received, counter.total)
    return result  # type: ignore[return-value]  # set whenever failure is None
