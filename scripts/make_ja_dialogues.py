"""Build the simulator's Japanese dialogue bank (Kokoro-82M speech) for the sample calls.

Writes ``server/cte1_mcp/simulator/speech/dialogues_ja.ogg`` (every sentence once, 8 kHz mono,
telephone band, one after another) and ``dialogues_ja.json`` (where each sentence starts, its
voiced spans, its text, and the dialogues: which party says which sentence in which order, and
where the agent puts the customer on hold). The simulator places the sentences in time
(``simulator/dialogues.py``), so a sample call's words and times are known by construction.

Synthesis is the corpus generator's (``make_ja_corpus.py``: same TTS, voices, speeds, trim, band
filter and clip cache), so its cached clips are reused and most sentences cost no TTS at all;
the spans are measured like the espeak bank's (``make_speech_fixtures.py``). Runs in the corpus
venv (``make dialogues``)::

    .venv-corpus/bin/python scripts/make_ja_dialogues.py --cache .venv-corpus/tts-cache
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

sys.path.insert(0, str(Path(__file__).resolve().parent))

import make_ja_corpus as corpus
from make_ja_corpus import AGENT, CLOSING, GREETING, Hold, Say, a, c
from make_speech_fixtures import ACTIVE_DBFS, OUT, RATE, spans_of, voiced_frames

#: A backchannel (あいづち) each voice can give under the other's turn.
BACKCHANNEL = "ええ。"

#: Session 942125: the documentation's example, 280 s with a 45-second hold: the corpus's
#: five-minute call (identity, bill, address, plan, cancellation), its hold where it has one.
EXAMPLE = [
    step
    for step in corpus.LONG.events
    if isinstance(step, Say | Hold)
    and not (isinstance(step, Say) and step.text.startswith(("とんでもございません", "あと、")))
]
#: Session 942130, record 1: reception hears the complaint and transfers it.
TRANSFER_1 = [
    a(GREETING, 0.0),
    c("昨日届いた商品が壊れていたんですけど、どうなっているんですか。"),
    a("大変申し訳ございません。すぐに確認いたします。"),
    c("箱を開けたら画面にひびが入っていて、電源も入らないんです。"),
    a("担当の部署におつなぎいたします。このまま少々お待ちください。"),
]
#: Record 2: the support agent takes over.
TRANSFER_2 = [
    a("お電話代わりました。サポート担当の鈴木でございます。", 0.0),
    c("箱を開けたら画面にひびが入っていて、電源も入らないんです。"),
    a("ご不便をおかけして申し訳ございません。"),
    c("先週も同じことがあったんですよ。"),
    a("それは大変失礼いたしました。交換品を本日中に発送いたします。"),
    c("本当に今日送ってもらえるんですね。"),
    a("はい、お約束いたします。壊れた商品は着払いでご返送ください。"),
    c("わかりました。次はちゃんと確認してください。"),
    a("かしこまりました。貴重なご意見をありがとうございます。"),
    c("返送用の箱はどうすればいいですか。"),
    a("交換品と一緒に返送用の袋をお入れしますので、そちらをお使いください。"),
    c("交換品はいつ届きますか。"),
    a("明日の午前中にお届けする予定です。"),
    c("午前中なら家にいるので大丈夫です。"),
    a("ほかにご不明な点はございますか。"),
    c("ポイントの有効期限について教えてください。"),
    a("ポイントの有効期限は、最後にご利用された日から一年間です。", numerals=True),
    c("じゃあ、来月で切れてしまうポイントもあるんですか。"),
    a("はい、一部のポイントが来月末で失効いたします。"),
    c("それなら早めに使います。"),
    a(CLOSING),
]
#: Session 7001: an outbound call about a visit's time.
OUTBOUND = [
    a("お世話になっております。さくら通信の田中です。工事の日程の件でお電話いたしました。", 0.0),
    c("はい、ちょうどよかったです。"),
    c("明日の工事の時間を変更してほしいんです。"),
    a("明日の工事ですね。午後二時からの枠でしたら空いております。", numerals=True),
    c("では、午後二時でお願いします。", numerals=True),
    a("かしこまりました。午後二時に変更いたしました。", numerals=True),
    a("当日は作業員が伺う前に、こちらからお電話いたします。"),
    c("わかりました。よろしくお願いします。"),
    a(CLOSING),
]
#: name -> (customer's voice, steps); the agent is always the corpus's AGENT voice.
DIALOGUES: dict[str, tuple[str, list[Say | Hold]]] = {
    "example": (corpus.LONG.customer_voice, EXAMPLE),
    "transfer-reception": ("jf_nezumi", TRANSFER_1),
    "transfer-support": ("jf_nezumi", TRANSFER_2),
    "outbound": ("jf_gongitsune", OUTBOUND),
}


def telephone(text: str, voice: str, cache: Path | None) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """One sentence at 8 kHz in the telephone band, trimmed to its voiced spans, at ACTIVE_DBFS."""
    clip = corpus.band(corpus.trimmed(corpus.synthesize(text, voice, cache)), RATE)
    spans = spans_of(voiced_frames(clip))
    first, last = spans[0][0], spans[-1][1]
    clip = clip[first:last]
    spans = [(start - first, end - first) for start, end in spans]
    active = np.concatenate([clip[start:end] for start, end in spans])
    gain = 10 ** (ACTIVE_DBFS / 20) / np.sqrt(np.mean(active**2))
    return np.clip(clip * gain, -0.99, 0.99), spans


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, help="the corpus's clip cache (re-runs skip the TTS)")
    args = parser.parse_args(argv)
    if args.cache:
        args.cache.mkdir(parents=True, exist_ok=True)
    names: dict[tuple[str, str], str] = {}  # (text, voice) -> phrase name
    phrases: list[dict[str, Any]] = []
    pieces: list[np.ndarray] = []
    position, gap = 0, np.zeros(RATE // 5)

    def phrase(text: str, voice: str, role: str) -> str:
        nonlocal position
        if (text, voice) not in names:
            samples, spans = telephone(text, voice, args.cache)
            name = f"ja-{len(names) + 1:03d}"
            names[(text, voice)] = name
            phrases.append(
                {
                    "name": name,
                    "voice": voice,
                    "role": role,
                    "language": "ja",
                    "text": text,
                    "start": position,
                    "frames": len(samples),
                    "spans": spans,
                }
            )
            pieces.extend([samples, gap])
            position += len(samples) + len(gap)
            print(f"{name} {voice} {len(samples) / RATE:.1f} s {text}", file=sys.stderr)
        return names[(text, voice)]

    dialogues: dict[str, Any] = {}
    for dialogue, (customer, steps) in DIALOGUES.items():
        voices = {"agent": AGENT, "customer": customer}
        script: list[dict[str, Any]] = []
        for step in steps:
            if isinstance(step, Hold):
                script.append({"hold": True})
            else:
                entry = {"role": step.role, "phrase": phrase(step.text, voices[step.role], step.role)}
                script.append({**entry, "numerals": True} if step.numerals else entry)
        dialogues[dialogue] = {
            "voices": voices,
            "backchannels": {role: phrase(BACKCHANNEL, voice, role) for role, voice in voices.items()},
            "script": script,
        }
    bank = np.concatenate(pieces)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "dialogues_ja.ogg"
    # Block by block: one whole-bank write crashed libsndfile's Vorbis encoder (segfault, 1.2.x).
    with soundfile.SoundFile(
        str(path), "w", RATE, 1, format="OGG", subtype="VORBIS", compression_level=0.5
    ) as sink:
        for block in range(0, len(bank), RATE):
            sink.write(bank[block : block + RATE].astype(np.float32))
    document = {
        "about": "Kokoro-82M sentences for the sample calls (scripts/make_ja_dialogues.py)",
        "tts": corpus._tts_version(),
        "sampleRate": RATE,
        "activeDbfs": ACTIVE_DBFS,
        "phrases": phrases,
        "dialogues": dialogues,
    }
    (OUT / "dialogues_ja.json").write_text(
        json.dumps(document, ensure_ascii=False, indent=1) + "\n", encoding="utf-8"
    )
    print(
        f"{len(phrases)} phrases, {len(bank) / RATE:.1f} s, {path.name} {path.stat().st_size / 1024:.0f} KiB",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
