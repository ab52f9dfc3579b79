"""The timeline picture: a real PNG, small for a long call, lanes drawn where the talk is."""

from __future__ import annotations

import io
import subprocess
import sys

from PIL import Image

from cte1_mcp.audio.analytics import CallAnalytics, analyse
from cte1_mcp.audio.timeline import WIDTH, render_png, tick_labels
from cte1_mcp.simulator.calls import SampleCall, benchmark_call, find_call
from cte1_mcp.simulator.wav import wav_bytes


def analysed(call: SampleCall | None, roles: tuple[str, ...] = ("customer", "agent")) -> CallAnalytics:
    assert call is not None
    return analyse(io.BytesIO(wav_bytes(call.wav_spec())), roles)


def test_a_30_minute_call_is_under_100_kb_and_1200_px_wide() -> None:
    png = render_png(analysed(benchmark_call(55)))
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.width == WIDTH == 1200
    assert 200 < image.height < 600
    assert len(png) < 100_000


def test_lanes_are_coloured_where_each_party_talks() -> None:
    analytics = analysed(find_call("05053698341", 942125, 1))
    image = Image.open(io.BytesIO(render_png(analytics))).convert("RGB")
    left, right = 170, WIDTH - 30
    span = right - left

    def column(seconds: float) -> int:
        return round(left + span * seconds / analytics.durationSeconds)

    agent_turn = next(s for s in analytics.segments if s.channel == 1 and s.endSeconds - s.startSeconds > 2)
    x = column((agent_turn.startSeconds + agent_turn.endSeconds) / 2)
    lane_1_y = 58 + 46 + 14 + 23
    assert image.getpixel((x, lane_1_y)) != (255, 255, 255)
    assert analytics.longestSilence is not None
    hold = column((analytics.longestSilence.startSeconds + analytics.longestSilence.endSeconds) / 2)
    grey = image.getpixel((hold, lane_1_y))
    assert grey != (255, 255, 255) and len(set(grey)) == 1  # the hold's grey band, no talk on it


def test_mono_has_one_lane_and_no_overtalk_row() -> None:
    mono = Image.open(io.BytesIO(render_png(analysed(find_call("05053698341", 942126, 1)))))
    stereo = Image.open(io.BytesIO(render_png(analysed(find_call("05053698341", 942130, 1)))))
    assert mono.height < stereo.height


def test_importing_the_server_does_not_import_the_imaging_library() -> None:
    code = "import sys, cte1_mcp.mcp_server, cte1_mcp.analysis; print('PIL' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


def test_axis_ticks_are_labelled_in_m_ss_like_the_caption() -> None:
    # Before: decimal minutes ("0.5", "1", "1.5") under a caption that names moments as m:ss.
    assert [label for _, label in tick_labels(280.447)] == [
        "0:00", "0:30", "1:00", "1:30", "2:00", "2:30", "3:00", "3:30", "4:00", "4:30",
    ]  # fmt: skip
    assert tick_labels(20.0) == [(0.0, "0:00"), (15.0, "0:15")]
    assert [label for _, label in tick_labels(55 * 60)][-3:] == ["45:00", "50:00", "55:00"]
