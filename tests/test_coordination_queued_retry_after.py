"""A Retry-After holds back callers already queued in other processes, not only later ones.

A caller that reserved its start before another process heard the platform's 429 must not start
at its old slot: it confirms the slot with the shared state (lock file or Redis) when it wakes.
The starts are read on CLOCK_MONOTONIC, which every process on the machine shares.
"""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from tests.helpers.coordination_child import backend, child
from tests.helpers.redis_server import RedisServer

pytestmark = pytest.mark.anyio

#: Long enough that the pause is recorded well before the queued caller's slot comes.
INTERVAL = 2.0
PAUSE = 4.0


@pytest.fixture(params=["cache-dir", "redis"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return server.url
    return str(tmp_path)


async def test_a_retry_after_holds_back_a_caller_queued_in_another_process(where: str) -> None:
    with child("slot", where, INTERVAL, ready="queued") as process:
        # The child holds a slot about INTERVAL away; the platform now asks for a pause.
        asked = time.monotonic()
        async with backend(where, INTERVAL) as (spacer, _):
            await spacer.defer(PAUSE)
        assert process.stdout is not None
        with anyio.fail_after(3 * (INTERVAL + PAUSE)):
            line = await anyio.to_thread.run_sync(process.stdout.readline)
    word, started = line.split()
    assert word == "started"
    assert float(started) >= asked + PAUSE, (float(started) - asked, line)
