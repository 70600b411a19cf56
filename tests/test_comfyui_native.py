"""The native path in a real ComfyUI (opt-in, like tests/test_comfyui_integration.py: skipped unless COMFYUI_DIR).

LAMP Apply Motion makes a ComfyUI MODEL that ComfyUI's own samplers run as a LAMP video. Checked here with the
same tiny random SD-1.5-detectable fixtures: SamplerCustomAdvanced + LAMP DDIM gives the LAMP Sampler's numbers,
KSampler runs with other samplers, an SD-1.5 ControlNet steers the frames after frame 0 and never frame 0,
strength 0 is no ControlNet, core context windows run a 24-frame video with a 16-frame window, a LoRA on the
MODEL reaches the LAMP UNet without leaking, and Cancel leaves the server usable. Graphs are built in API format.
"""
from __future__ import annotations

import json
import time

import pytest
import torch
from safetensors.torch import load_file

from test_comfyui_integration import COMFYUI_DIR, CONTROLNET, CKPT, MOTION, _post, server  # noqa: F401

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not COMFYUI_DIR, reason="COMFYUI_DIR not set (opt-in ComfyUI end-to-end test)")]

NATIVE_IDS = {"LAMP_ApplyMotion", "LAMP_ApplyOfficialMotion", "LAMP_DDIMSampler", "LAMP_DDIMSigmas"}
STEPS, FRAMES, CFG = 4, 4, 7.5


def base_graph(frames: int = FRAMES, seed: int = 42) -> dict:
    """Checkpoint, prompts, frame one (LoadImage), LAMP First Frame, LAMP Shared Noise; the first frame's LATENT is
    saved too (prefix ``first``)."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CKPT}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a horse runs", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "4": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
        "5": {"class_type": "LAMP_FirstFrame", "inputs": {"image": ["4", 0], "vae": ["1", 2], "width": 128,
                                                          "height": 64, "frames": frames, "resize": "stretch"}},
        "6": {"class_type": "LAMP_SharedNoise", "inputs": {"seed": seed, "alpha": 0.2}},
    }


def native(graph: dict, model: list, prefix: str, sampler: str = "lamp", steps: int = STEPS) -> dict:
    """LAMP Apply Motion on ``model`` → SamplerCustomAdvanced (LAMP DDIM) or KSampler (``sampler`` = a k-sampler
    name) → SaveLatent(prefix)."""
    graph["20"] = {"class_type": "LAMP_ApplyMotion", "inputs": {"model": model, "motion_file": MOTION}}
    if sampler == "lamp":
        graph.update({
            "21": {"class_type": "CFGGuider", "inputs": {"model": ["20", 0], "positive": ["2", 0],
                                                         "negative": ["3", 0], "cfg": CFG}},
            "22": {"class_type": "LAMP_DDIMSampler", "inputs": {"adain": True}},
            "23": {"class_type": "LAMP_DDIMSigmas", "inputs": {"steps": steps}},
            "24": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": ["6", 0], "guider": ["21", 0],
                                                                     "sampler": ["22", 0], "sigmas": ["23", 0],
                                                                     "latent_image": ["5", 0]}},
        })
    else:
        graph["24"] = {"class_type": "KSampler", "inputs": {
            "model": ["20", 0], "seed": 3, "steps": steps, "cfg": CFG, "sampler_name": sampler, "scheduler": "normal",
            "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["5", 0], "denoise": 1.0}}
    graph["25"] = {"class_type": "SaveLatent", "inputs": {"samples": ["24", 0], "filename_prefix": f"latents/{prefix}"}}
    return graph


def lamp_sampler(graph: dict, prefix: str) -> dict:
    graph.update({
        "10": {"class_type": "LAMP_LoadMotion", "inputs": {"model": ["1", 0], "motion_file": MOTION,
                                                           "weight_dtype": "fp32"}},
        "11": {"class_type": "LAMP_Sampler", "inputs": {
            "lamp_model": ["10", 0], "positive": ["2", 0], "negative": ["3", 0], "latent": ["5", 0], "noise": ["6", 0],
            "steps": STEPS, "cfg": CFG, "scheduler": "ddim", "adain": True, "dtype": "fp32"}},
        "12": {"class_type": "SaveLatent", "inputs": {"samples": ["11", 0], "filename_prefix": f"latents/{prefix}"}},
    })
    return graph


def with_controlnet(graph: dict, strength: float, sampler_node: str = "21") -> dict:
    """Canny of frame one's image → ControlNetApplyAdvanced on both prompts (one hint for every frame)."""
    graph.update({
        "30": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": CONTROLNET}},
        "31": {"class_type": "Canny", "inputs": {"image": ["4", 0], "low_threshold": 0.2, "high_threshold": 0.5}},
        "32": {"class_type": "ControlNetApplyAdvanced", "inputs": {
            "positive": ["2", 0], "negative": ["3", 0], "control_net": ["30", 0], "image": ["31", 0],
            "strength": strength, "start_percent": 0.0, "end_percent": 1.0}},
    })
    graph[sampler_node]["inputs"].update(positive=["32", 0], negative=["32", 1])
    return graph


