"""Warnings anybody can cause, bounded in the log: a request with a wrong ``Host`` or ``Origin``
(the SDK's DNS-rebinding check) or bytes that are not HTTP (uvicorn) each log a warning, so a
sender's rate would become the log's. Per kind of warning (its logger and its words before any
``:``, so one host name does not hide another kind), the first after a quiet interval is written,
the others of the interval are counted, and the next one written says how many were not, and
since when; a server stopping gracefully writes what it still holds. A filter on the libraries'
loggers, since their calls cannot be changed; only warnings are held (errors always pass).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

#: A flood costs at most a line a minute per kind; the first of a quiet spell is seen at once.
INTERVAL_SECONDS = 60.0
#: The loggers that warn once per request of anybody's.
FLOODABLE = ("mcp.server.transport_security", "uvicorn.error")
#: Set on the records this module writes itself (the held counts), which the filter lets through.
REPORT = "cte1_flood_report"

Kind = tuple[str, str]


@dataclass
class _Held:
    count: int
    since: datetime


def kind_of(record: logging.LogRecord) -> Kind:
    """``Invalid Host header: evil.example`` and ``…: other.example`` are one kind."""
    return record.name, str(record.msg).split(":", 1)[0]


class FloodFilter(logging.Filter):
    def __init__(
        self,
        interval: float = INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now().astimezone(),
    ) -> None:
        super().__init__()
        self.interval = interval
        self._clock, self._now = clock, now
        self._quiet_until: dict[Kind, float] = {}
        self._held: dict[Kind, _Held] = {}
        self._lock = threading.Lock()  # records arrive from worker threads too

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING or getattr(record, REPORT, False):
            return True
        kind, now = kind_of(record), self._clock()
        with self._lock:
            if now < self._quiet_until.get(kind, float("-inf")):
                if kind not in self._held:
                    self._held[kind] = _Held(0, self._now())
                self._held[kind].count += 1
                return False
            self._quiet_until[kind] = now + self.interval
            held = self._held.pop(kind, None)
        if held is not None:
            record.msg = f"{record.getMessage()} (and {_more(held)}, not logged one by one)"
            record.args = None
        return True

    def take_held(self) -> dict[Kind, _Held]:
        with self._lock:
            held, self._held = self._held, {}
        return held


def _more(held: _Held) -> str:
    return f"{held.count} more like it since {held.since:%H:%M:%S}"


def bound_floods(interval: float = INTERVAL_SECONDS) -> None:
    """Put one filter on each floodable logger (again on a second call: replaced, not added)."""
    for name in FLOODABLE:
        target = logging.getLogger(name)
        for old in [f for f in target.filters if isinstance(f, FloodFilter)]:
            target.removeFilter(old)
        target.addFilter(FloodFilter(interval))


async def report_held() -> None:
    """Write what the filters still hold (the server is stopping): one line per kind."""
    for name in FLOODABLE:
        target = logging.getLogger(name)
        for flood in [f for f in target.filters if isinstance(f, FloodFilter)]:
            for (_, words), held in flood.take_held().items():
                target.warning(
                    "%d more warning(s) like '%s' since %s were not logged one by one",
                    held.count,
                    words,
                    f"{held.since:%H:%M:%S}",
                    extra={REPORT: True},
                )
