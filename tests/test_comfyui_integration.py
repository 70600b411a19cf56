"""End to end in a real ComfyUI (opt-in): skipped unless COMFYUI_DIR points at a ComfyUI checkout.

The test writes tiny random SD-1.5-detectable weights (320/640 channels, context 768, full-size random CLIP-L,
TAESD-layout VAE, a matching random LAMP motion file) into a temporary base directory, starts that ComfyUI on
127.0.0.1 with only this pack (``--base-directory``, ``--whitelist-custom-nodes``), converts the example
workflows to API format with the server's own /object_info and runs them through /prompt, shrunk to a few
steps and frames. SD-XL cannot be made tiny, so the SD-XL loaders get the tiny SD-1.5 checkpoint: the SD-XL
part is exercised as graph plumbing, the LAMP part for real; workflow (c) gets a tiny random SD-1.5 ControlNet
built with ComfyUI's own ControlNet class.

Environment: COMFYUI_DIR (required), COMFYUI_PYTHON (the Python with ComfyUI's requirements; default
``$COMFYUI_DIR/../venv/bin/python`` if present, else this interpreter). The fixture build needs diffusers,
einops and safetensors in that Python too. About 1 GB of temporary files, 1–3 minutes on 2 CPU cores.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not COMFYUI_DIR, reason="COMFYUI_DIR not set (opt-in ComfyUI end-to-end test)")]

LAMP_IDS = {"LAMP_LoadMotion", "LAMP_LoadOfficialCheckpoint", "LAMP_ConvertOfficial", "LAMP_FirstFrame",
            "LAMP_SharedNoise", "LAMP_Sampler", "LAMP_ColorMatch", "LAMP_InvertVideo"}
CKPT, MOTION, CONTROLNET = "tiny_sd15.safetensors", "tiny_motion.safetensors", "tiny_controlnet.safetensors"

#: Runs in ComfyUI's Python: builds the tiny fixtures with diffusers/transformers, renames the UNet with
#: ComfyUI's own diffusers->LDM map, and writes the motion file with this pack's engine.
BUILD = r'''
import json, os, sys
import torch
from safetensors.torch import save_file
base, pack = sys.argv[1], sys.argv[2]
sys.path[:0] = [os.getcwd(), pack]
import comfy.cli_args; comfy.cli_args.args.cpu = True
import comfy.utils
from comfy.taesd.taesd import TAESD
from diffusers import UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel
from lamp_model.unet3d import inflate_unet
from lamp_model.weights import save_motion

torch.manual_seed(0)
unet = UNet2DConditionModel(sample_size=32, block_out_channels=(320, 640), layers_per_block=1,
                            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                            cross_attention_dim=768, attention_head_dim=8).eval()
cfg = {"num_res_blocks": [1, 1], "channel_mult": [1, 2], "transformer_depth": [1, 1],
       "transformer_depth_output": [1, 1, 1, 1], "transformer_depth_middle": 1}
mapping = comfy.utils.unet_to_diffusers(cfg)
sd = unet.state_dict()
missing = [k for k in sd if k not in mapping]
assert not missing, missing[:5]
ckpt = {"model.diffusion_model." + mapping[k]: v.half() for k, v in sd.items()}

clip = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                    num_attention_heads=12, max_position_embeddings=77, vocab_size=49408,
                                    hidden_act="quick_gelu", projection_dim=768))
for k, v in clip.state_dict().items():
    k = k if k.startswith("text_model.") else "text_model." + k
    ckpt["cond_stage_model.transformer." + k] = v.half()

g = torch.Generator().manual_seed(1)
vae = TAESD(latent_channels=4)
for k, v in vae.state_dict().items():
    if k in ("vae_scale", "vae_shift"):
        t = v.clone()
    elif k.endswith("bias"):
        t = torch.zeros_like(v)
    else:
        fan_in = max(1, v[0].numel())
        t = torch.randn(v.shape, generator=g) / fan_in ** 0.5
    ckpt["first_stage_model." + k] = t.half()
os.makedirs(f"{base}/models/checkpoints", exist_ok=True)
save_file(ckpt, f"{base}/models/checkpoints/tiny_sd15.safetensors")

# a LoRA (kohya naming) on one cross-attention key projection, strong enough to change the video
lora_key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
out_f, in_f = sd["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"].shape
os.makedirs(f"{base}/models/loras", exist_ok=True)
save_file({f"{lora_key}.lora_up.weight": torch.randn(out_f, 4, generator=torch.Generator().manual_seed(5)).half(),
           f"{lora_key}.lora_down.weight": torch.randn(4, in_f, generator=torch.Generator().manual_seed(6)).half(),
           f"{lora_key}.alpha": torch.tensor(4.0).half()}, f"{base}/models/loras/tiny_lora.safetensors")

# a ControlNet (LDM layout) of the same shape, built with ComfyUI's own class and detection
import comfy.cldm.cldm, comfy.model_detection, comfy.ops
detected = comfy.model_detection.model_config_from_unet(
    {k: v for k, v in ckpt.items() if k.startswith("model.diffusion_model.")}, "model.diffusion_model.")
assert type(detected).__name__ == "SD15", type(detected).__name__
cn_config = {k: v for k, v in detected.unet_config.items() if k != "out_channels"}
control = comfy.cldm.cldm.ControlNet(**cn_config, hint_channels=3, operations=comfy.ops.disable_weight_init,
                                     dtype=torch.float32, device="cpu")
cn = {}
for k, v in control.state_dict().items():
    t = torch.zeros_like(v) if k.endswith("bias") else torch.randn(v.shape, generator=g) / max(1, v[0].numel()) ** 0.5
    cn["control_model." + k] = t.half()
os.makedirs(f"{base}/models/controlnet", exist_ok=True)
save_file(cn, f"{base}/models/controlnet/tiny_controlnet.safetensors")

lamp = inflate_unet(unet)
with torch.no_grad():
    for name, p in lamp.named_parameters():
        if any(s in name for s in ("conv1d", "conv_gate", "attn_temp")):
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
os.makedirs(f"{base}/models/lamp", exist_ok=True)
save_motion(lamp, f"{base}/models/lamp/tiny_motion.safetensors", {"prompt": "tiny test motion"})
print("built")
'''


def _python() -> str:
    explicit = os.environ.get("COMFYUI_PYTHON")
    if explicit:
        return explicit
    candidate = Path(COMFYUI_DIR).resolve().parent / "venv" / "bin" / "python"
    return str(candidate) if candidate.is_file() else sys.executable


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        data = r.read()
    return json.loads(data) if r.headers.get_content_type() == "application/json" else data


def _post(url: str, payload: dict, timeout: float = 30):
    req = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
            return r.status, (json.loads(body) if body else {})
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


class Server:
    def __init__(self, url: str, base: Path, log: Path, proc: subprocess.Popen):
        self.url, self.base, self.log, self.proc = url, base, log, proc
        self.object_info = _get(f"{url}/object_info", 60)

    def run(self, prompt: dict, timeout: float = 300) -> dict:
        status, body = _post(f"{self.url}/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
        assert status == 200 and not body.get("node_errors"), json.dumps(body, indent=1)[:3000]
        return self.wait(body["prompt_id"], timeout)

    def wait(self, prompt_id: str, timeout: float) -> dict:
        end = time.time() + timeout
        while time.time() < end:
            history = _get(f"{self.url}/history/{prompt_id}")
            if prompt_id in history and history[prompt_id]["status"].get("completed") is not None \
                    and history[prompt_id]["status"]["status_str"] in ("success", "error"):
                return history[prompt_id]
            time.sleep(0.5)
        _post(f"{self.url}/interrupt", {})
        raise AssertionError(f"prompt {prompt_id} did not finish in {timeout} s; log:\n{self.log_text()[-3000:]}")

    def view(self, item: dict) -> bytes:
        query = urllib.parse.urlencode({k: item[k] for k in ("filename", "subfolder", "type")})
        return _get(f"{self.url}/view?{query}", 60)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def build_fixtures(base: Path, python: str, env: dict) -> None:
    """The tiny weights, the pack link and the input image in the base directory ``base``."""
    build = subprocess.run([python, "-c", BUILD, str(base), str(ROOT)], cwd=COMFYUI_DIR, env=env,
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0 and "built" in build.stdout, build.stdout[-2000:] + build.stderr[-4000:]
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / "ComfyUI-LAMP").symlink_to(ROOT, target_is_directory=True)
    (base / "input").mkdir()
    shutil.copy(Path(COMFYUI_DIR) / "input" / "example.png", base / "input" / "example.png")


@contextlib.contextmanager
def running_server(base: Path, python: str, env: dict, log_name: str = "comfy.log") -> Iterator[Server]:
    """A ComfyUI on a free 127.0.0.1 port over ``base`` with only this pack; stopped (by its pid) at exit."""
    port = _free_port()
    log = base / log_name
    with open(log, "w") as out:
        proc = subprocess.Popen([python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
                                 "--disable-auto-launch", "--disable-api-nodes", "--base-directory", str(base),
                                 "--disable-all-custom-nodes", "--whitelist-custom-nodes", "ComfyUI-LAMP",
                                 "--preview-method", "auto"],
                                cwd=COMFYUI_DIR, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            if proc.poll() is not None:
                raise AssertionError("ComfyUI exited:\n" + log.read_text(errors="replace")[-4000:])
            try:
                _get(f"{url}/system_stats", 2)
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        else:
            raise AssertionError("ComfyUI did not start:\n" + log.read_text(errors="replace")[-4000:])
        yield Server(url, base, log, proc)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def server_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    python, env = _python(), server_env()
    base = tmp_path_factory.mktemp("comfy_base")
    build_fixtures(base, python, env)
    with running_server(base, python, env) as running:
        yield running


# ---------------------------------------------------------------------------------------------- UI -> API
def _is_widget(spec: list) -> bool:
    kind = spec[0]
    return isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


def to_api(workflow: dict, object_info: dict) -> dict:
    """Convert a UI-format workflow to the API graph ComfyUI's /prompt takes, using the server's node info."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        info = object_info[node["type"]]
        order = [(sec, n) for sec in ("required", "optional") for n in info.get("input_order", {}).get(sec, [])]
        values = list(node["widgets_values"])
        inputs = {}
        for sec, name in order:
            spec = info["input"][sec][name]
            if not _is_widget(spec):
                continue
            inputs[name] = values.pop(0)
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if opts.get("control_after_generate") or opts.get("image_upload") or opts.get("video_upload"):
                values.pop(0)
        assert not values, f"{node['type']}: unused widget values {values}"
        for slot in node["inputs"]:
            if slot.get("link") is not None:
                link = links[slot["link"]]
                inputs[slot["name"]] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def shrink(prompt: dict, frames: int = 4, steps: int = 2) -> dict:
    """Tiny models, tiny sizes: every checkpoint is the tiny SD-1.5, few steps and frames."""
    for node in prompt.values():
        kind, inputs = node["class_type"], node["inputs"]
        if kind == "CheckpointLoaderSimple":
            inputs["ckpt_name"] = CKPT
        elif kind == "LAMP_LoadMotion":
            inputs["motion_file"] = MOTION
        elif kind == "ControlNetLoader":
            inputs["control_net_name"] = CONTROLNET
        elif kind == "EmptyLatentImage":
            inputs.update(width=128, height=64)
        elif kind == "KSampler":
            inputs["steps"] = steps
        elif kind == "LAMP_FirstFrame":
            inputs.update(width=128, height=64, frames=frames)
        elif kind == "LAMP_Sampler":
            inputs["steps"] = steps
        elif kind == "LAMP_InvertVideo":
            inputs.update(width=128, height=64, frames=frames, stride=1, steps=steps)
    return prompt


