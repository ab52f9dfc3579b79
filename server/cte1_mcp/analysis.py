"""The analytics, timeline and clip use cases, on top of the recording service and its repository.

Each result is computed once per stored version of a recording and kept beside it as a derived
artefact (private, retained, evicted and size-counted with the recording): a second call costs
neither an analysis nor an upstream request. The CPU work (decoding, detection, drawing,
encoding) runs in a worker thread, never on the event loop. Concurrent callers of one artefact
share one computation (``RecordingService.artefacts``): a caller that is cancelled only leaves;
while one is left the work goes on and is stored; once the last has left, the thread is told to
stop, ends within one block of audio, and nothing is stored.
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
from pydantic import ValidationError

from cte1_mcp.audio.analytics import ANALYSER_VERSION, CallAnalytics, analyse
from cte1_mcp.audio.clips import MIME_TYPES, ClipPlan, ClipRequest, cut, plan
from cte1_mcp.audio.decode import AudioStream, probe
from cte1_mcp.coordination.single_flight import Flight
from cte1_mcp.errors import RecordingGone
from cte1_mcp.models import CallKey, Recording
from cte1_mcp.progress import Progress, ProgressCallback
from cte1_mcp.service import RecordingService
from cte1_mcp.watched import StopFlag, run_watched

logger = logging.getLogger(__name__)

T = TypeVar("T")
#: A stored clip is hashed (and, when asked for, read) a MiB at a time.
READ_CHUNK = 1 << 20


def clip_uri(key: CallKey, clip: ClipPlan) -> str:
    """``…/clip?start=&end=&channel=&format=&rate=`` (seconds to the millisecond the artefact is
    named by; channel mix, 0 or 1), so reading it back names the same clip."""
    return (
        f"{key.uri('clip')}?start={_seconds(clip.start_seconds)}&end={_seconds(clip.end_seconds)}"
        f"&channel={clip.channel_name}&format={clip.format}&rate={clip.sample_rate}"
    )


def _seconds(value: float) -> str:
    return f"{value:.3f}".rstrip("0").rstrip(".")


@dataclass(frozen=True, slots=True)
class StoredClip:
    """What one read of the stored clip file saw: its size, digest and (when small enough) bytes."""

    size_bytes: int
    sha256: str
    data: bytes | None


@dataclass(frozen=True, slots=True)
class Clip:
    """A cut, converted clip as stored: the facts a result reports, and its bytes only when they
    were asked for and fit (a clip can be hundreds of MB: it is never held whole otherwise)."""

    plan: ClipPlan
    size_bytes: int
    sha256: str
    data: bytes | None
    mime_type: str
    uri: str
    #: The artefact's file (local store only; offer it over stdio only).
    path: Path | None

    @property
    def duration_seconds(self) -> float:
        return self.plan.duration_seconds


class AnalysisService:
    """get_call_analytics / get_call_clip and the timeline and analytics resources use this."""

    def __init__(self, recordings: RecordingService) -> None:
        self.recordings = recordings
        self.settings = recordings.settings
        self.repository = recordings.repository

    @property
    def _roles_tag(self) -> str:
        """Labels are part of a stored analysis: another CTE1_CHANNEL_ROLES means another artefact."""
        roles = ",".join(self.settings.channel_roles)
        return f"{zlib.crc32(roles.encode()):08x}"

    async def analytics(
        self, key: CallKey, on_progress: ProgressCallback | None = None
    ) -> tuple[Recording, CallAnalytics]:
        """The complete analysis (every segment); tool results use ``.capped()``."""
        name = f"analytics-v{ANALYSER_VERSION}-{self._roles_tag}.json"

        def compute(recording: Recording, report: Reporter) -> bytes:
            report.start(recording)
            with self.repository.open_audio(recording) as file:
                result = analyse(
                    file,
                    self.settings.channel_roles,
                    on_block=report.analysed,
                    checkpoint=report.checkpoint,
                )
            report.finish(recording)
            return result.model_copy(update={"timelineUri": recording.key.uri("timeline")}).to_json()

        return await self._artifact(key, name, compute, on_progress, CallAnalytics.model_validate_json)

    async def timeline_png(
        self, key: CallKey, on_progress: ProgressCallback | None = None
    ) -> tuple[Recording, bytes]:
        """The timeline picture (PNG) of the analysis."""
        _, analytics = await self.analytics(key, on_progress)
        name = f"timeline-v{ANALYSER_VERSION}-{self._roles_tag}.png"
        title = f"Call {key.tenant_id}/{key.session_id}/{key.record_id}"

        def draw(_: Recording, report: Reporter) -> bytes:
            from cte1_mcp.audio.timeline import render_png

            return render_png(analytics, title)

        return await self._artifact(key, name, draw, on_progress, bytes)

    async def clip(
        self,
        key: CallKey,
        request: ClipRequest,
        on_progress: ProgressCallback | None = None,
        *,
        data_max_bytes: int | None = None,
    ) -> tuple[Recording, Clip]:
        """A clip cut from the stored recording: InvalidParameter (before any decoding) when the
        range, channel or length does not fit this recording. Its bytes come along only when
        ``data_max_bytes`` is given and they fit it."""
        recording = await self.recordings.get(key, on_progress)
        audio = recording.audio.format
        duration, channels = audio.duration_seconds, audio.channels
        if duration is None or channels is None:  # sniffing could not tell: read the header only
            stream = await anyio.to_thread.run_sync(self._probe, recording)
            duration, channels = stream.duration_seconds, stream.channels
        clip = plan(
            request,
            duration=duration,
            channels=channels,
            roles=self.settings.channel_roles,
            max_seconds=self.settings.clip_max_seconds,
        )
        name = clip.artifact_name

        async def load(recording: Recording) -> StoredClip | None:
            return await anyio.to_thread.run_sync(self._read_clip, recording, name, data_max_bytes)

        async def produce(recording: Recording, report: Reporter, flight: Flight[bytes, Progress]) -> None:
            # The encoder writes straight into a staging file (a clip can be hundreds of MB), in
            # the repository's worker thread: a cancelled flight stops it at its next block.
            with flight.abandonable():
                await _relaying(
                    report,
                    flight,
                    self.repository.write_artifact_from(
                        recording, name, lambda out: self._cut(recording, clip, out, report)
                    ),
                )

        recording, stored = await self.once(key, name, load, produce, on_progress)
        return recording, Clip(
            clip,
            stored.size_bytes,
            stored.sha256,
            stored.data,
            MIME_TYPES[clip.format],
            clip_uri(key, clip),
            self.repository.artifact_path(recording, name),
        )

    def _cut(self, recording: Recording, clip: ClipPlan, out: BinaryIO, report: Reporter) -> None:
        with self.repository.open_audio(recording) as file:
            cut(file, clip, out, on_block=report.cut)

    def _read_clip(self, recording: Recording, name: str, data_max_bytes: int | None) -> StoredClip | None:
        """Size, sha256 and (if it fits) the bytes from one open file: all of the same version."""
        file = self.repository.open_artifact(recording, name)
        if file is None:
            return None
        with file:
            digest = hashlib.sha256()
            held = bytearray()
            size = 0
            while chunk := file.read(READ_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                if data_max_bytes is not None and size <= data_max_bytes:
                    held += chunk
        data = bytes(held) if data_max_bytes is not None and size <= data_max_bytes else None
        return StoredClip(size, digest.hexdigest(), data)

    def _probe(self, recording: Recording) -> AudioStream:
        with self.repository.open_audio(recording) as file:
            return probe(file)

    async def _artifact(
        self,
        key: CallKey,
        name: str,
        compute: Callable[[Recording, Reporter], bytes],
        on_progress: ProgressCallback | None,
        parse: Callable[[bytes], T],
    ) -> tuple[Recording, T]:
        """The stored artefact (held whole: a JSON or PNG of kilobytes) as ``parse`` reads it, or
        compute it once."""

        async def load(recording: Recording) -> T | None:
            return await self.read_stored(recording, name, parse)

        async def produce(recording: Recording, report: Reporter, flight: Flight[bytes, Progress]) -> None:
            with flight.abandonable():
                data = await run_watched(
                    lambda: compute(recording, report), report.stop.abort, poll=lambda: report.relay(flight)
                )
            await report.relay(flight)
            # Not abandonable: a result computed whole is kept even if its last caller just left.
            await self.repository.write_artifact(recording, name, data)

        return await self.once(key, name, load, produce, on_progress)

    async def read_stored(self, recording: Recording, name: str, parse: Callable[[bytes], T]) -> T | None:
        """The stored artefact ``name`` as ``parse`` reads it, or None when there is none. One that
        ``parse`` refuses (damaged on disk: cut short by a disk fault, edited) is None too, so it is
        made again and replaced: a warning in the log, never an error."""
        data = await self.repository.read_artifact(recording, name)
        if data is None:
            return None
        try:
            return parse(data)
        except ValidationError:
            logger.warning("the stored %s of %s is damaged; making it again", name, recording.key)
            return None

    async def once(
        self,
        key: CallKey,
        name: str,
        load: Callable[[Recording], Awaitable[T | None]],
        produce: Callable[[Recording, Reporter, Flight[bytes, Progress]], Awaitable[None]],
        on_progress: ProgressCallback | None,
    ) -> tuple[Recording, T]:
        """The stored artefact, or produce and store it once for every caller, then load it. A
        recording evicted meanwhile is fetched again once. ``produce`` runs in the flight's own task
        and makes ``flight.abandonable()`` what the last caller leaving may cancel."""
        for attempt in (1, 2):
            recording = await self.recordings.get(key, on_progress)
            try:
                stored = await self._stored_or_shared(recording, name, load, produce, on_progress)
            except RecordingGone:
                if attempt == 2:
                    raise
                logger.info("%s was evicted during analysis; fetching it again", key)
            else:
                return recording, stored
        raise AssertionError("unreachable")  # pragma: no cover

    async def _stored_or_shared(
        self,
        recording: Recording,
        name: str,
        load: Callable[[Recording], Awaitable[T | None]],
        produce: Callable[[Recording, Reporter, Flight[bytes, Progress]], Awaitable[None]],
        on_progress: ProgressCallback | None,
    ) -> T:
        stored = await load(recording)
        if stored is None:
            await self._shared(recording, name, load, produce, on_progress)
            stored = await load(recording)
        if stored is None:  # removed between its commit and this read: produce it again, once
            raise RecordingGone(f"The {name} of {recording.key} was removed as soon as it was stored.")
        return stored

    async def _shared(
        self,
        recording: Recording,
        name: str,
        load: Callable[[Recording], Awaitable[object | None]],
        produce: Callable[[Recording, Reporter, Flight[bytes, Progress]], Awaitable[None]],
        on_progress: ProgressCallback | None,
    ) -> None:
        """Start or join the one production of this artefact, in a task of the flight's own."""
        flights = self.recordings.artefacts
        if flights is None:
            raise RuntimeError("AnalysisService needs a RecordingService made by RecordingService.open")

        async def once(flight: Flight[bytes, Progress]) -> bytes:
            if await load(recording) is None:  # a flight that ended just before this one stored it
                await produce(recording, Reporter(StopFlag()), flight)
            return b""  # each caller loads the stored artefact itself

        await flights.run((recording.key, recording.audio.sha256, name), once, on_event=on_progress)


