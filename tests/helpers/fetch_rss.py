"""``python -m tests.helpers.fetch_rss URL``: one fetch in a fresh process; prints its outcome and
its peak RSS before and after, as JSON (a process of its own, so the peak is this fetch's)."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import anyio

from cte1_mcp.cte1.audio_data import AudioDataEndpoint
from cte1_mcp.errors import Cte1Error
from tests.helpers.raw_upstream import KEY, make_settings


def vm_hwm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise KeyError("VmHWM")


class Discard:
    def __init__(self) -> None:
        self.size = 0

    def write_blocking(self, chunk: bytes) -> None:
        self.size += len(chunk)


async def main(url: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as cache:
        settings = make_settings(url, Path(cache), max_audio_bytes=64 * 1024 * 1024)
        sink = Discard()
        async with AudioDataEndpoint(settings) as endpoint:
            baseline = vm_hwm_bytes()
            try:
                await endpoint.fetch(KEY, sink)
                code = "ok"
            except Cte1Error as exc:
                code = exc.code
        return {"code": code, "written": sink.size, "baseline": baseline, "peak": vm_hwm_bytes()}


if __name__ == "__main__":
    print(json.dumps(anyio.run(main, sys.argv[1])))
