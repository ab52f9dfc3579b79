"""Part 5, store size: a cold get_call_audio and resources/list with 0, 1,000 and 10,000 recordings stored.

Before the index, every commit walked the whole store under its lock: cold downloads slowed
linearly with it (21 ms empty, 518 ms at 4,000) and so did ``resources/list`` (945 ms at 4,000).
Before pages, one ``resources/list`` carried every recording (20,000 resources at 10,000: 1.4 s
from the index, 3.1 s for a server's first): now the first page and the whole walk are timed apart.
The stores are filled through the repository API (``LocalRepository``: staging, commit) with
small fake recordings, not by 10,000 upstream requests. They are filled on a RAM-backed file
system when there is one (``/dev/shm``: a commit's fsyncs cost ~2.5 ms each on this disk, which
would make filling 11,000 recordings take half a minute) and then copied to the run's work
directory on disk, where the servers use them.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from mcp import Client

from bench.interleave import interleaved
from bench.mcpstdio import Upstream, serve, server_env, structured, timed_call
from bench.simproc import BENCHMARK_TENANT, benchmark_key
from bench.stats import Summary
from cte1_mcp.models import CallKey, CallMetadata
from cte1_mcp.repository.local import LocalRepository

STORE_SIZES = (0, 1_000, 10_000)
#: The cold recording: the simulator's 1 MiB benchmark call (removed again before each sample).
COLD = benchmark_key(1)
#: A tenant of its own for the fake recordings, so they never meet a simulator call.
FAKE_TENANT = "0388888888"
FAKE_AUDIO_BYTES = 512
LIST_CALLS = 1
RAM_DISK = Path("/dev/shm")


@dataclass(slots=True)
class StoreSizeSample:
    start_seconds: float  # spawn → tools listed
    first_page_cold_seconds: float  # the server's first resources/list page: it may wait for the index
    first_walk_seconds: float  # that first walk, every page
    first_page_seconds: float  # median of the next LIST_CALLS walks' first page (from the index)
    walk_seconds: float  # median of the next LIST_CALLS walks, every page
    listed: int  # resources in a walk
    pages: int  # pages in a walk
    cold_seconds: float  # tools/call get_call_audio → result, 1 MiB from the simulator


@dataclass(slots=True)
class StoreSizeResult:
    samples: dict[int, list[StoreSizeSample]] = field(default_factory=dict)
    fill_seconds: dict[int, float] = field(default_factory=dict)
    #: In this process, once per store: a fresh LocalRepository's first listing (its walk) and
    #: the median of LIST_CALLS listings from its index.
    index_seconds: dict[int, float] = field(default_factory=dict)
    repository_list_seconds: dict[int, float] = field(default_factory=dict)
    filled_on: str = ""

    def summary(self, stored: int, what: str) -> Summary:
        return Summary.of([getattr(s, what) for s in self.samples[stored]])


async def fill(root: Path, count: int) -> float:
    """``count`` small recordings committed through the repository API; seconds it took."""
    repository = LocalRepository(root, max_age=timedelta(hours=24), max_bytes=1 << 40)
    connected = (datetime.now(UTC) - timedelta(hours=1)).isoformat(timespec="milliseconds")
    audio = os.urandom(FAKE_AUDIO_BYTES)
    start = time.perf_counter()
    for session in range(1, count + 1):
        key = CallKey(FAKE_TENANT, session, 1)
        metadata = CallMetadata.model_validate(
            {
                "status": "complete",
                "tenantId": key.tenant_id,
                "sessionId": session,
                "recordId": 1,
                "connectTime": connected.replace("+00:00", "Z"),
            }
        )
        async with repository.staging(key) as staging:
            await staging.write(audio)
            await staging.commit(metadata, "audio/wav")
    return time.perf_counter() - start


def in_process_listing(root: Path) -> tuple[float, float]:
    """The repository's own share of a listing: its first (index-building walk), then from the index."""
    repository = LocalRepository(root, max_age=timedelta(hours=24), max_bytes=1 << 40)
    start = time.perf_counter()
    repository.list_blocking()
    indexed = time.perf_counter() - start
    listings = []
    for _ in range(LIST_CALLS):
        start = time.perf_counter()
        repository.list_blocking()
        listings.append(time.perf_counter() - start)
    return indexed, statistics.median(listings)


