"""The local store's tests share these: a hand-moved clock, platform metadata, a download helper."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cte1_mcp.models import CallKey, CallMetadata, Recording
from cte1_mcp.repository.local import LocalRepository

KEY = CallKey("05053698341", 942125, 1)
OTHER = CallKey("05053698341", 942125, 2)
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


class Clock:
    """The store's wall clock, moved by hand."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


def new_store(root: Path, clock: Clock, **overrides: Any) -> LocalRepository:
    options: dict[str, Any] = {"max_age": 24 * HOUR, "max_bytes": 1 << 30, "clock": clock}
    return LocalRepository(root, **(options | overrides))


def metadata(key: CallKey = KEY, *, connected: datetime | None = START - HOUR, **extra: Any) -> CallMetadata:
    fields: dict[str, Any] = {
        "status": "complete",
        "tenantId": key.tenant_id,
        "sessionId": key.session_id,
        "recordId": key.record_id,
        "ani": "08075082398",
        **extra,
    }
    if connected is not None:
        fields["connectTime"] = connected.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return CallMetadata.model_validate(fields)


async def save(
    store: LocalRepository,
    key: CallKey = KEY,
    data: bytes = b"RIFF-not-really-audio",
    *,
    meta: CallMetadata | None = None,
    chunk: int = 8192,
) -> Recording:
    """One download through a staging, in chunks of ``chunk`` bytes from the event loop."""
    async with store.staging(key) as staging:
        for start in range(0, len(data), chunk):
            await staging.write(data[start : start + chunk])
        return await staging.commit(meta or metadata(key), "audio/wav")


def files_under(path: Path) -> list[Path]:
    """Every file below ``path``; a directory a sweeper removes mid-walk is simply not there."""
    return sorted(Path(directory) / name for directory, _, names in os.walk(path) for name in names)


def leftovers(store: LocalRepository) -> list[Path]:
    """Everything that would be personal data or a trace of it: recordings and temporary files."""
    return files_under(store.root / "recordings") + files_under(store.root / "tmp")


def path_of(store: LocalRepository, recording: Recording) -> Path:
    path = store.local_path(recording)
    assert path is not None
    return path


def record_dir(store: LocalRepository, key: CallKey) -> Path:
    return store.root / "recordings" / key.tenant_id / str(key.session_id) / str(key.record_id)
