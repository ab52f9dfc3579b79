"""Decoding what the sniffer lists: a WAV whose data size a streaming writer left as 0."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
import soundfile

from cte1_mcp.audio.decode import iter_blocks, probe
from cte1_mcp.audio.sniff import sniff_format


def zero_data_size(wav: bytes) -> bytes:
    """The same file with its data chunk's size field 0 (what a writer that cannot seek back leaves)."""
    at = wav.index(b"data") + 4
    return wav[:at] + struct.pack("<I", 0) + wav[at + 4 :]


@pytest.mark.parametrize("subtype", ["PCM_16", "ULAW", "ALAW", "PCM_U8", "PCM_24", "FLOAT"])
def test_a_wav_with_data_size_0_decodes_to_the_end_of_its_file(subtype: str) -> None:
    """Regression: libsndfile reads such a file as 0 frames, so the analysis said "a 0.0-minute
    call, nobody talked" while get_call_audio listed 3 s. The samples are the intact file's."""
    rng = np.random.default_rng(5)
    samples = np.clip(rng.standard_normal((8000 * 3 + 5, 2)) * 0.2, -1, 1).astype(np.float32)
    intact = io.BytesIO()
    soundfile.write(intact, samples, 8000, format="WAV", subtype=subtype)
    expected, _ = soundfile.read(io.BytesIO(intact.getvalue()), dtype="int16")
    if subtype == "FLOAT":  # the decoder scales floats by 32767 (see decode._from_float)
        expected = np.rint(samples * 32767).astype(np.int16)
    unsized = zero_data_size(intact.getvalue())
    assert soundfile.info(io.BytesIO(unsized)).frames == 0  # what libsndfile alone makes of it

    stream = probe(io.BytesIO(unsized))
    decoded = np.concatenate(list(iter_blocks(io.BytesIO(unsized), 5000)))
    listed = sniff_format(unsized[: 64 * 1024], None, len(unsized)).duration_seconds
    assert (stream.frames, stream.channels, stream.sample_rate) == (8000 * 3 + 5, 2, 8000)
    assert listed == round(stream.duration_seconds, 3)
    assert np.array_equal(decoded, expected)
    middle = np.concatenate(list(iter_blocks(io.BytesIO(unsized), start=8000, stop=8016)))
    assert np.array_equal(middle, decoded[8000:8016])
