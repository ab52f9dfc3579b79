"""In-process single-flight: one execution per key, its events and outcome shared, on virtual time."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio
import anyio.lowlevel
import pytest

from cte1_mcp.coordination.local import RequestSpacer
from cte1_mcp.coordination.single_flight import Flight, SingleFlight
from cte1_mcp.errors import Cte1Error
from tests.helpers.virtual_time import FakeClock, all_tasks_blocked, virtual_time

pytestmark = pytest.mark.anyio


class Work:
    """Shared work that waits for a go, counting runs and emitting whatever it is told to."""

    def __init__(self, result: object = "the recording") -> None:
        self.result = result
        self.runs = 0
        self.finished = 0
        self.go = anyio.Event()
        self.events: list[str] = []
        self.error: BaseException | None = None

    async def __call__(self, flight: Flight[object, str]) -> object:
        self.runs += 1
        for event in self.events:
            await flight.emit(event)
        await self.go.wait()
        await flight.emit("done")
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


# --- abandoned while queued -----------------------------------------------------------------


class QueuedWork:
    """Work that waits for its turn (abandonable), then 'downloads' (not abandonable)."""

    def __init__(self, spacer: RequestSpacer, clock: FakeClock, starts: list[tuple[str, float]]) -> None:
        self.spacer = spacer
        self.clock = clock
        self.starts = starts

    def __call__(self, name: str) -> Callable[[Flight[str, str]], Awaitable[str]]:
        async def work(flight: Flight[str, str]) -> str:
            with flight.abandonable():
                await self.spacer.acquire()
            self.starts.append((name, self.clock.now()))
            return name

        return work


async def test_a_queued_flight_whose_callers_all_left_gives_its_place_to_the_next() -> None:
    async with virtual_time() as clock, SingleFlight[str, str, str]() as flights:
        spacer = RequestSpacer(5.0, clock)
        starts: list[tuple[str, float]] = []
        work = QueuedWork(spacer, clock, starts)
        assert await flights.run("a", work("a")) == "a"  # t=1000; the next start is due at 1005
        results: list[str] = []
        b_scope = anyio.CancelScope()

        async def b_caller() -> None:
            with b_scope:
                await flights.run("b", work("b"))

        async def c_caller() -> None:
            results.append(await flights.run("c", work("c")))

        async with anyio.create_task_group() as tg:
            tg.start_soon(b_caller)  # queued first: due at 1005
            await all_tasks_blocked()
            tg.start_soon(c_caller)  # queued behind b: due at 1010 while b waits
            await all_tasks_blocked()
            await clock.sleep(1)
            b_scope.cancel()  # b's only caller leaves: b must not keep its place
        assert not flights.running("b")

    assert results == ["c"]
    assert starts == [("a", 1000.0), ("c", 1005.0)]


async def test_a_queued_flight_with_a_caller_left_keeps_its_place() -> None:
    async with virtual_time() as clock, SingleFlight[str, str, str]() as flights:
        spacer = RequestSpacer(5.0, clock)
        starts: list[tuple[str, float]] = []
        work = QueuedWork(spacer, clock, starts)
        await spacer.acquire()  # t=1000
        leaving = anyio.CancelScope()
        results: list[str] = []

        async def leaver() -> None:
            with leaving:
                await flights.run("b", work("b"))

        async def stayer() -> None:
            results.append(await flights.run("b", work("b")))

        async with anyio.create_task_group() as tg:
            tg.start_soon(leaver)
            tg.start_soon(stayer)
            await all_tasks_blocked()
            leaving.cancel()
    assert results == ["b"]
    assert starts == [("b", 1005.0)]


async def test_a_caller_arriving_after_an_abandonment_starts_afresh() -> None:
    async with virtual_time() as clock, SingleFlight[str, str, str]() as flights:
        spacer = RequestSpacer(5.0, clock)
        starts: list[tuple[str, float]] = []
        work = QueuedWork(spacer, clock, starts)
        await spacer.acquire()  # t=1000
        with anyio.move_on_after(0):
            await flights.run("b", work("b"))
        assert await flights.run("b", work("b")) == "b"
    assert starts == [("b", 1005.0)]


async def test_leaving_after_the_abandonable_part_lets_the_work_finish() -> None:
    async with virtual_time() as clock, SingleFlight[str, str, str]() as flights:
        spacer = RequestSpacer(5.0, clock)
        starts: list[tuple[str, float]] = []
        go = anyio.Event()

        async def work(flight: Flight[str, str]) -> str:
            with flight.abandonable():
                await spacer.acquire()
            starts.append(("b", clock.now()))
            await go.wait()
            return "b"

        with anyio.move_on_after(1):
            await flights.run("b", work)
        assert flights.running("b")  # past its queue place: the download is not wasted
        go.set()
        while flights.running("b"):
            await anyio.lowlevel.checkpoint()
    assert starts == [("b", 1000.0)]
