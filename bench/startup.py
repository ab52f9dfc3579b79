"""Part 4, start-up: from spawning ``cte1-mcp`` to its ``initialize`` result, against the bare interpreter."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import anyio

from bench.interleave import interleaved
from bench.mcpstdio import Upstream, server_env
from bench.procs import CTE1_MCP, close
from bench.stats import Summary

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "cte1-mcp-bench", "version": "0"},
    },
}


def time_to_initialize(env: dict[str, str], errlog: IO[bytes]) -> float:
    """Spawn the console script with the request already in its stdin; seconds until the result line."""
    start = time.perf_counter()
    process = subprocess.Popen(
        [str(CTE1_MCP)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errlog, env=env
    )
    try:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(json.dumps(INITIALIZE).encode() + b"\n")
        process.stdin.flush()
        line = process.stdout.readline()
        elapsed = time.perf_counter() - start
        reply = json.loads(line)
        if "result" not in reply:
            raise RuntimeError(f"initialize failed: {line!r}")
        return elapsed
    finally:
        close(process, 5)


def time_bare_interpreter() -> float:
    """The floor: the venv's interpreter starting and exiting with nothing to do."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - start


@dataclass(slots=True)
class StartupResult:
    server: list[float]
    interpreter: list[float]

    def summary(self) -> Summary:
        return Summary.of(self.server)


async def run(upstream: Upstream, repetitions: int, workdir: Path, errlog: IO[bytes]) -> StartupResult:
    cache = workdir / "cache-startup"

    async def server(rep: int) -> float:
        shutil.rmtree(cache, ignore_errors=True)
        env = server_env(upstream, cache)
        return await anyio.to_thread.run_sync(time_to_initialize, env, errlog)

    async def interpreter(rep: int) -> float:
        return await anyio.to_thread.run_sync(time_bare_interpreter)

    try:
        samples = await interleaved(repetitions, {"server": server, "interpreter": interpreter})
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return StartupResult(samples["server"], samples["interpreter"])
