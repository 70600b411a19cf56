"""The example workflows (UI format) are checked against our node definitions and against the definitions of
the ComfyUI core nodes they use (transcribed below from ComfyUI 0.3.64, commit a125cd84: nodes.py,
comfy_extras/nodes_canny.py, nodes_images.py, nodes_video.py, comfy/samplers.py; the opt-in
tests/test_comfyui_integration.py compares this table with a running ComfyUI's /object_info)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))

MAX_RESOLUTION = 16384
SEED = ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True})
KSAMPLERS = ["euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2", "dpm_2",
             "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_2s_ancestral_cfg_pp",
             "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu",
             "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm",
             "ipndm_v", "deis", "res_multistep", "res_multistep_cfg_pp", "res_multistep_ancestral",
             "res_multistep_ancestral_cfg_pp", "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde",
             "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2"]
KSCHEDULERS = ["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta", "normal",
               "linear_quadratic", "kl_optimal"]


def files(folder: str, *exts: str) -> tuple:
    """A combo listing model/input files: any file name with one of ``exts`` passes."""
    return ("FILES", {"folder": folder, "extensions": exts})


PT = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft")
#: Core node definitions in INPUT_TYPES form, plus RETURN_TYPES / RETURN_NAMES.
CORE = {
    "CheckpointLoaderSimple": ({"required": {"ckpt_name": files("checkpoints", *PT)}},
                               ("MODEL", "CLIP", "VAE"), None),
    "CLIPTextEncode": ({"required": {"text": ("STRING", {"multiline": True}), "clip": ("CLIP",)}},
                       ("CONDITIONING",), None),
    "EmptyLatentImage": ({"required": {"width": ("INT", {"min": 16, "max": MAX_RESOLUTION, "step": 8}),
                                       "height": ("INT", {"min": 16, "max": MAX_RESOLUTION, "step": 8}),
                                       "batch_size": ("INT", {"min": 1, "max": 4096})}}, ("LATENT",), None),
    "KSampler": ({"required": {"model": ("MODEL",), "seed": SEED, "steps": ("INT", {"min": 1, "max": 10000}),
                               "cfg": ("FLOAT", {"min": 0.0, "max": 100.0}), "sampler_name": (KSAMPLERS,),
                               "scheduler": (KSCHEDULERS,), "positive": ("CONDITIONING",),
                               "negative": ("CONDITIONING",), "latent_image": ("LATENT",),
                               "denoise": ("FLOAT", {"min": 0.0, "max": 1.0})}}, ("LATENT",), None),
    "VAEDecode": ({"required": {"samples": ("LATENT",), "vae": ("VAE",)}}, ("IMAGE",), None),
    "PreviewImage": ({"required": {"images": ("IMAGE",)}}, (), None),
    "LoadImage": ({"required": {"image": ("FILES", {"folder": "input", "image_upload": True,
                                                     "extensions": (".png", ".jpg", ".jpeg", ".webp")})}},
                  ("IMAGE", "MASK"), None),
    "Canny": ({"required": {"image": ("IMAGE",), "low_threshold": ("FLOAT", {"min": 0.01, "max": 0.99}),
                            "high_threshold": ("FLOAT", {"min": 0.01, "max": 0.99})}}, ("IMAGE",), None),
    "ControlNetLoader": ({"required": {"control_net_name": files("controlnet", *PT)}}, ("CONTROL_NET",), None),
    "ControlNetApplyAdvanced": ({"required": {"positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                                              "control_net": ("CONTROL_NET",), "image": ("IMAGE",),
                                              "strength": ("FLOAT", {"min": 0.0, "max": 10.0}),
                                              "start_percent": ("FLOAT", {"min": 0.0, "max": 1.0}),
                                              "end_percent": ("FLOAT", {"min": 0.0, "max": 1.0})},
                                 "optional": {"vae": ("VAE",)}},
                                ("CONDITIONING", "CONDITIONING"), ("positive", "negative")),
    "SaveAnimatedWEBP": ({"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {}),
                                       "fps": ("FLOAT", {"min": 0.01, "max": 1000.0}), "lossless": ("BOOLEAN", {}),
                                       "quality": ("INT", {"min": 0, "max": 100}),
                                       "method": (["default", "fastest", "slowest"],)}}, (), None),
    "CreateVideo": ({"required": {"images": ("IMAGE",), "fps": ("FLOAT", {"min": 1.0, "max": 120.0})},
                     "optional": {"audio": ("AUDIO",)}}, ("VIDEO",), None),
    "SaveVideo": ({"required": {"video": ("VIDEO",), "filename_prefix": ("STRING", {}),
                                "format": (["auto", "mp4"],), "codec": (["auto", "h264"],)}}, (), None),
    "LoadVideo": ({"required": {"file": ("FILES", {"folder": "input", "video_upload": True,
                                                   "extensions": (".mp4", ".webm", ".mov", ".mkv", ".gif")})}},
                  ("VIDEO",), None),
    "GetVideoComponents": ({"required": {"video": ("VIDEO",)}}, ("IMAGE", "AUDIO", "FLOAT"), ("images", "audio", "fps")),
    "ImageFromBatch": ({"required": {"image": ("IMAGE",), "batch_index": ("INT", {"min": 0, "max": 4095}),
                                     "length": ("INT", {"min": 1, "max": 4096})}}, ("IMAGE",), None),
    "CFGGuider": ({"required": {"model": ("MODEL",), "positive": ("CONDITIONING",), "negative": ("CONDITIONING",),
                                "cfg": ("FLOAT", {"min": 0.0, "max": 100.0})}}, ("GUIDER",), None),
    "SamplerCustomAdvanced": ({"required": {"noise": ("NOISE",), "guider": ("GUIDER",), "sampler": ("SAMPLER",),
                                            "sigmas": ("SIGMAS",), "latent_image": ("LATENT",)}},
                              ("LATENT", "LATENT"), ("output", "denoised_output")),
}
OUTPUT_NODES = {"PreviewImage", "SaveAnimatedWEBP", "SaveVideo"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "FILES"}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}


@pytest.fixture(scope="module")
def definitions(tmp_path_factory):
    """Our node definitions (with one motion file in a temporary models/lamp) merged with the core table."""
    from nodes import NODE_CLASS_MAPPINGS, host
    lamp = tmp_path_factory.mktemp("lamp")
    (lamp / "horse_run.safetensors").write_bytes(b"")
    saved = dict(host._fallback_dirs)
    host.configure_fallback(lamp=str(lamp))
    try:
        defs = {name: (cls.INPUT_TYPES(), tuple(cls.RETURN_TYPES), getattr(cls, "RETURN_NAMES", None))
                for name, cls in NODE_CLASS_MAPPINGS.items()}
    finally:
        host._fallback_dirs.update(saved)
    defs.update(CORE)
    return defs


def _inputs(spec: dict) -> list[tuple[str, tuple, bool]]:
    """(name, spec, required) in ComfyUI's order: required, then optional."""
    return [(n, s, True) for n, s in spec.get("required", {}).items()] + \
        [(n, s, False) for n, s in spec.get("optional", {}).items()]


