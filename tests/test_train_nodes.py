"""The training nodes as plain classes (nodes.host falls back to plain Python), run inside
``torch.inference_mode()`` as ComfyUI runs nodes, with stand-ins for MODEL / CLIP / VAE."""
from __future__ import annotations

import hashlib
from types import SimpleNamespace

import pytest
import torch
from diffusers import UNet2DConditionModel

from conftest import TINY_CONFIG
from test_data import moving_square, write_gif, write_video
from test_nodes import SD15_UNET_CONFIG, StubVAE, diffusers_to_ldm, make_model

from nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS, host
from nodes.train_nodes import LampSaveMotion, LampTrainInit, LampTrainState, LampTrainSteps, LampTrainValidate

TRAIN_IDS = {"LAMP_TrainInit", "LAMP_TrainSteps", "LAMP_SaveMotion", "LAMP_TrainValidate"}


class StubCLIP:
    """tokenize/encode_from_tokens like ComfyUI's CLIP: a fixed pseudo-embedding per text, [1, 77, 16]."""

    def tokenize(self, text):
        return text

    def encode_from_tokens(self, tokens):
        seed = int(hashlib.sha256(tokens.encode()).hexdigest()[:8], 16)
        return torch.randn(1, 77, TINY_CONFIG["cross_attention_dim"], generator=torch.Generator().manual_seed(seed))


class StubVAEWithDecode(StubVAE):
    def decode(self, latents):
        return (torch.nn.functional.interpolate(latents[:, :3], scale_factor=8) * 0.1 + 0.5).clamp(0, 1).movedim(1, -1)


@pytest.fixture
def world(tmp_path):
    lamp, inp, out = tmp_path / "models" / "lamp", tmp_path / "input", tmp_path / "output"
    lamp.mkdir(parents=True)
    videos = inp / "square_moves_right"
    videos.mkdir(parents=True)
    write_video(videos / "a.mp4", moving_square(7, w=32, h=32))
    write_gif(videos / "b.gif", moving_square(6, w=32, h=32))
    host.configure_fallback(lamp=str(lamp), input=str(inp), output=str(out))
    torch.manual_seed(0)
    unet2d = UNet2DConditionModel(**TINY_CONFIG)
    ldm = diffusers_to_ldm(unet2d.state_dict(), TINY_CONFIG["layers_per_block"], len(TINY_CONFIG["block_out_channels"]))
    model = make_model(ldm, unet_config={**SD15_UNET_CONFIG, "num_heads": 2, "norm_num_groups": 4})
    yield SimpleNamespace(lamp=lamp, out=out, model=model, clip=StubCLIP(), vae=StubVAEWithDecode())
    host.simulate_cancel(-1)


def init(world, **kw):
    args = dict(video_folder="square_moves_right", n_frames=3, width=32, height=32, learning_rate=1e-3,
                gradient_checkpointing=False, save_every=0)
    args.update(kw)
    with torch.inference_mode():  # as ComfyUI executes nodes
        return LampTrainInit().init(world.model, world.clip, world.vae, **args)


def steps(state, n, **kw):
    with torch.inference_mode():
        return LampTrainSteps().train(state, n, **kw)


def test_training_nodes_metadata():
    assert TRAIN_IDS <= set(NODE_CLASS_MAPPINGS)
    for node_id in TRAIN_IDS:
        cls = NODE_CLASS_MAPPINGS[node_id]
        assert NODE_DISPLAY_NAME_MAPPINGS[node_id].startswith("LAMP ")
        assert cls.CATEGORY == "LAMP/training" and len(cls.DESCRIPTION) > 60
        assert callable(getattr(cls(), cls.FUNCTION))
        assert len(cls.OUTPUT_TOOLTIPS) == len(cls.RETURN_TYPES) == len(cls.RETURN_NAMES)
        for section in ("required", "optional"):
            for name, item in cls.INPUT_TYPES().get(section, {}).items():
                assert len(item) == 2 and item[1].get("tooltip"), f"{node_id}.{name} has no tooltip"
    assert LampTrainSteps.IS_CHANGED(steps=1) != LampTrainSteps.IS_CHANGED(steps=1)  # NaN: always re-run


