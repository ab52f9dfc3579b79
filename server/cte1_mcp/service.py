"""The one use case: a recording for a call key, from the store or else from CT-e1, exactly once.

store (hit: done) → single-flight (identical callers share one download) → spacer (5-second
start-to-start spacing, and the platform's Retry-After for everyone) → upstream client streaming
into a store staging file → atomic commit.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta

import anyio
import anyio.to_thread
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from cte1_mcp.errors import (
    AudioTooLarge,
    RateLimited,
    RecordingExpired,
    StorageError,
    TenantNotAllowed,
    UpstreamError,
)
from cte1_mcp.limiter import RequestSpacer, SingleFlight
from cte1_mcp.models import CallKey, Recording
from cte1_mcp.progress import Progress, ProgressCallback
from cte1_mcp.settings import Settings
from cte1_mcp.store import RecordingStore
from cte1_mcp.upstream import CallAudioClient

logger = logging.getLogger(__name__)

#: Attempts per download for failures worth an immediate, spaced retry (rate limit, outage, truncation).
MAX_ATTEMPTS = 3
#: A platform-requested wait longer than this is returned to the caller instead of waited out.
MAX_RETRY_AFTER_SECONDS = 30.0
#: Added to CTE1_MIN_INTERVAL_SECONDS so that arrivals, not just departures, keep the spacing.
SPACING_MARGIN_SECONDS = 0.25
#: How often the store deletes what retention no longer allows, without waiting for traffic.
SWEEP_INTERVAL_SECONDS = 300.0


class RecordingService:
    """Owns the store, the limiter and the upstream client; everything above it asks for keys."""

    def __init__(
        self,
        settings: Settings,
        *,
        client: CallAudioClient,
        store: RecordingStore,
        spacer: RequestSpacer,
        flights: SingleFlight[CallKey, Recording, Progress],
    ) -> None:
        self.settings = settings
        self._store = store
        self._client = client
        self._spacer = spacer
        self._flights = flights

    @classmethod
    @asynccontextmanager
    async def open(cls, settings: Settings) -> AsyncIterator[RecordingService]:
        """Build the whole chain from settings and close it (HTTP pool, flight tasks) on exit."""
        async with AsyncExitStack() as stack:
            client = await stack.enter_async_context(CallAudioClient(settings))
            flights: SingleFlight[CallKey, Recording, Progress] = await stack.enter_async_context(
                SingleFlight()
            )
            store = RecordingStore(
                settings.cache_dir,
                max_age=timedelta(hours=settings.retention_hours),
                max_bytes=settings.cache_max_bytes,
            )
            await anyio.to_thread.run_sync(store.sweep)
            sweeper = await stack.enter_async_context(anyio.create_task_group())
            # Expired personal data is deleted on time even when no request comes to notice it.
            sweeper.start_soon(store.sweep_every, SWEEP_INTERVAL_SECONDS)
            stack.callback(sweeper.cancel_scope.cancel)
            yield cls(
                settings,
                client=client,
                store=store,
                spacer=RequestSpacer(spacing(settings.min_interval_seconds)),
                flights=flights,
            )

    async def get(self, key: CallKey, on_progress: ProgressCallback | None = None) -> Recording:
        """A committed recording: from the store, or downloaded once however many callers ask."""
        recording = self._lookup(key)
        if recording is not None:
            return recording
        return await self._flights.run(key, lambda emit: self._download(key, emit), on_event=on_progress)

    async def read_audio(
        self, key: CallKey, on_progress: ProgressCallback | None = None, *, max_bytes: int | None = None
    ) -> tuple[Recording, bytes]:
        """The recording and its bytes; fetched again once if eviction removed it in between."""
        for attempt in (1, 2):
            recording = await self.get(key, on_progress)
            if max_bytes is not None and recording.audio.size_bytes > max_bytes:
                raise AudioTooLarge(
                    f"The recording is {recording.audio.size_bytes:,} bytes, more than this server returns "
                    f"in one message ({max_bytes:,} bytes).",
                    next_step="Over stdio, open the local file named by get_call_audio's audio.path; "
                    "or ask the operator to raise CTE1_RESOURCE_MAX_BYTES.",
                )
            try:
                return recording, await anyio.Path(recording.path).read_bytes()
            except FileNotFoundError:
                if attempt == 2:
                    raise StorageError("The stored recording vanished while it was being read.") from None
                logger.info("%s was evicted before it could be read; fetching it again", key)
            except OSError as exc:
                raise StorageError(f"The stored recording could not be read ({exc.strerror}).") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def list_recordings(self) -> list[Recording]:
        return await anyio.to_thread.run_sync(self._store.list)

    def _lookup(self, key: CallKey) -> Recording | None:
        """The documented rules that need no upstream request, then the store (a worker thread)."""
        allowed = self.settings.allowed_tenants
        if allowed and key.tenant_id not in allowed:
            raise TenantNotAllowed(
                f"Tenant {key.tenant_id} is not one this server may read (allowed: {', '.join(allowed)})."
            )
        expired_at = self._store.expired_until(key)
        if expired_at is not None:
            raise RecordingExpired(
                f"Call {key} connected more than 31 days ago; the platform kept its audio only until "
                f"{expired_at.isoformat(timespec='seconds')}."
            )
        return self._store.get(key)

    async def _download(self, key: CallKey, emit: Callable[[Progress], Awaitable[None]]) -> Recording:
        recording = await anyio.to_thread.run_sync(self._store.get, key)  # a flight just ended?
        if recording is not None:
            return recording
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(MAX_ATTEMPTS),
            retry=retry_if_exception(_worth_retrying),
            before_sleep=_log_retry,
            reraise=True,
        ):
            with attempt:
                return await self._download_once(key, emit)
        raise AssertionError("unreachable: AsyncRetrying reraises the last failure")  # pragma: no cover

    async def _download_once(self, key: CallKey, emit: Callable[[Progress], Awaitable[None]]) -> Recording:
        async def waiting(seconds: float) -> None:
            await emit(
                Progress("waiting", 0, None, f"waiting {seconds:.1f} s for the platform's request spacing")
            )

        async def downloading(received: int, total: int | None) -> None:
            await emit(Progress("downloading", received, total, f"received {received:,} bytes"))

        held_back = self._spacer.deferred_for()
        if held_back > MAX_RETRY_AFTER_SECONDS:
            raise RateLimited("CT-e1 asked this server to pause its requests.", retry_after_seconds=held_back)
        await self._spacer.acquire(on_wait=waiting)
        try:
            async with self._store.staging(key) as staging:
                fetched = await self._client.fetch(key, staging, on_progress=downloading)
                recording = await staging.commit(fetched.metadata, fetched.audio_content_type)
        except RateLimited as limited:
            # The platform's word holds for every request of this process, not just this one.
            if limited.retry_after_seconds is None:
                limited.retry_after_seconds = self._spacer.interval or 1.0
            self._spacer.defer(limited.retry_after_seconds)
            raise
        logger.info("stored %s (%d bytes)", key, recording.audio.size_bytes)
        return recording


def spacing(min_interval: float) -> float:
    """Start-to-start spacing with a margin: network jitter must not bring two arrivals at CT-e1
    closer than its minimum (measured on loopback: a request can arrive a few ms later than sent)."""
    return min_interval + SPACING_MARGIN_SECONDS if min_interval > 0 else 0.0


def _worth_retrying(exc: BaseException) -> bool:
    if not isinstance(exc, UpstreamError) or not exc.retryable:
        return False
    wait = exc.retry_after_seconds
    return wait is None or wait <= MAX_RETRY_AFTER_SECONDS


def _log_retry(state: RetryCallState) -> None:
    failure = state.outcome.exception() if state.outcome is not None else None
    logger.info("attempt %d failed (%s); retrying", state.attempt_number, getattr(failure, "code", failure))
