"""Recordings whose bytes mislead: what get_call_audio, get_call_clip and get_call_analytics make of
them, through the official client and the real service, store and upstream client (the simulator
answers with the hostile file in place of the sample's audio)."""

from __future__ import annotations

import base64
import io
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
from mcp_types import AudioContent

from cte1_mcp.simulator import Fault
from cte1_mcp.simulator.conversation import hold_music, render, scripted
from tests.mcp_harness import SMALL, in_process, platform_answer, structured, text, with_audio

pytestmark = pytest.mark.anyio

SECONDS = 60


def pcm_wav(samples: np.ndarray, *, byte_rate: int | None = None) -> bytes:
    """A 16-bit PCM WAV written byte by byte (not by the code under test), with the byte rate the
    writer claims (by default the true one)."""
    channels = samples.shape[1]
    data = samples.astype("<i2").tobytes()
    rate = 8000 * 2 * channels if byte_rate is None else byte_rate
    fmt = struct.pack("<HHIIHH", 1, channels, 8000, rate, 2 * channels, 16)
    body = (
        b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    )
    return b"RIFF" + struct.pack("<I", len(body)) + body


def serve_once(simulator: Any, audio: bytes) -> None:
    content_type, body = platform_answer(simulator.url, SMALL)
    simulator.state.reset()
    simulator.state.fail_next(Fault(body=with_audio(content_type, body, audio), content_type=content_type))


@pytest.mark.parametrize(("byte_rate", "claimed"), [(1, "1,920,000.000 s"), (10**9, "0.002 s")])
async def test_a_header_lying_about_its_byte_rate_is_reported_by_its_data(
    simulator: Any, tmp_path: Path, byte_rate: int, claimed: str
) -> None:
    """Regression (issue 14, item 9): get_call_audio said 1,920,000 s (or 0.002 s) for a 60 s call
    and every clip was refused, while the analyser measured 60 s. Now the length is the data's,
    the result says the header disagreed, and clips and analytics agree with it."""
    serve_once(simulator, pcm_wav(render(scripted(float(SECONDS), 301), 2), byte_rate=byte_rate))
    async with in_process(simulator.url, tmp_path, channel_roles=("customer", "agent")) as client:
        audio = structured(await client.call_tool("get_call_audio", SMALL))
        clip = await client.call_tool("get_call_clip", {**SMALL, "startSeconds": 50})
        analytics = structured(await client.call_tool("get_call_analytics", SMALL))["analytics"]
    assert audio["audio"]["durationSeconds"] == SECONDS
    (warning,) = audio["audio"]["warnings"]
    assert claimed in warning and "counted from the audio data" in warning
    assert "Warning: The WAV header's byte rate" in audio["summary"]
    assert not clip.is_error, text(clip)
    assert structured(clip)["clip"]["endSeconds"] == SECONDS
    assert analytics["durationSeconds"] == SECONDS
    assert len(simulator.state.requests) == 1


async def test_an_honest_header_carries_no_warning(simulator: Any, tmp_path: Path) -> None:
    serve_once(simulator, pcm_wav(render(scripted(float(SECONDS), 301), 2)))
    async with in_process(simulator.url, tmp_path) as client:
        audio = structured(await client.call_tool("get_call_audio", SMALL))
    assert audio["audio"]["durationSeconds"] == SECONDS
    assert audio["audio"]["warnings"] == [] and "Warning" not in audio["summary"]


