"""Audio format sniffing: facts from complete headers, None for everything else."""

from __future__ import annotations

import io
import os
import struct
import wave

import pytest
import soundfile

from cte1_mcp.audio.sniff import sniff_format
from cte1_mcp.models import AudioFormat

HEAD = 64 * 1024
KSDATAFORMAT_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


def wave_file(*, channels: int, rate: int, width: int, frames: int) -> bytes:
    """A PCM WAV written by the stdlib, so the reference is not our own understanding of RIFF."""
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(b"\x01" * (frames * channels * width))
    return out.getvalue()


def chunk(chunk_id: bytes, body: bytes, *, size: int | None = None) -> bytes:
    """A RIFF chunk with its pad byte when the body is odd-sized."""
    declared = len(body) if size is None else size
    return chunk_id + struct.pack("<I", declared) + body + (b"\x00" if len(body) % 2 else b"")


def fmt(tag: int, channels: int, rate: int, bits: int, *, extra: bytes = b"") -> bytes:
    block_align = channels * bits // 8
    return chunk(
        b"fmt ", struct.pack("<HHIIHH", tag, channels, rate, rate * block_align, block_align, bits) + extra
    )


def riff(*chunks: bytes) -> bytes:
    body = b"WAVE" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def extensible(
    subformat_tag: int, channels: int, rate: int, bits: int, *, tail: bytes = KSDATAFORMAT_TAIL
) -> bytes:
    guid = struct.pack("<H", subformat_tag) + tail
    extra = struct.pack("<HHI", 22, bits, 0x3 if channels == 2 else 0x4) + guid
    return fmt(0xFFFE, channels, rate, bits, extra=extra)


def sniff(data: bytes, content_type: str | None = None) -> AudioFormat:
    return sniff_format(data[:HEAD], content_type, len(data))


# --- WAV ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channels", "rate", "width", "frames", "duration"),
    [
        (1, 8000, 2, 8000, 1.0),
        (2, 8000, 2, 20000, 2.5),
        (2, 44100, 3, 44100 * 3, 3.0),
        (1, 16000, 1, 4000, 0.25),
    ],
)
def test_wav_pcm_from_the_stdlib_writer(
    channels: int, rate: int, width: int, frames: int, duration: float
) -> None:
    data = wave_file(channels=channels, rate=rate, width=width, frames=frames)
    found = sniff_format(data[:HEAD], "audio/x-wav", len(data))
    assert found.model_dump() == {
        "mime_type": "audio/wav",
        "container": "wav",
        "encoding": "pcm",
        "sample_rate": rate,
        "channels": channels,
        "bits_per_sample": width * 8,
        "duration_seconds": duration,
        "warnings": (),  # a header that agrees with itself is not remarked on
    }


@pytest.mark.parametrize(("tag", "encoding"), [(7, "mulaw"), (6, "alaw"), (3, "unknown"), (0x55, "unknown")])
def test_wav_companded_and_other_format_tags(tag: int, encoding: str) -> None:
    data = riff(fmt(tag, 2, 8000, 8), chunk(b"data", b"\xff" * 16000 * 3))
    found = sniff(data)
    assert (found.container, found.encoding) == ("wav", encoding)
    assert (found.channels, found.sample_rate, found.bits_per_sample) == (2, 8000, 8)
    assert found.duration_seconds == 3.0


@pytest.mark.parametrize(("subformat", "encoding"), [(1, "pcm"), (7, "mulaw"), (6, "alaw"), (3, "unknown")])
def test_wav_extensible_uses_the_subformat(subformat: int, encoding: str) -> None:
    data = riff(extensible(subformat, 2, 8000, 16), chunk(b"data", b"\x00" * 32000))
    found = sniff_format(data, None, len(data))
    assert found.encoding == encoding
    assert (found.channels, found.sample_rate, found.bits_per_sample, found.duration_seconds) == (
        2,
        8000,
        16,
        1.0,
    )


def lying_fmt(channels: int, rate: int, bits: int, *, byte_rate: int, block_align: int) -> bytes:
    """A PCM fmt chunk whose byte rate and block align are whatever the writer claimed."""
    return chunk(b"fmt ", struct.pack("<HHIIHH", 1, channels, rate, byte_rate, block_align, bits))


