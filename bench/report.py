"""Targets with verdicts, and the markdown report."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench.analysis import AnalysisResult, analysis_section, analysis_targets
from bench.coordination import BACKENDS, CoordinationResult
from bench.download import UPSTREAMS, SizeResult
from bench.economy import EconomyResult
from bench.startup import StartupResult
from bench.stats import DASH, MDASH, MINUS, TIMES, Summary, fmt_bytes
from bench.store_size import STORE_SIZES, StoreSizeResult
from bench.transcription import TranscriptionResult, transcription_section, transcription_targets
from bench.warm import WarmResult
from cte1_mcp.coordination import SPACING_MARGIN_SECONDS, spacing
from cte1_mcp.units import MiB

RATIO_TARGET = 0.7
RATIO_STRETCH = 0.8
#: CPU seconds per GiB the server may spend on a cold download over plain HTTP.
CPU_PER_GIB_TARGET = 2.0
RSS_GROWTH_TARGET = 16 * MiB
WARM_P50_TARGET = 0.005
BUSY_P95_FACTOR = 3.0
STARTUP_TARGET = 1.5
#: A cold download with 10,000 recordings stored may cost at most this much more than with none.
STORE_SIZE_COLD_FACTOR = 2.0


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    goal: str
    measured: str
    met: bool

    @property
    def verdict(self) -> str:
        return "✅" if self.met else "❌"


@dataclass(frozen=True, slots=True)
class Results:
    """Whatever parts ran (None for a part that was skipped)."""

    download: list[SizeResult] | None
    warm: WarmResult | None
    warm_download_mib: int
    economy: EconomyResult | None
    startup: StartupResult | None
    store_size: StoreSizeResult | None = None
    coordination: CoordinationResult | None = None
    analysis: AnalysisResult | None = None
    transcription: TranscriptionResult | None = None
    #: The MCP client's one-time check and compile of get_call_audio's output schema, in seconds.
    client_compile_seconds: float | None = None


def targets(r: Results) -> list[Target]:
    out: list[Target] = []
    for scheme in ("http", "https"):
        sized = [d for d in r.download or [] if d.scheme == scheme and d.upstream == "simulator"]
        if not sized:
            continue
        largest, smallest = sized[-1], sized[0]
        ratio = largest.ratio_server_to_curl()
        stretch = " (stretch ≥ 0.8 ✅)" if ratio.median >= RATIO_STRETCH else " (stretch ≥ 0.8 not met)"
        out.append(
            Target(
                f"cold get_call_audio / curl throughput at {largest.mib} MiB over {scheme.upper()}",
                f"≥ {RATIO_TARGET} (stretch {RATIO_STRETCH})",
                ratio.fmt(2) + stretch,
                ratio.median >= RATIO_TARGET,
            )
        )
        if scheme != "http":
            continue
        cpu = largest.cpu_per_gib("server")
        out.append(
            Target(
                f"server CPU per GiB, cold {largest.mib} MiB over HTTP",
                f"≤ {CPU_PER_GIB_TARGET} s/GiB",
                f"{cpu.fmt(2)} s/GiB (curl {largest.cpu_per_gib('curl').fmt(2)})",
                cpu.median <= CPU_PER_GIB_TARGET,
            )
        )
        if len(sized) > 1:
            growth = largest.peak_rss("server").median - smallest.peak_rss("server").median
            out.append(
                Target(
                    f"server peak RSS growth {smallest.mib} → {largest.mib} MiB",
                    f"< {fmt_bytes(RSS_GROWTH_TARGET)}",
                    fmt_bytes(growth),
                    growth < RSS_GROWTH_TARGET,
                )
            )
    if r.warm:
        p50 = r.warm.p("idle", 50)
        out.append(
            Target(
                "warm get_call_metadata p50 over stdio",
                f"< {WARM_P50_TARGET * 1e3:.0f} ms",
                f"{p50 * 1e3:.2f} ms",
                p50 < WARM_P50_TARGET,
            )
        )
        idle95, busy95 = r.warm.p("idle", 95), r.warm.p("busy", 95)
        out.append(
            Target(
                f"get_call_metadata p95 during a {r.warm_download_mib} MiB cold download",
                f"< {BUSY_P95_FACTOR:g} {TIMES} idle p95",
                f"{busy95 * 1e3:.2f} ms = {busy95 / idle95:.2f} {TIMES} idle {idle95 * 1e3:.2f} ms",
                busy95 < BUSY_P95_FACTOR * idle95,
            )
        )
    if r.economy:
        flights = r.economy.single_flight
        counts = ", ".join(str(f.upstream_requests) for f in flights)
        callers = flights[0].callers if flights else 0
        out.append(
            Target(
                f"{callers} identical concurrent get_call_audio → upstream requests",
                "exactly 1 (each repetition)",
                counts,
                all(f.upstream_requests == 1 and f.distinct_sha256 == 1 for f in flights),
            )
        )
        s = r.economy.spacing
        out.append(
            Target(
                f"smallest start-to-start spacing, {s.keys} distinct keys",
                f"≥ interval ({s.interval:g} s)",
                f"{s.smallest_gap:.3f} s",
                s.smallest_gap >= s.interval,
            )
        )
    if r.startup:
        startup = r.startup.summary()
        out.append(
            Target(
                "start-up: spawn → initialize result",
                f"< {STARTUP_TARGET} s",
                startup.fmt(3, "s"),
                startup.median < STARTUP_TARGET,
            )
        )
    for fleet in r.coordination.fleets if r.coordination else []:
        out.append(
            Target(
                f"{fleet.processes} processes {TIMES} {fleet.keys} distinct keys, one limit ({fleet.backend})",
                f"{fleet.keys} requests, none refused, smallest gap ≥ {fleet.interval:g} s",
                f"{len(fleet.arrivals)} requests, {fleet.refused} refused, smallest gap "
                f"{fleet.smallest_gap:.3f} s",
                len(fleet.arrivals) == fleet.keys
                and fleet.refused == 0
                and fleet.smallest_gap >= fleet.interval,
            )
        )
    if r.store_size:
        empty = r.store_size.summary(STORE_SIZES[0], "cold_seconds").median
        full = r.store_size.summary(STORE_SIZES[-1], "cold_seconds").median
        out.append(
            Target(
                f"cold get_call_audio with {STORE_SIZES[-1]:,} recordings stored / with none",
                f"< {STORE_SIZE_COLD_FACTOR}{TIMES}",
                f"{full / empty:.2f}{TIMES} ({full * 1e3:.0f} vs {empty * 1e3:.0f} ms)",
                full / empty < STORE_SIZE_COLD_FACTOR,
            )
        )
    if r.analysis:
        out += [Target(*row) for row in analysis_targets(r.analysis)]
    if r.transcription:
        out += [Target(*row) for row in transcription_targets(r.transcription)]
    return out


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _mib(s: Summary) -> str:
    return f"{s.median / MiB:.1f} ({s.low / MiB:.1f}{DASH}{s.high / MiB:.1f})"


#: Above this 1-minute load average (per core) at the start, the report says the machine was busy.
BUSY_LOAD_PER_CORE = 0.25


def _optional(s: SizeResult, name: str, text: Callable[[SizeResult, str], str]) -> str:
    """``text(s, name)`` when ``name`` has samples at this size, else a dash (not measured)."""
    return text(s, name) if getattr(s, name) else MDASH


def _throughput(s: SizeResult, name: str) -> str:
    return s.throughput(name).fmt(0)


def _cpu(s: SizeResult, name: str) -> str:
    return s.cpu_per_gib(name).fmt(2)


def _peak(s: SizeResult, name: str) -> str:
    return _mib(s.peak_rss(name))


def _download_section(download: list[SizeResult], compile_seconds: float | None) -> list[str]:
    kinds = sorted({s.upstream for s in download}, key=UPSTREAMS.index)
    lines = [
        f"## 1. Download path (cold; upstreams on 127.0.0.1 in their own processes: {', '.join(kinds)}; "
        "HTTP and HTTPS)",
        "",
        "(a) curl writing the whole response to a file (its own `time_total`); (b) a later cold "
        "`get_call_audio` over stdio, from tools/call to its result: a fresh server and store, "
        "tools listed, then one untimed cold call of another, small recording, so that the "
        "process's one-time work (the CA store loaded, first-use imports, the client compiling "
        "the tool's output schema) is not counted as download time; the server's peak RSS is "
        "reset after it, so peak and growth are the timed call's; sha256 of the stored file "
        "verified; (c) httpx reading the body into memory, "
        "requests-toolbelt `MultipartDecoder`, write the audio (a subprocess, timed inside it; "
        "against the simulator only). "
        "HTTPS: the same upstream behind TLS, its certificate issued by a test CA made at run "
        "time (trustme) that curl (`--cacert`), the server (`CTE1_CA_BUNDLE`) and the naive script "
        "trust. CPU s/GiB: user + system CPU of curl's process, of the server's process during the "
        "call, and of the naive script's fetch, per GiB of audio. Upstreams: `simulator` is "
        "`cte1-mcp simulator` (uvicorn); `plain` is the standard library's `http.server` writing "
        "the body in 1 MiB `write()` calls with a Content-Length (`bench/plain_upstream.py`). "
        "All variants of all upstreams interleaved.",
        "",
        *_table(
            [
                "size",
                "(a) curl MB/s",
                "(b) server MB/s",
                "(c) naive MB/s",
                "(b)/(a)",
                "CPU s/GiB curl / server / naive",
                "server peak RSS MiB",
                "server RSS growth in call MiB",
                "naive peak RSS MiB",
            ],
            [
                [
                    s.label,
                    s.throughput("curl").fmt(0),
                    s.throughput("server").fmt(0),
                    _optional(s, "naive", _throughput),
                    s.ratio_server_to_curl().fmt(2),
                    " / ".join(_optional(s, n, _cpu) for n in ("curl", "server", "naive")),
                    _mib(s.peak_rss("server")),
                    _mib(s.rss_growth("server")),
                    _optional(s, "naive", _peak),
                ]
                for s in download
            ],
        ),
        "",
    ]
    plain = [d for d in download if d.scheme == "http" and d.upstream == "simulator"]
    if len(plain) > 1:
        first, last = plain[0], plain[-1]
        server_growth = last.peak_rss("server").median - first.peak_rss("server").median
        naive_growth = last.peak_rss("naive").median - first.peak_rss("naive").median
        lines += [
            f"Peak RSS growth from {first.mib} to {last.mib} MiB over HTTP (difference of medians): "
            f"server **{fmt_bytes(server_growth)}**, naive script **{fmt_bytes(naive_growth)}**.",
            "",
        ]
    firsts = [s for s in download if s.first]
    if firsts:
        compiled = (
            f" Of the first call, the MCP client's one-time check and compile of the tool's output "
            f"schema (jsonschema) takes {compile_seconds * 1e3:.1f} ms (measured in this process)."
            if compile_seconds is not None
            else ""
        )
        lines += [
            "**The first call of a session** (what a user waits for after starting the server): a "
            "fresh server and store, tools listed, then the timed cold `get_call_audio`, its "
            "first-use work included; beside the later cold call of the same size, (b) above, and "
            f"curl in the same repetition.{compiled}",
            "",
            *_table(
                [
                    "size",
                    "curl ms",
                    "first call ms",
                    "first / curl",
                    "later call ms",
                    "later / curl",
                    "CPU s/GiB first / later",
                ],
                [
                    [
                        s.label,
                        s.milliseconds("curl").fmt(1),
                        s.milliseconds("first").fmt(1),
                        s.ratio_to_curl("first").fmt(2),
                        s.milliseconds("server").fmt(1),
                        s.ratio_to_curl("server").fmt(2),
                        f"{s.cpu_per_gib('first').fmt(2)} / {s.cpu_per_gib('server').fmt(2)}",
                    ]
                    for s in firsts
                ],
            ),
            "",
        ]
    return lines


def render(
    r: Results,
    machine: list[tuple[str, str]],
    command: str,
    repetitions: int,
    run_seconds: float,
    quick: bool,
    load: tuple[float, float] | None = None,
    cores: int = 1,
) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    warning: list[str] = []
    if load is not None and max(load) > BUSY_LOAD_PER_CORE * cores:
        warning = [
            f"> **Other work was running** (1-minute load {load[0]:.2f} at start, {load[1]:.2f} at end, on "
            f"{cores} cores): absolute figures and tail latencies are inflated and spread wider; the "
            "interleaved ratios are the figures to compare.",
            "",
        ]
    lines = [
        "# cte1-mcp benchmark" + (" (quick smoke run — not representative)" if quick else ""),
        "",
        f"`{command}` — {when}, {run_seconds:.0f} s. Every comparison was measured in this run, "
        f"interleaved (A B C, A B C, ...), {repetitions} repetitions unless stated; figures are "
        f"**median (min{DASH}max)**. Throughput is MB/s (10⁶ bytes/s), memory MiB.",
        "",
        *warning,
        "## Machine",
        "",
        *_table(["", ""], machine),
        "",
        "## Targets",
        "",
        *_table(
            ["target", "goal", "measured", ""], [[t.name, t.goal, t.measured, t.verdict] for t in targets(r)]
        ),
        "",
    ]
    if r.download:
        lines += _download_section(r.download, r.client_compile_seconds)
    if r.warm:
        w = r.warm
        rows = []
        busy_label = f"during a {r.warm_download_mib}+ MiB cold download"
        for which, label in (("idle", "idle"), ("busy", busy_label)):
            batches = getattr(w, which)
            n = sum(len(b.latencies) for b in batches)
            rows.append(
                [
                    label,
                    str(n),
                    f"{w.p(which, 50) * 1e3:.2f}",
                    f"{w.p(which, 95) * 1e3:.2f}",
                    f"{w.p(which, 99) * 1e3:.2f}",
                    Summary.of([b.calls_per_second for b in batches]).fmt(0),
                    w.per_batch_ms(which, 95).fmt(2, "ms"),
                ]
            )
        downloads = Summary.of([b.download_seconds or 0.0 for b in w.busy])
        lines += [
            "## 2. Warm path: get_call_metadata on a stored recording, over stdio",
            "",
            "Sequential calls, one in flight, after 50 warm-up calls; idle batches and busy batches "
            "interleaved. A busy batch runs while a cold download (a new key each repetition: "
            f"{r.warm_download_mib}, {r.warm_download_mib + 1}, … MiB) is in flight as a concurrent "
            "tool call on the same server; only calls that finished before the download count.",
            "",
            *_table(
                ["phase", "calls", "p50 ms", "p95 ms", "p99 ms", "calls/s per batch", "p95 per batch"], rows
            ),
            "",
            f"Busy p95 / idle p95 per repetition: {w.p95_ratio().fmt(2)}. "
            f"The concurrent downloads took {downloads.fmt(2, 's')}.",
            "",
        ]
    if r.economy:
        e = r.economy
        s = e.spacing
        lines += [
            "## 3. Economy (upstream requests counted in the simulator's own request log)",
            "",
            *_table(
                ["cold key", "concurrent identical calls", "upstream requests", "distinct sha256"],
                [
                    [f"{f.mib} MiB", str(f.callers), str(f.upstream_requests), str(f.distinct_sha256)]
                    for f in e.single_flight
                ],
            ),
            "",
            f"{s.keys} distinct cold keys requested at once with "
            f"**CTE1_MIN_INTERVAL_SECONDS={s.interval:g}** "
            "(not the default 5, to keep the run short): start-to-start gaps between upstream requests "
            f"{Summary.of(s.gaps).fmt(3, 's')}, smallest **{s.smallest_gap:.3f} s** against the "
            f"{s.interval:g} s interval; all {s.keys} answered in **{s.total_seconds:.2f} s** against "
            f"(n {MINUS} 1) {TIMES} interval = {s.floor_seconds:g} s.",
            "",
        ]
    if r.startup:
        st = r.startup
        lines += [
            "## 4. Start-up",
            "",
            f"From spawning `.venv/bin/cte1-mcp` (initialize request already in its stdin) to the "
            f"`initialize` result, {len(st.server)} runs: **{st.summary().fmt(3, 's')}**; the bare "
            f"interpreter (`python -c pass`, interleaved): {Summary.of(st.interpreter).fmt(3, 's')}.",
            "",
        ]
    if r.store_size:
        sz = r.store_size
        lines += [
            "## 5. Store size",
            "",
            "The same server with 0, 1,000 and 10,000 small recordings stored (filled through the "
            f"repository API on {sz.filled_on}; fill time in the last column), interleaved: spawn to "
            "tools listed, the server's first `resources/list` walk over stdio (its first page waits "
            "for the start-up sweep to index the store), then another walk (from the index): its "
            "first page and all its pages (two resources per recording), then a cold 1 MiB "
            "`get_call_audio` from the simulator (its commit is what used to walk the store). In the "
            "benchmark's own process, the repository's share, once per store: its index-building walk "
            "(the first sweep, which no longer delays start-up) and a listing from the index. "
            f"{len(sz.samples[STORE_SIZES[0]])} starts per size.",
            "",
            *_table(
                [
                    "stored",
                    "index walk ms",
                    "repository list ms",
                    "start-up s",
                    "first page, first walk ms",
                    "first walk ms",
                    "first page ms",
                    "walk ms",
                    "pages",
                    "resources listed",
                    "cold get_call_audio ms",
                    "fill s",
                ],
                [
                    [
                        f"{stored:,}",
                        f"{sz.index_seconds[stored] * 1e3:.0f}",
                        f"{sz.repository_list_seconds[stored] * 1e3:.1f}",
                        sz.summary(stored, "start_seconds").fmt(2),
                        Summary.of([s.first_page_cold_seconds * 1e3 for s in sz.samples[stored]]).fmt(0),
                        Summary.of([s.first_walk_seconds * 1e3 for s in sz.samples[stored]]).fmt(0),
                        Summary.of([s.first_page_seconds * 1e3 for s in sz.samples[stored]]).fmt(0),
                        Summary.of([s.walk_seconds * 1e3 for s in sz.samples[stored]]).fmt(0),
                        str(sz.samples[stored][0].pages),
                        str(sz.samples[stored][0].listed),
                        Summary.of([s.cold_seconds * 1e3 for s in sz.samples[stored]]).fmt(0),
                        f"{sz.fill_seconds[stored]:.1f}",
                    ]
                    for stored in STORE_SIZES
                ],
            ),
            "",
        ]
    if r.coordination:
        c = r.coordination
        lines += [
            "## 6. Coordination (one platform limit across processes)",
            "",
            "Every process asks for every key at once; the servers share one cache directory (lock "
            "files) or one Redis; the simulator answers 429 to any request closer than the interval "
            f"and logs arrivals. Interval {c.fleets[0].interval:g} s (servers add their "
            f"{SPACING_MARGIN_SECONDS:g} s margin). A fresh Redis knows no schedule, so its first "
            "start waits one spacing too (another server may just have made a request).",
            "",
            *_table(
                [
                    "backend",
                    f"processes {TIMES} keys",
                    "upstream requests",
                    "refused",
                    "smallest gap s",
                    "total s",
                    f"(n {MINUS} 1) {TIMES} interval s",
                    f"(n {MINUS} 1) {TIMES} (interval + margin) s",
                ],
                [
                    [
                        f.backend,
                        f"{f.processes} {TIMES} {f.keys}",
                        str(len(f.arrivals)),
                        str(f.refused),
                        f"{f.smallest_gap:.3f}",
                        f"{f.total_seconds:.2f}",
                        f"{f.floor_seconds:g}",
                        f"{(f.keys - 1) * spacing(f.interval):g}",
                    ]
                    for f in c.fleets
                ],
            ),
            "",
            f"Overheads, median (min{DASH}max) over repetitions: one slot reservation that needs no wait and "
            "one claim taken and released, in process; the p50 of a warm `get_call_metadata` over "
            "stdio (a stored recording: coordination is not consulted).",
            "",
            *_table(
                ["backend", "slot reservation µs", "claim + release µs", "warm call p50 ms"],
                [
                    [
                        backend,
                        c.reservation_us[backend].fmt(1),
                        c.claim_us[backend].fmt(1),
                        c.warm_ms[backend].fmt(2) if backend in c.warm_ms else "n/a (not a server option)",
                    ]
                    for backend in BACKENDS
                ],
            ),
            "",
        ]
    if r.analysis:
        lines += analysis_section(r.analysis)
    if r.transcription:
        lines += transcription_section(r.transcription)
    return "\n".join(lines)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
