"""nodes.host: the plain-Python fallbacks, and the ComfyUI branch driven through stand-ins of folder_paths,
comfy.model_management, comfy.utils and latent_preview that follow ComfyUI 0.3.64's interfaces."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from nodes import host


# ---------------------------------------------------------------------------------------------- fallbacks
pytestmark = pytest.mark.usefixtures("restore_host_state")


def test_fallback_folders_list_only_motion_files(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.safetensors", "b.ckpt", "sub/c.bin", "d.pt", "notes.txt", "e.json"):
        (tmp_path / name).write_bytes(b"x")
    host.configure_fallback(lamp=str(tmp_path), input=str(tmp_path / "in"))
    assert host.list_motion_files() == ["a.safetensors", "b.ckpt", "d.pt", "sub/c.bin"]
    assert host.motion_path("sub/c.bin") == str(tmp_path / "sub" / "c.bin")
    with pytest.raises(FileNotFoundError, match="LAMP Convert Official"):
        host.motion_path("missing.safetensors")
    assert host.lamp_folder() == str(tmp_path) and host.input_dir() == str(tmp_path / "in")
    assert host.torch_device().type in ("cpu", "cuda") and host.offload_device().type == "cpu"


def test_fallback_progress_and_cancel():
    bar = host.progress(3)
    bar.update()
    bar.update(5)  # clamped to total
    assert bar.history == [1, 3]
    host.simulate_cancel(after=0)
    assert host.interrupted()
    with pytest.raises(host.Interrupted):
        host.check_interrupt()
    host.check_interrupt()  # a Cancel is consumed once, like ComfyUI's flag
    host.simulate_cancel(after=2)
    host.simulate_cancel(-1)
    for _ in range(4):
        host.check_interrupt()


def test_callback_for_adapts_the_engine_callback():
    bar = host.progress(4)
    cb = host.callback_for(bar)
    for step in range(4):
        cb(step, 4, torch.zeros(1, 4, 3, 2, 2))
    assert bar.history == [1, 2, 3, 4]


def test_latent_grid_tiles_frames():
    latents = torch.arange(5.0).view(1, 1, 5, 1, 1).expand(1, 4, 5, 2, 3)
    grid = host._latent_grid(latents)
    assert grid.shape == (1, 4, 2 * 2, 3 * 3)  # 5 frames of 2x3 -> 3 columns, 2 rows
    assert grid[0, 0, 0, 0] == 0 and grid[0, 0, 0, 3] == 1 and grid[0, 0, 2, 3] == 4 and grid[0, 0, 2, 6] == 0
    assert torch.equal(host._latent_grid(latents[0].transpose(0, 1)), grid)  # [F,C,h,w] too


# ---------------------------------------------------------------------------------------------- ComfyUI branch
class FakeInterrupt(Exception):
    pass


def fake_comfy(tmp_path):
    """Stand-ins with ComfyUI 0.3.64's names and behaviour (folder_paths.py, model_management.py, utils.py)."""
    models = tmp_path / "models"
    calls = []
    state = {"interrupt": False}

    def get_filename_list(name):
        dirs, exts = fp.folder_names_and_paths[name]
        out = []
        for d in dirs:
            for root, _, names in os.walk(d):
                for n in names:
                    if not exts or os.path.splitext(n)[1].lower() in exts:
                        out.append(os.path.relpath(os.path.join(root, n), d).replace(os.sep, "/"))
        return sorted(out)

    def get_full_path(name, filename):
        for d in fp.folder_names_and_paths[name][0]:
            p = os.path.join(d, filename)
            if os.path.isfile(p):
                return p
        return None

    def throw():
        if state["interrupt"]:
            state["interrupt"] = False
            raise FakeInterrupt()

    fp = SimpleNamespace(models_dir=str(models), folder_names_and_paths={},
                         get_folder_paths=lambda n: list(fp.folder_names_and_paths[n][0]),
                         get_filename_list=get_filename_list, get_full_path=get_full_path,
                         get_input_directory=lambda: str(tmp_path / "input"),
                         get_output_directory=lambda: str(tmp_path / "output"),
                         get_temp_directory=lambda: str(tmp_path / "temp"))
    mm = SimpleNamespace(
        InterruptProcessingException=FakeInterrupt, processing_interrupted=lambda: state["interrupt"],
        throw_exception_if_processing_interrupted=throw, get_torch_device=lambda: torch.device("cpu"),
        unet_offload_device=lambda: torch.device("cpu"), intermediate_device=lambda: torch.device("cpu"),
        should_use_fp16=lambda device, model_params=0: False, should_use_bf16=lambda device, model_params=0: True,
        free_memory=lambda n, d: calls.append(("free_memory", n, d)),
        soft_empty_cache=lambda: calls.append(("soft_empty_cache",)),
        unload_all_models=lambda: calls.append(("unload_all_models",)),
        load_models_gpu=lambda models, force_full_load=False: calls.append(("load_models_gpu", force_full_load)))

    class ProgressBar:
        def __init__(self, total):
            self.total = total
            calls.append(("ProgressBar", total))

        def update_absolute(self, value, total=None, preview=None):
            throw()  # ComfyUI's progress hook checks for interrupts
            calls.append(("update_absolute", value, total, None if preview is None else preview[0]))

    class Previewer:
        def decode_latent_to_preview_image(self, fmt, x0):
            calls.append(("preview", tuple(x0.shape)))
            return (fmt, "image", 512)

    lp = SimpleNamespace(get_previewer=lambda device, fmt: Previewer())
    lf = SimpleNamespace(SD15=lambda: "sd15-format")
    return SimpleNamespace(fp=fp, mm=mm, cu=SimpleNamespace(ProgressBar=ProgressBar), lp=lp, lf=lf, calls=calls,
                           state=state, models=models)


