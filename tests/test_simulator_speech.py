"""The simulator's speech: a small committed phrase bank, scripted calls, ground truth by construction."""

from __future__ import annotations

import io
from importlib import resources

import numpy as np
import pytest
import soundfile

from cte1_mcp.audio import metrics
from cte1_mcp.simulator.calls import SAMPLE_CALLS, benchmark_call
from cte1_mcp.simulator.conversation import Acoustics, Conversation, Line, render, scripted
from cte1_mcp.simulator.dialogues import utterances
from cte1_mcp.simulator.speech import dialogue_bank, phrase_bank
from cte1_mcp.simulator.wav import wav_bytes


def test_the_phrase_bank_is_small_and_ships_with_the_package() -> None:
    folder = resources.files("cte1_mcp.simulator") / "speech"
    sizes = {entry.name: entry.stat().st_size for entry in folder.iterdir() if entry.is_file()}  # type: ignore[attr-defined]
    assert sizes["phrases.ogg"] + sizes["phrases.json"] < 300 * 1024
    # the Kokoro sentences of the sample calls' dialogues: about 345 s of Vorbis at ~24 kbit/s
    assert sizes["dialogues_ja.ogg"] + sizes["dialogues_ja.json"] < 1536 * 1024
    bank = phrase_bank()
    assert len(bank) >= 20
    assert {p.language for p in bank.values()} == {"ja", "en"}
    assert {p.role for p in bank.values()} == {"agent", "customer"}
    assert all(p.spans[0][0] == 0 and p.spans[-1][1] == len(p.samples) for p in bank.values())  # trimmed
    assert max(p.seconds for p in bank.values() if p.name in ("agent-hai", "customer-ee")) < 0.4


def test_sample_calls_keep_their_ids_durations_and_formats() -> None:
    shapes = {
        c.key: (c.duration.total_seconds() if c.duration else None, c.channels, c.encoding)
        for c in SAMPLE_CALLS
    }
    assert shapes[("05053698341", 942125, 1)] == (280.447, 2, "mulaw")
    assert shapes[("05053698341", 942126, 1)] == (20, 1, "mulaw")
    assert shapes[("05058085500", 35087858, 1)] == (75, 2, "pcm16")
    assert shapes[("05058085500", 35087859, 1)] == (30, 1, "pcm16")
    for call in SAMPLE_CALLS:
        spec = call.wav_spec()
        assert spec.conversation is not None and len(wav_bytes(spec)) == spec.file_size


def test_the_samples_show_a_hold_overtalk_a_quiet_customer_a_bleed_and_mono() -> None:
    results = {
        c.key: metrics.compute(c.wav_spec().truth(), c.wav_spec().duration_seconds) for c in SAMPLE_CALLS
    }
    hold = results[("05053698341", 942125, 1)].longest_silence
    assert hold is not None and hold[1] - hold[0] >= 40
    assert (results[("05053698341", 942130, 2)].overtalk_count or 0) >= 3
    acoustics = {c.key: c.acoustics for c in SAMPLE_CALLS}
    assert acoustics[("05058085500", 35087858, 1)].party_gain_db[0] <= -15
    assert (
        acoustics[("0312345678", 7001, 1)].bleed_db == -24 and acoustics[("0312345678", 7001, 1)].noise_dbfs
    )
    assert results[("05053698341", 942126, 1)].overtalk_count is None


def test_the_truth_is_where_the_script_put_speech() -> None:
    """Checked on the samples themselves, without the analyser: loud inside, quiet outside."""
    call = scripted(60.0, 7, acoustics=Acoustics(noise_dbfs=-70.0))
    pcm = render(call, 2).astype(np.float64)
    for channel, intervals in enumerate(call.truth(2)):
        inside = np.zeros(len(pcm), dtype=bool)
        for start, end in intervals:
            inside[round(start * 8000) : round(end * 8000)] = True
        level_in = np.sqrt(np.mean(pcm[inside, channel] ** 2))
        level_out = np.sqrt(np.mean(pcm[~inside, channel] ** 2))
        assert level_in > 100 * level_out


def test_a_line_is_placed_exactly_where_it_says() -> None:
    bank = phrase_bank()
    conversation = Conversation(5.0, (Line(1.25, 1, "certainly"),), Acoustics(noise_dbfs=None))
    pcm = render(conversation, 2)
    first = int(np.flatnonzero(pcm[:, 1])[0])
    assert first == pytest.approx(10_000, abs=2)
    assert not pcm[:, 0].any()  # nothing on the customer's channel without a bleed
    assert conversation.truth(2)[1] == ((1.25, 1.25 + bank["certainly"].seconds),)


def test_a_bleed_puts_the_other_party_on_a_channel_at_its_level() -> None:
    conversation = Conversation(5.0, (Line(0.5, 1, "certainly"),), Acoustics(bleed_db=-24.0, noise_dbfs=None))
    pcm = render(conversation, 2).astype(np.float64)
    ratio_db = 20 * np.log10(np.sqrt(np.mean(pcm[:, 0] ** 2)) / np.sqrt(np.mean(pcm[:, 1] ** 2)))
    assert ratio_db == pytest.approx(-24.0, abs=0.2)
    assert conversation.truth(2)[0] == ()  # a bleed is not the customer's speech


def test_benchmark_calls_are_speech_with_a_repeating_truth() -> None:
    spec = benchmark_call(9).wav_spec()
    truth = spec.truth()
    assert spec.conversation is None and len(truth) == 2
    assert truth[1][-1][1] <= spec.duration_seconds
    period = truth[1][0][0] + 60.0
    assert any(abs(start - period) < 1e-6 for start, _ in truth[1])
    samples, rate = soundfile.read(io.BytesIO(wav_bytes(benchmark_call(1).wav_spec())), dtype="int16")
    assert rate == 8000 and np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > 300


REVOICED = {
    ("05053698341", 942125, 1): "example",
    ("05053698341", 942130, 1): "transfer-reception",
    ("05053698341", 942130, 2): "transfer-support",
    ("0312345678", 7001, 1): "outbound",
}


@pytest.mark.parametrize("key", list(REVOICED), ids=["/".join(map(str, key)) for key in REVOICED])
def test_the_revoiced_samples_speak_their_dialogue_in_order_on_the_right_channels(
    key: tuple[str, int, int],
) -> None:
    # Before: every sample spoke random espeak phrases; now these speak a written Kokoro dialogue.
    phrases, dialogues = dialogue_bank()
    steps = [s for s in dialogues[REVOICED[key]].steps if not s.hold]
    sample = next(c for c in SAMPLE_CALLS if c.key == key)
    conversation = sample.wav_spec().conversation
    assert conversation is not None
    said = [u for u in utterances(conversation) if not u.backchannel]
    expected = [(phrases[s.phrase].text, 0 if s.role == "customer" else 1) for s in steps]
    got = [(u.text, u.party) for u in said]
    # all of it, or (the example) as much as fits before its closing sentence, and the closing
    assert got[:-1] == expected[: len(got) - 1] and got[-1] == expected[-1]
    assert len(got) >= min(len(expected), 40)
    assert said[-1].end <= conversation.seconds - 0.5
    truth = conversation.truth(2)
    for u in utterances(conversation):  # a sentence starts and ends in its channel's ground-truth talk
        assert any(a - 1e-6 <= u.start < b for a, b in truth[u.party]), u
        assert any(a < u.end <= b + 1e-6 for a, b in truth[u.party]), u
    assert bool(conversation.holds) == (sample.style.hold_seconds > 0)
