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
from cte1_mcp.transcribe.base import ModelUnusable, Transcriber, cached_fingerprint
from cte1_mcp.transcribe.configured import ResolvedModel, load_model, resolve_model
from cte1_mcp.transcribe.pipeline import transcribe_file
from cte1_mcp.transcribe.pushed import platform_push, to_transcript
from cte1_mcp.transcribe.transcript import Heard, Transcript, build
from cte1_mcp.watched import DEADLINE, run_watched

logger = logging.getLogger(__name__)

#: Part of a stored transcript's name: a change in how pieces are cut, packed or guarded makes new ones
#: (2: consecutive pieces of a channel share one engine call; 3: each engine call's speech at one level).
PIPELINE_VERSION = 3


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
        transcriber = await self._transcriber(model)
        recording, analysis = await self.analysis.analytics(key, on_progress)
        name = f"transcript-v{PIPELINE_VERSION}-{model.engine}-{model_id[:16]}-{self._settings_tag}.json"

        async def load(recording: Recording) -> Transcript | None:
            data = await self.repository.read_artifact(recording, name)
            return None if data is None else Transcript.model_validate_json(data)

        async def produce(recording: Recording, report: Reporter, flight: Flight[bytes, Progress]) -> None:
            transcript = await self._transcribe(recording, analysis, transcriber, report, flight)
            # Not abandonable: a transcript computed whole is kept even if its last caller just left.
            await self.repository.write_artifact(recording, name, transcript.to_json())

        return await self.analysis.once(key, name, load, produce, on_progress)

    @property
    def _settings_tag(self) -> str:
        """What else decides the sentences: language, device and precision, the labels, the analyser."""
        s = self.settings
        parts = (
            s.asr_language,
            s.asr_device,
            s.asr_compute_type,
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
            if self._slots.value == 0:
                await flight.emit(
                    Progress(
                        "waiting", 0, None, "Waiting for the transcriber: another call is being transcribed"
                    )
                )
            async with self._slots:

                def run() -> list[Heard]:
                    with self.repository.open_audio(recording) as file:
                        return list(
                            transcribe_file(
                                file,
                                analysis,
                                transcriber,
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
                except Exception:
                    if report.stop.reason == DEADLINE:
                        raise TranscriptionFailed(
                            f"The transcription took longer than CTE1_ASR_TIMEOUT_SECONDS "
                            f"({settings.asr_timeout_seconds:g} s) and was stopped."
                        ) from None
                    raise
        await report.relay(flight)
        return build(
            heard,
            engine=transcriber.info,
            language=settings.asr_language,
            duration_seconds=analysis.durationSeconds,
            channels=analysis.channels,
            roles=settings.channel_roles,
            connect_time=recording.metadata.connected_at,
        )

    async def _transcriber(self, model: ResolvedModel) -> Transcriber:
        """The loaded model, loaded (in a worker thread) on first use or when it changed."""
        s = self.settings
        identity = (
            model.files_dir,
            model.engine,
            model.fingerprint,
            s.asr_device,
            s.asr_compute_type,
            s.asr_threads,
        )
        async with self._load_lock:
            loaded = self._loaded
            if loaded is not None and loaded.identity == identity:
                return loaded.transcriber
            if loaded is not None:
                self._loaded = None
                await anyio.to_thread.run_sync(loaded.transcriber.close)
            transcriber = await anyio.to_thread.run_sync(load_model, model, s)
            self._loaded = _Loaded(identity, transcriber)
            return transcriber
