"""The endpoint feeding the real local repository's staging from its worker thread: what is
stored is redacted, and an abandoned download (cancelled, stalled, past its deadline) leaves no
file behind."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest

from cte1_mcp import cpu
from cte1_mcp.cte1 import transport
from cte1_mcp.cte1.audio_data import AudioDataEndpoint
from cte1_mcp.errors import DownloadTimedOut
from cte1_mcp.repository.local import LocalRepository
from cte1_mcp.settings import Settings
from cte1_mcp.units import MiB
from tests.helpers.raw_upstream import (
    API_KEY,
    KEY,
    METADATA,
    TRICKY_AUDIO,
    RawServer,
    audio_part,
    make_settings,
    metadata_part,
    multipart_body,
    multipart_reply,
    raw_server,
)

pytestmark = pytest.mark.anyio

HANG_GUARD_SECONDS = 10


@pytest.fixture
async def server() -> AsyncIterator[RawServer]:
    async with raw_server() as raw:
        yield raw


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


async def download(settings: Settings, repository: LocalRepository) -> None:
    async with AudioDataEndpoint(settings) as endpoint, repository.staging(KEY) as staging:
        fetched = await endpoint.fetch(KEY, staging)
        await staging.commit(fetched.metadata, fetched.audio_content_type)


async def test_stored_metadata_never_holds_the_echoed_key(server: RawServer, tmp_path: Path) -> None:
    recent = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    echoed = METADATA | {
        "agentName": f"Bearer {API_KEY.upper()}",
        "note": {"k": API_KEY},
        "connectTime": recent,
        "disconnectTime": recent,
    }
    server.reply(multipart_reply(multipart_body(metadata_part(echoed), audio_part(TRICKY_AUDIO))))
    settings = make_settings(server.url, tmp_path / "cache")
    repository = LocalRepository.from_settings(settings)
    await download(settings, repository)
    stored = repository.get(KEY)
    assert stored is not None and stored.metadata.agentName == "[redacted]"
    assert stored.audio.size_bytes == len(TRICKY_AUDIO)
    for path in files_under(tmp_path / "cache"):
        assert API_KEY.encode() not in path.read_bytes().lower()


async def test_a_download_offers_its_core_at_most_once_per_network_read(
    server: RawServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before a read, never between hashing and writing a chunk: there, with another process
    waiting on that core (the upstream on the same machine, any other load), the offer handed it
    over for a time slice per chunk (profiled: 190 ms of a 256 MiB download against 12 ms for the
    offers before the reads, which the event loop's threads need)."""
    offers: list[str] = []
    reads: list[int] = []
    monkeypatch.setattr(cpu, "_SCHED_YIELD", lambda: offers.append("yield"))
    receive = transport._Stream._receive

    def counted(stream: transport._Stream, limit: int, timeout: float | None) -> bytes:
        data = receive(stream, limit, timeout)
        reads.append(len(data))
        return data

    monkeypatch.setattr(transport._Stream, "_receive", counted)
    recent = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    audio = TRICKY_AUDIO + os.urandom(4 * MiB)
    dated = METADATA | {"connectTime": recent, "disconnectTime": recent}
    server.reply(multipart_reply(multipart_body(metadata_part(dated), audio_part(audio))))
    settings = make_settings(server.url, tmp_path / "cache")
    repository = LocalRepository.from_settings(settings)
    await download(settings, repository)
    stored = repository.get(KEY)
    assert stored is not None and stored.audio.size_bytes == len(audio)
    assert sum(reads) > len(audio) and len(offers) <= len(reads)


async def test_a_cancelled_stalled_download_leaves_nothing(server: RawServer, tmp_path: Path) -> None:
    body = multipart_body(metadata_part(), audio_part(TRICKY_AUDIO * 64))
    server.reply(multipart_reply(body, cut_after=len(body) // 2, stall=True))
    settings = make_settings(server.url, tmp_path / "cache", timeout_seconds=60)
    repository = LocalRepository.from_settings(settings)
    before = files_under(tmp_path / "cache")
    with anyio.fail_after(HANG_GUARD_SECONDS), anyio.move_on_after(0.5) as scope:
        await download(settings, repository)
    assert scope.cancelled_caught
    assert server.served[0].body_bytes_sent > 0  # it was cancelled mid-body, not before
    assert repository.get(KEY) is None
    assert files_under(tmp_path / "cache") == before


async def test_a_download_past_its_deadline_leaves_nothing(server: RawServer, tmp_path: Path) -> None:
    body = multipart_body(metadata_part(), audio_part(TRICKY_AUDIO * 64))
    server.reply(multipart_reply(body, cut_after=len(body) // 2, stall=True))
    settings = make_settings(server.url, tmp_path / "cache", timeout_seconds=60, download_timeout_seconds=0.5)
    repository = LocalRepository.from_settings(settings)
    before = files_under(tmp_path / "cache")
    with anyio.fail_after(HANG_GUARD_SECONDS), pytest.raises(DownloadTimedOut):
        await download(settings, repository)
    assert repository.get(KEY) is None
    assert files_under(tmp_path / "cache") == before
