"""AnalysisService on the real chain: simulator on loopback, upstream client, local repository.

Analysed once, stored as artefacts beside the recording; a second call (even after a restart)
costs neither an analysis nor an upstream request. A spy around the real repository counts how
often the audio is opened (that is, decoded).
"""

from __future__ import annotations

import hashlib
import io
import shutil
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import numpy as np
import pytest
import soundfile
from PIL import Image

from cte1_mcp.analysis import AnalysisService
from cte1_mcp.audio.clips import ClipRequest
from cte1_mcp.errors import InvalidParameter, UnsupportedAudio
from cte1_mcp.models import CallKey, Recording
from cte1_mcp.progress import Progress
from cte1_mcp.service import RecordingService
from cte1_mcp.settings import Settings
from cte1_mcp.simulator import DEFAULT_API_KEY, DEFAULT_SOURCE_UUID, RunningSimulator
from tests.helpers.repository import metadata, save

pytestmark = pytest.mark.anyio

EXAMPLE = CallKey("05053698341", 942125, 1)
MONO = CallKey("05053698341", 942126, 1)


class OpenCounter:
    """Delegates to the real repository; counts open_audio (each is one decode)."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.opened = 0

    def open_audio(self, recording: Recording) -> BinaryIO:
        self.opened += 1
        return self._real.open_audio(recording)  # type: ignore[no-any-return]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@asynccontextmanager
async def analysis_service(
    simulator: RunningSimulator, cache: Path, **overrides: Any
) -> AsyncIterator[tuple[AnalysisService, OpenCounter]]:
    settings = Settings(
        base_url=simulator.url,
        source_uuid=DEFAULT_SOURCE_UUID,
        api_key=DEFAULT_API_KEY,
        cache_dir=cache,
        min_interval_seconds=0,
        channel_roles=("customer", "agent"),
        **overrides,
    )
    async with RecordingService.open(settings) as recordings:
        service = AnalysisService(recordings)
        counter = OpenCounter(service.repository)
        service.repository = counter  # type: ignore[assignment]
        yield service, counter


async def test_analysed_once_and_stored_beside_the_recording(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    events: list[Progress] = []

    async def on_progress(progress: Progress) -> None:
        events.append(progress)

    async with analysis_service(simulator, tmp_path) as (service, counter):
        _, first = await service.analytics(EXAMPLE, on_progress)
        assert counter.opened == 1 and len(simulator.state.requests) == 1
        assert first.timelineUri == "cte1://calls/05053698341/942125/1/timeline"
        assert [p.label for p in first.parties] == ["customer", "agent"]
        assert any(e.stage == "analysing" and e.done == 0 for e in events)
        assert events[-1].stage == "analysing" and events[-1].done == events[-1].total
        _, again = await service.analytics(EXAMPLE)
        assert again == first and counter.opened == 1
        stored = list(tmp_path.rglob("analytics-*.json"))
        assert len(stored) == 1 and stat.S_IMODE(stored[0].stat().st_mode) == 0o600
    async with analysis_service(simulator, tmp_path) as (service, counter):  # a restart
        _, after_restart = await service.analytics(EXAMPLE)
        assert after_restart == first
        assert counter.opened == 0 and len(simulator.state.requests) == 1


async def test_concurrent_callers_share_one_analysis(simulator: RunningSimulator, tmp_path: Path) -> None:
    async with analysis_service(simulator, tmp_path) as (service, counter):
        await service.recordings.get(EXAMPLE)
        results: list[Any] = []

        async def one() -> None:
            results.append(await service.analytics(EXAMPLE))

        async with anyio.create_task_group() as group:
            for _ in range(4):
                group.start_soon(one)
        assert counter.opened == 1
        assert len({r[1].model_dump_json() for r in results}) == 1


async def test_the_timeline_is_a_stored_png(simulator: RunningSimulator, tmp_path: Path) -> None:
    async with analysis_service(simulator, tmp_path) as (service, counter):
        _, png = await service.timeline_png(EXAMPLE)
        assert png.startswith(b"\x89PNG") and Image.open(io.BytesIO(png)).width == 1200
        _, again = await service.timeline_png(EXAMPLE)
        assert again == png and counter.opened == 1
        assert len(list(tmp_path.rglob("timeline-*.png"))) == 1


async def test_a_stored_timeline_or_clip_cut_short_is_made_again(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    """Regression: a timeline PNG or a clip truncated on disk was served as if whole."""
    request = ClipRequest.of(start_seconds=1, end_seconds=3, format="wav")
    async with analysis_service(simulator, tmp_path) as (service, _):
        _, png = await service.timeline_png(EXAMPLE)
        _, clip = await service.clip(EXAMPLE, request, data_max_bytes=1 << 20)
        for pattern in ("timeline-*.png", "clip-*.wav"):
            [path] = tmp_path.rglob(pattern)
            with path.open("r+b") as file:
                file.truncate(100)

        _, again = await service.timeline_png(EXAMPLE)
        _, clip_again = await service.clip(EXAMPLE, request, data_max_bytes=1 << 20)

        assert again == png
        assert clip_again.data == clip.data and clip_again.size_bytes == clip.size_bytes > 100


async def test_clips_are_cut_once_and_stored(simulator: RunningSimulator, tmp_path: Path) -> None:
    async with analysis_service(simulator, tmp_path) as (service, counter):
        request = ClipRequest.of(start_seconds=60, end_seconds=75, channel="agent", format="mp3")
        _, clip = await service.clip(EXAMPLE, request, data_max_bytes=1 << 20)
        assert clip.mime_type == "audio/mpeg" and clip.duration_seconds == 15
        assert (
            clip.uri
            == "cte1://calls/05053698341/942125/1/clip?start=60&end=75&channel=1&format=mp3&rate=8000"
        )
        assert clip.path is not None and clip.path.read_bytes() == clip.data
        assert clip.size_bytes == len(clip.data) and clip.sha256 == hashlib.sha256(clip.data).hexdigest()
        assert stat.S_IMODE(clip.path.stat().st_mode) == 0o600
        _, again = await service.clip(
            EXAMPLE, ClipRequest.of(start_seconds=60, end_seconds=75, channel="1", format="mp3")
        )
        assert again.sha256 == clip.sha256 and counter.opened == 1
        assert again.data is None  # not asked for: a clip is not held whole
        assert len(simulator.state.requests) == 1


async def test_a_clip_that_does_not_fit_is_refused_before_any_decoding(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    async with analysis_service(simulator, tmp_path) as (service, counter):
        with pytest.raises(InvalidParameter, match="mono: it has channel 0 only"):
            await service.clip(MONO, ClipRequest.of(channel="1"))
        with pytest.raises(InvalidParameter, match=r"endSeconds <= 280\.45"):
            await service.clip(EXAMPLE, ClipRequest.of(start_seconds=100, end_seconds=300))
        assert counter.opened == 0


async def test_progress_is_reported_while_analysing(simulator: RunningSimulator, tmp_path: Path) -> None:
    events: list[Progress] = []

    async def on_progress(progress: Progress) -> None:
        events.append(progress)

    async with analysis_service(simulator, tmp_path) as (service, _):
        await service.recordings.get(EXAMPLE)
        await service.analytics(EXAMPLE, on_progress)
    done = [e.done for e in events if e.stage == "analysing"]
    assert len(done) >= 5 and done == sorted(done)  # start, every tenth or so, the end
    assert done[0] == 0 and done[-1] == pytest.approx(280.447)


async def test_a_recording_evicted_before_its_analysis_is_fetched_again(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    async with analysis_service(simulator, tmp_path) as (service, _):
        await service.recordings.get(EXAMPLE)
        for directory in tmp_path.rglob("/".join(EXAMPLE.path_parts)):
            shutil.rmtree(directory)  # as when another server sharing the cache evicts it
        _, analytics = await service.analytics(EXAMPLE)
        assert analytics.overtalkCount == 2
        assert len(simulator.state.requests) == 2


async def test_stored_audio_that_does_not_decode_is_unsupported_audio(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    """A valid header over corrupt data: libsndfile fails mid-stream, the caller sees a stable code."""
    rng = np.random.default_rng(3)
    out = io.BytesIO()
    soundfile.write(out, rng.integers(-3000, 3000, (80_000, 2), dtype=np.int16), 8000, format="FLAC")
    corrupt = out.getvalue()[:3000] + rng.bytes(len(out.getvalue()) - 3000)
    key = CallKey("05053698341", 990001, 1)
    async with analysis_service(simulator, tmp_path) as (service, counter):
        connected = datetime.now(UTC) - timedelta(hours=1)
        await save(counter._real, key, corrupt, meta=metadata(key, connected=connected))  # the real store
        for attempt in (service.analytics(key), service.clip(key, ClipRequest.of(end_seconds=5))):
            with pytest.raises(UnsupportedAudio) as raised:
                await attempt
            assert raised.value.render().startswith("[unsupported_audio]")
        assert not list(tmp_path.rglob("analytics-*")) and not list(tmp_path.rglob("clip-*"))
        assert len(simulator.state.requests) == 0


async def test_a_cancelled_clip_stops_and_leaves_nothing(simulator: RunningSimulator, tmp_path: Path) -> None:
    """Cancelled at its first progress, the encoder stops at its next block (not at the end of the
    clip) and neither the clip nor its staging file is left."""
    events: list[Progress] = []
    async with analysis_service(simulator, tmp_path) as (service, _):
        await service.recordings.get(EXAMPLE)
        with anyio.CancelScope() as scope:

            async def on_progress(progress: Progress) -> None:
                events.append(progress)
                scope.cancel()

            await service.clip(EXAMPLE, ClipRequest.of(format="flac", sample_rate=16000), on_progress)
        assert scope.cancelled_caught
        # Progress is queued by the encoder and relayed by the loop: events already queued may still
        # arrive after the cancel, but the clip stops short of its end.
        assert events and {e.stage for e in events} == {"cutting"}
        assert events[-1].done < events[-1].total  # type: ignore[operator]
        # The caller returns at once; the shared work stops at its next block and removes its
        # staging file (a bound turns a leak into a failure, not a hang).
        with anyio.fail_after(30):
            while [p for p in tmp_path.rglob("*") if p.is_file() and p.parent.name == "tmp"]:
                await anyio.sleep(0.05)
        assert not list(tmp_path.rglob("clip-*"))
        _, clip = await service.clip(EXAMPLE, ClipRequest.of(format="flac", sample_rate=16000))
        assert clip.size_bytes > 0  # cut again, whole, when asked again
