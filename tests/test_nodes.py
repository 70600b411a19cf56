"""Every LAMP node as a plain class on tiny models, without ComfyUI (nodes.host falls back to plain Python).

ComfyUI objects are replaced by small stand-ins with the same interface: a MODEL (ModelPatcher-like, UNet
weights in LDM naming under ``model.diffusion_model``, family under ``model.model_config``), a VAE
(``encode(IMAGE[B,H,W,3]) -> raw latents [B,4,H/8,W/8]``) and CONDITIONING (``[[tensor[1,L,D], {}]]``).
"""
from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest
import torch
from diffusers import UNet2DConditionModel

from conftest import TINY_CONFIG, randomize_motion_layers
from lamp_model.noise import make_raw_noise, shared_noise
from lamp_model.postprocess import color_match
from lamp_model.sampling import sample_video
from lamp_model.unet3d import inflate_unet
from lamp_model.weights import save_motion, save_unet
from nodes import NODE_CLASS_MAPPINGS, host
from nodes.color_match import LampColorMatch
from nodes.first_frame import LampFirstFrame, fit_image
from nodes.loader_nodes import LampConvertOfficial, LampLoadMotion, LampLoadOfficialCheckpoint
from nodes.motion_model import SD1_LATENT_SCALE, LampModel, model_family
from nodes.sampler import LampSampler
from nodes.shared_noise import LampNoise, LampSharedNoise

CTX = TINY_CONFIG["cross_attention_dim"]
SD15_UNET_CONFIG = {"context_dim": 768, "model_channels": 320, "adm_in_channels": None,
                    "use_linear_in_transformer": False, "in_channels": 4}


# ---------------------------------------------------------------------------------------------- stand-ins
def diffusers_to_ldm(state: dict, layers: int, levels: int) -> dict:
    """Rename a diffusers SD-1.x-style UNet state dict to the LDM names a ComfyUI MODEL uses."""
    res = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
           "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
    top = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
           "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        new = None
        for d, l in top.items():
            if key.startswith(d + "."):
                new = l + key[len(d):]
        if parts[0] == "down_blocks":
            i, kind, j = int(parts[1]), parts[2], int(parts[3])
            rest = parts[4:]
            if kind == "resnets":
                new = f"input_blocks.{i * (layers + 1) + j + 1}.0." + ".".join([res.get(rest[0], rest[0])] + rest[1:])
            elif kind == "attentions":
                new = f"input_blocks.{i * (layers + 1) + j + 1}.1." + ".".join(rest)
            else:  # downsamplers.0.conv.*
                new = f"input_blocks.{(i + 1) * (layers + 1)}.0.op." + ".".join(rest[1:])
        elif parts[0] == "up_blocks":
            i, kind, j = int(parts[1]), parts[2], int(parts[3])
            rest = parts[4:]
            has_attn = any(k.startswith(f"up_blocks.{i}.attentions.") for k in state)
            if kind == "resnets":
                new = f"output_blocks.{i * (layers + 1) + j}.0." + ".".join([res.get(rest[0], rest[0])] + rest[1:])
            elif kind == "attentions":
                new = f"output_blocks.{i * (layers + 1) + j}.1." + ".".join(rest)
            else:  # upsamplers.0.conv.*
                new = f"output_blocks.{i * (layers + 1) + layers}.{2 if has_attn else 1}." + ".".join(rest)
        elif parts[0] == "mid_block":
            kind, j, rest = parts[1], int(parts[2]), parts[3:]
            if kind == "resnets":
                new = f"middle_block.{2 * j}." + ".".join([res.get(rest[0], rest[0])] + rest[1:])
            else:
                new = "middle_block.1." + ".".join(rest)
        assert new is not None, key
        out[new] = value
    assert len(out) == len(state)
    assert levels == len(TINY_CONFIG["block_out_channels"])
    return out


class StubUNet:
    def __init__(self, state):
        self.state = state

    def state_dict(self):
        return dict(self.state)


def make_model(state_ldm: dict, family: str = "SD15", unet_config: dict | None = None):
    """A ComfyUI MODEL stand-in: ``model.model.diffusion_model`` and ``model.model.model_config``."""
    config = type(family, (), {})()
    config.unet_config = dict(SD15_UNET_CONFIG if unet_config is None else unet_config)
    return SimpleNamespace(model=SimpleNamespace(diffusion_model=StubUNet(state_ldm), model_config=config),
                           patches={})


