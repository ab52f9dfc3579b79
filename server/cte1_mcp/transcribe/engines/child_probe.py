"""Trying a model in a child process before this process loads it.

Engines' native code can end the whole process instead of raising on a bad model: sherpa-onnx
``_Exit``s on a missing metadata key, CTranslate2 faults in word alignment when config.json is of
another Whisper. So a model is first run in a child (``python -m <engine>_probe JSON``), where that
costs the child, not the server; the engine turns what ended it into a reason. Each engine keeps the
keys it has tried (the files' size and modification time, the device and precision) in a ``Probed``,
so a model is tried once per version of its files in a process.

A probe can take minutes (a large model loaded on a CPU). A caller that gives up meanwhile wraps the
load in :func:`stopped_by`: its probe child is killed and :class:`ProbeStopped` raised, so the thread
is free at once. Thread-local rather than a parameter because the probe sits under each engine's
``load``, which the CLI's commands call too, with nothing to cancel.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: How often a running probe looks at its caller's ``cancelled``.
CANCEL_POLL_SECONDS = 0.1


class ProbeStopped(Exception):
    """The caller gave up (:func:`stopped_by`): the probe's child was killed."""


_caller = threading.local()


@contextmanager
def stopped_by(cancelled: Callable[[], bool]) -> Iterator[None]:
    """Probes this thread runs inside the block are killed once ``cancelled()`` is true."""
    outer = getattr(_caller, "cancelled", None)
    _caller.cancelled = cancelled
    try:
        yield
    finally:
        _caller.cancelled = outer


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the child ended and what it said."""

    returncode: int
    #: Its last JSON object on stdout (``{"ok": true}``, ``{"error": "…"}``, or the last step it
    #: announced when something ended it mid-way); empty when it printed none.
    answer: dict[str, Any]
    #: Its stderr, one stripped line each (the native libraries log there).
    log: list[str]

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and bool(self.answer.get("ok"))

    @property
    def signal(self) -> str | None:
        """The signal that ended it (``SIGSEGV``), if one did."""
        if self.returncode >= 0:
            return None
        try:
            return signal.Signals(-self.returncode).name
        except ValueError:
            return f"signal {-self.returncode}"


class Probed:
    """The keys whose probe passed in this process (shared by the threads that load models)."""

    def __init__(self) -> None:
        self._keys: set[Hashable] = set()
        self._lock = threading.Lock()

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._keys

    def add(self, key: Hashable) -> None:
        with self._lock:
            self._keys.add(key)


def stat_key(path: Path) -> tuple[str, int, int]:
    """What changes when a file does (links followed: a hub cache's files are links to its blobs)."""
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def run(module: str, config: Mapping[str, Any], *, timeout: float) -> Outcome:
    """``python -m module JSON`` in a child; ``subprocess.TimeoutExpired`` past ``timeout``,
    :class:`ProbeStopped` once the thread's :func:`stopped_by` says so (the child killed either way,
    and on any other way out, Ctrl-C included)."""
    cancelled: Callable[[], bool] | None = getattr(_caller, "cancelled", None)
    ends_at = time.monotonic() + timeout
    child = subprocess.Popen(  # noqa: S603 -- this interpreter, our module, a JSON argument
        [sys.executable, "-P", "-m", module, json.dumps(dict(config))],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        # the child needs no credentials: none of this server's settings go to it
        env={name: value for name, value in os.environ.items() if not name.upper().startswith("CTE1_")},
    )
    try:
        while True:
            try:
                # communicate() keeps what it read when it times out, so it can be called again
                stdout, stderr = child.communicate(
                    timeout=min(CANCEL_POLL_SECONDS, max(ends_at - time.monotonic(), 0))
                )
                break
            except subprocess.TimeoutExpired:
                if cancelled is not None and cancelled():
                    raise ProbeStopped from None
                if time.monotonic() >= ends_at:
                    raise subprocess.TimeoutExpired(child.args, timeout) from None
    finally:
        if child.returncode is None:
            child.kill()
            child.communicate()
    log = [line.strip() for line in stderr.splitlines() if line.strip()]
    return Outcome(child.returncode, last_json(stdout), log)


def say(**answer: Any) -> None:
    """In the child: one JSON line to the parent, flushed at once (the next step may end the child)."""
    print(json.dumps(answer), flush=True)


def last_json(stdout: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {}