def workflow(name: str) -> dict:
    return json.loads((ROOT / "workflows" / name).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------- tests
def test_pack_loads_with_its_model_folder(server):
    assert LAMP_IDS <= set(server.object_info), sorted(LAMP_IDS - set(server.object_info))
    log = server.log_text()
    failures = [line for line in log.splitlines() if ("IMPORT FAILED" in line or "Cannot import" in line)
                and "ComfyUI-LAMP" in line]
    assert not failures, log[-3000:]
    assert "[LAMP] motion folder" in log and "1 motion file(s)" in log
    assert server.object_info["LAMP_LoadMotion"]["input"]["required"]["motion_file"][0] == [MOTION]
    assert server.object_info["LAMP_Sampler"]["category"] == "LAMP"


def test_core_table_matches_the_real_comfyui(server):
    from test_workflows import CORE
    for kind, (spec, returns, names) in CORE.items():
        info = server.object_info[kind]
        assert list(info["output"]) == list(returns), kind
        assert list(info["output_name"]) == list(names or returns), kind
        for section in ("required", "optional"):
            real = info["input"].get(section, {})
            assert list(real) == list(spec.get(section, {})), f"{kind} {section}: {list(real)}"
            for name, ours in spec.get(section, {}).items():
                theirs = real[name]
                if ours[0] == "FILES" or isinstance(ours[0], (list, tuple)):
                    assert isinstance(theirs[0], list) or theirs[0] == "COMBO", f"{kind}.{name}"
                    if isinstance(ours[0], (list, tuple)):
                        options = theirs[0] if isinstance(theirs[0], list) else theirs[1]["options"]
                        assert set(ours[0]) <= set(options), f"{kind}.{name}"
                    continue
                assert theirs[0] == ours[0], f"{kind}.{name}: {theirs[0]} != {ours[0]}"
                for bound in ("min", "max", "step"):
                    if bound in (ours[1] if len(ours) > 1 else {}):
                        assert theirs[1][bound] == ours[1][bound], f"{kind}.{name}.{bound}"


def _outputs(history: dict, prompt: dict, kind: str) -> list[dict]:
    return [item for node_id, out in history["outputs"].items() if prompt[node_id]["class_type"] == kind
            for item in out.get("images", [])]


def _check_video(server: Server, history: dict, prompt: dict, frames: int) -> None:
    import av
    from PIL import Image, ImageSequence
    webp = _outputs(history, prompt, "SaveAnimatedWEBP")
    assert len(webp) == 1, history["outputs"]
    image = Image.open(io.BytesIO(server.view(webp[0])))
    shots = [f.convert("RGB") for f in ImageSequence.Iterator(image)]
    assert len(shots) == frames and shots[0].size == (128, 64)
    assert max(max(s.getextrema()[c][1] for c in range(3)) for s in shots) > 0, "all black"
    mp4 = _outputs(history, prompt, "SaveVideo")
    assert len(mp4) == 1, history["outputs"]
    path = server.base / "output" / mp4[0]["subfolder"] / mp4[0]["filename"]
    with av.open(str(path)) as container:
        assert sum(1 for _ in container.decode(video=0)) == frames


@pytest.mark.parametrize("name", ["lamp_image_to_video.json", "lamp_sdxl_text_to_video.json"])
def test_workflow_runs_end_to_end(server, name):
    prompt = shrink(to_api(workflow(name), server.object_info))
    history = server.run(prompt)
    assert history["status"]["status_str"] == "success", json.dumps(history["status"], indent=1)[-3000:]
    _check_video(server, history, prompt, frames=4)
    log = server.log_text()
    assert "clip missing" not in log and "unet missing" not in log


def test_controlnet_edit_workflow(server):
    prompt = shrink(to_api(workflow("lamp_sdxl_controlnet_edit_to_video.json"), server.object_info))
    history = server.run(prompt)
    assert history["status"]["status_str"] == "success", json.dumps(history["status"], indent=1)[-3000:]
    _check_video(server, history, prompt, frames=4)
    assert "missing controlnet keys" not in server.log_text()


def test_video_edit_workflow_and_its_cached_inversion(server):
    """Load Video → Invert → Canny/ControlNet frame one → LAMP with the inverted start; a second run that only
    changes the LAMP prompt reuses the inversion from ComfyUI's cache."""
    import av
    import numpy as np
    with av.open(str(server.base / "input" / "source.mp4"), "w") as out:
        stream = out.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = 128, 64, "yuv420p"
        for i in range(6):
            frame = np.zeros((64, 128, 3), np.uint8)
            frame[20:40, 10 + 12 * i:30 + 12 * i] = (220, 40, 40)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    prompt = shrink(to_api(workflow("lamp_video_edit.json"), server.object_info))
    history = server.run(prompt)
    assert history["status"]["status_str"] == "success", json.dumps(history["status"], indent=1)[-3000:]
    _check_video(server, history, prompt, frames=4)
    inversions = server.log_text().count("[LAMP] inverting")
    lamp_prompt = next(k for k, n in prompt.items() if n["class_type"] == "CLIPTextEncode"
                       and n["inputs"]["text"].startswith("a robot runs beside a river, van gogh style painting")
                       and "highly" not in n["inputs"]["text"])
    prompt[lamp_prompt]["inputs"]["text"] = "a robot walks"
    again = server.run(prompt)
    assert again["status"]["status_str"] == "success"
    assert server.log_text().count("[LAMP] inverting") == inversions, "the inversion was recomputed"

    # (h): the same edit, with every inverted source frame's Canny edges on an SD-1.5 ControlNet
    plain = shrink(to_api(workflow("lamp_video_edit.json"), server.object_info))
    control = shrink(to_api(workflow("lamp_video_edit_controlnet.json"), server.object_info))
    for p in (plain, control):
        next(n for n in p.values() if n["class_type"] == "SaveAnimatedWEBP")["inputs"]["lossless"] = True
    without, with_cn = server.run(plain), server.run(control)
    assert with_cn["status"]["status_str"] == "success", json.dumps(with_cn["status"], indent=1)[-3000:]
    _check_video(server, with_cn, control, frames=4)
    a, b = _frames(server, without, plain), _frames(server, with_cn, control)
    assert (a[0] == b[0]).all(), "frame one is the same edit"
    assert max(abs(x - y).max() for x, y in zip(a[1:], b[1:])) > 0, "the per-frame ControlNet changed nothing"


def _frames(server: Server, history: dict, prompt: dict):
    import numpy as np
    from PIL import Image, ImageSequence
    item = _outputs(history, prompt, "SaveAnimatedWEBP")[0]
    image = Image.open(io.BytesIO(server.view(item)))
    return [np.asarray(f.convert("RGB"), dtype=np.int16) for f in ImageSequence.Iterator(image)]


def test_lora_on_the_model_carries_over_and_does_not_leak(server):
    """LoraLoaderModelOnly before LAMP Load Motion changes the video; the plain MODEL, loaded afterwards
    (clones share one UNet module in ComfyUI), gives the original video again."""
    plain = shrink(to_api(workflow("lamp_image_to_video.json"), server.object_info))
    for node in plain.values():
        if node["class_type"] == "SaveAnimatedWEBP":
            node["inputs"]["lossless"] = True
    with_lora = json.loads(json.dumps(plain))
    motion_id = next(k for k, n in with_lora.items() if n["class_type"] == "LAMP_LoadMotion")
    with_lora["900"] = {"class_type": "LoraLoaderModelOnly", "inputs": {
        "model": with_lora[motion_id]["inputs"]["model"], "lora_name": "tiny_lora.safetensors",
        "strength_model": 1.0}}
    with_lora[motion_id]["inputs"]["model"] = ["900", 0]
    plain[motion_id]["inputs"]["weight_dtype"] = "fp32"  # not cached from earlier tests
    with_lora[motion_id]["inputs"]["weight_dtype"] = "fp32"
    first = _frames(server, server.run(plain), plain)
    lora = _frames(server, server.run(with_lora), with_lora)
    plain[motion_id]["inputs"]["weight_dtype"] = "auto"  # fp32 on the CPU too, but Load Motion runs again
    second = _frames(server, server.run(plain), plain)
    assert (first[0] == lora[0]).all(), "frame one is pinned"
    assert max(abs(a - b).max() for a, b in zip(first[1:], lora[1:])) > 0, "the LoRA did not reach the LAMP UNet"
    assert all((a == b).all() for a, b in zip(first, second)), "the LoRA leaked into the plain MODEL"


def test_errors_reach_the_user_and_cancel_leaves_the_server_usable(server):
    base = shrink(to_api(workflow("lamp_image_to_video.json"), server.object_info))
    bad = json.loads(json.dumps(base))
    next(n for n in bad.values() if n["class_type"] == "LAMP_FirstFrame")["inputs"]["width"] = 100
    history = server.run(bad)
    messages = {event: data for event, data in history["status"]["messages"]}
    assert history["status"]["status_str"] == "error"
    error = messages["execution_error"]["exception_message"]
    assert "width 100" in error and "is not a multiple of 8" in error, error

    slow = json.loads(json.dumps(base))
    next(n for n in slow.values() if n["class_type"] == "LAMP_Sampler")["inputs"]["steps"] = 400
    started = server.log_text().count("[LAMP] sampling")
    status, body = _post(f"{server.url}/prompt", {"prompt": slow, "client_id": "cancel-test"})
    assert status == 200
    deadline = time.time() + 120
    while time.time() < deadline and server.log_text().count("[LAMP] sampling") == started:
        time.sleep(0.5)
    time.sleep(1.0)  # a few steps in
    _post(f"{server.url}/interrupt", {})
    history = server.wait(body["prompt_id"], 120)
    events = [event for event, _ in history["status"]["messages"]]
    assert "execution_interrupted" in events, events

    next(n for n in base.values() if n["class_type"] == "LAMP_SharedNoise")["inputs"]["seed"] = 7  # not cached
    again = server.run(base)  # the next run works
    assert again["status"]["status_str"] == "success"
    _check_video(server, again, base, frames=4)

    # ComfyUI's "Unload models" / "Free model and node cache": the next run reloads and works
    assert _post(f"{server.url}/free", {"unload_models": True, "free_memory": True})[0] == 200
    time.sleep(1.5)
    after_free = server.run(base)
    assert after_free["status"]["status_str"] == "success"
    _check_video(server, after_free, base, frames=4)