class StubVAE:
    """encode: 8× average pool and a fixed 3→4 channel mix, returning raw (unscaled) latents like ComfyUI."""

    mix = torch.tensor([[0.5, -0.2, 0.1, 0.3], [0.1, 0.4, -0.3, 0.2], [-0.2, 0.1, 0.6, -0.1]])

    def encode(self, pixels):
        assert pixels.ndim == 4 and pixels.shape[-1] == 3
        pooled = torch.nn.functional.avg_pool2d(pixels.movedim(-1, 1), 8)
        return torch.einsum("bchw,cd->bdhw", pooled * 2 - 1, self.mix) * 5.0


def cond(width: int = CTX, tokens: int = 77, seed: int = 0, extras: dict | None = None):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, width, generator=g), dict(extras or {})]]


# ---------------------------------------------------------------------------------------------- fixtures
pytestmark = pytest.mark.usefixtures("restore_host_state")


@pytest.fixture
def folders(tmp_path):
    lamp, inp = tmp_path / "models" / "lamp", tmp_path / "input"
    lamp.mkdir(parents=True)
    inp.mkdir()
    host.configure_fallback(lamp=str(lamp), input=str(inp), output=str(tmp_path / "output"))
    return SimpleNamespace(lamp=lamp, input=inp)


@pytest.fixture(scope="module")
def parts():
    """A tiny SD-1.x-shaped 2-D UNet and the LAMP UNet inflated from it with random motion layers."""
    torch.manual_seed(0)
    unet2d = UNet2DConditionModel(**TINY_CONFIG).eval()
    lamp = randomize_motion_layers(inflate_unet(unet2d).eval(), seed=1)
    state2d = {k: v.clone() for k, v in unet2d.state_dict().items()}
    ldm = diffusers_to_ldm(state2d, TINY_CONFIG["layers_per_block"], len(TINY_CONFIG["block_out_channels"]))
    return SimpleNamespace(unet2d=unet2d, lamp=lamp, state2d=state2d, ldm=ldm)


@pytest.fixture
def motion_file(folders, parts):
    path = folders.lamp / "horse_run.safetensors"
    save_motion(parts.lamp, path, {"prompt": "a horse runs"}, dtype=torch.float32)
    return "horse_run.safetensors"


@pytest.fixture
def lamp_model(folders, parts, motion_file):
    return LampLoadMotion().load(make_model(parts.ldm), motion_file, "fp32")[0]


def first_frame_latent(frames=4, h=4, w=4, seed=3):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(1, h * 8, w * 8, 3, generator=g)
    return LampFirstFrame().encode(image, StubVAE(), w * 8, h * 8, frames, "stretch")[0]


# ---------------------------------------------------------------------------------------------- node metadata
def test_every_node_has_lamp_id_category_description_and_tooltips():
    ours = {k: v for k, v in NODE_CLASS_MAPPINGS.items() if v.__module__.split(".")[-1] != "train_nodes"}
    assert set(ours) == {"LAMP_LoadMotion", "LAMP_LoadOfficialCheckpoint", "LAMP_ConvertOfficial",
                         "LAMP_FirstFrame", "LAMP_SharedNoise", "LAMP_Sampler", "LAMP_ColorMatch",
                         "LAMP_ApplyMotion", "LAMP_ApplyOfficialMotion", "LAMP_DDIMSampler", "LAMP_DDIMSigmas",
                         "LAMP_VideoMetrics"} | \
        {k for k, v in ours.items() if v.__module__.split(".")[-1] == "invert_nodes"}
    from nodes import NODE_DISPLAY_NAME_MAPPINGS
    for node_id, cls in ours.items():
        assert node_id.startswith("LAMP_") and NODE_DISPLAY_NAME_MAPPINGS[node_id].startswith("LAMP ")
        assert cls.CATEGORY == "LAMP" and len(cls.DESCRIPTION) > 40
        assert callable(getattr(cls(), cls.FUNCTION))
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
        spec = cls.INPUT_TYPES()
        for section in ("required", "optional"):
            for name, item in spec.get(section, {}).items():
                assert len(item) == 2 and item[1].get("tooltip"), f"{node_id}.{name} has no tooltip"