async def _relaying(report: Reporter, flight: Flight[bytes, Progress], work: Awaitable[None]) -> None:
    """Await ``work`` (a thread the repository runs) while relaying its progress to the callers."""
    async with anyio.create_task_group() as group:

        async def pump() -> None:
            while True:
                await report.relay(flight)
                await anyio.sleep(0.1)

        group.start_soon(pump)
        failure: Exception | None = None
        try:
            await work
        except Exception as exc:  # raised after the group, so never wrapped in an ExceptionGroup
            failure = exc
        finally:
            group.cancel_scope.cancel()
    if failure is not None:
        raise failure
    await report.relay(flight)


class Reporter:
    """The worker thread's side of progress and cancellation; it never waits for the event loop.

    Its events wait in a queue the loop drains (``relay``), and a stop the loop asks for is raised
    at the next block (``checkpoint``).
    """

    #: Intermediate progress is sent at most this often (fractions of the recording).
    STEP = 0.1

    def __init__(self, stop: StopFlag) -> None:
        self.stop = stop
        self.checkpoint = stop.check
        #: Appended by the thread, popped by the loop: deque's append and popleft are thread-safe.
        self.events: deque[Progress] = deque()
        self._sent = 0.0

    def emit(self, progress: Progress) -> None:
        """From the worker thread: queued for the loop, never waited for."""
        self.events.append(progress)

    async def relay(self, flight: Flight[bytes, Progress]) -> None:
        while self.events:
            await flight.emit(self.events.popleft())

    def analysed(self, seconds: float, total: float) -> None:
        """From the analyser, after each block: every tenth of the recording, not every block."""
        if total and seconds / total - self._sent >= self.STEP and seconds < total:
            self._sent = seconds / total
            self.events.append(
                Progress(
                    "analysing",
                    round(seconds, 1),
                    round(total, 1),
                    f"Analysed {seconds:.0f} of {total:.0f} s",
                )
            )

    def cut(self, seconds: float, total: float) -> None:
        """From the clip encoder, after each block: a cancelled flight stops it here (its staging
        file is removed), so an abandoned 2-hour clip does not hold a worker thread to the end."""
        self.checkpoint()
        anyio.from_thread.check_cancelled()
        if total and seconds / total - self._sent >= self.STEP and seconds < total:
            self._sent = seconds / total
            self.events.append(
                Progress("cutting", round(seconds, 1), round(total, 1), f"Cut {seconds:.0f} of {total:.0f} s")
            )

    def start(self, recording: Recording) -> None:
        seconds = recording.audio.format.duration_seconds
        length = f"{seconds / 60:.1f} minutes of audio" if seconds else "the recording"
        self.events.append(Progress("analysing", 0, seconds, f"Analysing {length}"))

    def finish(self, recording: Recording) -> None:
        seconds = recording.audio.format.duration_seconds
        self.events.append(Progress("analysing", seconds or 1, seconds or 1, "Analysis done"))