def _is_widget(spec: tuple) -> bool:
    return isinstance(spec[0], (list, tuple)) or spec[0] in WIDGET_TYPES


def _check_widget(where: str, spec: tuple, value) -> None:
    kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
    if isinstance(kind, (list, tuple)):
        assert value in kind, f"{where}: {value!r} not among {list(kind)[:8]}"
    elif kind == "FILES":
        assert isinstance(value, str) and value.lower().endswith(tuple(opts["extensions"])), f"{where}: {value!r}"
    elif kind == "INT":
        assert isinstance(value, int) and not isinstance(value, bool), f"{where}: {value!r} is not an INT"
    elif kind == "FLOAT":
        assert isinstance(value, (int, float)) and not isinstance(value, bool), f"{where}: {value!r} not a FLOAT"
    elif kind == "BOOLEAN":
        assert isinstance(value, bool), f"{where}: {value!r} is not a BOOLEAN"
    elif kind == "STRING":
        assert isinstance(value, str), f"{where}: {value!r} is not a STRING"
    if kind in ("INT", "FLOAT"):
        assert opts.get("min", value) <= value <= opts.get("max", value), f"{where}: {value} outside {opts}"
        if kind == "INT" and opts.get("step", 1) > 1:
            assert value % opts["step"] == 0, f"{where}: {value} not a multiple of {opts['step']}"


def _expected_widgets(spec: dict) -> list[tuple[str, tuple]]:
    """(name, spec) per saved widget value; "control after generate" and upload buttons add one value."""
    out = []
    for name, s, _ in _inputs(spec):
        if not _is_widget(s):
            continue
        out.append((name, s))
        opts = s[1] if len(s) > 1 and isinstance(s[1], dict) else {}
        if opts.get("control_after_generate"):
            out.append((f"{name}:control_after_generate", (sorted(CONTROL_VALUES),)))
        if opts.get("image_upload") or opts.get("video_upload"):  # the frontend saves its upload button as "image"
            out.append((f"{name}:upload", (["image"],)))
    return out