@pytest.fixture
def comfy(tmp_path, monkeypatch):
    fake = fake_comfy(tmp_path)
    for name, value in (("HAS_COMFY", True), ("_fp", fake.fp), ("_mm", fake.mm), ("_cu", fake.cu), ("_lp", fake.lp),
                        ("_lf", fake.lf), ("_registered", False)):
        monkeypatch.setattr(host, name, value)
    return fake


def test_register_lamp_folder_creates_it_and_logs_once(comfy, caplog):
    with caplog.at_level(logging.INFO, logger="ComfyUI-LAMP"):
        folders = host.register_lamp_folder()
        host.register_lamp_folder()
    default = os.path.join(comfy.fp.models_dir, "lamp")
    assert folders == [default] and os.path.isdir(default)
    assert comfy.fp.folder_names_and_paths["lamp"][1] == host.MOTION_EXTENSIONS
    assert caplog.text.count("[LAMP] motion folder") == 1 and "0 motion file(s)" in caplog.text


def test_register_keeps_extra_model_paths_and_fixes_extensions(comfy, tmp_path):
    extra = tmp_path / "elsewhere"
    extra.mkdir()
    (extra / "notes.txt").write_text("x")
    (extra / "fire.safetensors").write_bytes(b"x")
    comfy.fp.folder_names_and_paths["lamp"] = ([str(extra)], set())  # what extra_model_paths.yaml creates
    assert host.register_lamp_folder() == [str(extra), os.path.join(comfy.fp.models_dir, "lamp")]
    assert host.list_motion_files() == ["fire.safetensors"]
    assert host.motion_path("fire.safetensors") == str(extra / "fire.safetensors")
    assert host.lamp_folder() == os.path.join(comfy.fp.models_dir, "lamp")
    assert host.input_dir() == str(tmp_path / "input")