# ---------------------------------------------------------------------------------------------- loaders
def test_ldm_stand_in_round_trips_through_the_engine(parts):
    from lamp_model.weights import load_base_unet2d
    _, state = load_base_unet2d(parts.ldm, hints={"attention_head_dim": 2, "norm_num_groups": 4})
    assert state.keys() == parts.state2d.keys()
    assert all(torch.equal(state[k], parts.state2d[k]) for k in state)


def test_load_motion_puts_the_motion_on_the_model(lamp_model, parts):
    assert isinstance(lamp_model, LampModel) and lamp_model.metadata["prompt"] == "a horse runs"
    assert lamp_model.storage_dtype == torch.float32 and next(lamp_model.unet.parameters()).device.type == "cpu"
    got, want = lamp_model.unet.state_dict(), parts.lamp.state_dict()
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert not any(p.requires_grad for p in lamp_model.unet.parameters())


def test_load_motion_keeps_patched_weights_of_the_model(folders, parts, motion_file):
    """LoRAs: the node reads the MODEL's (patched) UNet weights, not a file; a changed weight carries over."""
    ldm = dict(parts.ldm)
    ldm["input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"] = ldm[
        "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"] + 0.5
    lamp = LampLoadMotion().load(make_model(ldm), motion_file, "fp32")[0]
    got = lamp.unet.state_dict()["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"]
    assert torch.equal(got, parts.state2d["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"] + 0.5)


@pytest.mark.parametrize("family,config,named", [
    ("SDXL", {"context_dim": 2048, "model_channels": 320, "adm_in_channels": 2816, "use_linear_in_transformer": True},
     "SD-XL"),
    ("SD20", {"context_dim": 1024, "model_channels": 320, "use_linear_in_transformer": True}, "SD-2.x"),
    ("Flux", {"image_model": "flux", "context_in_dim": 4096}, "Flux"),
    ("SD15_instructpix2pix", {**SD15_UNET_CONFIG, "in_channels": 8}, "InstructPix2Pix"),
])
def test_load_motion_refuses_other_families(folders, parts, motion_file, family, config, named):
    with pytest.raises(ValueError) as err:
        LampLoadMotion().load(make_model(parts.ldm, family, config), motion_file)
    assert named in str(err.value) and "SD-1.x" in str(err.value) and "SD-1.5" in str(err.value)
    assert model_family(make_model({}, "SD15"))[1]


def test_load_motion_errors_name_the_file_and_the_fix(folders, parts, motion_file):
    model = make_model(parts.ldm)
    with pytest.raises(FileNotFoundError, match=r"gone\.safetensors.*not found in .*lamp"):
        LampLoadMotion().load(model, "gone.safetensors")
    (folders.lamp / "broken.safetensors").write_bytes(b"\x00garbage, not safetensors")
    with pytest.raises(ValueError, match=r"LAMP Load Motion: cannot read motion file 'broken\.safetensors'"):
        LampLoadMotion().load(model, "broken.safetensors")
    save_unet(parts.lamp, folders.lamp / "official_full.safetensors")
    with pytest.raises(ValueError, match="LAMP Load Official Checkpoint"):
        LampLoadMotion().load(model, "official_full.safetensors")
    # a motion made for a wider UNet does not fit the tiny base
    torch.manual_seed(0)
    wide = inflate_unet(UNet2DConditionModel(**{**TINY_CONFIG, "block_out_channels": [32, 64]}))
    save_motion(wide, folders.lamp / "wide.safetensors")
    with pytest.raises(ValueError, match="does not fit this model"):
        LampLoadMotion().load(model, "wide.safetensors")


def official_folder(root, unet):
    """An official-style checkpoint: <root>/unet/config.json + diffusion_pytorch_model.bin (pickle, fp32)."""
    folder = root / "unet"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"_class_name": "UNet3DConditionModel", **unet.config}))
    torch.save(unet.state_dict(), folder / "diffusion_pytorch_model.bin")
    return root


