"""``cte1-mcp asr eval`` on a folder where most files cannot be scored, as a user runs it (a real
subprocess, the real sherpa-onnx engine with the tiny test transducer): every such file is a line
of its own saying why, the others are scored, and nothing unscorable reaches the totals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf

from cte1_mcp.transcribe.base import EngineInfo, Recognised
from cte1_mcp.transcribe.evaluate import evaluate_folder
from tests.helpers import tiny_transducer


def recording(path: Path, channels: int, seconds: float = 3.0, rate: int = 8000) -> None:
    """Bursts of noise, the two channels taking turns: talk the analyser finds."""
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(7).standard_normal((len(t), channels)) * 0.1
    for channel in range(channels):
        noise[:, channel] *= ((t % 1.0) < 0.5) if channel == 0 else ((t % 1.0) >= 0.5)
    sf.write(path, noise, rate, subtype="PCM_16")


def run_eval(folder: Path, model: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTE1_")}
    env.update(CTE1_ASR_MODELS_DIR=str(tmp_path / "no-models"), CTE1_ASR_THREADS="1")
    command = [sys.executable, "-m", "cte1_mcp", "asr", "eval", str(folder), "--model", str(model), "--json"]
    if os.geteuid() == 0 and shutil.which("setpriv"):  # root reads a mode-000 file; a user does not
        command = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *command]
    return subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
    )


@pytest.fixture
def scored(tmp_path: Path) -> tuple[dict[str, Any], subprocess.CompletedProcess[str]]:
    model = tiny_transducer.build(tmp_path / "tiny").directory
    folder = tmp_path / "calls"
    folder.mkdir()
    references = {
        "ok.wav": (1, "ok.tsv", "-\tこんにちは\n"),
        "upper.wav": (1, "upper.TSV", "-\tもしもし\n"),  # before: read as JSON, "is not JSON"
        "unreadable.wav": (1, "unreadable.tsv", "-\tはい\n"),  # before: a traceback ended the run
        "dash.wav": (2, "dash.tsv", "-\tこんにちは\n-\tはい\n"),  # before: 2 parties scored 0/0
        "empty.wav": (1, "empty.json", "[]"),
        "punct.wav": (1, "punct.tsv", "-\t。、！\n-\t…\n"),
        "half.wav": (2, "half.tsv", "0\tこんにちは\n1\t。\n"),  # party 1 left out, party 0 scored
        "deep.wav": (1, "deep.json", "[" * 100_000 + "]" * 100_000),  # before: RecursionError
        "both.wav": (1, "both.json", '[{"channel": null, "text": "あいう"}]'),
    }
    for name, (channels, reference, content) in references.items():
        recording(folder / name, channels)
        (folder / reference).write_text(content, encoding="utf-8")
    (folder / "both.tsv").write_text("-\tかきく\n", encoding="utf-8")  # before: one silently picked
    (folder / "unreadable.wav").chmod(0)
    done = run_eval(folder, model, tmp_path)
    return json.loads(done.stdout), done


def test_each_unscorable_file_is_a_line_and_stays_out_of_the_totals(
    scored: tuple[dict[str, Any], subprocess.CompletedProcess[str]],
) -> None:
    result, done = scored
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert sorted(c["name"] for c in result["calls"]) == ["half.wav", "ok.wav", "upper.wav"]
    half = next(c for c in result["calls"] if c["name"] == "half.wav")
    assert [p["channel"] for p in half["parties"]] == [0]
    # every scored party has reference characters; the totals are theirs alone
    parties = [p for c in result["calls"] for p in c["parties"]]
    assert all(p["referenceChars"] > 0 for p in parties)
    assert result["total"]["referenceChars"] == sum(p["referenceChars"] for p in parties)
    assert result["total"]["errors"] == sum(p["errors"] for p in parties)
    assert "channel 1" not in result["parties"]
    problems = result["problems"]
    expected = {
        "unreadable.wav": "[invalid_parameter] unreadable.wav cannot be read (Permission denied)",
        "dash.wav": "[invalid_parameter] dash.wav: the reference of channel 0 and channel 1 has nothing to score "
        "(its sentences without a channel ('-' or null) belong to no party of a two-channel recording)",
        "empty.wav": "[invalid_parameter] empty.wav: the reference of mixed has nothing to score",
        "punct.wav": "[invalid_parameter] punct.wav: the reference of mixed has nothing to score",
        "half.wav": "[invalid_parameter] half.wav: the reference of channel 1 has nothing to score",
        "deep.json": "[invalid_parameter] deep.json is nested too deeply to be a reference",
        "both.wav": "[invalid_parameter] both.wav has 2 references (both.json, both.tsv): keep one",
    }
    for name, line in expected.items():
        assert any(p.startswith(line) for p in problems), (name, problems)
    assert len(problems) == len(expected), problems


def folder_of(tmp_path: Path, references: dict[str, tuple[int, str, str]]) -> Path:
    folder = tmp_path / "calls"
    folder.mkdir()
    for name, (channels, reference, content) in references.items():
        recording(folder / name, channels)
        (folder / reference).write_text(content, encoding="utf-8")
    return folder


def test_a_json_integer_past_pythons_digit_limit_is_that_files_line(tmp_path: Path) -> None:
    # Before: json.loads's plain ValueError (not a JSONDecodeError) ended the whole run with a
    # traceback, and no recording was scored.
    huge = "1" * 5000
    folder = folder_of(
        tmp_path,
        {
            "ok.wav": (1, "ok.tsv", "-\tこんにちは\n"),
            "bigint.wav": (1, "bigint.json", f'[{{"channel": null, "text": "あいう", "startMs": {huge}}}]'),
        },
    )
    done = run_eval(folder, tiny_transducer.build(tmp_path / "tiny").directory, tmp_path)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    result = json.loads(done.stdout)
    assert [c["name"] for c in result["calls"]] == ["ok.wav"]
    [problem] = result["problems"]
    assert problem.startswith("[invalid_parameter] bigint.json is not JSON: Exceeds the limit"), problem


def test_a_line_without_channel_among_channelled_lines_is_a_problem_not_dropped(tmp_path: Path) -> None:
    # Before: on a two-channel recording the '-' line was silently left out of both parties, and
    # the call was scored against the shrunken reference.
    folder = folder_of(
        tmp_path,
        {
            "ok.wav": (2, "ok.tsv", "0\tこんにちは\n1\tもしもし\n"),
            "mixed.wav": (2, "mixed.tsv", "0\tこんにちは\n-\tはい\n1\tもしもし\n"),
            "listed.wav": (
                2,
                "listed.json",
                '[{"channel": 0, "text": "あ"}, {"channel": null, "text": "い"}]',
            ),
        },
    )
    done = run_eval(folder, tiny_transducer.build(tmp_path / "tiny").directory, tmp_path)
    assert done.returncode == 1, done.stderr
    result = json.loads(done.stdout)
    assert [c["name"] for c in result["calls"]] == ["ok.wav"]
    assert sorted(result["problems"]) == [
        "[invalid_parameter] listed.json: no channel ('-' or null) on sentence 2, but the recording has two "
        "channels and the other sentences name theirs: give each 0 or 1; not scored",
        "[invalid_parameter] mixed.tsv: no channel ('-' or null) on line 2, but the recording has two "
        "channels and the other sentences name theirs: give each 0 or 1; not scored",
    ]


class FailsOnce:
    """A transcriber that fails on its first recording (as an engine does: CUDA out of memory),
    then hears nothing."""

    info = EngineInfo(name="fails-once", model="none", modelSha256=None)

    def __init__(self) -> None:
        self.calls = 0

    def transcribe(self, audio: Any, language: str) -> list[Recognised]:
        self.calls += 1
        if self.calls == 1:
            raise ZeroDivisionError("division by zero")
        return []

    def cannot_hear(self, language: str) -> str | None:
        return None

    def close(self) -> None:
        pass


def test_an_engine_fault_on_one_call_is_its_line_and_the_others_are_still_scored(tmp_path: Path) -> None:
    folder = folder_of(
        tmp_path, {"a.wav": (1, "a.tsv", "-\tこんにちは\n"), "b.wav": (1, "b.tsv", "-\tもしもし\n")}
    )
    result = evaluate_folder(
        folder, FailsOnce(), model="none", engine="fails-once", load_seconds=0.0, language="ja"
    )
    assert [c.name for c in result.calls] == ["b.wav"]
    assert result.problems == [
        # the engine's fault, as the server names it (before: "[internal_error] ... a fault of
        # cte1-mcp's: please report it")
        "[transcription_failed] the engine failed on a.wav (ZeroDivisionError: division by zero)"
    ]