@pytest.mark.parametrize(
    ("byte_rate", "block_align", "claimed"),
    [(1, 4, "1,920,000.000 s"), (10**9, 4, "0.002 s"), (32000, 1, None), (0, 0, "no length")],
)
def test_wav_a_header_that_lies_about_its_byte_rate_gets_the_length_of_its_data(
    byte_rate: int, block_align: int, claimed: str | None
) -> None:
    """Regression (issue 14, item 9): the length was data bytes / the header's byte rate, so a
    60 s call was reported 1,920,000 s or 0.002 s long while the decoder read 60 s."""
    samples = b"\x01\x00" * 2 * 8000 * 60  # 60 s of 16-bit stereo at 8 kHz
    data = riff(lying_fmt(2, 8000, 16, byte_rate=byte_rate, block_align=block_align), chunk(b"data", samples))
    found = sniff(data)
    assert found.duration_seconds == 60.0
    (warning,) = found.warnings
    assert "counted from the audio data" in warning and "1,920,000 bytes" in warning
    assert (claimed in warning) if claimed else "byte rate" not in warning
    assert soundfile.info(io.BytesIO(data)).frames == 8000 * 60  # what the analyser will read


def test_wav_compressed_formats_still_take_the_header_byte_rate() -> None:
    """For a tag whose frame size the format does not fix (here MPEG in WAV) only the header knows."""
    data = riff(
        chunk(b"fmt ", struct.pack("<HHIIHH", 0x55, 1, 8000, 2000, 1, 0)), chunk(b"data", b"\xff" * 6000)
    )
    found = sniff(data)
    assert (found.duration_seconds, found.warnings) == (3.0, ())


def test_wav_extensible_with_a_foreign_guid_is_not_taken_for_pcm() -> None:
    data = riff(extensible(1, 1, 8000, 16, tail=b"\x11" * 14), chunk(b"data", b"\x00" * 16000))
    found = sniff_format(data, None, len(data))
    assert found.encoding == "unknown"
    assert found.sample_rate == 8000


def test_wav_chunks_before_fmt_with_odd_sizes_are_walked() -> None:
    info = chunk(b"LIST", b"INFOISFT" + struct.pack("<I", 5) + b"Lavf\x00")  # 17 bytes: padded
    junk = chunk(b"JUNK", b"abc")  # 3 bytes: padded
    data = riff(
        info,
        junk,
        fmt(7, 1, 8000, 8),
        chunk(b"fact", struct.pack("<I", 8000)),
        chunk(b"data", b"\x7f" * 8000),
    )
    assert len(info) % 2 == 0 and len(junk) == 12
    found = sniff(data)
    assert (found.encoding, found.channels, found.duration_seconds) == ("mulaw", 1, 1.0)


def test_wav_odd_sized_fmt_is_padded() -> None:
    odd_fmt = chunk(b"fmt ", struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16) + b"\x00\x00\x00")  # 19 bytes
    data = riff(odd_fmt, chunk(b"data", b"\x00" * 16000))
    assert sniff(data).duration_seconds == 1.0


@pytest.mark.parametrize("declared", [0, 0xFFFFFFFF])
def test_wav_streaming_writer_sizes_are_derived_from_the_bytes(declared: int) -> None:
    header = riff(fmt(1, 1, 8000, 16)) + b"data" + struct.pack("<I", declared)
    data = header + b"\x00" * 24000
    assert sniff(data).duration_seconds == 1.5


def test_wav_declared_size_is_bounded_by_the_bytes_received() -> None:
    full = riff(fmt(1, 1, 8000, 16), chunk(b"data", b"\x00" * 32000))
    cut = full[: len(full) - 16000]  # a file cut short: only 1 s of the announced 2 s
    assert sniff(cut).duration_seconds == 1.0


def test_wav_trailing_chunks_do_not_count_as_audio() -> None:
    data = riff(fmt(1, 1, 8000, 16), chunk(b"data", b"\x00" * 16000), chunk(b"LIST", b"x" * 5000))
    assert sniff(data).duration_seconds == 1.0


def test_wav_duration_comes_from_total_size_not_the_head() -> None:
    data = wave_file(channels=1, rate=8000, width=2, frames=8000 * 60)  # ~960 KB, head is 64 KiB
    found = sniff_format(data[:HEAD], None, len(data))
    assert found.duration_seconds == 60.0


@pytest.mark.parametrize("cut", [12, 16, 20, 30, 35])
def test_wav_truncated_header_leaves_everything_unknown(cut: int) -> None:
    data = riff(fmt(1, 2, 8000, 16), chunk(b"data", b"\x00" * 100))
    found = sniff_format(data[:cut], "audio/wav", 10_000)
    assert found.model_dump() == {
        "mime_type": "audio/wav",
        "container": "wav",
        "encoding": "unknown",
        "sample_rate": None,
        "channels": None,
        "bits_per_sample": None,
        "duration_seconds": None,
        "warnings": (),
    }


def test_wav_cut_after_fmt_knows_the_format_but_not_the_duration() -> None:
    data = riff(fmt(1, 2, 8000, 16), chunk(b"data", b"\x00" * 100))
    found = sniff_format(data[:40], None, 10_000)  # fmt complete (36 bytes), data header cut
    assert (found.encoding, found.channels, found.duration_seconds) == ("pcm", 2, None)


