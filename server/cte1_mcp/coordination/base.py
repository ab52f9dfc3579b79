"""What the service asks of coordination, whatever carries it (one process, a cache dir, Redis).

Two jobs, both owed to the platform rather than to one process:

* ``Spacer``: upstream requests start at least ``interval`` seconds apart, first come first
  served, and the platform's ``Retry-After`` holds every request back;
* ``Flights``: one download per recording at a time; a caller whose recording is being
  downloaded elsewhere waits (with that download's progress where it can be had) and then looks
  at its store again.

A backend that cannot do its job raises ``CoordinationUnavailable``: the service then refuses the
upstream request rather than risk exceeding the platform's limit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Protocol, TypeAlias

from cte1_mcp.models import CallKey
from cte1_mcp.progress import Progress, ProgressCallback
from cte1_mcp.settings import Settings

#: How a waiter hears "still N seconds to go".
OnWait: TypeAlias = Callable[[float], Awaitable[None]]


class Spacer(Protocol):
    """Start-to-start spacing of upstream requests and the platform's request to pause."""

    @property
    def interval(self) -> float: ...

    async def acquire(self, on_wait: OnWait | None = None) -> None:
        """Return when the caller may start its request; ``on_wait(seconds_left)`` reports the wait
        at least every second. A caller cancelled while waiting gives up its place."""
        ...

    async def defer(self, seconds: float) -> None:
        """Hold every start back for ``seconds`` from now (the platform said so)."""
        ...

    async def deferred_for(self) -> float:
        """Seconds the last ``defer`` still holds every start back (0 if none)."""
        ...


class Claim(Protocol):
    """The right to download one recording; held for the ``claim`` block."""

    async def publish(self, progress: Progress) -> None:
        """Tell callers waiting for this recording elsewhere how the download goes (best effort)."""
        ...


class Flights(Protocol):
    """One download per recording at a time across everything that shares this backend."""

    def claim(
        self, key: CallKey, on_progress: ProgressCallback | None = None
    ) -> AbstractAsyncContextManager[Claim]:
        """Wait while another holder downloads ``key`` (relaying its progress), then hold the claim.

        The caller must look at its store again once it holds the claim: the previous holder has
        most likely stored the recording. A holder that dies releases the claim (its lock or
        lease goes with it), so one waiter takes over.
        """
        ...


@dataclass(frozen=True, slots=True)
class Coordination:
    """The backend the service was given, and its name for logs and the start-up line."""

    name: str
    spacer: Spacer
    flights: Flights


def platform_id(settings: Settings) -> str:
    """The platform identity the limit belongs to (base URL + sourceUuid), hashed: it names shared
    state (files, Redis keys) without spelling out the deployment, and never involves the key."""
    identity = f"{str(settings.base_url).rstrip('/')}\n{settings.source_uuid}"
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def call_id(key: CallKey) -> str:
    """A fixed-length name for one recording's shared state."""
    return hashlib.sha256(str(key).encode()).hexdigest()[:32]
