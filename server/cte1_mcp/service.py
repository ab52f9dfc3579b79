"""The use cases: a recording for a call key, from the repository or else from CT-e1, exactly once.

repository (hit: done) → single-flight in this process → the coordination backend's claim (one
download per recording across processes and machines) → the repository again (the previous holder
has most likely just stored it) → the shared spacer (start-to-start spacing and the platform's
Retry-After) → the audio_data endpoint streaming into a staging → atomic commit. A retry goes
round the same path, repository first, so it never downloads what another process has stored.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Protocol

import anyio
import anyio.to_thread
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from cte1_mcp.audit import note_upstream_request
from cte1_mcp.coordination import open_coordination
from cte1_mcp.coordination.base import Claim, Coordination
from cte1_mcp.coordination.single_flight import Flight, SingleFlight
from cte1_mcp.cte1.audio_data import AudioDataEndpoint
from cte1_mcp.errors import (
    AudioTooLarge,
    RateLimited,
    RecordingExpired,
    RecordingGone,
    TenantNotAllowed,
    UpstreamError,
)
from cte1_mcp.models import CallKey, CallMetadata, Recording
from cte1_mcp.progress import Progress, ProgressCallback
from cte1_mcp.repository.base import RecordingRepository, Staging
from cte1_mcp.repository.local import LocalRepository
from cte1_mcp.settings import Settings

logger = logging.getLogger(__name__)

#: Attempts per download for failures worth an immediate, spaced retry (rate limit, outage, truncation).
MAX_ATTEMPTS = 3
#: A platform-requested wait longer than this is returned to the caller instead of waited out.
RETURN_TO_CALLER_SECONDS = 30.0
#: How often the store deletes what retention no longer allows, without waiting for traffic.
SWEEP_INTERVAL_SECONDS = 300.0

#: A derived artefact of one stored version of a recording: (call, audio sha256, artefact name).
ArtefactKey = tuple[CallKey, str, str]


class Fetched(Protocol):
    """What the endpoint says of a complete answer: enough to commit the staging."""

    @property
    def metadata(self) -> CallMetadata: ...

    @property
    def audio_content_type(self) -> str | None: ...


class AudioEndpoint(Protocol):
    """CT-e1's audio_data, as the service uses it: every failure is an ``UpstreamError``."""

    async def fetch(
        self,
        key: CallKey,
        sink: Staging,
        *,
        on_progress: Callable[[int, int | None], Awaitable[None]] | None = None,
    ) -> Fetched: ...


def check_one_message(
    what: str, size: int, limit: int, local_path: str | None = None, download_url: str | None = None
) -> None:
    """The one rule for every blob a resource returns (recording, clip, picture): over the limit
    (CTE1_RESOURCE_MAX_BYTES for resources) is [audio_too_large] with the same next step."""
    if size <= limit:
        return
    ways = [f"over stdio, open the local file named by {local_path}"] if local_path else []
    ways += [f"over HTTP, GET its {download_url}"] if download_url else []
    ways.append("ask the operator to raise CTE1_RESOURCE_MAX_BYTES.")
    next_step = "; or ".join(ways)
    raise AudioTooLarge(
        f"{what} is {size:,} bytes, more than this server returns in one message ({limit:,} bytes).",
        next_step=next_step[0].upper() + next_step[1:],
    )


