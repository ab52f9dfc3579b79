"""Part 1, the download path: curl (the machine's limit) vs a cold get_call_audio vs the naive script,
over plain HTTP and over HTTPS (the simulator behind TLS with a test CA made at run time, which
curl, the server (``CTE1_CA_BUNDLE``) and the naive script are told to trust), side by side in one
run; wall time, and the CPU seconds each spent."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TextIO

import anyio

from bench.interleave import interleaved
from bench.mcpstdio import Upstream, serve, server_env, structured, timed_call
from bench.procs import ROOT, reset_peak_rss, vm_hwm_bytes
from bench.simproc import BENCHMARK_TENANT, audio_data_url, benchmark_key
from bench.stats import Summary, mb_per_s, ratios
from bench.tls_simulator import tls_simulator_process
from cte1_mcp.units import GiB, MiB

CURL = "/usr/bin/curl"


SCHEMES = ("http", "https")


@dataclass(frozen=True, slots=True)
class Sample:
    """One timed download: seconds, bytes that count for the throughput, CPU seconds spent by the
    process that downloaded, peak RSS (if measured)."""

    seconds: float
    size_bytes: int
    peak_rss: int | None = None
    baseline_rss: int | None = None
    cpu_seconds: float | None = None

    @property
    def mb_per_s(self) -> float:
        return mb_per_s(self.size_bytes, self.seconds)

    @property
    def cpu_per_gib(self) -> float:
        return (self.cpu_seconds or 0.0) / (self.size_bytes / GiB)


@dataclass(slots=True)
class SizeResult:
    mib: int
    curl: list[Sample] = field(default_factory=list)
    server: list[Sample] = field(default_factory=list)
    naive: list[Sample] = field(default_factory=list)
    scheme: str = "http"

    def throughput(self, name: str) -> Summary:
        return Summary.of([s.mb_per_s for s in getattr(self, name)])

    def ratio_server_to_curl(self) -> Summary:
        return Summary.of(ratios([s.mb_per_s for s in self.server], [s.mb_per_s for s in self.curl]))

    def cpu_per_gib(self, name: str) -> Summary:
        """CPU seconds per GiB of audio: curl's whole process, the server's process during the call,
        the naive script's fetch."""
        return Summary.of([s.cpu_per_gib for s in getattr(self, name)])

    def peak_rss(self, name: str) -> Summary:
        return Summary.of([float(s.peak_rss or 0) for s in getattr(self, name)])

    def rss_growth(self, name: str) -> Summary:
        """Peak RSS minus the RSS the process had before the request, per repetition."""
        return Summary.of([float((s.peak_rss or 0) - (s.baseline_rss or 0)) for s in getattr(self, name)])


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process, from /proc (clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU of this process's reaped children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class Download:
    def __init__(
        self,
        upstream: Upstream,
        workdir: Path,
        errlog: TextIO,
        ca_bundle: Path | None = None,
        *,
        warm_up_mib: int = 1,
    ) -> None:
        self.upstream = upstream
        #: The recording of each server's untimed first call: not one of the measured sizes.
        self.warm_up_mib = warm_up_mib
        self.workdir = workdir
        self.errlog = errlog
        self.ca_bundle = ca_bundle

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
            *(["--cacert", str(self.ca_bundle)] if self.ca_bundle else []),
            audio_data_url(self.upstream),
        ]  # fmt: skip
        cpu = children_cpu_seconds()
        done = await anyio.run_process(command, check=True)
        cpu = children_cpu_seconds() - cpu
        status, seconds, size = done.stdout.decode().split()
        out.unlink(missing_ok=True)
        if status != "200":
            raise RuntimeError(f"curl got HTTP {status} for {mib} MiB")
        # curl's own transfer time (no process start-up): the strictest limit to compare against.
        return Sample(float(seconds), int(size), cpu_seconds=cpu)

    async def server(self, mib: int, rep: int) -> Sample:
        cache = self.workdir / f"cache-{mib}-{rep}"
        trust = {"CTE1_CA_BUNDLE": str(self.ca_bundle)} if self.ca_bundle else {}
        env = server_env(self.upstream, cache, **trust)
        try:
            async with serve(env, self.errlog) as served:
                # Untimed, a cold call of another recording first: what a process does once (load
                # the CA store, import and compile on first use, here and in the client, which
                # compiles the tool's output schema on its first call) is not download time.
                _, warm_up = await timed_call(
                    served.client, "get_call_audio", {**benchmark_key(self.warm_up_mib), "inline": False}
                )
                structured(warm_up)  # a failed warm-up would leave that work in the timed call
                await self.settle()
                reset_peak_rss(served.pid)  # the peak measured is the timed call's, not the warm-up's
                baseline = vm_hwm_bytes(served.pid)
                cpu = cpu_seconds(served.pid)
                seconds, result = await timed_call(
                    served.client, "get_call_audio", {**benchmark_key(mib), "inline": False}
                )
                cpu = cpu_seconds(served.pid) - cpu
                peak = vm_hwm_bytes(served.pid)
            audio = structured(result)["audio"]
            await anyio.to_thread.run_sync(verify, Path(audio["path"]), audio["sha256"], audio["sizeBytes"])
            return Sample(seconds, int(audio["sizeBytes"]), peak, baseline, cpu)
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
            *(["--ca-bundle", str(self.ca_bundle)] if self.ca_bundle else []),
        ]  # fmt: skip
        await self.settle()
        try:
            done = await anyio.run_process(command, check=True, stderr=self.errlog, cwd=ROOT)
        finally:
            out.unlink(missing_ok=True)
        got = json.loads(done.stdout)
        return Sample(got["seconds"], got["size"], got["peak_hwm"], got["baseline_hwm"], got["cpu_seconds"])


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
    """Every size over HTTP (``upstream``) and HTTPS (a TLS simulator started here), the six
    variants interleaved per repetition; results: the HTTP sizes, then the HTTPS ones."""
    with tls_simulator_process(errlog) as (secure, ca_bundle):
        warm_up = min(set(range(1, len(sizes) + 2)) - set(sizes))
        plain = Download(upstream, workdir, errlog, warm_up_mib=warm_up)
        tls = Download(secure, workdir, errlog, ca_bundle, warm_up_mib=warm_up)
        by_scheme = {"http": plain, "https": tls}
        results: dict[str, list[SizeResult]] = {scheme: [] for scheme in SCHEMES}
        for mib in sizes:
            # Untimed: each simulator synthesises a key's audio period once (cached); no variant pays it.
            await plain.curl(mib, -1)
            await tls.curl(mib, -1)

            def log(name: str, rep: int, sample: Sample, mib: int = mib) -> None:
                rss = f", peak RSS {sample.peak_rss / MiB:.0f} MiB" if sample.peak_rss else ""
                cpu = f", {sample.cpu_per_gib:.2f} CPU s/GiB" if sample.cpu_seconds is not None else ""
                print(
                    f"  {mib:>4} MiB rep {rep + 1} {name:<12} {sample.mb_per_s:8.1f} MB/s{cpu}{rss}", file=say
                )

            variants = {
                f"{kind} {scheme}": partial(getattr(bench, kind), mib)
                for scheme, bench in by_scheme.items()
                for kind in ("curl", "server", "naive")
            }
            samples = await interleaved(repetitions, variants, on_sample=log)
            for scheme in SCHEMES:
                results[scheme].append(
                    SizeResult(
                        mib,
                        samples[f"curl {scheme}"],
                        samples[f"server {scheme}"],
                        samples[f"naive {scheme}"],
                        scheme,
                    )
                )
    return [*results["http"], *results["https"]]