def run_latent(server, graph: dict, node: str = "25") -> torch.Tensor:  # noqa: F811 - the fixture
    history = server.run(graph)
    assert history["status"]["status_str"] == "success", json.dumps(history["status"], indent=1)[-3000:]
    item = history["outputs"][node]["latents"][0]
    return load_file(str(server.base / "output" / item["subfolder"] / item["filename"]))["latent_tensor"]


def first_frame(server, frames: int = FRAMES) -> torch.Tensor:  # noqa: F811
    graph = base_graph(frames)
    graph["9"] = {"class_type": "SaveLatent", "inputs": {"samples": ["5", 0], "filename_prefix": "latents/first"}}
    return run_latent(server, graph, "9")


# ---------------------------------------------------------------------------------------------- tests
def test_native_nodes_are_registered(server):  # noqa: F811
    assert NATIVE_IDS <= set(server.object_info), sorted(NATIVE_IDS - set(server.object_info))
    assert server.object_info["LAMP_ApplyMotion"]["output"] == ["MODEL"]
    assert server.object_info["LAMP_DDIMSampler"]["output"] == ["SAMPLER"]
    assert server.object_info["LAMP_DDIMSigmas"]["output"] == ["SIGMAS"]


def test_sampler_custom_advanced_equals_the_lamp_sampler(server):  # noqa: F811
    ours = run_latent(server, native(base_graph(), ["1", 0], "native"))
    reference = run_latent(server, lamp_sampler(base_graph(), "lamp_sampler"), "12")
    assert ours.shape == reference.shape == (FRAMES, 4, 8, 16)
    assert (ours - reference).abs().max() <= 1e-4, float((ours - reference).abs().max())
    assert torch.equal(ours[0], reference[0])
    first = first_frame(server)
    assert (ours[0] - first[0]).abs().max() < 1e-6, "frame 0 stays the first frame"
    assert (ours[1:] - first[1:]).abs().amax(dim=(1, 2, 3)).min() > 1e-3, "the other frames are generated"


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m"])
def test_ksampler_runs_the_lamp_model(server, sampler):  # noqa: F811
    out = run_latent(server, native(base_graph(seed=5), ["1", 0], f"ksampler_{sampler}", sampler=sampler, steps=3))
    first = first_frame(server)
    assert out.shape == (FRAMES, 4, 8, 16) and torch.isfinite(out).all()
    assert (out[0] - first[0]).abs().max() < 1e-6, "the noise mask keeps frame 0"
    assert (out[1:] - first[1:]).abs().amax(dim=(1, 2, 3)).min() > 1e-3


def test_ksampler_advanced_runs_the_lamp_model(server):  # noqa: F811
    graph = native(base_graph(seed=7), ["1", 0], "ksampler_advanced", sampler="euler", steps=3)
    graph["24"] = {"class_type": "KSamplerAdvanced", "inputs": {
        "model": ["20", 0], "add_noise": "enable", "noise_seed": 3, "steps": 3, "cfg": CFG, "sampler_name": "uni_pc",
        "scheduler": "karras", "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["5", 0],
        "start_at_step": 0, "end_at_step": 10000, "return_with_leftover_noise": "disable"}}
    out = run_latent(server, graph)
    first = first_frame(server)
    assert torch.isfinite(out).all() and (out[0] - first[0]).abs().max() < 1e-6, "frame 0 kept by a multistep sampler"
    assert (out[1:] - first[1:]).abs().amax(dim=(1, 2, 3)).min() > 1e-3


