"""The metric definitions of issue 8 as interval arithmetic, checked on hand-worked timelines."""

from __future__ import annotations

import pytest

from cte1_mcp.audio import metrics


def test_pauses_under_the_bridge_are_talk_and_clicks_are_dropped() -> None:
    assert metrics.bridge([(0.0, 1.0), (1.4, 2.0), (2.6, 3.0), (5.0, 5.05)]) == ((0.0, 2.0), (2.6, 3.0))


def test_a_two_party_call_worked_by_hand() -> None:
    # customer: 1-4 s, 10-12 s; agent: 3.5-8 s (starts 0.5 s before the customer ends: an
    # interruption exactly at the grace), 11.8-13 s (0.2 s overlap: a backchannel-length overlap)
    customer = [(1.0, 4.0), (10.0, 12.0)]
    agent = [(3.5, 8.0), (11.8, 13.0)]
    result = metrics.compute([customer, agent], 20.0)
    assert [p.talk_seconds for p in result.parties] == pytest.approx([5.0, 5.7])
    assert [p.turns for p in result.parties] == [2, 2]
    assert [p.longest_monologue_seconds for p in result.parties] == pytest.approx([3.0, 4.5])
    assert [p.interruptions for p in result.parties] == [0, 1]
    assert result.overtalk_seconds == pytest.approx(0.7)
    assert result.overtalk_count == 1
    # neither talks: 0-1, 8-10, 13-20
    assert result.non_talk_seconds == pytest.approx(10.0)
    assert result.longest_silence == pytest.approx((13.0, 20.0))
    assert result.long_silences == ((13.0, 20.0),)


def test_a_short_overlap_is_neither_overtalk_count_nor_interruption() -> None:
    result = metrics.compute([[(0.0, 3.0)], [(2.7, 5.0)]], 5.0)
    assert result.overtalk_count == 0
    assert [p.interruptions for p in result.parties] == [0, 0]
    assert result.overtalk_seconds == pytest.approx(0.3)


def test_mono_has_no_overtalk_or_interruptions() -> None:
    result = metrics.compute([[(1.0, 2.0), (8.0, 9.0)]], 10.0)
    assert result.overtalk_seconds is None and result.overtalk_count is None
    assert result.parties[0].interruptions is None
    assert result.longest_silence == pytest.approx((2.0, 8.0))
    assert len(result.long_silences) == 1


def test_a_silent_call_is_all_non_talk() -> None:
    result = metrics.compute([[], []], 12.0)
    assert result.non_talk_seconds == 12.0 and result.longest_silence == (0.0, 12.0)
    assert [p.talk_seconds for p in result.parties] == [0.0, 0.0]
    assert result.overtalk_count == 0


def test_intersection_and_gaps() -> None:
    assert metrics.intersection([(0, 2), (3, 5)], [(1, 4)]) == ((1, 2), (3, 4))
    assert metrics.gaps([(1, 2), (3, 4)], 5) == ((0, 1), (2, 3), (4, 5))
