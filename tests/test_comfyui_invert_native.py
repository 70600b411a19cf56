"""LAMP Invert Video on the native path's LAMP MODEL in a real ComfyUI (opt-in: skipped unless COMFYUI_DIR).

The same clip inverted with the MODEL of LAMP Apply Motion and with the LAMP_MODEL of LAMP Load Motion (same
motion file, same tiny SD-1.5 checkpoint, fp32 on CPU) gives the same inverted start: the LAMP Sampler that edits
from either start gives the same video. Graphs in API format, with the fixtures of tests/test_comfyui_native.py.
"""
from __future__ import annotations

import json

import pytest
import torch

from test_comfyui_integration import COMFYUI_DIR, MOTION, server  # noqa: F401  (fixture)
from test_comfyui_native import CFG, FRAMES, STEPS, base_graph, run_latent

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not COMFYUI_DIR, reason="COMFYUI_DIR not set (opt-in ComfyUI end-to-end test)")]


def edit_graph(model_input: str | None, prefix: str) -> dict:
    """Frame one repeated as the source clip → LAMP Invert Video (``model_input``: "lamp_model", "model", or None
    for no inversion) → LAMP Sampler (LAMP Load Motion's model, frame one pinned) → SaveLatent(prefix)."""
    graph = base_graph()
    graph.update({
        "10": {"class_type": "LAMP_LoadMotion", "inputs": {"model": ["1", 0], "motion_file": MOTION,
                                                           "weight_dtype": "fp32"}},
        "20": {"class_type": "LAMP_ApplyMotion", "inputs": {"model": ["1", 0], "motion_file": MOTION}},
        "40": {"class_type": "RepeatImageBatch", "inputs": {"image": ["4", 0], "amount": FRAMES}},
        "41": {"class_type": "LAMP_InvertVideo", "inputs": {
            "images": ["40", 0], "vae": ["1", 2], "conditioning": ["3", 0], "frames": FRAMES, "start": 0,
            "stride": 1, "steps": STEPS, "width": 128, "height": 64, "resize": "stretch", "dtype": "fp32"}},
        "11": {"class_type": "LAMP_Sampler", "inputs": {
            "lamp_model": ["10", 0], "positive": ["2", 0], "negative": ["3", 0], "latent": ["5", 0],
            "noise": ["41", 0] if model_input else ["6", 0], "steps": STEPS, "cfg": CFG, "scheduler": "ddim",
            "adain": True, "dtype": "fp32"}},
        "12": {"class_type": "SaveLatent", "inputs": {"samples": ["11", 0], "filename_prefix": f"latents/{prefix}"}},
    })
    if model_input:
        graph["41"]["inputs"][model_input] = ["10", 0] if model_input == "lamp_model" else ["20", 0]
    else:
        del graph["41"]
    return graph


def test_invert_video_takes_the_apply_motion_model(server):  # noqa: F811
    spec = server.object_info["LAMP_InvertVideo"]["input"]
    assert spec["optional"]["model"][0] == "MODEL" and spec["optional"]["lamp_model"][0] == "LAMP_MODEL"
    native = run_latent(server, edit_graph("model", "invert_native"), "12")
    reference = run_latent(server, edit_graph("lamp_model", "invert_lamp_model"), "12")
    assert native.shape == reference.shape == (FRAMES, 4, 8, 16)
    assert (native - reference).abs().max() <= 1e-4, float((native - reference).abs().max())
    unedited = run_latent(server, edit_graph(None, "invert_none"), "12")
    assert (native[1:] - unedited[1:]).abs().max() > 1e-3, "the inverted start must matter in this check"


def test_invert_video_errors_name_both_inputs(server):  # noqa: F811
    for graph, message in ((edit_graph("model", "e1"), "connect exactly one LAMP model"),
                           (edit_graph("model", "e2"), "put LAMP Apply Motion")):
        if message == "connect exactly one LAMP model":
            graph["41"]["inputs"]["lamp_model"] = ["10", 0]
        else:
            graph["41"]["inputs"]["model"] = ["1", 0]  # a plain SD-1.5 MODEL
        history = server.run(graph)
        assert history["status"]["status_str"] == "error"
        text = json.dumps(history["status"])
        assert message in text, text[-2000:]
