"""The store-size part's own pieces (no timing asserted): its fill makes a real, listable store,
and the report shows what it measured."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from bench import report
from bench.store_size import (
    FAKE_AUDIO_BYTES,
    FAKE_TENANT,
    STORE_SIZES,
    StoreSizeResult,
    StoreSizeSample,
    fill,
)
from cte1_mcp.repository.local import LocalRepository


@pytest.mark.anyio
async def test_fill_commits_recordings_a_server_would_list(tmp_path: Path) -> None:
    await fill(tmp_path / "store", 25)
    listed = LocalRepository(
        tmp_path / "store", max_age=timedelta(hours=24), max_bytes=1 << 30
    ).list_blocking()
    assert len(listed) == 25
    assert {recording.tenant_id for recording in listed} == {FAKE_TENANT}
    assert {recording.audio.size_bytes for recording in listed} == {FAKE_AUDIO_BYTES}


def test_the_report_shows_the_store_size_table_and_its_target() -> None:
    times = {
        "start_seconds": 1.0,
        "first_page_cold_seconds": 0.3,
        "first_walk_seconds": 0.5,
        "first_page_seconds": 0.1,
        "walk_seconds": 0.2,
    }
    sample = StoreSizeSample(**times, listed=2, pages=1, cold_seconds=0.05)
    slow = StoreSizeSample(**times, listed=2, pages=1, cold_seconds=0.5)
    sized = StoreSizeResult(
        samples={0: [sample] * 3, 1_000: [sample] * 3, 10_000: [slow] * 3},
        fill_seconds=dict.fromkeys(STORE_SIZES, 1.0),
        filled_on="disk",
        index_seconds=dict.fromkeys(STORE_SIZES, 0.1),
        repository_list_seconds=dict.fromkeys(STORE_SIZES, 0.01),
    )
    results = report.Results(None, None, 0, None, None, store_size=sized)
    [target] = report.targets(results)
    assert not target.met  # ten times slower with 10,000 stored: the old defect shows as a failure
    text = report.render(results, [], "python -m bench", 3, 1.0, quick=True)
    assert "## 5. Store size" in text
    assert "| 10,000 |" in text
    assert "| first page ms | walk ms | pages |" in text
