"""Request spacing and single-flight, on virtual time: no test here waits for real seconds."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import anyio.lowlevel
import pytest

from cte1_mcp.errors import Cte1Error
from cte1_mcp.limiter import Emit, MonotonicClock, RequestSpacer, SingleFlight

pytestmark = pytest.mark.anyio


#: Tasks that only move virtual time; a test waiting for "everything blocked" does not wait for them.
_CLOCK_TASKS: set[asyncio.Task[object]] = set()


async def all_tasks_blocked() -> None:
    """Return once every other task waits on something (anyio's own helper polls every 0.1 s).

    A clock's autojump task counts as blocked here, while a task spinning in this function counts
    as busy to the autojump: so virtual time never moves while a test waits for things to settle.
    """
    this = asyncio.current_task()
    while True:
        await anyio.lowlevel.checkpoint()
        others = (task for task in asyncio.all_tasks() if task is not this and task not in _CLOCK_TASKS)
        if all(_blocked(task) for task in others):
            return


async def _everything_else_blocked() -> None:
    this = asyncio.current_task()
    while True:
        await anyio.lowlevel.checkpoint()
        if all(_blocked(task) for task in asyncio.all_tasks() if task is not this):
            return


def _blocked(task: asyncio.Task[object]) -> bool:
    waiter = getattr(task, "_fut_waiter", None)
    return waiter is not None and not waiter.done()


class FakeClock:
    """Virtual monotonic seconds that jump to the next deadline whenever every task is blocked."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._sleepers: list[tuple[float, int, anyio.Event]] = []
        self._order = itertools.count()
        self._new_sleeper = anyio.Event()

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        event = anyio.Event()
        heapq.heappush(self._sleepers, (self._now + max(seconds, 0.0), next(self._order), event))
        self._new_sleeper.set()
        await event.wait()

    async def autojump(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        _CLOCK_TASKS.add(task)
        try:
            await self._jump_forever()
        finally:
            _CLOCK_TASKS.discard(task)

    async def _jump_forever(self) -> None:
        while True:
            await _everything_else_blocked()
            if not self._sleepers:
                self._new_sleeper = anyio.Event()
                await self._new_sleeper.wait()
                continue
            deadline, _, event = heapq.heappop(self._sleepers)
            self._now = max(self._now, deadline)
            event.set()


@asynccontextmanager
async def virtual_time() -> AsyncIterator[FakeClock]:
    clock = FakeClock()
    with anyio.fail_after(10):  # real seconds: a hang is a failure, not a stuck suite
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.autojump)
            yield clock
            tg.cancel_scope.cancel()


# --- RequestSpacer ----------------------------------------------------------------------------


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
        waits: list[float] = []

        async def on_wait(seconds: float) -> None:
            waits.append(seconds)

        await spacer.acquire(on_wait)
        assert clock.now() == 1000.0
        await clock.sleep(60)
        await spacer.acquire(on_wait)
        assert clock.now() == 1060.0
        await clock.sleep(4)
        await spacer.acquire(on_wait)
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
        reports: list[float] = []

        async def on_wait(seconds: float) -> None:
            reports.append(seconds)

        await spacer.acquire()
        await spacer.acquire(on_wait)
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
        waits: list[float] = []

        async def on_wait(seconds: float) -> None:
            waits.append(seconds)

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(spacer.acquire, on_wait)
        assert clock.now() == 1000.0
    assert waits == []


async def test_defer_holds_back_every_start_and_reports_the_wait() -> None:
    async with virtual_time() as clock:
        spacer = RequestSpacer(5.0, clock)
        await spacer.acquire()  # t=1000
        spacer.defer(30.0)  # the platform answered 429 with Retry-After: 30
        spacer.defer(10.0)  # a shorter deferral never shortens a longer one
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
        spacer.defer(3.0)
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


# --- SingleFlight -----------------------------------------------------------------------------


class Work:
    """Shared work that waits for a go, counting runs and emitting whatever it is told to."""

    def __init__(self, result: object = "the recording") -> None:
        self.result = result
        self.runs = 0
        self.finished = 0
        self.go = anyio.Event()
        self.events: list[str] = []
        self.error: BaseException | None = None

    async def __call__(self, emit: Emit[str]) -> object:
        self.runs += 1
        for event in self.events:
            await emit(event)
        await self.go.wait()
        await emit("done")
        if self.error is not None:
            raise self.error
        self.finished += 1
        return self.result


def collector(into: list[str]) -> Callable[[str], Awaitable[None]]:
    async def on_event(event: str) -> None:
        into.append(event)

    return on_event


async def test_fifty_identical_calls_share_one_run() -> None:
    work = Work(result=object())
    results: list[object] = []
    async with SingleFlight[str, object, str]() as flights, anyio.create_task_group() as tg:

        async def call() -> None:
            results.append(await flights.run("k", work))

        for _ in range(50):
            tg.start_soon(call)
        await all_tasks_blocked()
        assert flights.running("k")
        work.go.set()

    assert work.runs == 1
    assert len(results) == 50
    assert all(result is work.result for result in results)


async def test_an_exception_reaches_every_caller() -> None:
    work = Work()
    work.error = ConnectionError("upstream broke")
    caught: list[BaseException] = []
    async with SingleFlight[str, object, str]() as flights, anyio.create_task_group() as tg:

        async def call() -> None:
            try:
                await flights.run("k", work)
            except ConnectionError as exc:
                caught.append(exc)

        for _ in range(5):
            tg.start_soon(call)
        await all_tasks_blocked()
        work.go.set()

    assert work.runs == 1
    assert len(caught) == 5
    assert all(exc is work.error for exc in caught)


async def test_a_cancelled_caller_does_not_cancel_the_work_for_the_others() -> None:
    work = Work()
    results: list[object] = []
    async with SingleFlight[str, object, str]() as flights, anyio.create_task_group() as tg:

        async def call() -> None:
            results.append(await flights.run("k", work))

        async with anyio.create_task_group() as first:
            first.start_soon(call)  # the caller that started the work
            await all_tasks_blocked()
            tg.start_soon(call)
            tg.start_soon(call)
            await all_tasks_blocked()
            first.cancel_scope.cancel()
        await all_tasks_blocked()
        assert flights.running("k")
        work.go.set()

    assert work.finished == 1
    assert results == ["the recording", "the recording"]


async def test_the_work_finishes_even_if_every_caller_gives_up() -> None:
    work = Work()
    async with SingleFlight[str, object, str]() as flights:
        with anyio.move_on_after(0.01):
            await flights.run("k", work)
        assert flights.running("k")
        work.go.set()
        while flights.running("k"):
            await anyio.lowlevel.checkpoint()
    assert work.finished == 1


async def test_after_completion_a_new_call_runs_the_work_again() -> None:
    work = Work()
    work.go.set()
    async with SingleFlight[str, object, str]() as flights:
        assert await flights.run("k", work) == "the recording"
        assert not flights.running("k")
        assert await flights.run("k", work) == "the recording"
    assert work.runs == 2


async def test_different_keys_do_not_share() -> None:
    work = Work()
    work.go.set()
    async with SingleFlight[str, object, str]() as flights, anyio.create_task_group() as tg:
        for key in ("a", "b", "c"):
            tg.start_soon(flights.run, key, work)
    assert work.runs == 3


async def test_events_fan_out_to_every_caller_from_when_it_joined() -> None:
    work = Work()
    work.events = ["waiting", "downloading"]
    early: list[str] = []
    late: list[str] = []
    silent_results: list[object] = []
    async with SingleFlight[str, object, str]() as flights, anyio.create_task_group() as tg:
        tg.start_soon(lambda: flights.run("k", work, on_event=collector(early)))
        await all_tasks_blocked()
        tg.start_soon(lambda: flights.run("k", work, on_event=collector(late)))

        async def silent() -> None:
            silent_results.append(await flights.run("k", work))

        tg.start_soon(silent)
        await all_tasks_blocked()
        work.go.set()

    assert early == ["waiting", "downloading", "done"]
    assert late == ["done"]
    assert silent_results == ["the recording"]


async def test_a_failing_event_handler_breaks_nothing_else() -> None:
    work = Work()
    work.events = ["one", "two"]
    good: list[str] = []
    results: list[object] = []

    async def broken(event: str) -> None:
        raise BrokenPipeError("client gone")

    async with SingleFlight[str, object, str]() as flights, anyio.create_task_group() as tg:

        async def call(on_event: Callable[[str], Awaitable[None]]) -> None:
            results.append(await flights.run("k", work, on_event=on_event))

        tg.start_soon(call, broken)
        tg.start_soon(call, collector(good))
        await all_tasks_blocked()
        work.go.set()

    assert work.finished == 1
    assert good == ["one", "two", "done"]
    assert results == ["the recording", "the recording"]


async def test_a_slow_event_handler_does_not_hold_up_the_work_or_the_others() -> None:
    work = Work()
    work.events = ["one"]
    release = anyio.Event()
    results: list[str] = []

    async def slow(event: str) -> None:
        await release.wait()

    async with SingleFlight[str, object, str]() as flights, anyio.create_task_group() as tg:

        async def call(name: str, on_event: Callable[[str], Awaitable[None]] | None) -> None:
            await flights.run("k", work, on_event=on_event)
            results.append(name)

        tg.start_soon(call, "slow", slow)
        tg.start_soon(call, "quick", None)
        await all_tasks_blocked()
        work.go.set()
        await all_tasks_blocked()
        assert work.finished == 1
        assert results == ["quick"]
        release.set()

    assert results == ["quick", "slow"]


async def test_closing_stops_running_work_and_tells_its_callers() -> None:
    work = Work()
    caught: list[Cte1Error] = []
    async with anyio.create_task_group() as tg, SingleFlight[str, object, str]() as flights:

        async def call() -> None:
            try:
                await flights.run("k", work)
            except Cte1Error as exc:
                caught.append(exc)

        tg.start_soon(call)
        await all_tasks_blocked()
    assert work.runs == 1
    assert work.finished == 0
    assert len(caught) == 1
    assert "stopped" in caught[0].message


async def test_run_needs_the_context_manager() -> None:
    flights = SingleFlight[str, object, str]()
    with pytest.raises(RuntimeError, match="async with"):
        await flights.run("k", Work())
