"""Long videos with a per-frame ControlNet hint batch: every segment / window sees its own frames' hints.

ComfyUI's ControlNet broadcasts its hint batch to whatever batch it is called with (first images, tiled), so a
segment holding frames 12..27 of a 64-frame video would get hints 0..15 unless the sampler tells it which
frames it holds (``lamp_model.long_video.cover_frames`` → ``ControlledUNet.set_frame_indices`` →
``nodes.host.hints_for_frames``). The fake ControlNet below records which hint images each call saw.
"""
from __future__ import annotations

import pytest
import torch

from lamp_model.long_video import plan_long_video, sample_long_video


class HintRecordingControl:
    """A ComfyUI ControlNet in miniature: the hint batch is ``[frames, 3, H, W]`` whose image i is filled with i;
    ``get_control`` records the hint images of the call and returns zero residuals of the tiny UNet's shapes."""

    shapes = [(16, 8, 8), (16, 8, 8), (16, 4, 4), (32, 4, 4)]

    def __init__(self, images: int):
        self.cond_hint_original = torch.arange(images, dtype=torch.float32)[:, None, None, None].expand(
            images, 3, 8, 8).clone()
        self.cond_hint, self.previous_controlnet, self.seen = None, None, []

    def get_control(self, x, sigma, cond, batched, options):
        self.seen.append([int(v) for v in self.cond_hint_original[:, 0, 0, 0]])
        zeros = [x.new_zeros(x.shape[0], *s) for s in self.shapes]
        return {"output": zeros, "middle": [x.new_zeros(x.shape[0], 32, 4, 4)], "input": []}


def _run(tiny_unet, frames, strategy, images, **kw):
    from lamp_model.sigma_sampling import _alphas_cumprod, sigma_of_alpha
    from nodes.control import ControlledUNet

    sampling = type("Sampling", (), {"sigmas": sigma_of_alpha(_alphas_cumprod()).float()})()
    control = HintRecordingControl(images)
    unet = ControlledUNet(tiny_unet, control, control, sampling)
    torch.manual_seed(0)
    first, noise = torch.randn(1, 4, 1, 8, 8), torch.randn(1, 4, frames, 8, 8)
    cond, uncond = torch.randn(1, 7, 16), torch.randn(1, 7, 16)
    with torch.no_grad():
        sample_long_video(unet, first, cond, uncond, noise, steps=2, strategy=strategy, segment_frames=4, **kw)
    assert control.cond_hint_original[:, 0, 0, 0].tolist() == list(range(images)), "hints restored after"
    assert unet.frames is None
    return control.seen


@pytest.mark.parametrize("overlap,content_lock", [(1, False), (2, True)])
def test_each_segment_gets_its_own_frames_hints(tiny_unet, overlap, content_lock):
    plan = plan_long_video(10, "segments", 4, overlap)
    seen = _run(tiny_unet, 10, "segments", 10, overlap=overlap, content_lock=content_lock)
    passes = 2 if content_lock else 1  # the lock's recording pass calls the ControlNet too
    want = []
    for j, (start, stop) in enumerate(plan.spans):
        want += [list(range(start, stop))] * (2 * (passes if j > 0 else 1))  # 2 steps per segment
    assert seen == want and len(plan.spans) > 2


def test_each_window_gets_frame_zero_and_its_frames_hints(tiny_unet):
    plan = plan_long_video(10, "windows", 4)
    seen = _run(tiny_unet, 10, "windows", 10)
    assert seen == [[0, *range(a, b)] for a, b in plan.spans] * 2 and len(plan.spans) > 2


def test_a_short_hint_batch_is_tiled_as_comfyui_tiles_it(tiny_unet):
    seen = _run(tiny_unet, 10, "segments", 4, overlap=1)
    assert seen[-1] == [v % 4 for v in range(plan_long_video(10, "segments", 4, 1).spans[-1][0], 10)]


def test_one_hint_for_all_frames_and_short_videos_are_left_alone(tiny_unet):
    assert _run(tiny_unet, 10, "segments", 1, overlap=1) == [[0]] * len(_run(tiny_unet, 10, "segments", 1, overlap=1))
    assert _run(tiny_unet, 4, "segments", 4) == [[0, 1, 2, 3]] * 2  # one piece: the whole hint batch as given