def test_init_train_save_validate(world):
    from lamp_model.train import STATE_FILE
    from lamp_model.weights import read_motion
    from nodes.loader_nodes import LampLoadMotion

    state, report = init(world)
    assert isinstance(state, LampTrainState) and state.prompt == "square moves right"
    assert "2 clip(s)" in report and "a.mp4: 6 usable frames" in report
    state, plot, text = steps(state, 3)
    assert state.trainer.global_step == 3 and state.saved_step == 3 and "step 3" in text
    assert plot.shape == (1, 360, 640, 3) and plot.dtype == torch.float32 and 0 <= float(plot.min())
    run = world.out / "lamp_training" / "square_moves_right"
    assert (run / STATE_FILE).is_file() and (run / "motion.safetensors").is_file() and (run / "loss.png").is_file()
    assert next(state.trainer.unet.parameters()).device == host.offload_device()

    with torch.inference_mode():
        saved = LampSaveMotion().save(state, "")
    name = saved["result"][0]
    assert name == "square_moves_right_step3.safetensors"
    _, meta = read_motion(world.lamp / name)
    assert meta["motion_prompt"] == "square moves right" and meta["training_steps"] == "3"
    with pytest.raises(FileExistsError, match="already exists"):
        LampSaveMotion().save(state, "")
    # The saved motion goes straight into the sampling side.
    lamp = LampLoadMotion().load(world.model, name, "fp32")[0]
    trained = dict(state.trainer.unet.named_parameters())
    for key, value in lamp.unet.state_dict().items():
        if "conv1d" in key:
            torch.testing.assert_close(value, trained[key].detach().half().float())

    with torch.inference_mode():
        frames, latent = LampTrainValidate().validate(state, world.vae, torch.rand(1, 40, 48, 3), steps=2, cfg=3.0)
    assert frames.shape == (3, 32, 32, 3) and latent["samples"].shape == (3, 4, 4, 4)


def test_cancel_saves_and_init_continues_the_run(world):
    state, _ = init(world)
    host.simulate_cancel(after=1)  # the 2nd progress update raises, as ComfyUI's Cancel does
    with pytest.raises(host.Interrupted):
        steps(state, 5)
    assert state.trainer.global_step == 2 and state.saved_step == 2
    resumed, report = init(world)
    assert resumed.trainer.global_step == 2 and "continuing the saved run at step 2" in report
    for (name, a), (_, b) in zip(state.trainer.trainable, resumed.trainer.trainable):
        assert torch.equal(a.cpu(), b.cpu()), name
    fresh, _ = init(world, continue_run=False)
    assert fresh.trainer.global_step == 0


def test_training_node_errors(world, tmp_path):
    with pytest.raises(FileNotFoundError, match="video folder 'nope' not found"):
        init(world, video_folder="nope")
    (tmp_path / "input" / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no usable clip"):
        init(world, video_folder="empty")
    with pytest.raises(ValueError, match="need at least"):
        init(world, n_frames=6)
    sdxl = make_model({}, family="SDXL", unet_config={"context_dim": 2048, "model_channels": 320,
                                                        "adm_in_channels": 2816})
    with pytest.raises(ValueError, match="SD-XL"):
        LampTrainInit().init(sdxl, world.clip, world.vae, "square_moves_right")
    with pytest.raises(ValueError, match="must come from LAMP Train Init"):
        LampTrainSteps().train("not a state", 1)
    with pytest.raises(ValueError, match="plain name"):
        init(world, run_name="../x")


def test_training_workflow_uses_the_official_defaults():
    import json
    from pathlib import Path

    wf = json.loads((Path(__file__).resolve().parents[1] / "workflows" / "lamp_train.json").read_text())
    by_type = {n["type"]: n for n in wf["nodes"]}
    assert {"LAMP_TrainInit", "LAMP_TrainSteps", "LAMP_SaveMotion", "LAMP_TrainValidate"} <= set(by_type)
    names = [n for n, s in LampTrainInit.INPUT_TYPES()["required"].items() if s[0] not in ("MODEL", "CLIP", "VAE")]
    values = dict(zip(names, by_type["LAMP_TrainInit"]["widgets_values"]))
    assert (values["n_frames"], values["stride"], values["width"], values["height"]) == (16, 1, 512, 320)
    assert values["resize"] == "stretch" and values["learning_rate"] == 3e-5 and values["train_seed"] == 33
