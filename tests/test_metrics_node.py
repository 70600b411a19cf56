"""LAMP Video Metrics as a plain class (no ComfyUI), on a tiny random transformers CLIP in a models/lamp_clip
folder; numbers are checked against the engine's functions."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from lamp_model import metrics as M
from lamp_model.tiny_eval import write_tiny_clip
from nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, host
from nodes.metrics_node import LampVideoMetrics


@pytest.fixture
def clip_folder(tmp_path_factory) -> Path:
    root = tmp_path_factory.getbasetemp() / "lamp_clip_models"
    if not (root / "tiny" / "config.json").is_file():
        write_tiny_clip(root / "tiny")
    return root


@pytest.fixture
def node(clip_folder, tmp_path, restore_host_state) -> LampVideoMetrics:
    host._fallback_dirs[host.CLIP_FOLDER_NAME] = str(clip_folder)
    host.configure_fallback(temp=str(tmp_path / "temp"))
    return LampVideoMetrics()


def frames(seed: int, n: int = 6) -> torch.Tensor:
    return torch.rand(n, 24, 40, 3, generator=torch.Generator().manual_seed(seed))


def test_registered_with_tooltips_and_the_clip_combo(node):
    assert NODE_CLASS_MAPPINGS["LAMP_VideoMetrics"] is LampVideoMetrics
    assert NODE_DISPLAY_NAME_MAPPINGS["LAMP_VideoMetrics"] == "LAMP Video Metrics"
    inputs = LampVideoMetrics.INPUT_TYPES()["required"]
    assert all(spec[1].get("tooltip") for spec in inputs.values())
    assert inputs["clip_model"][0] == ["(use clip_path)", "tiny"]
    assert "clip_vision" in inputs["clip_model"][1]["tooltip"]  # says which folder is needed and why
    assert LampVideoMetrics.OUTPUT_NODE and LampVideoMetrics.RETURN_TYPES == ("STRING", "STRING")


def test_scores_equal_the_engine_and_preview_is_written(node, clip_folder, tmp_path):
    video = frames(1)
    out = node.measure(video, "a horse runs on the grass", clip_model="tiny")
    report = json.loads(out["result"][0])
    clip = M.load_clip(clip_folder / "tiny")
    assert report["videos"][0]["alignment"] == pytest.approx(M.text_alignment(clip, video, "a horse runs on the grass"),
                                                             rel=1e-6)
    assert report["overall"]["consistency"] == pytest.approx(M.frame_consistency(clip, video), rel=1e-6)
    assert report["overall"]["diversity"] is None
    assert out["result"][1] == out["ui"]["text"][0] == M.format_table(report)
    preview = out["ui"]["images"][0]
    path = Path(host.temp_dir()) / preview["subfolder"] / preview["filename"]
    with Image.open(path) as img:
        assert img.width > 100 and img.height > 40
    # the same CLIP given as an absolute path, corrected variant
    again = json.loads(node.measure(video, "a horse runs on the grass", clip_path=str(clip_folder / "tiny"),
                                    official_quirks=False)["result"][0])
    assert again["official_quirks"] is False
    assert again["overall"]["alignment"] == pytest.approx(
        M.text_alignment(clip, video, "a horse runs on the grass", official_quirks=False), rel=1e-6)


def test_batched_videos_give_diversity_and_per_video_prompts(node, clip_folder):
    a, b = frames(2, 4), frames(3, 4)
    out = node.measure(torch.cat([a, b]), "fireworks in winter\na horse", clip_model="tiny", frames_per_video=4)
    report = json.loads(out["result"][0])
    clip = M.load_clip(clip_folder / "tiny")
    assert [v["prompt"] for v in report["videos"]] == ["fireworks in winter", "a horse"]
    assert report["overall"]["diversity"] == pytest.approx(M.diversity(clip, [a, b]), rel=1e-6)


def test_clear_errors_and_cancel(node):
    video = frames(4)
    with pytest.raises(ValueError, match="choose a CLIP"):
        node.measure(video, "a horse")
    with pytest.raises(FileNotFoundError, match="models/lamp_clip"):
        node.measure(video, "a horse", clip_path="no_such_clip")
    with pytest.raises(ValueError, match="not a multiple of frames_per_video"):
        node.measure(video, "a horse", clip_model="tiny", frames_per_video=4)
    with pytest.raises(ValueError, match="one line per video"):
        node.measure(video, "a\nb", clip_model="tiny", frames_per_video=2)
    with pytest.raises(ValueError, match="enter the prompt"):
        node.measure(video, "  ", clip_model="tiny")
    with pytest.raises(ValueError, match="IMAGE batch"):
        node.measure(video[0], "a horse", clip_model="tiny")
    with pytest.raises(ValueError, match="at least 2 frames"):
        node.measure(video[:1], "a horse", clip_model="tiny")
    host.simulate_cancel(after=0)
    with pytest.raises(host.Interrupted):
        node.measure(torch.cat([video, video]), "a horse", clip_model="tiny", frames_per_video=6)
    assert os.path.isdir(host.clip_folders()[0])
