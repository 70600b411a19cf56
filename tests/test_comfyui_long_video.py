"""The 64-frame workflow in a real ComfyUI (opt-in, like tests/test_comfyui_integration.py, whose server and
helpers it uses): shrunk to tiny models, 10 frames in segments / windows of 4, so that the long-video path
(several segments, progress over all of them) runs through ComfyUI's own executor."""
from __future__ import annotations

import json

import pytest

from test_comfyui_integration import COMFYUI_DIR, _check_video, server, shrink, to_api, workflow  # noqa: F401

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not COMFYUI_DIR, reason="COMFYUI_DIR not set (opt-in ComfyUI end-to-end test)")]


@pytest.mark.parametrize("strategy", ["segments", "windows"])
def test_long_video_workflow_runs_end_to_end(server, strategy):  # noqa: F811
    prompt = shrink(to_api(workflow("lamp_long_video.json"), server.object_info), frames=10)
    sampler = next(n for n in prompt.values() if n["class_type"] == "LAMP_Sampler")
    assert sampler["inputs"]["long_strategy"] == "segments"  # the workflow's choice
    sampler["inputs"].update(long_strategy=strategy, segment_frames=4, overlap=1)
    history = server.run(prompt)
    assert history["status"]["status_str"] == "success", json.dumps(history["status"], indent=1)[-3000:]
    _check_video(server, history, prompt, frames=10)
    assert "long video: 10 frames as" in server.log_text()
