"""Part 2, the warm path: get_call_metadata on a stored recording, idle and during a cold 256 MiB download."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import anyio
from mcp import Client

from bench.interleave import interleaved
from bench.mcpstdio import Upstream, serve, server_env, structured, timed_call
from bench.simproc import benchmark_key
from bench.stats import Summary, percentile

#: The documentation's request example; the simulator serves it (a ~4 MiB recording).
STORED = {"tenantId": "05053698341", "sessionId": 942125, "recordId": 1}
WARM_UP_CALLS = 50


@dataclass(slots=True)
class Batch:
    latencies: list[float]
    wall_seconds: float
    #: For a batch run during a download: how long that download took, and its size.
    download_seconds: float | None = None
    download_mib: int | None = None

    @property
    def calls_per_second(self) -> float:
        return len(self.latencies) / self.wall_seconds

    def p(self, q: float) -> float:
        return percentile(self.latencies, q)


@dataclass(slots=True)
class WarmResult:
    idle: list[Batch] = field(default_factory=list)
    busy: list[Batch] = field(default_factory=list)

    @staticmethod
    def pooled(batches: list[Batch]) -> list[float]:
        return [x for b in batches for x in b.latencies]

    def p(self, which: str, q: float) -> float:
        return percentile(self.pooled(getattr(self, which)), q)

    def per_batch_ms(self, which: str, q: float) -> Summary:
        """The q-th percentile of each batch, in milliseconds."""
        return Summary.of([b.p(q) * 1e3 for b in getattr(self, which)])

    def p95_ratio(self) -> Summary:
        """Busy p95 over idle p95, repetition by repetition."""
        return Summary.of([b.p(95) / i.p(95) for i, b in zip(self.idle, self.busy, strict=True)])


async def metadata_batch(client: Client, calls: int, until: anyio.Event | None = None) -> Batch:
    """Sequential calls, one at a time; with ``until``, only those that finish before it is set count."""
    latencies: list[float] = []
    start = time.perf_counter()
    for _ in range(calls):
        seconds, result = await timed_call(client, "get_call_metadata", STORED)
        if result.is_error:
            structured(result)  # raises with the server's message
        if until is not None and until.is_set():
            break
        latencies.append(seconds)
    return Batch(latencies, time.perf_counter() - start)


async def busy_batch(client: Client, calls: int, mib: int) -> Batch:
    """Metadata calls while a cold download of ``mib`` MiB runs as a concurrent tool call."""
    finished = anyio.Event()
    download: dict[str, Any] = {}

    async def cold_download() -> None:
        seconds, result = await timed_call(client, "get_call_audio", {**benchmark_key(mib), "inline": False})
        download["seconds"] = seconds
        download["result"] = result
        finished.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(cold_download)
        await anyio.sleep(0)  # the download's request is sent first
        batch = await metadata_batch(client, calls, until=finished)
        await finished.wait()
    structured(download["result"])
    batch.download_seconds = download["seconds"]
    batch.download_mib = mib
    if not batch.latencies:
        raise RuntimeError(f"the {mib} MiB download finished before one metadata call did")
    return batch


async def run(
    upstream: Upstream,
    repetitions: int,
    calls: int,
    download_mib: int,
    workdir: Path,
    errlog: TextIO,
    say: TextIO,
) -> WarmResult:
    cache = workdir / "cache-warm"
    result = WarmResult()
    try:
        async with serve(server_env(upstream, cache), errlog) as served:
            client = served.client
            structured((await timed_call(client, "get_call_audio", {**STORED, "inline": False}))[1])
            await metadata_batch(client, WARM_UP_CALLS)

            async def idle(rep: int) -> Batch:
                return await metadata_batch(client, calls)

            async def busy(rep: int) -> Batch:
                # A new key each time so each download is cold: N, N+1, N+2 MiB.
                return await busy_batch(client, calls, download_mib + rep)

            def log(name: str, rep: int, b: Batch) -> None:
                extra = ""
                if b.download_mib:
                    extra = f", during a {b.download_mib} MiB download of {b.download_seconds:.2f} s"
                print(
                    f"  rep {rep + 1} {name:<4} {len(b.latencies):>5} calls p50 {b.p(50) * 1e3:6.2f} ms "
                    f"p95 {b.p(95) * 1e3:6.2f} ms{extra}",
                    file=say,
                )

            samples = await interleaved(repetitions, {"idle": idle, "busy": busy}, on_sample=log)
            result.idle, result.busy = samples["idle"], samples["busy"]
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return result
