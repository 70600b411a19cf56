"""Long videos in ComfyUI: the LAMP Sampler's long-video inputs, LAMP First Frame's frame count, progress and
Cancel over all segments, and the 64-frame workflow (nodes as plain classes, no ComfyUI)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lamp_model.long_video import STRATEGIES, plan_long_video, sample_long_video
from lamp_model.noise import make_raw_noise
from nodes import host
from nodes.motion_model import SD1_LATENT_SCALE, LampModel
from nodes.sampler import LampSampler
from test_nodes import cond, first_frame_latent, folders, lamp_model, motion_file, parts, run_sampler  # noqa: F401

pytestmark = [pytest.mark.usefixtures("restore_host_state"),
              pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bars(monkeypatch):
    made = []
    real = host.progress
    monkeypatch.setattr(host, "progress", lambda total, previews=False: made.append(real(total, previews)) or made[-1])
    return made


def test_sampler_makes_a_long_video_with_the_engine(lamp_model, bars):
    latent = first_frame_latent(frames=10)
    out = run_sampler(lamp_model, latent, steps=2, segment_frames=4, overlap=1, content_lock=False,
                      color_reference="segment start")["samples"]
    want = sample_long_video(lamp_model.unet, (latent["samples"][:1] * SD1_LATENT_SCALE).transpose(0, 1)[None],
                             cond(seed=1)[0][0], cond(seed=2)[0][0], make_raw_noise(5, (1, 4, 10, 4, 4)), steps=2,
                             guidance_scale=7.5, segment_frames=4, overlap=1, content_lock=False,
                             color_reference="segment")
    assert out.shape == (10, 4, 4, 4)
    assert torch.allclose(out, want[0].transpose(0, 1) / SD1_LATENT_SCALE, atol=1e-5)
    assert torch.allclose(out[0], latent["samples"][0], atol=1e-6)
    assert bars[-1].total == 6 and bars[-1].history == [1, 2, 3, 4, 5, 6]  # 3 segments x 2 steps


def test_sampler_defaults_are_the_measured_ones(lamp_model):
    latent = first_frame_latent(frames=10)
    out = run_sampler(lamp_model, latent, steps=2, segment_frames=4)["samples"]
    want = sample_long_video(lamp_model.unet, (latent["samples"][:1] * SD1_LATENT_SCALE).transpose(0, 1)[None],
                             cond(seed=1)[0][0], cond(seed=2)[0][0], make_raw_noise(5, (1, 4, 10, 4, 4)), steps=2,
                             guidance_scale=7.5, segment_frames=4, overlap=2, content_lock=True,
                             color_reference="original")  # overlap: the default 4, capped at segment_frames - 2
    assert torch.allclose(out, want[0].transpose(0, 1) / SD1_LATENT_SCALE, atol=1e-5)


def test_sampler_windows_and_one_segment_on_the_device(lamp_model, bars, monkeypatch):
    held = []
    real = LampModel.on_device
    monkeypatch.setattr(LampModel, "on_device", lambda self, d, dt, frames, h, w: held.append(frames) or
                        real(self, d, dt, frames, h, w))
    out = run_sampler(lamp_model, first_frame_latent(frames=11), steps=2, long_strategy="windows",
                      segment_frames=4, overlap=1)["samples"]
    assert torch.isfinite(out).all() and out.shape[0] == 11
    assert bars[-1].history == [1, 2] and held == [4]


def test_short_latents_ignore_the_long_options(lamp_model):
    latent = first_frame_latent(frames=4)
    plain = run_sampler(lamp_model, latent, steps=2)["samples"]
    for strategy in STRATEGIES:
        assert torch.equal(run_sampler(lamp_model, latent, steps=2, long_strategy=strategy)["samples"], plain)


def test_cancel_between_segment_steps(lamp_model, bars):
    host.simulate_cancel(after=2)  # Cancel during the 3rd step = step 1 of segment 2
    with pytest.raises(host.Interrupted):
        run_sampler(lamp_model, first_frame_latent(frames=10), steps=2, segment_frames=4, overlap=1)
    assert bars[-1].history == [1, 2]


@pytest.mark.parametrize("kwargs, words", [
    ({"overlap": 4}, "segments overlap must be 1..3"), ({"long_strategy": "context"}, "segments, windows"),
    ({"color_reference": "average"}, "color_reference must be one of"),
])
def test_sampler_long_options_errors(lamp_model, kwargs, words):
    with pytest.raises(ValueError, match=f"LAMP Sampler: .*{words}"):
        run_sampler(lamp_model, first_frame_latent(frames=10), steps=1, segment_frames=4, **kwargs)


def test_sampler_inputs_describe_the_long_options():
    optional = LampSampler.INPUT_TYPES()["optional"]
    assert list(optional) == ["long_strategy", "segment_frames", "overlap", "content_lock", "color_reference",
                              "color_consistency"]
    assert optional["long_strategy"][0] == list(STRATEGIES) and optional["segment_frames"][1]["default"] == 16
    assert all(spec[1].get("tooltip") for spec in optional.values())


def test_first_frame_makes_a_64_frame_latent():
    latent = first_frame_latent(frames=64)
    assert latent["samples"].shape == (64, 4, 4, 4) and not latent["samples"][1:].any()


def test_long_video_workflow_is_64_frames_in_segments():
    wf = json.loads((ROOT / "workflows" / "lamp_long_video.json").read_text(encoding="utf-8"))
    first = next(n for n in wf["nodes"] if n["type"] == "LAMP_FirstFrame")
    sampler = next(n for n in wf["nodes"] if n["type"] == "LAMP_Sampler")
    assert first["widgets_values"] == [512, 320, 64, "stretch"]
    optional = LampSampler.INPUT_TYPES()["optional"]
    assert sampler["widgets_values"][5:] == [spec[1]["default"] for spec in optional.values()], \
        "the long-video workflow uses the sampler's defaults"
    strategy, seg, overlap = sampler["widgets_values"][5:8]
    assert strategy in STRATEGIES and seg == 16
    plan = plan_long_video(64, strategy, seg, None if overlap < 0 else overlap)
    assert plan.frames == 64 and not plan.single
    assert any(n["type"] == "LAMP_SharedNoise" for n in wf["nodes"])
