"""The count of refused pushes (``refusal_tally.py``) across a graceful stop, on a real event loop."""

from __future__ import annotations

import asyncio

import anyio

from cte1_mcp.refusal_tally import RefusalTally, Summary


def test_a_stop_while_a_summary_is_being_written_finishes_it() -> None:
    """Regression (review): ``close()`` cancelled the flush while it wrote the summary's audit
    lines (one per code, each a worker-thread write), and the codes after the first were lost."""
    written: list[tuple[str, int]] = []

    async def report(summary: Summary) -> None:
        for code, count in summary.counts.items():
            await anyio.sleep(0.2)  # a slow audit write
            written.append((code, count))

    async def main() -> None:
        tally = RefusalTally(0.3, report)
        assert tally.admit("unauthorized")  # the first: reported in full by the caller
        for code in ("unauthorized", "unauthorized", "method_not_allowed", "invalid_host"):
            assert not tally.admit(code)
        await asyncio.sleep(0.4)  # the interval is over: the summary is being written
        await tally.close()

    asyncio.run(main())
    assert written == [("unauthorized", 2), ("method_not_allowed", 1), ("invalid_host", 1)]


def test_a_stop_before_the_interval_ends_reports_at_once() -> None:
    written: list[Summary] = []

    async def report(summary: Summary) -> None:
        written.append(summary)

    async def main() -> float:
        tally = RefusalTally(3600.0, report)
        tally.admit("unauthorized")
        tally.admit("unauthorized")
        started = asyncio.get_running_loop().time()
        await tally.close()
        return asyncio.get_running_loop().time() - started

    took = asyncio.run(main())
    assert [dict(s.counts) for s in written] == [{"unauthorized": 1}]
    assert took < 60  # not the hour the interval had left


def test_after_a_stop_the_tally_counts_again_instead_of_reporting_each_refusal() -> None:
    """Regression (review): the stop's wake-up stayed set, so an app started again after a stop
    (a second test client on one app) reported every refusal on a line of its own."""
    written: list[dict[str, int]] = []

    async def report(summary: Summary) -> None:
        written.append(dict(summary.counts))

    async def main() -> None:
        tally = RefusalTally(60.0, report)
        assert tally.admit("unauthorized")
        assert not tally.admit("unauthorized")
        await tally.close()
        for _ in range(3):
            assert not tally.admit("unauthorized")  # within the minute after the report: counted
            await asyncio.sleep(0.05)
        assert written == [{"unauthorized": 1}]
        await tally.close()

    asyncio.run(main())
    assert written == [{"unauthorized": 1}, {"unauthorized": 3}]
