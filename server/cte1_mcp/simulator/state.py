"""The in-process test hooks of a running simulator: its clock, its request log, one-shot faults.

They live on a Python object, never on the wire (the only HTTP view is read-only stats), so a
client under test cannot reach them. The object is shared between the server's thread and the
test's thread, hence the lock.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

Outcome = Literal[
    "ok",
    "not_found",
    "method_not_allowed",
    "unauthorized",
    "forbidden",
    "rate_limited",
    "invalid_json",
    "invalid_parameter",
    "unknown_parameter",
    "missing_parameter",
    "tenant_not_allowed",
    "no_such_call",
    "expired",
    "in_progress",
    "fault",
]


@dataclass(slots=True)
class RequestRecord:
    """One request as the simulator saw it; ``bytes_sent``/``completed`` grow while a body streams."""

    monotonic: float
    at: datetime
    method: str
    path: str
    #: The parsed JSON body, or None when there was none or it was not JSON.
    body: Any
    status: int
    outcome: Outcome
    bytes_sent: int = 0
    #: True once the whole response was handed to the HTTP server (False if the client went away).
    completed: bool = False


@dataclass(frozen=True, slots=True)
class Fault:
    """A one-shot misbehaviour for the next request that passes authentication and the rate limit.

    With ``body`` set, that body is answered instead (e.g. a 500, or an HTML error page); otherwise
    the request is served normally, after ``delay`` seconds, and a successful response is cut off
    (connection closed) after ``truncate_after`` body bytes when that is set, stalls (sends nothing
    more, connection open, until the client leaves) after ``stall_after`` bytes, or is sent one
    byte every ``drip_interval`` seconds (an upstream that never times out a read, yet never ends).
    """

    status: int = 200
    body: bytes | None = None
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    truncate_after: int | None = None
    stall_after: int | None = None
    drip_interval: float | None = None


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class SimulatorState:
    """Clock, rate-limit window, request log and pending faults of one simulator."""

    #: The instant sample calls are placed relative to (see ``calls``); whole seconds.
    epoch: datetime = field(default_factory=lambda: _utc_now().replace(microsecond=0))
    _offset: timedelta = field(default=timedelta(0), init=False, repr=False)
    _frozen_at: datetime | None = field(default=None, init=False, repr=False)
    _last_accepted: float | None = field(default=None, init=False, repr=False)
    _requests: list[RequestRecord] = field(default_factory=list, init=False, repr=False)
    _faults: list[Fault] = field(default_factory=list, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.epoch.tzinfo is None:
            raise ValueError("epoch must be timezone-aware")

    # --- clock ---------------------------------------------------------------------------------

    def now(self) -> datetime:
        """The simulated time (aware UTC): real time shifted by ``advance``, or frozen by ``set_now``."""
        with self._lock:
            if self._frozen_at is not None:
                return self._frozen_at
            return _utc_now() + self._offset

    def set_now(self, moment: datetime) -> None:
        """Stop the clock at ``moment`` (until ``reset``), so age boundaries can be tested exactly."""
        if moment.tzinfo is None:
            raise ValueError("moment must be timezone-aware")
        with self._lock:
            self._frozen_at = moment.astimezone(UTC)

    def advance(self, delta: timedelta) -> None:
        """Move the clock (frozen or running) by ``delta``."""
        with self._lock:
            if self._frozen_at is not None:
                self._frozen_at += delta
            else:
                self._offset += delta

    # --- request log and faults ---------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        """A snapshot of every request so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def fail_next(self, fault: Fault) -> None:
        """Queue a fault; each is used by exactly one request, in order."""
        with self._lock:
            self._faults.append(fault)

    def reset(self) -> None:
        """Forget requests, the rate-limit window and queued faults; run the clock from real time again."""
        with self._lock:
            self._requests.clear()
            self._faults.clear()
            self._last_accepted = None
            self._offset = timedelta(0)
            self._frozen_at = None

    def stats(self) -> dict[str, Any]:
        with self._lock:
            outcomes = Counter(record.outcome for record in self._requests)
            streamed = sum(record.bytes_sent for record in self._requests)
            total = len(self._requests)
        return {"requests": total, "outcomes": dict(outcomes), "bytesSent": streamed}

    # --- used by the app ----------------------------------------------------------------------

    def admit(self, started: float, min_interval: float) -> float | None:
        """Accept a request that started at ``started`` (monotonic), or say how long to wait.

        Only accepted requests move the window: a client that retries too early is refused but
        not pushed further back, which is what a fixed-interval limiter on the platform would do.
        """
        with self._lock:
            if min_interval > 0 and self._last_accepted is not None:
                wait = self._last_accepted + min_interval - started
                if wait > 0:
                    return wait
            self._last_accepted = started
            return None

    def take_fault(self) -> Fault | None:
        with self._lock:
            return self._faults.pop(0) if self._faults else None

    def log(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.append(record)
