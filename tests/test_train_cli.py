"""The training command line end to end on a tiny diffusers "SD" folder (UNet + VAE + scheduler) and
precomputed prompt embeddings (transformers is optional and not needed here)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from conftest import TINY_CONFIG
from test_data import moving_square, tiny_vae, write_gif, write_video

from lamp_model.train_cli import main, resolve_settings, TrainSetupError


@pytest.fixture
def tiny_sd(tmp_path: Path) -> Path:
    from diffusers import DDPMScheduler, UNet2DConditionModel

    from lamp_model.sampling import SD1_SCHEDULE

    base = tmp_path / "tiny_sd"
    torch.manual_seed(0)
    UNet2DConditionModel(**TINY_CONFIG).save_pretrained(base / "unet")
    tiny_vae().save_pretrained(base / "vae")
    DDPMScheduler(**SD1_SCHEDULE, clip_sample=False).save_pretrained(base / "scheduler")
    return base


@pytest.fixture
def run_inputs(tmp_path: Path, tiny_sd: Path) -> dict:
    videos = tmp_path / "square_moves_right"
    videos.mkdir()
    write_video(videos / "a.mp4", moving_square(8))
    write_gif(videos / "b.gif", moving_square(9))
    g = torch.Generator().manual_seed(0)
    emb = tmp_path / "embeddings.safetensors"
    save_file({"square moves right": torch.randn(5, 16, generator=g), "": torch.randn(5, 16, generator=g),
               "a square on the moon": torch.randn(5, 16, generator=g)}, str(emb))
    first = tmp_path / "first.png"
    Image.fromarray(moving_square(1)[0]).save(first)
    return {"base": tiny_sd, "videos": videos, "emb": emb, "first": first, "out": tmp_path / "run"}


def common(inp: dict) -> list[str]:
    return ["--base", str(inp["base"]), "--videos", str(inp["videos"]), "--output-dir", str(inp["out"]),
            "--text-embeddings", str(inp["emb"]), "--n-frames", "3", "--width", "32", "--height", "32",
            "--no-gradient-checkpointing", "--learning-rate", "1e-3", "--log-level", "WARNING"]


def test_cli_trains_saves_validates_and_resumes(run_inputs, capsys):
    out = run_inputs["out"]
    args = common(run_inputs) + ["--steps", "4", "--save-every", "2", "--validate-every", "4",
                                 "--validation-image", str(run_inputs["first"]),
                                 "--validation-prompt", "a square on the moon", "--validation-steps", "2",
                                 "--validation-format", "gif"]
    assert main(args) == 0
    from lamp_model.weights import read_motion

    tensors, meta = read_motion(out / "motion.safetensors")
    assert meta["training_steps"] == "4" and meta["motion_prompt"] == "square moves right"
    assert meta["base"] == "tiny_sd" and meta["n_frames"] == "3"
    sample = out / "samples" / "step-000004" / "00_a_square_on_the_moon.gif"
    assert sample.is_file() and sample.with_suffix(".png").is_file()
    with Image.open(sample) as gif:
        assert gif.size == (32, 32)
    assert (out / "loss.png").is_file()
    assert [json.loads(x)["step"] for x in (out / "loss.jsonl").read_text().splitlines()] == [1, 2, 3, 4]

    assert main(common(run_inputs) + ["--steps", "6", "--save-every", "0", "--validate-every", "0", "--resume"]) == 0
    _, meta = read_motion(out / "motion.safetensors")
    assert meta["training_steps"] == "6"
    assert [json.loads(x)["step"] for x in (out / "loss.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5, 6]


def test_yaml_config_and_flag_precedence(tmp_path, run_inputs):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"base: {run_inputs['base']}\nvideos: {run_inputs['videos']}\noutput_dir: {tmp_path}/o\n"
                   "steps: 123\nlearning_rate: 1.0e-4\nhflip: false\nvalidation_image: a.png\n")
    settings, config = resolve_settings(["--config", str(cfg), "--steps", "7"])
    assert config.steps == 7 and config.learning_rate == 1e-4 and config.hflip is False
    assert settings["validation_image"] == ["a.png"] and settings["mixed_precision"] in ("no", "fp16")
    assert config.mixed_precision == settings["mixed_precision"]
    cfg.write_text("base: x\nvideos: y\noutput_dir: z\nlearnig_rate: 1\n")
    with pytest.raises(TrainSetupError, match=r"unknown setting\(s\) \['learnig_rate'\]"):
        resolve_settings(["--config", str(cfg)])


def test_cli_errors_are_messages(run_inputs, tmp_path, capsys):
    assert main(["--videos", "x"]) == 2
    assert "missing --base, --output-dir" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    args = common(run_inputs)
    args[args.index("--videos") + 1] = str(empty)
    assert main(args) == 2
    assert "holds no usable clip" in capsys.readouterr().err
    args = common(run_inputs)
    args[args.index("--text-embeddings") + 1] = str(tmp_path / "none.safetensors")
    assert main(args) == 2
    assert "--text-embeddings file not found" in capsys.readouterr().err
    args = common(run_inputs) + ["--prompt", "another motion"]
    assert main(args) == 2
    assert "has no embedding for ['another motion']" in capsys.readouterr().err
    no_te = [a for a in common(run_inputs) if a not in ("--text-embeddings", str(run_inputs["emb"]))]
    assert main(no_te) == 2
    err = capsys.readouterr().err
    assert "transformers" in err or "tokenizer/" in err


def test_single_file_without_a_vae_is_a_clear_error(tmp_path):
    from lamp_model.train_cli import load_vae

    ckpt = tmp_path / "unet_only.safetensors"
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)}, str(ckpt))
    with pytest.raises(TrainSetupError, match="holds no usable SD-1.x VAE"):
        load_vae(ckpt, None)
    with pytest.raises(TrainSetupError, match="no VAE in"):
        load_vae(tmp_path, None)