def test_controlnet_steers_the_frames_after_frame_0_and_never_frame_0(server):  # noqa: F811
    plain = run_latent(server, native(base_graph(seed=11), ["1", 0], "cn_none"))
    steered = run_latent(server, with_controlnet(native(base_graph(seed=11), ["1", 0], "cn_full"), 1.0))
    zero = run_latent(server, with_controlnet(native(base_graph(seed=11), ["1", 0], "cn_zero"), 0.0))
    assert torch.equal(steered[0], plain[0]), "frame 0 is bit-identical with and without ControlNet"
    assert (steered[1:] - plain[1:]).abs().amax(dim=(1, 2, 3)).min() > 1e-3, "every other frame is steered"
    assert torch.equal(zero, plain), "strength 0 is no ControlNet"
    assert "missing controlnet keys" not in server.log_text()


def test_the_lamp_sampler_honours_the_same_controlnet(server):  # noqa: F811
    """LAMP Sampler (its own loop) and SamplerCustomAdvanced + LAMP MODEL give the same ControlNet-steered video."""
    ours = run_latent(server, with_controlnet(native(base_graph(seed=29), ["1", 0], "cn_native"), 0.8))
    plain = run_latent(server, lamp_sampler(base_graph(seed=29), "cn_plain_sampler"), "12")
    theirs = run_latent(server, with_controlnet(lamp_sampler(base_graph(seed=29), "cn_sampler"), 0.8, "11"), "12")
    assert (theirs[1:] - plain[1:]).abs().max() > 1e-3, "the LAMP Sampler ignored the ControlNet"
    assert (ours - theirs).abs().max() <= 1e-4, float((ours - theirs).abs().max())
    assert torch.equal(theirs[0], plain[0])
    # start/end percent are honoured on both paths: a ControlNet active for no step changes nothing
    never = with_controlnet(lamp_sampler(base_graph(seed=29), "cn_never_sampler"), 0.8, "11")
    never["32"]["inputs"]["end_percent"] = 0.0
    assert torch.equal(run_latent(server, never, "12"), plain)
    never = with_controlnet(native(base_graph(seed=29), ["1", 0], "cn_never_native"), 0.8)
    never["32"]["inputs"]["end_percent"] = 0.0
    assert torch.equal(run_latent(server, never), run_latent(server, native(base_graph(seed=29), ["1", 0],
                                                                             "cn_never_plain")))


def test_context_windows_run_a_longer_video_with_frame_0_in_every_window(server):  # noqa: F811
    graph = native(base_graph(frames=24, seed=13), ["1", 0], "windows", steps=2)
    graph["40"] = {"class_type": "ContextWindowsManual", "inputs": {
        "model": ["20", 0], "context_length": 16, "context_overlap": 4, "context_schedule": "standard_static",
        "context_stride": 1, "closed_loop": False, "fuse_method": "pyramid", "dim": 0}}
    graph["21"]["inputs"]["model"] = ["40", 0]
    out = run_latent(server, graph)
    first = first_frame(server, frames=24)
    assert out.shape == (24, 4, 8, 16) and torch.isfinite(out).all()
    assert (out[0] - first[0]).abs().max() < 1e-6
    assert "Using context windows 16 for 24 frames" in server.log_text()


def test_lora_on_the_model_reaches_the_lamp_unet_and_does_not_leak(server):  # noqa: F811
    before = run_latent(server, native(base_graph(seed=17), ["1", 0], "lora_before"))
    graph = native(base_graph(seed=17), ["50", 0], "lora_on")
    graph["50"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"model": ["1", 0], "lora_name": "tiny_lora.safetensors",
                                                                  "strength_model": 1.0}}
    lora = run_latent(server, graph)
    applied = server.log_text().count("[LAMP] Apply Motion")
    after = run_latent(server, native(base_graph(seed=17), ["1", 0], "lora_after"))  # `before` again
    assert server.log_text().count("[LAMP] Apply Motion") == applied + 1, "the plain path ran again, not cached"
    assert torch.equal(lora[0], before[0])
    assert (lora[1:] - before[1:]).abs().max() > 1e-3, "the LoRA did not reach the LAMP UNet"
    assert torch.equal(after, before), "the LoRA leaked into the plain MODEL"


