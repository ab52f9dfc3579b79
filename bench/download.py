"""Part 1, the download path: curl (the machine's limit) vs a cold get_call_audio vs the naive script,
over plain HTTP and over HTTPS (behind TLS with a test CA made at run time, which curl, the server
(``CTE1_CA_BUNDLE``) and the naive script are told to trust), side by side in one run; wall time,
and the CPU seconds each spent.

Two kinds of upstream (:data:`UPSTREAMS`): the simulator, and ``plain``, a standard-library
``http.server`` that writes the body in 1 MiB ``write()`` calls (:mod:`bench.plain_upstream`), a
fast and simple sender beside which the server's own per-byte and per-call costs show. The
server is timed twice: the first call of a fresh server (what a user waits for after starting
it), and a later cold call of the same size (after an untimed call of another recording)."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import anyio
from jsonschema.validators import validator_for

from bench.interleave import interleaved
from bench.mcpstdio import Upstream, serve, server_env, structured, timed_call
from bench.plain_upstream import plain_upstream_process
from bench.procs import ROOT, reset_peak_rss, vm_hwm_bytes
from bench.simproc import BENCHMARK_TENANT, audio_data_url, benchmark_key
from bench.stats import Summary, mb_per_s, ratios
from bench.tls_simulator import test_ca, tls_simulator_process
from cte1_mcp.units import GiB, MiB

CURL = "/usr/bin/curl"


SCHEMES = ("http", "https")
#: The upstream kinds: the CT-e1 simulator (uvicorn), and the plain ``http.server`` one.
UPSTREAMS = ("simulator", "plain")


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
    #: The first call of a fresh server (``server`` is a later cold call in its session).
    first: list[Sample] = field(default_factory=list)
    upstream: str = "simulator"

    @property
    def label(self) -> str:
        """``256 MiB HTTP`` (the simulator) or ``256 MiB HTTP, plain``."""
        kind = "" if self.upstream == "simulator" else f", {self.upstream}"
        return f"{self.mib} MiB {self.scheme.upper()}{kind}"

    def throughput(self, name: str) -> Summary:
        return Summary.of([s.mb_per_s for s in getattr(self, name)])

    def ratio_server_to_curl(self) -> Summary:
        return self.ratio_to_curl("server")

    def ratio_to_curl(self, name: str) -> Summary:
        """Throughput of ``name`` (``server``, ``first``, ``naive``) over curl's, repetition by repetition."""
        return Summary.of(ratios([s.mb_per_s for s in getattr(self, name)], [s.mb_per_s for s in self.curl]))

    def milliseconds(self, name: str) -> Summary:
        return Summary.of([s.seconds * 1e3 for s in getattr(self, name)])

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

    async def first(self, mib: int, rep: int) -> Sample:
        """The first tools/call of a fresh server (and store): what a user waits for on a new
        session, the process's one-time work included (the client's compile of the tool's output
        schema too; see :func:`client_compile_seconds`)."""
        cache = self.workdir / f"cache-first-{mib}-{rep}"
        trust = {"CTE1_CA_BUNDLE": str(self.ca_bundle)} if self.ca_bundle else {}
        env = server_env(self.upstream, cache, **trust)
        try:
            async with serve(env, self.errlog) as served:
                await self.settle()
                cpu = cpu_seconds(served.pid)
                seconds, result = await timed_call(
                    served.client, "get_call_audio", {**benchmark_key(mib), "inline": False}
                )
                cpu = cpu_seconds(served.pid) - cpu
            audio = structured(result)["audio"]
            await anyio.to_thread.run_sync(verify, Path(audio["path"]), audio["sha256"], audio["sizeBytes"])
            return Sample(seconds, int(audio["sizeBytes"]), cpu_seconds=cpu)
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
    simulator: Upstream,
    sizes: list[int],
    repetitions: int,
    workdir: Path,
    errlog: TextIO,
    say: TextIO,
    upstreams: Sequence[str] = UPSTREAMS,
) -> tuple[list[SizeResult], float]:
    """Every size over HTTP and HTTPS from each kind of upstream in ``upstreams`` (``simulator``:
    the given one and a TLS simulator started here; ``plain``: two started here), all variants
    interleaved per repetition. Results per kind: the HTTP sizes, then the HTTPS ones; and the
    seconds the client spends once per session on get_call_audio's output schema."""
    with ExitStack() as stack:
        warm_up = min(set(range(1, len(sizes) + 2)) - set(sizes))
        kinds: dict[tuple[str, str], Download] = {}
        if "simulator" in upstreams:
            secure, ca_bundle = stack.enter_context(tls_simulator_process(errlog))
            kinds["simulator", "http"] = Download(simulator, workdir, errlog, warm_up_mib=warm_up)
            kinds["simulator", "https"] = Download(secure, workdir, errlog, ca_bundle, warm_up_mib=warm_up)
        if "plain" in upstreams:
            ca_pem, server_pem = stack.enter_context(test_ca())
            http = stack.enter_context(plain_upstream_process(errlog))
            https = stack.enter_context(plain_upstream_process(errlog, server_pem))
            kinds["plain", "http"] = Download(http, workdir, errlog, warm_up_mib=warm_up)
            kinds["plain", "https"] = Download(https, workdir, errlog, ca_pem, warm_up_mib=warm_up)
        results: dict[tuple[str, str], list[SizeResult]] = {kind: [] for kind in kinds}
        for mib in sizes:
            # Untimed: each upstream makes a key's audio once (cached); no variant pays it.
            for bench in kinds.values():
                await bench.curl(mib, -1)

            def log(name: str, rep: int, sample: Sample, mib: int = mib) -> None:
                rss = f", peak RSS {sample.peak_rss / MiB:.0f} MiB" if sample.peak_rss else ""
                cpu = f", {sample.cpu_per_gib:.2f} CPU s/GiB" if sample.cpu_seconds is not None else ""
                print(
                    f"  {mib:>4} MiB rep {rep + 1} {name:<24} {sample.mb_per_s:8.1f} MB/s{cpu}{rss}", file=say
                )

            variants = {
                f"{variant} {scheme} {upstream}": partial(getattr(bench, variant), mib)
                for (upstream, scheme), bench in kinds.items()
                # The naive script against the simulator only: it is what a user would write, not a
                # property of the upstream.
                for variant in ("curl", "first", "server", *(("naive",) if upstream == "simulator" else ()))
            }
            samples = await interleaved(repetitions, variants, on_sample=log)
            for upstream, scheme in kinds:
                results[upstream, scheme].append(
                    SizeResult(
                        mib,
                        samples[f"curl {scheme} {upstream}"],
                        samples[f"server {scheme} {upstream}"],
                        samples.get(f"naive {scheme} {upstream}", []),
                        scheme,
                        samples[f"first {scheme} {upstream}"],
                        upstream,
                    )
                )
        compile_seconds = await client_compile_of(next(iter(kinds.values())))
    return [result for kind in kinds for result in results[kind]], compile_seconds


async def client_compile_of(bench: Download) -> float:
    """:func:`client_compile_seconds` of get_call_audio's output schema, as a server lists it."""
    env = server_env(bench.upstream, bench.workdir / "cache-schema")
    try:
        async with serve(env, bench.errlog) as served:
            listed = await served.client.list_tools()
    finally:
        shutil.rmtree(bench.workdir / "cache-schema", ignore_errors=True)
    schema = next(tool.output_schema for tool in listed.tools if tool.name == "get_call_audio")
    if schema is None:
        raise RuntimeError("get_call_audio lists no output schema")
    return client_compile_seconds(schema)


def client_compile_seconds(schema: dict[str, Any], repetitions: int = 5) -> float:
    """What the MCP client does once per session before it can return a tool's first result:
    check and compile the tool's output schema (jsonschema; median seconds, measured here)."""
    times = []
    for _ in range(repetitions):
        start = time.perf_counter()
        validator = validator_for(schema)
        validator.check_schema(schema)
        validator(schema)
        times.append(time.perf_counter() - start)
    return statistics.median(times)
