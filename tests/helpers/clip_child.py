"""``python -m tests.helpers.clip_child JOBS``: clips cut in a fresh process, so a crash in an
encoder is seen as the process's exit status (not as the test run dying) and the peak RSS is the
clip's own.

JOBS is a JSON list of ``[source, out, format, rate, channel, start, end]`` (channel mix, 0 or 1).
Each clip is cut (as the server does) in a worker thread with a small stack, so an encoder that
needs stack in proportion to the clip fails here whatever the platform's default thread stack.
Prints one JSON line per clip: its peak RSS growth over the RSS before it (bytes) and its seconds.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import cast

from cte1_mcp.audio.clips import ClipFormat, ClipPlan, cut

#: Smaller than any platform's default thread stack that we know of (glibc: 8 MiB, musl: 128 KiB
#: raised by Python to 1 MiB...): what a clip needs must not grow with its length.
STACK_BYTES = 512 * 1024


def rss_field(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return int(line.split()[1]) * 1024
    raise KeyError(name)


def reset_peak() -> None:
    """Start VmHWM afresh from the current RSS (Linux ``clear_refs``)."""
    Path("/proc/self/clear_refs").write_text("5")


def one(job: list[object]) -> dict[str, object]:
    source, out, fmt, rate, channel, start, end = (str(value) for value in job)
    selected = None if channel == "mix" else int(channel)
    clip = ClipPlan(float(start), float(end), selected, cast(ClipFormat, fmt), int(rate))
    failure: list[BaseException] = []

    def work() -> None:
        try:
            with Path(source).open("rb") as file, Path(out).open("w+b") as target:
                cut(file, clip, target)
        except BaseException as exc:  # reported to the parent, which fails the test
            failure.append(exc)

    reset_peak()
    before = rss_field("VmRSS")
    began = time.perf_counter()
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    seconds = time.perf_counter() - began
    if failure:
        raise failure[0]
    return {"out": out, "growth": rss_field("VmHWM") - before, "seconds": round(seconds, 2)}


def main(jobs: list[list[object]]) -> None:
    threading.stack_size(STACK_BYTES)
    for job in jobs:
        print(json.dumps(one(job)), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
