"""Clips: argument validation naming what is valid, planning against a recording, real encodings."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile

from cte1_mcp.audio.clips import ClipPlan, ClipRequest, HalfBand, cut, plan, resample
from cte1_mcp.errors import InvalidParameter, UnsupportedAudio
from cte1_mcp.simulator.calls import find_call
from cte1_mcp.simulator.wav import wav_bytes

EXAMPLE = find_call("05053698341", 942125, 1)
assert EXAMPLE is not None
ROLES = ("customer", "agent")


def encoded(file: io.BytesIO, clip: ClipPlan) -> bytes:
    out = io.BytesIO()
    cut(file, clip, out)
    return out.getvalue()


def plan_for(request: ClipRequest, channels: int = 2, duration: float = 280.447, max_seconds: float = 600):
    return plan(request, duration=duration, channels=channels, roles=ROLES, max_seconds=max_seconds)


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"format": "aac"}, "wav, mp3, flac, ogg"),
        ({"sample_rate": 44100}, "8000 or 16000"),
        ({"start_seconds": -1}, ">= 0"),
        ({"end_seconds": 0}, "> 0"),
        ({"start_seconds": float("nan")}, ">= 0"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_request_errors_name_the_valid_values(values: dict[str, object], named: str) -> None:
    with pytest.raises(InvalidParameter) as raised:
        ClipRequest.of(**values)
    assert named in raised.value.message


@pytest.mark.parametrize(
    ("request_values", "channels", "message"),
    [
        ({"start_seconds": 300}, 2, "0 <= startSeconds < endSeconds <= 280.45"),
        ({"start_seconds": 10, "end_seconds": 290}, 2, "past the end"),
        ({"start_seconds": 10, "end_seconds": 10}, 2, "greater than startSeconds"),
        ({"channel": "supervisor"}, 2, "mix, 0, 1, customer, agent"),
        ({"channel": "1"}, 1, "mono: it has channel 0 only"),
        ({"channel": "agent"}, 1, "not one of mix, 0"),
    ],
)
def test_plans_that_do_not_fit_the_recording(
    request_values: dict[str, object], channels: int, message: str
) -> None:
    with pytest.raises(InvalidParameter) as raised:
        plan_for(ClipRequest.of(**request_values), channels)
    assert message in raised.value.message


def test_the_maximum_length_is_documented_in_the_error() -> None:
    with pytest.raises(InvalidParameter, match=r"at most 60 s .*CTE1_CLIP_MAX_SECONDS"):
        plan_for(ClipRequest.of(end_seconds=61), max_seconds=60)


def test_a_role_name_is_its_channel_and_names_the_same_artefact() -> None:
    by_role = plan_for(ClipRequest.of(start_seconds=60, end_seconds=70, channel="Agent"))
    by_index = plan_for(ClipRequest.of(start_seconds=60, end_seconds=70, channel="1"))
    assert by_role == by_index and by_role.channel == 1
    assert by_role.artifact_name == "clip-60000-70000-1-8000.wav"
    whole = plan_for(ClipRequest.of())
    assert (whole.start_seconds, whole.end_seconds, whole.channel) == (0, 280.447, None)


@pytest.mark.parametrize("fmt", ["wav", "mp3", "flac", "ogg"])
@pytest.mark.parametrize("rate", [8000, 16000])
def test_clips_decode_back_to_the_asked_stretch(fmt: str, rate: int) -> None:
    clip = plan_for(
        ClipRequest.of(start_seconds=60, end_seconds=70, channel="agent", format=fmt, sample_rate=rate)
    )
    data = encoded(io.BytesIO(wav_bytes(EXAMPLE.wav_spec())), clip)
    samples, got_rate = soundfile.read(io.BytesIO(data), dtype="float32")
    assert got_rate == rate and samples.ndim == 1
    assert abs(len(samples) - 10 * rate) < 0.1 * rate  # MP3/Vorbis pad a little
    assert np.sqrt(np.mean(samples**2)) > 0.01  # the agent talks in this stretch


def test_the_cut_is_the_recordings_own_samples() -> None:
    data = wav_bytes(EXAMPLE.wav_spec())
    clip = plan_for(ClipRequest.of(start_seconds=12.5, end_seconds=13.5, channel="0"))
    cut_samples, _ = soundfile.read(io.BytesIO(encoded(io.BytesIO(data), clip)), dtype="int16")
    whole, _ = soundfile.read(io.BytesIO(data), dtype="int16")
    assert np.array_equal(cut_samples, whole[100_000:108_000, 0])


def test_resampling_keeps_a_tone_and_its_level() -> None:
    t = np.arange(8000) / 8000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    up = resample(tone, 8000, 16000)
    assert len(up) == 16000
    assert np.sqrt(np.mean(up[200:-200] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)
    down = resample(up, 16000, 8000)
    assert np.max(np.abs(down[200:-200] - tone[200:-200])) < 0.02


def test_a_clip_past_where_the_data_really_ends_is_unsupported_audio() -> None:
    """The stored format (from the header) allowed the range; the file holds less: a stable code."""
    out = io.BytesIO()
    soundfile.write(out, np.ones((8000 * 30, 2), dtype=np.int16), 8000, format="WAV", subtype="PCM_16")
    cut_off = io.BytesIO(out.getvalue()[: len(out.getvalue()) // 3])  # 10 s of the 30 its header says
    request = ClipRequest.of(start_seconds=20, end_seconds=25, format="mp3")
    with pytest.raises(UnsupportedAudio, match=r"ends at 10\.00 s"):
        encoded(cut_off, plan_for(request, duration=30))


def test_a_clip_shorter_than_the_filter_keeps_its_length() -> None:
    assert len(resample(np.ones(8, dtype=np.float32), 8000, 16000)) == 16
    assert len(resample(np.ones(10, dtype=np.float32), 16000, 8000)) == 5


def test_a_clip_uri_keeps_the_millisecond_its_artefact_is_named_by() -> None:
    from cte1_mcp.analysis import clip_uri
    from cte1_mcp.models import CallKey

    clip = plan_for(ClipRequest.of(start_seconds=1234.567, end_seconds=1240, channel="agent"), duration=1800)
    uri = clip_uri(CallKey("05053698341", 942125, 1), clip)
    assert uri.endswith("/clip?start=1234.567&end=1240&channel=1&format=wav&rate=8000")
    assert clip.artifact_name == "clip-1234567-1240000-1-8000.wav"


@pytest.mark.parametrize(("rate", "target"), [(8000, 16000), (16000, 8000), (8000, 8000)])
def test_resampling_block_by_block_is_resampling_the_whole(rate: int, target: int) -> None:
    """Clips are filtered a block at a time: no block boundary may change a sample."""
    rng = np.random.default_rng(7)
    signal = rng.standard_normal(20_001).astype(np.float32)
    halfband, pieces, position = HalfBand(rate, target), [], 0
    for size in [1, 30, 62, 63, 64, 4096, *rng.integers(1, 3000, 20).tolist()]:
        pieces.append(halfband.feed(signal[position : position + size]))
        position += size
    pieces += [halfband.feed(signal[position:]), halfband.flush()]
    whole = resample(signal, rate, target)
    assert np.allclose(np.concatenate(pieces), whole, atol=1e-6)
    assert len(whole) == len(signal) * target // rate + (len(signal) % 2 if target < rate else 0)


def test_a_stopped_cut_ends_at_the_next_block() -> None:
    """The analysis service's StopFlag is the checkpoint: a cancelled clip stops decoding at once."""
    from cte1_mcp.watched import StopFlag, Stopped

    stop = StopFlag()
    blocks = 0

    def checkpoint() -> None:
        nonlocal blocks
        blocks += 1
        if blocks == 3:
            stop.abort("cancelled")
        stop.check()

    whole = plan_for(ClipRequest.of())  # 280 s: 71 blocks of 4 s
    with pytest.raises(Stopped):
        cut(
            io.BytesIO(wav_bytes(EXAMPLE.wav_spec())),
            whole,
            io.BytesIO(),
            on_block=lambda done, total: checkpoint(),
        )
    assert blocks == 3
