"""Unit checks of the benchmark's own pieces (no timing is asserted): ``pytest bench``."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import httpx
import pytest
from requests_toolbelt.multipart.decoder import MultipartDecoder

from bench import machine, procs, report
from bench.__main__ import parse, sizes_arg
from bench.coordination import BACKENDS, CoordinationResult, FleetRun
from bench.download import Sample, SizeResult
from bench.economy import EconomyResult, SingleFlightRun, SpacingRun
from bench.interleave import interleaved
from bench.plain_upstream import plain_upstream_process
from bench.simproc import audio_data_url, benchmark_key
from bench.startup import StartupResult
from bench.stats import Summary, fmt_bytes, mb_per_s, percentile, ratios
from bench.warm import Batch, WarmResult
from cte1_mcp.units import MiB


def test_percentile_interpolates_like_numpy() -> None:
    data = [float(x) for x in range(1, 101)]
    assert percentile(data, 50) == pytest.approx(50.5)
    assert percentile(data, 95) == pytest.approx(95.05)
    assert percentile(data, 99) == pytest.approx(99.01)
    assert percentile([3.0], 99) == 3.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 0) == 1.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 100) == 4.0
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summary_is_median_with_min_max() -> None:
    s = Summary.of([3.0, 1.0, 2.0, 10.0])
    assert (s.median, s.low, s.high, s.n) == (2.5, 1.0, 10.0, 4)
    assert s.fmt(1, "MB/s") == "2.5 (1.0\u201310.0) MB/s"
    with pytest.raises(ValueError):
        Summary.of([])


def test_units() -> None:
    assert mb_per_s(2_000_000, 0.5) == 4.0
    assert ratios([2.0, 9.0], [4.0, 3.0]) == [0.5, 3.0]
    assert fmt_bytes(48 * MiB) == "48.0 MiB"
    assert fmt_bytes(512) == "512 B"
    assert fmt_bytes(3 * 1024**3) == "3.0 GiB"


def test_interleaving_runs_a_b_a_b_and_needs_three_repetitions() -> None:
    order: list[str] = []

    def variant(name: str) -> Callable[[int], Awaitable[str]]:
        async def run(rep: int) -> str:
            order.append(f"{name}{rep}")
            return name

        return run

    samples = anyio.run(interleaved, 3, {"a": variant("a"), "b": variant("b")})
    assert order == ["a0", "b0", "a1", "b1", "a2", "b2"]
    assert samples == {"a": ["a", "a", "a"], "b": ["b", "b", "b"]}
    with pytest.raises(ValueError):
        anyio.run(interleaved, 2, {"a": variant("a")})


def test_peak_rss_and_children_come_from_proc() -> None:
    assert procs.vm_hwm_bytes(os.getpid()) >= procs.vm_rss_bytes(os.getpid()) > 0
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert child.pid in procs.children()
        assert procs.cmdline(child.pid)[0] == sys.executable
        assert procs.vm_hwm_bytes(child.pid) > 0
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(10)
    assert procs.cmdline(child.pid) == []


def test_free_port_and_wait_for_port() -> None:
    port = procs.free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", "-b", "127.0.0.1", str(port)])
    try:
        procs.wait_for_port(port, server)
    finally:
        procs.stop(server)
    assert server.returncode is not None


def test_command_line() -> None:
    assert sizes_arg("256, 8,64") == [8, 64, 256]
    quick = parse(["--quick"])
    assert quick.quick and quick.sizes == [1, 8] and quick.output.name == "quick.md"
    full = parse([])
    assert full.sizes == [8, 64, 256] and full.repetitions == 5 and full.output.name == "latest.md"
    assert parse(["--sizes", "16"]).sizes == [16]
    assert quick.repetitions == 3 and parse(["--reps", "4"]).repetitions == 4
    with pytest.raises(SystemExit):
        parse(["--reps", "0"])
    with pytest.raises(SystemExit):
        parse(["--reps", "2"])
    assert full.upstreams == ("simulator", "plain") and parse(["--upstreams", "plain"]).upstreams == (
        "plain",
    )
    with pytest.raises(SystemExit):
        parse(["--upstreams", "nginx"])


def test_machine_description_names_what_the_report_needs() -> None:
    names = [name for name, _ in machine.describe()]
    for needed in ("CPU", "cores", "memory", "Python", "mcp", "httpx", "pydantic", "multipart", "anyio"):
        assert needed in names
    assert "uvicorn" in names and "curl" in names


def _fake_results(ratio: float, growth_mib: int, upstream_requests: int) -> report.Results:
    def size(mib: int, peak: int) -> SizeResult:
        curl = [Sample(1.0, 100 * 1_000_000) for _ in range(3)]
        server = [Sample(1.0, int(ratio * 100 * 1_000_000), peak, 40 * MiB) for _ in range(3)]
        naive = [Sample(2.0, mib * MiB, 3 * mib * MiB, 30 * MiB) for _ in range(3)]
        return SizeResult(mib, curl, server, naive)

    batches = [Batch([0.002] * 10, 0.02) for _ in range(3)]
    busy = [Batch([0.003] * 10, 0.03, 1.5, 256) for _ in range(3)]
    return report.Results(
        download=[size(8, 50 * MiB), size(256, (50 + growth_mib) * MiB)],
        warm=WarmResult(batches, busy),
        warm_download_mib=256,
        economy=EconomyResult(
            [SingleFlightRun(8, 50, upstream_requests, 1)],
            SpacingRun(3, 1.0, [0.0, 1.0, 2.5], 2.6),
        ),
        startup=StartupResult([0.5, 0.6, 0.7], [0.02, 0.02, 0.02]),
    )


def test_verdicts_follow_the_targets(tmp_path: Path) -> None:
    good = {t.name.split(" ")[0]: t.met for t in report.targets(_fake_results(0.9, 10, 1))}
    assert all(good.values()), good
    bad = report.targets(_fake_results(0.5, 100, 2))
    failed = [t.name for t in bad if not t.met]
    assert len(failed) == 3, failed
    text = report.render(_fake_results(0.5, 100, 2), machine.describe(), "python -m bench", 3, 12.0, False)
    assert "\u274c" in text and "\u2705" in text and "## 4. Start-up" in text
    assert "Other work was running" not in text
    busy = report.render(_fake_results(0.9, 10, 1), [], "python -m bench", 3, 12.0, False, (1.5, 2.0), 2)
    assert "Other work was running" in busy
    out = tmp_path / "r" / "latest.md"
    report.write(out, text)
    assert out.read_text(encoding="utf-8") == text


def test_coordination_targets_and_section() -> None:
    def fleet(backend: str, arrivals: list[float], statuses: list[int]) -> FleetRun:
        return FleetRun(backend, 4, 3, 0.5, arrivals, statuses, 2.0)

    us = {backend: Summary.of([10.0, 12.0, 11.0]) for backend in BACKENDS}
    warm_ms = {"cache directory": Summary.of([2.0]), "redis": Summary.of([2.1])}
    good = CoordinationResult(
        [fleet("cache directory", [0.0, 0.8, 1.6], [200] * 3), fleet("redis", [0.0, 0.75, 1.5], [200] * 3)],
        us,
        us,
        warm_ms,
    )
    results = dataclasses.replace(_fake_results(0.9, 10, 1), coordination=good)
    coordination = [t for t in report.targets(results) if "distinct keys, one limit" in t.name]
    assert [t.met for t in coordination] == [True, True]
    text = report.render(results, [], "python -m bench", 3, 12.0, False)
    assert "## 6. Coordination" in text and "| redis | 4 \u00d7 3 | 3 | 0 | 0.750 |" in text
    too_close = fleet("redis", [0.0, 0.4, 1.2], [200, 429, 200])
    assert too_close.refused == 1 and too_close.smallest_gap == pytest.approx(0.4)
    bad = dataclasses.replace(results, coordination=dataclasses.replace(good, fleets=[too_close]))
    assert [t.met for t in report.targets(bad) if "one limit" in t.name] == [False]


def test_a_plain_upstream_and_its_first_calls_are_reported_beside_the_simulator() -> None:
    results = _fake_results(0.9, 10, 1)
    assert results.download is not None
    plain = [
        dataclasses.replace(s, upstream="plain", naive=[], first=[Sample(2.0, s.server[0].size_bytes)] * 3)
        for s in results.download
    ]
    mixed = dataclasses.replace(results, download=[*results.download, *plain], client_compile_seconds=0.004)
    # The targets are the simulator's, whatever else ran.
    assert [t.measured for t in report.targets(mixed)] == [t.measured for t in report.targets(results)]
    text = report.render(mixed, [], "python -m bench", 3, 12.0, False)
    assert "| 256 MiB HTTP, plain | 100 (100\u2013100) | 90 (90\u201390) | \u2014 | 0.90" in text
    assert "**The first call of a session**" in text and "4.0 ms" in text
    # 2 s for the first call against curl's 1 s: 0.45x curl's throughput; the later call 0.90x.
    assert "| 256 MiB HTTP, plain | 1000.0 (1000.0\u20131000.0) | 2000.0 (2000.0\u20132000.0) | 0.45" in text
    assert "**The first call of a session**" not in report.render(
        results, [], "python -m bench", 3, 1.0, False
    )


def test_the_plain_upstream_answers_a_documented_multipart_body(tmp_path: Path) -> None:
    """What the server is measured against is a CT-e1 answer: a finished call's metadata part, then
    a WAV of exactly N MiB, framed by a Content-Length; any record id; other calls refused."""
    with (tmp_path / "log").open("w") as log, plain_upstream_process(log) as upstream:
        url = audio_data_url(upstream)
        headers = {"Authorization": f"Bearer {upstream.api_key}"}
        answer = httpx.post(url, json={**benchmark_key(2), "recordId": 3}, headers=headers)
        assert answer.status_code == 200 and int(answer.headers["content-length"]) == len(answer.content)
        metadata, audio = MultipartDecoder(answer.content, answer.headers["content-type"]).parts
        assert json.loads(metadata.content)["status"] == "complete"
        assert json.loads(metadata.content)["recordId"] == 3
        assert audio.headers[b"Content-Type"] == b"audio/wav" and len(audio.content) == 2 * MiB
        assert audio.content[:4] == b"RIFF" and audio.content[8:12] == b"WAVE"
        refused = httpx.post(url, json={**benchmark_key(2), "tenantId": "0311111111"}, headers=headers)
        assert refused.status_code == 200 and refused.json()["status"] == "error"
        assert (
            httpx.post(url, json=benchmark_key(2), headers={"Authorization": "Bearer x"}).status_code == 401
        )
