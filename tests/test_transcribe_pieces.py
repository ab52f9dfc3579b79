"""Pieces an engine hears, planned from talk segments whose layout the test sets by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from cte1_mcp.transcribe.pieces import Piece, plan_pieces


def test_a_pause_of_a_second_or_more_always_ends_a_piece() -> None:
    talk = [(0, 1.0, 2.0), (0, 2.5, 3.0), (0, 4.0, 5.0)]  # pauses of 0.5 s and 1.0 s
    assert plan_pieces(talk, 10.0, pad_seconds=0) == [Piece(0, 1.0, 3.0), Piece(0, 4.0, 5.0)]


def test_channels_are_planned_apart_and_returned_in_start_order() -> None:
    talk = [(1, 0.5, 1.5), (0, 0.0, 1.0), (1, 5.0, 6.0), (0, 3.0, 4.0)]
    pieces = plan_pieces(talk, 10.0, pad_seconds=0)
    assert [(p.channel, p.start) for p in pieces] == [(0, 0.0), (1, 0.5), (0, 3.0), (1, 5.0)]


def test_long_talk_is_cut_at_its_longest_pause_and_no_piece_exceeds_the_window() -> None:
    # 40 s of talk in 2-s turns with 0.3-s pauses, one 0.8-s pause at 20 s: the cut goes there.
    talk, t = [], 0.0
    while t < 40:
        talk.append((0, t, t + 2.0))
        t += 2.8 if abs(t + 2.0 - 20.5) < 1.0 else 2.3
    pieces = plan_pieces(talk, 60.0, max_seconds=28.0, pad_seconds=0)
    assert len(pieces) == 2
    assert all(p.duration <= 28.0 for p in pieces)
    cut_gap = (pieces[0].end, pieces[1].start)
    assert cut_gap[1] - cut_gap[0] == pytest.approx(0.8, abs=1e-6)


def test_one_stretch_with_no_pause_is_cut_into_equal_parts() -> None:
    pieces = plan_pieces([(0, 0.0, 70.0)], 70.0, max_seconds=28.0, pad_seconds=0)
    assert [p.duration for p in pieces] == pytest.approx([70 / 3] * 3, abs=0.002)
    assert pieces[0].start == 0.0 and pieces[-1].end == 70.0


def test_padding_stays_inside_the_recording_and_short_of_the_neighbouring_piece() -> None:
    pieces = plan_pieces([(0, 0.1, 1.0), (0, 2.1, 3.0), (0, 9.9, 10.0)], 10.0, pad_seconds=0.2)
    assert pieces[0] == Piece(0, 0.0, 1.2)
    assert pieces[1] == Piece(0, 1.9, 3.2)
    assert pieces[2] == Piece(0, 9.7, 10.0)
    close = plan_pieces([(0, 0.0, 1.0), (0, 2.2, 3.0)], 10.0, pad_seconds=2.0, gap_seconds=1.0)
    assert close[0].end == close[1].start == 1.6  # half-way into the 1.2-s pause, no overlap


def test_padded_pieces_still_fit_the_window() -> None:
    pieces = plan_pieces([(0, 5.0, 95.0)], 100.0, max_seconds=28.0, pad_seconds=0.2)
    assert all(p.duration <= 28.0 + 1e-9 for p in pieces)


def test_empty_and_reversed_segments_give_no_piece() -> None:
    assert plan_pieces([], 10.0) == []
    assert plan_pieces([(0, 3.0, 3.0), (1, 5.0, 4.0)], 10.0) == []


def test_a_model_fingerprint_changes_with_any_file_and_ignores_nothing(tmp_path: Path) -> None:
    from cte1_mcp.transcribe.base import fingerprint

    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(b"a")
    (tmp_path / "sub" / "b.txt").write_bytes(b"b")
    first = fingerprint(tmp_path)
    assert first == fingerprint(tmp_path)
    (tmp_path / "sub" / "b.txt").write_bytes(b"B")
    assert fingerprint(tmp_path) != first
    (tmp_path / "sub" / "b.txt").write_bytes(b"b")
    (tmp_path / "sub" / "b.txt").rename(tmp_path / "sub" / "c.txt")
    assert fingerprint(tmp_path) != first


def test_a_model_of_links_like_a_hub_snapshot_is_fingerprinted_by_their_targets(tmp_path: Path) -> None:
    from cte1_mcp.transcribe.base import fingerprint

    blobs, snapshot = tmp_path / "blobs", tmp_path / "snapshot"
    blobs.mkdir()
    snapshot.mkdir()
    (blobs / "1").write_bytes(b"weights")
    (snapshot / "model.bin").symlink_to(blobs / "1")
    empty = tmp_path / "empty"
    empty.mkdir()
    first = fingerprint(snapshot)
    assert first != fingerprint(empty)
    (blobs / "1").write_bytes(b"other weights")
    assert fingerprint(snapshot) != first
