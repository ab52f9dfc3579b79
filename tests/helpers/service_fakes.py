"""Fakes at the service's seams: an in-memory repository and a scripted audio_data endpoint.

They follow the protocols' documented behaviour (a staging is discarded unless committed; a read
of an evicted recording raises ``RecordingGone``) so the service's own logic is what is tested.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Self

import anyio
import anyio.lowlevel
import anyio.to_thread

from cte1_mcp.audio.sniff import sniff_format
from cte1_mcp.errors import RecordingGone, UpstreamError
from cte1_mcp.models import AudioInfo, CallKey, CallMetadata, Recording

OnBytes = Callable[[int, int | None], Awaitable[None]]


class MemoryStaging:
    def __init__(self, repository: MemoryRepository, key: CallKey) -> None:
        self._repository = repository
        self._key = key
        self._chunks: list[bytes] = []
        self.committed = False

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if not self.committed:
            self._chunks.clear()
            self._repository.discarded += 1

    async def write(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        await anyio.lowlevel.checkpoint()

    def write_blocking(self, chunk: bytes) -> None:
        self._chunks.append(chunk)

    async def commit(self, metadata: CallMetadata, content_type: str | None) -> Recording:
        data = b"".join(self._chunks)
        recording = self._repository.put(self._key, data, metadata, content_type)
        self.committed = True
        await anyio.lowlevel.checkpoint()
        return recording


class MemoryRepository:
    """Recordings in a dict; ``evict`` removes one as another process's eviction would."""

    def __init__(self) -> None:
        self.items: dict[CallKey, tuple[Recording, bytes]] = {}
        self.expired: dict[CallKey, datetime] = {}
        self.artifacts: dict[tuple[str, str], bytes] = {}
        self.discarded = 0
        #: Called before a read of this recording's bytes (to stage an eviction race).
        self.before_read: Callable[[Recording], None] | None = None

    def put(self, key: CallKey, data: bytes, metadata: CallMetadata, content_type: str | None) -> Recording:
        recording = Recording(
            tenant_id=key.tenant_id,
            session_id=key.session_id,
            record_id=key.record_id,
            metadata=metadata,
            audio=AudioInfo(
                format=sniff_format(data[:65536], content_type, len(data)),
                size_bytes=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
            ),
            fetched_at=datetime.now(UTC),
        )
        self.items[key] = (recording, data)
        return recording

    def evict(self, key: CallKey) -> None:
        del self.items[key]

    def get(self, key: CallKey) -> Recording | None:
        item = self.items.get(key)
        return item[0] if item else None

    def expired_at(self, key: CallKey) -> datetime | None:
        return self.expired.get(key)

    def staging(self, key: CallKey) -> MemoryStaging:
        return MemoryStaging(self, key)

    def _bytes_of(self, recording: Recording) -> bytes:
        if self.before_read is not None:
            hook, self.before_read = self.before_read, None
            hook(recording)
        item = self.items.get(recording.key)
        if item is None or item[0].audio.sha256 != recording.audio.sha256:
            raise RecordingGone("The stored recording was evicted or replaced.")
        return item[1]

    async def read_audio(self, recording: Recording) -> bytes:
        await anyio.lowlevel.checkpoint()
        return self._bytes_of(recording)

    def open_audio(self, recording: Recording) -> BinaryIO:
        return io.BytesIO(self._bytes_of(recording))

    async def list(self) -> list[Recording]:
        return [recording for recording, _ in self.items.values()]

    def local_path(self, recording: Recording) -> Path | None:
        return None

    async def read_artifact(self, recording: Recording, name: str) -> bytes | None:
        return self.artifacts.get((recording.audio.sha256, name))

    async def write_artifact(self, recording: Recording, name: str, data: bytes) -> None:
        self.artifacts[(recording.audio.sha256, name)] = data

    async def write_artifact_from(
        self, recording: Recording, name: str, fill: Callable[[BinaryIO], None]
    ) -> None:
        out = io.BytesIO()
        await anyio.to_thread.run_sync(fill, out)
        self.artifacts[(recording.audio.sha256, name)] = out.getvalue()

    def open_artifact(self, recording: Recording, name: str) -> BinaryIO | None:
        data = self.artifacts.get((recording.audio.sha256, name))
        return None if data is None else io.BytesIO(data)

    def artifact_path(self, recording: Recording, name: str) -> Path | None:
        return None

    async def run_sweeper(self, every_seconds: float) -> None:
        await anyio.sleep_forever()


@dataclass(frozen=True, slots=True)
class Fetched:
    metadata: CallMetadata
    audio_content_type: str | None


@dataclass
class Answer:
    """One scripted answer: ``body`` in ``chunks`` pieces, then ``error`` if set (after the bytes)."""

    body: bytes = b"RIFF\x00\x00\x00\x00WAVEfake audio"
    chunks: int = 1
    error: UpstreamError | None = None
    #: Awaited after the bytes and before the answer completes (the test holds the download).
    gate: anyio.Event | None = None
    #: Called when the request arrives (the test acts as another process at that moment).
    on_request: Callable[[], None] | None = None


@dataclass
class ScriptedEndpoint:
    """Answers requests from a script, one ``Answer`` each (then a default success), and logs them."""

    script: list[Answer] = field(default_factory=list)
    clock: Callable[[], float] = time.monotonic
    requests: list[tuple[CallKey, float]] = field(default_factory=list)
    _bodies: itertools.count[int] = field(default_factory=itertools.count)

    async def fetch(
        self, key: CallKey, sink: MemoryStaging, *, on_progress: OnBytes | None = None
    ) -> Fetched:
        self.requests.append((key, self.clock()))
        answer = self.script.pop(0) if self.script else Answer(body=b"RIFF-%d" % next(self._bodies))
        if answer.on_request is not None:
            answer.on_request()
        size = len(answer.body)
        step = max(1, -(-size // answer.chunks))
        for offset in range(0, size, step):
            piece = answer.body[offset : offset + step]
            await sink.write(piece)
            if on_progress is not None:
                await on_progress(offset + len(piece), size)
        if answer.gate is not None:
            await answer.gate.wait()
        if answer.error is not None:
            raise answer.error
        return Fetched(metadata_for(key), "audio/wav")


def metadata_for(key: CallKey) -> CallMetadata:
    return CallMetadata(
        status="complete",
        tenantId=key.tenant_id,
        sessionId=key.session_id,
        recordId=key.record_id,
        connectTime=datetime.now(UTC).isoformat(),
    )
