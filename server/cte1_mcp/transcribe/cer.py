"""Character error rate, the measure of Japanese speech recognition (words are not space-separated).

Both texts are normalised first (NFKC, so full- and half-width forms compare equal; punctuation,
symbols and spaces removed, since engines punctuate differently and a reviewer reads past them),
then CER = edit distance (substitutions + deletions + insertions) / reference characters. Used by
the tests, the benchmark and ``asr eval``.
"""

from __future__ import annotations

import unicodedata

import numpy as np


def normalise(text: str) -> str:
    """NFKC, letters, marks and digits only (no punctuation, symbols, spaces)."""
    return "".join(
        char for char in unicodedata.normalize("NFKC", text) if unicodedata.category(char)[0] in "LMN"
    )


def edit_distance(reference: str, hypothesis: str, *, within: bool = False) -> int:
    """Levenshtein distance; with ``within``, the distance from ``reference`` to the closest stretch
    of ``hypothesis`` (how far ``reference`` is from being said somewhere in it). Written out with
    numpy rather than taken from a library: one row at a time, the insertions of a row resolved at
    once as a running minimum, so a whole call's text (thousands of characters a party) takes
    milliseconds without another dependency."""
    if not reference or not hypothesis:
        return len(reference) if within else len(reference) + len(hypothesis)
    hyp = np.frombuffer(hypothesis.encode("utf-32-le"), dtype=np.uint32)
    steps = np.arange(len(hyp) + 1, dtype=np.int64)
    row = np.zeros_like(steps) if within else steps.copy()
    for index, char in enumerate(reference, start=1):
        substituted = row[:-1] + (hyp != ord(char))
        deleted = row[1:] + 1
        best = np.empty_like(row)
        best[0] = index
        best[1:] = np.minimum(substituted, deleted)
        # an insertion costs 1 from the left neighbour: min over k <= j of best[k] + (j - k)
        row = np.minimum.accumulate(best - steps) + steps
    return int(row.min() if within else row[-1])


def cer(reference: str, hypothesis: str) -> float:
    """Character error rate of ``hypothesis`` against ``reference``, both normalised (0.0 when both
    are empty; a hypothesis for an empty reference counts its characters, as insertions over one)."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    return edit_distance(ref, hyp) / max(len(ref), 1)
