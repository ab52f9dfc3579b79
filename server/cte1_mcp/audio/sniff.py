"""What a recording's bytes are: WAV (PCM, μ-law, A-law), MP3, or honestly unknown.

The platform does not document its audio format, so it is read from the bytes themselves (the
part's Content-Type is only a fallback for serving). Every field is derived from a header that
was actually present and complete; anything else stays ``None`` rather than being guessed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cte1_mcp.models import AudioFormat, Encoding

WAV_MIME = "audio/wav"
MP3_MIME = "audio/mpeg"
FALLBACK_MIME = "application/octet-stream"

#: WAVE format tags (mmreg.h) this project names; others are WAV with an "unknown" encoding.
_WAV_ENCODINGS: dict[int, Encoding] = {0x0001: "pcm", 0x0006: "alaw", 0x0007: "mulaw"}
#: Tags whose frame size is channels x whole bytes per sample (PCM, IEEE float, A-law, μ-law): for
#: these the frame count follows from the data size alone, as libsndfile (the analyser) counts it.
_FIXED_FRAME_TAGS = (0x0001, 0x0003, 0x0006, 0x0007)
_WAVE_FORMAT_EXTENSIBLE = 0xFFFE
_IMA_ADPCM = 0x0011
#: Bytes 2..16 of every KSDATAFORMAT_SUBTYPE_* GUID whose first two bytes are a format tag.
_KSDATAFORMAT_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
#: Streaming writers that cannot seek back leave the data size as 0 or as the largest value.
_UNKNOWN_DATA_SIZES = (0, 0xFFFFFFFF)

# MPEG audio Layer III tables (ISO 11172-3 / 13818-3), indexed by the header's bit fields.
_MPEG1, _MPEG2, _MPEG25 = 3, 2, 0
_SAMPLE_RATES = {_MPEG1: (44100, 48000, 32000), _MPEG2: (22050, 24000, 16000), _MPEG25: (11025, 12000, 8000)}
_BITRATES_MPEG1 = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_BITRATES_MPEG2 = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
_LAYER_III = 1
_MONO = 3


def sniff_format(head: bytes, content_type: str | None, total_size: int) -> AudioFormat:
    """The format of an audio part from its first bytes (``head``) and its full length.

    Pure and fast: it looks at headers only, never at the audio samples.
    """
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return _sniff_wav(head, total_size)
    mp3 = _sniff_mp3(head, total_size)
    if mp3 is not None:
        return mp3
    return AudioFormat(mime_type=_fallback_mime(content_type))


def _fallback_mime(content_type: str | None) -> str:
    """The part's own Content-Type when it plausibly names audio, else a neutral binary type."""
    if not content_type:
        return FALLBACK_MIME
    value = content_type.strip()
    essence = value.split(";", 1)[0].strip().lower()
    names_audio = (essence.startswith("audio/") and len(essence) > len("audio/")) or essence == FALLBACK_MIME
    return value if names_audio and value.isascii() and value.isprintable() else FALLBACK_MIME


# --- WAV --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _WavFmt:
    #: The format tag (an extensible format's sub-format tag; -1 for an unknown sub-format).
    tag: int
    encoding: Encoding
    channels: int
    sample_rate: int
    byte_rate: int
    block_align: int
    bits_per_sample: int
    #: channels x bytes per sample where the tag fixes it, else None (compressed: trust byte_rate).
    frame_bytes: int | None
    #: IMA ADPCM's frames per block (its fmt extension), else None.
    samples_per_block: int | None = None


def _sniff_wav(head: bytes, total_size: int) -> AudioFormat:
    fmt, data = _wav_chunks(head)
    if fmt is None:
        return AudioFormat(mime_type=WAV_MIME, container="wav")
    duration, warnings = _wav_duration(fmt, data, total_size)
    return AudioFormat(
        mime_type=WAV_MIME,
        container="wav",
        encoding=fmt.encoding,
        sample_rate=fmt.sample_rate,
        channels=fmt.channels,
        bits_per_sample=fmt.bits_per_sample,
        duration_seconds=duration,
        warnings=warnings,
    )


