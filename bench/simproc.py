"""The CT-e1 simulator as a separate process (its own GIL), on a free loopback port."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from bench.mcpstdio import Upstream
from bench.procs import CTE1_MCP, clean_env, free_port, stop, wait_for_port

#: The simulator's benchmark tenant: session N, record 1 is a streamed valid WAV of N MiB.
BENCHMARK_TENANT = "0399999999"


def defaults() -> tuple[str, str]:
    """The simulator's demo key and source UUID (imported late: the simulator may still be in the works)."""
    from cte1_mcp.simulator import DEFAULT_API_KEY, DEFAULT_SOURCE_UUID

    return DEFAULT_API_KEY, str(DEFAULT_SOURCE_UUID)


def benchmark_key(mib: int) -> dict[str, str | int]:
    return {"tenantId": BENCHMARK_TENANT, "sessionId": mib, "recordId": 1}


@contextmanager
def simulator_process(log: BinaryIO, min_interval: float = 0.0) -> Iterator[Upstream]:
    """``cte1-mcp simulator`` on 127.0.0.1:<free port>; yields where it is and its key."""
    api_key, source_uuid = defaults()
    port = free_port()
    command = [
        str(CTE1_MCP),
        "simulator",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--api-key",
        api_key,
        "--source-uuid",
        source_uuid,
        "--min-interval",
        str(min_interval),
    ]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=clean_env())
    try:
        wait_for_port(port, process)
        yield Upstream(f"http://127.0.0.1:{port}", api_key, source_uuid)
    finally:
        stop(process)


def audio_data_url(upstream: Upstream, api_version: str = "v1") -> str:
    return f"{upstream.url}/general/{api_version}/{upstream.source_uuid}/call/audio_data"