def _type_of(spec: tuple) -> str:
    return "COMBO" if isinstance(spec[0], (list, tuple)) else spec[0]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_matches_node_definitions(path, definitions):
    wf = json.loads(path.read_text(encoding="utf-8"))
    nodes = {n["id"]: n for n in wf["nodes"]}
    assert len(nodes) == len(wf["nodes"]), "duplicate node ids"
    assert wf["last_node_id"] >= max(nodes) and wf["last_link_id"] >= max(link[0] for link in wf["links"])
    for node in wf["nodes"]:
        where = f"{path.name} node {node['id']} ({node['type']})"
        assert node["type"] in definitions, f"{where}: unknown node type"
        spec, returns, names = definitions[node["type"]]
        names = names or returns
        declared = {n: s for n, s, _ in _inputs(spec)}
        sockets = {i["name"]: i for i in node["inputs"]}
        for name, slot in sockets.items():
            assert name in declared, f"{where}: no input named {name!r}"
            assert not _is_widget(declared[name]), f"{where}: {name!r} is a widget, not a socket"
            assert slot["type"] == _type_of(declared[name]), f"{where}: {name!r} typed {slot['type']}"
        for name, s, required in _inputs(spec):
            if not _is_widget(s) and required:
                assert sockets.get(name, {}).get("link") is not None, f"{where}: required input {name!r} unlinked"
        assert [o["type"] for o in node["outputs"]] == list(returns), f"{where}: outputs differ"
        assert [o["name"] for o in node["outputs"]] == list(names), f"{where}: output names differ"
        widgets = _expected_widgets(spec)
        assert len(node["widgets_values"]) == len(widgets), \
            f"{where}: {len(node['widgets_values'])} widget values, expected {[w for w, _ in widgets]}"
        for (name, s), value in zip(widgets, node["widgets_values"]):
            _check_widget(f"{where} widget {name}", s, value)

    for link_id, src, src_slot, dst, dst_slot, kind in wf["links"]:
        out, inp = nodes[src]["outputs"][src_slot], nodes[dst]["inputs"][dst_slot]
        assert out["type"] == inp["type"] == kind, f"{path.name} link {link_id}: {out['type']} -> {inp['type']}"
        assert link_id in out["links"] and inp["link"] == link_id, f"{path.name} link {link_id} not mirrored"
    linked = {link[0] for link in wf["links"]}
    for node in wf["nodes"]:
        assert all(l in linked for o in node["outputs"] for l in o["links"]), f"{path.name}: dangling link"
    assert OUTPUT_NODES & {n["type"] for n in wf["nodes"]}, "no output node: nothing would run"


def test_the_three_workflows_exist_and_follow_the_paper():
    by_name = {p.name: json.loads(p.read_text(encoding="utf-8")) for p in WORKFLOWS}
    chain = {"LAMP_LoadMotion", "LAMP_FirstFrame", "LAMP_SharedNoise", "LAMP_Sampler", "LAMP_ColorMatch",
             "VAEDecode", "SaveAnimatedWEBP", "CreateVideo", "SaveVideo"}
    expected = {
        "lamp_sdxl_text_to_video.json": {"CheckpointLoaderSimple", "KSampler", "EmptyLatentImage"},
        "lamp_image_to_video.json": {"LoadImage"},
        "lamp_sdxl_controlnet_edit_to_video.json": {"LoadImage", "Canny", "ControlNetLoader",
                                                    "ControlNetApplyAdvanced", "KSampler"},
    }
    assert set(expected) <= set(by_name)
    for name, extra in expected.items():
        types = {n["type"] for n in by_name[name]["nodes"]}
        assert chain | extra <= types, f"{name} lacks {sorted((chain | extra) - types)}"
        sampler = next(n for n in by_name[name]["nodes"] if n["type"] == "LAMP_Sampler")
        assert sampler["widgets_values"][:3] == [50, 12.5, "ddim"], "official sampling defaults"
        first = next(n for n in by_name[name]["nodes"] if n["type"] == "LAMP_FirstFrame")
        assert first["widgets_values"] == [512, 320, 16, "stretch"], "official size, frames, resize"


