"""One download in one worker thread, watched from the event loop (``cte1_mcp.watched``).

The thread does all per-chunk work (HTTP, parsing, hashing, writing) and counts the bytes in a
:class:`Counter`; the loop polls it for progress, enforces the overall deadline and, on
cancellation or deadline, shuts the download's socket down so the thread's blocked read returns at
once. The deadline counts from the call, a wait for a free thread included.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from cte1_mcp.cte1.transport import Wire
from cte1_mcp.watched import CANCELLED, DEADLINE, PROGRESS_FAILED
from cte1_mcp.watched import run_watched as run_in_thread

__all__ = ["CANCELLED", "DEADLINE", "PROGRESS_FAILED", "ByteProgress", "Counter", "run_watched"]

T = TypeVar("T")


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

    Errors of ``job`` and of ``on_progress`` propagate unchanged; returns only once the thread has
    ended (see :func:`cte1_mcp.watched.run_watched`).
    """
    reported = -1

    async def poll() -> None:
        nonlocal reported
        received = counter.received
        if on_progress is not None and received != reported and received > 0:
            reported = received
            await on_progress(received, counter.total)

    result = await run_in_thread(job, wire.abort, poll=poll, deadline_seconds=deadline_seconds)
    if on_progress is not None and counter.received != reported:
        await on_progress(counter.received, counter.total)
    return result