async def test_a_float_recording_with_nan_and_infinities_is_analysed_and_says_so(
    simulator: Any, tmp_path: Path
) -> None:
    """Regression (issue 14, item 10): a few NaN/Inf samples in a float WAV made the analysis say
    nobody talked for the whole call, without a word about why."""
    samples = render(scripted(float(SECONDS), 301), 2).astype(np.float32) / 32767
    samples[[8000, 8000 * 30], 0] = np.nan
    samples[8000 * 45, 1] = np.inf
    data = samples.astype("<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 2, 8000, 8000 * 8, 8, 32)  # IEEE float, 2 channels
    body = (
        b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    )
    serve_once(simulator, b"RIFF" + struct.pack("<I", len(body)) + body)
    async with in_process(simulator.url, tmp_path) as client:
        analytics = structured(await client.call_tool("get_call_analytics", SMALL))["analytics"]
    assert analytics["nonFiniteSamples"] == 3
    assert "Warning: 3 sample(s) of the recording are not numbers" in analytics["summary"]
    assert all(party["talkSeconds"] > 10 for party in analytics["parties"])
    assert analytics["nonTalkSeconds"] < SECONDS / 2


async def test_a_channel_of_hold_music_alone_has_no_talk_and_no_overtalk(
    simulator: Any, tmp_path: Path
) -> None:
    """Regression (issue 14, item 11): the agent's channel carries only a melody in short phrases
    (the agent never speaks); it was counted as ~40 s of the agent's talk and 14 s of overtalk."""
    customer = render(scripted(float(SECONDS), 201), 2)[:, 0]
    t = np.arange(SECONDS * 8000) / 8000
    melody = 10 ** (-26 / 20) * hold_music(SECONDS * 8000, 7) * ((t % 4.0) < 3.2)  # 3.2 s phrases
    serve_once(simulator, pcm_wav(np.stack([customer, np.rint(melody * 32767)], axis=1)))
    async with in_process(simulator.url, tmp_path, channel_roles=("customer", "agent")) as client:
        analytics = structured(await client.call_tool("get_call_analytics", SMALL))["analytics"]
    customer_party, agent = analytics["parties"]
    assert agent["talkSeconds"] < 1.0 and customer_party["talkSeconds"] > 15
    assert analytics["overtalkCount"] == 0 and analytics["overtalkSeconds"] < 0.5


async def test_an_mp3_is_as_long_as_its_audio_and_its_clips_hold_what_they_say(
    simulator: Any, tmp_path: Path
) -> None:
    """Regression: a 30.000 s MP3 (LAME, as libsndfile writes it) was listed as 30.168 s (its Xing
    frame count, encoder delay and padding included): the whole clip said 0-30.168 s and held
    30.000 s, a clip from 29 s said 1.168 s and held 1.000 s, and 30.05-30.15 s was blamed on the
    recording ([unsupported_audio] shorter than its header says)."""
    tone = 0.25 * np.sin(2 * np.pi * 300 * np.arange(8000 * 30) / 8000)
    mp3 = io.BytesIO()
    soundfile.write(mp3, tone, 8000, format="MP3", subtype="MPEG_LAYER_III")
    serve_once(simulator, mp3.getvalue())
    async with in_process(simulator.url, tmp_path) as client:
        audio = structured(await client.call_tool("get_call_audio", SMALL))["audio"]
        whole = await client.call_tool("get_call_clip", {**SMALL, "inline": True})
        tail = await client.call_tool("get_call_clip", {**SMALL, "startSeconds": 29, "inline": True})
        past = await client.call_tool("get_call_clip", {**SMALL, "startSeconds": 30.05, "endSeconds": 30.15})
    assert audio["durationSeconds"] == 30.0
    for result, start, seconds in ((whole, 0, 30), (tail, 29, 1)):
        clip = structured(result)["clip"]
        assert (clip["startSeconds"], clip["endSeconds"], clip["durationSeconds"]) == (start, 30, seconds)
        wav = base64.b64decode(next(c for c in result.content if isinstance(c, AudioContent)).data)
        assert soundfile.info(io.BytesIO(wav)).frames == seconds * 8000
    assert text(past).startswith("[invalid_parameter] startSeconds 30.05 is past the end of the call")


async def test_a_wav_whose_data_size_is_0_is_analysed_and_cut_as_listed(
    simulator: Any, tmp_path: Path
) -> None:
    """Regression: a streaming writer's WAV (data size 0) was listed as 60 s, but libsndfile read
    0 frames: the analysis said "a 0.0-minute call" where nobody talked, and clips failed."""
    samples = render(scripted(float(SECONDS), 301), 2)
    wav = pcm_wav(samples)
    at = wav.index(b"data") + 4
    serve_once(simulator, wav[:at] + struct.pack("<I", 0) + wav[at + 4 :])
    async with in_process(simulator.url, tmp_path) as client:
        audio = structured(await client.call_tool("get_call_audio", SMALL))["audio"]
        analytics = structured(await client.call_tool("get_call_analytics", SMALL))["analytics"]
        result = await client.call_tool(
            "get_call_clip", {**SMALL, "startSeconds": 5, "endSeconds": 10, "channel": "0", "inline": True}
        )
    assert audio["durationSeconds"] == analytics["durationSeconds"] == SECONDS
    assert all(party["talkSeconds"] > 10 for party in analytics["parties"])
    clip = base64.b64decode(next(c for c in result.content if isinstance(c, AudioContent)).data)
    cut, _ = soundfile.read(io.BytesIO(clip), dtype="int16")
    assert np.array_equal(cut, samples[40_000:80_000, 0].astype(np.int16))


async def test_a_clip_of_an_empty_recording_says_it_holds_no_audio(simulator: Any, tmp_path: Path) -> None:
    """Regression: a 0-frame WAV answered "startSeconds 0 is past the end of the call ... <= 0.00"."""
    serve_once(simulator, pcm_wav(np.zeros((0, 2))))
    async with in_process(simulator.url, tmp_path) as client:
        result = await client.call_tool("get_call_clip", SMALL)
    assert text(result).startswith("[unsupported_audio] The recording holds no audio to cut a clip from")