def test_cancel_stops_the_native_path_and_the_server_stays_usable(server):  # noqa: F811
    slow = native(base_graph(seed=19), ["1", 0], "cancel", steps=400)
    status, body = _post(f"{server.url}/prompt", {"prompt": slow, "client_id": "native-cancel"})
    assert status == 200
    time.sleep(3.0)  # a few steps in (400 steps take minutes here)
    _post(f"{server.url}/interrupt", {})
    history = server.wait(body["prompt_id"], 120)
    assert "execution_interrupted" in [event for event, _ in history["status"]["messages"]]
    again = run_latent(server, native(base_graph(seed=23), ["1", 0], "after_cancel"))
    assert torch.isfinite(again).all()


def test_official_checkpoint_on_the_native_path_equals_its_motion_file(server):  # noqa: F811
    """LAMP Apply Official Motion (a whole LAMP UNet file) gives what LAMP Apply Motion gives with its motion file."""
    from lamp_model.weights import load_unet, save_unet
    full = server.base / "models" / "lamp" / "tiny_full_unet.safetensors"
    if not full.exists():
        unet = load_unet(server.base / "models" / "lamp" / MOTION, base=server.base / "models" / "checkpoints" / CKPT)
        save_unet(unet, full)
    ours = run_latent(server, native(base_graph(seed=31), ["1", 0], "motion_file"))
    graph = native(base_graph(seed=31), ["1", 0], "official")
    graph["20"] = {"class_type": "LAMP_ApplyOfficialMotion", "inputs": {"model": ["1", 0],
                                                                       "checkpoint_path": full.name}}
    official = run_latent(server, graph)
    assert torch.equal(official, ours)


def _write_source_video(path, frames: int = 6) -> None:
    """A small moving-square MP4 for LoadVideo."""
    import av
    import numpy as np
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = 128, 64, "yuv420p"
        for i in range(frames):
            image = np.zeros((64, 128, 3), np.uint8)
            image[16:48, 8 + 12 * i:40 + 12 * i] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.mark.parametrize("name", ["lamp_native_ksampler.json", "lamp_controlnet_video.json"])
def test_native_workflows_run_end_to_end(server, name):  # noqa: F811
    from test_comfyui_integration import _check_video, shrink, to_api, workflow
    if name == "lamp_controlnet_video.json":
        _write_source_video(server.base / "input" / "source.mp4")
    prompt = shrink(to_api(workflow(name), server.object_info))
    for node in prompt.values():
        if node["class_type"] == "LAMP_ApplyMotion":
            node["inputs"]["motion_file"] = MOTION
        elif node["class_type"] == "LAMP_DDIMSigmas":
            node["inputs"]["steps"] = 2
    history = server.run(prompt)
    assert history["status"]["status_str"] == "success", json.dumps(history["status"], indent=1)[-3000:]
    _check_video(server, history, prompt, frames=4)


def peak_rss_gib(pid: int) -> float:
    """Peak resident memory (VmHWM) of a process, GiB."""
    line = next(x for x in open(f"/proc/{pid}/status") if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 2**20


def test_peak_memory_of_the_native_path_is_not_above_the_lamp_samplers(server):  # noqa: F811
    """Each path in a fresh ComfyUI over the same fixtures (so that each peak RSS is its own)."""
    from test_comfyui_integration import _python, running_server, server_env
    peaks = {}
    for path in ("sampler", "native"):
        with running_server(server.base, _python(), server_env(), f"comfy_peak_{path}.log") as fresh:
            graph = base_graph(frames=8, seed=37)
            graph = native(graph, ["1", 0], "peak_native") if path == "native" else lamp_sampler(graph, "peak_sampler")
            run_latent(fresh, graph, "25" if path == "native" else "12")
            peaks[path] = peak_rss_gib(fresh.proc.pid)
    assert peaks["native"] <= peaks["sampler"], peaks
