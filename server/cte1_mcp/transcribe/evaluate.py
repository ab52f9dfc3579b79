"""``cte1-mcp asr eval DIR``: the configured model on a contact centre's own calls, scored.

A folder holds recordings and, beside each, its reference transcript (``NAME.json`` or
``NAME.tsv``). Each recording goes through what the server itself runs (``analyse``, then
``transcribe_file``), and each party's text is scored with ``cer.py`` against the reference:
per call and party, and pooled (edit distances summed over reference characters, so a long call
weighs what it holds). A recording that cannot be scored is reported on a line of its own; the
others are still evaluated.

Reference formats:

- ``NAME.json``: a list of ``{"channel": 0 | 1 | null, "role": "...", "text": "...",
  "startMs": .., "endMs": ..}`` (``role``, ``startMs``, ``endMs`` optional), or an object with a
  ``sentenceList`` as get_call_transcript gives it (``channel``, ``speaker``) or as CT-e1 pushes it
  (``speakerId`` 1 customer, 2 agent; mapped to channels with the channel roles);
- ``NAME.tsv``: ``channel<TAB>text`` lines, channel ``0``, ``1`` or ``-`` (mono); blank lines and
  lines starting with ``#`` are skipped.

A party's reference is its sentences in start order (file order where times are missing); on a
mono recording every sentence is one party, ``mixed``. A party whose reference has no character
left after normalisation (only punctuation, an empty list, or on a two-channel recording only
``-``/``null`` sentences) cannot have a CER: it is reported as a problem and left out of the totals.
On a two-channel recording, a ``-``/``null`` sentence beside sentences that name their channel
belongs to no party: the call is not scored, with a line naming it.
Suffixes are compared case-insensitively (``NAME.TSV`` is TSV); one reference per recording.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cte1_mcp.audio.analytics import analyse
from cte1_mcp.errors import Cte1Error, InvalidParameter, TranscriptionFailed, UnsupportedAudio
from cte1_mcp.transcribe.base import EngineFailed, EngineMarked, ModelUnusable, Transcriber
from cte1_mcp.transcribe.cer import edit_distance, normalise
from cte1_mcp.transcribe.pipeline import transcribe_file
from cte1_mcp.transcribe.pushed import speaker_label

REFERENCE_SUFFIXES = (".json", ".tsv")
#: Files in the folder that are neither recordings nor references (notes, listings).
IGNORED_SUFFIXES = (".txt", ".md", ".csv")
#: A reference file larger than this is refused (a transcript of hours is far smaller).
MAX_REFERENCE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RefSentence:
    channel: int | None
    text: str
    start_ms: float | None
    role: str | None = None
    #: Where it is in its file (``line 3``, ``sentence 2``), for a problem line.
    where: str = ""


@dataclass(slots=True)
class PartyScore:
    party: str
    channel: int | None
    #: Normalised characters of the reference, and the edit distance to the hypothesis.
    reference_chars: int
    errors: int
    reference: str
    hypothesis: str

    @property
    def cer(self) -> float:
        return self.errors / max(self.reference_chars, 1)


@dataclass(slots=True)
class CallScore:
    name: str
    audio_seconds: float
    #: Wall time of the analysis and the transcription.
    seconds: float
    parties: list[PartyScore]

    @property
    def rtf(self) -> float:
        return self.seconds / self.audio_seconds if self.audio_seconds else 0.0

    @property
    def reference_chars(self) -> int:
        return sum(p.reference_chars for p in self.parties)

    @property
    def errors(self) -> int:
        return sum(p.errors for p in self.parties)

    @property
    def cer(self) -> float:
        return self.errors / max(self.reference_chars, 1)


@dataclass(slots=True)
class Evaluation:
    model: str
    engine: str
    load_seconds: float
    calls: list[CallScore] = field(default_factory=list)
    #: One line per file that could not be scored: ``[code] what and why``.
    problems: list[str] = field(default_factory=list)

    @property
    def reference_chars(self) -> int:
        return sum(c.reference_chars for c in self.calls)

    @property
    def errors(self) -> int:
        return sum(c.errors for c in self.calls)

    @property
    def cer(self) -> float:
        return self.errors / max(self.reference_chars, 1)

    @property
    def audio_seconds(self) -> float:
        return sum(c.audio_seconds for c in self.calls)

    @property
    def seconds(self) -> float:
        return sum(c.seconds for c in self.calls)

    @property
    def rtf(self) -> float:
        return self.seconds / self.audio_seconds if self.audio_seconds else 0.0

    def by_party(self) -> dict[str, tuple[int, int]]:
        """Pooled over calls: party label -> (errors, reference characters)."""
        pooled: dict[str, tuple[int, int]] = {}
        for call in self.calls:
            for p in call.parties:
                errors, chars = pooled.get(p.party, (0, 0))
                pooled[p.party] = (errors + p.errors, chars + p.reference_chars)
        return pooled


# --- references --------------------------------------------------------------------------------


def read_reference(path: Path, roles: tuple[str, ...]) -> list[RefSentence]:
    """The sentences of one reference file. Raises ``InvalidParameter`` naming the file and the line
    or sentence at fault."""
    try:
        if path.stat().st_size > MAX_REFERENCE_BYTES:
            raise InvalidParameter(f"{path.name} is larger than {MAX_REFERENCE_BYTES >> 20} MiB")
        text = path.read_text(encoding="utf-8-sig")
    except (UnicodeDecodeError, OSError) as exc:
        raise InvalidParameter(f"{path.name} cannot be read as UTF-8 text: {exc}") from None
    if path.suffix.lower() == ".tsv":
        return _tsv(path.name, text)
    try:
        data = json.loads(text)
    except ValueError as exc:  # JSONDecodeError, and an integer past Python's 4,300-digit limit
        raise InvalidParameter(f"{path.name} is not JSON: {exc}") from None
    except RecursionError:  # the parser recurses per level: a hostile file would abort the whole run
        raise InvalidParameter(f"{path.name} is nested too deeply to be a reference") from None
    if isinstance(data, dict) and "transcript" in data and isinstance(data["transcript"], dict):
        data = data["transcript"]  # get_call_transcript's structuredContent as saved
    if isinstance(data, dict) and isinstance(data.get("sentenceList"), list):
        items = data["sentenceList"]
    elif isinstance(data, list):
        items = data
    else:
        raise InvalidParameter(f"{path.name}: expected a list of sentences or an object with a sentenceList")
    return [_sentence(path.name, index, item, roles) for index, item in enumerate(items, start=1)]


def _tsv(name: str, text: str) -> list[RefSentence]:
    """Lines end at \\n, \\r\\n or \\r only: ``str.splitlines`` would also split at U+2028, U+0085 or
    a form feed inside a text, and a problem would then name the wrong line."""
    sentences = []
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.startswith("#"):
            continue
        channel, tab, said = line.partition("\t")
        if not tab or channel.strip() not in ("0", "1", "-"):
            raise InvalidParameter(
                f"{name} line {number}: expected 'channel<TAB>text' with channel 0, 1 or -"
            )
        sentences.append(
            RefSentence(
                None if channel.strip() == "-" else int(channel), said.strip(), None, where=f"line {number}"
            )
        )
    return sentences


def _sentence(name: str, index: int, item: Any, roles: tuple[str, ...]) -> RefSentence:
    where = f"{name} sentence {index}"
    if not isinstance(item, dict) or not isinstance(item.get("text"), str):
        raise InvalidParameter(f"{where}: expected an object with a 'text' string")
    role = item.get("role", item.get("speaker"))
    if role is None and isinstance(item.get("speakerId"), int) and not isinstance(item["speakerId"], bool):
        role = speaker_label(item["speakerId"])
    if role is not None and not isinstance(role, str):
        raise InvalidParameter(f"{where}: 'role' must be a string")
    if "channel" in item:
        channel = item["channel"]
        if channel not in (0, 1, None) or isinstance(channel, bool):
            raise InvalidParameter(f"{where}: 'channel' must be 0, 1 or null")
    elif role is not None and role in roles:
        channel = roles.index(role)
    else:
        raise InvalidParameter(
            f"{where} has no 'channel'"
            + (f" and its role {role!r} is not one of the channel roles {list(roles)}" if role else "")
            + "; give each sentence a channel, or the channel roles (--roles customer,agent, channel 0 first)"
        )
    start = item.get("startMs", item.get("startOffsetMs"))
    if start is not None and (
        not isinstance(start, int | float) or isinstance(start, bool) or not math.isfinite(start)
    ):  # json.loads takes NaN and Infinity, which would sort the sentences anyhow
        raise InvalidParameter(f"{where}: 'startMs' must be a number of milliseconds")
    return RefSentence(channel, item["text"], start, role, where=f"sentence {index}")


def reference_parties(
    sentences: list[RefSentence], channels: int, labels: list[str]
) -> dict[int | None, tuple[str, str]]:
    """Channel (None for mono) -> (party label, its reference text in start order)."""
    timed = all(s.start_ms is not None for s in sentences)
    ordered = sorted(sentences, key=lambda s: s.start_ms or 0.0) if timed else sentences
    if channels == 1:
        return {None: ("mixed", "".join(s.text for s in ordered))}
    parties: dict[int | None, tuple[str, str]] = {}
    for channel in (0, 1):
        mine = [s for s in ordered if s.channel == channel]
        role = next((s.role for s in mine if s.role), None)
        parties[channel] = (role or labels[channel], "".join(s.text for s in mine))
    return parties


# --- the folder ----------------------------------------------------------------------------------


def recordings_in(folder: Path) -> tuple[list[tuple[Path, Path | None]], list[str]]:
    """(recording, its reference or None) in name order, and a line for each reference without a
    recording and for each recording with more than one (which one is right is the user's call)."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    references: dict[str, list[Path]] = {}
    for p in files:
        if p.suffix.lower() in REFERENCE_SUFFIXES:
            references.setdefault(p.stem, []).append(p)
    recordings = [p for p in files if p.suffix.lower() not in REFERENCE_SUFFIXES + IGNORED_SUFFIXES]
    recorded = {p.stem for p in recordings}
    problems = [
        f"[invalid_parameter] {found[0].name} has no recording beside it (a file named {stem}.<audio format>)"
        for stem, found in sorted(references.items())
        if stem not in recorded and len(found) == 1
    ]
    pairs: list[tuple[Path, Path | None]] = []
    for p in recordings:
        found = references.get(p.stem, [])
        if len(found) > 1:
            problems.append(
                f"[invalid_parameter] {p.name} has {len(found)} references ({', '.join(f.name for f in found)}): "
                "keep one"
            )
            continue
        pairs.append((p, found[0] if found else None))
    return pairs, problems


def evaluate_call(
    recording: Path,
    reference: Path,
    transcriber: Transcriber,
    *,
    language: str,
    roles: tuple[str, ...],
    problems: list[str] | None = None,
) -> CallScore:
    """One recording through the server's pipeline, each party scored. Raises a ``Cte1Error``;
    a party with nothing to score is left out with a line in ``problems``."""
    sentences = read_reference(reference, roles)
    started = time.perf_counter()
    try:
        with recording.open("rb") as file:
            analysis = analyse(file, roles)
            # dual mono is scored as mono (its party, "mixed", says so): the transcript has one
            # party, whatever channels the reference names
            channels = 1 if analysis.dualMono else analysis.channels
            _check_channels(reference.name, sentences, channels)
            file.seek(0)
            try:
                heard = transcribe_file(file, analysis, EngineMarked(transcriber), language=language)
            except ModelUnusable as exc:
                raise TranscriptionFailed(f"the engine failed on {recording.name}: {exc}") from None
            except EngineFailed as exc:  # the engine's fault on this file (CUDA out of memory), as served
                cause = str(exc.__cause__).strip().splitlines()[0][:200] if str(exc.__cause__).strip() else ""
                raise TranscriptionFailed(
                    f"the engine failed on {recording.name} ({type(exc.__cause__).__name__}: {cause})"
                ) from None
    except OSError as exc:  # permissions, an I/O error: this recording's problem, not the run's
        raise InvalidParameter(f"{recording.name} cannot be read ({exc.strerror or exc})") from None
    seconds = time.perf_counter() - started
    labels = _labels(channels, roles)
    parties = []
    empty = []
    for channel, (party, reference_text) in reference_parties(sentences, channels, labels).items():
        hypothesis = "".join(h.text for h in sorted(heard, key=lambda h: h.start) if h.channel == channel)
        ref = normalise(reference_text)
        if not ref:  # a CER needs reference characters: errors / 0 is no rate
            empty.append(party)
            continue
        parties.append(
            PartyScore(
                party,
                channel,
                len(ref),
                edit_distance(ref, normalise(hypothesis)),
                reference_text,
                hypothesis,
            )
        )
    if empty:
        unchanneled = channels == 2 and any(s.channel is None for s in sentences)
        why = (
            "its sentences without a channel ('-' or null) belong to no party of a two-channel recording"
            if unchanneled
            else "it has no letters or digits (only punctuation, spaces, or no sentence)"
        )
        line = f"[invalid_parameter] {recording.name}: the reference of {' and '.join(empty)} has nothing to score ({why})"
        if not parties:
            raise InvalidParameter(f"{line.removeprefix('[invalid_parameter] ')}; not scored")
        if problems is not None:
            problems.append(f"{line}; that party is left out of the totals")
    return CallScore(recording.name, analysis.durationSeconds, seconds, parties)


def _check_channels(name: str, sentences: list[RefSentence], channels: int) -> None:
    """On a two-channel recording a sentence without a channel belongs to no party: where the others
    name theirs it is a mislabelled line, and leaving it out would silently shrink the reference."""
    if channels != 2 or all(s.channel is None for s in sentences):
        return  # all unlabelled: reported as nothing to score, per party
    unlabelled = [s.where for s in sentences if s.channel is None]
    if unlabelled:
        shown = ", ".join(unlabelled[:3]) + (
            f" and {len(unlabelled) - 3} more" if len(unlabelled) > 3 else ""
        )
        raise InvalidParameter(
            f"{name}: no channel ('-' or null) on {shown}, but the recording has two channels and "
            "the other sentences name theirs: give each 0 or 1; not scored"
        )


def _labels(channels: int, roles: tuple[str, ...]) -> list[str]:
    if channels == 1:
        return ["mixed"]
    return list(roles) if len(roles) == 2 else ["channel 0", "channel 1"]


def evaluate_folder(
    folder: Path,
    transcriber: Transcriber,
    *,
    model: str,
    engine: str,
    load_seconds: float,
    language: str,
    roles: tuple[str, ...] = (),
    on_call: Callable[[str], None] | None = None,
) -> Evaluation:
    """Every recording of ``folder`` with a reference, scored; every other file, a problem line."""
    result = Evaluation(model, engine, load_seconds)
    pairs, result.problems = recordings_in(folder)
    for recording, reference in pairs:
        if reference is None:
            result.problems.append(
                f"[invalid_parameter] {recording.name} has no reference: put {recording.stem}.json or "
                f"{recording.stem}.tsv beside it"
            )
            continue
        if on_call is not None:
            on_call(recording.name)
        try:
            result.calls.append(
                evaluate_call(
                    recording,
                    reference,
                    transcriber,
                    language=language,
                    roles=roles,
                    problems=result.problems,
                )
            )
        except UnsupportedAudio as exc:
            result.problems.append(f"[{exc.code}] {recording.name}: {exc.message}")
        except Cte1Error as exc:
            result.problems.append(f"[{exc.code}] {exc.message}")
        except Exception as exc:
            # A fault of this code, not of the file: named (no traceback) and counted as a problem
            # (exit 1), and the other recordings are still scored.
            result.problems.append(
                f"[internal_error] {recording.name}: evaluating it failed unexpectedly "
                f"({type(exc).__name__}: {str(exc)[:200]}); not scored. This is a fault of cte1-mcp's: "
                "please report it."
            )
    return result


# --- output --------------------------------------------------------------------------------------


def rows(result: Evaluation) -> Iterator[tuple[str, ...]]:
    yield ("CALL", "PARTY", "REF CHARS", "ERRORS", "CER", "AUDIO S", "WALL S", "RTF")
    for call in result.calls:
        for p in call.parties:
            yield (call.name, p.party, str(p.reference_chars), str(p.errors), _pct(p.cer), "", "", "")
        yield (
            call.name,
            "all",
            str(call.reference_chars),
            str(call.errors),
            _pct(call.cer),
            f"{call.audio_seconds:.1f}",
            f"{call.seconds:.1f}",
            f"{call.rtf:.3f}",
        )
    for party, (errors, chars) in result.by_party().items():
        yield ("TOTAL", party, str(chars), str(errors), _pct(errors / max(chars, 1)), "", "", "")
    yield (
        "TOTAL",
        "all",
        str(result.reference_chars),
        str(result.errors),
        _pct(result.cer),
        f"{result.audio_seconds:.1f}",
        f"{result.seconds:.1f}",
        f"{result.rtf:.3f}",
    )


def _pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def table(result: Evaluation) -> str:
    """The plain-text report: the table, then the model, its load time, and the problems."""
    lines = []
    if result.calls:
        cells = list(rows(result))
        widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
        for row in cells:
            lines.append(
                "  ".join(
                    cell.ljust(width) if i < 2 else cell.rjust(width)
                    for i, (cell, width) in enumerate(zip(row, widths, strict=True))
                ).rstrip()
            )
        lines.append("")
    lines.append(
        f"model: {result.model} ({result.engine}), loaded in {result.load_seconds:.2f} s; "
        f"{len(result.calls)} recording(s) evaluated"
    )
    lines += result.problems
    return "\n".join(lines)


def as_json(result: Evaluation) -> dict[str, Any]:
    """The machine form: everything the table shows, with each party's reference and hypothesis."""
    return {
        "model": result.model,
        "engine": result.engine,
        "loadSeconds": round(result.load_seconds, 3),
        "calls": [
            {
                "name": c.name,
                "audioSeconds": c.audio_seconds,
                "seconds": round(c.seconds, 3),
                "rtf": round(c.rtf, 4),
                "referenceChars": c.reference_chars,
                "errors": c.errors,
                "cer": c.cer,
                "parties": [{**_party(p), "cer": p.cer} for p in c.parties],
            }
            for c in result.calls
        ],
        "parties": {
            party: {"referenceChars": chars, "errors": errors, "cer": errors / max(chars, 1)}
            for party, (errors, chars) in result.by_party().items()
        },
        "total": {
            "referenceChars": result.reference_chars,
            "errors": result.errors,
            "cer": result.cer,
            "audioSeconds": result.audio_seconds,
            "seconds": round(result.seconds, 3),
            "rtf": round(result.rtf, 4),
        },
        "problems": result.problems,
    }


def _party(p: PartyScore) -> dict[str, Any]:
    raw = asdict(p)
    return {
        "party": raw["party"],
        "channel": raw["channel"],
        "referenceChars": raw["reference_chars"],
        "errors": raw["errors"],
        "reference": raw["reference"],
        "hypothesis": raw["hypothesis"],
    }