def test_wav_without_a_data_chunk_in_the_head_has_no_duration() -> None:
    data = riff(fmt(1, 1, 8000, 16), chunk(b"LIST", b"x" * (HEAD * 2)))
    found = sniff(data)
    assert (found.encoding, found.sample_rate, found.duration_seconds) == ("pcm", 8000, None)


def test_wav_zero_channels_is_malformed() -> None:
    data = riff(fmt(1, 0, 8000, 16), chunk(b"data", b"\x00" * 100))
    assert sniff(data).encoding == "unknown"
    assert sniff(data).sample_rate is None


def test_bytes_win_over_the_content_type() -> None:
    data = wave_file(channels=1, rate=8000, width=2, frames=80)
    assert sniff(data, "audio/mpeg").mime_type == "audio/wav"


@pytest.mark.parametrize(
    ("frames", "channels", "cut"), [(8000 * 30, 2, 0), (12_345, 1, 0), (8000 * 3, 1, 100)]
)
def test_ima_adpcm_is_as_long_as_its_whole_blocks_decode(frames: int, channels: int, cut: int) -> None:
    """Regression: its length was the data over the (rounded) byte rate, 30.051 s for what
    libsndfile decodes as 240,380 frames (30.0475 s: 476 blocks of 505), a partial last block too."""
    out = io.BytesIO()
    soundfile.write(out, [[0.1] * channels] * frames, 8000, format="WAV", subtype="IMA_ADPCM")
    data = out.getvalue()[: len(out.getvalue()) - cut]
    decoded = soundfile.info(io.BytesIO(data)).frames
    assert sniff(data).duration_seconds == round(decoded / 8000, 3)


# --- MP3 ----------------------------------------------------------------------------------------


def mp3_frame(b1: int, b2: int, b3: int, length: int, payload: bytes = b"") -> bytes:
    body = payload + b"\x00" * (length - 4 - len(payload))
    return bytes((0xFF, b1, b2, b3)) + body


#: MPEG-1 Layer III, no CRC; 128 kbps, 44.1 kHz, no padding: 144 * 128000 / 44100 = 417 bytes.
MPEG1_128K = (0xFB, 0x90, 0x00, 417)
#: MPEG-2.5 Layer III, 16 kbps, 8 kHz, mono (telephone-like): 72 * 16000 / 8000 = 144 bytes.
MPEG25_16K_MONO = (0xE3, 0x28, 0xC0, 144)


def id3v2(body_size: int, *, footer: bool = False) -> bytes:
    size = bytes((body_size >> 21 & 0x7F, body_size >> 14 & 0x7F, body_size >> 7 & 0x7F, body_size & 0x7F))
    flags = 0x10 if footer else 0
    return (
        b"ID3\x04\x00"
        + bytes((flags,))
        + size
        + b"\x00" * body_size
        + (b"3DI" + b"\x00" * 7 if footer else b"")
    )


def test_mp3_cbr_without_id3() -> None:
    data = mp3_frame(*MPEG1_128K) * 300
    found = sniff(data, "application/octet-stream")
    assert found.model_dump() == {
        "mime_type": "audio/mpeg",
        "container": "mp3",
        "encoding": "mp3",
        "sample_rate": 44100,
        "channels": 2,
        "bits_per_sample": None,
        "duration_seconds": round(417 * 300 * 8 / 128000, 3),
        "warnings": (),
    }


@pytest.mark.parametrize("footer", [False, True])
def test_mp3_with_id3v2_tag_excludes_the_tag_from_the_duration(footer: bool) -> None:
    data = id3v2(5000, footer=footer) + mp3_frame(*MPEG25_16K_MONO) * 1000
    found = sniff(data)
    assert (found.container, found.sample_rate, found.channels) == ("mp3", 8000, 1)
    assert found.duration_seconds == 72.0  # 144000 bytes at 16 kbps


def test_mp3_xing_frame_count_gives_the_duration() -> None:
    xing = b"\x00" * 17 + b"Xing" + struct.pack(">II", 0x1, 1000)  # mono MPEG-1: 17 bytes of side info
    first = mp3_frame(0xFB, 0x90, 0xC0, 417, xing)
    data = first + mp3_frame(0xFB, 0x90, 0xC0, 417) * 10
    assert sniff(data).duration_seconds == round(1000 * 1152 / 44100, 3)


