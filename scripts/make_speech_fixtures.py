"""Synthesise the simulator's speech phrases once with espeak-ng and sox (run by hand, never by tests).

Writes ``server/cte1_mcp/simulator/speech/phrases.ogg`` (every phrase, 8 kHz mono, one after
another; Ogg Vorbis keeps the bank near 200 KiB where 16-bit FLAC needs 750 KiB) and
``phrases.json`` (where each phrase starts, how long it is, and its voiced spans). The spans are
measured here on the clean synthetic signal (an energy threshold, no voice-activity detector), so
the simulator's ground truth comes from how a call was built, never from the analyser under
test. Usage::

    .venv/bin/python scripts/make_speech_fixtures.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile

RATE = 8000
OUT = Path(__file__).resolve().parent.parent / "server" / "cte1_mcp" / "simulator" / "speech"
#: Target active RMS of every phrase (the assembler applies each party's level on top).
ACTIVE_DBFS = -20.0
#: A 10 ms frame is voiced when it is within this many dB of the phrase's loudest frame.
VOICED_RANGE_DB = 40.0
#: Pauses shorter than this inside a phrase stay inside one span (inter-word gaps).
SPAN_GAP_SECONDS = 0.25

VOICES = {
    "agent-ja": ("ja+f2", 62, 165),
    # backchannels are said quickly: well under the analyser's 0.5 s grace, as real ones are
    "agent-ja-quick": ("ja+f2", 62, 260),
    "customer-ja-quick": ("ja+m3", 35, 260),
    "customer-ja": ("ja+m3", 35, 155),
    "agent-en": ("en-us+f2", 60, 160),
    "customer-en": ("en+m3", 38, 155),
}

#: name, voice, spoken text (kana for Japanese: espeak-ng reads kanji as "chinese letter"), gloss
PHRASES: list[tuple[str, str, str, str]] = [
    ("greeting", "agent-ja", "おでんわ ありがとうございます。 コムデザイン サポートセンターの すずきで ございます。", "Thank you for calling, CommDesign support, Suzuki speaking."),
    ("ask-business", "agent-ja", "ごようけんを おうかがい いたします。", "How may I help you?"),
    ("certainly", "agent-ja", "かしこまりました。", "Certainly."),
    ("ask-name", "agent-ja", "おそれいりますが、 おなまえを おねがい できますか。", "May I have your name, please?"),
    ("please-wait", "agent-ja", "しょうしょう おまち ください。", "One moment, please."),
    ("thanks-for-waiting", "agent-ja", "たいへん おまたせ いたしました。", "Thank you for waiting."),
    ("checking", "agent-ja", "ただいま かくにん いたしますので、 このまま おまち ください。", "I'll check now; please hold."),
    ("yes-indeed", "agent-ja", "はい、 さようで ございます。", "Yes, that's right."),
    ("anything-else", "agent-ja", "ほかに ごしつもんは ございますか。", "Anything else?"),
    ("closing", "agent-ja", "おでんわ ありがとう ございました。 しつれい いたします。", "Thank you for calling. Goodbye."),
    ("agent-hai", "agent-ja-quick", "はい。", "Yes. (backchannel)"),
    ("ask-number", "agent-ja", "ごれんらくさきの でんわばんごうを おしえて いただけますか。", "Could you tell me your phone number?"),
    ("apology", "agent-ja", "たいへん もうしわけ ございません。", "We are very sorry."),
    ("explain", "agent-ja", "おとどけは あさっての ごごに なる よていで ございます。", "Delivery is planned for the afternoon of the day after tomorrow."),
    ("hello", "customer-ja", "もしもし、 すみません。", "Hello, excuse me."),
    ("complaint", "customer-ja", "さくじつ ちゅうもんした しょうひんが まだ とどかないんですが。", "The item I ordered yesterday hasn't arrived yet."),
    ("my-name", "customer-ja", "たなかです。 たなか ひろしです。", "It's Tanaka. Hiroshi Tanaka."),
    ("please", "customer-ja", "はい、 おねがいします。", "Yes, please."),
    ("customer-ee", "customer-ja-quick", "ええ。", "Mm. (backchannel)"),
    ("understood", "customer-ja", "わかりました。 ありがとうございます。", "I see. Thank you."),
    ("no-thanks", "customer-ja", "いいえ、 だいじょうぶです。", "No, that's all."),
    ("my-number", "customer-ja", "ぜろきゅうぜろ の いちにさんよん の ごろくななはち です。", "It's 090-1234-5678."),
    ("objection", "customer-ja", "ちょっと まって ください、 それは ちがうと おもいます。", "Wait, I think that's wrong."),
    ("en-greeting", "agent-en", "Thank you for calling, this is Sarah speaking. How can I help you?", ""),
    ("en-checking", "agent-en", "One moment please, let me check that for you.", ""),
    ("en-order", "customer-en", "Hi, I'm calling about my order from last week.", ""),
    ("en-thanks", "customer-en", "Okay, thank you very much.", ""),
]  # fmt: skip


def synthesise(voice: str, pitch: int, speed: int, text: str, workdir: Path) -> np.ndarray:
    raw, narrow = workdir / "raw.wav", workdir / "narrow.wav"
    # Fixed argv, no shell; the tools are looked up on PATH on purpose (a developer's machine).
    speak = ["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", str(raw), text]
    subprocess.run(speak, check=True)  # noqa: S603
    # Telephone band (300-3400 Hz) at 8 kHz, as a CT-e1 recording would carry it.
    band = [
        "sox",
        str(raw),
        "-r",
        str(RATE),
        "-b",
        "16",
        str(narrow),
        "sinc",
        "300-3400",
        "rate",
        "-v",
        str(RATE),
    ]
    subprocess.run(band, check=True)  # noqa: S603
    samples, rate = soundfile.read(str(narrow), dtype="float64")
    assert rate == RATE
    return np.asarray(samples, dtype=np.float64)


def voiced_frames(samples: np.ndarray) -> np.ndarray:
    frame = RATE // 100
    usable = len(samples) // frame * frame
    energy = np.mean(samples[:usable].reshape(-1, frame) ** 2, axis=1) + 1e-12
    level = 10 * np.log10(energy)
    return level > level.max() - VOICED_RANGE_DB


def spans_of(voiced: np.ndarray) -> list[tuple[int, int]]:
    """Runs of voiced 10 ms frames, gaps shorter than SPAN_GAP_SECONDS closed, in samples."""
    frame = RATE // 100
    runs: list[list[int]] = []
    for index in np.flatnonzero(voiced):
        if runs and index - runs[-1][1] < SPAN_GAP_SECONDS * 100:
            runs[-1][1] = int(index) + 1
        else:
            runs.append([int(index), int(index) + 1])
    return [(start * frame, end * frame) for start, end in runs]


def main() -> int:
    if shutil.which("espeak-ng") is None or shutil.which("sox") is None:
        print("espeak-ng and sox are needed to regenerate the fixtures", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    pieces: list[np.ndarray] = []
    index: list[dict[str, object]] = []
    position = 0
    gap = np.zeros(RATE // 5)
    with tempfile.TemporaryDirectory() as tmp:
        for name, voice_name, text, gloss in PHRASES:
            voice, pitch, speed = VOICES[voice_name]
            samples = synthesise(voice, pitch, speed, text, Path(tmp))
            spans = spans_of(voiced_frames(samples))
            first, last = spans[0][0], spans[-1][1]
            samples = samples[first:last]
            spans = [(start - first, end - first) for start, end in spans]
            active = np.concatenate([samples[start:end] for start, end in spans])
            gain = 10 ** (ACTIVE_DBFS / 20) / np.sqrt(np.mean(active**2))
            samples = np.clip(samples * gain, -0.99, 0.99)
            index.append(
                {
                    "name": name,
                    "voice": voice_name,
                    "language": "en" if "-en" in voice_name else "ja",
                    "text": text,
                    "gloss": gloss,
                    "start": position,
                    "frames": len(samples),
                    "spans": spans,
                }
            )
            pieces += [samples, gap]
            position += len(samples) + len(gap)
    bank = np.concatenate(pieces)
    path = OUT / "phrases.ogg"
    soundfile.write(str(path), bank, RATE, format="OGG", subtype="VORBIS", compression_level=0.5)
    document = {"sampleRate": RATE, "activeDbfs": ACTIVE_DBFS, "phrases": index}
    (OUT / "phrases.json").write_text(json.dumps(document, ensure_ascii=False, indent=1) + "\n")
    seconds = len(bank) / RATE
    print(f"{len(index)} phrases, {seconds:.1f} s, {path.name} {path.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