def test_load_official_checkpoint_and_convert(folders, parts):
    official_folder(folders.lamp / "horse_run", parts.lamp)
    lamp = LampLoadOfficialCheckpoint().load("horse_run", "fp32")[0]
    assert all(torch.equal(lamp.unet.state_dict()[k], v) for k, v in parts.lamp.state_dict().items())

    out = LampConvertOfficial().convert("horse_run")
    assert out["result"] == ("horse_run.safetensors",) and "wrote" in out["ui"]["text"][0]
    assert "horse_run.safetensors" in host.list_motion_files()
    with pytest.raises(FileExistsError, match="overwrite"):
        LampConvertOfficial().convert(str(folders.lamp / "horse_run" / "unet"))
    assert LampConvertOfficial().convert("horse_run", "copy", overwrite=False)["result"] == ("copy.safetensors",)
    converted = LampLoadMotion().load(make_model(parts.ldm), "copy.safetensors", "fp32")[0]
    for k, v in parts.lamp.state_dict().items():  # motion stored in fp16 by default
        assert torch.allclose(converted.unet.state_dict()[k], v, atol=2e-3, rtol=1e-3), k


def test_official_loader_errors(folders):
    with pytest.raises(FileNotFoundError, match="not found"):
        LampLoadOfficialCheckpoint().load("no_such_folder")
    with pytest.raises(FileNotFoundError, match="no checkpoint path"):
        LampConvertOfficial().convert("  ")
    (folders.lamp / "empty").mkdir()
    with pytest.raises(ValueError, match="LAMP Load Official Checkpoint: cannot load 'empty'.*config.json"):
        LampLoadOfficialCheckpoint().load("empty")
    with pytest.raises(ValueError, match="plain file name"):
        LampConvertOfficial().convert("empty", "../escape")


# ---------------------------------------------------------------------------------------------- first frame
def test_first_frame_latent_layout_and_values():
    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 80, 128, 3, generator=g)
    latent, shown = LampFirstFrame().encode(image, StubVAE(), 64, 40, 16, "stretch")
    samples = latent["samples"]
    assert samples.shape == (16, 4, 5, 8) and samples.dtype == torch.float32 and samples.device.type == "cpu"
    assert shown.shape == (1, 40, 64, 3) and shown.dtype == torch.float32 and 0 <= shown.min() <= shown.max() <= 1
    assert torch.allclose(samples[0], StubVAE().encode(fit_image(image, 64, 40, "stretch"))[0])
    assert samples[1:].abs().sum() == 0


def test_first_frame_uses_first_of_a_batch_and_drops_alpha(caplog):
    images = torch.rand(3, 64, 64, 4)
    with caplog.at_level(logging.WARNING, logger="ComfyUI-LAMP"):
        out = LampFirstFrame().encode(images, StubVAE(), 64, 64, 4)
    assert "batch of 3" in caplog.text and "batch of 3" in out["ui"]["lamp_warning"][0]  # console and node
    latent = out["result"][0]
    assert torch.allclose(latent["samples"][0], StubVAE().encode(images[:1, :, :, :3])[0])


@pytest.mark.parametrize("mode", ["stretch", "center-crop", "pad"])
def test_resize_modes(mode):
    image = torch.ones(1, 100, 300, 3)
    out = fit_image(image, 64, 64, mode)
    assert out.shape == (1, 64, 64, 3)
    if mode == "pad":  # the wide image fits the width; black bars above and below
        assert out[0, 0].max() == 0 and out[0, 32].min() > 0.99
    else:
        assert out.min() > 0.99


def test_first_frame_bad_input():
    image = torch.rand(1, 64, 64, 3)
    with pytest.raises(ValueError, match=r"width 100 \(use 96 or 104\) is not a multiple of 8"):
        LampFirstFrame().encode(image, StubVAE(), 100, 64, 16)
    with pytest.raises(ValueError, match="frames must be at least 2"):
        LampFirstFrame().encode(image, StubVAE(), 64, 64, 1)
    with pytest.raises(ValueError, match=r"IMAGE \[N,H,W,3\]"):
        LampFirstFrame().encode(torch.rand(64, 64, 3), StubVAE(), 64, 64, 16)


