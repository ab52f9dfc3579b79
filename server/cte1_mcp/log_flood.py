"""Warnings anybody can cause, bounded in the log: a request with a wrong ``Host`` or ``Origin``
(the SDK's DNS-rebinding check) or bytes that are not HTTP (uvicorn) each log a warning, so a
sender's rate would become the log's. Per logger, the first warning after a quiet interval is
written, the others of the interval are counted, and the next one written says how many were not.
A filter on the libraries' loggers, since their calls cannot be changed; errors always pass.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

#: A flood costs at most a line a minute per logger; the first of a quiet spell is seen at once.
INTERVAL_SECONDS = 60.0
#: The loggers that warn once per request of anybody's.
FLOODABLE = ("mcp.server.transport_security", "uvicorn.error")


class FloodFilter(logging.Filter):
    def __init__(
        self, interval: float = INTERVAL_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._quiet_until: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()  # records arrive from worker threads too

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING:
            return True
        now = self._clock()
        with self._lock:
            if now < self._quiet_until.get(record.name, float("-inf")):
                self._held[record.name] = self._held.get(record.name, 0) + 1
                return False
            self._quiet_until[record.name] = now + self.interval
            held = self._held.pop(record.name, 0)
        if held:
            record.msg = (
                f"{record.getMessage()} (and {held} more warning(s) of {record.name} in the "
                f"{self.interval:g} s before, not logged one by one)"
            )
            record.args = None
        return True


def bound_floods(interval: float = INTERVAL_SECONDS) -> None:
    """Put one filter on each floodable logger (again on a second call: replaced, not added)."""
    for name in FLOODABLE:
        target = logging.getLogger(name)
        for old in [f for f in target.filters if isinstance(f, FloodFilter)]:
            target.removeFilter(old)
        target.addFilter(FloodFilter(interval))
