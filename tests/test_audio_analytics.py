"""analyse(): the issue-8 JSON shape, labels, mono, encodings, bounded memory, undecodable audio."""

from __future__ import annotations

import io
import json
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile

from cte1_mcp.audio.analytics import CallAnalytics, analyse
from cte1_mcp.audio.decode import iter_blocks
from cte1_mcp.errors import ConfigurationError, UnsupportedAudio
from cte1_mcp.settings import load_settings
from cte1_mcp.simulator.calls import benchmark_call, find_call
from cte1_mcp.simulator.conversation import render
from cte1_mcp.simulator.wav import iter_wav, wav_bytes

JA_CORPUS = Path(__file__).parent / "corpus_ja"
EXAMPLE = find_call("05053698341", 942125, 1)
MONO = find_call("05053698341", 942126, 1)
assert EXAMPLE is not None and MONO is not None


def example() -> CallAnalytics:
    return analyse(io.BytesIO(wav_bytes(EXAMPLE.wav_spec())), ("customer", "agent"))


def test_the_json_has_exactly_the_issue_8_shape() -> None:
    document = json.loads(example().to_json())
    assert list(document) == [
        "summary", "method", "durationSeconds", "channels", "dualMono", "parties", "nonTalkSeconds", "nonTalkPercent",
        "longestSilence", "longSilences", "overtalkSeconds", "overtalkPercent", "overtalkCount",
        "segments", "segmentsTruncated", "nonFiniteSamples", "warnings", "timelineUri",
    ]  # fmt: skip
    assert list(document["parties"][0]) == [
        "channel", "label", "talkSeconds", "talkPercent", "turns", "longestMonologueSeconds",
        "interruptions", "activeLevelDbfs", "clippedPercent",
    ]  # fmt: skip
    assert list(document["longestSilence"]) == ["startSeconds", "endSeconds", "durationSeconds"]
    assert list(document["longSilences"]) == ["thresholdSeconds", "count", "totalSeconds"]
    assert list(document["segments"][0]) == ["channel", "startSeconds", "endSeconds"]
    assert document["durationSeconds"] == 280.45 and document["channels"] == 2
    assert [p["label"] for p in document["parties"]] == ["customer", "agent"]
    assert (document["nonFiniteSamples"], document["warnings"]) == (0, [])
    assert CallAnalytics.model_validate_json(json.dumps(document)) == example()


def test_the_example_call_shows_its_hold_and_overtalk() -> None:
    analytics = example()
    assert analytics.longestSilence is not None and 44 < analytics.longestSilence.durationSeconds < 46
    assert analytics.longSilences.count == 1
    assert analytics.overtalkCount == 2
    assert all(-23 < p.activeLevelDbfs < -17 for p in analytics.parties if p.activeLevelDbfs is not None)
    total = sum(p.talkSeconds for p in analytics.parties) - (analytics.overtalkSeconds or 0)
    assert total + analytics.nonTalkSeconds == pytest.approx(analytics.durationSeconds, abs=0.05)
    for phrase in ("customer talked", "45.0 s", "2 times", "interruptions"):
        assert phrase.replace("talked", "took") in analytics.summary
    assert "webrtc" in analytics.method and "crosstalk" in analytics.method and "0.5 s" in analytics.method


def test_labels_are_never_guessed() -> None:
    unlabelled = analyse(io.BytesIO(wav_bytes(EXAMPLE.wav_spec())))
    assert [p.label for p in unlabelled.parties] == ["channel 0", "channel 1"]


def test_mono_is_one_mixed_party_without_overtalk() -> None:
    analytics = analyse(io.BytesIO(wav_bytes(MONO.wav_spec())), ("customer", "agent"))
    assert analytics.channels == 1
    assert [(p.channel, p.label, p.interruptions) for p in analytics.parties] == [(0, "mixed", None)]
    assert (
        analytics.overtalkSeconds is None
        and analytics.overtalkPercent is None
        and analytics.overtalkCount is None
    )
    assert "cannot be measured on a mono recording" in analytics.summary