# ---------------------------------------------------------------------------------------------- shared noise
def test_shared_noise_is_a_comfyui_noise():
    noise = LampSharedNoise().make(7, 0.3)[0]
    assert noise.seed == 7 and noise.alpha == 0.3
    latent = {"samples": torch.zeros(5, 4, 6, 8)}
    got = noise.generate_noise(latent)
    want = shared_noise(make_raw_noise(7, (1, 4, 5, 6, 8)), 0.3)[0].transpose(0, 1)
    assert got.shape == (5, 4, 6, 8) and torch.equal(got, want)
    assert torch.equal(noise.generate_noise({"samples": torch.zeros(1, 4, 5, 6, 8)}), want.transpose(0, 1)[None])
    with pytest.raises(ValueError, match="alpha"):
        LampSharedNoise().make(0, 1.5)


# ---------------------------------------------------------------------------------------------- sampler
def run_sampler(lamp_model, latent, noise=None, steps=2, **kw):
    return LampSampler().sample(lamp_model, cond(seed=1), cond(seed=2), latent, noise or LampNoise(5, 0.2),
                                steps=steps, cfg=kw.pop("cfg", 7.5), **kw)[0]


def test_sampler_is_the_engine_with_comfyui_types(lamp_model):
    latent = first_frame_latent(frames=4)
    out = run_sampler(lamp_model, latent, steps=3, scheduler="ddim", dtype="fp32")
    samples = out["samples"]
    assert samples.shape == (4, 4, 4, 4) and samples.dtype == torch.float32 and samples.device.type == "cpu"
    assert torch.allclose(samples[0], latent["samples"][0], atol=1e-6), "frame one must stay pinned"
    want = sample_video(lamp_model.unet, (latent["samples"][:1] * SD1_LATENT_SCALE).transpose(0, 1)[None],
                        cond(seed=1)[0][0], cond(seed=2)[0][0], make_raw_noise(5, (1, 4, 4, 4, 4)), steps=3,
                        guidance_scale=7.5, shared_noise_alpha=0.2, adain=True, scheduler="ddim")
    assert torch.allclose(samples, want[0].transpose(0, 1) / SD1_LATENT_SCALE, atol=1e-5)
    assert not torch.equal(samples[1], samples[2])


def test_sampler_progress_every_step_and_cancel_leaves_nothing_behind(lamp_model, monkeypatch):
    bars = []
    real = host.progress
    monkeypatch.setattr(host, "progress", lambda total, previews=False: bars.append(real(total, previews)) or bars[-1])
    latent = first_frame_latent(frames=3)
    before = {k: v.clone() for k, v in lamp_model.unet.state_dict().items()}
    reference = run_sampler(lamp_model, latent, steps=3)
    assert bars[-1].history == [1, 2, 3]

    host.simulate_cancel(after=1)  # Cancel pressed during the second step
    with pytest.raises(host.Interrupted):
        run_sampler(lamp_model, latent, steps=3)
    assert bars[-1].history == [1]
    after = lamp_model.unet.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "stored weights changed"
    host.free_memory()  # as if ComfyUI unloaded everything in between
    again = run_sampler(lamp_model, latent, steps=3)
    assert torch.equal(again["samples"], reference["samples"])


def test_sampler_color_consistency_static_is_the_engine_option(lamp_model):
    latent = first_frame_latent(frames=4)
    first = (latent["samples"][:1] * SD1_LATENT_SCALE).transpose(0, 1)[None]
    static = run_sampler(lamp_model, latent, steps=3, color_consistency="static")["samples"]
    want = sample_video(lamp_model.unet, first, cond(seed=1)[0][0], cond(seed=2)[0][0],
                        make_raw_noise(5, (1, 4, 4, 4, 4)), steps=3, guidance_scale=7.5, shared_noise_alpha=0.2,
                        color_consistency="static")
    assert torch.allclose(static, want[0].transpose(0, 1) / SD1_LATENT_SCALE, atol=1e-5)
    assert not torch.allclose(static, run_sampler(lamp_model, latent, steps=3)["samples"], atol=1e-4)
    assert "color_consistency" in LampSampler.INPUT_TYPES()["optional"]
    with pytest.raises(ValueError, match="color_consistency must be one of"):
        run_sampler(lamp_model, latent, color_consistency="background")


def test_sampler_in_another_dtype_keeps_the_stored_weights(lamp_model):
    stored = {k: v.clone() for k, v in lamp_model.unet.state_dict().items()}
    out = run_sampler(lamp_model, first_frame_latent(frames=3), dtype="bf16")
    assert out["samples"].dtype == torch.float32 and torch.isfinite(out["samples"]).all()
    assert lamp_model.storage_dtype == torch.float32
    assert all(torch.equal(stored[k], v) for k, v in lamp_model.unet.state_dict().items())


