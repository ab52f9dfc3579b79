"""The in-process request spacer, on virtual time: no test here waits for real seconds."""

from __future__ import annotations

import itertools

import anyio
import pytest

from cte1_mcp.coordination.local import MonotonicClock, RequestSpacer
from tests.helpers.recorder import Recorder
from tests.helpers.virtual_time import all_tasks_blocked, virtual_time

pytestmark = pytest.mark.anyio


async def test_concurrent_callers_start_exactly_interval_apart_in_arrival_order() -> None:
    async with virtual_time() as clock:
        spacer = RequestSpacer(5.0, clock)
        starts: list[tuple[int, float]] = []

        async def caller(index: int) -> None:
            await spacer.acquire()
            starts.append((index, clock.now()))

        async with anyio.create_task_group() as tg:
            for index in range(6):
                tg.start_soon(caller, index)

    assert starts == [(index, 1000.0 + 5 * index) for index in range(6)]


async def test_the_first_request_and_one_after_a_long_idle_do_not_wait() -> None:
    async with virtual_time() as clock:
        spacer = RequestSpacer(5.0, clock)
        waits: Recorder[float] = Recorder()

        await spacer.acquire(waits)
        assert clock.now() == 1000.0
        await clock.sleep(60)
        await spacer.acquire(waits)
        assert clock.now() == 1060.0
        await clock.sleep(4)
        await spacer.acquire(waits)
        assert clock.now() == 1065.0

    assert waits == [1.0]


async def test_waiting_is_reported_every_second_with_the_time_left() -> None:
    async with virtual_time() as clock:
        spacer = RequestSpacer(5.0, clock)
        reports: dict[int, list[float]] = {1: [], 2: []}

        async def caller(index: int) -> None:
            async def on_wait(seconds: float) -> None:
                reports[index].append(seconds)

            await spacer.acquire(on_wait)

        await spacer.acquire()
        async with anyio.create_task_group() as tg:
            tg.start_soon(caller, 1)
            await all_tasks_blocked()
            tg.start_soon(caller, 2)

    assert reports[1] == [5, 4, 3, 2, 1]
    assert reports[2] == [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]


async def test_reports_follow_notify_every() -> None:
    async with virtual_time() as clock:
        spacer = RequestSpacer(5.0, clock, notify_every=2.0)
        reports: Recorder[float] = Recorder()

        await spacer.acquire()
        await spacer.acquire(reports)
        assert clock.now() == 1005.0
    assert reports == [5, 3, 1]


async def test_a_cancelled_waiter_gives_its_place_to_the_next() -> None:
    async with virtual_time() as clock:
        spacer = RequestSpacer(5.0, clock)
        starts: dict[str, float] = {}

        async def caller(name: str, scope: anyio.CancelScope | None = None) -> None:
            with scope or anyio.CancelScope():
                await spacer.acquire()
                starts[name] = clock.now()

        await caller("a")
        b_scope = anyio.CancelScope()
        async with anyio.create_task_group() as tg:
            tg.start_soon(caller, "b", b_scope)
            await all_tasks_blocked()
            tg.start_soon(caller, "c")  # queued behind b: due at 1010 while b waits
            await clock.sleep(2)
            b_scope.cancel()

    assert starts == {"a": 1000.0, "c": 1005.0}


async def test_cancelling_the_only_waiter_never_lets_spacing_drop() -> None:
    async with virtual_time() as clock:
        spacer = RequestSpacer(5.0, clock)
        starts: list[float] = []

        async def caller() -> None:
            await spacer.acquire()
            starts.append(clock.now())

        await caller()
        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            await clock.sleep(3)
            tg.cancel_scope.cancel()
        assert clock.now() == 1003.0
        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            tg.start_soon(caller)

    assert starts == [1000.0, 1005.0, 1010.0]


async def test_an_on_wait_that_fails_only_fails_its_caller() -> None:
    async with virtual_time() as clock:
        spacer = RequestSpacer(5.0, clock)

        async def broken(seconds: float) -> None:
            raise OSError("client went away")

        await spacer.acquire()
        with pytest.raises(OSError, match="client went away"):
            await spacer.acquire(broken)
        await spacer.acquire()
        assert clock.now() == 1005.0


async def test_interval_zero_never_waits() -> None:
    async with virtual_time() as clock:
        spacer = RequestSpacer(0.0, clock)
        waits: Recorder[float] = Recorder()

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(spacer.acquire, waits)
        assert clock.now() == 1000.0
    assert waits == []


async def test_defer_holds_back_every_start_and_reports_the_wait() -> None:
    async with virtual_time() as clock:
        spacer = RequestSpacer(5.0, clock)
        await spacer.acquire()  # t=1000
        await spacer.defer(30.0)  # the platform answered 429 with Retry-After: 30
        await spacer.defer(10.0)  # a shorter deferral never shortens a longer one
        waits: list[float] = []
        starts: list[float] = []

        async def caller() -> None:
            async def on_wait(seconds: float) -> None:
                waits.append(seconds)

            await spacer.acquire(on_wait)
            starts.append(clock.now())

        async with anyio.create_task_group() as tg:
            tg.start_soon(caller)
            tg.start_soon(caller)
    assert starts == [1030.0, 1035.0]
    assert waits[0] == 30.0


async def test_defer_applies_even_without_spacing() -> None:
    async with virtual_time() as clock:
        spacer = RequestSpacer(0.0, clock)
        await spacer.defer(3.0)
        await spacer.acquire()
        assert clock.now() == 1003.0
        await spacer.acquire()
        assert clock.now() == 1003.0


async def test_the_real_clock_is_monotonic_and_sleeps() -> None:
    clock = MonotonicClock()
    before = clock.now()
    await clock.sleep(0.01)
    assert clock.now() - before >= 0.01


async def test_real_spacing_with_a_short_interval() -> None:
    spacer = RequestSpacer(0.05)
    clock = MonotonicClock()
    starts: list[float] = []

    async def caller() -> None:
        await spacer.acquire()
        starts.append(clock.now())

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(caller)
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert all(gap >= 0.05 for gap in gaps), gaps


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="interval"):
        RequestSpacer(-1)
    with pytest.raises(ValueError, match="notify_every"):
        RequestSpacer(5, notify_every=0)
