"""The character error rate used by the tests, the benchmark and ``asr eval``."""

from __future__ import annotations

import random

import pytest

from cte1_mcp.transcribe.cer import cer, edit_distance, normalise


def plain_levenshtein(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, start=1):
        previous, row[0] = row[:], i
        for j, cb in enumerate(b, start=1):
            row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (ca != cb))
    return row[-1]


def test_the_edit_distance_is_levenshtein_on_random_strings() -> None:
    rng = random.Random(15)
    for _ in range(500):
        a = "".join(rng.choice("あいうえ漢") for _ in range(rng.randint(0, 14)))
        b = "".join(rng.choice("あいうえ漢") for _ in range(rng.randint(0, 14)))
        assert edit_distance(a, b) == plain_levenshtein(a, b), (a, b)


def test_normalisation_ignores_width_punctuation_and_spaces() -> None:
    assert normalise("ＡＢＣ　１２３、です。「はい」！？ ・～") == "ABC123ですはい"  # noqa: RUF001
    assert cer("パソコンの調子が悪いんです。", "パソコンの 調子が悪いんです") == 0.0


def test_cer_counts_substitutions_deletions_and_insertions_over_the_reference() -> None:
    assert cer("パソコンの調子が悪いんです", "パソコンの調子が悪いです") == pytest.approx(1 / 13)
    assert cer("はい", "") == 1.0
    assert cer("はい", "はいはいはい") == 2.0  # insertions can take it past 100 %
    assert cer("", "") == 0.0


def test_the_distance_within_a_longer_text_is_to_its_closest_stretch() -> None:
    assert edit_distance("料金", "もしもし料金のことで", within=True) == 0
    assert edit_distance("料金", "もしもし科金のことで", within=True) == 1
    assert edit_distance("はい", "", within=True) == 2