def test_sampler_accepts_other_noise_and_long_prompts(lamp_model):
    class RandomNoise:  # ComfyUI's Noise_RandomNoise protocol
        seed = 3

        def generate_noise(self, latent):
            return torch.randn(latent["samples"].shape, generator=torch.Generator().manual_seed(self.seed))
    latent = first_frame_latent(frames=3)
    out = LampSampler().sample(lamp_model, cond(tokens=154), cond(tokens=77), latent, RandomNoise(), steps=2)[0]
    assert out["samples"].shape == (3, 4, 4, 4) and torch.isfinite(out["samples"]).all()


def test_sampler_bad_input(lamp_model, caplog):
    latent = first_frame_latent(frames=3)
    sampler, noise = LampSampler(), LampNoise(0)
    with pytest.raises(ValueError, match="width 2048.*SD-XL CLIP"):
        sampler.sample(lamp_model, cond(width=2048), cond(width=2048), latent, noise)
    with pytest.raises(ValueError, match="1 frame"):
        sampler.sample(lamp_model, cond(), cond(), {"samples": latent["samples"][:1]}, noise)
    with pytest.raises(ValueError, match="steps must be between 1 and 1000"):
        sampler.sample(lamp_model, cond(), cond(), latent, noise, steps=0)
    with pytest.raises(ValueError, match="cfg must be between 0 and 100"):
        sampler.sample(lamp_model, cond(), cond(), latent, noise, cfg=250.0)
    with pytest.raises(ValueError, match="LAMP Load Motion"):
        sampler.sample(object(), cond(), cond(), latent, noise)
    with pytest.raises(ValueError, match="not a ComfyUI CONDITIONING"):
        sampler.sample(lamp_model, "a horse", cond(), latent, noise)
    with pytest.raises(ValueError, match="not a NOISE"):
        sampler.sample(lamp_model, cond(), cond(), latent, 42)
    with pytest.raises(ValueError, match="4-channel LATENT"):
        sampler.sample(lamp_model, cond(), cond(), {"samples": torch.zeros(3, 16, 8, 8)}, noise)
    with pytest.raises(ValueError, match="needs an SD-1.5 ControlNet"):  # ControlNets are honoured, SD-1.x only
        sampler.sample(lamp_model, cond(extras={"control": object()}), cond(), latent, noise, steps=1)
    with caplog.at_level(logging.WARNING, logger="ComfyUI-LAMP"):
        sampler.sample(lamp_model, cond(extras={"area": (8, 8, 0, 0)}), cond(), latent, noise, steps=1)
    assert "area" in caplog.text and "ignores" in caplog.text


# ---------------------------------------------------------------------------------------------- colour match
def test_color_match_node():
    g = torch.Generator().manual_seed(0)
    frames = torch.rand(4, 16, 16, 3, generator=g)
    frames[1:] = frames[1:] * 0.5 + 0.3  # colour drift
    out = LampColorMatch().match(frames, "histogram", 1.0)[0]
    assert out.shape == frames.shape and out.dtype == torch.float32 and 0 <= out.min() <= out.max() <= 1
    assert torch.equal(out, color_match(frames, None, "histogram", 1.0))
    assert torch.equal(out[0], frames[0])
    assert torch.equal(LampColorMatch().match(frames, "adain", 0.0)[0], frames)
    ref = torch.rand(2, 32, 32, 3, generator=g)
    matched = LampColorMatch().match(frames, "both", 1.0, reference=ref)[0]
    small = torch.nn.functional.interpolate(ref[:1].movedim(-1, 1), size=(16, 16), mode="bilinear",
                                            antialias=True).clamp(0, 1).movedim(1, -1)[0]
    assert torch.equal(matched, color_match(frames, small, "both", 1.0))
    static = LampColorMatch().match(frames, "histogram", 1.0, static=True)[0]
    assert torch.equal(static, color_match(frames, None, "histogram", 1.0, static=True))
    assert not torch.equal(static, out)
    with pytest.raises(ValueError, match="mode must be one of"):
        LampColorMatch().match(frames, "mkl")
    with pytest.raises(ValueError, match="strength"):
        LampColorMatch().match(frames, "adain", 2.0)
