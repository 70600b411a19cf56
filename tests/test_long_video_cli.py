"""The long-video flags of the CLIs that sample: ``smoke`` (tiny random model) and ``demo`` (toy weights)."""
from __future__ import annotations

import pytest

from lamp_model.__main__ import main

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.mark.parametrize("strategy, pieces", [("segments", "3 segments"), ("windows", "4 windows")])
def test_smoke_makes_a_long_video(tmp_path, capsys, strategy, pieces):
    assert main(["smoke", "--out", str(tmp_path), "--frames", "20", "--steps", "2", "--segment-frames", "8",
                 "--long-strategy", strategy, "--overlap", "2"]) == 0
    printed = capsys.readouterr().out
    assert f"sample_long_video, {pieces} (2 steps, 20 frames)" in printed
    assert (tmp_path / "lamp_smoke.gif").stat().st_size > 0 and (tmp_path / "lamp_smoke_strip.png").is_file()


def test_smoke_refuses_a_bad_overlap_in_one_line(tmp_path, capsys):
    assert main(["smoke", "--out", str(tmp_path), "--frames", "64", "--overlap", "16"]) == 2
    err = capsys.readouterr().err
    assert "--overlap" in err and "segments overlap must be 1..15" in err and "Traceback" not in err


def test_demo_long_video_reports_each_chunk(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--frames", "31", "--steps", "2", "--long-strategy", "segments",
                 "--content-lock", "--color-reference", "original"]) == 0
    printed = capsys.readouterr().out
    assert "long video: 31 frames as 3 segments of 16 (overlap 4)" in printed
    assert "px/frame per 16-frame chunk" in printed and "chunks matching 'right'" in printed
    assert (tmp_path / "right_a_blue_triangle_strip.png").is_file()