def test_mp3_lame_tag_delay_and_padding_are_not_audio() -> None:
    """Regression: the Xing count was taken whole, so a 30.000 s LAME MP3 was listed as 30.168 s.
    The LAME tag (after frames, TOC and quality: flags 0xF) says 576 + 768 samples are not audio."""
    lame = b"LAME3.100" + b"\x00" * 12 + (576 << 12 | 768).to_bytes(3, "big") + b"\x00" * 12
    xing = b"\x00" * 9 + b"Info" + struct.pack(">III", 0xF, 419, 60000) + b"\x00" * 104 + lame
    frame = (0xE3, 0xE8, 0xC0, 1440)  # MPEG-2.5 Layer III, 160 kbps, 8 kHz, mono: 9 bytes of side info
    data = mp3_frame(*frame, xing) + mp3_frame(*frame) * 10
    assert sniff(data).duration_seconds == (419 * 576 - 576 - 768) / 8000 == 30.0


@pytest.mark.parametrize("frames", [8000 * 30, 8000 * 30 + 123, 1000])
def test_a_libsndfile_mp3_is_as_long_as_libsndfile_decodes_it(frames: int) -> None:
    """The length listed is the length the analyser and the clips decode."""
    out = io.BytesIO()
    soundfile.write(out, [0.1, -0.1] * (frames // 2) + [0.0] * (frames % 2), 8000, format="MP3")
    data = out.getvalue()
    assert soundfile.info(io.BytesIO(data)).frames == frames
    assert sniff(data).duration_seconds == round(frames / 8000, 3)


def test_mp3_vbr_xing_without_frame_count_is_not_guessed() -> None:
    xing = b"\x00" * 32 + b"Xing" + struct.pack(">I", 0)
    data = mp3_frame(0xFB, 0x90, 0x00, 417, xing) + mp3_frame(*MPEG1_128K) * 10
    found = sniff(data)
    assert (found.container, found.duration_seconds) == ("mp3", None)


def test_mp3_vbri_frame_count_gives_the_duration() -> None:
    vbri = b"\x00" * 32 + b"VBRI" + b"\x00" * 10 + struct.pack(">I", 500)
    data = mp3_frame(0xFB, 0x90, 0x00, 417, vbri) + mp3_frame(*MPEG1_128K) * 10
    assert sniff(data).duration_seconds == round(500 * 1152 / 44100, 3)


def test_id3_tag_larger_than_the_head_is_still_mp3() -> None:
    data = id3v2(HEAD * 2) + mp3_frame(*MPEG1_128K) * 3
    found = sniff(data)
    assert (found.container, found.encoding, found.sample_rate) == ("mp3", "mp3", None)


def test_a_lone_frame_sync_followed_by_garbage_is_not_mp3() -> None:
    data = mp3_frame(*MPEG1_128K) + b"\x12" * 2000
    found = sniff(data, "text/plain")
    assert found.model_dump()["container"] == "unknown"
    assert found.mime_type == "application/octet-stream"


@pytest.mark.parametrize(
    "header",
    [b"\xff\xfd\x90\x00", b"\xff\xf1\x50\x80", b"\xff\xfb\xf0\x00", b"\xff\xfb\x9c\x00", b"\xff\xfb\x00\x00"],
)
def test_layer_i_ii_adts_reserved_and_free_format_are_not_mp3(header: bytes) -> None:
    # Layer I, AAC ADTS (layer 0), bitrate index 15, sample-rate index 3, free-format bitrate.
    assert sniff(header + b"\x00" * 1000).container == "unknown"


# --- unknown ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "mime"),
    [
        ("audio/ogg; codecs=opus", "audio/ogg; codecs=opus"),
        ("Audio/AMR", "Audio/AMR"),
        ("application/octet-stream", "application/octet-stream"),
        ("text/plain", "application/octet-stream"),
        ("application/json", "application/octet-stream"),
        ("audio/", "application/octet-stream"),
        ("audio/x\u00e9", "application/octet-stream"),
        ("audio/x\r\nX-Evil: 1", "application/octet-stream"),
        ("", "application/octet-stream"),
        (None, "application/octet-stream"),
    ],
)
def test_unknown_bytes_are_served_with_a_safe_content_type(content_type: str | None, mime: str) -> None:
    found = sniff_format(os.urandom(3000).replace(b"\xff", b"\x00"), content_type, 3000)
    assert found.model_dump() == {
        "mime_type": mime,
        "container": "unknown",
        "encoding": "unknown",
        "sample_rate": None,
        "channels": None,
        "bits_per_sample": None,
        "duration_seconds": None,
        "warnings": (),
    }


def test_empty_and_tiny_heads() -> None:
    assert sniff_format(b"", "audio/wav", 0).container == "unknown"
    assert sniff_format(b"RIFF", None, 4).container == "unknown"
    assert sniff_format(b"ID3", None, 3).container == "unknown"
    assert sniff_format(b"\xff\xfb", None, 2).container == "unknown"
