"""Unit checks of the analytics benchmark's scoring and report (no timing is asserted)."""

from __future__ import annotations

from bench.analysis import (
    Accuracy,
    AnalysisResult,
    ColdSample,
    _score,
    analysis_section,
    analysis_targets,
    why_unavailable,
)
from cte1_mcp.audio import metrics


def test_scoring_against_the_truth() -> None:
    want = metrics.compute([[(0.0, 10.0)], [(12.0, 20.0)]], 30.0)
    got = metrics.compute([[(0.0, 11.0)], [(12.0, 20.0)]], 30.0)
    score = _score("x", [("call", got, want)], 100.0)
    assert score.worst_talk_error == 0.1 and score.worst_call == "call"
    assert score.worst_non_talk_error_seconds == 1.0
    assert (score.overtalk_exact, score.two_channel_calls) == (1, 1)


def result(worst_talk_error: float, cold_seconds: float) -> AnalysisResult:
    r = AnalysisResult()
    r.cold = {
        "5 min": [ColdSample(cold_seconds, 300.0, 8 << 20)] * 3,
        "30 min": [ColdSample(6 * cold_seconds, 1800.0, 14 << 20)] * 3,
    }
    r.engines_cold = {"webrtc": r.cold["5 min"]}
    r.installed_bytes = {"webrtc": 200_000}
    r.engines_unavailable = {"ten": "OSError: libc++.so.1"}
    r.service_cold_seconds = {"5 min": 0.5, "30 min": 3.0}
    r.warm_seconds = {"5 min": [0.001] * 5, "30 min": [0.002] * 5}
    r.clip_seconds = {"wav": [0.01] * 3, "mp3": [0.2] * 3}
    accuracy = Accuracy("webrtc raw per channel", 6, 1.1, 0.4, 2.0, 0.2, 2, 5, 1000.0, "bleed")
    whole = Accuracy(
        "webrtc analyser, whole corpus", 16, worst_talk_error, 0.01, 1.0, 0.1, 14, 14, 1000.0, "n"
    )
    r.accuracy = [accuracy, whole]
    return r


def test_targets_and_verdicts() -> None:
    good = {name: met for name, _, _, met in analysis_targets(result(0.04, 0.5))}
    assert all(good.values()) and len(good) == 5
    bad = {name: met for name, _, _, met in analysis_targets(result(0.06, 2.5))}
    assert not bad["get_call_analytics cold, 5-minute stereo call"]
    assert not bad["per-party talk-time error, corpus (16 calls)"]


def test_the_section_renders_every_table() -> None:
    text = "\n".join(analysis_section(result(0.04, 0.5)))
    assert "## 7. Call analytics" in text and "unavailable: OSError" in text
    assert "webrtc analyser, whole corpus" in text and "MP3" in text


def test_a_missing_libcxx_names_the_os_package() -> None:
    error = OSError("libc++.so.1: cannot open shared object file: No such file or directory")
    assert why_unavailable(error).startswith("needs the OS package libc++1 (OSError: libc++.so.1")
    assert (
        why_unavailable(ImportError("No module named 'ten_vad'")) == "ImportError: No module named 'ten_vad'"
    )
