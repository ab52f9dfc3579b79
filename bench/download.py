"""Part 1, the download path: curl (the machine's limit) vs a cold get_call_audio vs the naive script."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TextIO

import anyio

from bench.interleave import interleaved
from bench.mcpstdio import Upstream, serve, server_env, structured, timed_call
from bench.procs import ROOT, vm_hwm_bytes
from bench.simproc import BENCHMARK_TENANT, audio_data_url, benchmark_key
from bench.stats import Summary, mb_per_s, ratios
from cte1_mcp.units import MiB

CURL = "/usr/bin/curl"


@dataclass(frozen=True, slots=True)
class Sample:
    """One timed download: seconds, bytes that count for the throughput, peak RSS (if measured)."""

    seconds: float
    size_bytes: int
    peak_rss: int | None = None
    baseline_rss: int | None = None

    @property
    def mb_per_s(self) -> float:
        return mb_per_s(self.size_bytes, self.seconds)


@dataclass(slots=True)
class SizeResult:
    mib: int
    curl: list[Sample] = field(default_factory=list)
    server: list[Sample] = field(default_factory=list)
    naive: list[Sample] = field(default_factory=list)

    def throughput(self, name: str) -> Summary:
        return Summary.of([s.mb_per_s for s in getattr(self, name)])

    def ratio_server_to_curl(self) -> Summary:
        return Summary.of(ratios([s.mb_per_s for s in self.server], [s.mb_per_s for s in self.curl]))

    def peak_rss(self, name: str) -> Summary:
        return Summary.of([float(s.peak_rss or 0) for s in getattr(self, name)])

    def rss_growth(self, name: str) -> Summary:
        """Peak RSS minus the RSS the process had before the request, per repetition."""
        return Summary.of([float((s.peak_rss or 0) - (s.baseline_rss or 0)) for s in getattr(self, name)])


class Download:
    def __init__(self, upstream: Upstream, workdir: Path, errlog: TextIO) -> None:
        self.upstream = upstream
        self.workdir = workdir
        self.errlog = errlog

    async def settle(self) -> None:
        """Flush dirty pages left by the previous sample, so no variant pays for another's writeback."""
        await anyio.to_thread.run_sync(os.sync)

    async def curl(self, mib: int, rep: int) -> Sample:
        await self.settle()
        out = self.workdir / f"curl-{mib}-{rep}.bin"
        body = json.dumps(benchmark_key(mib))
        command = [
            CURL, "-sS", "-o", str(out), "-X", "POST",
            "-H", f"Authorization: Bearer {self.upstream.api_key}",
            "-H", "Content-Type: application/json",
            "--data", body,
            "-w", "%{http_code} %{time_total} %{size_download}",
            audio_data_url(self.upstream),
        ]  # fmt: skip
        done = await anyio.run_process(command, check=True)
        status, seconds, size = done.stdout.decode().split()
        out.unlink(missing_ok=True)
        if status != "200":
            raise RuntimeError(f"curl got HTTP {status} for {mib} MiB")
        # curl's own transfer time (no process start-up): the strictest limit to compare against.
        return Sample(float(seconds), int(size))

    async def server(self, mib: int, rep: int) -> Sample:
        cache = self.workdir / f"cache-{mib}-{rep}"
        env = server_env(self.upstream, cache)
        await self.settle()
        try:
            async with serve(env, self.errlog) as served:
                baseline = vm_hwm_bytes(served.pid)
                seconds, result = await timed_call(
                    served.client, "get_call_audio", {**benchmark_key(mib), "inline": False}
                )
                peak = vm_hwm_bytes(served.pid)
            audio = structured(result)["audio"]
            await anyio.to_thread.run_sync(verify, Path(audio["path"]), audio["sha256"], audio["sizeBytes"])
            return Sample(seconds, int(audio["sizeBytes"]), peak, baseline)
        finally:
            shutil.rmtree(cache, ignore_errors=True)

    async def naive(self, mib: int, rep: int) -> Sample:
        out = self.workdir / f"naive-{mib}-{rep}.wav"
        command = [
            sys.executable, "-m", "bench.naive",
            "--url", audio_data_url(self.upstream),
            "--api-key", self.upstream.api_key,
            "--tenant", BENCHMARK_TENANT,
            "--session", str(mib),
            "--out", str(out),
        ]  # fmt: skip
        await self.settle()
        try:
            done = await anyio.run_process(command, check=True, stderr=self.errlog, cwd=ROOT)
        finally:
            out.unlink(missing_ok=True)
        got = json.loads(done.stdout)
        return Sample(got["seconds"], got["size"], got["peak_hwm"], got["baseline_hwm"])


def verify(path: Path, sha256: str, size: int) -> None:
    """The stored file is what the result claims: its size and its sha256."""
    if path.stat().st_size != size:
        raise RuntimeError(f"{path}: {path.stat().st_size} bytes on disk, the result says {size}")
    with path.open("rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()
    if digest != sha256:
        raise RuntimeError(f"{path}: sha256 {digest} on disk, the result says {sha256}")


async def run(
    upstream: Upstream, sizes: list[int], repetitions: int, workdir: Path, errlog: TextIO, say: TextIO
) -> list[SizeResult]:
    bench = Download(upstream, workdir, errlog)
    results = []
    for mib in sizes:
        result = SizeResult(mib)
        # Untimed: the simulator synthesises each key's audio period once (cached); no variant pays it.
        await bench.curl(mib, -1)

        def log(name: str, rep: int, sample: Sample, mib: int = mib) -> None:
            rss = f", peak RSS {sample.peak_rss / MiB:.0f} MiB" if sample.peak_rss else ""
            print(f"  {mib:>4} MiB rep {rep + 1} {name:<6} {sample.mb_per_s:8.1f} MB/s{rss}", file=say)

        samples = await interleaved(
            repetitions,
            {
                "curl": partial(bench.curl, mib),
                "server": partial(bench.server, mib),
                "naive": partial(bench.naive, mib),
            },
            on_sample=log,
        )
        result.curl, result.server, result.naive = samples["curl"], samples["server"], samples["naive"]
        results.append(result)
    return results