@dataclass(frozen=True, slots=True)
class Walk:
    first_page_seconds: float
    seconds: float
    listed: int
    pages: int


async def list_everything(client: Client) -> Walk:
    """One full resources/list walk (every page), bypassing the client's response cache."""
    start = time.perf_counter()
    first_page, count, pages, cursor = 0.0, 0, 0, None
    while True:
        page = await client.list_resources(cursor=cursor, cache_mode="bypass")
        pages += 1
        if pages == 1:
            first_page = time.perf_counter() - start
        count += len(page.resources)
        cursor = page.next_cursor
        if not cursor:
            return Walk(first_page, time.perf_counter() - start, count, pages)


async def run(
    upstream: Upstream, repetitions: int, workdir: Path, errlog: TextIO, say: TextIO
) -> StoreSizeResult:
    result = StoreSizeResult()
    scratch_parent = RAM_DISK if RAM_DISK.is_dir() and os.access(RAM_DISK, os.W_OK) else workdir
    result.filled_on = "tmpfs (/dev/shm), then copied to disk" if scratch_parent == RAM_DISK else "disk"
    stores: dict[int, Path] = {}
    scratch = Path(tempfile.mkdtemp(prefix="cte1-bench-store-", dir=scratch_parent))
    try:
        for stored in STORE_SIZES:
            filled = scratch / f"store-{stored}"
            result.fill_seconds[stored] = await fill(filled, stored)
            stores[stored] = workdir / f"store-{stored}"
            if scratch_parent == RAM_DISK:
                shutil.copytree(filled, stores[stored], symlinks=True)
                shutil.rmtree(filled)
            else:
                filled.rename(stores[stored])
            indexed, listed = in_process_listing(stores[stored])
            result.index_seconds[stored], result.repository_list_seconds[stored] = indexed, listed
            print(
                f"   filled {stored:,} in {result.fill_seconds[stored]:.1f} s; walk {indexed * 1e3:.0f} ms, "
                f"list from the index {listed * 1e3:.1f} ms",
                file=say,
                flush=True,
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    def variant(stored: int) -> Callable[[int], Awaitable[StoreSizeSample]]:
        async def sample(rep: int) -> StoreSizeSample:
            # The harness, not the server, forgets the cold recording, so each sample downloads it.
            shutil.rmtree(stores[stored].joinpath("recordings", BENCHMARK_TENANT), ignore_errors=True)
            began = time.perf_counter()
            async with serve(server_env(upstream, stores[stored]), errlog) as served:
                started = time.perf_counter() - began
                first = await list_everything(served.client)
                walks = [await list_everything(served.client) for _ in range(LIST_CALLS)]
                seconds, answer = await timed_call(served.client, "get_call_audio", COLD)
                structured(answer)
            return StoreSizeSample(
                start_seconds=started,
                first_page_cold_seconds=first.first_page_seconds,
                first_walk_seconds=first.seconds,
                first_page_seconds=statistics.median(w.first_page_seconds for w in walks),
                walk_seconds=statistics.median(w.seconds for w in walks),
                listed=walks[0].listed,
                pages=walks[0].pages,
                cold_seconds=seconds,
            )

        return sample

    samples = await interleaved(
        repetitions,
        {str(stored): variant(stored) for stored in STORE_SIZES},
        on_sample=lambda name, rep, s: print(
            f"   {int(name):>6,} stored, rep {rep + 1}: start {s.start_seconds:.2f} s, "
            f"first page {s.first_page_cold_seconds * 1e3:.0f} ms (walk {s.first_walk_seconds * 1e3:.0f} ms), "
            f"then page 1 {s.first_page_seconds * 1e3:.0f} ms, walk {s.walk_seconds * 1e3:.0f} ms "
            f"({s.listed} resources, {s.pages} pages), cold {s.cold_seconds * 1e3:.0f} ms",
            file=say,
            flush=True,
        ),
    )
    result.samples = {int(name): values for name, values in samples.items()}
    return result
