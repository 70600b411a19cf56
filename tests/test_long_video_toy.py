"""The toy long-video measurement (lamp_model.toy.long_eval): canvas, ground truth, the following tracker."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from lamp_model.toy import codec, long_eval, world


def test_long_canvas_leaves_room_for_the_whole_travel():
    assert long_eval.long_canvas("right", 64) == (32, 72) and long_eval.long_canvas("down", 64) == (72, 32)
    assert long_eval.long_canvas("right", 16) == (32, 32) and long_eval.long_canvas("grow", 64) == (32, 32)
    scene = world.unseen_first_frames("right", 6)
    far = max(s.cx + s.size * 1.55 for s in scene) + world.SHIFT_PX / 15 * 63
    assert far < long_eval.long_canvas("right", 64)[1]


@pytest.mark.parametrize("motion", long_eval.MOTIONS)
def test_ground_truth_long_clips_score_perfectly(motion):
    scene = world.unseen_first_frames(motion, 1)[0]
    h, w = long_eval.long_canvas(motion, 64)
    video = codec.decode(codec.encode(world.render(long_eval.continued(scene, motion), h, w)))
    figures = long_eval.score_video(video, scene.shape, motion)
    assert figures["ok"] == [True] * 4 and figures["second_object"] == 0
    assert all(abs(v - 0.8) < 0.05 for v in figures["speed"]) and abs(figures["shift"] - 50.4) < 1
    assert figures["seam"] < 0.3 and figures["iou_tail"] > 0.8


def test_following_tracker_ignores_and_reports_a_second_object():
    scene = world.unseen_first_frames("right", 1)[0]
    frames = long_eval.continued(scene, "right")
    video = world.render(frames, 32, 72)
    ghost = world.render([replace(scene, cx=66.0)], 32, 72)[0]  # a still copy at the right edge, frames 8-30
    mask = (ghost - world.render([replace(scene, cx=-50.0)], 32, 72)[0]).abs().sum(0, keepdim=True) > 0.05
    video[8:31] = torch.where(mask, ghost, video[8:31])
    figures = long_eval.score_video(video, scene.shape, "right")
    assert figures["ok"][0] and abs(figures["speed"][0] - 0.8) < 0.05  # the moving object is followed
    assert math.isclose(figures["second_object"], 23 / 63, abs_tol=0.02)