def test_progress_previews_and_interrupts_go_through_comfyui(comfy):
    bar = host.progress(2, previews=True)
    bar.update(1, preview=torch.zeros(1, 4, 5, 2, 3))
    comfy.state["interrupt"] = True
    with pytest.raises(FakeInterrupt):
        bar.update(1)
    assert host.Interrupted is not FakeInterrupt  # bound at import; the raise comes from ComfyUI itself
    assert ("ProgressBar", 2) in comfy.calls and ("preview", (1, 4, 4, 9)) in comfy.calls
    assert ("update_absolute", 1, 2, "JPEG") in comfy.calls
    comfy.state["interrupt"] = True
    assert host.interrupted()
    with pytest.raises(FakeInterrupt):
        host.check_interrupt()


def test_devices_and_memory_go_through_comfyui(comfy, monkeypatch):
    assert host.auto_dtype(torch.device("cpu")) == torch.bfloat16
    host.make_room(123, torch.device("cpu"))  # nothing to free on the CPU
    host.make_room(123, torch.device("cuda", 0))
    host.free_memory()
    assert comfy.calls == [("free_memory", 123, torch.device("cuda", 0)), ("unload_all_models",),
                           ("soft_empty_cache",)]
    model = SimpleNamespace(load_device=torch.device("cpu"), patches={}, model=SimpleNamespace(
        diffusion_model=torch.nn.Linear(2, 2)))
    state = host.patched_unet_state_dict(model)
    assert ("load_models_gpu", True) in comfy.calls and set(state) == {"weight", "bias"}
    state["weight"].add_(1)  # a copy: the MODEL is untouched
    assert not torch.equal(state["weight"], model.model.diffusion_model.weight)


@pytest.mark.integration
def test_host_with_real_comfyui_modules(tmp_path):
    """With COMFYUI_DIR, import the real folder_paths / comfy.* in a subprocess and exercise host against them."""
    comfy_dir = os.environ.get("COMFYUI_DIR")
    if not comfy_dir:
        pytest.skip("COMFYUI_DIR not set")
    python = os.environ.get("COMFYUI_PYTHON", sys.executable)
    root = Path(__file__).resolve().parents[1]
    script = f"""
import importlib.util, sys, torch
sys.path.insert(0, {comfy_dir!r})
import comfy.cli_args; comfy.cli_args.args.cpu = True
import folder_paths
folder_paths.models_dir = {str(tmp_path)!r}
# import the pack the way ComfyUI does (a package named after its folder; ComfyUI's own module is `nodes`)
spec = importlib.util.spec_from_file_location("ComfyUI_LAMP", {str(root / "__init__.py")!r})
pack = importlib.util.module_from_spec(spec)
sys.modules["ComfyUI_LAMP"] = pack
spec.loader.exec_module(pack)
host = sys.modules["ComfyUI_LAMP.nodes.host"]
assert "LAMP_Sampler" in pack.NODE_CLASS_MAPPINGS
assert host.HAS_COMFY, "ComfyUI modules not picked up"
assert host.register_lamp_folder()[-1].endswith("lamp")
open(host.lamp_folder() + "/m.safetensors", "wb").write(b"x")
open(host.lamp_folder() + "/notes.txt", "w").write("x")
assert host.list_motion_files() == ["m.safetensors"], host.list_motion_files()
assert host.torch_device().type == "cpu"
from comfy.cli_args import LatentPreviewMethod
comfy.cli_args.args.preview_method = LatentPreviewMethod.Auto  # as with --preview-method auto
bar = host.progress(2, previews=True)
assert bar._previewer is not None
kind, image, _ = bar._previewer.decode_latent_to_preview_image("JPEG", host._latent_grid(torch.randn(1, 4, 3, 8, 8)))
assert kind == "JPEG" and image.size == (16, 16), image.size  # 3 frames of 8x8 in a 2x2 grid
bar.update(1, preview=torch.zeros(1, 4, 3, 8, 8))
import comfy.model_management as mm
mm.interrupt_current_processing(True)
try:
    bar.update(1)
    raise SystemExit("no interrupt")
except mm.InterruptProcessingException:
    pass
print("ok")
"""
    out = subprocess.run([python, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stdout + out.stderr
