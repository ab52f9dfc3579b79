"""A simulator process whose request log can be read: ``python -m bench.simlog --min-interval S``.

``cte1-mcp simulator`` shows only counts over HTTP (``/_simulator/stats``); the request spacing
needs each request's start time. This runs the same simulator (``run_in_thread``) in its own
process, so it shares no GIL with what is measured, prints its URL as one JSON line, and then
answers commands on stdin: ``log`` prints the request log as one JSON line, ``reset`` clears it.
The start times are ``time.monotonic()``, one clock for every process on Linux.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from bench.procs import ROOT, clean_env, close


def main() -> None:
    from cte1_mcp.simulator import SimulatorConfig, run_in_thread

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--min-interval", type=float, default=0.0)
    args = parser.parse_args()
    with run_in_thread(SimulatorConfig(port=0, min_interval=args.min_interval)) as sim:
        hello = {"url": sim.url, "apiKey": sim.config.api_key, "sourceUuid": sim.config.source_uuid}
        print(json.dumps(hello))
        sys.stdout.flush()
        for line in sys.stdin:
            command = line.strip()
            if command == "log":
                records = [
                    {
                        "monotonic": r.monotonic,
                        "path": r.path,
                        "body": r.body,
                        "status": r.status,
                        "outcome": r.outcome,
                        "bytesSent": r.bytes_sent,
                        "completed": r.completed,
                    }
                    for r in sim.state.requests
                ]
                print(json.dumps(records))
            elif command == "reset":
                sim.state.reset()
                print("{}")
            sys.stdout.flush()


@dataclass(frozen=True, slots=True)
class Logged:
    monotonic: float
    body: Any
    status: int
    outcome: str

    def is_for(self, key: dict[str, Any]) -> bool:
        return isinstance(self.body, dict) and all(self.body.get(k) == v for k, v in key.items())


class LoggingSimulator:
    """The client side of ``bench.simlog``: where the simulator is, and its request log."""

    def __init__(self, process: subprocess.Popen[str], hello: dict[str, str]) -> None:
        self._process = process
        self.url = hello["url"]
        self.api_key = hello["apiKey"]
        self.source_uuid = hello["sourceUuid"]

    def _ask(self, command: str) -> Any:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        return json.loads(self._process.stdout.readline())

    def requests(self) -> list[Logged]:
        """Requests to the audio_data endpoint, oldest first."""
        return [
            Logged(r["monotonic"], r["body"], r["status"], r["outcome"])
            for r in self._ask("log")
            if r["path"].endswith("/call/audio_data")
        ]

    def reset(self) -> None:
        self._ask("reset")


@contextmanager
def logging_simulator(min_interval: float = 0.0) -> Iterator[LoggingSimulator]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.simlog", "--min-interval", str(min_interval)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=clean_env(),
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("bench.simlog exited before saying where it listens")
        yield LoggingSimulator(process, json.loads(line))
    finally:
        close(process, 10)


if __name__ == "__main__":
    main()