def _wav_chunks(head: bytes) -> tuple[_WavFmt | None, tuple[int, int] | None]:
    """Walk the RIFF chunks (word-aligned, any order before ``data``) to ``fmt `` and ``data``
    (the offset of the samples and the declared size)."""
    fmt: _WavFmt | None = None
    data: tuple[int, int] | None = None
    pos = 12
    while data is None and pos + 8 <= len(head):
        chunk_id = head[pos : pos + 4]
        (size,) = struct.unpack_from("<I", head, pos + 4)
        body = pos + 8
        if chunk_id == b"fmt ":
            fmt = _parse_fmt(head[body : body + size]) if body + size <= len(head) else None
            if fmt is None:
                break  # truncated or malformed fmt chunk: nothing more can be known
        elif chunk_id == b"data":
            data = (body, size)
        pos = body + size + (size & 1)
    return fmt, data


@dataclass(frozen=True, slots=True)
class RawLayout:
    """How to read a WAV's samples as headerless audio (libsndfile's RAW) from ``offset`` on."""

    offset: int
    channels: int
    sample_rate: int
    #: libsndfile's subtype name for the samples.
    subtype: str


#: (format tag, bits per sample) → libsndfile's subtype for the fixed-frame encodings.
_RAW_SUBTYPES = {
    (0x0001, 8): "PCM_U8",
    (0x0001, 16): "PCM_16",
    (0x0001, 24): "PCM_24",
    (0x0001, 32): "PCM_32",
    (0x0003, 32): "FLOAT",
    (0x0003, 64): "DOUBLE",
    (0x0006, 8): "ALAW",
    (0x0007, 8): "ULAW",
}


def unsized_wav_data(head: bytes) -> RawLayout | None:
    """The layout of a fixed-frame WAV whose data chunk declares 0 bytes, else None.

    A streaming writer that cannot seek back leaves the size 0; the length listed for it counts
    the data to the end of the file (see _wav_duration), while libsndfile reads 0 frames, so the
    analyser and the clips read such data as RAW instead, to the same end. (0xFFFFFFFF, the other
    placeholder, libsndfile already reads to the end of the file.)"""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    fmt, data = _wav_chunks(head)
    if fmt is None or data is None or data[1] != 0:
        return None
    subtype = _RAW_SUBTYPES.get((fmt.tag, fmt.bits_per_sample))
    return None if subtype is None else RawLayout(data[0], fmt.channels, fmt.sample_rate, subtype)


