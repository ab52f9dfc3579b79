"""The analytics, timeline and clip use cases, on top of the recording service and its repository.

Each result is computed once per stored version of a recording and kept beside it as a derived
artefact (private, retained, evicted and size-counted with the recording): a second call costs
neither an analysis nor an upstream request. The CPU work (decoding, detection, drawing,
encoding) runs in a worker thread, never on the event loop; one computation per artefact runs at
a time in this process, shared by its concurrent callers (``RecordingService.artefacts``). The
thread never waits for the loop (progress is polled from it), and once every caller has gone it
stops within one block of audio and gives its thread back.
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

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
class Clip:
    """A cut, converted clip as stored: its bytes and the facts a result reports."""

    plan: ClipPlan
    data: bytes
    sha256: str
    mime_type: str
    uri: str
    #: The artefact's file (local store only; offer it over stdio only).
    path: Path | None

    @property
    def size_bytes(self) -> int:
        return len(self.data)

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

        def compute(recording: Recording, report: _Reporter) -> bytes:
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

        recording, data = await self._artifact(key, name, compute, on_progress)
        return recording, CallAnalytics.model_validate_json(data)

    async def timeline_png(
        self, key: CallKey, on_progress: ProgressCallback | None = None
    ) -> tuple[Recording, bytes]:
        """The timeline picture (PNG) of the analysis."""
        _, analytics = await self.analytics(key, on_progress)
        name = f"timeline-v{ANALYSER_VERSION}-{self._roles_tag}.png"
        title = f"Call {key.tenant_id}/{key.session_id}/{key.record_id}"

        def draw(_: Recording, report: _Reporter) -> bytes:
            from cte1_mcp.audio.timeline import render_png

            return render_png(analytics, title)

        return await self._artifact(key, name, draw, on_progress)

    async def clip(
        self, key: CallKey, request: ClipRequest, on_progress: ProgressCallback | None = None
    ) -> tuple[Recording, Clip]:
        """A clip cut from the stored recording: InvalidParameter (before any decoding) when the
        range, channel or length does not fit this recording."""
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

        def encode(recording: Recording, report: _Reporter) -> bytes:
            with self.repository.open_audio(recording) as file:
                return cut(file, clip, report.checkpoint)

        recording, data = await self._artifact(key, clip.artifact_name, encode, on_progress)
        digest = await anyio.to_thread.run_sync(hashlib.sha256, data)  # up to tens of MB
        return recording, Clip(
            clip,
            data,
            digest.hexdigest(),
            MIME_TYPES[clip.format],
            clip_uri(key, clip),
            self.repository.artifact_path(recording, clip.artifact_name),
        )

    def _probe(self, recording: Recording) -> AudioStream:
        with self.repository.open_audio(recording) as file:
            return probe(file)

    async def _artifact(
        self,
        key: CallKey,
        name: str,
        compute: Callable[[Recording, _Reporter], bytes],
        on_progress: ProgressCallback | None,
    ) -> tuple[Recording, bytes]:
        """The stored artefact, or compute it once (in a worker thread) and store it. A recording
        evicted meanwhile is fetched again once."""
        for attempt in (1, 2):
            recording = await self.recordings.get(key, on_progress)
            try:
                return recording, await self._stored_or_shared(recording, name, compute, on_progress)
            except RecordingGone:
                if attempt == 2:
                    raise
                logger.info("%s was evicted during analysis; fetching it again", key)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _stored_or_shared(
        self,
        recording: Recording,
        name: str,
        compute: Callable[[Recording, _Reporter], bytes],
        on_progress: ProgressCallback | None,
    ) -> bytes:
        """The stored artefact, or the outcome of the one computation of it (started or joined)."""
        stored = await self.repository.read_artifact(recording, name)
        if stored is not None:
            return stored
        flights = self.recordings.artefacts
        if flights is None:
            raise RuntimeError("AnalysisService needs a RecordingService made by RecordingService.open")
        return await flights.run(
            (recording.key, recording.audio.sha256, name),
            lambda flight: self._compute(recording, name, compute, flight),
            on_event=on_progress,
        )

    async def _compute(
        self,
        recording: Recording,
        name: str,
        compute: Callable[[Recording, _Reporter], bytes],
        flight: Flight[bytes, Progress],
    ) -> bytes:
        """One artefact for every caller of the flight, in a task of the flight's own.

        A caller that leaves (is cancelled) only stops waiting: while one is left the work goes
        on, its result is stored and given to them. Once the last has left, the thread is told to
        stop, ends within one block and nothing is stored; a later call starts afresh.
        """
        stored = await self.repository.read_artifact(recording, name)  # a flight just before us
        if stored is not None:
            return stored
        stop = StopFlag()
        reporter = _Reporter(stop)

        async def relay() -> None:
            while reporter.events:
                await flight.emit(reporter.events.popleft())

        with flight.abandonable():
            data = await run_watched(lambda: compute(recording, reporter), stop.abort, poll=relay)
        await relay()
        await self.repository.write_artifact(recording, name, data)
        return data


class _Reporter:
    """The worker thread's side of progress and cancellation; it never waits for the event loop.

    Its events wait in a queue the loop drains (``run_watched`` polls it), and a stop the loop
    asks for is raised at the next block (``checkpoint``).
    """

    #: Intermediate progress is sent at most this often (fractions of the recording).
    STEP = 0.1

    def __init__(self, stop: StopFlag) -> None:
        self.checkpoint = stop.check
        #: Appended by the thread, popped by the loop: deque's append and popleft are thread-safe.
        self.events: deque[Progress] = deque()
        self._sent = 0.0

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

    def start(self, recording: Recording) -> None:
        seconds = recording.audio.format.duration_seconds
        length = f"{seconds / 60:.1f} minutes of audio" if seconds else "the recording"
        self.events.append(Progress("analysing", 0, seconds, f"Analysing {length}"))

    def finish(self, recording: Recording) -> None:
        seconds = recording.audio.format.duration_seconds
        self.events.append(Progress("analysing", seconds or 1, seconds or 1, "Analysis done"))
