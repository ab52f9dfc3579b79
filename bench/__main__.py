"""``python -m bench [--quick] [--sizes 8,64,256] [--reps 3] [--parts …] [--output FILE]``."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import anyio

from bench import (
    analysis,
    coordination,
    download,
    economy,
    machine,
    report,
    startup,
    store_size,
    transcription,
    warm,
)
from bench.interleave import MIN_REPETITIONS
from bench.simproc import simulator_process

RESULTS = Path(__file__).parent / "results"
PARTS = ("download", "warm", "economy", "startup", "store_size", "coordination", "analysis", "transcription")
#: Five, not the minimum three: on a shared 2-core machine the spread between runs is wide.
DEFAULT_REPETITIONS = 5


@dataclass(frozen=True, slots=True)
class Plan:
    sizes: list[int]
    repetitions: int
    warm_calls: int
    warm_download_mib: int
    callers: int
    single_flight_sizes: list[int]
    spacing_keys: int
    spacing_interval: float
    startup_runs: int
    #: Processes x distinct keys sharing one limit, and that (short) interval: see bench/coordination.py.
    coordination_processes: int
    coordination_keys: int
    coordination_interval: float
    parts: tuple[str, ...]
    output: Path
    quick: bool
    #: The kinds of upstream the download path is measured against (bench.download.UPSTREAMS).
    upstreams: tuple[str, ...] = download.UPSTREAMS


def sizes_arg(text: str) -> list[int]:
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes are whole MiB, comma-separated: {text!r}") from None
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError("sizes must be at least 1 MiB")
    return sizes


def parts_arg(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    unknown = set(parts) - set(PARTS)
    if unknown or not parts:
        raise argparse.ArgumentTypeError(f"parts are some of {', '.join(PARTS)}")
    return parts


def upstreams_arg(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    if not kinds or set(kinds) - set(download.UPSTREAMS):
        raise argparse.ArgumentTypeError(f"upstreams are some of {', '.join(download.UPSTREAMS)}")
    return kinds


def parse(argv: list[str]) -> Plan:
    parser = argparse.ArgumentParser(prog="python -m bench", description="The cte1-mcp benchmark.")
    parser.add_argument("--quick", action="store_true", help="small sizes, fewer calls: a smoke test")
    parser.add_argument("--sizes", type=sizes_arg, help="recording sizes in MiB [8,64,256; quick: 1,8]")
    parser.add_argument(
        "--reps", type=int, help=f"repetitions, at least {MIN_REPETITIONS} [{DEFAULT_REPETITIONS}; quick: 3]"
    )
    parser.add_argument("--parts", type=parts_arg, default=PARTS, help=f"some of {','.join(PARTS)} [all]")
    parser.add_argument(
        "--upstreams",
        type=upstreams_arg,
        default=download.UPSTREAMS,
        help=f"the download path's upstreams, some of {','.join(download.UPSTREAMS)} [all]",
    )
    parser.add_argument(
        "--output", type=Path, help="report file [bench/results/latest.md; quick: bench/results/quick.md]"
    )
    args = parser.parse_args(argv)
    quick: bool = args.quick
    repetitions: int = (
        args.reps if args.reps is not None else MIN_REPETITIONS if quick else DEFAULT_REPETITIONS
    )
    if repetitions < MIN_REPETITIONS:
        parser.error(f"--reps must be at least {MIN_REPETITIONS}")
    return Plan(
        sizes=args.sizes or ([1, 8] if quick else [8, 64, 256]),
        repetitions=repetitions,
        warm_calls=200 if quick else 1000,
        warm_download_mib=32 if quick else 256,
        callers=50,
        single_flight_sizes=[2, 3, 4] if quick else [8, 9, 10],
        spacing_keys=4 if quick else 10,
        spacing_interval=1.0,
        startup_runs=3 if quick else 10,
        coordination_processes=2 if quick else 4,
        coordination_keys=4 if quick else 10,
        coordination_interval=0.5,
        parts=args.parts,
        output=args.output or RESULTS / ("quick.md" if quick else "latest.md"),
        quick=quick,
        upstreams=args.upstreams,
    )


async def run(plan: Plan, workdir: Path) -> report.Results:
    say = sys.stdout
    errlog = (workdir / "server-stderr.log").open("w")
    simlog = (workdir / "simulator.log").open("wb")
    downloads = warmed = economised = started = None
    compile_seconds = None
    try:
        if "download" in plan.parts or "warm" in plan.parts:
            with simulator_process(simlog) as upstream:
                if "download" in plan.parts:
                    print(f"1. download path: {plan.sizes} MiB x {plan.repetitions}", file=say, flush=True)
                    downloads, compile_seconds = await download.run(
                        upstream, plan.sizes, plan.repetitions, workdir, errlog, say, plan.upstreams
                    )
                if "warm" in plan.parts:
                    print(f"2. warm path: {plan.warm_calls} calls x {plan.repetitions}", file=say, flush=True)
                    warmed = await warm.run(
                        upstream,
                        plan.repetitions,
                        plan.warm_calls,
                        plan.warm_download_mib,
                        workdir,
                        errlog,
                        say,
                    )
        if "economy" in plan.parts:
            print("3. economy", file=say, flush=True)
            economised = await economy.run(
                plan.callers,
                plan.single_flight_sizes,
                plan.spacing_keys,
                plan.spacing_interval,
                workdir,
                errlog,
            )
        if "startup" in plan.parts:
            print(f"4. start-up x {plan.startup_runs}", file=say, flush=True)
            with simulator_process(simlog) as upstream:
                started = await startup.run(upstream, plan.startup_runs, workdir, simlog)
        sized = None
        if "store_size" in plan.parts:
            print(f"5. store size: {store_size.STORE_SIZES} stored x {MIN_REPETITIONS}", file=say, flush=True)
            with simulator_process(simlog) as upstream:
                sized = await store_size.run(upstream, MIN_REPETITIONS, workdir, errlog, say)
        coordinated = None
        if "coordination" in plan.parts:
            print(
                f"6. coordination: {plan.coordination_processes} processes x {plan.coordination_keys} keys",
                file=say,
                flush=True,
            )
            coordinated = await coordination.run(
                plan.coordination_processes,
                plan.coordination_keys,
                plan.coordination_interval,
                MIN_REPETITIONS,
                errlog,
                say,
            )
        analysed = None
        if "analysis" in plan.parts:
            print(f"7. call analytics: 5 and 30 min x {plan.repetitions}, corpus", file=say, flush=True)
            with simulator_process(simlog) as upstream:
                analysed = await analysis.run(upstream, plan.repetitions, workdir, say)
        transcribed = None
        if "transcription" in plan.parts:
            print(
                f"8. transcripts: ours vs faster-whisper's own VAD, corpus + 5-min call "
                f"x {transcription.FIVE_MINUTE_REPETITIONS}",
                file=say,
                flush=True,
            )
            transcribed = await transcription.run(workdir, errlog, say, quick=plan.quick)
    finally:
        errlog.close()
        simlog.close()
    return report.Results(
        downloads,
        warmed,
        plan.warm_download_mib,
        economised,
        started,
        store_size=sized,
        coordination=coordinated,
        analysis=analysed,
        transcription=transcribed,
        client_compile_seconds=compile_seconds,
    )


def main(argv: list[str] | None = None) -> int:
    plan = parse(sys.argv[1:] if argv is None else argv)
    workdir = Path(tempfile.mkdtemp(prefix="cte1-bench-"))
    load_before = os.getloadavg()[0]
    began = time.perf_counter()
    try:
        results = anyio.run(run, plan, workdir)
    except BaseException:
        print(f"bench: failed; logs kept in {workdir}", file=sys.stderr)
        raise
    elapsed = time.perf_counter() - began
    command = "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv)
    load = (load_before, os.getloadavg()[0])
    cores = os.cpu_count() or 1
    rows = [
        *machine.describe(),
        ("load average (1 min)", f"{load[0]:.2f} at start, {load[1]:.2f} at end ({cores} cores)"),
    ]
    text = report.render(results, rows, command.strip(), plan.repetitions, elapsed, plan.quick, load, cores)
    report.write(plan.output, text)
    shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(text)
    print(f"bench: wrote {plan.output} in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