def test_sdxl_and_sd15_parts_are_not_mixed():
    """Frame one comes from SD-XL; the LAMP prompts, First Frame, motion and VAE Decode use the SD-1.5 checkpoint."""
    for path in WORKFLOWS:
        wf = json.loads(path.read_text(encoding="utf-8"))
        nodes = {n["id"]: n for n in wf["nodes"]}
        consumers = {}
        for _, src, _, dst, _, _ in wf["links"]:
            consumers.setdefault(src, set()).add(nodes[dst]["type"])
        producer = {(dst, slot): nodes[src] for _, src, _, dst, slot, _ in wf["links"]}
        # the native path: everything downstream of LAMP Apply Motion samples with the SD-1.5 LAMP MODEL
        native = {n["id"] for n in wf["nodes"] if n["type"] == "LAMP_ApplyMotion"}
        grew = True
        while grew:
            more = {dst for _, src, _, dst, _, _ in wf["links"] if src in native} - native
            native |= more
            grew = bool(more)
        targets = {n["id"] for n in wf["nodes"] if n["type"] in ("LAMP_Sampler", "LAMP_InvertVideo")} | native
        succ = {}
        for _, src, _, dst, _, _ in wf["links"]:
            succ.setdefault(src, set()).add(dst)

        def reaches_lamp(node_id: int) -> bool:  # directly, or through a ControlNetApplyAdvanced
            return any(d in targets or (nodes[d]["type"] == "ControlNetApplyAdvanced" and succ.get(d, set()) & targets)
                       for d in succ.get(node_id, set()))

        for _, src, _, dst, _, kind in wf["links"]:
            if nodes[src]["type"] != "CheckpointLoaderSimple":
                continue
            ckpt, user = nodes[src]["widgets_values"][0].lower(), nodes[dst]
            feeds = consumers.get(dst, set())
            decodes_lamp = user["type"] == "VAEDecode" and (producer[(dst, 0)]["type"] == "LAMP_Sampler"
                                                            or producer[(dst, 0)]["id"] in native)
            lamp_side = user["type"].startswith("LAMP_") or bool({"LAMP_Sampler", "LAMP_InvertVideo"} & feeds) \
                or decodes_lamp or dst in native or reaches_lamp(dst)
            where = f"{path.name}: {kind} of {ckpt} -> {user['type']} {user['id']}"
            assert ("xl" in ckpt) != lamp_side, where


def test_the_native_workflows_sample_with_a_lamp_model():
    """lamp_native_ksampler: SD-XL frame one → LAMP Apply Motion → KSampler; lamp_controlnet_video: Canny of every
    source frame → SD-1.5 ControlNet on the LAMP prompts → SamplerCustomAdvanced with LAMP DDIM."""
    by_name = {p.name: json.loads(p.read_text(encoding="utf-8")) for p in WORKFLOWS}
    tail = {"LAMP_ApplyMotion", "LAMP_FirstFrame", "VAEDecode", "LAMP_ColorMatch", "SaveAnimatedWEBP", "SaveVideo"}
    for name, extra in {"lamp_native_ksampler.json": {"KSampler", "EmptyLatentImage"},
                        "lamp_controlnet_video.json": {"LoadVideo", "GetVideoComponents", "Canny", "ControlNetLoader",
                                                       "ControlNetApplyAdvanced", "SamplerCustomAdvanced", "CFGGuider",
                                                       "LAMP_DDIMSampler", "LAMP_DDIMSigmas", "LAMP_SharedNoise"}}.items():
        wf = by_name[name]
        nodes = {n["id"]: n for n in wf["nodes"]}
        types = {n["type"] for n in wf["nodes"]}
        assert tail | extra <= types, f"{name} lacks {sorted((tail | extra) - types)}"
        assert "LAMP_Sampler" not in types and "LAMP_LoadMotion" not in types, "the native path only"
        apply = next(n for n in wf["nodes"] if n["type"] == "LAMP_ApplyMotion")
        fed = {nodes[dst]["type"] for _, src, _, dst, _, _ in wf["links"] if src == apply["id"]}
        assert fed <= {"KSampler", "CFGGuider"} and fed, f"{name}: the LAMP MODEL feeds {fed}"
    wf = by_name["lamp_controlnet_video.json"]
    nodes = {n["id"]: n for n in wf["nodes"]}
    cn = [n for n in wf["nodes"] if n["type"] == "ControlNetLoader"]
    sd15_cn = next(n for n in cn if "sd15" in n["widgets_values"][0])
    assert any("xl" in n["widgets_values"][0] or "lora" in n["widgets_values"][0] for n in cn), "SD-XL edit of frame one"
    apply = next(nodes[dst] for _, src, _, dst, _, _ in wf["links"] if src == sd15_cn["id"])
    hint = next(nodes[src] for _, src, _, dst, slot, _ in wf["links"] if dst == apply["id"] and slot == 3)
    source = next(nodes[src] for _, src, _, dst, _, _ in wf["links"] if dst == hint["id"])
    assert hint["type"] == "Canny" and source["type"] == "GetVideoComponents", "one hint per source frame"
    sigmas = next(n for n in wf["nodes"] if n["type"] == "LAMP_DDIMSigmas")
    assert sigmas["widgets_values"] == [50], "the official 50 steps"


def test_workflow_files_are_up_to_date():
    """The committed JSON equals what workflows/make_workflows.py writes (regenerate after node changes)."""
    sys.path.insert(0, str(ROOT / "workflows"))
    try:
        import make_workflows
    finally:
        sys.path.remove(str(ROOT / "workflows"))
    for name, build in make_workflows.WORKFLOWS.items():
        committed = json.loads((ROOT / "workflows" / name).read_text(encoding="utf-8"))
        assert committed == json.loads(json.dumps(build().to_json())), f"{name} is stale: run make_workflows.py"
