"""The storage seam: what the service needs of a place that keeps recordings.

The local store (``repository.local``) is today's only implementation. A shared store (object
storage behind several replicas) would implement the same protocol: ``get`` from its own index,
``staging`` as a multipart upload committed by writing the metadata object last, ``read_audio`` /
``open_audio`` as object reads, ``local_path`` returning None. Nothing above this module opens files.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Protocol, Self

from cte1_mcp.models import CallKey, CallMetadata, Recording


class Staging(Protocol):
    """One download on its way into the repository; discarded on exit unless committed."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...

    async def write(self, chunk: bytes) -> None:
        """The next chunk, from the event loop."""
        ...

    def write_blocking(self, chunk: bytes) -> None:
        """The next chunk, from the one worker thread that feeds this staging (hashed and written)."""
        ...

    async def commit(self, metadata: CallMetadata, content_type: str | None) -> Recording:
        """Store the download atomically; RecordingExpired if the call is past the platform's 31 days."""
        ...


class RecordingRepository(Protocol):
    """Recordings by call key, kept within the retention bounds, and their derived artefacts.

    Read paths raise ``RecordingGone`` when the recording asked for was evicted or replaced
    meanwhile (possibly by another process sharing the store): fetch it again.
    """

    def get(self, key: CallKey) -> Recording | None:
        """The stored, unexpired recording of ``key`` (it counts as used now); cheap enough for the loop."""
        ...

    def expired_at(self, key: CallKey) -> datetime | None:
        """When the platform's copy of this call expired (its ``available_until``, now past), if
        known without a request; None if it has not expired or is not known."""
        ...

    def staging(self, key: CallKey) -> Staging: ...

    async def read_audio(self, recording: Recording) -> bytes: ...

    def open_audio(self, recording: Recording) -> BinaryIO:
        """The audio for reading in a worker thread (blocking); the caller closes it."""
        ...

    async def list(self) -> list[Recording]:
        """Every live recording, oldest fetch first."""
        ...

    def local_path(self, recording: Recording) -> Path | None:
        """The audio file on this machine, if this repository has one (the MCP layer offers it only
        over stdio, where client and server share the machine)."""
        ...

    async def read_artifact(self, recording: Recording, name: str) -> bytes | None:
        """A derived artefact of exactly this version of the recording, or None if none was stored."""
        ...

    async def write_artifact(self, recording: Recording, name: str, data: bytes) -> None:
        """Store a derived artefact beside the recording: private, atomic, removed with it, and
        counted in the store's size bound. ``name`` is a plain file name chosen by code."""
        ...

    async def write_artifact_from(
        self, recording: Recording, name: str, fill: Callable[[BinaryIO], None]
    ) -> None:
        """``write_artifact`` for an artefact too large to hold: ``fill`` writes it (blocking, in a
        worker thread) into a private staging file that is committed only once ``fill`` returns."""
        ...

    def open_artifact(self, recording: Recording, name: str) -> BinaryIO | None:
        """A stored artefact for reading in a worker thread (blocking), or None; the caller closes it."""
        ...

    def artifact_path(self, recording: Recording, name: str) -> Path | None:
        """The artefact's file on this machine, if it is stored and this repository has files."""
        ...

    async def write_pushed_transcript(
        self, key: CallKey, document: bytes, *, available_until: datetime | None
    ) -> None:
        """Store the transcript CT-e1 pushed for ``key`` (a UTF-8 JSON document chosen by the caller),
        replacing an earlier one: private, atomic, counted in the size bound, kept no longer than a
        recording (``available_until``: the platform's 31 days). The recording need not be stored.
        RecordingExpired if ``available_until`` has passed."""
        ...

    async def read_pushed_transcript(self, key: CallKey) -> bytes | None:
        """The document last pushed for ``key``, or None (none pushed, or past its retention)."""
        ...

    async def run_sweeper(self, every_seconds: float) -> None:
        """Enforce retention every ``every_seconds`` until cancelled, even when no request comes."""
        ...
