"""Sharing a core between a download's worker thread and the event loop.

A download keeps a core busy from its first MiB to its last (receive, parse, hash, write), while
the event loop and the threads that carry its stdio wake up several times for every tool call.
On a small machine each of those wake-ups can queue behind the download for a scheduler time
slice. The download therefore offers its core before each network read that will not wait (its
bytes have arrived): ``sched_yield`` returns at once when nothing else waits for the core.
Measured on 2 cores, p95 of get_call_metadata during a 256 MiB cold download, 18 downloads in
alternating runs: 6.7 ms (5.4 to 7.8) without offers, 4.0 ms (3.6 to 6.5) with offers before
each read and between hashing and writing (its ratio to the idle p95: 4.2 → 2.4).

It is offered nowhere else. ``sched_yield`` hands the core to any task queued on it, another
process's too (an upstream on the same machine, other load), and puts the download behind it
for a time slice; and a read that waits gives the core away by itself. Profiled, the first
256 MiB download of a fresh server from a plain ``http.server`` upstream on the same machine:
the offers between hashing and writing took 139 ms of its 605 (load 1.6; py-spy) and 190 ms
(load 11; strace) against 29 and 12 ms for those before the reads; all of them 0.47 to 0.48 s
(522 offers; load 9.3 to 9.7), against 6 to 8 ms (264 offers) offering only before reads that
do not wait. The offer before reading the response head, which waits for the upstream, took
45 ms more of a first 1 MiB call than of a later one (HTTPS, 5 sessions, load 17; py-spy).
"""

from __future__ import annotations

import os
from collections.abc import Callable

#: ``os.sched_yield`` where the platform has it (not on Windows, where this is a no-op).
_SCHED_YIELD: Callable[[], None] | None = getattr(os, "sched_yield", None)


def give_way() -> None:
    """Let any thread waiting for this core run first (from a worker thread, between steps)."""
    if _SCHED_YIELD is not None:
        _SCHED_YIELD()