def _parse_fmt(chunk: bytes) -> _WavFmt | None:
    if len(chunk) < 16:
        return None
    tag, channels, sample_rate, byte_rate, block_align, bits = struct.unpack_from("<HHIIHH", chunk)
    if tag == _WAVE_FORMAT_EXTENSIBLE:
        # cbSize(2) validBits(2) channelMask(4) then the 16-byte SubFormat GUID at offset 24.
        sub = chunk[24:40]
        tag = int.from_bytes(sub[:2], "little") if len(sub) == 16 and sub[2:] == _KSDATAFORMAT_TAIL else -1
    if channels == 0 or sample_rate == 0:
        return None
    frame_bytes = channels * ((bits + 7) // 8) if tag in _FIXED_FRAME_TAGS and bits else None
    per_block = int.from_bytes(chunk[18:20], "little") if tag == _IMA_ADPCM and len(chunk) >= 20 else 0
    return _WavFmt(
        tag,
        _WAV_ENCODINGS.get(tag, "unknown"),
        channels,
        sample_rate,
        byte_rate,
        block_align,
        bits,
        frame_bytes,
        per_block or None,
    )


def _wav_duration(
    fmt: _WavFmt, data: tuple[int, int] | None, total_size: int
) -> tuple[float | None, tuple[str, ...]]:
    """The frames really present (data bytes sent over the frame size) at the sample rate.

    The header's byte rate and block align are only trusted for encodings whose frame size the
    format does not fix: a writer that got them wrong would otherwise make a 60 s call 0 s or
    days long, while the decoder (which counts frames the same way as here) reads 60 s.
    """
    if data is None:
        return None, ()
    offset, declared = data
    available = total_size - offset
    if available < 0:
        return None, ()
    size = available if declared in _UNKNOWN_DATA_SIZES else min(declared, available)
    if fmt.samples_per_block and fmt.block_align:
        # IMA ADPCM decodes whole blocks (a partial last one too): as many frames as libsndfile
        # reads, where the byte rate (a rounded average) would be off by tens of milliseconds
        frames = -(-size // fmt.block_align) * fmt.samples_per_block
        return round(frames / fmt.sample_rate, 3), ()
    if fmt.frame_bytes is None:
        return (round(size / fmt.byte_rate, 3) if fmt.byte_rate else None), ()
    seconds = size // fmt.frame_bytes / fmt.sample_rate
    expected_rate = fmt.sample_rate * fmt.frame_bytes
    if fmt.byte_rate == expected_rate and fmt.block_align == fmt.frame_bytes:
        return round(seconds, 3), ()
    wrong = []
    if fmt.byte_rate != expected_rate:
        claimed = f"{size / fmt.byte_rate:,.3f} s" if fmt.byte_rate else "no length"
        wrong.append(f"byte rate of {fmt.byte_rate:,} bytes/s (it would make the audio {claimed} long)")
    if fmt.block_align != fmt.frame_bytes:
        wrong.append(f"block align of {fmt.block_align}")
    return round(seconds, 3), (
        f"The WAV header's {' and '.join(wrong)} disagrees with its own {fmt.sample_rate} Hz, "
        f"{fmt.channels}-channel, {fmt.bits_per_sample}-bit format ({expected_rate:,} bytes/s, "
        f"{fmt.frame_bytes} bytes a frame). The length shown ({seconds:,.3f} s) is counted from the "
        f"audio data actually present ({size:,} bytes), as the analyser and clips read it.",
    )


# --- MP3 --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _FrameHeader:
    version: int
    sample_rate: int
    bitrate_kbps: int
    channels: int
    padding: int

    @property
    def samples_per_frame(self) -> int:
        return 1152 if self.version == _MPEG1 else 576

    @property
    def length(self) -> int:
        """Frame length in bytes (Layer III: 144 or 72 x bitrate / sample rate, plus padding)."""
        return self.samples_per_frame // 8 * self.bitrate_kbps * 1000 // self.sample_rate + self.padding

    @property
    def side_info_size(self) -> int:
        if self.version == _MPEG1:
            return 17 if self.channels == 1 else 32
        return 9 if self.channels == 1 else 17


def _sniff_mp3(head: bytes, total_size: int) -> AudioFormat | None:
    """An ID3v2 tag and/or an MPEG-1/2/2.5 Layer III frame at the start; None if neither is there."""
    tag_size = _id3v2_size(head)
    frame = _frame_header(head, tag_size or 0)
    if frame is None or not _next_frame_agrees(head, tag_size or 0, frame):
        if tag_size is None:
            return None
        # An ID3 tag is MP3's own; the first frame lies beyond the bytes we were given.
        return AudioFormat(mime_type=MP3_MIME, container="mp3", encoding="mp3")
    return AudioFormat(
        mime_type=MP3_MIME,
        container="mp3",
        encoding="mp3",
        sample_rate=frame.sample_rate,
        channels=frame.channels,
        duration_seconds=_mp3_duration(head, tag_size or 0, frame, total_size),
    )


def _id3v2_size(head: bytes) -> int | None:
    """Length of a leading ID3v2 tag (header, body and optional footer), or None if absent."""
    if len(head) < 10 or head[:3] != b"ID3" or any(b & 0x80 for b in head[6:10]):
        return None
    body = head[6] << 21 | head[7] << 14 | head[8] << 7 | head[9]
    footer = 10 if head[5] & 0x10 else 0
    return 10 + body + footer


def _frame_header(head: bytes, pos: int) -> _FrameHeader | None:
    if pos + 4 > len(head):
        return None
    b0, b1, b2, b3 = head[pos : pos + 4]
    version, layer = (b1 >> 3) & 3, (b1 >> 1) & 3
    bitrate_index, rate_index = b2 >> 4, (b2 >> 2) & 3
    if b0 != 0xFF or b1 & 0xE0 != 0xE0 or version == 1 or layer != _LAYER_III:
        return None
    if bitrate_index in (0, 15) or rate_index == 3:
        return None  # free-format (0) is too rare to tell from chance bytes; 15 and 3 are invalid
    bitrates = _BITRATES_MPEG1 if version == _MPEG1 else _BITRATES_MPEG2
    return _FrameHeader(
        version=version,
        sample_rate=_SAMPLE_RATES[version][rate_index],
        bitrate_kbps=bitrates[bitrate_index],
        channels=1 if b3 >> 6 == _MONO else 2,
        padding=(b2 >> 1) & 1,
    )


def _next_frame_agrees(head: bytes, pos: int, frame: _FrameHeader) -> bool:
    """Two frame syncs in a row make a coincidental 0xFFFx start very unlikely; checked when visible."""
    length = frame.length
    if pos + length + 4 > len(head):
        return True
    following = _frame_header(head, pos + length)
    return (
        following is not None
        and following.version == frame.version
        and following.sample_rate == frame.sample_rate
    )


def _mp3_duration(head: bytes, pos: int, frame: _FrameHeader, total_size: int) -> float | None:
    """A Xing/Info or VBRI frame count when present, else constant bitrate over the audio bytes."""
    xing_at = pos + 4 + frame.side_info_size
    marker = head[xing_at : xing_at + 4]
    if marker in (b"Xing", b"Info") and len(head) >= xing_at + 12:
        (flags,) = struct.unpack_from(">I", head, xing_at + 4)
        if flags & 1:
            frames = int.from_bytes(head[xing_at + 8 : xing_at + 12], "big")
            samples = frames * frame.samples_per_frame - _lame_trim(head, xing_at, flags)
            return round(max(samples, 0) / frame.sample_rate, 3)
        if marker == b"Xing":
            return None  # a VBR stream without its frame count: a CBR estimate would be a guess
    vbri_at = pos + 4 + 32
    if head[vbri_at : vbri_at + 4] == b"VBRI" and len(head) >= vbri_at + 18:
        frames = int.from_bytes(head[vbri_at + 14 : vbri_at + 18], "big")
        return round(frames * frame.samples_per_frame / frame.sample_rate, 3)
    audio_bytes = total_size - pos
    if audio_bytes <= 0:
        return None
    return round(audio_bytes * 8 / (frame.bitrate_kbps * 1000), 3)


#: Encoders that write the LAME extension after the Xing/Info fields (ffmpeg's libmp3lame too).
_LAME_ENCODERS = (b"LAME", b"Lavc", b"Lavf", b"L3.9")


def _lame_trim(head: bytes, xing_at: int, flags: int) -> int:
    """The encoder delay plus end padding of a LAME tag (0 without one): samples counted in the
    frames that are not audio. The decoder (libsndfile's mpg123) drops them, so the length it
    decodes, and so every clip and analysis, is the frame count less these."""
    tag = xing_at + 8 + 4 * (flags & 1) + 4 * (flags >> 1 & 1) + 100 * (flags >> 2 & 1) + 4 * (flags >> 3 & 1)
    if head[tag : tag + 4] not in _LAME_ENCODERS or len(head) < tag + 24:
        return 0
    packed = int.from_bytes(head[tag + 21 : tag + 24], "big")  # 12 bits of delay, 12 of padding
    return (packed >> 12) + (packed & 0xFFF)
