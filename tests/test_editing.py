"""Video editing (paper §5.2): the editing start, reconstruction, clear errors, the inversion cache, the
``edit`` CLI with its cache, the one-clip training preset, and the LAMP Invert Video node with the sampler."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from conftest import TINY_CONFIG, randomize_motion_layers
from test_data import moving_square, write_video
from test_nodes import StubVAE, cond, first_frame_latent, folders, lamp_model, motion_file, parts  # noqa: F401
from test_train_cli import tiny_sd  # noqa: F401  (fixture)
from test_train_nodes import init as train_init, steps as train_steps, world  # noqa: F401  (world: fixture)

from lamp_model import ddim_invert, edit_video
from lamp_model.editing import InversionCache, check_inverted_start, clip_window, files_fingerprint, fingerprint
from lamp_model.noise import make_raw_noise
from lamp_model.sampling import sample_video
from nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, host
from nodes.invert_nodes import InvertedStart, LampInvertVideo
from nodes.motion_model import SD1_LATENT_SCALE
from nodes.sampler import LampSampler

CTX = TINY_CONFIG["cross_attention_dim"]


class RecordingUNet:
    """Zero noise prediction; records every UNet input."""

    def __init__(self):
        self.calls = []

    def __call__(self, sample, timestep, encoder_hidden_states):
        self.calls.append(sample.clone())
        return torch.zeros_like(sample)


def latents(frames=4, seed=0, b=1):
    return torch.randn(b, 4, frames, 8, 8, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------- engine
def test_editing_start_skips_the_shared_noise_mix():
    inverted, first = latents(5, 1), latents(1, 2)
    ctx = torch.randn(1, 3, CTX)
    unet = RecordingUNet()
    edit_video(unet, first, ctx, torch.zeros_like(ctx), inverted, steps=3, guidance_scale=12.5)
    start = unet.calls[0][:1]  # CFG batch [uncond, cond]: same latents twice
    assert torch.equal(start[:, :, 1:], inverted[:, :, 1:]), "frames 1.. start from the inversion, unmixed"
    assert torch.equal(start[:, :, :1], first), "frame 0 is the edited first frame, pinned"
    mixed = RecordingUNet()
    sample_video(mixed, first, ctx, torch.zeros_like(ctx), inverted, steps=3)  # the normal run mixes
    assert not torch.equal(mixed.calls[0][:1, :, 1:], inverted[:, :, 1:])


def test_edit_is_sample_video_with_an_unmixed_start(tiny_unet):
    inverted, first = latents(4, 3), latents(1, 4)
    c, u = torch.randn(1, 3, CTX), torch.randn(1, 3, CTX)
    got = edit_video(tiny_unet, first, c, u, inverted, steps=3, guidance_scale=5.0)
    want = sample_video(tiny_unet, first, c, u, inverted, steps=3, guidance_scale=5.0, shared_noise_alpha=0.0)
    assert torch.equal(got, want)
    assert torch.equal(got[:, :, :1], first)


@pytest.mark.parametrize("motion, min_psnr, max_path", [("right", 28.0, 0.5), ("down", 18.0, 3.0)])
def test_invert_then_edit_reconstructs_a_toy_clip(motion, min_psnr, max_path):
    """The shipped toy 'right' motion (a tiny trained LAMP UNet): invert a clip, sample it again with its own first
    frame and caption (no guidance, 10 steps): it comes back, also a 'down' clip, a motion this model never learned
    (measured: right 31.7 dB, path within 0.23 px; down 21.1 dB, 1.7 px). From shared noise instead, the 'down'
    clip is lost (12.5 dB, the object drifts 11.8 px)."""
    from lamp_model.toy import codec, tracking, world
    from lamp_model.toy.models import load_text_encoder
    from lamp_model.toy.stage3 import load_motion_unet

    unet, text = load_motion_unet("right"), load_text_encoder()
    clip = world.training_clips(motion, 8)[0]
    x0 = codec.encode_video(clip.frames)
    empty, caption = text.encode([""]), text.encode([clip.caption])
    inverted = ddim_invert(unet, x0, empty, steps=10)
    shape = clip.scenes[0].shape
    source = tracking.track(clip.frames, shape)

    def score(latent_video):
        video = codec.decode_video(latent_video)[0]
        track = tracking.track(video, shape)
        err = np.hypot(track.cx - source.cx, track.cy - source.cy)
        return float(10 * torch.log10(1 / ((video - clip.frames) ** 2).mean())), float(np.nanmax(err))

    psnr, path = score(edit_video(unet, x0[:, :, :1], caption, empty, inverted, steps=10, guidance_scale=1.0))
    assert psnr > min_psnr and path < max_path, (psnr, path)
    if motion == "down":
        psnr_noise, path_noise = score(sample_video(unet, x0[:, :, :1], caption, empty, make_raw_noise(0, x0.shape),
                                                    steps=10, guidance_scale=1.0))
        assert psnr_noise < psnr - 5 and path_noise > 3 * max_path, (psnr_noise, path_noise)


def test_clip_window_and_its_errors():
    assert clip_window(10, 4, 1, 2) == [1, 3, 5, 7]
    assert clip_window(7, 4, 0, 2) == [0, 2, 4, 6]
    with pytest.raises(ValueError, match=r"the clip has 6 frames, but 4 frames at stride 2 from frame 0 need 7.*"
                                         r"at most 3 frames"):
        clip_window(6, 4, 0, 2)
    with pytest.raises(ValueError, match="frames must be an integer >= 2"):
        clip_window(6, 1, 0, 1)
    with pytest.raises(ValueError, match="stride must be"):
        clip_window(6, 2, 0, 0)


def test_bad_editing_inputs_are_named(tiny_unet):
    c = torch.randn(1, 3, CTX)
    with pytest.raises(ValueError, match=r"first frame's latent \(1, 4, 1, 16, 16\) does not match.*64x64 pixels"):
        edit_video(tiny_unet, torch.zeros(1, 4, 1, 16, 16), c, c, latents(4))
    with pytest.raises(ValueError, match="inverted start must be a clip latent"):
        edit_video(tiny_unet, torch.zeros(1, 4, 1, 8, 8), c, c, torch.zeros(4, 4, 8, 8))
    with pytest.raises(ValueError, match="inverted with 50 steps but sampling uses 10"):
        edit_video(tiny_unet, torch.zeros(1, 4, 1, 8, 8), c, c, latents(4), steps=10, inversion_steps=50)
    with pytest.raises(ValueError, match="choose ddim"):
        edit_video(tiny_unet, torch.zeros(1, 4, 1, 8, 8), c, c, latents(4), scheduler="euler")
    with pytest.raises(ValueError, match="cross-attention takes 16"):
        edit_video(tiny_unet, torch.zeros(1, 4, 1, 8, 8), torch.zeros(1, 3, 768), None, latents(4))
    assert check_inverted_start(latents(3), torch.zeros(1, 4, 8, 8)).shape == (1, 4, 1, 8, 8)


def test_inversion_cache(tmp_path):
    motion = tmp_path / "motion.safetensors"
    motion.write_bytes(b"v1")
    cache = InversionCache(tmp_path / "x.inversion.safetensors")
    key = fingerprint(files_fingerprint(motion, tmp_path / "base"), latents(3), 50)
    assert cache.get(key) is None
    cache.put(key, latents(3, 9), {"frames": 3})
    assert torch.equal(cache.get(key), latents(3, 9))
    assert cache.get(fingerprint(files_fingerprint(motion, tmp_path / "base"), latents(3), 49)) is None
    assert cache.get(fingerprint(files_fingerprint(motion, tmp_path / "base"), latents(3, 1), 50)) is None
    before = files_fingerprint(motion)
    motion.write_bytes(b"v22")  # re-tuned
    assert files_fingerprint(motion) != before
    cache.path.write_bytes(b"broken")
    assert cache.get(key) is None


# ---------------------------------------------------------------------------------------------- CLI
@pytest.fixture
def edit_inputs(tmp_path, tiny_sd):  # noqa: F811
    from diffusers import UNet2DConditionModel

    from lamp_model.unet3d import inflate_unet
    from lamp_model.weights import save_motion

    unet2d = UNet2DConditionModel.from_pretrained(str(tiny_sd / "unet"))
    motion = tmp_path / "motion.safetensors"
    save_motion(randomize_motion_layers(inflate_unet(unet2d), seed=3), motion, dtype=torch.float32)
    video = write_video(tmp_path / "run.mp4", moving_square(9, w=32, h=32))
    first = tmp_path / "edited.png"
    Image.fromarray(255 - moving_square(1, w=32, h=32)[0]).save(first)
    g = torch.Generator().manual_seed(0)
    emb = tmp_path / "emb.safetensors"
    save_file({"": torch.randn(5, CTX, generator=g), "a square runs": torch.randn(5, CTX, generator=g)}, str(emb))
    return ["--motion", str(motion), "--base", str(tiny_sd), "--video", str(video), "--first-frame", str(first),
            "--prompt", "a square runs", "--text-embeddings", str(emb), "--frames", "4", "--stride", "2",
            "--steps", "3", "--width", "32", "--height", "32", "--format", "gif", "--out", str(tmp_path / "out")]


def test_edit_cli_writes_video_strip_and_reuses_its_inversion(edit_inputs, tmp_path, capsys):
    from lamp_model.__main__ import main

    assert main(["edit", *edit_inputs]) == 0
    out = tmp_path / "out"
    cached = out / "run_edit.inversion.safetensors"
    assert cached.is_file() and (out / "run_edit_strip.png").is_file()
    with Image.open(out / "run_edit.gif") as gif:
        assert gif.size == (32, 32) and gif.n_frames == 4
    with Image.open(out / "run_edit_strip.png") as strip:
        assert strip.size == (4 * 32, 64)  # source above, edit below
    first_run = cached.read_bytes()
    capsys.readouterr()
    assert main(["edit", *edit_inputs, "--prompt", "a square runs", "--guidance-scale", "3"]) == 0
    assert "reusing the inversion" in capsys.readouterr().out
    assert cached.read_bytes() == first_run
    assert main(["edit", *edit_inputs, "--start", "1"]) == 0  # other frames: inverted again
    assert "reusing" not in capsys.readouterr().out


def test_edit_cli_errors(edit_inputs, capsys):
    from lamp_model.edit_cli import main

    assert main([*edit_inputs, "--frames", "6"]) == 2  # 9 frames cannot give 6 at stride 2
    assert "the clip has 9 frames, but 6 frames at stride 2" in capsys.readouterr().err
    assert main([*edit_inputs, "--first-frame", "missing.png"]) == 2
    assert "--first-frame not found" in capsys.readouterr().err


def test_train_cli_editing_preset(tmp_path):
    from lamp_model.train_cli import resolve_settings

    base = ["--base", "b", "--videos", "run.mp4", "--output-dir", str(tmp_path)]
    _, config = resolve_settings(base + ["--preset", "editing"])
    assert (config.n_frames, config.stride, config.steps, config.save_every) == (24, 2, 500, 50)
    _, config = resolve_settings(base + ["--preset", "editing", "--steps", "300"])
    assert (config.n_frames, config.steps) == (24, 300)
    yaml_file = tmp_path / "edit.yaml"
    yaml_file.write_text("preset: editing\nstride: 3\n")
    _, config = resolve_settings(base + ["--config", str(yaml_file)])
    assert (config.n_frames, config.stride) == (24, 3)


# ---------------------------------------------------------------------------------------------- nodes
pytestmark = pytest.mark.usefixtures("restore_host_state")


def source_images(frames=9, h=32, w=32, seed=0):
    return torch.rand(frames, h, w, 3, generator=torch.Generator().manual_seed(seed))


def invert(model, images, **kw):
    args = dict(frames=4, start=1, stride=2, steps=3, width=32, height=32, resize="stretch", dtype="fp32")
    args.update(kw)
    return LampInvertVideo().invert(model, images, StubVAE(), cond(seed=7), **args)


def test_invert_node_is_the_engine_inversion(lamp_model):  # noqa: F811
    assert NODE_DISPLAY_NAME_MAPPINGS["LAMP_InvertVideo"] == "LAMP Invert Video"
    assert NODE_CLASS_MAPPINGS["LAMP_InvertVideo"] is LampInvertVideo
    images = source_images()
    noise, first, source = invert(lamp_model, images)
    assert isinstance(noise, InvertedStart) and noise.steps == 3 and noise.alpha == 0.0
    assert source.shape == (4, 32, 32, 3) and torch.equal(source, images[[1, 3, 5, 7]])
    assert torch.equal(first, source[:1])
    clean = (StubVAE().encode(source) * SD1_LATENT_SCALE).transpose(0, 1)[None]
    want = ddim_invert(lamp_model.unet, clean, cond(seed=7)[0][0], steps=3)
    assert torch.allclose(noise.raw((1, 4, 4, 4, 4)), want, atol=1e-6)
    comfy = noise.generate_noise({"samples": torch.zeros(4, 4, 4, 4)})
    assert torch.equal(comfy, want[0].transpose(0, 1))


def test_sampler_edits_from_an_inverted_start(lamp_model):  # noqa: F811
    noise, _, _ = invert(lamp_model, source_images())
    latent = first_frame_latent(frames=4)
    out = LampSampler().sample(lamp_model, cond(seed=1), cond(seed=2), latent, noise, steps=3, cfg=7.5,
                               scheduler="ddim", adain=True, dtype="fp32")[0]["samples"]
    first = (latent["samples"][:1] * SD1_LATENT_SCALE).transpose(0, 1)[None]
    want = edit_video(lamp_model.unet, first, cond(seed=1)[0][0], cond(seed=2)[0][0], noise.latent, steps=3,
                      guidance_scale=7.5)
    assert torch.allclose(out, want[0].transpose(0, 1) / SD1_LATENT_SCALE, atol=1e-5)
    with pytest.raises(ValueError, match=r"LAMP Sampler: the inverted start .* is 4 frames of 32x32.*frames=4"):
        LampSampler().sample(lamp_model, cond(seed=1), cond(seed=2), first_frame_latent(frames=6), noise, steps=3)
    with pytest.raises(ValueError, match="LAMP Sampler: the clip was inverted with 3 steps but sampling uses 5"):
        LampSampler().sample(lamp_model, cond(seed=1), cond(seed=2), latent, noise, steps=5)
    with pytest.raises(ValueError, match="choose ddim"):
        LampSampler().sample(lamp_model, cond(seed=1), cond(seed=2), latent, noise, steps=3, scheduler="euler")


def test_invert_node_bad_inputs(lamp_model):  # noqa: F811
    with pytest.raises(ValueError, match=r"LAMP Invert Video: the clip has 9 frames, but 6 frames at stride 2 from "
                                         r"frame 1 need 12"):
        invert(lamp_model, source_images(), frames=6)
    with pytest.raises(ValueError, match="'images' must be the source video as an IMAGE batch"):
        invert(lamp_model, torch.rand(32, 32, 3))
    with pytest.raises(ValueError, match="width 30 is not a multiple of 8"):
        invert(lamp_model, source_images(), width=30)
    with pytest.raises(ValueError, match="LAMP Invert Video: 'conditioning' has width 768 but this LAMP model needs 16"):
        LampInvertVideo().invert(lamp_model, source_images(), StubVAE(), cond(width=768), frames=4, steps=2,
                                 width=32, height=32)
    with pytest.raises(ValueError, match="'lamp_model' must come from"):
        LampInvertVideo().invert(object(), source_images(), StubVAE(), cond())


def test_invert_node_progress_and_cancel(lamp_model, monkeypatch):  # noqa: F811
    bars = []
    real = host.progress
    monkeypatch.setattr(host, "progress", lambda total, previews=False: bars.append(real(total, previews)) or bars[-1])
    invert(lamp_model, source_images(), steps=4)
    assert bars[-1].history == [1, 2, 3, 4]
    host.simulate_cancel(after=1)
    with pytest.raises(host.Interrupted):
        invert(lamp_model, source_images(), steps=4)


@pytest.mark.parametrize("name", ["lamp_video_edit.json", "lamp_video_edit_controlnet.json"])
def test_video_edit_workflow_follows_the_paper(name):
    import json
    from pathlib import Path

    wf = json.loads((Path(__file__).resolve().parents[1] / "workflows" / name).read_text())
    nodes = {n["id"]: n for n in wf["nodes"]}
    by_type = {}
    for n in wf["nodes"]:
        by_type.setdefault(n["type"], n)
    src = {(dst, nodes[dst]["inputs"][slot]["name"]): (nodes[s]["type"], nodes[s]["outputs"][s_slot]["name"])
           for _, s, s_slot, dst, slot, _ in wf["links"]}
    invert, sampler, first = by_type["LAMP_InvertVideo"], by_type["LAMP_Sampler"], by_type["LAMP_FirstFrame"]
    assert "LAMP_SharedNoise" not in by_type
    assert src[(invert["id"], "images")] == ("GetVideoComponents", "images")
    assert src[(by_type["GetVideoComponents"]["id"], "video")] == ("LoadVideo", "VIDEO")
    assert src[(by_type["Canny"]["id"], "image")] == ("LAMP_InvertVideo", "first_frame")
    assert src[(sampler["id"], "noise")] == ("LAMP_InvertVideo", "noise")
    cannys = [n for n in wf["nodes"] if n["type"] == "Canny"]
    if name == "lamp_video_edit.json":
        assert len(cannys) == 1 and src[(sampler["id"], "positive")][0] == "CLIPTextEncode"
    else:  # every inverted source frame's edges on an SD-1.5 ControlNet on the LAMP prompts
        hints = next(n for n in cannys if src[(n["id"], "image")] == ("LAMP_InvertVideo", "source"))
        apply = next(nodes[d] for _, s_, _, d, _, _ in wf["links"] if s_ == hints["id"])
        assert apply["type"] == "ControlNetApplyAdvanced"
        assert src[(sampler["id"], "positive")] == ("ControlNetApplyAdvanced", "positive")
        assert src[(sampler["id"], "negative")] == ("ControlNetApplyAdvanced", "negative")
        loader = nodes[next(s_ for _, s_, _, d, slot, _ in wf["links"] if d == apply["id"]
                            and apply["inputs"][slot]["name"] == "control_net")]
        assert "sd15" in loader["widgets_values"][0]
    assert src[(first["id"], "image")] == ("VAEDecode", "IMAGE")
    assert {"ControlNetApplyAdvanced", "KSampler", "LAMP_ColorMatch", "SaveVideo"} <= set(by_type)
    frames, start, stride, steps, width, height = invert["widgets_values"][:6]
    assert (frames, stride, steps) == (24, 2, 50), "official editing settings"
    assert first["widgets_values"][:3] == [width, height, frames], "the edit has the inverted clip's size"
    assert sampler["widgets_values"][:3] == [steps, 12.5, "ddim"]


def test_train_init_node_tunes_on_one_clip(world):  # noqa: F811
    """LAMP Train Init accepts ONE video file (the editing tuning); the prompt and run name come from it."""
    state, report = train_init(world, video_folder="square_moves_right/a.mp4", n_frames=3, stride=2)
    assert "1 clip(s), 3 frames at stride 2" in report and "a.mp4" in report
    assert state.name == "a" and state.prompt == "a"
    state, _, _ = train_steps(state, 1)
    assert state.trainer.global_step == 1


def test_toy_editing_proof_runs_end_to_end(tmp_path):
    """The README's toy-world editing table in miniature: 2 tuning steps, 2 DDIM steps (numbers meaningless)."""
    from lamp_model.toy import editing

    rows = editing.run(train_steps=2, steps=2, guidances=[5.0], out=tmp_path, log=lambda *a: None)
    assert [r["case"] for r in rows[:len(editing.EDITS)]] == [name for name, _, _ in editing.EDITS]
    assert len(rows) == len(editing.EDITS) + 3 and rows[-1]["psnr"] > 25  # codec ceiling
    assert all(np.isfinite(r["path_mean_px"]) or np.isnan(r["path_mean_px"]) for r in rows[:-1])
    with Image.open(tmp_path / "toy_edit_cfg5.png") as strip:
        assert strip.size == (8 * 128, (len(editing.EDITS) + 3) * 128)  # source + 7 cases, 8 frames, 4x
    assert (tmp_path / "source_motion.safetensors").is_file()
    assert "| reconstruct (own frame one) | 5 |" in editing.table(rows)