class RecordingService:
    """Recordings by call key for the MCP layer and the analysis: stored, or fetched once."""

    def __init__(
        self,
        settings: Settings,
        *,
        repository: RecordingRepository,
        endpoint: AudioEndpoint,
        coordination: Coordination,
        flights: SingleFlight[CallKey, Recording, Progress],
        artefacts: SingleFlight[ArtefactKey, bytes, Progress] | None = None,
    ) -> None:
        self.settings = settings
        self.repository = repository
        self._endpoint = endpoint
        self._coordination = coordination
        self._flights = flights
        #: Where the analysis layer shares the computing of an artefact between identical callers
        #: (``open`` always provides it; it lives as long as the service, like the downloads').
        self.artefacts = artefacts

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[RecordingService]:
        """Build the whole chain from settings and close it (HTTP pool, coordination, flights) on exit."""
        # First, outside any task group: a refused cache directory raises ConfigurationError as is.
        # The store indexes itself at start-up (a walk): in a worker thread, off the event loop.
        repository = await anyio.to_thread.run_sync(LocalRepository.from_settings, settings)
        async with AsyncExitStack() as stack:
            coordination = await stack.enter_async_context(open_coordination(settings))
            endpoint = await stack.enter_async_context(AudioDataEndpoint(settings))
            flights: SingleFlight[CallKey, Recording, Progress] = await stack.enter_async_context(
                SingleFlight()
            )
            artefacts: SingleFlight[ArtefactKey, bytes, Progress] = await stack.enter_async_context(
                SingleFlight()
            )
            sweeper = await stack.enter_async_context(anyio.create_task_group())
            # Expired personal data is deleted on time even when no request comes to notice it.
            sweeper.start_soon(repository.run_sweeper, SWEEP_INTERVAL_SECONDS)
            stack.callback(sweeper.cancel_scope.cancel)
            logger.info("rate limit and downloads coordinated through the %s", coordination.name)
            yield cls(
                settings,
                repository=repository,
                endpoint=endpoint,
                coordination=coordination,
                flights=flights,
                artefacts=artefacts,
            )

    async def get(self, key: CallKey, on_progress: ProgressCallback | None = None) -> Recording:
        """A committed recording: from the repository, or downloaded once however many callers ask."""
        recording = self._lookup(key)
        if recording is not None:
            return recording
        return await self._flights.run(key, lambda flight: self._download(key, flight), on_event=on_progress)

    def stored(self, key: CallKey) -> Recording | None:
        """The committed recording of ``key`` if the store has it, under the same rules as ``get``
        (allowed tenants, the platform's 31 days); never an upstream request."""
        return self._lookup(key)

    async def read_audio(
        self, key: CallKey, on_progress: ProgressCallback | None = None, *, max_bytes: int | None = None
    ) -> tuple[Recording, bytes]:
        """The recording and its bytes, both of the same stored version (fetched again once if it
        was evicted or replaced in between)."""
        for attempt in (1, 2):
            recording = await self.get(key, on_progress)
            if max_bytes is not None:
                check_one_message(
                    "The recording",
                    recording.audio.size_bytes,
                    max_bytes,
                    "get_call_audio's audio.path",
                    "audio.downloadUrl",
                )
            try:
                return recording, await self.repository.read_audio(recording)
            except RecordingGone:
                if attempt == 2:
                    raise
                logger.info("%s was evicted before it could be read; fetching it again", key)
        raise AssertionError("unreachable")  # pragma: no cover

    async def list_recordings(self) -> list[Recording]:
        return await self.repository.list()

    def local_path(self, recording: Recording) -> Path | None:
        """The recording's file on this machine, if the repository keeps one (offer it over stdio only)."""
        return self.repository.local_path(recording)

    def _lookup(self, key: CallKey) -> Recording | None:
        """The documented rules that need no upstream request, then the repository (cheap: an index)."""
        allowed = self.settings.allowed_tenants
        if allowed and key.tenant_id not in allowed:
            raise TenantNotAllowed(
                f"Tenant {key.tenant_id} is not one this server may read (allowed: {', '.join(allowed)})."
            )
        expired_at = self.repository.expired_at(key)
        if expired_at is not None:
            raise RecordingExpired(
                f"Call {key} connected more than 31 days ago; the platform kept its audio only until "
                f"{expired_at.isoformat(timespec='seconds')}."
            )
        return self.repository.get(key)

    async def _download(self, key: CallKey, flight: Flight[Recording, Progress]) -> Recording:
        progress = _FlightProgress(flight.emit)
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(MAX_ATTEMPTS),
            retry=retry_if_exception(_worth_retrying),
            before_sleep=_log_retry,
            reraise=True,
        ):
            with attempt:
                return await self._attempt(key, flight, progress)
        raise AssertionError("unreachable: AsyncRetrying reraises the last failure")  # pragma: no cover

    async def _attempt(
        self, key: CallKey, flight: Flight[Recording, Progress], progress: _FlightProgress
    ) -> Recording:
        """One try: the repository, the claim, the repository again, a slot, then the download."""
        # Every attempt looks first: another process sharing the store may have stored it meanwhile.
        recording = self._lookup(key)
        if recording is not None:
            return recording
        spacer = self._coordination.spacer
        async with AsyncExitStack() as held:
            # Only waiting so far: if every caller leaves, the flight gives up its place.
            with flight.abandonable():
                claim = await held.enter_async_context(self._coordination.flights.claim(key, progress.relay))
                recording = self._lookup(key)
                if recording is not None:
                    return recording  # the previous holder stored it
                held_back = await spacer.deferred_for()
                if held_back > RETURN_TO_CALLER_SECONDS:
                    raise RateLimited(
                        "CT-e1 asked this server to pause its requests.", retry_after_seconds=held_back
                    )
                progress.start_attempt(claim)
                held.callback(progress.end_attempt)  # nothing is published on a released claim
                await spacer.acquire(on_wait=progress.waiting)
            try:
                async with self.repository.staging(key) as staging:
                    note_upstream_request()  # for the audit line of the call that caused it
                    fetched = await self._endpoint.fetch(key, staging, on_progress=progress.downloading)
                    recording = await staging.commit(fetched.metadata, fetched.audio_content_type)
            except UpstreamError as failed:
                # The platform's Retry-After holds for every request sharing the limit, within the
                # cap, whatever the status it came with (a 503 as much as a 429): a retry, here or
                # in another process, waits for it. A refusal as too frequent always says when.
                wait = failed.retry_after_seconds
                if wait is None and isinstance(failed, RateLimited):
                    wait = spacer.interval or 1.0
                if wait is not None:
                    wait = min(wait, self.settings.max_retry_after_seconds)
                    failed.retry_after_seconds = wait
                    await spacer.defer(wait)
                raise
        logger.info("stored %s (%d bytes)", key, recording.audio.size_bytes)
        return recording