def twice(mono: bytes, gain_db: float) -> io.BytesIO:
    """The mono call written to both channels (a mixed call recorded as stereo), the second at
    ``gain_db``."""
    samples, rate = soundfile.read(io.BytesIO(mono), dtype="float32")
    out = io.BytesIO()
    soundfile.write(
        out, np.stack([samples, samples * 10 ** (gain_db / 20)], axis=1), rate, format="WAV", subtype="PCM_16"
    )
    out.seek(0)
    return out


@pytest.mark.parametrize("gain_db", [0.0, -5.0])
def test_the_same_call_on_both_channels_is_one_mixed_party(gain_db: float) -> None:
    """Regression: a mixed call written to both channels was two parties talking over each other
    83% of the time (and its transcript said every sentence twice). It is one mixed party, as the
    same call in mono is."""
    mono_wav = wav_bytes(MONO.wav_spec())
    dual = analyse(twice(mono_wav, gain_db), ("customer", "agent"))
    mono = analyse(io.BytesIO(mono_wav), ("customer", "agent"))
    assert dual.channels == 2 and dual.dualMono and not mono.dualMono
    assert [(p.channel, p.label, p.interruptions) for p in dual.parties] == [(0, "mixed", None)]
    assert (dual.overtalkSeconds, dual.overtalkCount) == (None, None)
    assert dual.parties[0].talkSeconds == pytest.approx(mono.parties[0].talkSeconds, rel=0.02)
    assert dual.nonTalkSeconds == pytest.approx(mono.nonTalkSeconds, abs=0.3)
    assert {s.channel for s in dual.segments} == {0}
    assert (
        "-minute dual-mono call" in dual.summary and "Warning: Both channels carry the same" in dual.summary
    )
    assert "dual mono" in dual.method
    assert not example().dualMono  # two voices, one per channel


