"""Whether a sentence's channel carries the other party's echo there: a delayed, fainter copy.

The analyser's crosstalk rule matches copies up to 8 ms late (a stereo bleed); a line echo comes
40-300 ms late, so a party's talk segments can hold the other party's echo and the engine writes it
as that party's words. The words alone cannot tell an echo from a party saying the same thing (「は
い」 is in half of what an agent says), nor can loudness: a customer's line 8-12 dB quieter than the
agent's is ordinary, and an engine's word times can fall in the silence beside the talk (measured:
three of the corpus's genuine 「はい」 were dropped as echo, their channel "100 dB quieter" over
times 0.2-0.5 s off). What an echo is, is a copy: the same test as the analyser's, a delayed copy
of the louder channel explaining most of the energy, at the echo's longer delays, over 100-ms
windows of the party's own talk.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import BinaryIO

import numpy as np
import numpy.typing as npt

from cte1_mcp.audio.decode import iter_blocks
from cte1_mcp.audio.frames import LEAK_CANDIDATE_DB
from cte1_mcp.audio.talk import LEAK_RHO2

#: The longest echo delay looked for: a line echo's round trip from the recorder to the far end's
#: hybrid and back (tens of ms on a fixed line, up to a few hundred through mobile and VoIP legs).
MAX_ECHO_DELAY_SECONDS = 0.5
#: The windows a sentence's talk is judged in (ten of the analyser's frames).
WINDOW_SECONDS = 0.1
#: A sentence is an echo when at least this share of its talk's windows is the other channel's copy.
ECHO_SHARE = 0.5
#: The nearest talk segment a sentence timed beside its talk (an engine's times run into the
#: padding around a piece) is judged by, at most this far away.
NEAREST_TALK_SECONDS = 1.0

#: ``(channel, start, end)`` of a party's talk, as the analyser found it.
Talk = tuple[int, float, float]


class EchoTest:
    """Judges sentences of one two-channel recording (``file``) against its talk segments."""

    def __init__(self, file: BinaryIO, sample_rate: int, talk: Sequence[Talk]) -> None:
        self._file = file
        self._rate = sample_rate
        self._talk: dict[int, list[tuple[float, float]]] = {}
        for channel, start, end in talk:
            if end > start:
                self._talk.setdefault(channel, []).append((start, end))
        for spans in self._talk.values():
            spans.sort()

    def __call__(self, channel: int, start: float, end: float) -> bool:
        """Whether ``channel``'s talk at ``start``-``end`` is mostly a delayed copy of the other."""
        spans = self.talk_of(channel, start, end)
        if not spans:
            return False
        echoed = windows = 0
        for span_start, span_end in spans:
            own, other = self._read(channel, span_start, span_end)
            e, w = echo_windows(own, other, self._rate)
            echoed += e
            windows += w
        return windows > 0 and echoed >= ECHO_SHARE * windows

    def talk_of(self, channel: int, start: float, end: float) -> list[tuple[float, float]]:
        """The parts of ``channel``'s talk within ``start``-``end``; when none makes a window (the
        engine timed the sentence beside its talk, or on its edge), a stretch as long as the
        sentence (one window at least) of the talk segment nearest it (within
        ``NEAREST_TALK_SECONDS``), where its words were really said."""
        spans = self._talk.get(channel, [])
        inside = [(max(s, start), min(e, end)) for s, e in spans if s < end and start < e]
        if any(e - s >= WINDOW_SECONDS for s, e in inside):  # each span is judged in whole windows
            return inside
        near = [(max(s - end, start - e), (s, e)) for s, e in spans]
        near = [item for item in near if item[0] <= NEAREST_TALK_SECONDS]
        if not near:
            return []
        s, e = min(near)[1]
        length = max(end - start, WINDOW_SECONDS)
        if e - s <= length:  # a short segment: the stretch centred on it (its edges are trimmed talk)
            middle = (s + e) / 2
            return [(max(middle - length / 2, 0.0), middle + length / 2)]
        # centred on the sentence, moved inside the segment (a segment can be minutes long)
        first = min(max((start + end) / 2 - length / 2, s), e - length)
        return [(first, first + length)]

    def _read(
        self, channel: int, start: float, end: float
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """``channel`` over ``start``-``end``, and the other channel from ``MAX_ECHO_DELAY_SECONDS``
        before (zeros before the recording's start, so index ``i + delay`` is always ``i``'s past)."""
        first, stop = round(start * self._rate), round(end * self._rate)
        delay = round(MAX_ECHO_DELAY_SECONDS * self._rate)
        early = max(first - delay, 0)
        blocks = list(iter_blocks(self._file, start=early, stop=stop))
        both = np.concatenate(blocks).astype(np.float64) if blocks else np.zeros((0, 2))
        own = both[first - early :, channel]
        other = np.concatenate([np.zeros(delay - (first - early)), both[:, 1 - channel]])
        return own, other[: delay + len(own)]


def echo_windows(own: npt.NDArray[np.float64], other: npt.NDArray[np.float64], rate: int) -> tuple[int, int]:
    """``(windows that are echo, windows)`` of ``own``; ``other`` starts ``MAX_ECHO_DELAY_SECONDS``
    earlier. The delay is the one at which the whole stretch correlates best (an echo path's delay
    does not change within a call); a window is echo when the other channel is ``LEAK_CANDIDATE_DB``
    louder there and its copy at that delay explains ``LEAK_RHO2`` of the window's energy."""
    size = round(WINDOW_SECONDS * rate)
    count = len(own) // size
    if count == 0:
        return 0, 0
    n = len(own) + len(other)
    fft = 1 << (n - 1).bit_length()
    # correlation[k] = sum_i own[i] * other[i + k]; other[i + max_delay - d] is own[i]'s time minus d
    correlation = np.fft.irfft(np.fft.rfft(other, fft) * np.conj(np.fft.rfft(own, fft)), fft)
    max_delay = len(other) - len(own)
    shift = int(np.argmax(np.abs(correlation[: max_delay + 1])))
    copy = other[shift : shift + len(own)]
    mine = own[: count * size].reshape(count, size)
    theirs = copy[: count * size].reshape(count, size)
    own_energy = np.einsum("ij,ij->i", mine, mine)
    their_energy = np.einsum("ij,ij->i", theirs, theirs)
    cross = np.einsum("ij,ij->i", mine, theirs)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho2 = np.where(own_energy * their_energy > 0, cross**2 / (own_energy * their_energy), 0.0)
    louder = their_energy >= own_energy * 10 ** (LEAK_CANDIDATE_DB / 10)
    return int(np.count_nonzero(louder & (rho2 >= LEAK_RHO2))), count
