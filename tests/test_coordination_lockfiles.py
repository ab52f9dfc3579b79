"""The cache-directory backend: spacing and claims shared through flock-ed files, with real processes."""

from __future__ import annotations

import itertools
import os
import signal
import time
from pathlib import Path

import anyio
import pytest

from cte1_mcp.coordination.lockfiles import FileFlights, FileSpacer
from cte1_mcp.errors import ConfigurationError
from cte1_mcp.models import CallKey
from cte1_mcp.progress import Progress
from cte1_mcp.repository.local.posix import private_dir
from tests.helpers.coordination_child import KEY, PLATFORM, child
from tests.helpers.recorder import Recorder

pytestmark = pytest.mark.anyio

INTERVAL = 0.3


def spacer(cache: Path, interval: float = INTERVAL) -> FileSpacer:
    root = private_dir(cache / "coordination")
    return FileSpacer(root / f"spacing-{PLATFORM}", interval)


def flights(cache: Path) -> FileFlights:
    return FileFlights(private_dir(private_dir(cache / "coordination") / "flights"))


async def test_spacers_of_separate_processes_keep_the_interval_in_arrival_order(tmp_path: Path) -> None:
    # Two spacers on one state file stand for two processes: each has its own open file and lock.
    processes = [spacer(tmp_path), spacer(tmp_path)]
    starts: list[tuple[int, float]] = []

    async def caller(index: int) -> None:
        await processes[index % 2].acquire()
        starts.append((index, time.monotonic()))

    with anyio.fail_after(20):
        await caller(0)
        async with anyio.create_task_group() as tg:
            for index in range(1, 6):
                tg.start_soon(caller, index)
                await anyio.sleep(0.01)  # arrival order 1, 2, 3, 4, 5
    assert [index for index, _ in starts] == list(range(6))
    gaps = [b - a for (_, a), (_, b) in itertools.pairwise(starts)]
    # Scheduled starts are exactly an interval apart; a task may wake a little late, which
    # CTE1_MIN_INTERVAL_SECONDS' margin covers in production: allow that lateness, not more.
    assert min(gaps) >= INTERVAL - 0.05, gaps
    assert starts[-1][1] - starts[0][1] >= 5 * INTERVAL


async def test_a_cancelled_waiter_at_the_end_of_the_queue_frees_its_slot(tmp_path: Path) -> None:
    shared = spacer(tmp_path, interval=5.0)
    await shared.acquire()
    with anyio.move_on_after(0.1):
        await shared.acquire()  # due in 5 s; gives up
    with anyio.move_on_after(0.1) as second:
        await shared.acquire()  # due in 5 s again, not 10
    assert second.cancelled_caught
    reports: Recorder[float] = Recorder()

    with anyio.move_on_after(0.1):
        await shared.acquire(reports)
    assert 4.0 < reports[0] <= 5.0, reports


async def test_retry_after_holds_back_every_process(tmp_path: Path) -> None:
    first, second = spacer(tmp_path), spacer(tmp_path)
    await first.defer(30)
    await first.defer(5)  # a shorter pause never shortens a longer one
    assert 29 < await second.deferred_for() <= 30
    reports: Recorder[float] = Recorder()

    with anyio.move_on_after(0.2):
        await second.acquire(reports)
    assert reports and reports[0] > 29


async def test_a_process_killed_while_queued_stalls_the_others_one_interval_at_most(tmp_path: Path) -> None:
    interval = 0.5
    with child("slot", str(tmp_path), interval, ready="queued") as process:
        queued_at = time.monotonic()
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    with anyio.fail_after(10):
        await spacer(tmp_path, interval).acquire()
    waited = time.monotonic() - queued_at
    # Its queued slot went unused (one interval); nothing else was held by the dead process.
    assert interval <= waited < 2 * interval + 1.5, waited


async def test_a_corrupt_state_file_costs_one_interval_not_a_failure(tmp_path: Path) -> None:
    shared = spacer(tmp_path)
    (tmp_path / "coordination" / f"spacing-{PLATFORM}").write_bytes(b'{"boot": "x", "ne')
    before = time.monotonic()
    await shared.acquire()
    assert time.monotonic() - before >= INTERVAL


async def test_a_claim_is_exclusive_and_its_progress_reaches_the_waiter(tmp_path: Path) -> None:
    holder, waiter = flights(tmp_path), flights(tmp_path)
    heard: list[Progress] = []
    order: list[str] = []

    async def on_progress(progress: Progress) -> None:
        heard.append(progress)

    async def wait_for_it() -> None:
        async with waiter.claim(KEY, on_progress):
            order.append("waiter")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg, holder.claim(KEY) as claim:
            tg.start_soon(wait_for_it)
            await claim.publish(Progress("downloading", 10, 100, "received 10 of 100 bytes"))
            while not heard:
                await anyio.sleep(0.02)
            order.append("holder")
    assert order == ["holder", "waiter"]
    assert heard[0].done == 10 and heard[0].total == 100
    assert "received 10 of 100 bytes" in heard[0].message
    assert list((tmp_path / "coordination" / "flights").iterdir()) == []  # nothing left behind


async def test_claims_of_different_recordings_do_not_wait_for_each_other(tmp_path: Path) -> None:
    with anyio.fail_after(5):
        async with flights(tmp_path).claim(KEY), flights(tmp_path).claim(CallKey("1", 1, 2)):
            pass


async def test_a_killed_holder_releases_its_claim_to_a_waiter(tmp_path: Path) -> None:
    with child("claim", str(tmp_path), 0, ready="claimed") as process:
        with anyio.move_on_after(0.3) as still_held:
            async with flights(tmp_path).claim(KEY):
                pass
        assert still_held.cancelled_caught
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    with anyio.fail_after(5):
        async with flights(tmp_path).claim(KEY):
            pass


def test_a_coordination_directory_open_to_others_is_refused(tmp_path: Path) -> None:
    loose = tmp_path / "coordination"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    with pytest.raises(ConfigurationError) as refused:
        private_dir(loose)
    assert "chmod 700" in refused.value.render()


def test_the_files_are_private(tmp_path: Path) -> None:
    anyio.run(spacer(tmp_path).acquire)
    root = tmp_path / "coordination"
    assert root.stat().st_mode & 0o777 == 0o700
    assert (root / f"spacing-{PLATFORM}").stat().st_mode & 0o777 == 0o600