def test_hold_music_on_both_channels_does_not_make_a_two_party_call_dual_mono() -> None:
    """Regression (review): the share of twin frames was counted before the music veto, so a long
    hold whose music both channels carry made the call "dual mono" and the agent's own talk (on
    channel 1 only) vanished. The corpus call c06's talk, then its hold music 6 times over on both
    channels: truth by construction (the manifest's times)."""
    call = next(
        c
        for c in json.loads((JA_CORPUS / "manifest.json").read_text())["calls"]
        if c["id"] == "c06_hold_music"
    )
    (hold,) = call["music"]
    samples, rate = soundfile.read(JA_CORPUS / call["file"], dtype="int16")
    music = samples[hold["startMs"] * rate // 1000 : hold["endMs"] * rate // 1000, 1]
    held = np.tile(music, 6)
    out = io.BytesIO()
    talk = samples[: hold["startMs"] * rate // 1000]
    soundfile.write(
        out, np.concatenate([talk, np.stack([held, held], axis=1)]), rate, format="WAV", subtype="PCM_16"
    )
    out.seek(0)
    analytics = analyse(out, ("customer", "agent"))
    assert not analytics.dualMono
    truth = {
        role: sum(u["endMs"] - u["startMs"] for u in call["utterances"] if u["role"] == role and u["endMs"] <= hold["startMs"]) / 1000
        for role in ("customer", "agent")
    }  # fmt: skip
    for party in analytics.parties:
        assert party.talkSeconds == pytest.approx(truth[party.label], rel=0.1), (party, truth)


def test_segments_are_capped_for_tool_results() -> None:
    analytics = example()
    capped = analytics.capped(10)
    assert len(capped.segments) == 10 and capped.segmentsTruncated
    assert analytics.capped() is analytics  # under 500: unchanged
    assert len(analytics.capped().model_dump_json()) < 50_000


@pytest.mark.parametrize("subtype", ["ULAW", "ALAW", "PCM_16"])
def test_mulaw_alaw_and_pcm_give_the_same_analysis(subtype: str) -> None:
    spec = EXAMPLE.wav_spec()
    assert spec.conversation is not None
    out = io.BytesIO()
    soundfile.write(out, render(spec.conversation, 2), 8000, format="WAV", subtype=subtype)
    analytics = analyse(out, ("customer", "agent"))
    reference = example()
    for party, expected in zip(analytics.parties, reference.parties, strict=True):
        assert party.talkSeconds == pytest.approx(expected.talkSeconds, rel=0.02)
    assert analytics.overtalkCount == reference.overtalkCount


def test_decoding_is_blockwise() -> None:
    blocks = list(iter_blocks(io.BytesIO(wav_bytes(EXAMPLE.wav_spec())), 8000))
    assert {len(block) for block in blocks[:-1]} == {8000}
    assert blocks[0].dtype == np.int16 and blocks[0].shape[1] == 2


def test_memory_does_not_grow_with_the_call(tmp_path: Path) -> None:
    """A 30-minute stereo call (57.6 MB once decoded as int16) is analysed in far less: only
    10 ms frame features are kept, never the audio."""
    path = tmp_path / "long.wav"
    spec = benchmark_call(55).wav_spec()  # 55 MiB of 16-bit stereo: 30 minutes
    with path.open("wb") as file:
        for chunk in iter_wav(spec):
            file.write(chunk)
    tracemalloc.start()
    try:
        with path.open("rb") as file:
            analytics = analyse(file)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert analytics.durationSeconds > 1790
    assert peak < 30 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"


def test_undecodable_audio_is_a_stable_error() -> None:
    with pytest.raises(UnsupportedAudio, match=r"can decode: .*data") as raised:
        analyse(io.BytesIO(b"RIFF\x00\x00\x00\x00WAVEjunk" + bytes(100)))
    assert "BytesIO" not in raised.value.render() and raised.value.render().startswith("[unsupported_audio]")
    out = io.BytesIO()
    soundfile.write(out, np.zeros((4410, 2), dtype=np.int16), 44100, format="WAV", subtype="PCM_16")
    with pytest.raises(UnsupportedAudio, match="8000 or 16000"):
        analyse(out)


def test_corrupt_data_past_a_valid_header_is_a_stable_error() -> None:
    """libsndfile opens the file and fails on a later block: still [unsupported_audio]."""
    rng = np.random.default_rng(3)
    out = io.BytesIO()
    soundfile.write(out, rng.integers(-3000, 3000, (80_000, 2), dtype=np.int16), 8000, format="FLAC")
    data = out.getvalue()
    with pytest.raises(UnsupportedAudio, match="lost sync"):
        analyse(io.BytesIO(data[:3000] + rng.bytes(len(data) - 3000)))


def float_wav(samples: np.ndarray) -> io.BytesIO:
    """A 32-bit IEEE float WAV written byte by byte (format tag 3), NaN and infinities as they are."""
    data = samples.astype("<f4").tobytes()
    channels = samples.shape[1]
    fmt = struct.pack("<HHIIHH", 3, channels, 8000, 8000 * 4 * channels, 4 * channels, 32)
    body = (
        b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    )
    return io.BytesIO(b"RIFF" + struct.pack("<I", len(body)) + body)


def test_a_float_wav_is_analysed_like_its_pcm_and_non_finite_samples_are_silence() -> None:
    """Regression (issue 14, item 10): libsndfile gave the int16 reader a float file's samples
    unscaled (1.0 became 1) and NaN/Inf as they were, so the analysis said nobody talked."""
    spec = EXAMPLE.wav_spec()
    assert spec.conversation is not None
    pcm = render(spec.conversation, 2)
    clean = pcm.astype(np.float32) / 32767
    broken = clean.copy()
    broken[[800, 8000 * 20, 8000 * 60], 0] = [np.nan, np.inf, -np.inf]
    broken[[8000 * 90, 8000 * 200], 1] = [np.nan, np.nan]
    reference = analyse(io.BytesIO(wav_bytes(spec)), ("customer", "agent"))
    for samples, bad in ((clean, 0), (broken, 5)):
        analytics = analyse(float_wav(samples), ("customer", "agent"))
        for party, expected in zip(analytics.parties, reference.parties, strict=True):
            assert party.talkSeconds == pytest.approx(expected.talkSeconds, rel=0.02)
        assert analytics.overtalkCount == reference.overtalkCount
        assert analytics.nonFiniteSamples == bad
        assert (f"Warning: {bad:,} sample(s)" in analytics.summary) == bool(bad)
        assert len(analytics.warnings) == (1 if bad else 0)


def test_a_stream_shorter_than_its_header_says_is_analysed_as_it_is() -> None:
    """An MP3's frame count is an estimate: a cut-off one is analysed for what it holds."""
    spec = EXAMPLE.wav_spec()
    assert spec.conversation is not None
    out = io.BytesIO()
    soundfile.write(out, render(spec.conversation, 2)[: 8000 * 30], 8000, format="MP3")
    announced = soundfile.info(io.BytesIO(out.getvalue())).frames / 8000
    analytics = analyse(io.BytesIO(out.getvalue()[: len(out.getvalue()) // 3]))
    assert 5 < analytics.durationSeconds < announced - 10
    assert analytics.nonTalkSeconds <= analytics.durationSeconds


def test_channel_roles_setting() -> None:
    base = {
        "base_url": "http://127.0.0.1:1",
        "source_uuid": "12345678-1234-1234-1234-123456789012",
        "api_key": "k",
    }
    assert load_settings(**base, channel_roles="customer, agent").channel_roles == ("customer", "agent")
    assert load_settings(**base).channel_roles == ()
    for bad in ("agent", "agent,agent", "a,b,c", "mix,agent"):
        with pytest.raises(ConfigurationError, match="role"):
            load_settings(**base, channel_roles=bad)


def test_a_16_khz_recording_is_analysed_at_its_own_rate() -> None:
    from cte1_mcp.audio.clips import resample

    spec = EXAMPLE.wav_spec()
    assert spec.conversation is not None
    pcm = render(spec.conversation, 2).astype(np.float32) / 32768
    wide = np.stack([resample(pcm[:, channel], 8000, 16000) for channel in (0, 1)], axis=1)
    out = io.BytesIO()
    soundfile.write(out, wide, 16000, format="WAV", subtype="PCM_16")
    analytics = analyse(out, ("customer", "agent"))
    assert analytics.durationSeconds == pytest.approx(280.45, abs=0.01)
    assert "16000 Hz" in analytics.method
    for party, expected in zip(analytics.parties, example().parties, strict=True):
        assert party.talkSeconds == pytest.approx(expected.talkSeconds, rel=0.03)
    assert analytics.overtalkCount == 2


def test_an_empty_or_silent_recording_has_no_talk() -> None:
    for frames in (0, 8000 * 12):
        out = io.BytesIO()
        soundfile.write(out, np.zeros((frames, 2), dtype=np.int16), 8000, format="WAV", subtype="ULAW")
        analytics = analyse(out)
        assert [p.talkSeconds for p in analytics.parties] == [0, 0]
        assert analytics.segments == [] and analytics.overtalkCount == 0
        assert analytics.nonTalkSeconds == analytics.durationSeconds


@pytest.mark.parametrize(
    ("count", "silences", "overtalk"),
    [(0, "no silences", "never"), (1, "1 silence", "once"), (2, "2 silences", "2 times")],
)
def test_counts_read_as_words_in_the_summary_and_the_caption(
    count: int, silences: str, overtalk: str
) -> None:
    # Before: "0 silence(s) lasted" and "2 time(s) for 0.5 s or more".
    from cte1_mcp.audio.analytics import summarise
    from cte1_mcp.audio.timeline import caption

    measured = example()
    changed = measured.model_copy(
        update={
            "longSilences": measured.longSilences.model_copy(update={"count": count}),
            "overtalkCount": count,
        }
    )
    summary = summarise(changed)
    assert f", and {silences} lasted 5 s or more." in summary
    assert f"%), {overtalk} for 0.5 s or more;" in summary
    second_line = caption(changed)[1]
    assert f" · {silences} of 5 s or more · " in second_line
    assert f" · overtalk {overtalk} for 0.5 s or more " in second_line
    assert "(s)" not in summary + second_line