class _FlightProgress:
    """One flight's progress for its callers here and its waiters elsewhere.

    Numbers only grow, across retries too, and every message states the numbers it goes with: an
    attempt after a failed one counts on from what was already reported, and says so.
    """

    def __init__(self, emit: Callable[[Progress], Awaitable[None]]) -> None:
        self._emit = emit
        self._claim: Claim | None = None
        self._high = 0.0  # the largest ``done`` reported so far
        self._base = 0.0  # what earlier attempts (or another process's download) already counted

    def start_attempt(self, claim: Claim) -> None:
        self._claim = claim
        self._base = self._high

    def end_attempt(self) -> None:
        self._claim = None

    async def relay(self, progress: Progress) -> None:
        """Progress of the download another process is making of this recording."""
        await self._send(progress, share=False)

    async def waiting(self, seconds: float) -> None:
        await self._send(
            Progress(
                "waiting", self._high, None, f"waiting {seconds:.1f} s for the platform's request spacing"
            )
        )

    async def downloading(self, received: int, total: int | None) -> None:
        done = self._base + received
        whole = None if total is None else self._base + total
        if not self._base:
            message = (
                f"received {received:,} of {total:,} bytes"
                if total is not None
                else f"received {received:,} bytes"
            )
        else:
            of = f" of {whole:,.0f}" if whole is not None else ""
            message = f"received {done:,.0f}{of} bytes, {self._base:,.0f} of them before this attempt"
        await self._send(Progress("downloading", done, whole, message))

    async def _send(self, progress: Progress, *, share: bool = True) -> None:
        self._high = max(self._high, progress.done)
        await self._emit(progress)
        if share and self._claim is not None:
            await self._claim.publish(progress)


def _worth_retrying(exc: BaseException) -> bool:
    if not isinstance(exc, UpstreamError) or not exc.retryable:
        return False
    wait = exc.retry_after_seconds
    return wait is None or wait <= RETURN_TO_CALLER_SECONDS


def _log_retry(state: RetryCallState) -> None:
    failure = state.outcome.exception() if state.outcome is not None else None
    logger.info("attempt %d failed (%s); retrying", state.attempt_number, getattr(failure, "code", failure))
