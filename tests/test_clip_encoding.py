"""Long clips, cut in a child process (tests/helpers/clip_child.py): an encoder crash is seen as
the child's exit status, and the peak RSS is the clip's own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Literal

import numpy as np
import pytest
import soundfile

from cte1_mcp.simulator.wav import WavSpec, iter_wav

ROOT = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024


def recording(path: Path, seconds: float, channels: Literal[1, 2]) -> Path:
    """A real-speech 8 kHz μ-law WAV, written a chunk at a time (a 2-hour one is 115 MB)."""
    with path.open("wb") as out:
        for chunk in iter_wav(WavSpec.for_duration(seconds, channels=channels, encoding="mulaw")):
            out.write(chunk)
    return path


def cut_in_child(jobs: list[list[object]]) -> list[dict[str, object]]:
    """Run the jobs in a fresh process; its exit status must be 0 (a segfault is -11)."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.helpers.clip_child", json.dumps(jobs)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    return [json.loads(line) for line in done.stdout.splitlines()]


def assert_decodes(path: Path, rate: int, seconds: float) -> None:
    """A valid file of the asked rate and length (MP3/Vorbis pad a little), not silence."""
    info = soundfile.info(str(path))
    assert (info.samplerate, info.channels) == (rate, 1), (path, info)
    assert abs(info.frames / rate - seconds) < 0.1, (path, info.frames / rate)
    with soundfile.SoundFile(str(path)) as sound:
        sound.seek(info.frames // 2)
        middle = sound.read(10 * rate, dtype="float32")  # ten seconds of the conversation
    assert len(middle) > 0 and np.sqrt(np.mean(middle**2)) > 0.005, path


def test_an_ogg_clip_needs_no_stack_in_proportion_to_its_length(tmp_path: Path) -> None:
    """libvorbis (libsndfile 1.2.2) pre-extrapolates the first write on the stack: one write of a
    whole 262-s clip at 8 kHz overflowed 8 MiB and killed the server. In the child's 512 KiB
    worker-thread stack, one write of 60 s would."""
    source = recording(tmp_path / "call.wav", 61, 2)
    jobs: list[list[object]] = [
        [str(source), str(tmp_path / f"clip-{rate}.ogg"), "ogg", rate, "mix", 0, 60] for rate in (8000, 16000)
    ]
    cut_in_child(jobs)
    for rate in (8000, 16000):
        assert_decodes(tmp_path / f"clip-{rate}.ogg", rate, 60)


@pytest.mark.slow
def test_clips_past_600_s_in_every_format_and_rate_decode(tmp_path: Path) -> None:
    """Each format at both rates, 610 s (past the default CTE1_CLIP_MAX_SECONDS) of a two-channel
    call, its mix and each channel, plus 300-s clips of a mono call: valid files of the right length."""
    stereo = recording(tmp_path / "stereo.wav", 620, 2)
    mono = recording(tmp_path / "mono.wav", 310, 1)
    jobs: list[list[object]] = []
    for index, (fmt, rate) in enumerate((f, r) for f in ("wav", "mp3", "flac", "ogg") for r in (8000, 16000)):
        channel = ("mix", "0", "1")[index % 3]
        jobs.append(
            [str(stereo), str(tmp_path / f"{fmt}-{rate}-{channel}.{fmt}"), fmt, rate, channel, 5, 615]
        )
    for fmt, rate in (("ogg", 8000), ("mp3", 16000)):
        jobs.append([str(mono), str(tmp_path / f"mono-{fmt}-{rate}.{fmt}"), fmt, rate, "0", 0, 300])
    cut_in_child(jobs)
    for job in jobs:
        assert_decodes(Path(str(job[1])), int(str(job[3])), float(str(job[6])) - float(str(job[5])))


@pytest.mark.slow
def test_a_clips_memory_does_not_grow_with_its_length(tmp_path: Path) -> None:
    """A 2-hour clip at 16 kHz (resampled, mixed) costs about what a 10-second one does: the
    audio is decoded, filtered and encoded a block at a time (before: +1.76 GB for the 2 hours)."""
    source = recording(tmp_path / "long.wav", 7200, 2)
    short, long = tmp_path / "short.wav", tmp_path / "long-clip.wav"
    try:
        first, second = cut_in_child(
            [
                [str(source), str(short), "wav", 16000, "mix", 0, 10],
                [str(source), str(long), "wav", 16000, "mix", 0, 7200],
            ]
        )
        assert soundfile.info(str(long)).frames == 7200 * 16000
    finally:
        for path in (source, short, long):
            path.unlink(missing_ok=True)  # 345 MB: not left for pytest's kept temporary directories
    growth = int(str(second["growth"]))
    assert growth < 64 * MiB, (first, second)
    assert growth < int(str(first["growth"])) + 32 * MiB, (first, second)
