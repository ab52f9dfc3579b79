"""get_call_transcript's use case, on top of the analysis: the analyser finds each party's own
speech, the engine hears only that.

A transcript is a derived artefact like the analysis: computed once per stored recording, model
(its files' fingerprint) and settings, kept beside the recording (private, retained, evicted and
size-counted with it) and shared by concurrent callers through the same abandonable flight
(``AnalysisService.once``). Recognition is CPU-bound: at most ``CTE1_ASR_CONCURRENCY`` run at once
in this process (others wait, saying so in their progress), each bounded by
``CTE1_ASR_TIMEOUT_SECONDS``. The model is loaded once per process, on first use, and a pushed
transcript from CT-e1 is served instead when ``CTE1_TRANSCRIPT_SOURCE`` prefers it.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass

import anyio
import anyio.to_thread

from cte1_mcp.analysis import AnalysisService, Reporter
from cte1_mcp.audio.analytics import ANALYSER_VERSION, CallAnalytics
from cte1_mcp.coordination.single_flight import Flight
from cte1_mcp.errors import TranscriptionFailed
from cte1_mcp.models import CallKey, Recording
from cte1_mcp.progress import Progress, ProgressCallback
from cte1_mcp.transcribe.base import (
    EngineFailed,
    EngineMarked,
    ModelUnusable,
    Transcriber,
    cached_fingerprint,
)
from cte1_mcp.transcribe.configured import ResolvedModel, load_model, resolve_model
from cte1_mcp.transcribe.engines import child_probe
from cte1_mcp.transcribe.pipeline import transcribe_file
from cte1_mcp.transcribe.pushed import platform_push, to_transcript
from cte1_mcp.transcribe.transcript import Heard, Transcript, build
from cte1_mcp.watched import DEADLINE, StopFlag, run_watched

logger = logging.getLogger(__name__)

#: Part of a stored transcript's name: a change in how pieces are cut, packed or guarded makes new ones
#: (2: consecutive pieces of a channel share one engine call; 3: each engine call's speech at one level;
#: 4: digits are never a repetition loop, and only whole subtitle lines are dropped as invented;
#: 5: an echo is a delayed copy of the other channel, not a quieter channel; numbers in kanji or read
#: out are never a loop).
PIPELINE_VERSION = 5
#: While a call waits for a transcription slot, it is told so this often.
WAITING_PROGRESS_SECONDS = 10.0


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else "no detail"


@dataclass(frozen=True, slots=True)
class _Loaded:
    """The loaded model and what it was loaded from (a change of either loads it again)."""

    identity: tuple[object, ...]
    transcriber: Transcriber


class TranscriptionService:
    """get_call_transcript and the transcript resources use this."""

    def __init__(self, analysis: AnalysisService) -> None:
        self.analysis = analysis
        self.settings = analysis.settings
        self.repository = analysis.repository
        self._slots = anyio.Semaphore(self.settings.asr_concurrency)
        self._load_lock = anyio.Lock()
        self._loaded: _Loaded | None = None

    async def transcript(
        self, key: CallKey, on_progress: ProgressCallback | None = None
    ) -> tuple[Recording, Transcript]:
        """The platform's pushed transcript when preferred and present, else the local one (computed
        once). Without a usable model: TranscriptionUnavailable, before any upstream request."""
        settings = self.settings
        pushed = await platform_push(settings, self.repository, key)
        if pushed is not None:
            # the recording too: its metadata for the answer, its length for the transcript's
            recording = await self.analysis.recordings.get(key, on_progress)
            transcript = to_transcript(
                pushed, roles=settings.channel_roles, language=settings.asr_language, recording=recording
            )
            return recording, transcript
        model = await anyio.to_thread.run_sync(resolve_model, settings)
        model_id = model.fingerprint
        if model_id is None:  # a model directory with no manifest: its files' own digest
            model_id = await anyio.to_thread.run_sync(cached_fingerprint, model.files_dir)
        # Loaded (once per process) before the recording is fetched: a model that does not load is
        # [transcription_unavailable] without spending a platform request.
        transcriber = await self._transcriber(model, model_id)
        recording, analysis = await self.analysis.analytics(key, on_progress)
        info = transcriber.info
        tag = self._settings_tag(
            info.device or settings.asr_device, info.computeType or settings.asr_compute_type
        )
        name = f"transcript-v{PIPELINE_VERSION}-{model.engine}-{model_id[:16]}-{tag}.json"

        async def load(recording: Recording) -> Transcript | None:
            return await self.analysis.read_stored(recording, name, Transcript.model_validate_json)

        async def produce(recording: Recording, report: Reporter, flight: Flight[bytes, Progress]) -> None:
            transcript = await self._transcribe(recording, analysis, transcriber, report, flight)
            # Not abandonable: a transcript computed whole is kept even if its last caller just left.
            await self.repository.write_artifact(recording, name, transcript.to_json())

        return await self.analysis.once(key, name, load, produce, on_progress)

    def _settings_tag(self, device: str, compute_type: str | None) -> str:
        """What else decides the sentences: language, device and precision, the labels, the analyser.
        ``device`` and ``compute_type`` are the ones the engine runs with: ``auto`` resolved to
        ``cpu``, or no precision set resolved to ``int8``, is the same as saying so (and its
        transcripts the same), so switching between them keeps the stored ones."""
        s = self.settings
        parts = (
            s.asr_language,
            device,
            compute_type,
            ",".join(s.channel_roles),
            ANALYSER_VERSION,
        )
        return f"{zlib.crc32(repr(parts).encode()):08x}"

    async def _transcribe(
        self,
        recording: Recording,
        analysis: CallAnalytics,
        transcriber: Transcriber,
        report: Reporter,
        flight: Flight[bytes, Progress],
    ) -> Transcript:
        settings = self.settings
        with flight.abandonable():
            await self._take_slot(flight)
            try:

                def run() -> list[Heard]:
                    with self.repository.open_audio(recording) as file:
                        return list(
                            transcribe_file(
                                file,
                                analysis,
                                EngineMarked(transcriber),
                                language=settings.asr_language,
                                on_piece=lambda done, total: report.emit(
                                    Progress(
                                        "transcribing", done, total, f"Transcribed {done} of {total} pieces"
                                    )
                                ),
                                cancelled=lambda: report.stop.reason is not None,
                            )
                        )

                try:
                    heard = await run_watched(
                        run,
                        report.stop.abort,
                        poll=lambda: report.relay(flight),
                        deadline_seconds=settings.asr_timeout_seconds,
                    )
                except ModelUnusable as exc:
                    raise TranscriptionFailed(
                        f"The speech-recognition engine failed on this recording: {exc}"
                    ) from None
                except Exception as exc:
                    if report.stop.reason == DEADLINE:
                        raise TranscriptionFailed(
                            f"The transcription took longer than CTE1_ASR_TIMEOUT_SECONDS "
                            f"({settings.asr_timeout_seconds:g} s) and was stopped."
                        ) from None
                    if isinstance(exc, EngineFailed) and report.stop.reason is None:
                        error = exc.__cause__ or exc
                        # the traceback for the operator; the exception's words only (no audio, no text)
                        logger.exception(
                            "the engine %s (model %s) failed on a recording of %s",
                            transcriber.info.name,
                            transcriber.info.model,
                            recording.key,
                            exc_info=error,
                        )
                        raise TranscriptionFailed(
                            f"The speech-recognition engine failed on this recording "
                            f"({type(error).__name__}: {_first_line(error)})",
                            next_step="Ask the operator to check the server's log (the engine's error is "
                            "there, with its traceback) and the model CTE1_ASR_MODEL names (`cte1-mcp check`).",
                        ) from None
                    raise
            finally:
                self._slots.release()
        await report.relay(flight)
        return build(
            heard,
            engine=transcriber.info,
            language=settings.asr_language,
            duration_seconds=analysis.durationSeconds,
            channels=analysis.channels,
            mixed=analysis.dualMono,
            roles=settings.channel_roles,
            connect_time=recording.metadata.connected_at,
        )

    async def _take_slot(self, flight: Flight[bytes, Progress]) -> None:
        """One of the CTE1_ASR_CONCURRENCY slots; while none is free, a progress notification every
        ``WAITING_PROGRESS_SECONDS``: a client whose request times out unless progress comes (the
        TypeScript SDK's 60 s) keeps waiting behind a transcription of minutes."""
        waited = 0.0
        while True:
            if self._slots.value == 0:
                message = "Waiting for the transcriber: another call is being transcribed"
                if waited:
                    message += f" (waited {waited:.0f} s)"
                await flight.emit(Progress("waiting", 0, None, message))
            with anyio.move_on_after(WAITING_PROGRESS_SECONDS):
                await self._slots.acquire()
                return
            waited += WAITING_PROGRESS_SECONDS

    async def _transcriber(self, model: ResolvedModel, model_id: str) -> Transcriber:
        """The loaded model, loaded (in a worker thread) on first use or when it changed: ``model_id``
        is its files' fingerprint (a plain directory's too, so its transcripts are never stored
        under the name of files it was not loaded from)."""
        s = self.settings
        identity = (
            model.files_dir,
            model.engine,
            model_id,
            s.asr_device,
            s.asr_compute_type,
            s.asr_threads,
        )
        async with self._load_lock:
            loaded = self._loaded
            if loaded is not None and loaded.identity == identity:
                return loaded.transcriber
            # The model it replaces is let go, not closed: a transcription may still be running on
            # it (a model re-imported while the server works). Its memory is freed when the last
            # one using it ends and drops it.
            self._loaded = None
            stop = StopFlag()

            def load() -> Transcriber:
                # a caller that gives up kills the model's probe (a large model's can take minutes)
                with child_probe.stopped_by(lambda: stop.reason is not None):
                    return load_model(model, s)

            transcriber = await run_watched(load, stop.abort)
            self._loaded = _Loaded(identity, transcriber)
            return transcriber
